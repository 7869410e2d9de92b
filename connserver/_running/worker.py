"""
A ``--workers`` worker process: ``python -m connserver._running.worker CONFIG``.

``CONFIG`` (JSON, from ``connserver._running.supervisor``) holds the command line
the parent was given (parsed again here, so that a worker started by a
SIGHUP imports the handler and reads the certificates afresh), the worker's
slot, and its listeners: a descriptor to adopt, or (``--reuse-port``) an
address to open its own ``SO_REUSEPORT`` socket on.  Everything else is
``tap.makeService``, as in one process.

The worker's fd 0 and fd 3 carry AMP to and from the parent; fd 1 is its
standard output (an access log on ``-``) and fd 2 its log, one event per
line as ``LEVEL|text``, both relayed by the parent.  SIGTERM drains it (the
same ``ConnectionServerService`` stop as ``twistd``); so does the parent
going away (its AMP pipe closes).  After the drain it sends a final
:class:`~connserver._running.supervisor.Report`, so the parent's totals miss none
of its requests.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import connectionDone
from twisted.logger import formatEvent, globalLogBeginner
from twisted.python.failure import Failure

from connserver._running.supervisor import (
    AMP_IN,
    AMP_OUT,
    QuietAMP,
    Ready,
    Report,
    addCounters,
)

if TYPE_CHECKING:
    from twisted.internet.interfaces import IListeningPort
    from twisted.internet.protocol import Factory

    from connserver._handlers.metrics import MetricsHandler

__all__ = ["AdoptedEndpoint", "Cluster", "main"]

#: Seconds between two reports to the parent.
REPORT_INTERVAL = 1.0
#: The range of connection ids each worker numbers from (see main()).
CONNECTION_IDS_PER_WORKER = 10**9


class AdoptedEndpoint:
    """
    An ``IStreamServerEndpoint`` whose ``listen`` adopts a listening socket
    (``reactor.adoptStreamPort``), with TLS (``TLSMemoryBIOFactory``
    around the factory, with the worker's own certificates) or the PROXY
    protocol wrapped here.
    """

    def __init__(
        self,
        reactor: Any,
        fd: int,
        family: int,
        tls: Any = None,
        haproxy: bool = False,
    ) -> None:
        self.reactor = reactor
        self.fd = fd
        self.family = family
        self.tls = tls
        self.haproxy = haproxy

    def listen(self, factory: Factory) -> Deferred[IListeningPort]:
        """Adopt the socket, wrapping ``factory`` for TLS or the PROXY protocol."""
        if self.haproxy:
            from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory

            factory = HAProxyWrappingFactory(factory)  # type: ignore[no-untyped-call,assignment]
        if self.tls is not None:
            from twisted.protocols.tls import TLSMemoryBIOFactory

            factory = TLSMemoryBIOFactory(self.tls, False, factory)  # type: ignore[assignment]
        port = self.reactor.adoptStreamPort(self.fd, self.family, factory)
        # Our copy of the descriptor is the port's now.
        os.close(self.fd)
        if self.family == socket.AF_UNIX:
            # Twisted's adopted unix: port, unlike its TCP one, would shut
            # the shared socket down (shutdown(2) stops it listening in every
            # process) and unlink its path when it stops: both are the
            # parent's to do.  Only this worker's descriptor closes.
            from twisted.internet import tcp

            port._shouldShutdown = False
            port.connectionLost = lambda reason: tcp.Port.connectionLost(port, reason)  # type: ignore[no-untyped-call]
        return succeed(port)


def _reusePortSocket(family: int, host: str, port: int, backlog: int) -> int:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock.detach()


class _View:
    """A ``factory.stats``-like sum: this worker's live figures plus the others'."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster

    def _sum(self, key: str) -> Any:
        return self._cluster.summed().get(key, 0)

    @property
    def accepted(self) -> int:
        return int(self._sum("accepted"))

    @property
    def handled(self) -> int:
        return int(self._sum("handled"))

    @property
    def requests(self) -> int:
        return int(self._sum("requests"))

    @property
    def refused(self) -> int:
        return int(self._sum("refused"))

    @property
    def active(self) -> int:
        return int(self._sum("active"))

    @property
    def draining(self) -> bool:
        return bool(self._cluster.factory.stats.draining)

    @property
    def closes(self) -> Counter[str]:
        return Counter(self._cluster.summed().get("closes", {}))

    @property
    def requestsPerConnection(self) -> Counter[int]:
        return Counter(
            {
                int(k): v
                for k, v in self._cluster.summed()
                .get("requestsPerConnection", {})
                .items()
            }
        )

    def byState(self) -> dict[str, int]:
        return dict(self._cluster.summed().get("states", {}))


class _RequestsView:
    """A ``RequestMetrics``-like sum over every worker."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster

    def __getattr__(self, name: str) -> Any:
        if name in ("byClass", "durationCounts", "durationSum", "bodyBytes"):
            return self._cluster.summed()[name]
        raise AttributeError(name)


class Cluster:
    """
    What a worker knows of every worker: its own figures, live, plus the
    others' as the parent last answered (at most a report interval old).
    ``stats`` is the sum, for ``StatusHandler``; ``instrument`` makes a
    ``MetricsHandler`` serve the sums and a series per worker.
    """

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.pid = os.getpid()
        self.started = time.time()
        self.factory: Any = None
        self.requestMetrics: Any = None
        self.others: dict[str, Any] = {}
        self.rows: list[dict[str, Any]] = []

    @property
    def stats(self) -> _View:
        """The summed figures, as ``factory.stats`` gives one worker's."""
        return _View(self)

    def own(self) -> dict[str, Any]:
        """This worker's figures, for a report."""
        stats = self.factory.stats
        own: dict[str, Any] = {
            "accepted": stats.accepted,
            "handled": stats.handled,
            "requests": stats.requests,
            "refused": stats.refused,
            "closes": dict(stats.closes),
            "requestsPerConnection": {
                str(k): v for k, v in stats.requestsPerConnection.items()
            },
            "active": stats.active,
            "states": stats.byState(),
        }
        metrics = self.requestMetrics
        if metrics is not None:
            own["byClass"] = list(metrics.byClass)
            own["durationCounts"] = list(metrics.durationCounts)
            own["durationSum"] = metrics.durationSum
            own["bodyBytes"] = metrics.bodyBytes
        return own

    def summed(self) -> dict[str, Any]:
        """Own plus others."""
        total = addCounters({}, self.others)
        return addCounters(total, self.own())

    def workerRows(self) -> list[dict[str, Any]]:
        """A row per live worker, this one's live."""
        stats = self.factory.stats
        rows = [dict(r) for r in self.rows if r["pid"] != self.pid]
        rows.append(
            {
                "worker": self.slot,
                "pid": self.pid,
                "uptime": time.time() - self.started,
                "connections": stats.active,
                "requests": stats.requests,
            }
        )
        return sorted(rows, key=lambda r: (r["worker"], r["pid"]))

    def instrument(self, metrics: MetricsHandler) -> None:
        """Serve the sums from ``metrics``, and the per-worker series."""
        from connserver._handlers.metrics import ConnectionCollector

        self.requestMetrics = metrics.requests
        metrics.registry.unregister(metrics.collector)
        metrics.collector = ConnectionCollector(self, _RequestsView(self))  # type: ignore[arg-type]
        metrics.registry.register(metrics.collector)
        metrics.registry.register(_WorkerCollector(self))

    @property
    def requestObservers(self) -> list[Any]:
        """The factory's request observers (what ``MetricsHandler`` extends)."""
        return self.factory.requestObservers  # type: ignore[no-any-return]


class _WorkerCollector:
    """``connserver_workers`` and a series per worker."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def describe(self) -> list[Any]:
        return self._families([])

    def collect(self) -> list[Any]:
        return self._families(self.cluster.workerRows())

    def _families(self, rows: list[dict[str, Any]]) -> list[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        workers = GaugeMetricFamily("connserver_workers", "Live worker processes.")
        labels = ["worker", "pid"]
        uptime = GaugeMetricFamily(
            "connserver_worker_uptime_seconds",
            "Seconds since the worker started.",
            labels=labels,
        )
        connections = GaugeMetricFamily(
            "connserver_worker_connections",
            "Open connections of the worker.",
            labels=labels,
        )
        requests = CounterMetricFamily(
            "connserver_worker_requests", "Requests the worker received.", labels=labels
        )
        if rows:
            workers.add_metric([], len(rows))
        for row in rows:
            key = [str(row["worker"]), str(row["pid"])]
            uptime.add_metric(key, row["uptime"])
            connections.add_metric(key, row["connections"])
            requests.add_metric(key, row["requests"])
        return [workers, uptime, connections, requests]


class WorkerChannel(QuietAMP):
    """The worker's end of the AMP channel; ``lost`` is called when it closes."""

    def __init__(self, lost: Callable[[], object]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._lost = lost

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self._lost()


def _logObserver(stream: Any) -> Any:
    def observe(event: dict[str, Any]) -> None:
        text = formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            text += "\n" + failure.getTraceback()
        level = event.get("log_level")
        name = getattr(level, "name", "info")
        stream.write("".join(f"{name}|{line}\n" for line in text.splitlines() or [""]))
        stream.flush()

    return observe


def main(argv: list[str]) -> None:
    """Run a worker (see the module's documentation)."""
    spec = json.loads(argv[1])
    globalLogBeginner.beginLoggingTo(
        [_logObserver(sys.stderr)], redirectStandardIO=False, discardBuffer=True
    )
    # The parent reloads on SIGHUP by replacing workers; a worker ignores it
    # (sent to the whole process group, it must not end the worker).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from twisted.application.reactors import getReactorTypes

    for installer in getReactorTypes():
        if getattr(installer, "moduleName", None) == spec.get("reactor"):
            installer.install()
            break
    from twisted.internet import reactor as _reactor
    from twisted.internet.stdio import StandardIO
    from twisted.python import usage

    from connserver.tap import Options, makeService

    # Typed as what it is here (posix: adoptStreamPort, callFromThread, ...).
    reactor: Any = _reactor

    def die(message: str) -> NoReturn:
        sys.stderr.write(f"critical|{message}\n")
        sys.stderr.flush()
        os._exit(3)

    options = Options()
    options.inWorker = True
    try:
        options.parseOptions(spec["argv"])
    except usage.UsageError as error:
        die(str(error))
    except SystemExit:
        die("the command line did not parse in the worker")
    endpoints: list[Any] = []
    listen = options["listen"]
    tls = options["tls"]
    try:
        for entry in spec["listeners"]:
            family = entry["family"]
            if "bind" in entry:
                host, port, backlog = entry["bind"]
                fd = _reusePortSocket(family, host, port, backlog)
            else:
                fd = entry["fd"]
            kind = entry["kind"]
            endpoints.append(
                AdoptedEndpoint(
                    reactor,
                    fd,
                    family,
                    tls=tls[entry["index"]].options if kind == "tls" else None,
                    haproxy=kind == "haproxy",
                )
            )
    except OSError as error:
        die(f"cannot open a listening socket: {error}")
    assert len(endpoints) == len(listen) + len(tls)
    cluster = Cluster(spec["slot"])
    try:
        service = makeService(options, endpoints, cluster)
    except Exception as error:
        die(f"{type(error).__name__}: {error}".splitlines()[0])
    cluster.factory = service.factory  # type: ignore[attr-defined]
    # Connection ids unique over the whole server, as the access log's conn=
    # promises: worker number W (counting every worker started) numbers its
    # connections from W * 10**9 + 1.
    service.factory.numberConnectionsFrom(  # type: ignore[attr-defined]
        spec["number"] * CONNECTION_IDS_PER_WORKER + 1
    )
    channel: WorkerChannel
    stopping: list[bool] = []

    def report(final: bool = False) -> Deferred[None]:
        d: Deferred[dict[str, Any]] = channel.callRemote(  # type: ignore[no-untyped-call]
            Report, stats=json.dumps(cluster.own()), final=final
        )

        def got(answer: dict[str, Any]) -> None:
            data = json.loads(answer["cluster"])
            cluster.others = data["others"]
            cluster.rows = data["workers"]

        return d.addCallbacks(got, lambda failure: None)

    from twisted.internet.task import LoopingCall

    reporter = LoopingCall(report)

    def stop() -> Deferred[None]:
        if reporter.running:
            reporter.stop()
        d: Deferred[Any] = service.stopService()  # type: ignore[no-untyped-call]
        # After the drain: the last figures, so the parent's totals are whole.
        d.addBoth(lambda _: report(final=True))
        return d

    def stopOnce() -> None:
        # A second SIGTERM (a process group's, say) must not raise
        # ReactorNotRunning: the drain is already under way.
        if not stopping and reactor.running:
            stopping.append(True)
            reactor.stop()

    def parentGone() -> None:
        # No parent: drain and exit, nobody else would stop this worker.
        stopOnce()

    def stopSignal(signum: int, frame: object) -> None:
        reactor.callFromThread(stopOnce)

    channel = WorkerChannel(parentGone)
    StandardIO(channel, stdin=AMP_IN, stdout=AMP_OUT, reactor=reactor)  # type: ignore[call-arg,no-untyped-call]

    def start() -> None:
        # The other workers' figures first, so that the first status page
        # or scrape this worker answers already has them.
        report().addCallback(lambda _: begin())

    def begin() -> None:
        try:
            service.privilegedStartService()  # type: ignore[no-untyped-call]
            service.startService()  # type: ignore[no-untyped-call]
        except Exception as error:
            die(str(error).splitlines()[0] if str(error) else repr(error))
        reactor.addSystemEventTrigger("before", "shutdown", stop)
        signal.signal(signal.SIGTERM, stopSignal)
        signal.signal(signal.SIGINT, stopSignal)
        d = channel.callRemote(Ready, pid=os.getpid())  # type: ignore[no-untyped-call]
        d.addCallback(lambda _: reporter.start(REPORT_INTERVAL, now=False))

    reactor.callWhenRunning(start)
    reactor.run()  # SIGTERM and SIGINT stop it (and drain, above).


if __name__ == "__main__":
    main(sys.argv)
