"""
WebSocket pieces shared by the real-client tests (issue 22): autobahn's echo
protocol and its three hosts on connserver, a raw client's handshake and
frames (RFC 6455 §4.1, §5.2), the ``websockets`` sync client (run it in a
thread) and autobahn's own Twisted client.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
from collections.abc import Sequence
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from klein import Klein
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.web.resource import Resource

from connserver import WebSocketHandler, asHandler

from ._helpers import realReactor
from ._sockets import TIMEOUT, bounded, clientTLSOptions, defaultCertificate

__all__ = [
    "ACCEPT",
    "HOSTS",
    "KEY",
    "AutobahnClient",
    "EchoServerProtocol",
    "autobahnConnect",
    "autobahnEcho",
    "clientContext",
    "clientFrame",
    "echoFactory",
    "handshake",
    "host",
    "serverFrame",
    "websocketsEcho",
]

#: Parameter ids: the ways connserver hosts autobahn's echo protocol.
HOSTS = ["handler", "resource", "klein"]
#: RFC 6455 §1.3's sample key, and the accept value it must get.
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = base64.b64encode(
    hashlib.sha1(KEY + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
)


class EchoServerProtocol(WebSocketServerProtocol):  # type: ignore[misc]
    """
    Sends every message back, text as text and binary as binary; closes
    (1000, "bye") on the text message ``bye``.
    """

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if payload == b"bye" and not isBinary:
            self.sendClose(1000, "bye")
        else:
            self.sendMessage(payload, isBinary)


def echoFactory(**options: Any) -> WebSocketServerFactory:
    """autobahn's server factory for ``EchoServerProtocol``, with ``options``."""
    factory = WebSocketServerFactory()
    factory.protocol = EchoServerProtocol
    if options:
        factory.setProtocolOptions(**options)
    return factory


def host(kind: str, factory: WebSocketServerFactory) -> Any:
    """
    A connserver handler serving ``factory`` at ``/ws`` (and ``hello`` at
    ``/``): ``"handler"`` is ``WebSocketHandler`` behind a small router,
    ``"resource"`` autobahn's ``WebSocketResource`` in a twisted.web tree
    hosted through ``asHandler``, ``"klein"`` a Klein route that returns a
    ``WebSocketResource``.
    """
    if kind == "handler":
        from connserver import Request, Response

        websocket = WebSocketHandler(factory)

        def route(request: Request) -> Any:
            if request.path == b"/ws":
                return websocket(request)
            return Response(200, [(b"Content-Type", b"text/plain")], b"hello\n")

        return route
    resource = WebSocketResource(factory)
    if kind == "resource":
        root = Resource()
        root.putChild(b"ws", resource)
        root.putChild(b"", _Hello())
        return asHandler(root)
    app = Klein()

    @app.route("/ws")  # type: ignore[misc]
    def ws(request: Any) -> WebSocketResource:
        return resource

    @app.route("/")  # type: ignore[misc]
    def home(request: Any) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain")
        return b"hello\n"

    return asHandler(app)


