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
    pool = UpstreamPool(Clock(), None, "http://up", 4, 4.0, 60.0)  # type: ignore[arg-type]
    connection = UpstreamConnection(pool)
    connection.makeConnection(transport)
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
    assert received(theirs) == HEAD[:10]
    assert transport.buffered == [HEAD[10:]]


def test_wouldBlockLeavesItAllToTwisted(pair: Any) -> None:
    connection, transport, wrapped, theirs = pair
    wrapped.wouldBlock = True
    connection.send(_Listener(), b"GET", HEAD, False)
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
    assert received(theirs) == b""
    assert transport.buffered == [HEAD]
