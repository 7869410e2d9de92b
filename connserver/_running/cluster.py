"""
What a ``--workers`` worker knows of every worker, for its status page and
metrics.

Each worker reports its own figures to the parent every second and gets
back the sum of every other worker's (see :mod:`connserver._running.spawn`).
:class:`Cluster` adds its own live figures to that, so that the status page
and the metrics of whichever worker answers show the whole server.

A status page or a scrape must never show less than an earlier one did,
whichever worker answers each.  The figures a worker keeps of the others
are up to two report intervals old, so its own live figures plus those
could exceed what another worker, answering next, knows of it (its last
report): a total read from one worker, then from another, went down.  So
:meth:`Cluster.fresh` serves the status page and the metrics only after a
report made for the request: the parent then holds every figure the page
shows, its sums only grow (an exited worker's move to the retired ones),
and the page shows this worker's figures as reported with the others' as
the parent answered that very report.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed

from connserver._running.supervisor import addCounters

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from connserver._connection.message import Request, Response
    from connserver._handlers.metrics import MetricsHandler

#: Seconds a page waits for the parent's answer to its report; without it,
#: the page shows this worker's live figures and the others' last known.
FRESH_TIMEOUT = 2.0

__all__ = ["Cluster"]


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
        #: Sends this worker's figures to the parent and fires with its
        #: answer (``others`` and ``workers``); set by the worker.
        self.exchange: Callable[[dict[str, Any]], Deferred[dict[str, Any]]] | None = (
            None
        )
        #: For :data:`FRESH_TIMEOUT`.
        self.clock: IReactorTime | None = None
        #: While a fresh page renders: the figures its report sent.
        self._pinned: dict[str, Any] | None = None

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

    def current(self) -> dict[str, Any]:
        """This worker's figures: as reported while a fresh page renders, else live."""
        return self._pinned if self._pinned is not None else self.own()

    def summed(self) -> dict[str, Any]:
        """Own plus others."""
        total = addCounters({}, self.others)
        return addCounters(total, self.current())

    def workerRows(self) -> list[dict[str, Any]]:
        """A row per live worker, this one's live (or as just reported)."""
        own = self.current()
        rows = [dict(r) for r in self.rows if r["pid"] != self.pid]
        rows.append(
            {
                "worker": self.slot,
                "pid": self.pid,
                "uptime": time.time() - self.started,
                "connections": own.get("active", 0),
                "requests": own.get("requests", 0),
            }
        )
        return sorted(rows, key=lambda r: (r["worker"], r["pid"]))

    def update(self, answer: dict[str, Any]) -> None:
        """Keep the parent's answer to a report: the others' figures, the rows."""
        self.others = answer["others"]
        self.rows = answer["workers"]

    def report(self) -> Deferred[dict[str, Any] | None]:
        """
        Send this worker's figures now; fire with them once the parent's
        answer is kept, or with ``None`` (no answer within
        :data:`FRESH_TIMEOUT`, or no parent).
        """
        if self.exchange is None:
            return succeed(None)
        sent = self.own()
        d = self.exchange(sent)
        if self.clock is not None:
            d.addTimeout(FRESH_TIMEOUT, self.clock)

        def kept(answer: dict[str, Any]) -> dict[str, Any]:
            self.update(answer)
            return sent

        return d.addCallbacks(kept, lambda failure: None)

    def fresh(
        self, handler: Callable[[Request], Response]
    ) -> Callable[[Request], Deferred[Response]]:
        """
        ``handler`` (the status page, the metrics) answering after a report
        made for the request, with the figures of that report and of its
        answer: whatever it shows, the parent knows, so that no later page,
        from any worker, shows less (see the module's documentation).
        """

        def handle(request: Request) -> Deferred[Response]:
            def render(sent: dict[str, Any] | None) -> Response:
                self._pinned = sent
                try:
                    return handler(request)
                finally:
                    self._pinned = None

            return self.report().addCallback(render)

        return handle

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
