"""
``StatusHandler``: the server's connections at a glance.

Like nginx's ``stub_status``, richer: open connections by state (waiting,
reading, handling, writing, upgraded, closing) and whether the server is draining;
totals accepted, handled and requests; closes by reason; requests per
connection.  Three representations of the same numbers: plain text (the
default, for ``curl`` and scripts), JSON (``Accept: application/json`` or
``?format=json``) and a small HTML page (``Accept: text/html``, what browsers
send, or ``?format=html``) with an inline SVG chart of connections by state
over the last ``historySeconds``.  No script and no external asset: the page
refreshes itself with a ``<meta http-equiv="refresh">``.
"""

from __future__ import annotations

import html
import json
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from twisted.application.service import Service

from connserver._connection.message import Request, Response
from connserver._http.persistence import CONNECTION_CLOSE_REASONS
from connserver._twisted.reactor import defaultReactor

if TYPE_CHECKING:
    from collections import Counter
    from collections.abc import Callable

    from twisted.internet.interfaces import IReactorTime
    from twisted.internet.task import LoopingCall

__all__ = [
    "STATE_GROUPS",
    "StatsView",
    "StatusHandler",
    "StatusSamplingService",
    "refuseUnlessRead",
]


def refuseUnlessRead(request: Request, why: bytes) -> Response | None:
    """
    None for GET and HEAD; else 405 with the ``Allow`` field RFC 9110
    §15.5.6 requires, and ``why`` in its text body.  The status page and the metrics are read-only, and
    say so the same way.
    """
    if request.method in (b"GET", b"HEAD"):
        return None
    return Response(
        405,
        {"Allow": "GET, HEAD", "Content-Type": "text/plain; charset=utf-8"},
        b"405 Method Not Allowed: " + why + b"\n",
    )


#: The state groups shown, in the order the chart stacks them.
STATE_GROUPS = ("waiting", "reading", "handling", "writing", "upgraded", "closing")

_COLOURS = {
    "waiting": "#9ecae1",
    "reading": "#fdae6b",
    "handling": "#a1d99b",
    "writing": "#3182bd",
    "upgraded": "#756bb1",
    "closing": "#de2d26",
}


class StatsView(Protocol):
    """
    What the status page and the metrics read of connection counters: a
    ``ConnectionFactory.stats``, or a worker's sum over every worker
    (``connserver._running.worker``).
    """

    @property
    def accepted(self) -> int: ...
    @property
    def handled(self) -> int: ...
    @property
    def requests(self) -> int: ...
    @property
    def refused(self) -> int: ...
    @property
    def active(self) -> int: ...
    @property
    def draining(self) -> bool: ...
    @property
    def closes(self) -> Counter[str]: ...
    @property
    def requestsPerConnection(self) -> Counter[int]: ...

    def byState(self) -> dict[str, int]: ...


class _HasStats(Protocol):
    @property
    def stats(self) -> StatsView: ...


@dataclass(frozen=True, slots=True)
class _Sample:
    time: float
    states: Mapping[str, int]
    draining: bool


