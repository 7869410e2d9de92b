"""
The bounds of issue 13, on StringTransport and Clock: a handler timeout, a
minimum body rate, a precise sendTimeout, an answer for a connection over
capacity, and no handler failure that goes unlogged.  Each ends with no
timer and no connection left.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.logger import LogEvent
from twisted.python.failure import Failure

from connserver._connection.factory import OVER_CAPACITY_RESPONSE, ConnectionFactory
from connserver._connection.message import Request, Response
from connserver._http.config import ServerConfig

from ._harness import (
    PEER,
    Connection,
    FakePort,
    TCPStringTransport,
    connect,
    hello,
    openOn,
)

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def pendingHandler() -> tuple[Any, list[Deferred[Response]]]:
    """A handler that answers only when the test fires its Deferred."""
    pending: list[Deferred[Response]] = []

    def handler(request: Request) -> Deferred[Response]:
        d: Deferred[Response] = Deferred()
        pending.append(d)
        return d

    return handler, pending


def finish(conn: Connection) -> None:
    conn.lose(Failure(ConnectionDone()))
    assert conn.clock.getDelayedCalls() == []
    assert conn.factory.stats.active == 0


# -- handlerTimeout ---------------------------------------------------------------


def test_handlerTimeoutCancelsTheHandlerAndAnswers503() -> None:
    pending: list[Deferred[Response]] = []
    cancelled: list[bool] = []

    def handler(request: Request) -> Deferred[Response]:
        d: Deferred[Response] = Deferred(lambda _: cancelled.append(True))
        pending.append(d)
        return d

    conn = connect(handler, handlerTimeout=5.0)
    conn.send(GET)
    conn.clock.advance(4.9)
    assert conn.output() == b""
    conn.clock.advance(0.1)
    [response] = conn.responses(eof=True)
    assert response.status == 503
    assert response.header(b"connection") == b"close"
    assert cancelled == [True]
    assert conn.protocol.closeReason == "handler-timeout"
    assert conn.closing
    finish(conn)


def test_handlerTimeoutRunsFromTheCallAfterTheBody() -> None:
    """A handler reading a body is bounded by bodyTimeout; then by handlerTimeout."""
    pending: list[Deferred[Response]] = []

    def handler(request: Request) -> Deferred[Response]:
        d: Deferred[Response] = Deferred()
        pending.append(d)
        request.readBody()
        return d

    conn = connect(handler, handlerTimeout=10.0, bodyTimeout=30.0)
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
    conn.clock.advance(6)
    conn.send(b"cd")  # the body is complete 6 s after the call
    conn.clock.advance(3.9)
    assert conn.output() == b""
    conn.clock.advance(0.1)
    assert [r.status for r in conn.responses(b"POST", eof=True)] == [503]
    finish(conn)


def test_aHandlerThatAnswersInTimeIsNotCut() -> None:
    handler, pending = pendingHandler()
    conn = connect(handler, handlerTimeout=5.0)
    conn.send(GET)
    conn.clock.advance(4)
    pending.pop().callback(Response(200, body=b"ok"))
    conn.clock.advance(10)
    conn.send(GET)  # the next request gets its own 5 s
    conn.clock.advance(4)
    pending.pop().callback(Response(200, body=b"ok"))
    assert [r.status for r in conn.responses()] == [200, 200]
    assert not conn.closing
    finish(conn)


def test_noHandlerTimeoutByDefault() -> None:
    handler, _ = pendingHandler()
    conn = connect(handler)
    conn.send(GET)
    assert conn.protocol.timer.phase is None
    conn.clock.advance(3600)
    assert conn.output() == b""
    finish(conn)


# -- minBodyRate ------------------------------------------------------------------


def _readingHandler(request: Request) -> Deferred[Response]:
    return request.readBody().addCallback(lambda body: Response(200, body=body))


def test_aBodySlowerThanMinBodyRateGets408() -> None:
    """
    10 bytes a second against a minimum of 100, bodyTimeout 5 s: the budget
    is 5 s plus 0.1 s per 10 bytes, so after 50 bytes the body is cut at
    5.5 s, though bytes arrive every second (bodyTimeout alone never fires).
    """
    conn = connect(_readingHandler, minBodyRate=100, bodyTimeout=5.0, maxBodyBytes=None)
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
    for second in range(1, 6):
        conn.clock.advance(1)
        conn.send(b"x" * 10)
        assert conn.output() == b"", second
    conn.clock.advance(0.4)
    assert conn.output() == b""
    conn.clock.advance(0.1)
    [response] = conn.responses(b"POST", eof=True)
    assert response.status == 408
    assert conn.protocol.closeReason == "body-too-slow"
    finish(conn)


def test_aBodyFasterThanMinBodyRateIsNotCut() -> None:
    conn = connect(_readingHandler, minBodyRate=100, bodyTimeout=5.0, maxBodyBytes=None)
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n\r\n")
    for _ in range(20):
        conn.clock.advance(1)
        conn.send(b"x" * 200)
    assert [r.status for r in conn.responses(b"POST")] == [200]
    assert not conn.closing
    finish(conn)


def test_aStalledBodyIsStillABodyTimeout() -> None:
    conn = connect(_readingHandler, minBodyRate=100, bodyTimeout=5.0)
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 60)
    conn.clock.advance(5)
    assert [r.status for r in conn.responses(b"POST", eof=True)] == [408]
    assert conn.protocol.closeReason == "body-timeout"
    finish(conn)


def test_minBodyRateNeedsBodyTimeout() -> None:
    with pytest.raises(ValueError, match="bodyTimeout"):
        ServerConfig(minBodyRate=100, bodyTimeout=None)


# -- sendTimeout ------------------------------------------------------------------


class _Progress:
    """The connection's writer, with the bytes delivered set by the test."""

    def __init__(self, out: Any) -> None:
        self._out = out
        self.delivered_ = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._out, name)

    def delivered(self) -> int:
        return self.delivered_


