"""
``MetricsHandler`` (``--metrics-path``): scrapes through the real handler
after real requests on the StringTransport harness, parsed with
``prometheus_client``'s own parser; and the command line's flag.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python import usage

from connserver import tap
from connserver._connection.message import Request, Response
from connserver._handlers.metrics import (
    DURATION_BUCKETS,
    MetricsHandler,
    RequestMetrics,
)
from connserver._handlers.routing import PrefixMount
from connserver._http.headers import Headers
from connserver._http.records import RequestRecord

from ._harness import Connection, connect, hello, openOn, parseResponses

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parseScrape(text: str) -> tuple[Samples, dict[str, str]]:
    """Every sample by (name, sorted labels), and every family's type."""
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


class App:
    """200 for /, 404 for /missing, 200 after 0.3 s (on the clock) for /slow."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def __call__(self, request: Request) -> Response | Deferred[Response]:
        if request.path == b"/slow":
            d: Deferred[Response] = Deferred()
            self.clock.callLater(0.3, d.callback, Response(200, body=b"slow"))
            return d
        if request.path == b"/missing":
            return Response(404, body=b"nothing here")
        return Response(200, body=b"hello")


def serve() -> tuple[Connection, MetricsHandler]:
    """The first connection to a factory serving ``App`` with /metrics mounted."""
    clock = Clock()
    app = App(clock)
    conn = connect(app, clock=clock)
    metrics = MetricsHandler(conn.factory, process=False)
    conn.factory.handler = PrefixMount(app, {"/metrics": metrics})
    return conn, metrics


def scrape(conn: Connection) -> tuple[Samples, dict[str, str], Any]:
    """GET /metrics on a new connection to the same factory; it is then closed."""
    scraper = openOn(conn.factory, conn.clock)
    assert scraper is not None
    scraper.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    [response] = scraper.responses()
    assert response.status == 200
    scraper.lose()
    samples, types = parseScrape(response.body.decode("utf-8"))
    return samples, types, response


def test_scrapeAfterRequests() -> None:
    conn, _ = serve()
    conn.send(
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    conn.clock.advance(0.3)
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert [r.status for r in conn.responses()] == [200, 404, 200, 200]
    conn.lose()
    bad = openOn(conn.factory, conn.clock)
    assert bad is not None
    bad.send(b"NOT A REQUEST\r\n\r\n")
    assert bad.responses(eof=True)[0].status == 400
    bad.lose()
    closes = dict(conn.factory.stats.closes)

    samples, types, response = scrape(conn)

    assert response.header(b"content-type") == CONTENT_TYPE_LATEST.encode()
    assert response.header(b"cache-control") == b"no-store"
    # Three connections: two closed, the scrape's open (handling the scrape).
    assert value(samples, "connserver_connections_accepted_total") == 3
    assert value(samples, "connserver_connections", state="handling") == 1
    assert value(samples, "connserver_connections", state="waiting") == 0
    assert (
        value(samples, "connserver_connections_closed_total", reason="client-close")
        == 1
    )
    assert (
        sum(
            v
            for (name, _), v in samples.items()
            if name == "connserver_connections_closed_total"
        )
        == 2
    )
    for reason, count in closes.items():
        assert (
            value(samples, "connserver_connections_closed_total", reason=reason)
            == count
        )
    # Responses by class (the scrape itself is counted once it is done).
    assert value(samples, "connserver_requests_total", code="2xx") == 3
    assert value(samples, "connserver_requests_total", code="4xx") == 2
    assert value(samples, "connserver_requests_total", code="5xx") == 0
    # Durations: four at once, /slow in (0.25, 0.5].
    duration = "connserver_request_duration_seconds"
    assert value(samples, duration + "_count") == 5
    assert value(samples, duration + "_bucket", le="0.005") == 4
    assert value(samples, duration + "_bucket", le="0.25") == 4
    assert value(samples, duration + "_bucket", le="0.5") == 5
    assert value(samples, duration + "_bucket", le="+Inf") == 5
    assert value(samples, duration + "_sum") == pytest.approx(0.3)
    # Requests per connection: the closed ones served 4 and 1.
    perConnection = "connserver_requests_per_connection"
    assert value(samples, perConnection + "_count") == 2
    assert value(samples, perConnection + "_sum") == 5
    assert value(samples, perConnection + "_bucket", le="1.0") == 1
    assert value(samples, perConnection + "_bucket", le="2.0") == 1
    assert value(samples, perConnection + "_bucket", le="5.0") == 2
    # Bodies: hello, nothing here, slow, hello, and the 400's text.
    body400 = len(b"400 Bad Request\r\n")
    assert value(samples, "connserver_response_body_bytes_total") == (
        5 + 12 + 4 + 5 + body400
    )
    assert value(samples, "connserver_connections_refused_total") == 0
    assert value(samples, "connserver_draining") == 0
    assert types == {
        "connserver_connections": "gauge",
        "connserver_connections_accepted": "counter",
        "connserver_connections_refused": "counter",
        "connserver_connections_closed": "counter",
        "connserver_draining": "gauge",
        "connserver_requests_per_connection": "histogram",
        "connserver_requests": "counter",
        "connserver_request_duration_seconds": "histogram",
        "connserver_response_body_bytes": "counter",
    }


@pytest_twisted.ensureDeferred
async def test_scrapeOverARealSocket() -> None:
    from . import _sockets

    server = await _sockets.serve(hello)
    metrics = MetricsHandler(server.factory)
    server.factory.handler = PrefixMount(hello, {"/metrics": metrics})
    try:
        client = await _sockets.connect(server)
        client.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
        await client.waitFor(b"HTTP/1.1 200", 2)
        scraper = await _sockets.connect(
            server,
            request=b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        [response] = parseResponses(await scraper.waitClosed(), [b"GET"], eof=True)
        client.close()
        await client.waitClosed()
    finally:
        await _sockets.finish(server)
    assert response.status == 200
    assert response.header(b"content-type") == CONTENT_TYPE_LATEST.encode()
    samples, _ = parseScrape(response.body.decode("utf-8"))
    assert value(samples, "connserver_connections_accepted_total") == 2
    # The first connection waits for its next request; the scrape's is busy.
    assert value(samples, "connserver_connections", state="waiting") == 1
    assert value(samples, "connserver_connections", state="handling") == 1
    assert value(samples, "connserver_requests_total", code="2xx") == 2
    assert value(samples, "connserver_request_duration_seconds_count") == 2
    assert value(samples, "connserver_requests_per_connection_count") == 0
    assert value(samples, "connserver_response_body_bytes_total") == 2 * 130


def test_scrapesCountEachOther() -> None:
    """A second scrape sees the first one's response and its connection."""
    conn, _ = serve()
    first, _, _ = scrape(conn)
    second, _, _ = scrape(conn)
    assert value(first, "connserver_requests_total", code="2xx") == 0
    assert value(second, "connserver_requests_total", code="2xx") == 1
    assert value(second, "connserver_connections_accepted_total") == 3
    assert (
        value(second, "connserver_connections_closed_total", reason="client-close") == 1
    )


