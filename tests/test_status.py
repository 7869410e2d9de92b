"""
``StatusHandler`` (text, JSON, HTML; sampling on ``Clock``) and the
``PrefixMount`` that puts it at ``--status-path``.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from typing import Any

import pytest
from twisted.internet.task import Clock

from connserver._connection.message import Request, Response
from connserver._handlers.routing import PrefixMount
from connserver._handlers.status import StatusHandler, StatusSamplingService
from connserver._http.headers import Headers


class FakeStats:
    """The counters ``ConnectionFactory.stats`` offers, settable."""

    def __init__(self) -> None:
        self.accepted = 12
        self.handled = 12
        self.requests = 40
        self.draining = False
        self.closes: Counter[str] = Counter({"idle-timeout": 3, "client-close": 5})
        self.requestsPerConnection: Counter[int] = Counter({1: 6, 4: 2})
        self.states = {
            "reading": 1,
            "handling": 0,
            "writing": 2,
            "waiting": 1,
            "upgraded": 0,
            "closing": 0,
        }

    @property
    def active(self) -> int:
        return sum(self.states.values())

    def byState(self) -> dict[str, int]:
        return dict(self.states)


class FakeFactory:
    def __init__(self) -> None:
        self.stats = FakeStats()


def get(
    handler: Any, target: bytes = b"/status", accept: bytes | None = None
) -> Response:
    headers = Headers([(b"Accept", accept)] if accept is not None else [])
    response = handler(Request(b"GET", target, headers=headers))
    assert isinstance(response, Response)
    return response


@pytest.fixture
def status(clock: Clock) -> Any:
    handler = StatusHandler(
        FakeFactory(), reactor=clock, historySeconds=60, sampleInterval=5
    )
    yield handler
    handler.stopSampling()
    assert clock.getDelayedCalls() == []


def test_plainTextByDefault(status: StatusHandler) -> None:
    response = get(status)
    assert response.code == 200
    assert response.headers.get(b"content-type") == b"text/plain; charset=utf-8"
    assert response.headers.get(b"cache-control") == b"no-store"
    assert response.body == (
        b"Active connections: 4\n"
        b"accepted handled requests\n"
        b" 12 12 40\n"
        b"Waiting: 1 Reading: 1 Handling: 0 Writing: 2 Upgraded: 0 Closing: 0\n"
        b"Draining: no\n"
        b"Closes by reason:\n"
        b" client-close: 5\n"
        b" idle-timeout: 3\n"
        b"Requests per connection (requests: connections):\n"
        b" 1: 6\n"
        b" 4: 2\n"
    )


@pytest.mark.parametrize(
    ("target", "accept", "kind"),
    [
        pytest.param(b"/status", b"*/*", "text", id="curl-any"),
        pytest.param(b"/status", b"application/json", "json", id="accept-json"),
        pytest.param(b"/status?format=json", None, "json", id="query-json"),
        pytest.param(b"/status?a=1&format=JSON", b"text/html", "json", id="query-wins"),
        pytest.param(
            b"/status",
            b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            "html",
            id="browser",
        ),
        pytest.param(
            b"/status", b"text/html;q=0.5, application/json", "json", id="q-values"
        ),
        pytest.param(b"/status", b"application/json;q=0", "text", id="q-zero"),
        pytest.param(b"/status?format=text", b"application/json", "text", id="q-text"),
        pytest.param(b"/status?format=html", None, "html", id="query-html"),
    ],
)
def test_negotiation(
    status: StatusHandler, target: bytes, accept: bytes | None, kind: str
) -> None:
    response = get(status, target, accept)
    contentType = response.headers.get(b"content-type") or b""
    assert (
        contentType.split(b";")[0]
        == {
            "text": b"text/plain",
            "json": b"application/json",
            "html": b"text/html",
        }[kind]
    )
    assert response.headers.get(b"vary") == b"Accept"


def test_badFormat(status: StatusHandler) -> None:
    assert get(status, b"/status?format=xml").code == 400


def test_readOnly(status: StatusHandler) -> None:
    response = status(Request(b"POST", b"/status", body=b"x"))
    assert isinstance(response, Response)
    assert response.code == 405
    assert response.headers.get(b"allow") == b"GET, HEAD"


def test_json(status: StatusHandler, clock: Clock) -> None:
    clock.advance(1000)
    data = json.loads(get(status, accept=b"application/json").body)
    assert data["active"] == 4
    assert data["states"] == {
        "waiting": 1,
        "reading": 1,
        "handling": 0,
        "writing": 2,
        "upgraded": 0,
        "closing": 0,
    }
    assert (data["accepted"], data["handled"], data["requests"]) == (12, 12, 40)
    assert data["draining"] is False
    assert data["closes"] == {"client-close": 5, "idle-timeout": 3}
    assert data["requestsPerConnection"] == {"1": 6, "4": 2}
    # The first request started sampling with one sample taken at once.
    assert data["history"]["samples"] == [
        {
            "time": 1000.0,
            "draining": False,
            "waiting": 1,
            "reading": 1,
            "handling": 0,
            "writing": 2,
            "upgraded": 0,
            "closing": 0,
        }
    ]


def test_samplingKeepsTheHistoryWindow(status: StatusHandler, clock: Clock) -> None:
    assert clock.getDelayedCalls() == []
    get(status)
    assert status.sampling
    stats = status.factory.stats
    for second in range(0, 200, 5):
        stats.states["waiting"] = second  # type: ignore[attr-defined]
        clock.advance(5)
    samples = json.loads(get(status, accept=b"application/json").body)["history"][
        "samples"
    ]
    times = [s["time"] for s in samples]
    assert times == [float(t) for t in range(140, 205, 5)]
    assert samples[-1]["waiting"] == 195
    status.stopSampling()
    assert clock.getDelayedCalls() == []


def test_html(status: StatusHandler, clock: Clock) -> None:
    status.factory.stats.draining = True  # type: ignore[attr-defined]
    get(status)
    clock.advance(5)
    clock.advance(5)
    response = get(status, accept=b"text/html")
    page = response.body.decode()
    assert page.startswith("<!DOCTYPE html>")
    assert "Draining" in page
    assert "<script" not in page
    assert not re.search(r"""(src|href)=["']?https?:""", page), "no external asset"
    svg = re.search(r"<svg.*</svg>", page, re.S)
    assert svg is not None
    chart = ET.fromstring(svg.group(0))
    polygons = chart.findall("{http://www.w3.org/2000/svg}polygon")
    assert [p.find("{http://www.w3.org/2000/svg}title").text for p in polygons] == [  # type: ignore[union-attr]
        "waiting",
        "reading",
        "handling",
        "writing",
        "upgraded",
        "closing",
    ]


