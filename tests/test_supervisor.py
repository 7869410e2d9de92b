"""
``connserver._running.supervisor.Supervisor``: restarts, backoff, crash loops, the
rolling reload and worker recycling, with a ``Clock`` and fake processes.
"""

from __future__ import annotations

import dataclasses
import json
import signal
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from connserver._running.settings import workerSettings
from connserver._running.spawn import describeExit
from connserver._running.supervisor import (
    Supervisor,
    WorkerHandle,
    addCounters,
)


class FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid: int | None = pid
        self.signals: list[int] = []

    def signalProcess(self, signum: int) -> None:
        self.signals.append(signum)


class Harness:
    def __init__(self, count: int = 2, **kwargs: object) -> None:
        self.clock = Clock()
        self.spawned: list[WorkerHandle] = []
        self.fatal: list[str] = []
        self.supervisor = Supervisor(
            count,
            self.spawn,
            self.clock,
            self.fatal.append,
            **kwargs,  # type: ignore[arg-type]
        )

    def spawn(self, handle: WorkerHandle) -> None:
        handle.process = FakeProcess(1000 + len(self.spawned))  # type: ignore[assignment]
        handle.pid = 1000 + len(self.spawned)
        self.spawned.append(handle)

    def signals(self, handle: WorkerHandle) -> list[int]:
        return handle.process.signals  # type: ignore[union-attr]

    def startReady(self) -> list[WorkerHandle]:
        self.supervisor.start()
        for handle in self.spawned:
            self.supervisor.workerReady(handle)
        return list(self.spawned)


def test_startsCountWorkersInTheirSlots() -> None:
    h = Harness(3)
    workers = h.startReady()
    assert [w.slot for w in workers] == [1, 2, 3]
    assert all(w.ready for w in workers)


def test_aDeadWorkerIsRestartedAfterABackoffThatDoubles() -> None:
    h = Harness(2)
    first, _ = h.startReady()
    h.supervisor.workerExited(first, "killed by SIGKILL")
    assert len(h.spawned) == 2, "not at once: after the backoff"
    h.clock.advance(0.099)
    assert len(h.spawned) == 2
    h.clock.advance(0.001)
    assert len(h.spawned) == 3 and h.spawned[2].slot == 1
    h.supervisor.workerReady(h.spawned[2])
    # A second death within the window waits twice as long.
    h.supervisor.workerExited(h.spawned[2], "exit status 1")
    h.clock.advance(0.199)
    assert len(h.spawned) == 3
    h.clock.advance(0.001)
    assert len(h.spawned) == 4
    # Deaths older than the window no longer count.
    h.supervisor.workerReady(h.spawned[3])
    h.clock.advance(11)
    h.supervisor.workerExited(h.spawned[3], "exit status 1")
    h.clock.advance(0.1)
    assert len(h.spawned) == 5
    assert h.fatal == []


def test_aCrashLoopStopsTheServer() -> None:
    h = Harness(1)
    h.startReady()
    for _ in range(4):
        h.supervisor.workerExited(h.spawned[-1], "exit status 1")
        h.clock.advance(h.supervisor.backoffMax)
        h.supervisor.workerReady(h.spawned[-1])
        assert h.fatal == []
    # The fifth death, still within ten seconds of the first? Not with
    # these 10 s backoffs: make them quick deaths instead.
    h2 = Harness(1)
    h2.startReady()
    for n in range(5):
        h2.supervisor.workerExited(h2.spawned[-1], "exit status 1")
        if n < 4:
            h2.clock.advance(0.1 * 2**n)
            h2.supervisor.workerReady(h2.spawned[-1])
    assert len(h2.fatal) == 1
    assert "crash-looping (5 deaths within 10 s" in h2.fatal[0]
    spawned = len(h2.spawned)
    h2.clock.advance(60)
    assert len(h2.spawned) == spawned, "no restart after the crash loop"


def test_aWorkerThatCannotStartAtBootStopsTheServer() -> None:
    h = Harness(2)
    h.supervisor.start()
    h.spawned[0].lastLine = "--handler 'app:x': cannot import app: boom"
    h.supervisor.workerExited(h.spawned[0], "exit status 3")
    assert h.fatal == [
        "connserver: worker 1 could not start (exit status 3): "
        "--handler 'app:x': cannot import app: boom"
    ]
    h.clock.advance(60)
    assert len(h.spawned) == 2


def test_aWorkerNeverReadyIsKilled() -> None:
    h = Harness(1)
    h.supervisor.start()
    h.clock.advance(h.supervisor.readyTimeout)
    assert h.signals(h.spawned[0]) == [signal.SIGKILL]


