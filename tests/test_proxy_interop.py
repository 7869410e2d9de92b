"""
connserver behind the real HAProxy (2.6, PROXY protocol v2, ``http-reuse
always``) and nginx (an upstream ``keepalive`` pool, HTTP/1.1,
``Connection: ""``, ``X-Forwarded-For`` or ``Forwarded``), on loopback:

* the proxies reuse their connections to connserver (the access log's
  ``req=`` goes above 1);
* the address logged and given to the handler is the real client's: the
  client binds 127.0.0.5, the proxies connect from 127.0.0.1; the client
  also writes every forwarding field itself (a spoofed address, garbage on
  the left, ``X-Forwarded-Proto: https``), and none of it counts;
* responses pass through unchanged (body and end-to-end fields).

connserver runs in-process on the test's reactor; the proxies run in the
foreground from a temporary directory and are stopped in cleanup.  Skipped,
with the reason, only where the program is not installed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint

from connserver import Request, Response
from connserver._http.records import RequestRecord
from connserver._running.accesslog import formatCombined

from ._proxies import HAPROXY, NGINX, Proxy, proxies, startProxy
from ._sockets import RawClient, Server, bounded, finish, serve

__all__ = ["proxies"]  # a fixture, used by name

pytestmark = pytest.mark.slow

CLIENT = "127.0.0.5"
# A body large enough to cross several reads and writes on each hop.
BODY = hashlib.sha256(b"connserver").digest() * 8192  # 256 KiB
# What a client may write itself, in both families: an address, garbage
# (to the left of what the proxy appends), an unterminated quote and a
# scheme.  The proxy passes on the family it does not write untouched.
SPOOFED = (
    b'Forwarded: for=6.6.6.6;proto=https, for="junk\r\n'
    b"X-Forwarded-For: 6.6.6.6, garbage\r\n"
    b"X-Forwarded-Proto: https\r\n"
)
END_TO_END = {
    b"content-type": b"application/octet-stream",
    b"etag": b'"v1-abc"',
    b"cache-control": b"max-age=60, must-revalidate",
    b"x-connserver-check": b'unchanged; a=1, b="two"',
    b"last-modified": b"Tue, 15 Nov 1994 12:45:26 GMT",
}

needHAProxy = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")
needNginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed")


class Seen:
    """What the handler saw, and the access log's records."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str]] = []
        self.records: list[RequestRecord] = []

    def handler(self, request: Request) -> Response:
        client: Any = request.clientAddress
        peer: Any = request.peer
        self.requests.append((client.host, request.scheme, peer.host))
        body = BODY if request.path.endswith(b"/big") else b"small"
        return Response(200, headers=list(END_TO_END.items()), body=body)


async def fetchAll(
    port: int, paths: list[bytes], headers: bytes = b"", ipv6: bool = False
) -> list[Any]:
    """
    ``paths`` requested one after another on one keep-alive connection
    from 127.0.0.5 (from ``::1`` to ``[::1]`` with ``ipv6``); the parsed
    responses.
    """
    from twisted.internet import reactor

    client = RawClient()
    endpoint: Any
    if ipv6:
        endpoint = TCP6ClientEndpoint(reactor, "::1", port, timeout=5)
    else:
        endpoint = TCP4ClientEndpoint(
            reactor, "127.0.0.1", port, timeout=5, bindAddress=(CLIENT, 0)
        )
    await bounded(endpoint.connect(protocol.Factory.forProtocol(lambda: client)))
    try:
        for count, path in enumerate(paths, 1):
            client.write(
                b"GET "
                + path
                + b" HTTP/1.1\r\nHost: example.test\r\n"
                + headers
                + b"\r\n"
            )
            responses = await client.waitResponses(count)
        return responses
    finally:
        client.close()
        await client.waitClosed()


def checkPassedThrough(responses: list[Any], paths: list[bytes]) -> None:
    for response, path in zip(responses, paths, strict=True):
        assert response.status == 200
        assert response.body == (BODY if path.endswith(b"/big") else b"small")
        for name, value in END_TO_END.items():
            assert response.header(name) == value, name


