"""
``ASGIHandler``: an ASGI 3 application served as a connserver handler.

Each request is one ``http`` (or ``websocket``) scope and one asyncio task
running ``app(scope, receive, send)`` on the loop under Twisted's asyncio
reactor; an ``http`` scope's task starts eagerly (``asgitask``), so that a
response sent before the app first waits is a synchronous answer.  connserver keeps what it owns for every handler: parsing, limits,
persistence and framing.  The request body reaches ``receive`` as
``http.request`` events streamed from ``Request.deliverBody`` (reading
pauses while 64 KiB wait for the app); the response is one ``Response``
whose body is the app's single ``http.response.body``, or an
``IBodyProducer`` that the later ones are written to (``send`` waits while
the client is slow).  ``http.disconnect`` comes when the client goes (or,
as uvicorn has it, once the response is complete); the app's task is
cancelled ``disconnectGrace`` seconds after the client went, and at the
drain's end.  A client that closes its side (a FIN: curl at its timeout, a
browser's abort, a proxy's) has gone too, as uvicorn and Daphne take it:
the app sees ``http.disconnect`` once it has read the body, and is
cancelled after the grace, but a response it still sends is written (the
client may have closed only its sending side).

An app that breaks the protocol (no ``http.response.start``, two of them,
a body after the end) gets a ``RuntimeError`` from ``send`` and the client
a 500, or an abort once the head is out; each is one log line.
"""

from __future__ import annotations

import asyncio
from typing import Any, NoReturn
from urllib.parse import unquote

from twisted.internet.address import HostnameAddress, IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IConsumer, IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from connserver._connection.message import Request, Response, ResponseDeferred
from connserver._handlers.asgicycle import (
    ASGIApp,
    ASGIAppError,
    ClientDisconnected,
    Cycle,
    Message,
    Receive,
    Scope,
    Send,
    asFailure,
)
from connserver._http.errors import BodyInterrupted

__all__ = [
    "ASGIApp",
    "ASGIAppError",
    "ASGIHandler",
    "ClientDisconnected",
    "Message",
    "Receive",
    "Scope",
    "Send",
]

_log = Logger(namespace="connserver")

#: Request body bytes held for the app before reading pauses (uvicorn's mark).
BODY_HIGH_WATER = 65536

_HTTP_ASGI = {"version": "3.0", "spec_version": "2.4"}
_DISCONNECT: Message = {"type": "http.disconnect"}

# The states of a response, as the app's send messages move it.
_START = 0  # nothing sent
_HEAD = 1  # http.response.start received, no body yet
_STREAMING = 2  # the head is on its way, more body to come
_DONE = 3  # the last body message received

# The states of the request body, as receive hands it on.
_UNREAD = 0
_READING = 1
_ENDED = 2  # all of it arrived; the last message not taken yet
_DELIVERED = 3


def _address(address: IAddress | None) -> tuple[str, int] | None:
    """An ``IAddress`` as ASGI's (host, port), or None."""
    if isinstance(address, IPv4Address | IPv6Address):
        return (address.host, address.port)
    if isinstance(address, HostnameAddress):
        return (address.hostname.decode("ascii", "replace"), address.port)
    return None


def _splitPath(raw: bytes) -> bytes:
    """The path of an origin-form or absolute-form target (RFC 9112 §3.2)."""
    if raw[:1] == b"/" or raw == b"*":
        return raw
    _scheme, sep, rest = raw.partition(b"://")
    if not sep:
        return raw
    slash = rest.find(b"/")
    return b"/" if slash < 0 else rest[slash:]


def _decodePath(raw: bytes) -> str:
    """The percent-decoded path (UTF-8, as uvicorn decodes it)."""
    text = raw.decode("latin-1")
    return unquote(text) if "%" in text else text