def test_aWorkerThatStopsReportingIsKilledAndRestarted() -> None:
    h = Harness(1)
    (a,) = h.startReady()
    for _ in range(5):  # reporting every second keeps it alive
        h.clock.advance(1)
        h.supervisor.workerReported(a, {"requests": 1})
    h.clock.advance(h.supervisor.reportTimeout - 0.1)
    assert h.signals(a) == []
    h.clock.advance(0.1)
    assert h.signals(a) == [signal.SIGKILL]
    h.supervisor.workerExited(a, "killed by SIGKILL")
    h.clock.advance(0.1)
    assert len(h.spawned) == 2, "restarted as a death"


def test_aDrainingWorkerHasNoReportDeadline() -> None:
    h = Harness(1, drainTimeout=None)
    (a,) = h.startReady()
    h.supervisor.stop()
    h.clock.advance(h.supervisor.reportTimeout * 3)
    assert h.signals(a) == [signal.SIGTERM]
    assert h.clock.getDelayedCalls() == []


def test_rollingReloadReplacesOneWorkerAtATime() -> None:
    h = Harness(2)
    a, b = h.startReady()
    h.supervisor.reload()
    assert h.supervisor.reloading
    assert len(h.spawned) == 3 and h.spawned[2].replaces is a
    assert h.signals(a) == [], "the old one serves until its successor is ready"
    h.supervisor.workerReady(h.spawned[2])
    assert h.signals(a) == [signal.SIGTERM]
    assert len(h.spawned) == 3, "the next waits for the old one to exit"
    h.supervisor.workerExited(a, "exit status 0")
    assert len(h.spawned) == 4 and h.spawned[3].replaces is b
    h.supervisor.workerReady(h.spawned[3])
    assert h.signals(b) == [signal.SIGTERM]
    h.supervisor.workerExited(b, "exit status 0")
    assert not h.supervisor.reloading
    assert set(h.supervisor.workers) == {h.spawned[2], h.spawned[3]}
    assert h.fatal == []


def test_aReplacementThatDiesKeepsTheOldWorkerAndAbandonsTheReload() -> None:
    h = Harness(2)
    a, b = h.startReady()
    h.supervisor.reload()
    h.supervisor.workerExited(h.spawned[2], "exit status 3")
    assert not h.supervisor.reloading
    assert h.signals(a) == [] and h.signals(b) == []
    assert set(h.supervisor.workers) == {a, b}
    h.clock.advance(60)
    assert len(h.spawned) == 3, "no restart for a failed replacement"


def test_aSlotIsNotLeftEmptyWhenAWorkerAndItsReplacementBothDie() -> None:
    h = Harness(1, maxRequests=10)
    (a,) = h.startReady()
    h.supervisor.workerReported(a, {"requests": 10})
    replacement = h.spawned[1]
    h.supervisor.workerExited(a, "killed by SIGKILL")
    h.clock.advance(60)
    assert len(h.spawned) == 2, "the replacement is on its way"
    h.supervisor.workerExited(replacement, "exit status 1")
    h.clock.advance(1)
    assert len(h.spawned) == 3 and h.spawned[2].slot == 1


def test_maxRequestsReplacesAWorkerWithJitter() -> None:
    h = Harness(1, maxRequests=100, maxRequestsJitter=10, randint=lambda a, b: b)
    (a,) = h.startReady()
    assert a.requestLimit == 110
    h.supervisor.workerReported(a, {"requests": 109})
    assert len(h.spawned) == 1
    h.supervisor.workerReported(a, {"requests": 110})
    assert len(h.spawned) == 2 and h.spawned[1].replaces is a
    h.supervisor.workerReported(a, {"requests": 120})
    assert len(h.spawned) == 2, "one replacement only"
    h.supervisor.workerReady(h.spawned[1])
    assert h.signals(a) == [signal.SIGTERM]


def test_countersSurviveAReplacedWorker() -> None:
    h = Harness(2)
    a, b = h.startReady()
    h.supervisor.workerReported(a, {"requests": 5, "active": 2, "closes": {"x": 1}})
    answer = json.loads(h.supervisor.workerReported(b, {"requests": 3, "active": 1}))
    assert answer["others"] == {"requests": 5, "active": 2, "closes": {"x": 1}}
    assert [row["worker"] for row in answer["workers"]] == [1, 2]
    h.supervisor.workerExited(a, "killed by SIGKILL")
    assert h.supervisor.totals() == {"requests": 8, "closes": {"x": 1}, "active": 1}
    # The retired worker's gauge (active) is gone, its counters stay.
    answer = json.loads(h.supervisor.workerReported(b, {"requests": 4, "active": 0}))
    assert answer["others"] == {"requests": 5, "closes": {"x": 1}}


