"""
The handlers the in-process golden cases talk to, chosen by path.

Everything a handler does that is not on the wire (a body read to its end or
cut short, a Deferred cancelled, a producer paused or stopped) is written to
``notes``, which the transcript records step by step.  Time comes from the
case's ``Clock`` only.

Paths:

``/hello``           200, a fixed body
``/echo``            the request body, read whole (``readBody``)
``/count``           the body streamed (``deliverBody``), answered with its size
``/pause``           streamed, pausing the body for one second after the first data
``/stop``            streamed, stopping the body at its first data and answering
``/stream``          a producer of known length, a piece every 0.5 s
``/unknown``         a producer of unknown length, a piece every 0.5 s
``/unknown-now``     a producer of unknown length that writes everything at once
``/known-now``       a producer of known length that writes everything at once
``/short``           a producer that ends before its announced length
``/long``            a producer that writes more than its announced length
``/fail-body``       a producer that fails after its first piece
``/trailers``        an unknown-length body with trailer fields
``/big``             a 40,000-byte body
``/file``            an in-memory file body
``/slow``            answered after 2 s
``/slow-close``      answered after 2 s with ``Connection: close``
``/never``           never answered (notes its cancellation)
``/boom``            raises
``/boom-later``      fails after 1 s
``/close``           ``Connection: close`` from the handler
``/close-mixed``     ``Connection: keep-alive, close`` from the handler
``/keep``            ``Connection: keep-alive`` and ``Keep-Alive`` from the handler
``/hop``             other hop-by-hop fields from the handler
``/te``              a ``Transfer-Encoding`` field from the handler
``/cl-right``        a correct ``Content-Length`` field from the handler
``/cl-wrong``        a wrong ``Content-Length`` field from the handler
``/bad-header``      an invalid field name from the handler
``/coro``            a coroutine, answering after 1 s
``/bad-return``      returns something that is not a Response
``/reason``          a custom reason phrase
``/note``            a Response with a note for the access log
``/status/NNN``      an empty response with status NNN
anything else        200 with a description of the request as the server parsed it
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from .api import Headers, ProtocolError, Request, Response

TEXT = [(b"Content-Type", b"text/plain")]
HELLO = b"hello, world\n"
BIG = bytes(range(97, 123)) * 1538 + b"abcdefghijkl"  # 40,000 bytes
assert len(BIG) == 40_000


def failureText(failure: Failure) -> str:
    """A failure as the notes show it: its type, and a ProtocolError's status."""
    error = failure.value
    if isinstance(error, ProtocolError):
        return f"ProtocolError {error.statusCode}"
    return type(error).__name__


@implementer(IBodyProducer)
class TimedProducer:
    """
    Writes ``pieces`` one per ``interval`` seconds of the clock (all at once
    when ``interval`` is None), then finishes, or fails if ``fail``.  It
    follows pauses: a piece due while paused is written on resume.
    """

    def __init__(
        self,
        name: str,
        clock: Clock,
        note: Callable[[str], None],
        pieces: list[bytes],
        length: int | object,
        interval: float | None,
        fail: bool = False,
    ) -> None:
        self.name = name
        self.clock = clock
        self.note = note
        self.pieces = list(pieces)
        self.length = length
        self.interval = interval
        self.fail = fail
        self.consumer: Any = None
        self.done: Deferred[None] = Deferred()
        self.paused = False
        self.waiting = False
        self.stopped = False
        self.call: Any = None

    def startProducing(self, consumer: Any) -> Deferred[None]:
        self.consumer = consumer
        if self.interval is None:
            for piece in self.pieces:
                consumer.write(piece)
            self.pieces = []
            self._end()
        else:
            self.call = self.clock.callLater(self.interval, self._tick)
        return self.done

    def _tick(self) -> None:
        self.call = None
        if self.stopped:
            return
        if self.paused:
            self.waiting = True
            return
        if self.pieces:
            self.consumer.write(self.pieces.pop(0))
        if self.stopped:
            return
        if self.pieces:
            self.call = self.clock.callLater(self.interval, self._tick)  # type: ignore[arg-type]
        else:
            self._end()

    def _end(self) -> None:
        if self.done.called or self.stopped:
            return
        if self.fail:
            self.done.errback(RuntimeError(f"{self.name}: the source failed"))
        else:
            self.done.callback(None)

    def pauseProducing(self) -> None:
        self.note(f"{self.name}: producer paused")
        self.paused = True

    def resumeProducing(self) -> None:
        self.note(f"{self.name}: producer resumed")
        self.paused = False
        if self.waiting:
            self.waiting = False
            self._tick()

    def stopProducing(self) -> None:
        self.note(f"{self.name}: producer stopped")
        self.stopped = True
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None


