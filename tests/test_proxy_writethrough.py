"""
The upstream connection writes its requests through to the socket while
Twisted's buffer is empty (``TransportWriter``), as the server's responses
do; otherwise, and for whatever the kernel does not take at once (a
partial send, ``EAGAIN``), through ``transport.write``, in order.  The
transport here is a real ``tcp.Connection`` on a socket pair, without a
reactor, so that each case is decided, not waited for.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from connserver._handlers.upstream import UpstreamConnection, UpstreamPool
from connserver._twisted import writethrough as _writethrough

HEAD = b"GET / HTTP/1.1\r\nHost: up\r\n\r\n"


class _Socket:
    """A socket whose ``send`` takes at most ``limit`` bytes, or none."""

    def __init__(self, real: socket.socket) -> None:
        self.real = real
        self.limit: int | None = None
        self.wouldBlock = False

    def send(self, data: bytes) -> int:
        if self.wouldBlock:
            raise BlockingIOError(11, "EAGAIN")
        if self.limit is not None:
            data = data[: self.limit]
        return self.real.send(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class _Transport(tcp.Connection):
    """A tcp.Connection on a socket pair that records what it buffers."""

    def __init__(self, skt: Any) -> None:
        super().__init__(skt, Protocol())
        self.connected = 1
        self.buffered: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.buffered.append(data)

    def startWriting(self) -> None:
        pass


class _Listener:
    def __getattr__(self, name: str) -> Any:
        return lambda *args: None


@pytest.fixture
def pair() -> Iterator[tuple[UpstreamConnection, _Transport, _Socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    wrapped = _Socket(ours)
    transport = _Transport(wrapped)
    clock = Clock()
    pool = UpstreamPool(clock, None, "http://up", 4, 4.0, 60.0)  # type: ignore[arg-type]
    connection = UpstreamConnection(pool)
    connection.makeConnection(transport)
    # A bodiless request's head leaves at the end of the reactor's turn.
    connection.endOfTurn = lambda: clock.advance(0)  # type: ignore[attr-defined]
    try:
        yield connection, transport, wrapped, theirs
    finally:
        _writethrough._verdicts.pop(_Transport, None)
        ours.close()
        theirs.close()


def received(theirs: socket.socket) -> bytes:
    try:
        return theirs.recv(65536)
    except BlockingIOError:
        return b""


def test_theHeadGoesStraightToTheSocket(pair: Any) -> None:
    connection, transport, _, theirs = pair
    assert connection.out is not None and connection.out.plainTCP
    connection.send(_Listener(), b"GET", HEAD, False)
    connection.endOfTurn()
    assert received(theirs) == HEAD
    assert transport.buffered == []


def test_bytesAlreadyBufferedGoFirst(pair: Any) -> None:
    """Twisted holds earlier bytes: the head queues behind them."""
    connection, transport, _, theirs = pair
    transport._tempDataBuffer.append(b"earlier")
    transport._tempDataLen += 7
    connection.send(_Listener(), b"POST", HEAD, True)
    connection.writeBody(b"body")
    connection.endBody(b"0\r\n\r\n")
    assert received(theirs) == b""
    assert transport.buffered == [HEAD, b"body", b"0\r\n\r\n"]


def test_aPartialSendLeavesTheRestToTwisted(pair: Any) -> None:
    connection, transport, wrapped, theirs = pair
    wrapped.limit = 10
    connection.send(_Listener(), b"GET", HEAD, False)
    connection.endOfTurn()
    assert received(theirs) == HEAD[:10]
    assert transport.buffered == [HEAD[10:]]


def test_wouldBlockLeavesItAllToTwisted(pair: Any) -> None:
    connection, transport, wrapped, theirs = pair
    wrapped.wouldBlock = True
    connection.send(_Listener(), b"GET", HEAD, False)
    connection.endOfTurn()
    assert received(theirs) == b""
    assert transport.buffered == [HEAD]


def test_bodyWritesGoThroughToo(pair: Any) -> None:
    connection, transport, _, theirs = pair
    connection.send(_Listener(), b"PUT", HEAD, True)
    connection.writeBody(b"5\r\nhello\r\n")
    connection.endBody(b"0\r\n\r\n")
    assert received(theirs) == HEAD + b"5\r\nhello\r\n0\r\n\r\n"
    assert transport.buffered == []


def test_aClosingTransportIsNotWrittenAround(pair: Any) -> None:
    """Once Twisted disconnects, writes are its own (and then dropped)."""
    connection, transport, _, theirs = pair
    transport.disconnecting = 1
    connection.send(_Listener(), b"GET", HEAD, False)
    connection.endOfTurn()
    assert received(theirs) == b""
    assert transport.buffered == [HEAD]


def test_headsLeaveTogetherAtTheEndOfTheTurn(pair: Any) -> None:
    """
    Bodiless requests queued in one turn are written when it ends, in
    order; one abandoned meanwhile is not written at all.
    """
    connection, transport, _, theirs = pair
    pool = connection.pool
    other = UpstreamConnection(pool)
    ours2, theirs2 = socket.socketpair()
    try:
        theirs2.setblocking(False)
        other.makeConnection(_Transport(_Socket(ours2)))
        gone = UpstreamConnection(pool)
        gone.makeConnection(_Transport(_Socket(ours2)))
        connection.send(_Listener(), b"GET", HEAD, False)
        gone.send(_Listener(), b"GET", b"GET /gone HTTP/1.1\r\n\r\n", False)
        other.send(_Listener(), b"HEAD", HEAD.replace(b"GET", b"HEAD"), False)
        gone.abandon()
        assert received(theirs) == b""
        assert received(theirs2) == b""
        connection.endOfTurn()
        assert received(theirs) == HEAD
        assert received(theirs2) == HEAD.replace(b"GET", b"HEAD")
        assert transport.buffered == []
    finally:
        ours2.close()
        theirs2.close()


def test_aRequestWithABodySendsItsHeadAtOnce(pair: Any) -> None:
    """The body follows its head at once: no waiting for the turn's end."""
    connection, _, _, theirs = pair
    connection.send(_Listener(), b"POST", HEAD, True)
    assert received(theirs) == HEAD


def test_aFailingQueuedCallIsLoggedAndTheOthersRun(pair: Any) -> None:
    connection = pair[0]
    ran: list[int] = []

    def broken(arg: object) -> None:
        raise RuntimeError("broken")

    connection.pool.afterTurn(broken, None)
    connection.pool.afterTurn(ran.append, 1)
    with capturedLogs() as events:
        connection.endOfTurn()
    assert ran == [1]
    assert [e["log_failure"].check(RuntimeError) for e in events] == [RuntimeError]