def test_htmlFirstView(status: StatusHandler) -> None:
    """With a single sample the chart still shows something, and parses."""
    page = get(status, b"/status?format=html").body.decode()
    svg = re.search(r"<svg.*</svg>", page, re.S)
    assert svg is not None
    ET.fromstring(svg.group(0))
    assert "<rect" in svg.group(0)


def test_samplingService(clock: Clock) -> None:
    status = StatusHandler(FakeFactory(), reactor=clock, sampleInterval=5)
    service = StatusSamplingService(status)
    service.startService()
    assert status.sampling and len(clock.getDelayedCalls()) == 1
    service.stopService()
    assert not status.sampling
    assert clock.getDelayedCalls() == []


def test_badIntervals() -> None:
    with pytest.raises(ValueError):
        StatusHandler(FakeFactory(), sampleInterval=0)
    with pytest.raises(ValueError):
        StatusHandler(FakeFactory(), historySeconds=1, sampleInterval=5)


# PrefixMount


def named(name: bytes) -> Any:
    def handler(request: Request) -> Response:
        return Response(200, body=name)

    return handler


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param(b"/status", b"status", id="exact"),
        pytest.param(b"/status/", b"status", id="trailing-slash"),
        pytest.param(b"/status/x", b"status", id="below"),
        pytest.param(b"/status/deep/x", b"deep", id="longest-prefix"),
        pytest.param(b"/statusx", b"main", id="not-a-segment"),
        pytest.param(b"/", b"main", id="root"),
        pytest.param(b"/other/status", b"main", id="elsewhere"),
    ],
)
def test_prefixMount(path: bytes, expected: bytes) -> None:
    mount = PrefixMount(
        named(b"main"), {"/status/": named(b"status"), b"/status/deep": named(b"deep")}
    )
    response = mount(Request(b"GET", path + b"?q=1"))
    assert isinstance(response, Response)
    assert response.body == expected