class _Hello(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain")
        return b"hello\n"


# -- a raw client's bytes -----------------------------------------------------


def handshake(path: bytes = b"/ws", host: bytes = b"localhost") -> bytes:
    """An opening handshake (RFC 6455 §4.1) with the sample key."""
    return (
        b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + KEY + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )


def clientFrame(
    payload: bytes, opcode: int = 1, mask: bytes = b"\x37\xfa\x21\x3d"
) -> bytes:
    """A final client frame, masked as a client's must be (RFC 6455 §5.3)."""
    length = len(payload)
    if length < 126:
        head = bytes([0x80 | opcode, 0x80 | length])
    else:
        assert length < 65536
        head = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return head + mask + masked


def serverFrame(payload: bytes, opcode: int = 1) -> bytes:
    """A short final server frame, unmasked (RFC 6455 §5.1)."""
    assert len(payload) < 126
    return bytes([0x80 | opcode, len(payload)]) + payload


# -- the websockets library's sync client (blocking: run it in a thread) -----


def clientContext(alpn: Sequence[str] = ("h2", "http/1.1")) -> ssl.SSLContext:
    """Python's TLS, trusting the test certificate, offering ALPN as browsers do."""
    context = ssl.create_default_context(cafile=str(defaultCertificate().certificate))
    context.set_alpn_protocols(list(alpn))
    return context


def websocketsEcho(
    uri: str, messages: Sequence[str | bytes] = ("hello", b"\x00\x01\xfe\xff")
) -> dict[str, Any]:
    """
    Open ``uri`` with ``websockets.sync.client``, send each message and
    read its echo, close; what the client saw.
    """
    from websockets.sync.client import connect

    secure = uri.startswith("wss:")
    with connect(
        uri,
        ssl=clientContext() if secure else None,
        open_timeout=TIMEOUT,
        close_timeout=TIMEOUT,
    ) as ws:
        alpn = ws.socket.selected_alpn_protocol() if secure else None  # type: ignore[attr-defined]
        echoes = []
        for message in messages:
            ws.send(message)
            echoes.append(ws.recv(timeout=TIMEOUT))
        status = ws.response.status_code if ws.response is not None else None
    return {
        "echoes": echoes,
        "alpn": alpn,
        "status": status,
        "closeCode": ws.close_code,
    }


# -- autobahn's Twisted client ------------------------------------------------


class AutobahnClient(WebSocketClientProtocol):  # type: ignore[misc]
    """
    Sends ``messages`` once open, one at a time, each after the previous
    echo, then closes (1000) unless ``stayOpen``.  ``opened`` fires on
    open, ``closed`` with ``(wasClean, code, echoes)``.
    """

    messages: Sequence[str | bytes] = ()
    stayOpen = False

    def __init__(self) -> None:
        super().__init__()
        self.echoes: list[str | bytes] = []
        self.opened: defer.Deferred[None] = defer.Deferred()
        self.closed: defer.Deferred[tuple[bool, int | None, list[str | bytes]]] = (
            defer.Deferred()
        )
        self._queue: list[str | bytes] = []

    def onOpen(self) -> None:
        self._queue = list(self.messages)
        self.opened.callback(None)
        self._next()

    def _next(self) -> None:
        if self._queue:
            message = self._queue.pop(0)
            if isinstance(message, str):
                self.sendMessage(message.encode(), isBinary=False)
            else:
                self.sendMessage(message, isBinary=True)
        elif not self.stayOpen:
            self.sendClose(1000)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.echoes.append(payload if isBinary else payload.decode())
        self._next()

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.opened.called:
            self.opened.errback(RuntimeError(f"closed before open: {reason}"))
            self.opened.addErrback(lambda _: None)
        self.closed.callback((wasClean, code, self.echoes))


async def autobahnConnect(
    port: int,
    *,
    tls: bool = False,
    path: str = "/ws",
    messages: Sequence[str | bytes] = (),
    stayOpen: bool = False,
) -> AutobahnClient:
    """autobahn's client, connected to 127.0.0.1 ``port`` and open."""
    reactor = realReactor()
    scheme = "wss" if tls else "ws"
    factory = WebSocketClientFactory(f"{scheme}://localhost:{port}{path}")
    # txaio's batched timer truncates a deadline to the whole second
    # (int(now + delay)): autobahn's 1-second close-handshake timeout can
    # fire after a few milliseconds, and one client of many closing at once
    # then reports 1006.  Longer timeouts keep them out of the way; every
    # wait here is bounded anyway.
    factory.setProtocolOptions(openHandshakeTimeout=30, closeHandshakeTimeout=30)

    class Client(AutobahnClient):
        pass

    Client.messages = messages
    Client.stayOpen = stayOpen
    factory.protocol = Client
    endpoint: Any = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)
    if tls:
        endpoint = wrapClientTLS(clientTLSOptions(), endpoint)
    client: AutobahnClient = await bounded(endpoint.connect(factory))
    await bounded(client.opened)
    return client


async def autobahnEcho(
    port: int,
    *,
    tls: bool = False,
    messages: Sequence[str | bytes] = ("hello", b"\x00\x01\xfe\xff"),
) -> dict[str, Any]:
    """autobahn's client sends ``messages`` and closes; what it saw."""
    client = await autobahnConnect(port, tls=tls, messages=messages)
    wasClean, code, echoes = await bounded(client.closed)
    transport: Any = client.transport
    return {
        "echoes": echoes,
        "alpn": getattr(transport, "negotiatedProtocol", None),
        "clean": wasClean,
        "closeCode": code,
    }