def test_freshServerHasEverySeries() -> None:
    """Every state and status class is there from the start, at zero."""
    _conn, metrics = serve()
    samples, _ = parseScrape(metrics.render().decode())
    for state in ("waiting", "reading", "handling", "writing", "closing"):
        assert ("connserver_connections", (("state", state),)) in samples
    for code in ("1xx", "2xx", "3xx", "4xx", "5xx"):
        assert value(samples, "connserver_requests_total", code=code) == 0
    assert value(samples, "connserver_connections", state="reading") == 1
    assert value(samples, "connserver_request_duration_seconds_count") == 0
    assert value(samples, "connserver_requests_per_connection_count") == 0


def test_onlyGetAndHead() -> None:
    _conn, metrics = serve()
    response = metrics(Request(b"POST", b"/metrics", headers=Headers()))
    assert response.code == 405
    assert response.headers.get(b"allow") == b"GET, HEAD"
    head = metrics(Request(b"HEAD", b"/metrics", headers=Headers()))
    assert head.code == 200


def test_observerInstalledOnce() -> None:
    conn, metrics = serve()
    assert conn.factory.requestObservers == [metrics.requests]


def test_twoFactoriesDoNotClash() -> None:
    """Each handler has its own registry; the global one is left alone."""
    one, metricsOne = serve()
    _two, metricsTwo = serve()
    one.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    samplesOne, _ = parseScrape(metricsOne.render().decode())
    samplesTwo, _ = parseScrape(metricsTwo.render().decode())
    assert value(samplesOne, "connserver_requests_total", code="2xx") == 1
    assert value(samplesTwo, "connserver_requests_total", code="2xx") == 0
    assert metricsOne.registry is not metricsTwo.registry
    assert metricsOne.registry is not REGISTRY
    globalNames = {family.name for family in REGISTRY.collect()}
    assert not any(name.startswith("connserver_") for name in globalNames)


