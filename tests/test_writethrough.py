"""
``TransportWriter`` against Twisted's real TCP transport.

``connserver._twisted.writethrough`` reads private attributes of
``twisted.internet.tcp.Connection`` (its write buffers, disconnect flags,
``producerPaused`` and ``socket``).  The tests here build real connections on
127.0.0.1 through the reactor and check that each of those attributes still
exists, has the type the module expects, and means what it assumes: they
are what to run before raising the upper bound on ``twisted`` in
``pyproject.toml``.  The last tests check the fallback for a transport
class that lacks any of them: plain ``transport.write``, no ``sendfile``,
``delivered() == -1``.  The tests on real connections wait for the
kernel (in 5-10 ms reactor turns), and are marked slow.
"""

from __future__ import annotations

import ast
import fcntl
import inspect
import os
import socket
import struct
import termios
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, task, tcp
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from connserver._twisted import writethrough as _writethrough
from connserver._twisted.writethrough import WOULD_BLOCK, TransportWriter

from ._helpers import ensureDeferred, eventuallyDeferred
from ._helpers import realReactor as _reactor

TIMEOUT = 10.0


async def turn(seconds: float = 0.01) -> None:
    """Let the reactor run (doWrite happens on its iterations)."""
    await task.deferLater(_reactor(), seconds, lambda: None)


async def until(condition: Callable[[], object], what: str) -> None:
    """``condition()`` within ``TIMEOUT``, checked every reactor turn."""
    await eventuallyDeferred(condition, timeout=TIMEOUT, interval=0.01, message=what)


class _Kept(Protocol):
    """The server side: hands its transport to the test, reads nothing."""

    made: defer.Deferred[_Kept]

    def connectionMade(self) -> None:
        self.made.callback(self)


class Pair:
    """A real Twisted TCP server connection and a plain client socket."""

    def __init__(self, port: Any, server: _Kept, client: socket.socket) -> None:
        self.port = port
        self.transport: Any = server.transport
        self.client = client
        self.received = bytearray()

    def read(self) -> int:
        """Read what the client socket holds now, without blocking."""
        total = 0
        while True:
            try:
                data = self.client.recv(1 << 20)
            except BlockingIOError:
                return total
            if not data:
                return total
            self.received += data
            total += len(data)

    async def drain(self, expected: int) -> None:
        """Read until ``expected`` bytes arrived, letting the reactor write."""
        for _ in range(int(TIMEOUT / 0.005)):
            self.read()
            if len(self.received) >= expected:
                return
            await turn(0.005)
        raise AssertionError(f"received {len(self.received)} of {expected}")

    async def close(self) -> None:
        if self.transport.connected:
            self.transport.abortConnection()
        self.client.close()
        await self.port.stopListening()
        await turn()


async def connectPair(clientReceiveBuffer: int | None = None) -> Pair:
    made: defer.Deferred[_Kept] = defer.Deferred()

    def build(addr: Any) -> _Kept:
        protocol = _Kept()
        protocol.made = made
        return protocol

    factory = Factory()
    factory.buildProtocol = build  # type: ignore[method-assign]
    port = _reactor().listenTCP(0, factory, interface="127.0.0.1")
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if clientReceiveBuffer is not None:
        # Before connect, so that the window the client offers stays small.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, clientReceiveBuffer)
    client.setblocking(False)
    try:
        client.connect_ex(("127.0.0.1", port.getHost().port))
        server = await made.addTimeout(TIMEOUT, _reactor())
    except BaseException:
        client.close()
        await port.stopListening()
        raise
    pair = Pair(port, server, client)
    assert isinstance(pair.transport, tcp.Server)
    return pair


