"""
WebSocket through ``ReverseProxy`` (issue 21, "Upgrade through the proxy"):
the client's ``Upgrade`` is offered upstream on a new connection, the
upstream's ``101`` is relayed and the two connections are spliced.  The
upstream is autobahn's own echo server, or a scripted raw one where the
exact bytes matter; the client is the ``websockets`` library (in a thread)
or a raw socket.  Real sockets on 127.0.0.1, every wait bounded.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from twisted.internet import defer, protocol, threads
from twisted.internet.interfaces import IHalfCloseableProtocol
from zope.interface import implementer

from connserver import ConnectionRecord, ReverseProxy
from connserver._handlers.tunnel import Tunnel

from ._helpers import ensureDeferred, eventuallyDeferred
from ._helpers import realReactor as _reactor
from ._sockets import TIMEOUT, Server, bounded, connect, finish, serve
from ._websockets import (
    ACCEPT,
    EchoServerProtocol,
    clientFrame,
    echoFactory,
    handshake,
    serverFrame,
    websocketsEcho,
)

pytestmark = pytest.mark.slow


# -- upstreams ------------------------------------------------------------------


class TrackedEcho(EchoServerProtocol):
    """autobahn's echo, counting its connections and their ends."""

    def connectionMade(self) -> None:
        self.factory.opened += 1
        super().connectionMade()

    def connectionLost(self, reason: Any) -> None:
        self.factory.lost += 1
        super().connectionLost(reason)


def autobahnUpstream() -> tuple[Any, Any]:
    factory = echoFactory()
    factory.protocol = TrackedEcho
    factory.opened = 0
    factory.lost = 0
    port = _reactor().listenTCP(0, factory, interface="127.0.0.1")
    return port, factory


class Scripted(protocol.Protocol):
    """
    Answers the first request head with the factory's ``answer`` in one
    write (with whatever followed the head echoed in the same write), then
    echoes raw bytes.
    """

    def __init__(self) -> None:
        self.buffer = b""
        self.answered = False

    def connectionMade(self) -> None:
        self.factory.opened += 1

    def dataReceived(self, data: bytes) -> None:
        if self.answered:
            self.transport.write(data)  # type: ignore[union-attr]
            return
        self.buffer += data
        if b"\r\n\r\n" in self.buffer:
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            self.factory.heads.append(head)
            self.answered = True
            self.transport.write(self.factory.answer + rest)  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.lost += 1


def scriptedUpstream(answer: bytes) -> tuple[Any, Any]:
    factory = protocol.Factory.forProtocol(Scripted)
    factory.noisy = False
    factory.answer = answer  # type: ignore[attr-defined]
    factory.heads = []  # type: ignore[attr-defined]
    factory.opened = 0  # type: ignore[attr-defined]
    factory.lost = 0  # type: ignore[attr-defined]
    port = _reactor().listenTCP(0, factory, interface="127.0.0.1")
    return port, factory


SWITCH = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade, X-Hop\r\nX-Hop: 1\r\nServer: scripted\r\n"
    b"Sec-WebSocket-Accept: " + ACCEPT + b"\r\n\r\nEARLY"
)


# -- the front ------------------------------------------------------------------


async def front(
    port: Any, **options: Any
) -> tuple[Server, ReverseProxy, list[ConnectionRecord]]:
    url = f"http://127.0.0.1:{port.getHost().port}"
    proxy = ReverseProxy(url, reactor=_reactor(), **options)
    server = await serve(proxy)
    closes: list[ConnectionRecord] = []
    server.factory.closeObservers.append(closes.append)
    return server, proxy, closes


async def close(server: Server, proxy: ReverseProxy, port: Any) -> None:
    await bounded(proxy.close())
    await finish(server)
    await port.stopListening()


async def noTunnelLeft(server: Server, proxy: ReverseProxy) -> None:
    await eventuallyDeferred(lambda: server.factory.connections() == [])
    assert proxy.pool.idle == []
    tunnels = [
        call
        for call in _reactor().getDelayedCalls()
        if isinstance(getattr(call.func, "__self__", None), Tunnel)
    ]
    assert tunnels == []


def uri(server: Server, path: str = "/ws") -> str:
    return f"ws://localhost:{server.portNumber}{path}"


