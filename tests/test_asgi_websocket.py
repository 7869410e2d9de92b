"""
The ``websocket`` scope of ``ASGIHandler`` (``connserver._handlers.
asgiwebsocket``) driven on a plain asyncio loop, as tests/test_asgi.py drives
the ``http`` one: the handshake's 101 (or refusal) awaited as a future, the
protocol it hands the connection to fed client frames (masked, made by
wsproto's own client-side frame layer) through a ``StringTransport``, and
the server's frames read back with the same library.  Every wait is a loop
turn, never a sleep.

The last tests take the write-through (``directWriter``) on a real TCP
connection on 127.0.0.1 (the real reactor, as tests/test_writethrough.py
does): a frame goes out within the call, and what the kernel does not take
waits in Twisted's buffer, in order, pausing the app's ``send``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent
from wsproto.frame_protocol import Frame, FrameProtocol, Opcode

from connserver._connection.message import Request, Response
from connserver._connection.takeover import SwitchProtocols, TakeoverTransport
from connserver._handlers import asgiwebsocket
from connserver._handlers.asgi import ASGIHandler
from connserver._handlers.asgiwebsocket import QUEUE_HIGH, QUEUE_LOW, directWriter
from connserver._http.headers import Headers

from ._helpers import ensureDeferred
from .test_writethrough import Pair, connectPair, pending, until

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def upgradeRequest(
    *extra: tuple[bytes, bytes], key: bytes = KEY, version: bytes = b"13"
) -> Request:
    fields = [
        (b"Host", b"example.com"),
        (b"Upgrade", b"websocket"),
        (b"Connection", b"Upgrade"),
        (b"Sec-WebSocket-Version", version),
        *extra,
    ]
    if key:
        fields.append((b"Sec-WebSocket-Key", key))
    return Request(
        b"GET",
        b"/chat?room=1",
        headers=Headers(fields),
        peer=IPv4Address("TCP", "10.0.0.1", 5000),
        host=IPv4Address("TCP", "127.0.0.1", 8080),
    )


def masked(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A client frame (RFC 6455 §5.2) of < 126 bytes, masked with 0000."""
    return bytes([0x80 * fin | opcode, 0x80 | len(payload)]) + b"\0" * 4 + payload


async def turns(count: int = 5) -> None:
    """Let the loop run the app's task a few steps."""
    for _ in range(count):
        await asyncio.sleep(0)


class Client:
    """The client's side of one accepted WebSocket: frames in, frames out."""

    def __init__(self, response: Response) -> None:
        assert response.code == 101
        spec = response.body
        assert isinstance(spec, SwitchProtocols)
        self.response = response
        self.protocol: Any = spec.protocol
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        self.frames = FrameProtocol(True, [])
        self.reader = FrameProtocol(True, [])

    def send(self, data: bytes | str, fin: bool = True) -> None:
        self.protocol.dataReceived(bytes(self.frames.send_data(data, fin)))

    def sendRaw(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def ping(self, payload: bytes) -> None:
        self.protocol.dataReceived(bytes(self.frames.ping(payload)))

    def close(self, code: int | None = 1000, reason: str = "") -> None:
        self.protocol.dataReceived(bytes(self.frames.close(code, reason or None)))

    def received(self) -> list[Frame]:
        """The server's frames written since the last call."""
        data = self.transport.value()
        self.transport.clear()
        self.reader.receive_bytes(data)
        return list(self.reader.received_frames())


async def accepted(app: Any, *extra: tuple[bytes, bytes]) -> Client:
    deferred = ASGIHandler(app)(upgradeRequest(*extra))
    assert isinstance(deferred, Deferred)
    response = await deferred.asFuture(asyncio.get_running_loop())
    return Client(response)


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, 10))


