"""
``MetricsHandler``: the server's counters in the Prometheus text format.

``--metrics-path /metrics`` mounts it (like the status page, with
``PrefixMount``).  It needs the ``prometheus_client`` library, an optional
extra (``pip install 'connserver[metrics]'``); nothing else in connserver
imports this module.

Each handler has its own ``CollectorRegistry`` (never the library's global
one), so two factories in one process do not clash.  The connection series
are read from ``factory.stats`` at scrape time (no second set of counters);
the per-request series come from a ``factory.requestObservers`` entry,
:class:`RequestMetrics`, which costs a few integer additions per response
and exists only when metrics are on.

Series (``connserver_`` prefix):

- ``connections{state}`` (gauge): open connections by state group;
- ``connections_accepted_total``, ``connections_refused_total``;
- ``connections_closed_total{reason}``: closed connections by close reason;
- ``requests_per_connection`` (histogram): requests served by each closed
  connection;
- ``draining`` (gauge): 1 during a graceful shutdown;
- ``requests_total{code}``: responses by status class (``2xx``, ...);
- ``request_duration_seconds`` (histogram): from the complete request head
  to the end of the response;
- ``response_body_bytes_total``: response body bytes sent (headers
  excluded, as in the access log).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from connserver._connection.message import Request, Response
from connserver._handlers.status import STATE_GROUPS, StatsView, refuseUnlessRead
from connserver._http.records import RequestRecord

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "DURATION_BUCKETS",
    "REQUESTS_PER_CONNECTION_BUCKETS",
    "ConnectionCollector",
    "MetricsHandler",
    "RequestMetrics",
]

#: Upper bounds (seconds) of ``connserver_request_duration_seconds``:
#: Prometheus's default buckets.
DURATION_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)

#: Upper bounds of ``connserver_requests_per_connection``; ``0`` counts the
#: connections that closed before serving a request.
REQUESTS_PER_CONNECTION_BUCKETS: tuple[int, ...] = (
    0,
    1,
    2,
    5,
    10,
    20,
    50,
    100,
    200,
    500,
    1000,
)

_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


class _Factory(Protocol):
    @property
    def stats(self) -> StatsView: ...
    @property
    def requestObservers(self) -> list[Callable[[RequestRecord], None]]: ...


def _histogram(
    bounds: Sequence[float], counts: Sequence[int], total: float
) -> tuple[list[tuple[str, float]], float]:
    """
    Cumulative ``(le, count)`` pairs from per-bucket ``counts`` (one more
    than ``bounds``: the last is above every bound), with ``+Inf``.
    """
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip(bounds, counts, strict=False):
        running += count
        buckets.append((repr(float(bound)), running))
    running += counts[len(bounds)]
    buckets.append(("+Inf", running))
    return buckets, total


class RequestMetrics:
    """
    A ``factory.requestObservers`` entry: responses by status class, their
    durations and body bytes, in plain integers (no lock, no label lookup).
    """

    __slots__ = ("bodyBytes", "byClass", "durationCounts", "durationSum")

    def __init__(self) -> None:
        #: Responses by status class: index 1 is 1xx ... 5 is 5xx (0: other).
        self.byClass = [0] * 6
        #: Responses per duration bucket (the last: above every bound).
        self.durationCounts = [0] * (len(DURATION_BUCKETS) + 1)
        self.durationSum = 0.0
        #: Response body bytes sent.
        self.bodyBytes = 0

    def __call__(self, record: RequestRecord) -> None:
        status = record.status // 100
        self.byClass[status if 1 <= status <= 5 else 0] += 1
        duration = record.duration
        self.durationCounts[bisect_left(DURATION_BUCKETS, duration)] += 1
        self.durationSum += duration
        self.bodyBytes += record.bodyBytes


class ConnectionCollector:
    """
    A ``prometheus_client`` collector of one factory's series: the
    connection counters read from ``factory.stats`` when scraped, and the
    request counters of ``requests``.
    """

    def __init__(self, factory: _Factory, requests: RequestMetrics) -> None:
        self.factory = factory
        self.requests = requests

    def describe(self) -> Iterable[Metric]:
        """The families without samples (for the registry's name check)."""
        return self._families(empty=True)

    def collect(self) -> Iterable[Metric]:
        return self._families(empty=False)

    def _families(self, *, empty: bool) -> list[Metric]:
        """The families this collector exports, with samples unless ``empty``."""
        connections = GaugeMetricFamily(
            "connserver_connections",
            "Open connections by state.",
            labels=["state"],
        )
        accepted = CounterMetricFamily(
            "connserver_connections_accepted",
            "Connections accepted, refused ones included.",
        )
        refused = CounterMetricFamily(
            "connserver_connections_refused",
            "Connections refused: over maxConnections with none idle, or draining.",
        )
        closed = CounterMetricFamily(
            "connserver_connections_closed",
            "Closed connections by close reason.",
            labels=["reason"],
        )
        draining = GaugeMetricFamily(
            "connserver_draining",
            "1 while the server drains for a graceful shutdown, else 0.",
        )
        perConnection = HistogramMetricFamily(
            "connserver_requests_per_connection",
            "Requests served by each closed connection.",
        )
        requests = CounterMetricFamily(
            "connserver_requests",
            "Responses by status class.",
            labels=["code"],
        )
        duration = HistogramMetricFamily(
            "connserver_request_duration_seconds",
            "Seconds from the complete request head to the end of the response.",
        )
        bodyBytes = CounterMetricFamily(
            "connserver_response_body_bytes",
            "Response body bytes sent (headers excluded).",
        )
        families: list[Metric] = [
            connections,
            accepted,
            refused,
            closed,
            draining,
            perConnection,
            requests,
            duration,
            bodyBytes,
        ]
        if not empty:
            self._addConnectionSamples(
                connections, accepted, refused, closed, draining, perConnection
            )
            self._addRequestSamples(requests, duration, bodyBytes)
        return families

    def _addConnectionSamples(
        self,
        connections: GaugeMetricFamily,
        accepted: CounterMetricFamily,
        refused: CounterMetricFamily,
        closed: CounterMetricFamily,
        draining: GaugeMetricFamily,
        perConnection: HistogramMetricFamily,
    ) -> None:
        """Fill the connection families from ``factory.stats``, read now."""
        stats = self.factory.stats
        byState = stats.byState()
        for group in STATE_GROUPS:
            connections.add_metric([group], byState.get(group, 0))
        accepted.add_metric([], stats.accepted)
        refused.add_metric([], stats.refused)
        for reason, count in sorted(stats.closes.items()):
            closed.add_metric([reason], count)
        draining.add_metric([], 1 if stats.draining else 0)
        buckets, total = _perConnection(stats.requestsPerConnection)
        perConnection.add_metric([], buckets, total)

    def _addRequestSamples(
        self,
        requests: CounterMetricFamily,
        duration: HistogramMetricFamily,
        bodyBytes: CounterMetricFamily,
    ) -> None:
        """Fill the request families from the observed ``requests`` counters."""
        observed = self.requests
        for index, name in enumerate(_CLASSES, start=1):
            requests.add_metric([name], observed.byClass[index])
        buckets, total = _histogram(
            DURATION_BUCKETS, observed.durationCounts, observed.durationSum
        )
        duration.add_metric([], buckets, total)
        bodyBytes.add_metric([], observed.bodyBytes)


def _perConnection(
    histogram: Mapping[int, int],
) -> tuple[list[tuple[str, float]], float]:
    bounds = REQUESTS_PER_CONNECTION_BUCKETS
    counts = [0] * (len(bounds) + 1)
    total = 0
    for requests, connections in histogram.items():
        counts[bisect_left(bounds, requests)] += connections
        total += requests * connections
    return _histogram(bounds, counts, total)


class MetricsHandler:
    """
    A handler that answers GET and HEAD with ``factory``'s metrics in the
    Prometheus text format.

    It appends its :class:`RequestMetrics` to ``factory.requestObservers``
    (once), so that building it is all it takes to turn metrics on.  The
    ``registry`` is its own ``CollectorRegistry`` unless one is given;
    register more collectors on it to serve them at the same path.  With
    ``process`` (the default) the registry also has ``prometheus_client``'s
    process collector (CPU, memory, open descriptors; Linux only).
    """

    def __init__(
        self,
        factory: _Factory,
        *,
        registry: CollectorRegistry | None = None,
        process: bool = True,
    ) -> None:
        self.factory = factory
        self.requests = RequestMetrics()
        self.registry = registry if registry is not None else CollectorRegistry()
        self.collector = ConnectionCollector(factory, self.requests)
        self.registry.register(self.collector)
        if process:
            from prometheus_client import ProcessCollector

            ProcessCollector(registry=self.registry)
        factory.requestObservers.append(self.requests)

    def render(self) -> bytes:
        """The scrape: every series of the registry, as text."""
        return generate_latest(self.registry)

    def __call__(self, request: Request) -> Response:
        refusal = refuseUnlessRead(request, b"the metrics are read-only.")
        if refusal is not None:
            return refusal
        return Response(
            200,
            {"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"},
            self.render(),
        )
