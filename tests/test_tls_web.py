"""
The twisted.web adapter (``connserver._handlers.web.asHandler``) over real sockets,
plain TCP and TLS with an ALPN-offering client alike: a ``Resource`` and a
Klein app see ``isSecure()`` as the transport says, keep-alive and a POST
body work, and the connection closes cleanly (close_notify over TLS).
Only ``asHandler``'s public behaviour is used.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from klein import Klein
from twisted.internet.error import ConnectionDone
from twisted.web.resource import Resource
from twisted.web.server import Request as WebRequest

from connserver._handlers.web import asHandler

from ._harness import parseResponses
from ._sockets import TRANSPORTS, connect, finish, serve


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Secure(Resource):
    isLeaf = True

    def render_GET(self, request: WebRequest) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        return b"secure=%d path=%s" % (request.isSecure(), request.path)


def kleinApp() -> Klein:
    app = Klein()

    @app.route("/")
    def home(request: WebRequest) -> str:
        return f"secure={int(request.isSecure())}"

    @app.route("/echo", methods=["POST"])
    def echo(request: WebRequest) -> bytes:
        assert request.content is not None
        request.setHeader("Content-Type", "application/json")
        return json.dumps({"got": json.loads(request.content.read())}).encode()

    return app


@pytest_twisted.ensureDeferred
async def test_resourceOverTCPAndTLS(transport: str) -> None:
    server = await serve(asHandler(Secure()), tls=transport)
    secure = int(transport == "tls")
    try:
        client = await connect(server)
        client.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        await client.waitFor(b"path=/a")
        client.write(b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = await client.waitClosed()
        responses = parseResponses(received, [b"GET", b"GET"], eof=True)
        assert [(r.status, r.body) for r in responses] == [
            (200, b"secure=%d path=/a" % secure),
            (200, b"secure=%d path=/b" % secure),
        ]
        assert server.factory.stats.accepted == 1
        if transport == "tls":
            assert client.reason is not None and client.reason.check(ConnectionDone)
    finally:
        await finish(server)


@pytest_twisted.ensureDeferred
async def test_kleinOverTCPAndTLS(transport: str) -> None:
    server = await serve(asHandler(kleinApp()), tls=transport)
    try:
        client = await connect(server)
        body = b'{"a": [1, 2]}'
        client.write(
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
        received = await client.waitClosed()
        responses = parseResponses(received, [b"GET", b"POST"], eof=True)
        assert [r.status for r in responses] == [200, 200]
        assert responses[0].body == b"secure=%d" % (transport == "tls")
        assert json.loads(responses[1].body) == {"got": {"a": [1, 2]}}
        if transport == "tls":
            assert client.reason is not None and client.reason.check(ConnectionDone)
    finally:
        await finish(server)
