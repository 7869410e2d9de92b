"""
A Klein app served by ``WebResourceHandler``: routes, a POST body, route
variables, an asynchronous route, errors, and the disconnect path.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted
from klein import Klein
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.server import Request as WebRequest

from connserver._connection.message import Request, Response
from connserver._handlers.web import WebResourceHandler, asHandler
from connserver._http.headers import Headers

from . import _sockets as sockets
from ._harness import connect


def makeApp(clock: Clock, events: list[Any]) -> Klein:
    app = Klein()

    @app.route("/")
    def home(request: WebRequest) -> str:
        return "home"

    @app.route("/user/<name>")
    def user(request: WebRequest, name: str) -> str:
        return f"hello {name}"

    @app.route("/echo", methods=["POST"])
    def echo(request: WebRequest) -> bytes:
        assert request.content is not None
        data = json.loads(request.content.read())
        request.setHeader("Content-Type", "application/json")
        request.setResponseCode(201)
        return json.dumps({"got": data, "n": len(data)}).encode()

    @app.route("/slow")
    def slow(request: WebRequest) -> Deferred[str]:
        request.notifyFinish().addBoth(events.append)
        d: Deferred[str] = Deferred()
        clock.callLater(2, d.callback, "slow answer")
        return d

    @app.route("/broken")
    def broken(request: WebRequest) -> str:
        raise RuntimeError("route failed")

    @app.route("/close")
    def close(request: WebRequest) -> str:
        request.setHeader("Connection", "close")
        return "last one"

    return app


def call(
    handler: WebResourceHandler,
    method: bytes,
    target: bytes,
    body: bytes | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> Deferred[Response] | Response:
    fields = Headers([(b"Host", b"app.example"), *(headers or [])])
    return handler(Request(method, target, (1, 1), fields, body=body))


def result(d: Deferred[Any] | Response) -> Any:
    if isinstance(d, Response):
        return d  # answered at once: rendering finished before the call returned
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


@pytest.fixture
def events() -> list[Any]:
    return []


@pytest.fixture
def handler(clock: Clock, events: list[Any]) -> WebResourceHandler:
    return WebResourceHandler(makeApp(clock, events).resource(), reactor=clock)


@pytest.mark.parametrize(
    ("target", "body"),
    [
        pytest.param(b"/", b"home", id="root"),
        pytest.param(b"/user/ada", b"hello ada", id="route-variable"),
        pytest.param(b"/user/b%C3%A9a", "hello béa".encode(), id="percent-encoded"),
    ],
)
def test_routes(handler: WebResourceHandler, target: bytes, body: bytes) -> None:
    response = result(call(handler, b"GET", target))
    assert (response.code, response.body) == (200, body)


def test_postJson(handler: WebResourceHandler) -> None:
    payload = json.dumps([1, 2, 3]).encode()
    response = result(
        call(
            handler,
            b"POST",
            b"/echo",
            body=payload,
            headers=[(b"Content-Type", b"application/json")],
        )
    )
    assert response.code == 201
    assert json.loads(response.body) == {"got": [1, 2, 3], "n": 3}
    assert response.headers.get(b"content-type") == b"application/json"


def test_notFoundAndMethodNotAllowed(handler: WebResourceHandler) -> None:
    assert result(call(handler, b"GET", b"/nope")).code == 404
    assert result(call(handler, b"GET", b"/echo")).code == 405


def test_routeError(handler: WebResourceHandler) -> None:
    assert result(call(handler, b"GET", b"/broken")).code == 500


def test_asyncRoute(
    handler: WebResourceHandler, clock: Clock, events: list[Any]
) -> None:
    """A route's Deferred: Klein writes and finishes at once, so bytes."""
    d = call(handler, b"GET", b"/slow")
    assert not d.called
    clock.advance(2)
    response = result(d)
    assert response.body == b"slow answer"
    assert events == [None]
    assert clock.getDelayedCalls() == []


def test_disconnectDuringAsyncRoute(
    handler: WebResourceHandler, clock: Clock, events: list[Any]
) -> None:
    """
    The client leaving mid-route (the protocol cancels the handler's
    Deferred): notifyFinish fails, Klein cancels the route, nothing is written.
    """
    d = call(handler, b"GET", b"/slow")
    d.cancel()
    failures: list[Failure] = []
    d.addErrback(failures.append)
    assert failures[0].check(CancelledError)
    assert len(events) == 1 and events[0].check(ConnectionLost)
    clock.advance(2)  # the route's late answer goes nowhere
    assert clock.getDelayedCalls() == []


def test_closeFromRoute(handler: WebResourceHandler) -> None:
    response = result(call(handler, b"GET", b"/close"))
    assert response.headers.getAll(b"connection") == [b"close"]


def test_asHandlerKlein(clock: Clock, events: list[Any]) -> None:
    """asHandler serves a Klein app through app.resource()."""
    handler = asHandler(makeApp(clock, events))
    assert isinstance(handler, WebResourceHandler)


# -- through the protocol ---------------------------------------------------------


def test_protocolPipelinedRoutes(
    handler: WebResourceHandler, clock: Clock, events: list[Any]
) -> None:
    """
    Several routes and a POST body pipelined on one connection: answered in
    order (RFC 9112 §9.3.2), the slow route holding back the ones after it.
    """
    conn = connect(handler, clock=clock)
    body = b'{"k": "v"}'
    conn.send(
        b"GET /user/ada HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s"
        b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n" % (len(body), body)
    )
    assert [r.body for r in conn.responses()] == [b"hello ada"]
    clock.advance(2)
    responses = conn.responses()
    assert [r.status for r in responses] == [200, 200, 201, 404]
    assert responses[1].body == b"slow answer"
    assert json.loads(responses[2].body) == {"got": {"k": "v"}, "n": 1}
    assert all(r.header(b"transfer-encoding") is None for r in responses)
    assert not conn.closing
    conn.lose()
    assert clock.getDelayedCalls() == []


def test_protocolRouteClose(handler: WebResourceHandler, clock: Clock) -> None:
    conn = connect(handler, clock=clock)
    conn.send(
        b"GET /close HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    (response,) = conn.responses()
    assert response.header(b"connection") == b"close"
    assert conn.protocol.closeReason == "handler-close"
    conn.lose()
    assert clock.getDelayedCalls() == []


@pytest_twisted.ensureDeferred
async def test_realSocketKleinApp() -> None:
    """A Klein app over a real socket: GET, POST with a body, keep-alive."""
    from twisted.internet import reactor

    app = makeApp(Clock(), [])
    server = await sockets.serve(WebResourceHandler(app.resource(), reactor=reactor))
    try:
        client = await sockets.connect(server)
        body = b"[1, 2]"
        client.write(
            b"GET /user/bo HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        first, second = await client.waitResponses(2, [b"GET", b"POST"])
        assert first.body == b"hello bo"
        assert (second.status, json.loads(second.body)) == (
            201,
            {"got": [1, 2], "n": 2},
        )
        client.close()
        await client.waitClosed()
    finally:
        await sockets.finish(server)
