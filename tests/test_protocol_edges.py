"""
Edge cases of the connection lifecycle found in review: the client's
half-close as an event after its bytes (RFC 9112 §9.6 note), re-entrant
closes, write backpressure holding back pipelined requests (checklist C21),
unread-body discards, HEAD/304 lengths (RFC 9110 §8.6), sendTimeout as "no
progress".
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure

from connserver._connection.message import Request, Response
from connserver._http.errors import ClientGone
from connserver._http.state import ConnectionState

from ._harness import connect, hello

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
KiB = 1024


# -- the client's half-close -------------------------------------------------


def test_halfCloseAfterCompleteBodyNotYetReadStillAnswers() -> None:
    pending: list[tuple[Request, Deferred[Response]]] = []

    def handler(request: Request) -> Deferred[Response]:
        d: Deferred[Response] = Deferred()
        pending.append((request, d))
        return d

    conn = connect(handler)
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
    conn.protocol.readConnectionLost()
    request, d = pending[0]
    got: list[Any] = []
    request.readBody().addBoth(got.append)
    assert got == [b"hello"]
    d.callback(Response(200, body=b"thanks"))
    assert conn.responses(b"POST")[0].body == b"thanks"
    assert conn.closing
    assert conn.protocol.closeReason == "peer-closed"


def test_halfCloseAnswersCompletePipelinedRequestsThenCloses() -> None:
    pending: list[Deferred[Response]] = []

    def handler(request: Request) -> Deferred[Response]:
        d: Deferred[Response] = Deferred()
        pending.append(d)
        return d

    conn = connect(handler, maxPipelinedRequests=1)
    conn.send(GET * 3)
    conn.protocol.readConnectionLost()
    for _ in range(3):
        assert not conn.closing
        pending[-1].callback(hello(None))  # type: ignore[arg-type]
    assert len(conn.responses()) == 3
    assert conn.closing


def test_halfCloseMidBodyFailsTheBodyAndAnswersEarlierRequests() -> None:
    pending: list[Deferred[Response]] = []
    failures: list[Failure] = []

    def handler(request: Request) -> Deferred[Response]:
        if request.method == b"POST":
            return request.readBody().addCallbacks(
                lambda body: Response(200, body=body),
                lambda failure: failures.append(failure) or Response(400, body=b"cut"),
            )
        d: Deferred[Response] = Deferred()
        pending.append(d)
        return d

    conn = connect(handler)
    conn.send(GET + b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234")
    conn.protocol.readConnectionLost()
    # The complete GET is still answered (C20), then the connection closes.
    pending[0].callback(hello(None))  # type: ignore[arg-type]
    responses = conn.responses(b"GET", b"POST")
    assert responses[0].status == 200
    assert conn.closing
    assert conn.protocol.state is ConnectionState.CLOSING


def test_requestsInFlightAreToldOfTheHalfClose() -> None:
    """
    ``Request.notifyInputEnd``: each request in flight that asked is told
    once; one that asks after the FIN is told at once; a handler that then
    gives up (``ClientGone``) has its connection closed without a 500 or
    an error line.
    """
    told: list[bytes] = []
    pending: list[tuple[Request, Deferred[Response]]] = []

    def handler(request: Request) -> Deferred[Response]:
        d: Deferred[Response] = Deferred()
        pending.append((request, d))
        request.notifyInputEnd(lambda: told.append(request.path))
        return d

    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        conn = connect(handler, maxPipelinedRequests=2)
        conn.send(GET + GET.replace(b"/ ", b"/second "))
        assert [r.path for r, _ in pending] == [b"/"]
        conn.protocol.readConnectionLost()
        conn.protocol.readConnectionLost()  # (Told once.)
        assert told == [b"/"]
        pending[0][1].callback(hello(None))  # type: ignore[arg-type]
        # The second request's handler asks after the FIN: told at once.
        assert [r.path for r, _ in pending] == [b"/", b"/second"]
        assert told == [b"/", b"/second"]
        pending[1][1].errback(Failure(ClientGone("the client gave up")))
    finally:
        globalLogPublisher.removeObserver(events.append)
    [response] = conn.responses(b"GET")
    assert response.status == 200
    assert conn.closing
    assert conn.protocol.closeReason == "peer-closed"
    assert not [e for e in events if e.get("log_level") is LogLevel.error]
    assert not [e for e in events if e.get("log_level") is LogLevel.critical]


def test_aRequestMadeByHandIsNeverToldOfAHalfClose() -> None:
    told: list[int] = []
    Request(b"GET", b"/").notifyInputEnd(lambda: told.append(1))
    assert told == []


def test_handlerAnsweringInsideCloseIsIgnoredCleanly() -> None:
    """A handler that turns the body failure into a response while the
    connection closes: no InvalidTransition, no second close."""
    results: list[Failure] = []

    def handler(request: Request) -> Deferred[Response]:
        d = request.readBody()
        d.addCallbacks(
            lambda body: Response(200, body=body),
            lambda failure: Response(400, body=b"incomplete body\n"),
        )
        d.addErrback(results.append)
        return d

    conn = connect(handler)
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234")
    conn.protocol.readConnectionLost()
    assert results == []
    assert conn.protocol.state is ConnectionState.CLOSING
    conn.lose()
    assert conn.clock.getDelayedCalls() == []


def test_handlerErrorAfterClientAbortIsNotA500() -> None:
    def handler(request: Request) -> Deferred[Response]:
        return request.readBody().addCallback(lambda body: Response(200, body=body))

    conn = connect(handler)
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234")
    conn.protocol.readConnectionLost()
    assert b"500" not in conn.output()
    assert conn.protocol.closeReason == "peer-closed"


# -- write backpressure holds back pipelined requests (C21) --------------------


def test_noNewResponsesWhileTransportIsFull() -> None:
    big = b"x" * (256 * KiB)
    conn = connect(lambda request: Response(200, body=big), maxRequestsPerConnection=20)
    conn.send(GET)
    conn.protocol.flow.pauseProducing()
    conn.transport.clear()
    conn.send(GET * 5000)
    assert conn.output() == b""
    assert len(conn.protocol.pipeline.queue) <= 16
    assert conn.transport.producerState == "paused"  # reading paused too
    conn.protocol.flow.resumeProducing()
    assert conn.output().count(b"HTTP/1.1 200") >= 1


# -- unread bodies ------------------------------------------------------------------


def test_afterDiscardingAnUnreadBodyTheConnectionIsIdle() -> None:
    conn = connect(hello)
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789")
    assert [r.status for r in conn.responses(b"POST")] == [200]
    assert conn.protocol.state is ConnectionState.WAITING
    assert conn.protocol in conn.factory._idleOldestFirst()
    conn.clock.advance(21)  # past requestHeadTimeout, below idleTimeout
    assert not conn.closing


def test_bodyArrivingAfterTheResponseIsDiscardedThenIdle() -> None:
    conn = connect(hello)
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
    assert conn.protocol.state is ConnectionState.WAITING
    conn.send(b"0123456789" + GET)
    assert len(conn.responses(b"POST", b"GET")) == 2
    conn.factory.drain()
    conn.clock.advance(2)
    assert conn.closing


def test_promisedDrainIsHonoured() -> None:
    """The response said keep-alive: the rest of the body is discarded, not cut."""
    done: Deferred[Response] = Deferred()

    class Counter(Protocol):
        received = 0

        def dataReceived(self, data: bytes) -> None:
            self.received += len(data)
            if self.received >= 900 * KiB and not done.called:
                done.callback(Response(200, body=b"ok"))

    def handler(request: Request) -> Deferred[Response] | Response:
        if request.method == b"GET":
            return hello(request)
        request.deliverBody(Counter())
        return done

    conn = connect(handler)
    conn.send(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (1536 * KiB)
    )
    for _ in range(9):
        conn.send(b"a" * (100 * KiB))
    assert b"Connection: close" not in conn.output()
    conn.send(b"a" * (636 * KiB) + GET)
    assert not conn.closing
    assert len(conn.responses(b"POST", b"GET")) == 2


def test_stoppedBodyDoesNotTimeOut() -> None:
    done: Deferred[Response] = Deferred()

    class Enough(Protocol):
        def dataReceived(self, data: bytes) -> None:
            assert self.transport is not None
            self.transport.stopProducing()

    def handler(request: Request) -> Deferred[Response]:
        request.deliverBody(Enough())
        return done

    conn = connect(handler, bodyTimeout=30.0)
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
    conn.clock.advance(60)
    assert conn.output() == b""
    done.callback(Response(200, body=b"ok"))
    response = conn.responses(b"POST")[0]
    assert response.status == 200


# -- HEAD and 304 lengths (RFC 9110 §8.6) ----------------------------------------


def test_304WithoutLengthSendsNoContentLength() -> None:
    conn = connect(lambda request: Response(304, [(b"ETag", b'"a"')]))
    conn.send(GET)
    out = conn.output()
    assert out.startswith(b"HTTP/1.1 304 ")
    assert b"Content-Length" not in out
    assert not conn.closing


def test_304AndHeadKeepTheHandlersContentLength() -> None:
    conn = connect(lambda request: Response(304, [(b"Content-Length", b"1234")]))
    conn.send(GET)
    assert b"\r\nContent-Length: 1234\r\n" in conn.output()
    conn = connect(lambda request: Response(200, [(b"Content-Length", b"1234")]))
    conn.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n" + GET)
    out = conn.output()
    assert out.startswith(b"HTTP/1.1 200 OK")
    assert b"\r\nContent-Length: 1234\r\n" in out
    # The GET with the same contradiction is a 500.
    assert b"HTTP/1.1 500 " in out


# -- files that change ----------------------------------------------------------------


def pauseAfterFirstBlock(conn: Any) -> None:
    """Make the transport report a full buffer after the first large write."""
    protocol = conn.protocol

    class PausingWriter:
        """The connection's writer, pausing the protocol after a large write."""

        def __init__(self, out: Any) -> None:
            self._out = out

        def __getattr__(self, name: str) -> Any:
            return getattr(self._out, name)

        def write(self, data: bytes) -> None:
            self._out.write(data)
            if len(data) >= 64 * KiB:
                protocol.flow.pauseProducing()

    protocol.flow._out = PausingWriter(protocol.flow._out)