def test_stopDrainsEveryWorkerAndKillsWhatOutlivesTheDeadline() -> None:
    h = Harness(2, drainTimeout=30.0)
    a, b = h.startReady()
    done = h.supervisor.stop()
    fired: list[object] = []
    done.addCallback(fired.append)
    assert h.signals(a) == h.signals(b) == [signal.SIGTERM]
    h.supervisor.workerExited(a, "exit status 0")
    assert fired == []
    h.clock.advance(35)
    assert h.signals(b) == [signal.SIGTERM, signal.SIGKILL]
    h.supervisor.workerExited(b, "killed by SIGKILL")
    assert fired == [None]
    h.clock.advance(60)
    assert len(h.spawned) == 2, "nothing restarts while stopping"
    assert h.clock.getDelayedCalls() == []


def test_stopWithoutDeadlineLeavesNoTimer() -> None:
    h = Harness(1, drainTimeout=None)
    (a,) = h.startReady()
    h.supervisor.stop()
    h.supervisor.workerExited(a, "exit status 0")
    assert h.clock.getDelayedCalls() == []


def test_addCounters() -> None:
    total = addCounters({}, {"a": 1, "d": {"x": 1}, "l": [1, 2], "flag": True})
    addCounters(total, {"a": 2, "d": {"x": 1, "y": 2}, "l": [1, 1, 1]})
    assert total == {"a": 3, "d": {"x": 2, "y": 2}, "l": [2, 3, 1]}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--workers", "2", "--path", "www"], ["--path", "www"]),
        (["--workers=auto", "--reuse-port", "-p", "www"], ["-p", "www"]),
        (
            [
                "--workers",
                "2",
                "--worker-max-requests",
                "5",
                "--worker-max-requests-jitter=2",
                "--path=www",
            ],
            ["--path=www"],
        ),
    ],
)
def test_workerSettingsDropTheParentsFlags(
    argv: list[str],
    expected: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker runs the parent's settings without the parent's own flags."""
    from connserver.tap import Options

    monkeypatch.chdir(tmp_path)
    (tmp_path / "www").mkdir()
    parent, alone = Options(), Options()
    parent.parseOptions(argv)
    alone.parseOptions(expected)
    worker = workerSettings(parent.settings())
    assert worker == dataclasses.replace(alone.settings(), inWorker=True)
    assert (worker.workers, worker.workerMaxRequests) == (1, None)
    assert (worker.workerMaxRequestsJitter, worker.reusePort) == (0, False)


def test_describeExit() -> None:
    from twisted.internet.error import ProcessDone, ProcessTerminated
    from twisted.python.failure import Failure

    assert describeExit(Failure(ProcessDone(0))) == "exit status 0"
    assert describeExit(Failure(ProcessTerminated(3))) == "exit status 3"
    assert (
        describeExit(Failure(ProcessTerminated(None, signal.SIGKILL)))
        == "killed by SIGKILL"
    )


# -- the worker's side: Cluster, the summed figures ----------------------------


def _cluster() -> tuple[object, object]:
    from connserver._connection.factory import ConnectionFactory
    from connserver._connection.message import Response
    from connserver._running.cluster import Cluster

    factory = ConnectionFactory(lambda request: Response(200), reactor=Clock())
    cluster = Cluster(slot=2)
    cluster.factory = factory
    factory.stats.accepted = 3
    factory.stats.requests = 4
    factory.stats.closes["peer-closed"] = 1
    factory.stats.requestsPerConnection[2] = 1
    cluster.others = {
        "accepted": 10,
        "requests": 20,
        "closes": {"peer-closed": 2, "idle-timeout": 1},
        "requestsPerConnection": {"2": 3},
        "active": 5,
        "states": {"waiting": 5},
    }
    cluster.rows = [
        {"worker": 1, "pid": 11, "uptime": 9.0, "connections": 5, "requests": 20},
        {
            "worker": 2,
            "pid": cluster.pid,
            "uptime": 1.0,
            "connections": 0,
            "requests": 0,
        },
    ]
    return cluster, factory


def test_clusterSumsItsOwnLiveFiguresWithTheOthers() -> None:
    from connserver._handlers.status import StatusHandler, renderHTML, renderText

    cluster, _ = _cluster()
    status = StatusHandler(cluster, reactor=Clock())  # type: ignore[arg-type]
    status.workers = cluster.workerRows  # type: ignore[attr-defined]
    data = status.snapshot()
    assert (data["accepted"], data["requests"], data["active"]) == (13, 24, 5)
    assert data["closes"] == {"idle-timeout": 1, "peer-closed": 3}
    assert data["requestsPerConnection"] == {"2": 4}
    assert data["states"]["waiting"] == 5
    # Its own row is live (requests 4, not the stale 0), the others as reported.
    rows = data["workers"]
    assert [(r["worker"], r["requests"]) for r in rows] == [(1, 20), (2, 4)]
    text = renderText(data)
    assert "Workers (worker pid uptime connections requests):\n 1 11 9s 5 20\n" in text
    page = renderHTML(data)
    assert "<th>worker</th>" in page
    assert "<tr><td>1</td><td>11</td><td>9 s</td><td>5</td><td>20</td></tr>" in page


def test_clusterMetricsServeTheSumsAndAWorkerSeries() -> None:
    pytest.importorskip("prometheus_client")
    from connserver._handlers.metrics import MetricsHandler

    cluster, factory = _cluster()
    metrics = MetricsHandler(factory, process=False)  # type: ignore[arg-type]
    cluster.instrument(metrics)  # type: ignore[attr-defined]
    metrics.requests.byClass[2] = 4
    cluster.others.update(  # type: ignore[attr-defined]
        {
            "byClass": [0, 0, 16, 0, 4, 0],
            "durationCounts": [20] + [0] * 14,
            "durationSum": 0.5,
            "bodyBytes": 100,
        }
    )
    text = metrics.render().decode()
    assert "connserver_connections_accepted_total 13.0" in text
    assert 'connserver_requests_total{code="2xx"} 20.0' in text
    assert 'connserver_requests_total{code="4xx"} 4.0' in text
    assert "connserver_workers 2.0" in text
    assert 'connserver_worker_requests_total{pid="11",worker="1"} 20.0' in text


class _Worker:
    """A worker's server, built as ``--workers`` builds it, wired to a supervisor."""

    def __init__(self, h: Harness, handle: WorkerHandle) -> None:
        from twisted.internet.defer import succeed

        from connserver._connection.message import Response
        from connserver._running.assembly import makeServerService
        from connserver._running.cluster import Cluster
        from connserver._running.settings import ServeSettings

        settings = ServeSettings(
            application=lambda request: Response(200),
            listen=(),
            statusPath="/st",
            inWorker=True,
        )
        self.handle = handle
        self.cluster = Cluster(handle.slot)
        self.cluster.pid = handle.pid
        self.cluster.clock = h.clock
        self.cluster.exchange = lambda figures: succeed(
            json.loads(h.supervisor.workerReported(handle, figures))
        )
        service: Any = makeServerService(settings, [], self.cluster)
        self.cluster.factory = self.factory = service.factory

    def serve(self, requests: int) -> None:
        self.factory.stats.requests += requests

    def report(self) -> None:
        """The periodic report (or the last one, after the drain)."""
        self.cluster.report()

    def statusRequests(self, rowsSum: bool = False) -> int:
        """
        The summed ``requests`` of this worker's status page (``rowsSum``:
        checked against the live workers' rows, when none has exited).
        """
        from twisted.internet.defer import Deferred

        from connserver._connection.message import Request

        self.serve(1)  # the status request itself
        result = self.factory.handler(Request(b"GET", b"/st?format=json"))
        responses: list[Any] = []
        if isinstance(result, Deferred):
            result.addCallback(responses.append)
        else:
            responses.append(result)
        (response,) = responses
        assert response.code == 200
        data = json.loads(response.body)
        if rowsSum:
            rows = data["workers"]
            assert data["requests"] == sum(row["requests"] for row in rows)
        return int(data["requests"])


def test_theSummedFiguresNeverGoDownWhicheverWorkerAnswers() -> None:
    """
    The figures a worker keeps of the others are up to two report intervals
    old: its own live figures plus those could exceed what another worker,
    answering next, knew of it (tests/test_workers.py saw 18, then 12).  A
    page shows only figures the parent holds.
    """
    h = Harness(2)
    a, b = (_Worker(h, handle) for handle in h.startReady())
    b.serve(11)
    b.report()
    a.report()  # a knows of b's 11; the parent knows of none of a's
    a.serve(10)
    shown = a.statusRequests(rowsSum=True)
    assert shown == 22
    assert b.statusRequests(rowsSum=True) >= shown
    # a is sent SIGTERM: it drains, reports once more, and exits.
    a.serve(2)
    shown = b.statusRequests()
    a.report()
    h.supervisor.workerExited(a.handle, "exit status 0")
    assert b.statusRequests() >= shown + 2
    # Its replacement has served nothing; a's requests stay counted.
    h.clock.advance(0.1)
    c = _Worker(h, h.spawned[-1])
    h.supervisor.workerReady(c.handle)
    assert c.statusRequests() >= shown + 2
    assert b.statusRequests() >= shown + 2