def test_processCollectorAndOwnRegistry() -> None:
    conn, _ = serve()
    registry = CollectorRegistry()
    metrics = MetricsHandler(conn.factory, registry=registry)
    assert metrics.registry is registry
    text = metrics.render().decode()
    samples, _ = parseScrape(text)
    assert value(samples, "connserver_connections_accepted_total") == 1
    if sys.platform.startswith("linux"):
        assert "process_open_fds" in text


def record(status: int, duration: float, bodyBytes: int) -> RequestRecord:
    return RequestRecord(
        timestamp=0.0,
        peerHost="127.0.0.1",
        method=b"GET",
        target=b"/",
        version=(1, 1),
        status=status,
        bodyBytes=bodyBytes,
        referer=None,
        userAgent=None,
        connectionId=1,
        requestIndex=1,
        connectionAge=duration,
        duration=duration,
        closeReason=None,
    )


def test_requestMetricsBuckets() -> None:
    """A duration on a bound falls in that bucket (le is "at most")."""
    metrics = RequestMetrics()
    metrics(record(204, DURATION_BUCKETS[0], 0))
    metrics(record(301, 0.0051, 10))
    metrics(record(503, 60.0, 20))
    metrics(record(101, 0.0, 0))
    assert metrics.byClass == [0, 1, 1, 1, 0, 1]
    assert metrics.durationCounts[0] == 2
    assert metrics.durationCounts[1] == 1
    assert metrics.durationCounts[-1] == 1
    assert metrics.bodyBytes == 30
    assert metrics.durationSum == pytest.approx(DURATION_BUCKETS[0] + 0.0051 + 60.0)


# -- the command line ---------------------------------------------------------


def parse(*args: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(args))
    return options


def test_metricsPathMountsTheHandler(tmp_path: Path) -> None:
    options = parse(
        "--path", str(tmp_path),
        "--listen", "tcp:0:interface=127.0.0.1",
        "--metrics-path", "/metrics",
        "--status-path", "/status",
    )  # fmt: skip
    service: Any = tap.makeService(options)
    factory = service.factory
    assert isinstance(factory.handler, PrefixMount)
    handler = factory.handler.route(b"/metrics")
    assert isinstance(handler, MetricsHandler)
    assert handler.factory is factory
    assert factory.requestObservers == [handler.requests]
    assert factory.handler.route(b"/status") is not handler
    assert factory.handler.route(b"/status") is not factory.handler.default
    assert factory.handler.route(b"/other") is factory.handler.default
    response = handler(Request(b"GET", b"/metrics", headers=Headers()))
    assert isinstance(response.body, bytes)
    samples, _ = parseScrape(response.body.decode())
    assert value(samples, "connserver_connections_accepted_total") == 0


def test_noMetricsPathNoObserver(tmp_path: Path) -> None:
    service: Any = tap.makeService(parse("--path", str(tmp_path)))
    assert service.factory.requestObservers == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--metrics-path", "metrics"], "absolute path", id="relative"),
        pytest.param(["--metrics-path", "/"], "cannot take the whole site", id="root"),
        pytest.param(["--metrics-path", "/m?x"], "absolute path", id="query"),
        pytest.param(
            ["--metrics-path", "/s/", "--status-path", "/s"],
            "same path as --status-path",
            id="same-as-status",
        ),
    ],
)
def test_badMetricsPath(args: list[str], message: str) -> None:
    with pytest.raises(usage.UsageError, match=message) as raised:
        parse(*args)
    assert str(raised.value).startswith("--metrics-path ")


def test_missingLibraryIsOneLine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without prometheus_client: one line naming the extra, no traceback."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(usage.UsageError) as raised:
        parse("--metrics-path", "/metrics")
    message = str(raised.value)
    assert "\n" not in message
    assert "prometheus_client" in message
    assert "pip install 'connserver[metrics]'" in message
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__


def test_missingLibraryMattersOnlyWithTheFlag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    assert parse()["metrics-path"] is None