def test_sendTimeoutCutsWithinASecondOfTheLastProgress() -> None:
    """
    Bytes keep leaving for 3 s after the pause (the peer's receive buffer
    fills), then nothing: the cut comes sendTimeout after the last progress
    (within the 1 s poll), not a whole sendTimeout after a late look.
    """
    conn = connect(lambda request: Response(200, body=b"x" * 1000), sendTimeout=5.0)
    progress = _Progress(conn.protocol.flow._out)
    conn.protocol.flow._out = progress  # type: ignore[assignment]
    conn.send(GET)
    conn.protocol.flow.pauseProducing()
    for _ in range(6):
        conn.clock.advance(0.5)
        progress.delivered_ += 1000  # until t = 3 s
    cutAt = None
    for tenth in range(1, 200):
        conn.clock.advance(0.1)
        if conn.transport.aborted:
            cutAt = 3.0 + tenth / 10
            break
    assert cutAt is not None
    # The last progress was seen at 3 s (or, by the poll, at 4 s at most).
    assert 8.0 <= cutAt <= 9.0 + 0.1 + 1e-6
    assert conn.protocol.closeReason == "send-timeout"
    finish(conn)


# -- handler failures after the connection ended ------------------------------------


def test_aHandlerFailureAfterTheClientLeftIsLoggedOnce(
    logFailures: list[LogEvent],
) -> None:
    pending: list[Deferred[Response]] = []

    def fail(d: Deferred[Response]) -> None:
        # The handler's own cleanup breaks when it is cancelled.
        d.errback(RuntimeError("a bug seen only when clients leave"))

    def handler(request: Request) -> Deferred[Response]:
        d: Deferred[Response] = Deferred(fail)
        pending.append(d)
        return d

    conn = connect(handler)
    conn.send(GET)
    conn.lose(Failure(ConnectionLost()))
    failures = [
        e for e in logFailures if "after its connection ended" in e["log_format"]
    ]
    assert len(failures) == 1
    assert failures[0]["peer"] == "127.0.0.1"
    assert failures[0]["log_failure"].check(RuntimeError)