async def inThread(function: Any, *args: Any) -> Any:
    return await bounded(threads.deferToThread(function, *args), TIMEOUT + 5)


# -- autobahn upstream, websockets client -----------------------------------------

MESSAGES = ["hello", b"\x00\x01\xfe\xff", "x" * 300_000, bytes(range(256)) * 1000]


@ensureDeferred
async def test_echoThroughTheProxy() -> None:
    port, upstream = autobahnUpstream()
    server, proxy, closes = await front(port)
    try:
        seen = await inThread(websocketsEcho, uri(server), MESSAGES)
        assert seen["status"] == 101
        assert seen["echoes"] == MESSAGES
        assert seen["closeCode"] == 1000
        await eventuallyDeferred(lambda: upstream.lost == 1)
        await noTunnelLeft(server, proxy)
        [record] = closes
        assert record.closeReason == "upgraded"
        assert record.bytesReceived > 556_000 and record.bytesSent > 556_000
        assert upstream.opened == 1 and proxy.pool.opened == 1
    finally:
        await close(server, proxy, port)


def closedByTheServer(uriText: str) -> dict[str, Any]:
    from websockets.exceptions import ConnectionClosedOK
    from websockets.sync.client import connect as wsConnect

    with wsConnect(uriText, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
        ws.send("bye")
        try:
            ws.recv(timeout=TIMEOUT)
        except ConnectionClosedOK as closed:
            assert closed.rcvd is not None
            return {"code": closed.rcvd.code, "reason": closed.rcvd.reason}
    raise AssertionError("a message instead of the close")


@ensureDeferred
async def test_theUpstreamClosing() -> None:
    port, upstream = autobahnUpstream()
    server, proxy, closes = await front(port)
    try:
        seen = await inThread(closedByTheServer, uri(server))
        assert seen == {"code": 1000, "reason": "bye"}
        await noTunnelLeft(server, proxy)
        assert upstream.lost == 1
        assert [record.closeReason for record in closes] == ["upgraded"]
    finally:
        await close(server, proxy, port)


# -- raw client -------------------------------------------------------------------


@ensureDeferred
async def test_aFrameInTheSamePacketAsTheHandshake() -> None:
    port, upstream = autobahnUpstream()
    server, proxy, _ = await front(port)
    try:
        client = await connect(server)
        client.write(handshake() + clientFrame(b"early"))
        received = await client.waitFor(serverFrame(b"early"))
        head, _, rest = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        lines = head.split(b"\r\n")
        assert b"Sec-WebSocket-Accept: " + ACCEPT in lines
        # The upstream's spelling of the protocol (autobahn's "WebSocket").
        assert b"upgrade: websocket" in [line.lower() for line in lines]
        assert b"Connection: upgrade" in lines
        assert not [line for line in lines if line.startswith(b"Server: Autobahn")]
        assert rest == serverFrame(b"early")
        client.close()
        await client.waitClosed()
        await eventuallyDeferred(lambda: upstream.lost == 1)
        await noTunnelLeft(server, proxy)
    finally:
        await close(server, proxy, port)


@ensureDeferred
async def test_theClientVanishing() -> None:
    port, upstream = autobahnUpstream()
    server, proxy, closes = await front(port)
    try:
        client = await connect(server)
        client.write(handshake() + clientFrame(b"one"))
        await client.waitFor(serverFrame(b"one"))
        assert client.transport is not None
        client.transport.abortConnection()  # type: ignore[attr-defined]
        await eventuallyDeferred(lambda: upstream.lost == 1)
        await noTunnelLeft(server, proxy)
        assert len(closes) == 1
    finally:
        await close(server, proxy, port)


@ensureDeferred
async def test_theUpstreamsBytesAfterIts101AndTheFieldsRelayed() -> None:
    port, upstream = scriptedUpstream(SWITCH)
    server, proxy, closes = await front(port)
    try:
        client = await connect(server)
        client.write(handshake() + b"ping")
        received = await client.waitFor(b"EARLYping")
        head = received.partition(b"\r\n\r\n")[0].split(b"\r\n")
        assert head[0] == b"HTTP/1.1 101 Switching Protocols"
        assert b"Sec-WebSocket-Accept: " + ACCEPT in head
        assert not [line for line in head if line.lower().startswith(b"x-hop")]
        assert b"Server: scripted" not in head
        # Upstream: this hop's own Upgrade and Connection.
        [sent] = upstream.heads
        fields = sent.split(b"\r\n")
        assert b"Upgrade: websocket" in fields
        assert b"Connection: upgrade" in fields
        client.write(b"more")
        await client.waitFor(b"EARLYpingmore")
        client.close()
        await client.waitClosed()
        await eventuallyDeferred(lambda: upstream.lost == 1)
        await noTunnelLeft(server, proxy)
        [record] = closes
        assert record.closeReason == "upgraded"
        # The bytes through the tunnel, each way (after the switch).
        assert (record.bytesReceived, record.bytesSent) == (8, 13)
    finally:
        await close(server, proxy, port)


@ensureDeferred
async def test_anUpstreamRefusingTheUpgradeIsRelayed() -> None:
    port, upstream = scriptedUpstream(
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 5\r\n\r\nnope\n"
    )
    server, proxy, _ = await front(port)
    try:
        client = await connect(server, request=handshake())
        [response] = await client.waitResponses(1)
        assert response.status == 400
        assert response.body == b"nope\n"
        # Never pooled: it offered an upgrade.
        await eventuallyDeferred(lambda: upstream.lost == 1)
        assert proxy.pool.idle == []
        client.close()
    finally:
        await close(server, proxy, port)


@ensureDeferred
async def test_a101ToAProtocolNotOfferedIs502() -> None:
    port, upstream = scriptedUpstream(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: other\r\n"
        b"Connection: upgrade\r\n\r\n"
    )
    server, proxy, _ = await front(port)
    try:
        client = await connect(server, request=handshake())
        [response] = await client.waitResponses(1)
        assert response.status == 502
        await eventuallyDeferred(lambda: upstream.lost == 1)
        client.close()
    finally:
        await close(server, proxy, port)


@ensureDeferred
async def test_a101ToARequestThatOfferedNoneIs502() -> None:
    port, upstream = scriptedUpstream(SWITCH)
    server, proxy, _ = await front(port)
    try:
        client = await connect(server, request=b"GET /ws HTTP/1.1\r\nHost: h\r\n\r\n")
        [response] = await client.waitResponses(1)
        assert response.status == 502
        [sent] = upstream.heads
        assert b"upgrade" not in sent.lower()
        client.close()
    finally:
        await close(server, proxy, port)


@ensureDeferred
async def test_noUpgradeWhenTheRouteForbidsIt() -> None:
    port, upstream = scriptedUpstream(SWITCH)
    server, proxy, _ = await front(port, allowUpgrade=False)
    try:
        client = await connect(server, request=handshake())
        [response] = await client.waitResponses(1)
        assert response.status == 502
        [sent] = upstream.heads
        assert b"upgrade" not in sent.lower()
        client.close()
    finally:
        await close(server, proxy, port)


@ensureDeferred
async def test_theTunnelIdleTimeout() -> None:
    port, upstream = scriptedUpstream(SWITCH)
    server, proxy, _ = await front(port, tunnelIdleTimeout=0.3)
    try:
        client = await connect(server)
        client.write(handshake())
        await client.waitFor(b"EARLY")
        # Traffic moves the deadline.
        for _ in range(3):
            await bounded(_deferLater(0.15))
            client.write(b"x")
        await client.waitFor(b"xxx")
        await client.waitClosed()
        await eventuallyDeferred(lambda: upstream.lost == 1)
        await noTunnelLeft(server, proxy)
    finally:
        await close(server, proxy, port)


@ensureDeferred
async def test_aDrainWithAnOpenTunnel() -> None:
    port, upstream = autobahnUpstream()
    server, proxy, closes = await front(port)
    try:
        client = await connect(server)
        client.write(handshake() + clientFrame(b"one"))
        await client.waitFor(serverFrame(b"one"))
        await bounded(server.factory.drain(2.0))
        await client.waitClosed()
        await eventuallyDeferred(lambda: upstream.lost == 1)
        await noTunnelLeft(server, proxy)
        assert [record.closeReason for record in closes] == ["draining"]
    finally:
        await close(server, proxy, port)


def _deferLater(seconds: float) -> defer.Deferred[None]:
    from twisted.internet import task

    return task.deferLater(_reactor(), seconds, lambda: None)


# -- half-closes, real sockets ------------------------------------------------------


@implementer(IHalfCloseableProtocol)
class HalfClosing(protocol.Protocol):
    """
    Answers the handshake with a 101 and ``bye``, then half-closes; keeps
    what the client sends after that, and closes when the client's FIN comes.
    """

    def __init__(self) -> None:
        self.buffer = b""
        self.switched = False

    def dataReceived(self, data: bytes) -> None:
        if self.switched:
            self.factory.after += data
            return
        self.buffer += data
        if b"\r\n\r\n" in self.buffer:
            self.switched = True
            assert self.transport is not None
            self.transport.write(SWITCH.replace(b"EARLY", b"bye"))
            self.transport.loseWriteConnection()  # type: ignore[attr-defined]

    def readConnectionLost(self) -> None:
        self.factory.clientFin = True
        assert self.transport is not None
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.lost += 1


def halfClosingClient(port: int) -> dict[str, Any]:
    """Read until the upstream's FIN, then send, then half-close too."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        s.sendall(handshake())
        received = b""
        while chunk := s.recv(65536):
            received += chunk
        # The read side is at its end; the write side is still open.
        s.sendall(b"after your FIN")
        s.shutdown(socket.SHUT_WR)
        last = s.recv(1)
    return {"received": received, "last": last}


@ensureDeferred
async def test_theUpstreamsHalfCloseReachesTheClient() -> None:
    factory = protocol.Factory.forProtocol(HalfClosing)
    factory.noisy = False
    factory.after = b""  # type: ignore[attr-defined]
    factory.clientFin = False  # type: ignore[attr-defined]
    factory.lost = 0  # type: ignore[attr-defined]
    port = _reactor().listenTCP(0, factory, interface="127.0.0.1")
    server, proxy, closes = await front(port)
    try:
        seen = await inThread(halfClosingClient, server.portNumber)
        head, _, rest = seen["received"].partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 Switching Protocols")
        assert rest == b"bye"
        assert seen["last"] == b""
        await eventuallyDeferred(lambda: factory.lost == 1)  # type: ignore[attr-defined]
        assert factory.after == b"after your FIN"  # type: ignore[attr-defined]
        assert factory.clientFin  # type: ignore[attr-defined]
        await noTunnelLeft(server, proxy)
        [record] = closes
        assert record.closeReason == "upgraded"
        assert (record.bytesReceived, record.bytesSent) == (14, 3)
    finally:
        await close(server, proxy, port)


def tlsClientUntilClosed(port: int) -> dict[str, Any]:
    """Over TLS: the handshake, then read until the server's close."""
    from ._websockets import clientContext

    raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    with clientContext(["http/1.1"]).wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(handshake())
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    return {"received": received}


@ensureDeferred
async def test_overTLSTheUpstreamsHalfCloseClosesTheClient() -> None:
    """
    connserver's TLS side cannot half-close: the upstream's FIN ends the
    tunnel cleanly (close_notify, then FIN), after the bytes before it.
    """
    factory = protocol.Factory.forProtocol(HalfClosing)
    factory.noisy = False
    factory.after = b""  # type: ignore[attr-defined]
    factory.clientFin = False  # type: ignore[attr-defined]
    factory.lost = 0  # type: ignore[attr-defined]
    port = _reactor().listenTCP(0, factory, interface="127.0.0.1")
    url = f"http://127.0.0.1:{port.getHost().port}"
    proxy = ReverseProxy(url, reactor=_reactor())
    server = await serve(proxy, tls=True)
    closes: list[ConnectionRecord] = []
    server.factory.closeObservers.append(closes.append)
    try:
        seen = await inThread(tlsClientUntilClosed, server.portNumber)
        head, _, rest = seen["received"].partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 Switching Protocols")
        assert rest == b"bye"
        await eventuallyDeferred(lambda: factory.lost == 1)  # type: ignore[attr-defined]
        await noTunnelLeft(server, proxy)
        [record] = closes
        assert record.closeReason == "upgraded"
        assert (record.bytesReceived, record.bytesSent) == (0, 3)
    finally:
        await close(server, proxy, port)
