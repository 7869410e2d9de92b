"""
Behind the PROXY protocol (``--listen haproxy:tcp:...``), the client's
address is the one the proxy's header names, not the proxy's: in the
``Request``, in the access log record, for twisted.web's
``getClientAddress()``.  Twisted's wrapper knows it only once it has parsed
the header, after ``connectionMade``.  Real sockets on 127.0.0.1, bounded.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from connserver import ConnectionFactory, Request, Response, ServerConfig
from connserver._http.records import RequestRecord

from ._sockets import bounded, connect, connserverTimers

pytestmark = pytest.mark.slow

V1 = b"PROXY TCP4 203.0.113.7 127.0.0.1 56324 8080\r\n"
# The same in version 2: signature, PROXY command over TCP/IPv4, addresses.
V2 = (
    b"\r\n\r\n\x00\r\nQUIT\n"
    + b"\x21\x11\x00\x0c"
    + bytes([203, 0, 113, 7, 127, 0, 0, 1])
    + (56324).to_bytes(2, "big")
    + (8080).to_bytes(2, "big")
)


@pytest.mark.parametrize("header", [V1, V2], ids=["v1", "v2"])
@pytest_twisted.ensureDeferred
async def test_theProxiedClientsAddressIsSeen(header: bytes) -> None:
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    seen: list[tuple[str, str]] = []
    records: list[RequestRecord] = []

    def handler(request: Request) -> Response:
        peer: Any = request.peer
        host: Any = request.host
        seen.append((peer.host, f"{host.host}:{host.port}"))
        return Response(200, body=b"ok")

    factory = ConnectionFactory(handler, ServerConfig(), reactor=reactor)
    factory.requestObservers.append(records.append)
    endpoint = serverFromString(reactor, "haproxy:tcp:0:interface=127.0.0.1")
    port = await bounded(endpoint.listen(factory))
    try:
        client = await connect(port.getHost().port)
        client.transport.write(  # type: ignore[union-attr]
            header + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        await bounded(client.closed)
        assert client.received.startswith(b"HTTP/1.1 200 ")
        assert seen == [("203.0.113.7", "127.0.0.1:8080")]
        assert [record.peerHost for record in records] == ["203.0.113.7"]
    finally:
        await bounded(defer.maybeDeferred(port.stopListening))
        await bounded(factory.drain(2.0))
    assert factory.stats.active == 0
    assert connserverTimers() == []
