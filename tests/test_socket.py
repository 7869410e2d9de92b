"""
A few real-socket tests on 127.0.0.1, port 0: what StringTransport cannot
show (the kernel's half-close, resets, real backpressure).  Each is bounded
in time.
"""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IHalfCloseableProtocol
from zope.interface import implementer

from connserver import ConnectionFactory, Request, Response, ServerConfig

from ._harness import hello, parseResponses

TIMEOUT = 10


@implementer(IHalfCloseableProtocol)
class RawClient(protocol.Protocol):
    """Collects what the server sends; fires ``closed`` with it at the end."""

    def __init__(self) -> None:
        self.received = b""
        self.closed: defer.Deferred[bytes] = defer.Deferred()
        self.dataArrived: defer.Deferred[None] | None = None
        self.reason: Any = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        waiting, self.dataArrived = self.dataArrived, None
        if waiting is not None:
            waiting.callback(None)

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Any = None) -> None:
        self.reason = reason
        self.closed.callback(self.received)

    async def waitFor(self, marker: bytes, count: int = 1) -> None:
        while self.received.count(marker) < count:
            self.dataArrived = defer.Deferred()
            await self.dataArrived


async def serve(handler: Any, **config: Any) -> tuple[Any, ConnectionFactory]:
    factory = ConnectionFactory(handler, ServerConfig(**config))
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    return port, factory


async def connect(port: Any) -> RawClient:
    client = RawClient()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
    await endpoint.connect(protocol.Factory.forProtocol(lambda: client))
    return client


async def finish(port: Any, factory: ConnectionFactory) -> None:
    """Stop listening, wait for every connection to go; no timer may remain."""
    await port.stopListening()
    await bounded(factory.drain(2.0))
    assert factory.stats.active == 0
    leftovers = [
        call
        for call in reactor.getDelayedCalls()  # type: ignore[attr-defined]
        if "HTTPServerProtocol" in repr(call) or "ConnectionFactory" in repr(call)
    ]
    assert leftovers == []


def bounded(d: defer.Deferred[Any]) -> defer.Deferred[Any]:
    return d.addTimeout(TIMEOUT, reactor)


@pytest_twisted.ensureDeferred
async def test_keepAliveReusesTheConnection() -> None:
    port, factory = await serve(hello)
    try:
        client = await connect(port)
        client.transport.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # type: ignore[union-attr]
        await bounded(defer.ensureDeferred(client.waitFor(b"HTTP/1.1 200")))
        client.transport.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # type: ignore[union-attr]
        await bounded(defer.ensureDeferred(client.waitFor(b"HTTP/1.1 200", 2)))
        assert factory.stats.accepted == 1
        assert not client.closed.called
        client.transport.loseConnection()  # type: ignore[union-attr]
        await bounded(client.closed)
    finally:
        await finish(port, factory)


@pytest_twisted.ensureDeferred
async def test_http10KeepAlive() -> None:
    port, factory = await serve(hello)
    try:
        client = await connect(port)
        for n in (1, 2):
            client.transport.write(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")  # type: ignore[union-attr]
            await bounded(defer.ensureDeferred(client.waitFor(b"x" * 130, n)))
        assert client.received.count(b"Connection: keep-alive\r\n") == 2
        assert factory.stats.accepted == 1
        client.transport.loseConnection()  # type: ignore[union-attr]
        await bounded(client.closed)
    finally:
        await finish(port, factory)


@pytest_twisted.ensureDeferred
async def test_closeWithPipelinedBytesAnswersOnlyTheFirst() -> None:
    """Checklist C23: one response, then FIN; the pipelined GET is never answered."""
    port, factory = await serve(hello)
    try:
        client = await connect(port)
        client.transport.write(  # type: ignore[union-attr]
            b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        received = await bounded(client.closed)
        responses = parseResponses(received, [b"GET", b"GET"], eof=True)
        assert len(responses) == 1
        assert responses[0].header(b"connection") == b"close"
        assert received.count(b"HTTP/1.1") == 1
    finally:
        await finish(port, factory)


@pytest_twisted.ensureDeferred
async def test_lingeringCloseLetsTheClientReadTheResponse() -> None:
    """
    Checklist C25: the server answers 413 early while the client keeps
    sending; the client must read the whole response, not a reset.
    """

    def handler(request: Request) -> defer.Deferred[Response]:
        return request.readBody().addCallback(lambda body: Response(200, body=b"ok"))

    port, factory = await serve(handler, maxBodyBytes=1024, lingerTimeout=2.0)
    try:
        client = await connect(port)
        client.transport.write(  # type: ignore[union-attr]
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n"
        )
        junk = b"j" * 65536

        def sendMore(count: int) -> None:
            if count and client.transport is not None and not client.closed.called:
                client.transport.write(junk)
                reactor.callLater(0.005, sendMore, count - 1)

        sendMore(40)  # 2.5 MiB, still sending while the server closes
        received = await bounded(client.closed)
        responses = parseResponses(received, [b"POST"], eof=True)
        assert [r.status for r in responses] == [413]
        assert responses[0].header(b"connection") == b"close"
    finally:
        await finish(port, factory)


@pytest_twisted.ensureDeferred
async def test_idleTimeoutClosesRealSocket() -> None:
    port, factory = await serve(hello, idleTimeout=0.2)
    try:
        client = await connect(port)
        client.transport.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # type: ignore[union-attr]
        received = await bounded(client.closed)
        assert received.startswith(b"HTTP/1.1 200 OK")
    finally:
        await finish(port, factory)
    assert factory.stats.closes["idle-timeout"] == 1


@pytest_twisted.ensureDeferred
async def test_largeFileBodyArrivesWholeThroughSendfileWithAPausingClient(
    tmp_path: Any,
) -> None:
    """
    A file body goes out with the kernel's sendfile on plain TCP; a client
    that stops reading for a while (the socket fills, the server waits for
    writability) still gets every byte, in order.
    """
    import hashlib
    import os

    data = os.urandom(8 * 1024 * 1024)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    port, factory = await serve(lambda request: Response(200, body=open(path, "rb")))
    try:
        client = await connect(port)
        client.transport.pauseProducing()  # type: ignore[union-attr]
        client.transport.write(  # type: ignore[union-attr]
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        pause: defer.Deferred[None] = defer.Deferred()
        reactor.callLater(0.3, pause.callback, None)  # type: ignore[attr-defined]
        await pause
        client.transport.resumeProducing()  # type: ignore[union-attr]
        received = await bounded(client.closed)
        responses = parseResponses(received, [b"GET"], eof=True)
        assert responses[0].header(b"content-length") == b"%d" % len(data)
        assert (
            hashlib.sha256(responses[0].body).digest() == hashlib.sha256(data).digest()
        )
    finally:
        await finish(port, factory)