def kernelQueued(skt: socket.socket) -> int:
    """Bytes in a socket's send queue (TIOCOUTQ)."""
    value: int = struct.unpack(
        "i", fcntl.ioctl(skt.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    )[0]
    return value


def receiveQueued(skt: socket.socket) -> int:
    """Bytes waiting in a socket's receive queue (FIONREAD)."""
    value: int = struct.unpack(
        "i", fcntl.ioctl(skt.fileno(), termios.FIONREAD, b"\0\0\0\0")
    )[0]
    return value


def pending(transport: Any) -> bytes:
    """What Twisted still holds, in order, read through the private names."""
    return bytes(transport.dataBuffer[transport.offset :]) + b"".join(
        transport._tempDataBuffer
    )


def withPair(
    test: Callable[[Pair], Awaitable[None]], clientReceiveBuffer: int | None = None
) -> Callable[[], Coroutine[Any, Any, None]]:
    async def run() -> None:
        pair = await connectPair(clientReceiveBuffer)
        try:
            await test(pair)
        finally:
            await pair.close()

    return run


# -- the private attributes exist, with their types -----------------------------


def test_theDeclaredListIsWhatTheModuleReads() -> None:
    """
    Every attribute ``_writethrough`` reads from a TCP connection (the names
    ``c``, ``connection`` and ``lower`` stand for one) is in ``_REQUIRED``,
    ``_REQUIRED_METHODS`` or is ``socket``: so the checks below and the
    fallback cover all of them.
    """
    tree = ast.parse(inspect.getsource(_writethrough))
    read = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in {"c", "connection", "lower"}
    }
    declared = {name for name, _ in _writethrough._REQUIRED}
    declared |= set(_writethrough._REQUIRED_METHODS) | {"socket"}
    assert read, "the module no longer names its connection c/connection/lower"
    assert read <= declared, read - declared


@pytest.mark.slow
@ensureDeferred
async def test_internalsExistOnARealConnection() -> None:
    async def check(pair: Pair) -> None:
        t = pair.transport
        for name, kind in _writethrough._REQUIRED:
            value = getattr(t, name)
            assert isinstance(value, kind), (name, type(value))
        for name in _writethrough._REQUIRED_METHODS:
            assert callable(getattr(t, name)), name
        assert isinstance(t.socket, socket.socket)
        assert t.socket.fileno() == t.fileno()
        # At rest: nothing buffered, connected, not closing.
        assert t._tempDataBuffer == []
        assert t._tempDataLen == 0
        assert t.dataBuffer[t.offset :] == b""
        assert t.connected
        assert not t.disconnecting
        assert not t._writeDisconnecting
        assert t.producerPaused is False
        assert _writethrough._hasInternals(t)
        writer = TransportWriter(t)
        assert writer._plain
        assert _writethrough._verdicts[type(t)] is True
        assert writer.queued() == 0
        assert writer.delivered() == 0

    await withPair(check)()


@pytest.mark.slow
@ensureDeferred
async def test_writeGoesThroughWhenTwistedHoldsNothing() -> None:
    async def check(pair: Pair) -> None:
        t = pair.transport
        writer = TransportWriter(t)
        writer.write(b"hello")
        # Sent at once: Twisted's buffers never saw it.
        assert t._tempDataBuffer == []
        assert t._tempDataLen == 0
        assert t.dataBuffer[t.offset :] == b""
        await pair.drain(5)
        assert bytes(pair.received) == b"hello"
        assert writer.written == 5
        await until(lambda: writer.delivered() == 5, "delivered() == 5")

    await withPair(check)()


@pytest.mark.slow
@ensureDeferred
async def test_buffersHoldExactlyWhatTheKernelDidNotTake() -> None:
    """
    The meaning of ``_tempDataBuffer``, ``_tempDataLen``, ``dataBuffer`` and
    ``offset``: together (``dataBuffer[offset:]`` then the list) they are
    the unsent tail of what was written, ``_tempDataLen`` is the list's
    size, and with the kernel's queues they account for every byte.
    """

    async def check(pair: Pair) -> None:
        t = pair.transport
        t.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
        writer = TransportWriter(t)
        payload = os.urandom(4 * 1024 * 1024)
        writer.write(payload)
        # The kernel took a part at once; Twisted holds the rest, in its
        # list buffer until the next doWrite.
        taken = len(payload) - t._tempDataLen
        assert 0 < taken < len(payload)
        assert t._tempDataBuffer == [payload[taken:]]
        assert t.dataBuffer[t.offset :] == b""
        assert writer.queued() == t._tempDataLen + kernelQueued(t.socket)
        # Something is buffered: the next write queues behind it.
        writer.write(b"tail")
        assert t._tempDataBuffer[-1] == b"tail"
        total = payload + b"tail"
        assert writer.written == len(total)

        # Let doWrite run: it moves the list into dataBuffer and advances
        # offset as the kernel takes bytes.
        for _ in range(5):
            await turn()
        held = pending(t)
        assert len(held) == len(t.dataBuffer) - t.offset + t._tempDataLen
        assert 0 < len(held) <= len(total) - taken
        assert total.endswith(held)
        assert t.offset > 0 or t._tempDataBuffer == []
        inKernel = len(total) - len(held)

        def accounted() -> bool:
            # Sent but unacknowledged (ours) + arrived but unread (theirs).
            return (
                kernelQueued(t.socket) + receiveQueued(pair.client) == inKernel
                and pending(t) == held
            )

        await until(accounted, "the kernel's queues to account for every byte")
        queued = writer.queued()
        assert queued == len(held) + kernelQueued(t.socket)
        assert writer.delivered() == writer.written - queued

        await pair.drain(len(total))
        assert bytes(pair.received) == total
        await until(lambda: writer.queued() == 0, "an empty buffer")
        assert t._tempDataBuffer == []
        assert t._tempDataLen == 0
        assert t.dataBuffer[t.offset :] == b""
        assert writer.delivered() == writer.written

    await withPair(check, clientReceiveBuffer=16 * 1024)()


