"""
The ``websocket`` scope of ``ASGIHandler``: the handshake on connserver's
takeover through wsproto (the library uvicorn and hypercorn use), the
frames through websockets' sans-I/O layer (``websockets.protocol.Protocol``,
uvicorn's other choice); connserver has no frame codec of its own.

The request is checked as a WebSocket opening handshake by wsproto (a bad
one is 400), and the app receives ``websocket.connect`` while connserver
holds the connection.  ``websocket.accept`` answers ``101 Switching
Protocols`` (connserver writes it, with wsproto's ``Sec-WebSocket-Accept``,
the subprotocol, permessage-deflate when offered and the app's headers)
and hands the connection to a protocol that feeds websockets' frame layer
(with permessage-deflate as wsproto negotiated it); ``websocket.close``
before accepting is ``403``, as uvicorn answers, and
``websocket.http.response.*`` (the denial response extension) is the
app's own response.  Frames reach ``receive`` as ``websocket.receive``
(reading pauses while 16 messages wait for the app); ``send`` waits while
the client is slow.  A drain sends close 1001.

Why two libraries: per 64-byte echo, wsproto's frame parser and
serializer cost about twice what websockets' do (which masks in C), and
the frames were the largest share of an echo's CPU time once the writes
went straight to the socket; wsproto's handshake, which runs once per
connection, stays (its 400s and 101 fields are what the tests pin down).
Each frame is written straight to the socket while Twisted's buffer is
empty (``directWriter``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, NoReturn

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from websockets.exceptions import InvalidState, ProtocolError
from websockets.extensions.permessage_deflate import PerMessageDeflate as Deflate
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol as FrameLayer
from websockets.protocol import Side
from websockets.protocol import State as WSState
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection
from wsproto.events import Request as WSRequest
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import LocalProtocolError, RemoteProtocolError
from zope.interface import implementer

from connserver._connection.message import Request, Response
from connserver._connection.takeover import TakeoverTransport
from connserver._handlers.asgicycle import (
    ASGIAppError,
    ClientDisconnected,
    Cycle,
    Message,
    asFailure,
)
from connserver._twisted.writethrough import TransportWriter

__all__ = ["MAX_MESSAGE_BYTES", "WebSocketCycle"]

_log = Logger(namespace="connserver")

#: The largest message a client may send (uvicorn's ``ws_max_size``): 1009.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: Messages waiting for the app before reading pauses, and resumes.
QUEUE_HIGH = 16
QUEUE_LOW = 4

_TEXT = {"Content-Type": "text/plain; charset=utf-8"}
# Compared by identity per frame (websockets' frames carry these members).
_TEXT_OP = Opcode.TEXT
_BINARY_OP = Opcode.BINARY
_CONT_OP = Opcode.CONT
_FORBIDDEN = Response(403, _TEXT, b"403 Forbidden: the application refused\n")

# The states of the handshake.
_CONNECTING = 0
_DENYING = 1  # websocket.http.response.start received
_OPEN = 2
_CLOSED = 3


_OTHER_VERSION = b"426 Upgrade Required: this server speaks WebSocket version 13 only\n"


def _refusedHandshake(error: Exception) -> Response:
    """
    The answer to a handshake wsproto refused: a 400 that says why, or, for
    a ``Sec-WebSocket-Version`` other than 13, the 426 with the versions
    this server speaks that RFC 6455 §4.4 requires (wsproto's hint).
    """
    hint = getattr(error, "event_hint", None)
    if isinstance(hint, RejectConnection) and hint.status_code == 426:
        fields = [(b"Content-Type", b"text/plain; charset=utf-8")]
        fields.extend((bytes(n), bytes(v)) for n, v in hint.headers)
        return Response(426, fields, _OTHER_VERSION)
    text = f"400 Bad Request: not a WebSocket handshake ({error})\n"
    return Response(400, _TEXT, text.encode("utf-8", "replace"))


class WebSocketCycle(Cycle):
    """One ``websocket`` scope: the handshake, then the frames."""

    state = _CONNECTING
    protocol: _WebSocketProtocol | None = None
    failed = False

    def __init__(
        self, handler: Any, request: Request, loop: asyncio.AbstractEventLoop
    ) -> None:
        super().__init__(handler, request, loop)
        self.deferred: Deferred[Response] = Deferred(self._cancelled)
        self.queue: deque[Message] = deque()
        self.closeMessage: Message | None = None
        self.connection = WSConnection(ConnectionType.SERVER)
        self.denial: tuple[int, list[Any], list[bytes]] | None = None

    def run(self) -> Response | Deferred[Response]:
        """Check the handshake, start the app; fires with the 101 or refusal."""
        request = self.request
        try:
            self.connection.initiate_upgrade_connection(
                list(request.headers), request.target
            )
            opening = next(iter(self.connection.events()))
            if not isinstance(opening, WSRequest):
                raise RemoteProtocolError("not a WebSocket request", None)
        except (RemoteProtocolError, LocalProtocolError, StopIteration) as error:
            return _refusedHandshake(error)
        scope = self.handler.scope(request, "websocket")
        del scope["method"]
        scope["subprotocols"] = list(opening.subprotocols)
        scope["extensions"] = {"websocket.http.response": {}}
        self.queue.append({"type": "websocket.connect"})
        self.startApp(scope)
        return self.deferred

    # -- receive -------------------------------------------------------------

    async def receive(self) -> Message:
        """The next event: connect, receive, disconnect."""
        queue = self.queue
        while not queue:
            if self.closeMessage is not None:
                return self.closeMessage
            # Cycle._wait, inline: one coroutine less per message.
            waiter = self.waiter = self.loop.create_future()
            try:
                await waiter
            finally:
                self.waiter = None
        message = queue.popleft()
        protocol = self.protocol
        if protocol is not None and protocol.readPaused and len(queue) <= QUEUE_LOW:
            protocol.resumeReading()
        return message

    def deliver(self, message: Message) -> None:
        """An event for the app (a disconnect is the last)."""
        if self.closeMessage is not None:
            return
        if message["type"] == "websocket.disconnect":
            self.closeMessage = message
        self.queue.append(message)
        self.wake()

    # -- send ----------------------------------------------------------------

    async def send(self, message: Message) -> None:
        """The app's accept, send, close (or denial response)."""
        if self.state is _OPEN and message["type"] == "websocket.send":
            # The common case here rather than in a coroutine of its own:
            # one coroutine less per message.
            protocol = self.protocol
            assert protocol is not None
            frames = protocol.frames
            data = message.get("bytes")
            try:
                if data is None:
                    text = message.get("text")
                    if not isinstance(text, str):
                        self._violation("websocket.send without bytes or text")
                    frames.send_text(text.encode("utf-8"))
                elif isinstance(data, bytes | bytearray | memoryview):
                    frames.send_binary(data)
                else:
                    self._violation("websocket.send whose bytes are not bytes")
            except InvalidState:
                raise ClientDisconnected("the WebSocket is closed") from None
            protocol.flush()
            if protocol.writePaused:
                await self._writable(protocol)
            return
        self._control(message)

    def _control(self, message: Message) -> None:
        """Every message to ``send`` but a frame once open."""
        kind = message["type"]
        state = self.state
        if state is _OPEN:
            if kind == "websocket.close":
                self._close(message.get("code", 1000), message.get("reason") or "")
            else:
                self._violation(f"unexpected message {kind!r} after accept")
        elif state is _CONNECTING:
            if kind == "websocket.accept":
                self._accept(message)
            elif kind == "websocket.close":
                self._refuse(_FORBIDDEN)
            elif kind == "websocket.http.response.start":
                self.state = _DENYING
                status = message.get("status")
                if type(status) is not int or not 200 <= status <= 599:
                    self._violation(f"denial response with status {status!r}")
                self.denial = (status, list(message.get("headers", ())), [])
            else:
                self._violation(f"{kind!r} before websocket.accept")
        elif state is _DENYING and kind == "websocket.http.response.body":
            assert self.denial is not None
            status, fields, parts = self.denial
            parts.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                self._refuse(Response(status, fields, b"".join(parts)))
        elif self.closeMessage is not None:
            raise ClientDisconnected("the WebSocket is closed")
        else:
            self._violation(f"unexpected message {kind!r}")

    def _accept(self, message: Message) -> None:
        if self.deferred.called:
            raise ClientDisconnected("the client went away")
        extra = [(bytes(n), bytes(v)) for n, v in message.get("headers", ())]
        # Negotiated (enabled) only when the client offered it.
        deflate = PerMessageDeflate()
        head = self.connection.send(
            AcceptConnection(
                subprotocol=message.get("subprotocol"),
                extensions=[deflate],
                extra_headers=extra,
            )
        )
        # wsproto's 101, as fields for connserver's own 101 head.
        fields = []
        for line in head.split(b"\r\n")[1:]:
            name, sep, value = line.partition(b":")
            if sep and name.lower() not in (b"connection", b"upgrade"):
                fields.append((name, value.strip()))
        self.state = _OPEN
        self.protocol = _WebSocketProtocol(self, deflate)
        self.deferred.callback(
            Response.switchProtocols(b"websocket", self.protocol, fields)
        )

    def _refuse(self, response: Response) -> None:
        self.state = _CLOSED
        self.deliver({"type": "websocket.disconnect", "code": 1006, "reason": ""})
        if not self.deferred.called:
            self.deferred.callback(response)

    async def _writable(self, protocol: _WebSocketProtocol) -> None:
        """The transport pushed back: wait until it drains (or the end)."""
        while protocol.writePaused and self.closeMessage is None:
            await self._wait()

    def _close(self, code: int, reason: str) -> None:
        """Send a close frame (the app's or ours) and end the connection."""
        self.state = _CLOSED
        protocol = self.protocol
        self.deliver({"type": "websocket.disconnect", "code": code, "reason": reason})
        if protocol is not None:
            protocol.sendClose(code, reason)

    def _violation(self, what: str) -> NoReturn:
        if not self.failed:
            self.failed = True
            if not self.deferred.called:
                self.state = _CLOSED
                # connserver logs it (one line) and answers 500.
                self.deferred.errback(Failure(ASGIAppError(what)))
            else:
                _log.warn(
                    "ASGI WebSocket app error for {request}: {what}",
                    request=self.describe(),
                    what=what,
                )
                if self.state is _OPEN:
                    self._close(1011, "")
        raise ASGIAppError(what)

    # -- the end -------------------------------------------------------------

    def _cancelled(self, deferred: Deferred[Response]) -> None:
        """connserver let go before the handshake was answered."""
        self.state = _CLOSED
        self.clientGone(1006)

    def clientGone(self, code: int, reason: str = "") -> None:
        """The connection ended: the app sees websocket.disconnect."""
        self.deliver({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.wake()
        self.cancelLater()

    def appDone(self, error: BaseException | None) -> None:
        """The app ended: refuse, or close the WebSocket."""
        if error is not None and (
            isinstance(error, ClientDisconnected)
            or (self.failed and isinstance(error, ASGIAppError))
        ):
            error = None
        state = self.state
        if state is _CONNECTING or state is _DENYING:
            self.state = _CLOSED
            if not self.deferred.called:
                self.deferred.errback(
                    asFailure(
                        error
                        or ASGIAppError(
                            "returned without accepting or refusing the WebSocket"
                        )
                    )
                )
                return
        if error is not None:
            _log.failure(
                "ASGI WebSocket app for {request} raised",
                asFailure(error),
                request=self.describe(),
            )
        if self.state is _OPEN:
            self._close(1011 if error is not None else 1000, "")


def directWriter(transport: Any) -> Callable[[bytes], None]:
    """
    How the ASGI WebSocket writes on ``transport`` (the takeover's view of
    the connection): on plain TCP straight to the socket while Twisted's
    buffer is empty (``TransportWriter``), so that an echo costs one
    ``send`` and neither a reactor turn nor a writer registration; the
    bytes still count for the connection's record.  Anywhere else (TLS,
    a transport this does not know), ``transport.write``.

    Only here, not for every upgraded connection: this protocol writes one
    frame per call, whereas autobahn writes a frame in several small writes
    that Twisted's buffer joins into one send per turn.  (It reads the
    takeover transport's two slots, ``_takeover`` and ``_transport``;
    ``tests/test_asgi_websocket.py`` checks they are still there.)
    """
    if not isinstance(transport, TakeoverTransport):
        return transport.write  # type: ignore[no-any-return]
    takeover = vars(transport).get("_takeover")
    real = vars(transport).get("_transport")
    if takeover is None or real is None:
        return transport.write
    writer = TransportWriter(real)
    if not writer.plainTCP:
        return transport.write
    send = writer.write

    def write(data: bytes) -> None:
        takeover.bytesSent += len(data)
        send(data)

    return write


def _frameLayer(deflate: PerMessageDeflate) -> FrameLayer:
    """
    websockets' frame layer for a connection whose handshake is done: the
    server's side, open, messages bounded by ``MAX_MESSAGE_BYTES`` (1009
    beyond), with permessage-deflate (RFC 7692) as wsproto negotiated it in
    the 101, if it did (only when the client offered it).
    """
    layer = FrameLayer(Side.SERVER, state=WSState.OPEN, max_size=MAX_MESSAGE_BYTES)
    if deflate.enabled():
        layer.extensions = [
            Deflate(
                remote_no_context_takeover=deflate.client_no_context_takeover,
                local_no_context_takeover=deflate.server_no_context_takeover,
                remote_max_window_bits=deflate.client_max_window_bits,
                local_max_window_bits=deflate.server_max_window_bits,
            )
        ]
    return layer


def _closeReason(reason: str) -> str:
    """
    ``reason`` cut to what a close frame carries (RFC 6455 §5.5: control
    payloads up to 125 bytes, 2 of them the code), on a character boundary.
    """
    encoded = reason.encode("utf-8")
    if len(encoded) <= 123:
        return reason
    return encoded[:123].decode("utf-8", "ignore")


@implementer(IPushProducer)
class _WebSocketProtocol(Protocol):
    """
    The connection after the 101: bytes to websockets' frame layer,
    messages to the app, the app's frames to the socket.
    """

    readPaused = False
    writePaused = False
    #: True once the closing is under way (our close frame written, or the
    #: client's answered): what still arrives is not read.
    closeSent = False
    #: Whether the fragmented message under way is text.
    text = False

    def __init__(self, cycle: WebSocketCycle, deflate: PerMessageDeflate) -> None:
        self.cycle = cycle
        self.frames = _frameLayer(deflate)
        self.parts: list[bytes] = []
        self._write: Callable[[bytes], None] = self._noWrite

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.registerProducer(self, True)
        self._write = directWriter(transport)

    @staticmethod
    def _noWrite(data: bytes) -> None:
        pass

    def flush(self) -> None:
        """
        Write what the frame layer has for the client, one write per frame;
        its end of stream (``SEND_EOF``, after a closing handshake or a
        failure) closes the connection: a server closes the TCP connection
        first (RFC 6455 §7.1.1).
        """
        for data in self.frames.data_to_send():
            if not data:
                self.loseConnection()
            elif self.connected:
                self._write(data)

    def sendClose(self, code: int, reason: str) -> None:
        """Our close frame, once (RFC 6455 §5.5.1), then the end."""
        frames = self.frames
        if not self.closeSent and frames.state is WSState.OPEN:
            self.closeSent = True
            try:
                frames.send_close(code, _closeReason(reason))
            except ProtocolError:
                # A code only an endpoint's own report may carry (1005,
                # 1006, 1015: RFC 6455 §7.4.1) or none at all: 1000.
                frames.send_close(1000, _closeReason(reason))
            self.flush()
        self.closeSent = True
        self.loseConnection()

    def loseConnection(self) -> None:
        if self.transport is not None and self.connected:
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self.closeSent:
            return
        frames = self.frames
        frames.receive_data(data)
        # Pings are answered and closes echoed by the frame layer itself
        # (RFC 6455 §5.5.2, §5.5.1); data frames make messages.
        # (Open, its events are frames; requests and responses are a
        # handshake's.)
        events: Any = frames.events_received()
        for frame in events:
            opcode = frame.opcode
            if opcode is _BINARY_OP or opcode is _TEXT_OP or opcode is _CONT_OP:
                if not self._message(frame):
                    break
        if frames.state is not WSState.OPEN:
            self._closing()
            return
        self.flush()
        cycle = self.cycle
        if len(cycle.queue) >= QUEUE_HIGH and not self.readPaused:
            self.readPaused = True
            self.transport.pauseProducing()  # type: ignore[union-attr]

    def _closing(self) -> None:
        """
        The client's close (answered by the frame layer), or a frame that
        failed the connection (RFC 6455 §7.1.7: 1002, 1007, 1009): the
        close goes out, the connection ends, the app sees the code.
        """
        frames = self.frames
        self.cycle.state = _CLOSED
        self.closeSent = True
        self.flush()
        self.loseConnection()
        close = (
            frames.close_rcvd if frames.close_rcvd is not None else frames.close_sent
        )
        code, reason = (int(close.code), close.reason) if close else (1006, "")
        self.cycle.deliver(
            {"type": "websocket.disconnect", "code": code, "reason": reason}
        )

    def _message(self, frame: Frame) -> bool:
        """A frame of a message; False when its text is not UTF-8."""
        data = frame.data
        if type(data) is not bytes:
            data = bytes(data)
        if not frame.fin:
            if frame.opcode is not _CONT_OP:
                self.text = frame.opcode is _TEXT_OP
            self.parts.append(data)
            return True
        if self.parts:
            self.parts.append(data)
            data = b"".join(self.parts)
            self.parts = []
            text = self.text
        else:
            text = frame.opcode is _TEXT_OP
        if not text:
            self.cycle.deliver({"type": "websocket.receive", "bytes": data})
            return True
        try:
            decoded = data.decode("utf-8")
        except UnicodeDecodeError as error:
            # RFC 6455 §8.1: text that is not UTF-8 fails the connection.
            self.frames.fail(1007, f"invalid UTF-8 at {error.start}")
            return False
        self.cycle.deliver({"type": "websocket.receive", "text": decoded})
        return True

    def resumeReading(self) -> None:
        self.readPaused = False
        if self.connected and self.transport is not None:
            self.transport.resumeProducing()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = False
        self.writePaused = False
        self.cycle.state = _CLOSED
        self.cycle.clientGone(1006)

    def connectionDraining(self) -> None:
        """The server drains: close 1001 (Going Away)."""
        self.cycle._close(1001, "server shutting down")

    # IPushProducer: the transport's pauses of our writes.

    def pauseProducing(self) -> None:
        self.writePaused = True

    def resumeProducing(self) -> None:
        self.writePaused = False
        self.cycle.wake()

    def stopProducing(self) -> None:
        self.writePaused = False
        self.cycle.wake()