def test_fileThatGrowsIsSentAsItWas(tmp_path: Any) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(b"a" * (300 * KiB))
    conn = connect(lambda request: Response(200, body=open(path, "rb")))
    pauseAfterFirstBlock(conn)
    conn.send(GET)
    with open(path, "ab") as log:
        log.write(b"b" * 500)
    conn.protocol.flow.resumeProducing()
    assert not conn.transport.aborted
    assert conn.responses()[0].body == b"a" * (300 * KiB)


def test_fileThatShrinksAborts(tmp_path: Any) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"a" * (600 * KiB))
    conn = connect(lambda request: Response(200, body=open(path, "rb")))
    pauseAfterFirstBlock(conn)
    conn.send(GET)
    with open(path, "r+b") as f:
        f.truncate(10)  # truncated while the response waits
    conn.protocol.flow.resumeProducing()
    assert conn.transport.aborted
    assert conn.protocol.closeReason == "response-error"


def test_pipelineBehindUnreadBodyIsAnsweredWhenHalfCloseArrivesWhilePaused() -> None:
    conn = connect(hello)
    protocol = conn.protocol
    conn.send(b"GET /0 HTTP/1.1\r\nHost: x\r\n\r\n")
    protocol.flow.pauseProducing()
    conn.send(
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    protocol.readConnectionLost()
    protocol.flow.resumeProducing()
    assert [r.status for r in conn.responses(b"GET", b"POST", b"GET")] == [
        200,
        200,
        200,
    ]
    assert conn.closing


def test_backendConnectionLostIsA500() -> None:
    """Only the failure the server gave the body reader means the client left."""
    from twisted.internet.defer import fail
    from twisted.internet.error import ConnectionLost

    conn = connect(lambda request: fail(ConnectionLost("backend went away")))
    conn.send(GET)
    assert conn.output().startswith(b"HTTP/1.1 500 ")


def test_expectContinueOnTwoLinesIsStillContinue() -> None:
    def echo(request: Request) -> Deferred[Response]:
        return request.readBody().addCallback(lambda body: Response(200, body=body))

    conn = connect(echo)
    conn.send(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        b"Expect: 100-continue\r\nExpect: 100-Continue\r\n\r\n"
    )
    assert conn.output() == b"HTTP/1.1 100 Continue\r\n\r\n"


def test_handlerWaitingOnAnInnerDeferredIsCancelled() -> None:
    from twisted.internet.defer import succeed

    cancelled: list[bool] = []

    def handler(request: Request) -> Deferred[Response]:
        inner: Deferred[Response] = Deferred(lambda d: cancelled.append(True))
        return succeed(None).addCallback(lambda _: inner)

    conn = connect(handler)
    conn.send(GET)
    conn.lose()
    assert cancelled == [True]
