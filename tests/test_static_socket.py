"""
``StaticFiles`` behind ``ConnectionFactory`` on real sockets (127.0.0.1,
port 0): a large file streamed with backpressure to a client that stops
reading, a file truncated while it is being sent, and (over TCP and over
TLS alike) ranges and conditional requests.  Every wait is bounded; the
two large-file tests wait on the kernel's buffers, and are marked slow.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task
from twisted.internet.error import ConnectionDone

from connserver._handlers.static import READ_CHUNK_BYTES, StaticFiles

from ._harness import parseResponses
from ._helpers import ensureDeferred, eventuallyDeferred
from ._sockets import TRANSPORTS, RawClient, Server, connect, finish, serve

SIZE = 32 * 1024 * 1024


def split(client: RawClient) -> tuple[bytes, bytes]:
    head, _, body = client.received.partition(b"\r\n\r\n")
    return head, body


async def serveFiles(root: Path, tls: str = "tcp") -> Server:
    from twisted.internet import reactor

    return await serve(StaticFiles(root, reactor=reactor), tls=tls)


async def request(server: Server, data: bytes) -> RawClient:
    return await connect(server, request=data)


def buffered(protocol: Any) -> int:
    """Bytes waiting in a Twisted TCP transport's write buffer."""
    transport = protocol.transport
    return int(len(transport.dataBuffer) - transport.offset + transport._tempDataLen)


@pytest.fixture
def bigRoot(tmp_path: Path) -> Path:
    (tmp_path / "big.bin").write_bytes(os.urandom(SIZE))
    return tmp_path


@pytest.mark.slow
@ensureDeferred
async def test_largeFileStreamsWithFlatMemory(bigRoot: Path) -> None:
    from twisted.internet import reactor

    server = await serveFiles(bigRoot)
    protocols = server.protocols
    try:
        client = await request(
            server, b"GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        transport: Any = client.transport
        transport.pauseProducing()  # the client stops reading
        await eventuallyDeferred(
            lambda: protocols and protocols[0].flow.writePaused, timeout=5
        )
        # Let the reactor run a while: the server stays paused, and what it
        # holds in memory is bounded by one turn of blocks, not the file.
        for _ in range(5):
            await task.deferLater(reactor, 0.01, lambda: None)
        assert protocols[0].flow.writePaused
        assert buffered(protocols[0]) <= 8 * READ_CHUNK_BYTES
        transport.resumeProducing()
        await client.waitClosed()
        head, body = split(client)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"\r\nContent-Length: %d\r\n" % SIZE in head + b"\r\n"
        assert body == (bigRoot / "big.bin").read_bytes()
    finally:
        await finish(server)


@pytest.mark.slow
@ensureDeferred
async def test_truncatedDuringSendAborts(bigRoot: Path) -> None:

    server = await serveFiles(bigRoot)
    protocols = server.protocols
    try:
        client = await request(server, b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        transport: Any = client.transport
        transport.pauseProducing()
        await eventuallyDeferred(
            lambda: protocols and protocols[0].flow.writePaused, timeout=5
        )
        os.truncate(bigRoot / "big.bin", SIZE // 2)
        transport.resumeProducing()
        await client.waitClosed()
        head, body = split(client)
        assert b"\r\nContent-Length: %d\r\n" % SIZE in head + b"\r\n"
        # Never a complete-looking response: short, then the connection cut.
        assert len(body) <= SIZE // 2
        assert client.reason is not None
        assert not client.reason.check(ConnectionDone)
        await eventuallyDeferred(
            lambda: server.factory.stats.closes.get("response-error"), timeout=5
        )
    finally:
        await finish(server)


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@ensureDeferred
async def test_rangesAndConditionals(tmp_path: Path, transport: str) -> None:
    """
    Range (206 with Content-Range, RFC 9110 §14), If-None-Match (304,
    §13.1.2) and If-Range on one persistent connection, over TCP and TLS.
    """
    data = bytes(range(256)) * 64
    (tmp_path / "data.bin").write_bytes(data)
    server = await serveFiles(tmp_path, transport)
    try:
        client = await connect(server)
        client.write(b"GET /data.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        [full] = await client.waitResponses(1)
        assert (full.status, full.body) == (200, data)
        etag = full.header(b"etag")
        assert etag is not None
        client.write(
            b"GET /data.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\n\r\n"
            b"GET /data.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=-5\r\n\r\n"
            b"GET /data.bin HTTP/1.1\r\nHost: x\r\nIf-None-Match: " + etag + b"\r\n\r\n"
            b"GET /data.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-3\r\n"
            b"If-Range: " + etag + b"\r\n\r\n"
            b"GET /data.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-3\r\n"
            b'If-Range: "stale"\r\nConnection: close\r\n\r\n'
        )
        received = await client.waitClosed()
        responses = parseResponses(received, [b"GET"] * 6, eof=True)
        assert [r.status for r in responses] == [200, 206, 206, 304, 206, 200]
        assert responses[1].body == data[10:20]
        assert responses[1].header(b"content-range") == b"bytes 10-19/%d" % len(data)
        assert responses[2].body == data[-5:]
        assert responses[3].body == b"" and responses[3].header(b"etag") == etag
        assert responses[4].body == data[:4]
        assert responses[5].body == data
        assert server.factory.stats.accepted == 1
        if transport == "tls":
            assert client.reason is not None and client.reason.check(ConnectionDone)
    finally:
        await finish(server)
