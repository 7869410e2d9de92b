"""
Per-request CPU cost of the request path, without sockets.

Feeds typical keep-alive GETs straight into connserver's protocol and into
twisted.web's HTTPChannel (each on a minimal in-memory transport) and
reports microseconds of CPU per request.  It isolates the Python cost of
each server from the reactor and the kernel, so it is steady on a busy
machine; the wrk figures of bench_request_path.py are the ones that count.

``--asgi`` measures connserver's ``ASGIHandler`` instead (bench_asgi.py's
raw hello app, on an asyncio loop): 25 connections get one minimal GET each
per loop pass, as a loaded server reads them, and the figure is CPU per
request including the loop's passes.  Without the asyncio reactor the
in-memory transport answers at the round's end.

    python bench/bench_inprocess.py [--requests 20000] [--asgi]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource
from twisted.web.server import Site

from connserver import ConnectionFactory, Response, ServerConfig

BODY = b"x" * 130
HEADERS = [(b"Content-Type", b"text/plain")]
REQUEST = (
    b"GET /index.html HTTP/1.1\r\n"
    b"Host: 127.0.0.1:8080\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Connection: keep-alive\r\n"
    b"\r\n"
)
PEER = IPv4Address("TCP", "127.0.0.1", 40000)


class NullTransport(StringTransport):
    """Discards writes so that memory stays flat over many requests."""

    def write(self, data: bytes) -> None:
        pass

    def writeSequence(self, data: object) -> None:
        pass


def connserverCost(requests: int) -> float:
    def handler(request: object) -> Response:
        return Response(200, HEADERS, BODY)

    factory = ConnectionFactory(
        handler, ServerConfig(maxRequestsPerConnection=None), reactor=Clock()
    )
    protocol = factory.buildProtocol(PEER)
    assert protocol is not None
    protocol.makeConnection(NullTransport(peerAddress=PEER))
    data = protocol.dataReceived
    start = time.process_time()
    for _ in range(requests):
        data(REQUEST)
    return (time.process_time() - start) / requests * 1e6


def twistedWebCost(requests: int) -> float:
    class Hello(Resource):
        isLeaf = True

        def render_GET(self, request: object) -> bytes:
            request.setHeader(b"Content-Type", b"text/plain")  # type: ignore[attr-defined]
            return BODY

    site = Site(Hello(), reactor=Clock())
    channel = site.buildProtocol(PEER)
    assert channel is not None
    channel.makeConnection(NullTransport(peerAddress=PEER))
    data = channel.dataReceived
    start = time.process_time()
    for _ in range(requests):
        data(REQUEST)
    return (time.process_time() - start) / requests * 1e6


ASGI_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"130")],
}
ASGI_END = {"type": "http.response.body", "body": BODY}
MINIMAL = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"


async def helloApp(scope: Any, receive: Any, send: Any) -> None:
    await send(ASGI_START)
    await send(ASGI_END)


class CountingTransport(NullTransport):
    """Counts the writes, to check that every request was answered."""

    writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1


def asgiCost(requests: int, connections: int = 25) -> float:
    from connserver import ASGIHandler

    factory = ConnectionFactory(
        ASGIHandler(helloApp),
        ServerConfig(maxRequestsPerConnection=None),
        reactor=Clock(),
    )
    transports = []
    feeds = []
    for _ in range(connections):
        protocol = factory.buildProtocol(PEER)
        assert protocol is not None
        transport = CountingTransport(
            peerAddress=PEER, hostAddress=IPv4Address("TCP", "127.0.0.1", 8080)
        )
        protocol.makeConnection(transport)
        transports.append(transport)
        feeds.append(protocol.dataReceived)
    passes = max(1, requests // connections)

    def feed() -> None:
        # A loop callback, as the reactor's reads are: no task is current.
        for data in feeds:
            data(MINIMAL)

    async def drive() -> float:
        loop = asyncio.get_running_loop()
        start = time.process_time()
        for _ in range(passes):
            loop.call_soon(feed)
            # The feed's pass, then the pass the apps' tasks end in.
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        return time.process_time() - start

    elapsed = asyncio.run(drive())
    answered = sum(t.writes for t in transports)
    assert answered == passes * connections, (answered, passes * connections)
    return elapsed / (passes * connections) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--asgi", action="store_true", help="ASGIHandler's hello")
    args = parser.parse_args()
    if args.asgi:
        cost = min(asgiCost(args.requests) for _ in range(3))
        print(f"connserver ASGI hello: {cost:6.1f} us CPU per request")
        return
    cs = min(connserverCost(args.requests) for _ in range(3))
    tw = min(twistedWebCost(args.requests) for _ in range(3))
    print(f"connserver:  {cs:6.1f} us CPU per request")
    print(f"twisted.web: {tw:6.1f} us CPU per request")
    print(f"ratio: {tw / cs:.2f}x less CPU per request")


if __name__ == "__main__":
    main()
