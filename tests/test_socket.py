"""
Real-socket tests on 127.0.0.1, port 0: what StringTransport cannot show
(the kernel's half-close, resets, real backpressure), each run over plain
TCP and over TLS (connserver's ``TLSServerOptions``, a client offering ALPN
``h2, http/1.1`` as browsers do) with the same assertions.  Each is bounded
in time.  The tests that wait on real timers (timeouts, a paced sender, a
paused reader) are marked slow; the others wait only on what arrives.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.error import ConnectionDone

from connserver import Request, Response

from ._harness import hello, parseResponses
from ._helpers import eventuallyDeferred
from ._sockets import TRANSPORTS, bounded, connect, finish, serve


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """``"tcp"`` or ``"tls"``: the same test over both."""
    return str(request.param)


def assertCleanClose(client: Any, transport: str) -> None:
    """Over TLS a close by the server comes with close_notify (RFC 9112 §9.8)."""
    if transport == "tls":
        assert client.reason is not None
        assert client.reason.check(ConnectionDone), client.reason


@pytest_twisted.ensureDeferred
async def test_keepAliveReusesTheConnection(transport: str) -> None:
    server = await serve(hello, tls=transport)
    try:
        client = await connect(server)
        client.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await client.waitFor(b"HTTP/1.1 200")
        client.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await client.waitFor(b"HTTP/1.1 200", 2)
        assert server.factory.stats.accepted == 1
        assert not client.closed.called
        client.close()
        await client.waitClosed()
    finally:
        await finish(server)


@pytest_twisted.ensureDeferred
async def test_http10KeepAlive(transport: str) -> None:
    server = await serve(hello, tls=transport)
    try:
        client = await connect(server)
        for n in (1, 2):
            client.write(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            await client.waitFor(b"x" * 130, n)
        assert client.received.count(b"Connection: keep-alive\r\n") == 2
        assert server.factory.stats.accepted == 1
        client.close()
        await client.waitClosed()
    finally:
        await finish(server)


@pytest_twisted.ensureDeferred
async def test_pipelining(transport: str) -> None:
    """Three requests in one write, answered in order (RFC 9112 §9.3.2)."""

    def handler(request: Request) -> Response:
        return Response(200, [(b"Content-Type", b"text/plain")], request.path)

    server = await serve(handler, tls=transport)
    try:
        client = await connect(server)
        client.write(
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        received = await client.waitClosed()
        responses = parseResponses(received, [b"GET"] * 3, eof=True)
        assert [(r.status, r.body) for r in responses] == [
            (200, b"/a"),
            (200, b"/b"),
            (200, b"/c"),
        ]
        assert server.factory.stats.accepted == 1
        assertCleanClose(client, transport)
    finally:
        await finish(server)


@pytest_twisted.ensureDeferred
async def test_closeWithPipelinedBytesAnswersOnlyTheFirst(transport: str) -> None:
    """Checklist C23: one response, then FIN; the pipelined GET is never answered."""
    server = await serve(hello, tls=transport)
    try:
        client = await connect(server)
        client.write(
            b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        received = await client.waitClosed()
        responses = parseResponses(received, [b"GET", b"GET"], eof=True)
        assert len(responses) == 1
        assert responses[0].header(b"connection") == b"close"
        assert received.count(b"HTTP/1.1") == 1
        assertCleanClose(client, transport)
    finally:
        await finish(server)


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_lingeringCloseLetsTheClientReadTheResponse(transport: str) -> None:
    """
    Checklist C25: the server answers 413 early while the client keeps
    sending; the client must read the whole response, not a reset (over
    TLS: the response, then close_notify, so ConnectionDone).
    """

    def handler(request: Request) -> defer.Deferred[Response]:
        return request.readBody().addCallback(lambda body: Response(200, body=b"ok"))

    server = await serve(handler, tls=transport, maxBodyBytes=1024, lingerTimeout=2.0)
    try:
        client = await connect(server)
        client.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
        junk = b"j" * 65536

        def sendMore(count: int) -> None:
            if count and client.transport is not None and not client.closed.called:
                client.write(junk)
                reactor.callLater(0.005, sendMore, count - 1)  # type: ignore[attr-defined]

        sendMore(40)  # 2.5 MiB, still sending while the server closes
        received = await client.waitClosed()
        responses = parseResponses(received, [b"POST"], eof=True)
        assert [r.status for r in responses] == [413]
        assert responses[0].header(b"connection") == b"close"
        assertCleanClose(client, transport)
    finally:
        await finish(server)


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_idleTimeoutClosesRealSocket(transport: str) -> None:
    server = await serve(hello, tls=transport, idleTimeout=0.2)
    try:
        client = await connect(server)
        client.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        received = await client.waitClosed()
        assert received.startswith(b"HTTP/1.1 200 OK")
        assertCleanClose(client, transport)
    finally:
        await finish(server)
    assert server.factory.stats.closes["idle-timeout"] == 1


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_headTimeoutAnswers408(transport: str) -> None:
    """A head that never completes: 408 at requestHeadTimeout, then a close."""
    server = await serve(hello, tls=transport, requestHeadTimeout=0.3)
    try:
        client = await connect(server)
        started = reactor.seconds()  # type: ignore[attr-defined]
        client.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # no blank line
        received = await client.waitClosed()
        assert 0.2 < reactor.seconds() - started < 5  # type: ignore[attr-defined]
        responses = parseResponses(received, [b"GET"], eof=True)
        assert [r.status for r in responses] == [408]
        assertCleanClose(client, transport)
    finally:
        await finish(server)
    assert server.factory.stats.closes["header-timeout"] == 1


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_bodyTimeoutAnswers408(transport: str) -> None:
    """A body that stops arriving: 408 after bodyTimeout without progress."""

    def handler(request: Request) -> defer.Deferred[Response]:
        return request.readBody().addCallback(lambda body: Response(200, body=b"ok"))

    server = await serve(handler, tls=transport, bodyTimeout=0.3)
    try:
        client = await connect(server)
        client.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        received = await client.waitClosed()
        responses = parseResponses(received, [b"POST"], eof=True)
        assert [r.status for r in responses] == [408]
        assertCleanClose(client, transport)
    finally:
        await finish(server)
    assert server.factory.stats.closes["body-timeout"] == 1


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_sendTimeoutAbortsAClientThatNeverReads(transport: str) -> None:
    """
    A client that stops reading a large response: after sendTimeout without
    progress the server aborts (no close_notify can get through).
    """
    body = b"z" * (16 * 1024 * 1024)
    server = await serve(
        lambda request: Response(200, body=body), tls=transport, sendTimeout=0.3
    )
    try:
        client = await connect(server)
        client.transport.pauseProducing()  # type: ignore[union-attr]
        client.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await eventuallyDeferred(
            lambda: server.factory.stats.closes.get("send-timeout"), timeout=5
        )
        client.transport.resumeProducing()  # type: ignore[union-attr]
        received = await client.waitClosed()
        assert len(received) < len(body)
        assert client.reason is not None
        assert not client.reason.check(ConnectionDone)
    finally:
        await finish(server)


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_drainClosesIdleAndFinishesInFlight(transport: str) -> None:
    """
    A drain (the service stopping): an idle keep-alive connection is closed
    cleanly, a pending response completes with Connection: close.
    """
    release: defer.Deferred[Response] = defer.Deferred()
    started: defer.Deferred[None] = defer.Deferred()

    def handler(request: Request) -> Any:
        if request.path == b"/slow":
            started.callback(None)
            return release
        return hello(request)

    server = await serve(handler, tls=transport, drainGraceTimeout=0.1)
    try:
        idle = await connect(server)
        idle.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await idle.waitFor(b"x" * 130)
        busy = await connect(server)
        busy.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        await bounded(started)
        await bounded(defer.maybeDeferred(server.port.stopListening))
        drained = server.factory.drain(5.0)
        await idle.waitClosed()
        assertCleanClose(idle, transport)
        assert not drained.called
        release.callback(Response(200, body=b"done"))
        received = await busy.waitClosed()
        await bounded(drained)
        [response] = parseResponses(received, [b"GET"], eof=True)
        assert (response.status, response.body) == (200, b"done")
        assert response.header(b"connection") == b"close"
        assertCleanClose(busy, transport)
    finally:
        await finish(server)


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_largeFileBodyArrivesWholeThroughSendfileWithAPausingClient(
    tmp_path: Any, transport: str
) -> None:
    """
    A file body goes out with the kernel's sendfile on plain TCP (through
    TLS as ordinary writes); a client that stops reading for a while (the
    socket fills, the server waits for writability) still gets every byte,
    in order.
    """
    import hashlib
    import os

    data = os.urandom(8 * 1024 * 1024)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    server = await serve(
        lambda request: Response(200, body=open(path, "rb")), tls=transport
    )
    try:
        client = await connect(server)
        client.transport.pauseProducing()  # type: ignore[union-attr]
        client.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        pause: defer.Deferred[None] = defer.Deferred()
        reactor.callLater(0.3, pause.callback, None)  # type: ignore[attr-defined]
        await pause
        client.transport.resumeProducing()  # type: ignore[union-attr]
        received = await client.waitClosed()
        responses = parseResponses(received, [b"GET"], eof=True)
        assert responses[0].header(b"content-length") == b"%d" % len(data)
        assert (
            hashlib.sha256(responses[0].body).digest() == hashlib.sha256(data).digest()
        )
    finally:
        await finish(server)