@implementer(IPushProducer)
class RecordingProducer:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


@pytest.mark.slow
@ensureDeferred
async def test_producerPausedAndStartWritingResumeWhenDrained() -> None:
    """
    ``producerPaused`` is the flag Twisted sets when it pauses a streaming
    producer, and clears when ``doWrite`` drains the buffer and resumes it;
    ``waitUntilWritable`` relies on that to be resumed once the socket
    takes more.
    """

    async def check(pair: Pair) -> None:
        t = pair.transport
        t.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
        producer = RecordingProducer()
        t.registerProducer(producer, True)
        writer = TransportWriter(t)
        payload = os.urandom(2 * 1024 * 1024)
        writer.write(payload)  # more than Twisted's bufferSize
        assert producer.calls == ["pause"]
        assert t.producerPaused is True
        await pair.drain(len(payload))
        await until(lambda: producer.calls == ["pause", "resume"], "a resume")
        assert t.producerPaused is False

        # Nothing buffered: waitUntilWritable has the next doWrite resume us.
        writer.waitUntilWritable()
        assert t.producerPaused is True
        await until(
            lambda: producer.calls[-1:] == ["resume"] and len(producer.calls) == 3,
            "a second resume",
        )
        assert t.producerPaused is False
        t.unregisterProducer()

    await withPair(check, clientReceiveBuffer=16 * 1024)()


@pytest.mark.slow
@ensureDeferred
async def test_sendFileUsesTheSocketAndWaitsBehindBufferedBytes(
    tmp_path: Path,
) -> None:
    async def check(pair: Pair) -> None:
        t = pair.transport
        content = os.urandom(256 * 1024)
        path = tmp_path / "body.bin"
        path.write_bytes(content)
        fd = os.open(path, os.O_RDONLY)
        try:
            writer = TransportWriter(t)
            sent = writer.sendFile(fd, 0, 1000)
            assert sent == 1000
            assert writer.written == 1000
            await pair.drain(1000)
            assert bytes(pair.received) == content[:1000]
            # Bytes in Twisted's buffer go first: sendfile waits for them.
            t.write(b"x")
            assert t._tempDataBuffer == [b"x"]
            assert writer.sendFile(fd, 1000, 1000) == WOULD_BLOCK
            await pair.drain(1001)
            assert writer.sendFile(fd, len(content), 10) == 0  # end of file
        finally:
            os.close(fd)

    await withPair(check)()


@pytest.mark.slow
@ensureDeferred
async def test_disconnectFlagsStopWriteThroughAndSendfile(tmp_path: Path) -> None:
    async def check(pair: Pair) -> None:
        t = pair.transport
        path = tmp_path / "body.bin"
        path.write_bytes(b"abc")
        fd = os.open(path, os.O_RDONLY)
        try:
            writer = TransportWriter(t)
            t.loseWriteConnection()
            assert t._writeDisconnecting is True
            assert writer.sendFile(fd, 0, 3) is None
            t.loseConnection()
            assert t.disconnecting
            assert writer.sendFile(fd, 0, 3) is None
            await until(lambda: not t.connected, "the connection to close")
            assert writer.sendFile(fd, 0, 3) is None
        finally:
            os.close(fd)

    await withPair(check)()