class StatusHandler:
    """
    A handler for the status page of ``factory``.

    Samples of the connection states are taken every ``sampleInterval``
    seconds by a ``LoopingCall`` on ``reactor``, kept for ``historySeconds``
    for the chart.  Sampling starts with the first request (or with
    :meth:`startSampling`, which :class:`StatusSamplingService` calls) and
    ends with :meth:`stopSampling`, so that no timer outlives the service.
    """

    def __init__(
        self,
        factory: _HasStats,
        *,
        reactor: IReactorTime | None = None,
        historySeconds: float = 600,
        sampleInterval: float = 5,
    ) -> None:
        if sampleInterval <= 0 or historySeconds < sampleInterval:
            raise ValueError(
                "sampleInterval must be positive and at most historySeconds"
            )
        self.factory = factory
        self._reactor = reactor
        self.historySeconds = historySeconds
        self.sampleInterval = sampleInterval
        self._samples: deque[_Sample] = deque(
            maxlen=int(historySeconds // sampleInterval) + 1
        )
        self._loop: LoopingCall | None = None
        #: With ``--workers``: a row per worker process (``worker``, ``pid``,
        #: ``uptime``, ``connections``, ``requests``) for the page.
        self.workers: Callable[[], list[dict[str, Any]]] | None = None

    # Sampling.

    def _clock(self) -> IReactorTime:
        if self._reactor is None:
            self._reactor = defaultReactor()
        assert self._reactor is not None
        return self._reactor

    @property
    def sampling(self) -> bool:
        """True while the sampling timer runs."""
        return self._loop is not None and self._loop.running

    def startSampling(self) -> None:
        """Take a sample now and then every ``sampleInterval`` seconds."""
        if self.sampling:
            return
        from twisted.internet.task import LoopingCall

        loop = LoopingCall(self.sample)
        loop.clock = self._clock()
        self._loop = loop
        loop.start(self.sampleInterval, now=True)

    def stopSampling(self) -> None:
        """Stop the sampling timer (the history is kept)."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def sample(self) -> None:
        """Record the current connections by state."""
        stats = self.factory.stats
        self._samples.append(
            _Sample(self._clock().seconds(), _groups(stats.byState()), stats.draining)
        )

    # Rendering.

    def snapshot(self) -> dict[str, Any]:
        """Every number on the page, as the JSON representation carries it."""
        stats = self.factory.stats
        now = self._clock().seconds()
        states = _groups(stats.byState())
        return {
            "time": now,
            "active": stats.active,
            "draining": bool(stats.draining),
            "states": states,
            "accepted": stats.accepted,
            "handled": stats.handled,
            "requests": stats.requests,
            "closes": dict(sorted(stats.closes.items())),
            "requestsPerConnection": {
                str(count): connections
                for count, connections in sorted(stats.requestsPerConnection.items())
            },
            **({"workers": self.workers()} if self.workers is not None else {}),
            "history": {
                "interval": self.sampleInterval,
                "seconds": self.historySeconds,
                "samples": [
                    {"time": s.time, "draining": s.draining, **s.states}
                    for s in self._samples
                    if s.time >= now - self.historySeconds
                ],
            },
        }

    def __call__(self, request: Request) -> Response:
        refusal = refuseUnlessRead(request, b"the status page is read-only.")
        if refusal is not None:
            return refusal
        if not self.sampling:
            self.startSampling()
        kind = _chooseFormat(request)
        if kind is None:
            return Response(
                400,
                {"Content-Type": "text/plain; charset=utf-8"},
                b"400 Bad Request: format must be text, json or html.\n",
            )
        data = self.snapshot()
        if kind == "json":
            body = (json.dumps(data, indent=2) + "\n").encode("utf-8")
            contentType = "application/json"
        elif kind == "html":
            body = renderHTML(data).encode("utf-8")
            contentType = "text/html; charset=utf-8"
        else:
            body = renderText(data).encode("utf-8")
            contentType = "text/plain; charset=utf-8"
        return Response(
            200,
            {
                "Content-Type": contentType,
                # The numbers change every request: never serve them from a cache,
                # and tell caches the representation depends on Accept
                # (RFC 9110 §12.5.5).
                "Cache-Control": "no-store",
                "Vary": "Accept",
            },
            body,
        )


class StatusSamplingService(Service):
    """Runs a :class:`StatusHandler`'s sampling while the server runs."""

    def __init__(self, status: StatusHandler) -> None:
        self.status = status

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self.status.startSampling()

    def stopService(self) -> None:
        self.status.stopSampling()
        super().stopService()  # type: ignore[no-untyped-call]


def _groups(byState: Mapping[str, int]) -> dict[str, int]:
    return {group: int(byState.get(group, 0)) for group in STATE_GROUPS}


def _queryFormat(query: bytes) -> bytes | None:
    for part in query.split(b"&"):
        name, _, value = part.partition(b"=")
        if name == b"format":
            return value.lower()
    return None


def _acceptQualities(accept: bytes) -> dict[bytes, float]:
    """Media range -> q from an ``Accept`` field (RFC 9110 §12.5.1)."""
    qualities: dict[bytes, float] = {}
    for element in accept.split(b","):
        mediaRange, *params = (p.strip() for p in element.split(b";"))
        if not mediaRange:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition(b"=")
            if name.strip().lower() == b"q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        mediaRange = mediaRange.lower()
        qualities[mediaRange] = max(q, qualities.get(mediaRange, 0.0))
    return qualities


_FORMAT_TYPES = (
    ("text", b"text/plain"),
    ("json", b"application/json"),
    ("html", b"text/html"),
)


def _chooseFormat(request: Request) -> str | None:
    """``?format=`` wins; else the best of ``Accept``; plain text by default."""
    explicit = _queryFormat(request.query)
    if explicit is not None:
        return {b"text": "text", b"json": "json", b"html": "html"}.get(explicit)
    accept = b", ".join(request.headers.getAll(b"accept"))
    if not accept:
        return "text"
    qualities = _acceptQualities(accept)
    best, bestQ = "text", 0.0
    for kind, mediaType in _FORMAT_TYPES:
        # Only an explicit media type selects JSON or HTML: "*/*" (curl) and
        # "text/*" get the plain-text default.
        q = qualities.get(mediaType, 0.0)
        if q > bestQ:
            best, bestQ = kind, q
    return best


def renderText(data: Mapping[str, Any]) -> str:
    """The plain-text page, readable by people and by ``awk``."""
    states = data["states"]
    lines = [
        f"Active connections: {data['active']}",
        "accepted handled requests",
        f" {data['accepted']} {data['handled']} {data['requests']}",
        " ".join(f"{group.capitalize()}: {states[group]}" for group in STATE_GROUPS),
        f"Draining: {'yes' if data['draining'] else 'no'}",
        "Closes by reason:",
    ]
    closes = data["closes"]
    if closes:
        lines.extend(f" {reason}: {count}" for reason, count in closes.items())
    else:
        lines.append(" (none)")
    lines.append("Requests per connection (requests: connections):")
    perConnection = data["requestsPerConnection"]
    if perConnection:
        lines.extend(f" {n}: {count}" for n, count in perConnection.items())
    else:
        lines.append(" (none)")
    if "workers" in data:
        lines.append("Workers (worker pid uptime connections requests):")
        lines.extend(
            f" {w['worker']} {w['pid']} {w['uptime']:.0f}s {w['connections']} "
            f"{w['requests']}"
            for w in data["workers"]
        )
    return "\n".join(lines) + "\n"


_CHART_WIDTH = 640
_CHART_HEIGHT = 200
_MARGIN_LEFT = 40
_MARGIN_BOTTOM = 20


def renderChart(data: Mapping[str, Any]) -> str:
    """An SVG stacked-area chart of connections by state over the history."""
    history = data["history"]
    samples = history["samples"]
    span = float(history["seconds"])
    now = float(data["time"])
    width = _CHART_WIDTH - _MARGIN_LEFT
    height = _CHART_HEIGHT - _MARGIN_BOTTOM
    top: int = max([int(sum(s[g] for g in STATE_GROUPS)) for s in samples] + [1])

    def x(t: float) -> float:
        return _MARGIN_LEFT + width * (1 - (now - t) / span)

    def y(value: float) -> float:
        return height - height * value / top

    parts = _chartFrame(top, span)
    for s in samples:
        if s["draining"]:
            parts.append(
                f'<line x1="{x(s["time"]):.1f}" y1="0" x2="{x(s["time"]):.1f}" '
                f'y2="{height}" stroke="#000" stroke-opacity="0.15"/>'
            )
    if len(samples) >= 1:
        parts.extend(_chartAreas(samples, x, y))
    parts.append("</svg>")
    return "".join(parts)


def _chartFrame(top: int, span: float) -> list[str]:
    """
    The opening of the chart's SVG: the plot area and its axis labels
    (``top`` connections, the history ``span`` in seconds), apart from the
    data so that each piece of the drawing reads on its own.
    """
    width = _CHART_WIDTH - _MARGIN_LEFT
    height = _CHART_HEIGHT - _MARGIN_BOTTOM
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_CHART_WIDTH}" '
        f'height="{_CHART_HEIGHT}" viewBox="0 0 {_CHART_WIDTH} {_CHART_HEIGHT}" '
        'role="img" aria-label="connections by state">',
        f'<rect x="{_MARGIN_LEFT}" y="0" width="{width}" height="{height}" '
        'fill="#fafafa" stroke="#ccc"/>',
        f'<text x="{_MARGIN_LEFT - 4}" y="10" text-anchor="end" '
        f'font-size="10">{top}</text>',
        f'<text x="{_MARGIN_LEFT - 4}" y="{height}" text-anchor="end" '
        'font-size="10">0</text>',
        f'<text x="{_MARGIN_LEFT}" y="{_CHART_HEIGHT - 5}" font-size="10">'
        f"-{span / 60:g} min</text>",
        f'<text x="{_CHART_WIDTH}" y="{_CHART_HEIGHT - 5}" text-anchor="end" '
        'font-size="10">now</text>',
    ]


