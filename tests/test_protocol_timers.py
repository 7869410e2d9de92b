"""
Every timer of docs/architecture.md's "Timers" table, on Clock: it fires at its time and not
before, not when the state moved on, with its own outcome and close reason;
and no timer outlives its connection.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from connserver._connection.message import Request, Response
from connserver._http.state import ConnectionState

from ._harness import Connection, connect, hello

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def closeAndCheck(conn: Connection) -> None:
    conn.lose(Failure(ConnectionDone()))
    assert conn.clock.getDelayedCalls() == []
    assert conn.factory.stats.active == 0


# -- requestHeadTimeout ---------------------------------------------------------


def test_headTimeoutFromAcceptWithNoBytesClosesSilently() -> None:
    conn = connect(hello, requestHeadTimeout=20.0)
    conn.clock.advance(19.9)
    assert not conn.closing
    conn.clock.advance(0.1)
    assert conn.output() == b""
    assert conn.closing
    assert conn.protocol.closeReason == "header-timeout"
    closeAndCheck(conn)


def test_headTimeoutIsAbsoluteTrickleDoesNotReset() -> None:
    """Checklist A11: 408 + Connection: close after the deadline."""
    conn = connect(hello, requestHeadTimeout=20.0)
    for byte in b"GET / HTTP/1.1\r\nHost":
        conn.send(bytes([byte]))
        conn.clock.advance(0.9)
    assert conn.clock.seconds() < 20
    assert not conn.closing
    conn.clock.advance(20 - conn.clock.seconds())
    response = conn.responses()[0]
    assert response.status == 408
    assert response.header(b"connection") == b"close"
    assert conn.protocol.closeReason == "header-timeout"
    closeAndCheck(conn)


def test_headTimeoutForSecondRequestRunsFromItsFirstByte() -> None:
    conn = connect(hello, requestHeadTimeout=10.0, idleTimeout=60.0)
    conn.send(GET)
    conn.clock.advance(30)  # idle, below idleTimeout
    conn.send(b"GET / HT")
    conn.clock.advance(9.9)
    assert not conn.closing
    conn.clock.advance(0.1)
    assert conn.responses()[1].status == 408


def test_headTimeoutDoesNotFireAfterCompleteHead() -> None:
    d: Deferred[Response] = Deferred()
    conn = connect(lambda request: d, requestHeadTimeout=5.0)
    conn.send(GET)
    conn.clock.advance(100)
    assert not conn.closing
    d.callback(Response(200, body=b"ok"))
    assert conn.responses()[0].status == 200


# -- idleTimeout ------------------------------------------------------------------


def test_idleTimeoutClosesSilently() -> None:
    """Checklist C18: FIN, no bytes."""
    conn = connect(hello, idleTimeout=60.0)
    conn.send(GET)
    written = conn.take()
    conn.clock.advance(59.9)
    assert not conn.closing
    conn.clock.advance(0.1)
    assert conn.output() == b""
    assert written.startswith(b"HTTP/1.1 200")
    assert conn.closing
    assert conn.protocol.closeReason == "idle-timeout"
    closeAndCheck(conn)


def test_idleTimeoutRestartsAfterEachRequest() -> None:
    conn = connect(hello, idleTimeout=60.0)
    conn.send(GET)
    conn.clock.advance(50)
    conn.send(GET)
    conn.clock.advance(50)
    assert not conn.closing
    conn.clock.advance(10)
    assert conn.closing
    # A busy connection keeps one pending timer at most (no churn).
    assert len(conn.clock.getDelayedCalls()) <= 1


def test_idleTimerNotArmedWhileWriteBufferFull() -> None:
    """Idle is armed only when the transport's buffer drained; sendTimeout instead."""
    conn = connect(hello, idleTimeout=5.0, sendTimeout=30.0)
    conn.protocol.flow.pauseProducing()
    conn.send(GET)
    conn.clock.advance(10)
    assert not conn.closing
    conn.clock.advance(20)
    assert conn.transport.aborted
    assert conn.protocol.closeReason == "send-timeout"


def test_timersPerRequestDoNotChurn() -> None:
    conn = connect(hello)
    conn.send(GET)
    calls = list(conn.clock.getDelayedCalls())
    for _ in range(100):
        conn.send(GET)
    assert conn.clock.getDelayedCalls() == calls


# -- bodyTimeout -------------------------------------------------------------------


def echo(request: Request) -> Deferred[Response]:
    return request.readBody().addCallback(lambda body: Response(200, body=body))


def test_bodyTimeoutResetByProgress() -> None:
    conn = connect(echo, bodyTimeout=10.0)
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
    for piece in (b"cd", b"ef", b"gh"):
        conn.clock.advance(9)
        conn.send(piece)
    assert not conn.closing
    conn.clock.advance(9.9)
    assert not conn.closing
    conn.clock.advance(0.1)
    response = conn.responses()[0]
    assert response.status == 408
    assert response.header(b"connection") == b"close"
    assert conn.protocol.closeReason == "body-timeout"
    closeAndCheck(conn)


def test_bodyTimeoutNotArmedWhenBodyComplete() -> None:
    d: Deferred[Response] = Deferred()

    def handler(request: Request) -> Deferred[Response]:
        request.readBody()
        return d

    conn = connect(handler, bodyTimeout=10.0)
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab")
    conn.clock.advance(100)
    assert not conn.closing
    d.callback(Response(200, body=b"ok"))
    assert conn.responses()[0].status == 200


# -- sendTimeout -------------------------------------------------------------------


def test_sendTimeoutAbortsStalledWrite() -> None:
    d: Deferred[Response] = Deferred()
    conn = connect(lambda request: d, sendTimeout=60.0)
    conn.send(GET)
    d.callback(Response(200, body=b"x" * 100))
    conn.protocol.flow.pauseProducing()  # the client stopped reading
    conn.clock.advance(59)
    conn.protocol.flow.resumeProducing()  # progress
    conn.protocol.flow.pauseProducing()
    conn.clock.advance(59)
    assert not conn.transport.aborted
    conn.clock.advance(1)
    assert conn.transport.aborted
    assert conn.protocol.closeReason == "send-timeout"
    closeAndCheck(conn)


# -- closing: linger and abort ---------------------------------------------------------


def test_lingerThenCloseThenAbort() -> None:
    """Checklist C25: half-close, linger-read, close; abort if the close hangs."""
    conn = connect(hello, lingerTimeout=5.0, abortTimeout=15.0)
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert conn.transport.writeClosed
    assert not conn.transport.disconnecting
    assert conn.protocol.state is ConnectionState.CLOSING
    written = conn.take()
    conn.send(b"junk the client is still sending" * 100)
    assert conn.output() == b""
    conn.clock.advance(5)
    assert conn.transport.disconnecting
    assert not conn.transport.aborted
    conn.clock.advance(15)
    assert conn.transport.aborted
    assert written.startswith(b"HTTP/1.1 200")
    closeAndCheck(conn)


def test_lingerEndsAtClientEOF() -> None:
    conn = connect(hello)
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    conn.protocol.readConnectionLost()
    assert conn.transport.disconnecting
    closeAndCheck(conn)


def test_closeWaitsForBufferedBytes() -> None:
    """A close decided while the transport is full waits for it (bounded by sendTimeout)."""
    conn = connect(hello, sendTimeout=10.0)
    conn.protocol.flow.pauseProducing()
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert not conn.transport.writeClosed
    conn.protocol.flow.resumeProducing()
    assert conn.transport.writeClosed


def test_noTimerAfterClose() -> None:
    conn = connect(hello)
    conn.send(GET)
    closeAndCheck(conn)