def test_tlsAttributes() -> None:
    """
    Over TLS the writer reads ``TLSMemoryBIOProtocol._appSendBuffer`` (the
    plaintext backlog, a list of bytes) and ``transport`` (the layer below).
    """
    factory = TLSMemoryBIOFactory(
        CertificateOptions(), False, Factory.forProtocol(Protocol)
    )
    tls: Any = factory.buildProtocol(None)
    below = StringTransport()  # type: ignore[no-untyped-call]
    tls.makeConnection(below)
    try:
        assert isinstance(tls._appSendBuffer, list)
        assert tls.transport is below
        writer = TransportWriter(tls)
        assert not writer._plain
        # Not TCP below: nothing is known about its buffers.
        assert writer.queued() is None
        assert writer.delivered() == -1
    finally:
        tls.connectionLost(None)


# -- the fallback when an attribute is missing ----------------------------------


class _Missing:
    """A data descriptor that makes an attribute absent on instances."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: object, objtype: type | None = None) -> Any:
        raise AttributeError(self.name)

    def __set__(self, obj: object, value: object) -> None:
        pass


class _FakeTCP(tcp.Connection):
    """A tcp.Connection on a socket pair that records writes (no reactor)."""

    def __init__(self, skt: socket.socket) -> None:
        super().__init__(skt, Protocol())
        self.connected = 1
        self.writes: list[bytes] = []
        self.startedWriting = 0

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def startWriting(self) -> None:
        self.startedWriting += 1


MISSING = [name for name, _ in _writethrough._REQUIRED] + ["startWriting"]


@pytest.mark.parametrize("name", MISSING)
def test_fallbackWhenAnAttributeIsMissing(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks: list[type] = []
    realCheck = _writethrough._hasInternals

    def counting(transport: object) -> bool:
        checks.append(type(transport))
        return realCheck(transport)

    monkeypatch.setattr(_writethrough, "_hasInternals", counting)
    attributes: dict[str, Any] = {name: _Missing()}
    if name == "startWriting":
        attributes = {name: None}
    lacking = type(f"Lacking_{name}", (_FakeTCP,), attributes)
    path = tmp_path / "body.bin"
    path.write_bytes(b"abc")
    fd = os.open(path, os.O_RDONLY)
    ours, theirs = socket.socketpair()
    other, otherPeer = socket.socketpair()
    try:
        theirs.setblocking(False)
        transport: Any = lacking(ours)
        writer = TransportWriter(transport)
        assert not writer._plain
        writer.write(b"hello")
        assert transport.writes == [b"hello"]
        with pytest.raises(BlockingIOError):
            theirs.recv(10)  # nothing went through
        assert writer.written == 5
        assert writer.sendFile(fd, 0, 3) is None
        assert writer.queued() is None
        assert writer.delivered() == -1
        writer.waitUntilWritable()
        if name != "startWriting":
            assert transport.startedWriting == 0
        # The verdict is kept per class: a second connection is not checked.
        assert _writethrough._verdicts[lacking] is False
        second = TransportWriter(lacking(other))
        assert not second._plain
        assert checks == [lacking]
    finally:
        _writethrough._verdicts.pop(lacking, None)
        os.close(fd)
        for skt in (ours, theirs, other, otherPeer):
            skt.close()


def test_completeFakeIsPlain() -> None:
    """The fake above, with nothing missing, gets write-through."""
    ours, theirs = socket.socketpair()
    try:
        theirs.setblocking(False)
        transport = _FakeTCP(ours)
        writer = TransportWriter(transport)
        assert writer._plain
        writer.write(b"hello")
        assert transport.writes == []
        assert theirs.recv(10) == b"hello"
        assert writer.delivered() == 5
    finally:
        _writethrough._verdicts.pop(_FakeTCP, None)
        ours.close()
        theirs.close()


def test_noSocketFallsBackForThatConnectionOnly() -> None:
    """
    A connection whose socket is gone (or not where it was) writes through
    the transport, without condemning its class.
    """
    ours, theirs = socket.socketpair()
    try:
        transport = _FakeTCP(ours)
        del transport.socket
        writer = TransportWriter(transport)
        assert not writer._plain
        writer.write(b"hello")
        assert transport.writes == [b"hello"]
        assert writer.delivered() == -1
        assert _writethrough._verdicts[_FakeTCP] is True
    finally:
        _writethrough._verdicts.pop(_FakeTCP, None)
        ours.close()
        theirs.close()
