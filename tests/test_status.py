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

from connserver._headers import Headers
from connserver._message import Request, Response
from connserver._routing import PrefixMount
from connserver._status import StatusHandler, StatusSamplingService


class FakeStats:
    """The counters ``ConnectionFactory.stats`` offers, settable."""

    def __init__(self) -> None:
        self.accepted = 12
        self.handled = 40
        self.requests = 40
        self.draining = False
        self.closes: Counter[str] = Counter({"idle-timeout": 3, "client-close": 5})
        self.requestsPerConnection: Counter[int] = Counter({1: 6, 4: 2})
        self.states = {
            "reading": 1,
            "handling": 0,
            "writing": 2,
            "waiting": 1,
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
def clock() -> Clock:
    return Clock()


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
        b" 12 40 40\n"
        b"Waiting: 1 Reading: 1 Handling: 0 Writing: 2 Closing: 0\n"
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
        "closing": 0,
    }
    assert (data["accepted"], data["handled"], data["requests"]) == (12, 40, 40)
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
