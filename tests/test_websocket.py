"""
WebSockets on connserver with real clients (issue 22), on 127.0.0.1 port 0,
the real reactor: autobahn's echo protocol hosted three ways
(``WebSocketHandler``, autobahn's ``WebSocketResource`` through
``asHandler``, a Klein route returning a ``WebSocketResource``), reached by
the ``websockets`` library's client (in a thread) and autobahn's own Twisted
client, over TCP and TLS (ALPN ``h2, http/1.1`` offered as browsers do).
Also raw clients for what a library hides: bytes in the same packet as the
handshake, a client that resets mid-frame, one that ignores the drain's
close frame; a drain; three hundred open WebSockets and ``maxConnections``;
the close record; what is not an upgrade.  Every wait is bounded and wakes
on an event, except the drain deadline's (marked slow).
"""

from __future__ import annotations

import io
import json
import re
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, threads
from twisted.internet.task import Clock

from connserver import AccessLog, ConnectionRecord, ConnectionServerService

from ._harness import parseResponses
from ._helpers import realReactor
from ._sockets import TIMEOUT, TRANSPORTS, Server, bounded, connect, finish, serve
from ._websockets import (
    ACCEPT,
    HOSTS,
    autobahnConnect,
    autobahnEcho,
    clientContext,
    clientFrame,
    echoFactory,
    handshake,
    host,
    serverFrame,
    websocketsEcho,
)

MESSAGES = ("hello", b"\x00\x01\xfe\xff", "é" * 300)


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=HOSTS)
def hostKind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Closes:
    """
    The server's close records, and a wait for ``count`` of them (woken on
    the next turn: a record is written before its connection unregisters).
    """

    def __init__(self, server: Server) -> None:
        self.records: list[ConnectionRecord] = []
        self._waiting: list[tuple[int, defer.Deferred[None]]] = []
        server.factory.closeObservers.append(self.observe)

    def observe(self, record: ConnectionRecord) -> None:
        self.records.append(record)
        for entry in list(self._waiting):
            if len(self.records) >= entry[0]:
                self._waiting.remove(entry)
                realReactor().callLater(0, entry[1].callback, None)

    async def wait(self, count: int = 1) -> list[ConnectionRecord]:
        if len(self.records) < count:
            d: defer.Deferred[None] = defer.Deferred()
            self._waiting.append((count, d))
            await bounded(d)
        return self.records


def uri(server: Server, path: str = "/ws") -> str:
    scheme = "wss" if server.tls is not None else "ws"
    return f"{scheme}://localhost:{server.portNumber}{path}"


async def inThread(function: Any, *args: Any) -> Any:
    return await bounded(threads.deferToThread(function, *args), TIMEOUT + 5)


# -- real clients, three hosts, TCP and TLS -----------------------------------


@pytest_twisted.ensureDeferred
async def test_websocketsClientEcho(hostKind: str, transport: str) -> None:
    server = await serve(host(hostKind, echoFactory()), tls=transport)
    closes = Closes(server)
    try:
        seen = await inThread(websocketsEcho, uri(server), MESSAGES)
        assert seen["status"] == 101
        assert seen["echoes"] == list(MESSAGES)
        assert seen["closeCode"] == 1000
        # Over TLS the client offered h2 first; the server chose http/1.1.
        assert seen["alpn"] == ("http/1.1" if transport == "tls" else None)
        [record] = await closes.wait()
        assert record.closeReason == "upgraded"
        assert record.secure is (transport == "tls")
    finally:
        await finish(server)


@pytest_twisted.ensureDeferred
async def test_autobahnClientEcho(hostKind: str, transport: str) -> None:
    server = await serve(host(hostKind, echoFactory()), tls=transport)
    closes = Closes(server)
    try:
        seen = await autobahnEcho(
            server.portNumber, tls=transport == "tls", messages=MESSAGES
        )
        assert seen["echoes"] == list(MESSAGES)
        assert (seen["clean"], seen["closeCode"]) == (True, 1000)
        assert seen["alpn"] == (b"http/1.1" if transport == "tls" else None)
        [record] = await closes.wait()
        assert record.closeReason == "upgraded"
    finally:
        await finish(server)