def echoApp(seen: list[dict[str, Any]]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(await receive())
        offered = scope["subprotocols"]
        await send(
            {"type": "websocket.accept", "subprotocol": offered[0] if offered else None}
        )
        while True:
            message = await receive()
            seen.append(message)
            if message["type"] != "websocket.receive":
                return
            await send(
                {
                    "type": "websocket.send",
                    "bytes": message.get("bytes"),
                    "text": message.get("text"),
                }
            )

    return app


# -- the handshake ---------------------------------------------------------------


def test_handshakeScopeAndAccept() -> None:
    seen: list[dict[str, Any]] = []
    scopes: list[Any] = []
    app = echoApp(seen)

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        scopes.append(scope)
        await app(scope, receive, send)

    async def main() -> None:
        client = await accepted(
            recording, (b"Sec-WebSocket-Protocol", b"chat, superchat")
        )
        fields = {bytes(n).lower(): bytes(v) for n, v in client.response.fieldPairs()}
        assert fields[b"sec-websocket-accept"] == ACCEPT
        assert fields[b"sec-websocket-protocol"] == b"chat"
        # Not offered: no permessage-deflate (RFC 7692 §5: only in answer).
        assert b"sec-websocket-extensions" not in fields
        client.close()
        await turns()

    run(main())
    scope = scopes[0]
    assert scope["type"] == "websocket"
    assert scope["path"] == "/chat" and scope["query_string"] == b"room=1"
    assert scope["subprotocols"] == ["chat", "superchat"]
    assert "method" not in scope
    assert seen[0] == {"type": "websocket.connect"}


def test_notAHandshakeIs400() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("never run")

    async def main() -> Any:
        return ASGIHandler(app)(upgradeRequest(key=b""))

    response = run(main())
    assert response.code == 400
    assert b"not a WebSocket handshake" in response.body


def test_anotherVersionIs426WithTheVersionSpoken() -> None:
    """RFC 6455 §4.4: a version the server does not speak gets the ones it does."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("never run")

    async def main() -> Any:
        return ASGIHandler(app)(upgradeRequest(version=b"8"))

    response = run(main())
    assert response.code == 426
    fields = {bytes(n).lower(): bytes(v) for n, v in response.fieldPairs()}
    assert fields[b"sec-websocket-version"] == b"13"
    assert b"version 13 only" in response.body


def test_closeBeforeAcceptIs403AndDenialResponse() -> None:
    async def refuse(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.close"})

    async def deny(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 401,
                "headers": [(b"www-authenticate", b"Bearer")],
            }
        )
        await send(
            {"type": "websocket.http.response.body", "body": b"no ", "more_body": True}
        )
        await send({"type": "websocket.http.response.body", "body": b"entry"})

    async def main(app: Any) -> Response:
        deferred = ASGIHandler(app)(upgradeRequest())
        assert isinstance(deferred, Deferred)
        return await deferred.asFuture(asyncio.get_running_loop())  # type: ignore[no-any-return]

    refused = run(main(refuse))
    assert refused.code == 403
    denied = run(main(deny))
    assert denied.code == 401
    assert denied.body == b"no entry"
    assert denied.headers.get(b"www-authenticate") == b"Bearer"


# -- messages both ways ----------------------------------------------------------


def test_echoTextBinaryAndFragmented() -> None:
    seen: list[dict[str, Any]] = []

    async def main() -> list[Frame]:
        client = await accepted(echoApp(seen))
        client.send("héllo")
        await turns()
        client.send(b"\x00\x01\xff")
        await turns()
        # One text message in three frames, split inside a UTF-8 sequence.
        encoded = "aé€".encode()
        raw = masked(0x1, encoded[:2], fin=False)
        raw += masked(0x0, encoded[2:5], fin=False)
        raw += masked(0x0, encoded[5:], fin=True)
        client.sendRaw(raw)
        await turns()
        return client.received()

    frames = run(main())
    assert [(f.opcode, f.payload) for f in frames] == [
        (Opcode.TEXT, "héllo"),
        (Opcode.BINARY, b"\x00\x01\xff"),
        (Opcode.TEXT, "aé€"),
    ]
    assert seen[1:] == [
        {"type": "websocket.receive", "text": "héllo"},
        {"type": "websocket.receive", "bytes": b"\x00\x01\xff"},
        {"type": "websocket.receive", "text": "aé€"},
    ]


def test_twoFramesInOneReadAndOneFrameInTwoReads() -> None:
    seen: list[dict[str, Any]] = []

    async def main() -> list[Frame]:
        client = await accepted(echoApp(seen))
        one = bytes(client.frames.send_data(b"one"))
        two = bytes(client.frames.send_data(b"two"))
        client.sendRaw(one + two[:3])
        await turns()
        client.sendRaw(two[3:])
        await turns()
        return client.received()

    frames = run(main())
    assert [f.payload for f in frames] == [b"one", b"two"]


def test_pingIsAnsweredWithPong() -> None:
    async def main() -> list[Frame]:
        client = await accepted(echoApp([]))
        client.ping(b"are you there")
        await turns()
        return client.received()

    frames = run(main())
    # RFC 6455 §5.5.2: the Pong carries the Ping's payload.
    assert [(f.opcode, f.payload) for f in frames] == [(Opcode.PONG, b"are you there")]


# -- closes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "reason", "answer", "delivered"),
    [
        (1000, "bye", (1000, "bye"), 1000),
        (4001, "", (4001, ""), 4001),
        # An empty close: 1005 for the app, an empty close in answer.
        (None, "", (1005, ""), 1005),
    ],
)
def test_clientClose(
    code: int | None, reason: str, answer: tuple[int, str], delivered: int
) -> None:
    seen: list[dict[str, Any]] = []

    async def main() -> Client:
        client = await accepted(echoApp(seen))
        client.close(code, reason)
        await turns()
        return client

    client = run(main())
    frames = client.received()
    assert [(f.opcode, f.payload) for f in frames] == [(Opcode.CLOSE, answer)]
    assert seen[-1] == {
        "type": "websocket.disconnect",
        "code": delivered,
        "reason": reason,
    }
    assert client.transport.disconnecting


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        # A text frame that is not UTF-8: 1007 (RFC 6455 §8.1).
        (b"\x81\x82\x00\x00\x00\x00\xc3\x28", 1007),
        # An unmasked client frame: 1002 (RFC 6455 §5.1).
        (b"\x82\x02ab", 1002),
        # An unknown opcode: 1002 (RFC 6455 §5.2).
        (b"\x83\x80\x00\x00\x00\x00", 1002),
    ],
)
def test_badFramesFailTheConnection(raw: bytes, code: int) -> None:
    seen: list[dict[str, Any]] = []

    async def main() -> Client:
        client = await accepted(echoApp(seen))
        client.sendRaw(raw)
        await turns()
        # Nothing after the failure is read (RFC 6455 §7.1.7).
        client.send("ignored")
        await turns()
        return client

    client = run(main())
    frames = client.received()
    assert len(frames) == 1 and frames[0].opcode is Opcode.CLOSE
    assert frames[0].payload[0] == code  # type: ignore[index]
    assert seen[-1]["type"] == "websocket.disconnect"
    assert seen[-1]["code"] == code
    assert client.transport.disconnecting


def test_messageTooBigIs1009(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asgiwebsocket, "MAX_MESSAGE_BYTES", 100)
    seen: list[dict[str, Any]] = []

    async def main() -> Client:
        client = await accepted(echoApp(seen))
        client.send(b"x" * 100)
        await turns()
        # In two frames, 60 + 60: too big once the second arrives.
        client.send(b"y" * 60, fin=False)
        client.sendRaw(
            bytes(client.frames.send_data(b"y" * 60, True))
            + bytes(client.frames.send_data(b"after"))
        )
        await turns()
        return client

    client = run(main())
    frames = client.received()
    assert [f.opcode for f in frames] == [Opcode.BINARY, Opcode.CLOSE]
    assert frames[0].payload == b"x" * 100
    code, reason = frames[1].payload  # type: ignore[misc]
    assert code == 1009 and "exceeds limit of 100 bytes" in reason
    assert seen[-1] == {"type": "websocket.disconnect", "code": 1009, "reason": reason}
    assert {"type": "websocket.receive", "bytes": b"after"} not in seen


def test_appCloseDrainAndSendAfterClose() -> None:
    results: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
        await send({"type": "websocket.close", "code": 4000, "reason": "done"})
        try:
            await send({"type": "websocket.send", "text": "late"})
        except OSError as error:
            results.append(type(error).__name__)
        results.append(await receive())

    async def main() -> Client:
        client = await accepted(app)
        client.send("go")
        await turns()
        return client

    client = run(main())
    assert [(f.opcode, f.payload) for f in client.received()] == [
        (Opcode.CLOSE, (4000, "done"))
    ]
    assert results == [
        "ClientDisconnected",
        {"type": "websocket.disconnect", "code": 4000, "reason": "done"},
    ]

    async def draining() -> Client:
        client = await accepted(echoApp([]))
        client.protocol.connectionDraining()
        await turns()
        return client

    client = run(draining())
    assert [(f.opcode, f.payload) for f in client.received()] == [
        (Opcode.CLOSE, (1001, "server shutting down"))
    ]
    assert client.transport.disconnecting


def test_appErrorIs1011AndOneLogLine(logFailures: list[LogEvent]) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
        raise ValueError("the app failed")

    async def main() -> Client:
        client = await accepted(app)
        client.send("boom")
        await turns()
        return client

    client = run(main())
    assert [(f.opcode, f.payload) for f in client.received()] == [
        (Opcode.CLOSE, (1011, ""))
    ]
    assert len(logFailures) == 1
    assert "the app failed" in str(logFailures[0]["log_failure"].value)


def test_connectionLostIs1006() -> None:
    seen: list[dict[str, Any]] = []

    async def main() -> None:
        client = await accepted(echoApp(seen))
        client.protocol.connectionLost()
        await turns()

    run(main())
    assert seen[-1] == {"type": "websocket.disconnect", "code": 1006, "reason": ""}


# -- backpressure ------------------------------------------------------------------


def test_readingPausesWhileMessagesWait() -> None:
    gate: asyncio.Event | None = None
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        assert gate is not None
        await gate.wait()
        while True:
            message = await receive()
            seen.append(message)
            if message["type"] != "websocket.receive":
                return

    async def main() -> list[str]:
        nonlocal gate
        gate = asyncio.Event()
        client = await accepted(app)
        states = []
        for index in range(QUEUE_HIGH - 1):
            client.send(b"%d" % index)
        states.append(client.transport.producerState)
        client.send(b"last")
        states.append(client.transport.producerState)
        gate.set()
        # The app takes messages until QUEUE_LOW wait, then reading resumes.
        for _ in range(QUEUE_HIGH):
            await asyncio.sleep(0)
            if client.transport.producerState == "producing":
                break
        states.append(client.transport.producerState)
        client.close()
        await turns()
        return states

    states = run(main())
    assert states == ["producing", "paused", "producing"]
    assert len(seen) == QUEUE_HIGH + 1
    assert QUEUE_LOW < QUEUE_HIGH


def test_sendWaitsWhileTheTransportPushesBack() -> None:
    sent: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()  # the connection is made
        for index in range(3):
            await send({"type": "websocket.send", "bytes": b"%d" % index})
            sent.append(index)
        await receive()

    async def main() -> list[list[int]]:
        deferred = ASGIHandler(app)(upgradeRequest())
        assert isinstance(deferred, Deferred)
        response = await deferred.asFuture(asyncio.get_running_loop())
        spec = response.body
        protocol: Any = spec.protocol
        transport = StringTransport()
        protocol.makeConnection(transport)
        # The transport's buffer is full: it pauses its producer.
        protocol.pauseProducing()
        protocol.dataReceived(masked(0x1, b"go"))
        await turns()
        progress = [list(sent)]
        written = transport.value()
        protocol.resumeProducing()
        await turns()
        progress.append(list(sent))
        # The first frame was written before the wait, the others after.
        assert written == b"\x82\x010"
        assert transport.value() == b"\x82\x010\x82\x011\x82\x012"
        protocol.connectionLost()
        await turns()
        return progress

    progress = run(main())
    # The first frame is written, then send waits until the resume.
    assert progress == [[], [0, 1, 2]]


def test_sendWaitingWhenTheClientGoesRaises() -> None:
    errors: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()  # the connection is made
        await send({"type": "websocket.send", "text": "a"})
        try:
            await send({"type": "websocket.send", "text": "b"})
        except OSError as error:
            errors.append(type(error).__name__)

    async def main() -> None:
        deferred = ASGIHandler(app)(upgradeRequest())
        assert isinstance(deferred, Deferred)
        response = await deferred.asFuture(asyncio.get_running_loop())
        protocol: Any = response.body.protocol
        protocol.makeConnection(StringTransport())
        protocol.pauseProducing()
        protocol.dataReceived(masked(0x1, b"go"))
        await turns()
        protocol.connectionLost()
        await turns()

    run(main())
    # The wait for the first send ended with the connection; the next one
    # finds it closed.
    assert errors == ["ClientDisconnected"]


# -- the write-through on a real connection -----------------------------------------


class _Counted:
    """What ``directWriter`` needs of a takeover: the count of bytes sent."""

    bytesSent = 0


def takeoverView(pair: Pair) -> tuple[_Counted, TakeoverTransport]:
    counted = _Counted()
    return counted, TakeoverTransport(counted, pair.transport)  # type: ignore[arg-type]


def test_directWriterFallsBackOffPlainTCP() -> None:
    transport = StringTransport()
    write = directWriter(transport)
    write(b"frame")
    assert transport.value() == b"frame"
    # A takeover view of a transport that is not Twisted's TCP: its write.
    counted = _Counted()
    view = TakeoverTransport(counted, StringTransport())  # type: ignore[arg-type]
    assert directWriter(view) == view.write


def test_theTakeoverViewStillHasWhatDirectWriterReads() -> None:
    counted = _Counted()
    real = StringTransport()
    view = TakeoverTransport(counted, real)  # type: ignore[arg-type]
    assert vars(view)["_takeover"] is counted
    assert vars(view)["_transport"] is real


@pytest.mark.slow
@ensureDeferred
async def test_directWriterSendsWithinTheCall() -> None:
    pair = await connectPair()
    try:
        counted, view = takeoverView(pair)
        write = directWriter(view)
        assert write != view.write
        write(b"\x82\x03abc")
        # Not in Twisted's buffer (no reactor turn, no writer registered):
        # the kernel has the frame already.
        assert not pending(pair.transport)
        await until(lambda: pair.read() or pair.received, "the frame")
        assert bytes(pair.received) == b"\x82\x03abc"
        assert counted.bytesSent == 5
    finally:
        await pair.close()


@pytest.mark.slow
@ensureDeferred
async def test_directWriterKeepsOrderBehindAFullSocket() -> None:
    pair = await connectPair(clientReceiveBuffer=4096)
    try:
        counted, view = takeoverView(pair)
        write = directWriter(view)
        big = bytes(range(256)) * 40000  # more than the kernel takes at once
        write(big)
        # The kernel took part; Twisted holds the rest (a partial send).
        assert pending(pair.transport)
        write(b"tail")
        # Behind the rest, not straight to the socket.
        assert pending(pair.transport).endswith(b"tail")
        await pair.drain(len(big) + 4)
        assert bytes(pair.received) == big + b"tail"
        assert counted.bytesSent == len(big) + 4
    finally:
        await pair.close()


@pytest.mark.slow
@ensureDeferred
async def test_aFullWriteBufferPausesTheAppsSend() -> None:
    pair = await connectPair(clientReceiveBuffer=4096)
    loop = asyncio.new_event_loop()
    try:
        counted, view = takeoverView(pair)
        progress: list[int] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "websocket.accept"})
            await receive()  # the connection is made
            for index in range(40):
                await send({"type": "websocket.send", "bytes": b"%02d" % index * 50000})
                progress.append(index)

        handler = ASGIHandler(app)

        async def start() -> Any:
            deferred = handler(upgradeRequest())
            assert isinstance(deferred, Deferred)
            return await deferred.asFuture(asyncio.get_running_loop())

        response = loop.run_until_complete(start())
        protocol: Any = response.body.protocol
        protocol.makeConnection(view)
        protocol.dataReceived(masked(0x1, b"go"))
        loop.run_until_complete(turns(10))
        # The kernel and Twisted's buffer are full: the app waits.
        assert protocol.writePaused
        assert 0 < len(progress) < 40
        while len(progress) < 40:
            await pair.drain(len(pair.received) + 1)
            loop.run_until_complete(turns(2))
        loop.run_until_complete(turns(5))
        # 40 frames with a 10-byte head, then the close 1000 (4 bytes).
        await pair.drain(40 * (100000 + 10) + 4)
        frames = FrameProtocol(True, [])
        frames.receive_bytes(bytes(pair.received))
        received = [(f.opcode, f.payload) for f in frames.received_frames()]
        assert received == [
            *((Opcode.BINARY, b"%02d" % i * 50000) for i in range(40)),
            (Opcode.CLOSE, (1000, "")),
        ]
        assert counted.bytesSent == len(pair.received)
    finally:
        loop.close()
        await pair.close()


def test_permessageDeflateWhenTheClientOffersIt() -> None:
    from wsproto.extensions import PerMessageDeflate

    seen: list[dict[str, Any]] = []

    async def main() -> list[Frame]:
        client = await accepted(
            echoApp(seen),
            (
                b"Sec-WebSocket-Extensions",
                b"permessage-deflate; client_max_window_bits",
            ),
        )
        fields = {bytes(n).lower(): bytes(v) for n, v in client.response.fieldPairs()}
        answer = fields[b"sec-websocket-extensions"].decode()
        assert answer.startswith("permessage-deflate")
        # The client's side, as negotiated, one frame layer both ways.
        deflate = PerMessageDeflate()
        deflate.finalize(answer)
        frames = FrameProtocol(True, [deflate])
        for text in ("hello " * 200, "é" * 50, "once more " * 200):
            raw = bytes(frames.send_data(text))
            assert raw[0] & 0x40  # RSV1: compressed (RFC 7692 §6)
            client.sendRaw(raw)
            await turns()
        data = client.transport.value()
        assert data[0] & 0x40  # the server's echo is compressed too
        frames.receive_bytes(data)
        return list(frames.received_frames())

    frames = run(main())
    assert [f.payload for f in frames] == ["hello " * 200, "é" * 50, "once more " * 200]
    assert [m.get("text") for m in seen[1:]] == [f.payload for f in frames]


@pytest.mark.parametrize(
    ("code", "reason", "sent"),
    [
        # Codes only an endpoint's own report carries (RFC 6455 §7.4.1).
        (1006, "gone", (1000, "gone")),
        (1005, "", (1000, "")),
        # A reason cut to the 123 bytes a close frame carries, whole
        # characters only (RFC 6455 §5.5).
        (4000, "é" * 100, (4000, "é" * 61)),
    ],
)
def test_appCloseCodesAndReasonsThatCannotGoAsGiven(
    code: int, reason: str, sent: tuple[int, str]
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
        await send({"type": "websocket.close", "code": code, "reason": reason})

    async def main() -> Client:
        client = await accepted(app)
        client.send("go")
        await turns()
        return client

    client = run(main())
    assert [(f.opcode, f.payload) for f in client.received()] == [(Opcode.CLOSE, sent)]


def test_aCompressedMessageIsBoundWhileItInflates() -> None:
    """
    A deflate bomb: 64 KiB on the wire that would inflate to 64 MiB.  The
    limit applies while inflating (not to what was inflated), so the
    server holds about twice the limit at most: 1009, in bounded memory.
    """
    import tracemalloc
    import zlib

    seen: list[dict[str, Any]] = []

    async def main() -> Client:
        client = await accepted(
            echoApp(seen),
            (b"Sec-WebSocket-Extensions", b"permessage-deflate"),
        )
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        payload = compressor.compress(b"\0" * (64 * 1024 * 1024))
        payload += compressor.flush(zlib.Z_SYNC_FLUSH)
        payload = payload[:-4]  # RFC 7692 §7.2.1: without 00 00 ff ff.
        assert len(payload) < 128 * 1024
        # A masked (zero mask) binary frame with RSV1 set: compressed.
        head = bytes([0x80 | 0x40 | 0x2, 0x80 | 127]) + len(payload).to_bytes(8, "big")
        tracemalloc.start()
        try:
            client.sendRaw(head + b"\0" * 4 + payload)
            await turns()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # About twice the limit (the inflated part and its copy), far from
        # the 64 MiB the frame would inflate to.
        assert peak < 2.5 * asgiwebsocket.MAX_MESSAGE_BYTES, peak
        return client

    client = run(main())
    [close] = client.received()
    assert close.opcode == Opcode.CLOSE
    assert close.payload[0] == 1009  # type: ignore[index]
    assert seen[-1]["type"] == "websocket.disconnect"
    assert not any(m["type"] == "websocket.receive" for m in seen)