def _chartAreas(
    samples: Sequence[Mapping[str, Any]],
    x: Callable[[float], float],
    y: Callable[[float], float],
) -> list[str]:
    """
    One stacked area per state group over at least one sample, placed by
    the chart's ``x`` (time) and ``y`` (count) scales; a single sample is
    drawn as thin bars so that the first view is not empty.
    """
    parts: list[str] = []
    below = [0] * len(samples)
    for group in STATE_GROUPS:
        above = [b + s[group] for b, s in zip(below, samples, strict=True)]
        upper = [
            f"{x(s['time']):.1f},{y(v):.1f}"
            for s, v in zip(samples, above, strict=True)
        ]
        lower = [
            f"{x(s['time']):.1f},{y(v):.1f}"
            for s, v in zip(reversed(samples), reversed(below), strict=True)
        ]
        if len(samples) == 1:
            # One sample: draw a thin bar so the first view is not empty.
            s = samples[0]
            parts.append(
                f'<rect x="{x(s["time"]) - 3:.1f}" y="{y(above[0]):.1f}" '
                f'width="3" height="{y(below[0]) - y(above[0]):.1f}" '
                f'fill="{_COLOURS[group]}"><title>{group}</title></rect>'
            )
        else:
            parts.append(
                f'<polygon points="{" ".join(upper + lower)}" '
                f'fill="{_COLOURS[group]}"><title>{group}</title></polygon>'
            )
        below = above
    return parts