def closedByTheServer(uriText: str) -> dict[str, Any]:
    """A websockets client that asks the server to close, and waits for it."""
    from websockets.exceptions import ConnectionClosedOK
    from websockets.sync.client import connect as wsConnect

    secure = uriText.startswith("wss:")
    with wsConnect(
        uriText,
        ssl=clientContext() if secure else None,
        open_timeout=TIMEOUT,
        close_timeout=TIMEOUT,
    ) as ws:
        ws.send("bye")
        try:
            ws.recv(timeout=TIMEOUT)
        except ConnectionClosedOK as closed:
            assert closed.rcvd is not None
            return {"code": closed.rcvd.code, "reason": closed.rcvd.reason}
    raise AssertionError("a message instead of the close")


@pytest_twisted.ensureDeferred
async def test_aCloseByTheServerIsRecordedAsUpgraded(transport: str) -> None:
    """
    autobahn closes (``sendClose``), the client answers, autobahn aborts
    the TCP connection (as a server does once the closing handshake is
    done) and, over TLS, the client closes without close_notify: the close
    is still the WebSocket's own, ``upgraded``, not ``aborted`` or a reset.
    """
    server = await serve(host("handler", echoFactory()), tls=transport)
    closes = Closes(server)
    try:
        seen = await inThread(closedByTheServer, uri(server))
        assert seen == {"code": 1000, "reason": "bye"}
        [record] = await closes.wait()
        assert record.closeReason == "upgraded"
    finally:
        await finish(server)


# -- raw clients ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_aFrameInTheSamePacketAsTheHandshakeIsEchoed(
    hostKind: str, transport: str
) -> None:
    """The frame that followed the request head reaches the new protocol."""
    server = await serve(host(hostKind, echoFactory()), tls=transport)
    try:
        client = await connect(server)
        client.write(handshake() + clientFrame(b"early"))
        received = await client.waitFor(serverFrame(b"early"))
        head, _, rest = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        assert b"\r\nSec-WebSocket-Accept: " + ACCEPT + b"\r\n" in head + b"\r\n"
        assert rest == serverFrame(b"early")
        client.close()
        await client.waitClosed()
    finally:
        await finish(server)


@pytest_twisted.ensureDeferred
async def test_aClientThatResetsMidFrameLeavesNothing(
    hostKind: str, transport: str, logFailures: list[Any]
) -> None:
    server = await serve(host(hostKind, echoFactory()), tls=transport)
    closes = Closes(server)
    try:
        client = await connect(server)
        client.write(handshake() + clientFrame(b"one"))
        await client.waitFor(serverFrame(b"one"))
        # Half a frame: its head says 100 bytes, 10 follow.
        client.write(clientFrame(b"x" * 100)[:16])
        assert client.transport is not None
        # SO_LINGER 0: the close is a reset (under TLS, of the TCP socket).
        tcp: Any = client.transport
        if transport == "tls":
            tcp = tcp.transport
        tcp.getHandle().setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        tcp.abortConnection()
        [record] = await closes.wait()
        assert record.closeReason == "peer-reset"
        assert server.factory.connections() == []
        assert server.factory.stats.closes["peer-reset"] == 1
        assert logFailures == []
    finally:
        await finish(server)


