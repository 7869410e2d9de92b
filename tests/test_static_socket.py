"""
``StaticFiles`` behind ``ConnectionFactory`` on real sockets (127.0.0.1,
port 0): a large file streamed with backpressure to a client that stops
reading, and a file truncated while it is being sent.  Each test is bounded
in time by polling the reactor a limited number of times.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from connserver._factory import ConnectionFactory
from connserver._static import READ_CHUNK_BYTES, StaticFiles

# Imported by name so that mypy treats it as untyped (it ships no stubs).
pytest_twisted: Any = importlib.import_module("pytest_twisted")
serverEndpoint: Any = TCP4ServerEndpoint


def ensureDeferred(
    test: Callable[..., Coroutine[Any, Any, None]],
) -> Callable[..., Any]:
    """pytest-twisted's decorator, typed."""
    wrapped: Callable[..., Any] = pytest_twisted.ensureDeferred(test)
    return wrapped


SIZE = 32 * 1024 * 1024


class RawClient(Protocol):
    """Sends one request and collects every byte until the connection ends."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received = bytearray()
        self.reason: Failure | None = None
        self.done: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        # A Deferred fired with a Failure would errback: keep it aside.
        self.reason = reason
        self.done.callback(None)

    def split(self) -> tuple[bytes, bytes]:
        head, _, body = bytes(self.received).partition(b"\r\n\r\n")
        return head, body


async def until(condition: Any, reactor: Any, tries: int = 500) -> None:
    """Let the reactor run (10 ms steps, bounded) until ``condition()``."""
    for _ in range(tries):
        if condition():
            return
        await task.deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("condition not reached in time")


async def serve(root: Path) -> tuple[Any, ConnectionFactory, list[Any]]:
    from twisted.internet import reactor

    factory = ConnectionFactory(StaticFiles(root, reactor=reactor), reactor=reactor)
    protocols: list[Any] = []
    build = factory.buildProtocol

    def recordingBuild(addr: Any) -> Any:
        protocol = build(addr)
        protocols.append(protocol)
        return protocol

    factory.buildProtocol = recordingBuild  # type: ignore[method-assign]
    port = await serverEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    return port, factory, protocols


async def request(port: Any, data: bytes) -> RawClient:
    from twisted.internet import reactor

    client = RawClient(data)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
    await endpoint.connect(Factory.forProtocol(lambda: client))
    return client


def buffered(protocol: Any) -> int:
    """Bytes waiting in a Twisted TCP transport's write buffer."""
    transport = protocol.transport
    return int(len(transport.dataBuffer) - transport.offset + transport._tempDataLen)


@pytest.fixture
def bigRoot(tmp_path: Path) -> Path:
    (tmp_path / "big.bin").write_bytes(os.urandom(SIZE))
    return tmp_path


@ensureDeferred
async def test_largeFileStreamsWithFlatMemory(bigRoot: Path) -> None:
    from twisted.internet import reactor

    port, _, protocols = await serve(bigRoot)
    try:
        client = await request(
            port, b"GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        transport: Any = client.transport
        transport.pauseProducing()  # the client stops reading
        await until(lambda: protocols and protocols[0]._writePaused, reactor)
        # Let the reactor run a while: the server stays paused, and what it
        # holds in memory is bounded by one turn of blocks, not the file.
        for _ in range(5):
            await task.deferLater(reactor, 0.01, lambda: None)
        assert protocols[0]._writePaused
        assert buffered(protocols[0]) <= 8 * READ_CHUNK_BYTES
        transport.resumeProducing()
        await client.done
        head, body = client.split()
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"\r\nContent-Length: %d\r\n" % SIZE in head + b"\r\n"
        assert body == (bigRoot / "big.bin").read_bytes()
    finally:
        await port.stopListening()


@ensureDeferred
async def test_truncatedDuringSendAborts(bigRoot: Path) -> None:
    from twisted.internet import reactor

    port, factory, protocols = await serve(bigRoot)
    try:
        client = await request(port, b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        transport: Any = client.transport
        transport.pauseProducing()
        await until(lambda: protocols and protocols[0]._writePaused, reactor)
        os.truncate(bigRoot / "big.bin", SIZE // 2)
        transport.resumeProducing()
        await client.done
        head, body = client.split()
        assert b"\r\nContent-Length: %d\r\n" % SIZE in head + b"\r\n"
        # Never a complete-looking response: short, then the connection cut.
        assert len(body) <= SIZE // 2
        assert client.reason is not None
        assert not client.reason.check(ConnectionDone)
        await until(lambda: factory.stats.closes.get("response-error"), reactor)
    finally:
        await port.stopListening()