class ASGIHandler:
    """
    Serve the ASGI 3 application ``app`` (``http`` and ``websocket``
    scopes) as a connserver handler.

    It must run on Twisted's asyncio reactor (``twisted.internet.
    asyncioreactor``), whose loop runs the app: ``twistd connserver
    --asgi`` installs it; an application embedding connserver installs it
    before anything imports ``twisted.internet.reactor``.  A request served
    on another reactor is answered 500 with one log line.

    :param app: the ASGI 3 callable.
    :param rootPath: ASGI's ``root_path`` (``--root-path``), the prefix the
        application is mounted at behind a proxy, prepended to ``path``.
    :param disconnectGrace: seconds an app may go on after its client went
        (it sees ``http.disconnect``) before its task is cancelled.
    """

    def __init__(
        self, app: ASGIApp, *, rootPath: str = "", disconnectGrace: float = 5.0
    ) -> None:
        self.app = app
        self.rootPath = rootPath.rstrip("/")
        self.disconnectGrace = disconnectGrace
        #: The lifespan's ``state`` (copied into each scope when not empty).
        self.state: dict[str, Any] = {}
        #: The cycles whose task still runs (cancelled at the drain's end).
        self.cycles: set[Any] = set()
        self._warnedReactor = False
        #: The websocket scope's cycle (None without wsproto and websockets:
        #: an upgrade request is then served as an ordinary http one).
        self.webSocketCycle: Any = None
        try:
            from connserver._handlers.asgiwebsocket import WebSocketCycle
        except ImportError:
            _log.warn(
                "ASGI: no wsproto or no websockets (pip install 'connserver[asgi]'): "
                "no WebSockets"
            )
        else:
            self.webSocketCycle = WebSocketCycle

    def __call__(self, request: Request) -> Response | Deferred[Response]:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return self._noLoop()
        if (
            request.upgrades
            and b"websocket" in request.upgrades
            and self.webSocketCycle is not None
        ):
            return self.webSocketCycle(self, request, loop).run()  # type: ignore[no-any-return]
        return HTTPCycle(self, request, loop).run()

    def _noLoop(self) -> Response:
        if not self._warnedReactor:
            self._warnedReactor = True
            _log.error(
                "ASGI app not run: connserver is not on Twisted's asyncio reactor "
                "(install twisted.internet.asyncioreactor before the reactor is "
                "imported; twistd connserver --asgi does)"
            )
        return Response(500, [(b"Content-Type", b"text/plain")], b"500 no asyncio\n")

    def scope(self, request: Request, kind: str) -> Scope:
        """The ``http`` or ``websocket`` scope of ``request``."""
        raw = _splitPath(request.path)
        root = self.rootPath
        path = _decodePath(raw)
        if root:
            path = root + path
            raw = root.encode("utf-8") + raw
        version = request.version
        scheme = request.scheme
        if kind == "websocket":
            scheme = "wss" if scheme == "https" else "ws"
        scope: Scope = {
            "type": kind,
            "asgi": _HTTP_ASGI,
            "http_version": "1.1"
            if version == (1, 1)
            else f"{version[0]}.{version[1]}",
            "method": request.method.decode("latin-1"),
            "scheme": scheme,
            "path": path,
            "raw_path": raw,
            "query_string": request.query,
            "root_path": root,
            "headers": request.headers.loweredItems(),
            "client": _address(request.clientAddress),
            "server": _address(request.host),
        }
        if self.state:
            scope["state"] = self.state.copy()
        return scope

    def cancelAll(self) -> list[asyncio.Task[None]]:
        """Cancel every app task still running; returns them (to wait on)."""
        tasks = []
        for cycle in list(self.cycles):
            task = cycle.task
            if task is not None and not cycle.ended:
                task.cancel()
                tasks.append(task)
        return tasks


@implementer(IBodyProducer)
class _ResponseBody:
    """The streamed body of an ASGI response: what the app's sends write."""

    length = UNKNOWN_LENGTH

    def __init__(self, cycle: HTTPCycle, first: bytes) -> None:
        self.cycle = cycle
        self.pending: list[bytes] = [first] if first else []
        self.consumer: IConsumer | None = None
        self.done: Deferred[None] = Deferred()
        self.paused = False
        self.discard = False

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self.consumer = consumer
        pending, self.pending = self.pending, []
        for data in pending:
            consumer.write(data)
        # An app that went on streaming before its response was taken
        # (started eagerly, it can) waits for this.
        self.cycle.wake()
        return self.done

    def write(self, data: bytes) -> None:
        if self.consumer is not None:
            self.consumer.write(data)
        elif not self.discard:
            self.pending.append(data)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.cycle.wake()

    def stopProducing(self) -> None:
        if self.consumer is None:
            # Never started: a HEAD, 204 or 304 response has no body; the
            # rest the app sends is dropped.
            self.discard = True
            self.pending = []
            self.cycle.wake()
            return
        self.consumer = None
        self.cycle.clientGone()