async def runThrough(
    kind: str,
    tmp: Path,
    proxies: list[Proxy],
    server: Server,
    seen: Seen,
    paths: tuple[bytes, ...] = (b"/a/big", b"/a/small", b"/xff/big", b"/xff/small"),
    **options: Any,
) -> list[Any]:
    proxy = startProxy(kind, tmp / kind, server.portNumber, **options)
    proxies.append(proxy)
    # Three client connections one after the other: the proxy's pool
    # carries the requests of the later ones on the connection it keeps.
    for _ in range(3):
        responses = await fetchAll(proxy.port, list(paths), SPOOFED)
        checkPassedThrough(responses, list(paths))
    assert len(seen.requests) == 3 * len(paths)
    return responses


@needHAProxy
@pytest_twisted.ensureDeferred
async def test_haproxySendProxyV2WithReuse(
    tmp_path: Path, proxies: list[Proxy]
) -> None:
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    from connserver import ConnectionFactory, ServerConfig

    seen = Seen()
    factory = ConnectionFactory(seen.handler, ServerConfig(), reactor=reactor)
    factory.requestObservers.append(seen.records.append)
    endpoint = serverFromString(reactor, "haproxy:tcp:0:interface=127.0.0.1")
    port = await bounded(endpoint.listen(factory))
    server = Server(port, factory, None)
    try:
        await runThrough("haproxy", tmp_path, proxies, server, seen)
        # The PROXY v2 header names the client; the forwarding field the
        # client wrote itself counts for nothing (no --trusted-proxies).
        assert {client for client, _, _ in seen.requests} == {CLIENT}
        assert {peer for _, _, peer in seen.requests} == {CLIENT}
        lines = [formatCombined(record) for record in seen.records]
        assert all(line.startswith(CLIENT + " - - [") for line in lines), lines
        assert max(record.requestIndex for record in seen.records) > 1, lines
        assert any(" req=2 " in line for line in lines)
    finally:
        for proxy in proxies:
            proxy.stop()
        await finish(server)


@needHAProxy
@pytest_twisted.ensureDeferred
async def test_haproxyForwardForSharesConnectionsBetweenClients(
    tmp_path: Path, proxies: list[Proxy]
) -> None:
    """
    HAProxy reuses a PROXY-protocol connection only for the client it was
    opened for (its PROXY header names that client); with ``option
    forwardfor`` and ``--trusted-proxies`` instead, the pool serves every
    client and the address still reaches the log.
    """
    seen = Seen()
    server = await serve(seen.handler, trustedProxies="127.0.0.1")
    server.factory.requestObservers.append(seen.records.append)
    try:
        await runThrough(
            "haproxy", tmp_path, proxies, server, seen, proxyProtocol=False
        )
        assert {client for client, _, _ in seen.requests} == {CLIENT}
        # HAProxy overwrote the client's X-Forwarded-Proto: https.
        assert {scheme for _, scheme, _ in seen.requests} == {"http"}
        assert {peer for _, _, peer in seen.requests} == {"127.0.0.1"}
        lines = [formatCombined(record) for record in seen.records]
        assert all(line.startswith(CLIENT + " - - [") for line in lines), lines
        assert max(record.requestIndex for record in seen.records) > 4, lines
    finally:
        for proxy in proxies:
            proxy.stop()
        await finish(server)


# Each --forwarded-header with the nginx location that writes that family
# (and passes the other on as the client wrote it).
FAMILIES = [
    pytest.param("x-forwarded-for", (b"/xff/big", b"/xff/small"), id="xff"),
    pytest.param("forwarded", (b"/a/big", b"/a/small"), id="forwarded"),
]


@needNginx
@pytest.mark.parametrize("family, paths", FAMILIES)
@pytest_twisted.ensureDeferred
async def test_nginxKeepalivePoolWithForwardedFields(
    tmp_path: Path, proxies: list[Proxy], family: str, paths: tuple[bytes, ...]
) -> None:
    seen = Seen()
    # Only nginx's own address is trusted: the client's 127.0.0.5 is not,
    # so what it wrote to its left never counts, nor the other family.
    server = await serve(
        seen.handler, trustedProxies="127.0.0.1", forwardedHeader=family
    )
    server.factory.requestObservers.append(seen.records.append)
    try:
        await runThrough("nginx", tmp_path, proxies, server, seen, paths)
        assert {client for client, _, _ in seen.requests} == {CLIENT}
        assert {scheme for _, scheme, _ in seen.requests} == {"http"}
        # The connections come from nginx.
        assert {peer for _, _, peer in seen.requests} == {"127.0.0.1"}
        lines = [formatCombined(record) for record in seen.records]
        assert all(line.startswith(CLIENT + " - - [") for line in lines), lines
        # One pooled connection carried requests of several clients.
        assert max(record.requestIndex for record in seen.records) > 4, lines
        assert len({record.connectionId for record in seen.records}) < 3, lines
    finally:
        for proxy in proxies:
            proxy.stop()
        await finish(server)