def test_theCancellationOfADepartedClientIsNotLogged(
    logFailures: list[LogEvent],
) -> None:
    handler, pending = pendingHandler()
    conn = connect(handler)
    conn.send(GET)
    conn.lose(Failure(ConnectionLost()))
    assert pending[0].called  # cancelled
    pending[0].addErrback(lambda f: f.trap(CancelledError))
    assert logFailures == []


# -- over capacity ----------------------------------------------------------------


def test_overCapacityGets503WithoutReadingTheRequest() -> None:
    """maxConnections reached, nothing idle to shed: 503, Retry-After, close."""
    clock = Clock()
    handler, pending = pendingHandler()
    factory = ConnectionFactory(handler, ServerConfig(maxConnections=1), reactor=clock)
    factory.addListeningPort(FakePort())  # type: ignore[arg-type]
    busy = openOn(factory, clock)
    assert busy is not None
    busy.send(GET)  # busy, not idle: nothing to shed
    refusal = factory.buildProtocol(PEER)
    assert refusal is not None
    transport = TCPStringTransport()
    refusal.makeConnection(transport)
    assert transport.value() == OVER_CAPACITY_RESPONSE
    assert b"HTTP/1.1 503 " in transport.value()
    assert b"\r\nRetry-After: 1\r\n" in transport.value()
    assert b"\r\nConnection: close\r\n" in transport.value()
    assert transport.writeClosed  # half-closed; reads are discarded meanwhile
    refusal.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.value() == OVER_CAPACITY_RESPONSE
    clock.advance(1.0)
    assert transport.disconnecting
    refusal.connectionLost(Failure(ConnectionDone()))
    assert factory.stats.refused == 1
    assert factory.stats.active == 1  # the refused one never counted
    pending.pop().callback(Response(200, body=b"ok"))
    busy.lose()
    clock.advance(0)  # the shedding the idle connection asked for: gone already
    assert clock.getDelayedCalls() == []


def test_overCapacityAnswersAreBounded() -> None:
    """Past 64 answers in progress, refused connections are closed unanswered."""
    clock = Clock()

    def handler(request: Request) -> Deferred[Response]:
        return Deferred()

    factory = ConnectionFactory(handler, ServerConfig(maxConnections=1), reactor=clock)
    factory.addListeningPort(FakePort())  # type: ignore[arg-type]
    busy = openOn(factory, clock)
    assert busy is not None
    busy.send(GET)
    refusals = []
    for _ in range(64):
        refusal = factory.buildProtocol(PEER)
        assert refusal is not None
        refusal.makeConnection(TCPStringTransport())
        refusals.append(refusal)
    assert factory.buildProtocol(PEER) is None
    for refusal in refusals:
        refusal.connectionLost(Failure(ConnectionDone()))
    assert factory.buildProtocol(PEER) is not None  # room again
    assert factory.stats.refused == 66
    busy.lose()
    clock.advance(2)


def test_hello() -> None:
    """The harness's handler still answers with every bound configured."""
    conn = connect(hello, handlerTimeout=1.0, minBodyRate=10)
    conn.send(GET)
    assert [r.status for r in conn.responses()] == [200]
    finish(conn)


def test_overCapacityOverTLSClosesWithoutAHalfClose() -> None:
    """A TLS transport is closed (close_notify), never half-closed under TLS."""
    from twisted.internet.interfaces import ISSLTransport
    from zope.interface import implementer

    @implementer(ISSLTransport)
    class TLSLikeTransport(TCPStringTransport):
        pass

    clock = Clock()
    handler, pending = pendingHandler()
    factory = ConnectionFactory(handler, ServerConfig(maxConnections=1), reactor=clock)
    factory.addListeningPort(FakePort())  # type: ignore[arg-type]
    busy = openOn(factory, clock)
    assert busy is not None
    busy.send(GET)
    refusal = factory.buildProtocol(PEER)
    assert refusal is not None
    transport = TLSLikeTransport()
    refusal.makeConnection(transport)
    assert transport.value() == OVER_CAPACITY_RESPONSE
    assert transport.disconnecting and not transport.writeClosed
    refusal.connectionLost(Failure(ConnectionDone()))
    pending.pop().callback(Response(200, body=b"ok"))
    busy.lose()
    clock.advance(0)
    assert clock.getDelayedCalls() == []