class HTTPCycle(Cycle):
    """One ``http`` scope: the app's task, its receive and send."""

    eager = True

    state = _START
    body = _UNREAD
    disconnected = False
    #: The client closed its side (FIN): the app is told it went.
    hungUp = False
    #: A protocol error of the app's was reported already (log it once).
    failed = False
    paused = False
    status = 0
    fields: Any = None
    streamed: _ResponseBody | None = None
    producer: IPushProducer | None = None
    #: The outcome is given (a response or a failure), or connserver let
    #: go of it (the client went, a timeout): nothing more to answer.
    answered = False
    #: The response, when the app sent it before it first waited.
    response: Response | None = None
    #: How a later outcome reaches the exchange (made once the app waits).
    deferred: ResponseDeferred | None = None

    def __init__(
        self, handler: ASGIHandler, request: Request, loop: asyncio.AbstractEventLoop
    ) -> None:
        super().__init__(handler, request, loop)
        self.chunks: list[bytes] = []
        self.buffered = 0

    def run(self) -> Response | Deferred[Response]:
        """
        Start the app: its response, if it sent it before it first waited
        (a synchronous answer, the cheapest), or a Deferred of it.
        """
        self.startApp(self.handler.scope(self.request, "http"))
        if not self.ended:
            # (Still streaming its body, or not answered yet.)
            self.request.notifyInputEnd(self.clientClosedInput)
        if self.response is not None:
            return self.response
        return self._later()

    def _later(self) -> ResponseDeferred:
        """What a later outcome reaches the exchange by (made once)."""
        deferred = self.deferred
        if deferred is None:
            # Taken by the exchange directly, without a callback chain.
            deferred = self.deferred = ResponseDeferred(self._cancelled)
        return deferred

    def _answer(self, response: Response) -> None:
        self.answered = True
        if self.deferred is None:
            self.response = response  # run() returns it
        else:
            self.deferred.callback(response)

    def _fail(self, failure: Failure) -> None:
        self.answered = True
        self._later().errback(failure)  # (run() returns it, if still running)

    # -- receive -------------------------------------------------------------

    async def receive(self) -> Message:
        """The next ``http.request`` part, or ``http.disconnect``."""
        while True:
            if self.disconnected or self.state is _DONE:
                return _DISCONNECT
            body = self.body
            if self.hungUp and body is _DELIVERED:
                return _DISCONNECT
            if body is _UNREAD:
                if not self.request.hasBody:
                    self.body = _DELIVERED
                    return {"type": "http.request", "body": b"", "more_body": False}
                self.body = _READING
                self.request.deliverBody(self)  # type: ignore[arg-type]
                continue
            if self.chunks or body is _ENDED:
                return self._bodyMessage()
            if self.paused and self.producer is not None:
                self.paused = False
                self.producer.resumeProducing()
            await self._wait()

    def _bodyMessage(self) -> Message:
        chunks = self.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks = []
        self.buffered = 0
        more = self.body is _READING
        if not more:
            self.body = _DELIVERED
        elif self.paused and self.producer is not None:
            self.paused = False
            self.producer.resumeProducing()
        return {"type": "http.request", "body": data, "more_body": more}

    # The request body's consumer (an IProtocol, as Request.deliverBody has it).

    def makeConnection(self, producer: IPushProducer) -> None:
        """The body starts: ``producer`` pauses and resumes reading."""
        self.producer = producer

    def dataReceived(self, data: bytes) -> None:
        """A piece of the body: held for receive; reading pauses past the mark."""
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered >= BODY_HIGH_WATER and not self.paused:
            self.paused = True
            assert self.producer is not None
            self.producer.pauseProducing()
        self.wake()

    def connectionLost(self, reason: Failure) -> None:
        """The body ended, whole (``ResponseDone``) or not (the client went)."""
        if reason.check(ResponseDone):
            self.body = _ENDED
            self.wake()
            return
        self.body = _DELIVERED
        if self.state is _DONE:
            # The response was complete before the body: nobody waits for it.
            self.wake()
        else:
            self.clientGone()

    # -- send ----------------------------------------------------------------

    async def send(self, message: Message) -> None:
        """The app's ``http.response.start`` and ``http.response.body``."""
        kind = message["type"]
        state = self.state
        if kind == "http.response.body":
            if state is _STREAMING:
                await self._more(message)
            elif state is _HEAD:
                self._first(message)
            elif self.disconnected:
                raise ClientDisconnected("the client went away")
            elif state is _START:
                self._violation("http.response.body before http.response.start")
            else:
                self._violation("http.response.body after the response ended")
        elif kind == "http.response.start":
            if self.disconnected:
                raise ClientDisconnected("the client went away")
            if state is not _START:
                self._violation("a second http.response.start")
            self._start(message)
        else:
            self._violation(f"unexpected message {kind!r}")

    def _start(self, message: Message) -> None:
        status = message.get("status")
        if type(status) is not int or not 200 <= status <= 599:
            self._violation(f"http.response.start with status {status!r}")
        self.status = status
        self.fields = list(message.get("headers", ()))
        self.state = _HEAD

    def _first(self, message: Message) -> None:
        if self.answered:
            raise ClientDisconnected("the client went away")
        body = message.get("body", b"")
        if message.get("more_body", False):
            self.state = _STREAMING
            streamed = self.streamed = _ResponseBody(self, bytes(body))
            response = Response(self.status, self.fields, streamed)
        else:
            self.state = _DONE
            response = Response(self.status, self.fields, bytes(body))
            self.wake()
        self._answer(response)

    async def _more(self, message: Message) -> None:
        streamed = self.streamed
        assert streamed is not None
        if self.disconnected:
            raise ClientDisconnected("the client went away")
        while streamed.consumer is None and not streamed.discard:
            # The response is not taken yet (the app streams on in the step
            # it began it in): wait, so that its body is held back by the
            # client's pace from the first part on, not gathered whole.
            await self._wait()
            if self.disconnected:
                raise ClientDisconnected("the client went away")
        body = message.get("body", b"")
        if body:
            streamed.write(bytes(body))
        if not message.get("more_body", False):
            self.state = _DONE
            self.streamed = None
            streamed.done.callback(None)
            self.wake()
            return
        while streamed.paused and not self.disconnected:
            await self._wait()
        if self.disconnected:
            raise ClientDisconnected("the client went away")

    def _violation(self, what: str) -> NoReturn:
        """
        The app broke the protocol: a 500 before the head, an abort after it,
        a log line once the response was complete; the app gets
        ``ASGIAppError``.
        """
        if not self.failed and not self.disconnected:
            self.failed = True
            streamed = self.streamed
            if self.state is _STREAMING and streamed is not None:
                self.streamed = None
                self.state = _DONE
                text = f"ASGI app for {self.describe()}: {what}"
                if streamed.discard:
                    _log.warn("{text}", text=text)
                else:
                    # connserver logs it (one warning) and aborts the response.
                    streamed.done.errback(BodyInterrupted(text))
            elif not self.answered:
                self.state = _DONE
                # connserver logs it (one line) and answers 500.
                self._fail(Failure(ASGIAppError(what)))
            else:
                _log.warn(
                    "ASGI app error for {request}: {what}",
                    request=self.describe(),
                    what=what,
                )
        raise ASGIAppError(what)

    # -- the end -------------------------------------------------------------

    def _cancelled(self, deferred: Deferred[Response]) -> None:
        """connserver let go of the response (the client went, a timeout)."""
        self.answered = True
        self.clientGone()

    def clientClosedInput(self) -> None:
        """The client half-closed: it went, though it may still read."""
        if not self.hungUp and not self.disconnected:
            self.hungUp = True
            self.wake()
            self.cancelLater()

    def clientGone(self) -> None:
        """The client went: the app sees http.disconnect, then is cancelled."""
        if self.disconnected:
            return
        self.disconnected = True
        self.wake()
        self.cancelLater()

    def appDone(self, error: BaseException | None) -> None:
        """The app's task ended: the response must be complete by now."""
        if error is not None and self._expected(error):
            error = None
        state = self.state
        if state is _STREAMING:
            self._unfinished(error)
            return
        if state is _DONE or self.answered:
            if error is not None:
                _log.failure(
                    "ASGI app for {request} raised after its response was "
                    "complete or its client went away",
                    asFailure(error),
                    request=self.describe(),
                )
            return
        self.state = _DONE
        if error is None and self.hungUp:
            error = ClientDisconnected(
                "the client closed its side before the app answered"
            )
        elif error is None:
            error = ASGIAppError(
                "returned without sending http.response.start"
                if state is _START
                else "returned without sending its response body"
            )
        # connserver logs it (one line, with the traceback) and answers 500.
        self._fail(asFailure(error))

    def _unfinished(self, error: BaseException | None) -> None:
        """The app ended in the middle of a streamed body: abort it."""
        streamed, self.streamed = self.streamed, None
        self.state = _DONE
        assert streamed is not None
        if streamed.discard:
            return
        if error is None:
            error = BodyInterrupted(
                f"ASGI app for {self.describe()} returned without completing "
                "its response"
            )
        streamed.done.errback(asFailure(error))

    def _expected(self, error: BaseException) -> bool:
        """An error the server caused (the client went) or reported already."""
        if isinstance(error, ASGIAppError) and self.failed:
            return True
        return self.disconnected and (
            isinstance(error, OSError) or type(error).__name__ == "ClientDisconnect"
        )