@needNginx
@pytest_twisted.ensureDeferred
async def test_nginxFromAnUntrustedPeerFieldsAreIgnored(
    tmp_path: Path, proxies: list[Proxy]
) -> None:
    seen = Seen()
    server = await serve(seen.handler, trustedProxies="10.0.0.0/8")
    server.factory.requestObservers.append(seen.records.append)
    try:
        proxy = startProxy("nginx", tmp_path / "nginx", server.portNumber)
        proxies.append(proxy)
        await fetchAll(proxy.port, [b"/xff/small", b"/small"])
        assert [client for client, _, _ in seen.requests] == ["127.0.0.1"] * 2
        assert [record.peerHost for record in seen.records] == ["127.0.0.1"] * 2
    finally:
        for proxy in proxies:
            proxy.stop()
        await finish(server)


@needNginx
@pytest.mark.parametrize("family, paths", FAMILIES)
@pytest_twisted.ensureDeferred
async def test_nginxIPv6Client(
    tmp_path: Path, proxies: list[Proxy], family: str, paths: tuple[bytes, ...]
) -> None:
    """An IPv6 client: ``for="[::1]"`` (RFC 7239 §6) or ``X-Forwarded-For: ::1``."""
    seen = Seen()
    server = await serve(
        seen.handler, trustedProxies="127.0.0.1", forwardedHeader=family
    )
    server.factory.requestObservers.append(seen.records.append)
    try:
        proxy = startProxy("nginx", tmp_path / "nginx", server.portNumber, ipv6=True)
        proxies.append(proxy)
        await fetchAll(proxy.port, list(paths[1:]), SPOOFED, ipv6=True)
        assert seen.requests == [("::1", "http", "127.0.0.1")], proxy.log()
        assert [record.peerHost for record in seen.records] == ["::1"]
    finally:
        for proxy in proxies:
            proxy.stop()
        await finish(server)


@needHAProxy
@pytest.mark.parametrize("check", ["http", "tcp"])
@pytest_twisted.ensureDeferred
async def test_haproxyHealthCheckLeavesNoPeerResetLines(
    tmp_path: Path, proxies: list[Proxy], check: str
) -> None:
    """
    docs/deployment.md's HAProxy health check, ``option httpchk GET
    /status`` on the status page, writes one request line per check and no
    ``peer-reset`` close line; the bare TCP ``check`` it replaced writes a
    ``peer-reset`` line for each (HAProxy closes a check with a reset).
    """
    import io

    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    from connserver import (
        AccessLog,
        ConnectionFactory,
        PrefixMount,
        ServerConfig,
        StatusHandler,
    )

    from ._helpers import eventuallyDeferred

    seen = Seen()
    factory = ConnectionFactory(seen.handler, ServerConfig(), reactor=reactor)
    factory.handler = PrefixMount(
        seen.handler, {"/status": StatusHandler(factory, reactor=reactor)}
    )
    out = io.StringIO()
    log = AccessLog(out, reactor=reactor, closes="all")
    factory.requestObservers.append(log)
    factory.closeObservers.append(log)
    endpoint = serverFromString(reactor, "haproxy:tcp:0:interface=127.0.0.1")
    port = await bounded(endpoint.listen(factory))
    server = Server(port, factory, None)
    try:
        proxy = startProxy(
            "haproxy", tmp_path / "haproxy", server.portNumber, healthCheck=check
        )
        proxies.append(proxy)

        def checked() -> int:
            log.flush()
            if check == "http":
                return out.getvalue().count('"GET /status HTTP/1.0" 200 ')
            return out.getvalue().count("close=peer-reset")

        await eventuallyDeferred(lambda: checked() >= 3, timeout=10, interval=0.05)
        proxy.stop()
        log.flush()
        text = out.getvalue()
        if check == "http":
            assert "peer-reset" not in text, text
            assert '"-" - 0 ' not in text, "no close line at all"
    finally:
        for proxy in proxies:
            proxy.stop()
        await finish(server)