def test_prefixMountRejectsBadPrefixes() -> None:
    with pytest.raises(ValueError):
        PrefixMount(named(b"main"), {"status": named(b"s")})
    with pytest.raises(ValueError):
        PrefixMount(named(b"main"), {"/s?x": named(b"s")})


# -- the counters of a real factory (nginx stub_status semantics) ------------------


def test_countersFollowStubStatus() -> None:
    """
    Issue 12: after three malformed requests the page read ``4 3 1``.
    ``accepted`` counts connections accepted, ``handled`` those not refused,
    ``requests`` every request received, the malformed ones (answered 400)
    and the status request itself included: ``4 4 4``.  A refused
    connection counts as accepted, not handled; a request cut off by the
    head timeout counts (408), a connection that never sent a byte does not.
    """
    from twisted.internet.defer import Deferred

    from connserver import ConnectionFactory, ServerConfig
    from connserver._handlers.status import renderText

    from ._harness import PEER, FakePort, TCPStringTransport, openOn

    clock = Clock()
    holder: list[StatusHandler] = []
    factory = ConnectionFactory(
        lambda request: holder[0](request), config=ServerConfig(), reactor=clock
    )
    holder.append(StatusHandler(factory, reactor=clock))
    for _ in range(3):
        conn = openOn(factory, clock)
        assert conn is not None
        conn.send(b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.responses()[0].status == 400
        conn.lose()
    conn = openOn(factory, clock)
    assert conn is not None
    conn.send(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    [response] = conn.responses()
    assert b"accepted handled requests\n 4 4 4\n" in response.body
    conn.lose()
    # A head timeout with a partial request (408) counts as a request; one
    # without a byte does not.
    partial = openOn(factory, clock)
    silent = openOn(factory, clock)
    assert partial is not None and silent is not None
    partial.send(b"GET / HT")
    clock.advance(20)
    partial.lose()
    silent.lose()
    # A refused connection: accepted, not handled.
    limited = ConnectionFactory(
        lambda request: Deferred(), config=ServerConfig(maxConnections=1), reactor=clock
    )
    limited.addListeningPort(FakePort())  # type: ignore[arg-type]
    busy = openOn(limited, clock)
    assert busy is not None
    busy.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    refused = limited.buildProtocol(PEER)
    assert refused is not None
    transport = TCPStringTransport()
    refused.makeConnection(transport)
    assert transport.value().startswith(b"HTTP/1.1 503 ")
    limitedStats = limited.stats
    assert (limitedStats.accepted, limitedStats.handled, limitedStats.requests) == (
        2,
        1,
        1,
    )
    stats = factory.stats
    assert (stats.accepted, stats.handled, stats.requests) == (6, 6, 5)
    data = holder[0].snapshot()
    assert "\n 6 6 5\n" in renderText(data)
    # Every connection gone: the closes add up to accepted, the requests
    # per connection to handled.
    assert sum(stats.closes.values()) == stats.accepted
    assert sum(stats.requestsPerConnection.values()) == stats.handled
    clock.advance(1)
    refused.connectionLost(None)  # type: ignore[arg-type]
    limited.drain(0)
    busy.lose()
    holder[0].stopSampling()