@pytest_twisted.ensureDeferred
async def test_aPlainRequestToAWebSocketHandlerIs426() -> None:
    server = await serve(host("handler", echoFactory()))
    try:
        client = await connect(server)
        client.write(
            b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n"
            # HTTP/1.0 cannot switch (RFC 9110 §7.8): its Upgrade is ignored.
            b"GET /ws HTTP/1.0\r\nConnection: keep-alive, upgrade\r\n"
            b"Upgrade: websocket\r\nSec-WebSocket-Key: " + ACCEPT + b"\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        responses = await client.waitResponses(2)
        for response in responses:
            assert response.status == 426
            assert response.header(b"upgrade") == b"websocket"
        assert server.factory.stats.byState().get("upgraded", 0) == 0
        client.close()
        await client.waitClosed()
    finally:
        await finish(server)


@pytest_twisted.ensureDeferred
async def test_h2cGetsAnOrdinaryResponse(hostKind: str) -> None:
    """``Upgrade: h2c`` is never switched: HTTP/1.1 goes on (RFC 9113 §3.1)."""
    server = await serve(host(hostKind, echoFactory()))
    try:
        client = await connect(server)
        client.write(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        responses = await client.waitResponses(2)
        assert [(r.status, r.body) for r in responses] == [(200, b"hello\n")] * 2
        assert b" 101 " not in client.data
        client.close()
        await client.waitClosed()
    finally:
        await finish(server)


# -- the close record -------------------------------------------------------------


@pytest.mark.parametrize("hostKind", HOSTS)
@pytest_twisted.ensureDeferred
async def test_theCloseRecord(hostKind: str) -> None:
    """
    The 101's request line, then one close line: ``close=upgraded`` with
    the bytes each way after the request head (``out`` includes the 101
    that autobahn wrote itself), in both formats.
    """
    server = await serve(host(hostKind, echoFactory()))
    clock = Clock()
    combined, jsonLines = io.StringIO(), io.StringIO()
    logs = [
        AccessLog(combined, "combined", reactor=clock),
        AccessLog(jsonLines, "json", reactor=clock),
    ]
    for log in logs:
        server.factory.requestObservers.append(log)
        server.factory.closeObservers.append(log)
    closes = Closes(server)
    try:
        client = await connect(server)
        sent = handshake() + clientFrame(b"hello")
        client.write(sent)
        await client.waitFor(serverFrame(b"hello"))
        close = clientFrame(struct.pack("!H", 1000), opcode=8)
        client.write(close)
        sent += close
        received = await client.waitClosed()
        # The server answered the close with its own (code 1000) and closed.
        assert received.endswith(b"\x88\x02\x03\xe8")
        await closes.wait()
        for log in logs:
            log.flush()
        lines = combined.getvalue().splitlines()
        assert len(lines) == 2, lines
        assert '"GET /ws HTTP/1.1" 101 ' in lines[0]
        inBytes = len(sent) - len(handshake())
        assert lines[1].endswith(f"in={inBytes} out={len(received)} close=upgraded")
        records = [json.loads(line) for line in jsonLines.getvalue().splitlines()]
        assert records[0]["status"] == 101
        assert (records[1]["close"], records[1]["in"], records[1]["out"]) == (
            "upgraded",
            inBytes,
            len(received),
        )
    finally:
        await finish(server)


# -- the drain -------------------------------------------------------------------


def openAndWaitForTheClose(uriText: str, opened: Any) -> dict[str, Any]:
    """A websockets client that echoes once, says so, then waits to be closed."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect as wsConnect

    with wsConnect(uriText, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
        ws.send("before the drain")
        echo = ws.recv(timeout=TIMEOUT)
        opened()
        try:
            ws.recv(timeout=TIMEOUT)
        except ConnectionClosed as closed:
            assert closed.rcvd is not None
            return {
                "echo": echo,
                "code": closed.rcvd.code,
                "reason": closed.rcvd.reason,
            }
    raise AssertionError("a message instead of the close")


@pytest_twisted.ensureDeferred
async def test_aDrainSendsGoingAwayAndCompletes() -> None:
    """
    ``factory.drain`` with WebSockets open: each client gets a close frame
    1001 (Going Away), answers it, and the drain completes.
    """
    server = await serve(host("handler", echoFactory()))
    closes = Closes(server)
    reactor = realReactor()
    try:
        openings = [defer.Deferred() for _ in range(2)]
        clients = [
            threads.deferToThread(
                openAndWaitForTheClose,
                uri(server),
                lambda d=d: reactor.callFromThread(d.callback, None),
            )
            for d in openings
        ]
        autobahnClient = await autobahnConnect(server.portNumber, stayOpen=True)
        await bounded(defer.gatherResults(openings))
        assert server.factory.stats.byState()["upgraded"] == 3
        await bounded(server.factory.drain(TIMEOUT))
        for result in await bounded(defer.gatherResults(clients)):
            assert result["echo"] == "before the drain"
            assert result["code"] == 1001
        wasClean, code, _ = await bounded(autobahnClient.closed)
        assert (wasClean, code) == (True, 1001)
        await closes.wait(3)
        assert [r.closeReason for r in closes.records] == ["draining"] * 3
        assert server.factory.connections() == []
    finally:
        await finish(server)


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_theServiceDrainAbortsAClientThatIgnoresTheClose() -> None:
    """
    ``ConnectionServerService.stopService``: a client that answers the
    close frame is gone at once, one that ignores it (a raw socket) is
    aborted at the drain deadline, and the stop completes.  autobahn's own
    close-handshake timeout is set longer than the deadline, so that the
    abort is connserver's.
    """
    server = await serve(host("handler", echoFactory(closeHandshakeTimeout=60)))
    closes = Closes(server)
    service = ConnectionServerService(server.factory, drainTimeout=0.5)
    service.startService()
    try:
        polite = await autobahnConnect(server.portNumber, stayOpen=True)
        deaf = await connect(server)
        deaf.write(handshake())
        await deaf.waitFor(b"\r\n\r\n")
        await bounded(defer.maybeDeferred(server.port.stopListening))
        await bounded(defer.maybeDeferred(service.stopService))
        assert (await bounded(polite.closed))[:2] == (True, 1001)
        received = await deaf.waitClosed()
        # The close frame: code 1001 and autobahn's reason.
        assert b"\x88" in received and b"\x03\xe9server shutting down" in received
        reasons = sorted(r.closeReason for r in await closes.wait(2))
        assert reasons == ["drain-timeout", "draining"]
        assert server.factory.connections() == []
    finally:
        await finish(server)


# -- many at once ------------------------------------------------------------------

COUNT = 300


@pytest.fixture
def manyDescriptors() -> Iterator[None]:
    """Room for ``COUNT`` clients and their server ends (skip if the limit is low)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 3 * COUNT:
        if hard != resource.RLIM_INFINITY and hard < 3 * COUNT:
            pytest.skip(f"the descriptor limit ({hard}) is below {3 * COUNT}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (3 * COUNT, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest_twisted.ensureDeferred
async def test_threeHundredOpenWebSocketsCountAndHoldTheirSlots(
    manyDescriptors: None,
) -> None:
    server = await serve(host("handler", echoFactory()), maxConnections=COUNT)
    closes = Closes(server)
    clients = []
    try:
        # In batches, so that the listen backlog never overflows (a dropped
        # SYN is retried a second later).
        for _ in range(COUNT // 50):
            clients += await bounded(
                defer.gatherResults(
                    [
                        defer.ensureDeferred(
                            autobahnConnect(
                                server.portNumber,
                                messages=["still here"],
                                stayOpen=True,
                            )
                        )
                        for _ in range(50)
                    ]
                )
            )
        stats = server.factory.stats
        assert stats.byState()["upgraded"] == COUNT
        assert stats.active == COUNT
        # One more connection: over maxConnections, and nothing to shed.
        extra = await connect(server)
        received = await extra.waitClosed()
        [response] = parseResponses(received, eof=True)
        assert response.status == 503
        assert stats.byState()["upgraded"] == COUNT
        for client in clients:
            client.sendClose(1000)
        for client in clients:
            wasClean, code, echoes = await bounded(client.closed)
            assert (wasClean, code, echoes) == (True, 1000, ["still here"])
        await closes.wait(COUNT + 1)
        assert sorted({r.closeReason for r in closes.records}) == [
            "refused",
            "upgraded",
        ]
        assert server.factory.connections() == []
    finally:
        await finish(server)


# -- docs/web.md's snippets ------------------------------------------------------


def webDocSnippets() -> dict[str, Any]:
    """Run the Python blocks of docs/web.md's WebSockets section, in order."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "web.md").read_text()
    section = text.split("\n## WebSockets\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 3, blocks
    namespace: dict[str, Any] = {}
    for block in blocks:
        exec(compile(block, "docs/web.md", "exec"), namespace)
    return namespace


@pytest_twisted.ensureDeferred
async def test_theWebDocSnippetsRun() -> None:
    snippets = webDocSnippets()
    servers = [
        await serve(snippets["wsHandler"]),
        await serve(snippets["resourceHandler"]),
        await serve(snippets["shout"]),
    ]
    try:
        for server in servers[:2]:
            seen = await inThread(websocketsEcho, uri(server), MESSAGES)
            assert seen["echoes"] == list(MESSAGES)
        shout = servers[2]
        client = await connect(shout)
        client.write(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n"
            b"Upgrade: shout\r\n\r\nhello"
        )
        received = await client.waitFor(b"HELLO")
        assert received.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        assert b"\r\nUpgrade: shout\r\n" in received
        plain = await connect(shout, request=b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        [response] = await plain.waitResponses(1)
        assert (response.status, response.header(b"upgrade")) == (426, b"shout")
        plain.close()
        await plain.waitClosed()
        # The drain asks Shout to end itself (connectionDraining).
        await bounded(shout.factory.drain(TIMEOUT))
        assert (await client.waitClosed()).endswith(b"HELLObye\n")
    finally:
        await finish(*servers)