def renderHTML(data: Mapping[str, Any]) -> str:
    """The HTML page: the chart, a legend with current counts, the totals."""
    esc = html.escape
    states = data["states"]
    legend = "".join(
        f'<li><span class="sw" style="background:{_COLOURS[g]}"></span>'
        f"{esc(g)} <b>{states[g]}</b></li>"
        for g in STATE_GROUPS
    )
    closes = (
        "".join(
            f'<tr><td title="{esc(CONNECTION_CLOSE_REASONS.get(reason, ""))}">{esc(reason)}</td>'
            f"<td>{count}</td></tr>"
            for reason, count in data["closes"].items()
        )
        or '<tr><td colspan="2">none yet</td></tr>'
    )
    perConnection = (
        "".join(
            f"<tr><td>{esc(n)}</td><td>{count}</td></tr>"
            for n, count in data["requestsPerConnection"].items()
        )
        or '<tr><td colspan="2">none yet</td></tr>'
    )
    draining = (
        '<p class="drain">Draining: shutting down gracefully.</p>'
        if data["draining"]
        else ""
    )
    refresh = max(1, int(data["history"]["interval"]))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{refresh}">
<title>connserver status</title>
<style>
body{{font:14px system-ui,sans-serif;margin:1.5em;color:#222}}
table{{border-collapse:collapse;margin-right:2em;display:inline-table;vertical-align:top}}
td,th{{padding:2px 8px;border-bottom:1px solid #eee;text-align:left}}
ul{{list-style:none;padding:0}} li{{display:inline-block;margin-right:1em}}
.sw{{display:inline-block;width:10px;height:10px;margin-right:4px}}
.drain{{color:#b00;font-weight:bold}}
</style></head><body>
<h1>connserver status</h1>
{draining}<p><b>{data["active"]}</b> open connections &middot;
{data["accepted"]} accepted &middot; {data["handled"]} handled &middot;
{data["requests"]} requests</p>
<ul>{legend}</ul>
{renderChart(data)}
<div>
<table><tr><th>close reason</th><th>count</th></tr>{closes}</table>
<table><tr><th>requests on a connection</th><th>connections</th></tr>{perConnection}</table>
</div>
{_workersTable(data)}<p><a href="?format=json">JSON</a> &middot; <a href="?format=text">text</a></p>
</body></html>
"""


def _workersTable(data: Mapping[str, Any]) -> str:
    if "workers" not in data:
        return ""
    rows = "".join(
        f"<tr><td>{w['worker']}</td><td>{w['pid']}</td><td>{w['uptime']:.0f} s</td>"
        f"<td>{w['connections']}</td><td>{w['requests']}</td></tr>"
        for w in data["workers"]
    )
    return (
        "<table><tr><th>worker</th><th>pid</th><th>uptime</th>"
        f"<th>connections</th><th>requests</th></tr>{rows}</table>"
    )