class _Sink:
    """A body consumer (``deliverBody``): counts, and can pause or stop."""

    def __init__(self, app: App, name: str, mode: str, done: Deferred[Response]):
        self.app = app
        self.name = name
        self.mode = mode
        self.done = done
        self.size = 0
        self.transport: Any = None
        self.pausedOnce = False

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)
        if self.mode == "pause" and not self.pausedOnce:
            self.pausedOnce = True
            self.app.note(f"{self.name}: pausing the body")
            self.transport.pauseProducing()
            self.app.clock.callLater(1.0, self._resume)
        elif self.mode == "stop" and not self.done.called:
            self.app.note(f"{self.name}: stopping the body after {self.size} bytes")
            self.transport.stopProducing()
            self.done.callback(Response(200, TEXT, b"stopped\n"))

    def _resume(self) -> None:
        self.app.note(f"{self.name}: resuming the body")
        self.transport.resumeProducing()

    def connectionLost(self, reason: Failure) -> None:
        how = "complete" if reason.check(ResponseDone) else failureText(reason)
        self.app.note(f"{self.name}: body {how}, {self.size} bytes")
        if not self.done.called:
            self.done.callback(Response(200, TEXT, b"%d bytes\n" % self.size))


class App:
    """The handler of one golden case (see the module docstring)."""

    def __init__(self, clock: Clock, notes: list[str]) -> None:
        self.clock = clock
        self.notes = notes

    def note(self, text: str) -> None:
        self.notes.append(text)

    def __call__(self, request: Request) -> Any:
        path = request.path
        if path.startswith(b"/status/"):
            return Response(int(path[8:]))
        route = _ROUTES.get(path)
        if route is None:
            return self.describe(request)
        return route(self, request)

    def producer(
        self,
        name: str,
        pieces: list[bytes],
        length: int | object,
        interval: float | None,
        fail: bool = False,
    ) -> TimedProducer:
        return TimedProducer(
            name, self.clock, self.note, pieces, length, interval, fail
        )

    def later(
        self, name: str, seconds: float, answer: Callable[[Deferred[Response]], None]
    ) -> Deferred[Response]:
        """A Deferred that ``answer`` fires after ``seconds``; notes a cancel."""
        calls: list[Any] = []

        def cancel(d: Deferred[Response]) -> None:
            self.note(f"{name}: cancelled")
            if calls[0].active():
                calls[0].cancel()

        d: Deferred[Response] = Deferred(cancel)
        calls.append(self.clock.callLater(seconds, answer, d))
        return d

    # -- the routes ---------------------------------------------------------

    def describe(self, request: Request) -> Response:
        major, minor = request.version
        lines = [
            b"%s %s HTTP/%d.%d" % (request.method, request.target, major, minor),
            b"conn=%d req=%d length=%s chunked=%s hasBody=%s"
            % (
                request.connectionId,
                request.requestIndex,
                str(request.contentLength).encode(),
                str(request.chunked).encode(),
                str(request.hasBody).encode(),
            ),
            b"options=" + b",".join(sorted(request.connectionOptions)),
        ]
        lines += [b"field " + name + b": " + value for name, value in request.headers]
        return Response(200, TEXT, b"\n".join(lines) + b"\n")

    def hello(self, request: Request) -> Response:
        return Response(200, TEXT, HELLO)

    def echo(self, request: Request) -> Deferred[Response]:
        def got(body: bytes) -> Response:
            self.note(f"echo: body of {len(body)} bytes")
            return Response(200, [(b"Content-Type", b"application/octet-stream")], body)

        def failed(failure: Failure) -> Failure:
            self.note(f"echo: body failed, {failureText(failure)}")
            return failure

        return request.readBody().addCallbacks(got, failed)

    def sink(self, request: Request, mode: str) -> Deferred[Response]:
        done: Deferred[Response] = Deferred()
        name = request.path.decode()[1:]
        request.deliverBody(_Sink(self, name, mode, done))  # type: ignore[arg-type]
        return done

    def count(self, request: Request) -> Deferred[Response]:
        return self.sink(request, "count")

    def pause(self, request: Request) -> Deferred[Response]:
        return self.sink(request, "pause")

    def stop(self, request: Request) -> Deferred[Response]:
        return self.sink(request, "stop")

    def stream(self, request: Request) -> Response:
        pieces = [b"one\n", b"two\n", b"three\n"]
        producer = self.producer("stream", pieces, sum(map(len, pieces)), 0.5)
        return Response(200, TEXT, producer)

    def unknown(self, request: Request) -> Response:
        pieces = [b"one\n", b"two\n", b"three\n"]
        return Response(
            200, TEXT, self.producer("unknown", pieces, UNKNOWN_LENGTH, 0.5)
        )

    def unknownNow(self, request: Request) -> Response:
        pieces = [b"all ", b"at ", b"once\n"]
        producer = self.producer("unknown-now", pieces, UNKNOWN_LENGTH, None)
        return Response(200, TEXT, producer)

    def knownNow(self, request: Request) -> Response:
        pieces = [b"all ", b"at ", b"once\n"]
        producer = self.producer("known-now", pieces, 12, None)
        return Response(200, TEXT, producer)

    def short(self, request: Request) -> Response:
        return Response(200, TEXT, self.producer("short", [b"only ten b"], 20, 0.5))

    def long(self, request: Request) -> Response:
        return Response(200, TEXT, self.producer("long", [b"too long"], 3, 0.5))

    def failBody(self, request: Request) -> Response:
        producer = self.producer(
            "fail-body", [b"partial\n"], UNKNOWN_LENGTH, 0.5, fail=True
        )
        return Response(200, TEXT, producer)

    def trailers(self, request: Request) -> Response:
        producer = self.producer("trailers", [b"body\n"], UNKNOWN_LENGTH, None)
        return Response(
            200,
            TEXT,
            producer,
            trailers=Headers([(b"X-Checksum", b"abc123"), (b"X-Count", b"1")]),
        )

    def big(self, request: Request) -> Response:
        return Response(200, [(b"Content-Type", b"application/octet-stream")], BIG)

    def file(self, request: Request) -> Response:
        return Response(200, TEXT, io.BytesIO(b"file line\n" * 3))

    def slow(self, request: Request) -> Deferred[Response]:
        return self.later(
            "slow", 2.0, lambda d: d.callback(Response(200, TEXT, b"slow\n"))
        )

    def slowClose(self, request: Request) -> Deferred[Response]:
        fields = [*TEXT, (b"Connection", b"close")]
        return self.later(
            "slow-close",
            2.0,
            lambda d: d.callback(Response(200, fields, b"slow, then close\n")),
        )

    def never(self, request: Request) -> Deferred[Response]:
        return Deferred(lambda _: self.note("never: cancelled"))

    def boom(self, request: Request) -> Response:
        raise RuntimeError("boom")

    def boomLater(self, request: Request) -> Deferred[Response]:
        return self.later(
            "boom-later", 1.0, lambda d: d.errback(RuntimeError("boom later"))
        )

    def close(self, request: Request) -> Response:
        return Response(200, [*TEXT, (b"Connection", b"close")], b"bye\n")

    def closeMixed(self, request: Request) -> Response:
        return Response(200, [*TEXT, (b"Connection", b"Keep-Alive, CLOSE")], b"mixed\n")

    def keep(self, request: Request) -> Response:
        return Response(
            200,
            [*TEXT, (b"Connection", b"keep-alive"), (b"Keep-Alive", b"timeout=1")],
            b"keep\n",
        )

    def hop(self, request: Request) -> Response:
        return Response(
            200,
            [
                *TEXT,
                (b"Connection", b"X-Private"),
                (b"X-Private", b"secret"),
                (b"Proxy-Connection", b"keep-alive"),
                (b"Upgrade", b"websocket"),
                (b"X-Kept", b"yes"),
            ],
            b"hop\n",
        )

    def te(self, request: Request) -> Response:
        return Response(200, [*TEXT, (b"Transfer-Encoding", b"chunked")], b"te\n")

    def clRight(self, request: Request) -> Response:
        return Response(200, [*TEXT, (b"Content-Length", b"4")], b"abc\n")

    def clWrong(self, request: Request) -> Response:
        return Response(200, [*TEXT, (b"Content-Length", b"99")], b"abc\n")

    def badHeader(self, request: Request) -> Response:
        return Response(200, [(b"Bad Name", b"x")], b"bad\n")

    def coro(self, request: Request) -> Any:
        async def answer() -> Response:
            await deferLater(self.clock, 1.0, lambda: None)
            return Response(200, TEXT, b"coroutine\n")

        return answer()

    def badReturn(self, request: Request) -> Any:
        return "not a response"

    def reason(self, request: Request) -> Response:
        return Response(299, TEXT, b"custom\n", reason=b"Custom Reason")

    def noted(self, request: Request) -> Response:
        return Response(502, TEXT, b"noted\n", note="upstream-refused")


_ROUTES: dict[bytes, Callable[[App, Request], Any]] = {
    b"/hello": App.hello,
    b"/echo": App.echo,
    b"/count": App.count,
    b"/pause": App.pause,
    b"/stop": App.stop,
    b"/stream": App.stream,
    b"/unknown": App.unknown,
    b"/unknown-now": App.unknownNow,
    b"/known-now": App.knownNow,
    b"/short": App.short,
    b"/long": App.long,
    b"/fail-body": App.failBody,
    b"/trailers": App.trailers,
    b"/big": App.big,
    b"/file": App.file,
    b"/slow": App.slow,
    b"/slow-close": App.slowClose,
    b"/never": App.never,
    b"/boom": App.boom,
    b"/boom-later": App.boomLater,
    b"/close": App.close,
    b"/close-mixed": App.closeMixed,
    b"/keep": App.keep,
    b"/hop": App.hop,
    b"/te": App.te,
    b"/cl-right": App.clRight,
    b"/cl-wrong": App.clWrong,
    b"/bad-header": App.badHeader,
    b"/coro": App.coro,
    b"/bad-return": App.badReturn,
    b"/reason": App.reason,
    b"/note": App.noted,
}

__all__ = ["BIG", "HELLO", "App", "TimedProducer"]
