"""
``FileBodyProducer`` alone, with fake consumers and a ``Clock``: with and
without ``sendfile``, pause and resume, stop, a file shorter than
announced, ranges and multipart parts, ``WOULD_BLOCK``, the check hook, and
the bounded work per reactor turn.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer
from zope.interface.verify import verifyClass, verifyObject

from connserver._connection.fileproducer import (
    BLOCK_BYTES,
    BLOCKS_PER_TURN,
    WOULD_BLOCK,
    FileBodyProducer,
    ISendfileConsumer,
)
from connserver._twisted import writethrough as _writethrough

from ._helpers import FakeConsumer as WritingConsumer  # a consumer without sendfile
from ._helpers import TurnClock


@implementer(ISendfileConsumer)
class SendfileConsumer(WritingConsumer):
    """
    A consumer that offers sendfile: "sends" with pread into its record,
    at most ``cap`` bytes a call; ``script`` gives results to return
    instead (``WOULD_BLOCK`` pauses the producer first, as the contract
    says; None makes the producer fall back to write).
    """

    def __init__(self, cap: int = 1 << 30, script: list[int | None] | None = None):
        super().__init__()
        self.cap = cap
        self.script = list(script or [])
        self.calls: list[tuple[int, int, int]] = []

    def sendfile(self, fd: int, offset: int, count: int) -> int | None:
        self.calls.append((fd, offset, count))
        if self.script:
            result = self.script.pop(0)
            if result == WOULD_BLOCK:
                assert self.producer is not None
                self.producer.pauseProducing()
                return WOULD_BLOCK
            if result is None:
                return None
        data = os.pread(fd, min(count, self.cap), offset)
        self.data.append(data)
        return len(data)


def _peek(deferred: Deferred[Any]) -> list[object]:
    """What ``deferred`` fired with so far, leaving its result in place."""
    results: list[object] = []

    def keep(value: object) -> object:
        results.append(value)
        return value

    deferred.addBoth(keep)
    return results


def result(deferred: Deferred[Any]) -> object:
    """What ``deferred`` fired with (it must have fired)."""
    results = _peek(deferred)
    assert len(results) == 1, "the Deferred has not fired"
    value = results[0]
    if isinstance(value, Failure):
        deferred.addErrback(lambda _: None)  # handled here
    return value


def fired(deferred: Deferred[Any]) -> bool:
    return bool(_peek(deferred))


@pytest.fixture
def content() -> bytes:
    return os.urandom(3 * BLOCK_BYTES + 1234)


@pytest.fixture
def path(tmp_path: Path, content: bytes) -> Path:
    p = tmp_path / "body.bin"
    p.write_bytes(content)
    return p


@pytest.fixture
def file(path: Path) -> Iterator[BinaryIO]:
    with open(path, "rb") as f:
        yield f


def openFd(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def isOpen(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def run(producer: FileBodyProducer, consumer: Any, clock: TurnClock) -> Deferred[None]:
    """Start, register, and turn the clock until the body is done."""
    consumer.registerProducer(producer, True)
    done = producer.startProducing(consumer)
    for _ in range(1000):
        if fired(done):
            break
        clock.turn()
    return done


# -- interfaces -----------------------------------------------------------------


def test_interfaces(file: BinaryIO, clock: TurnClock) -> None:
    assert verifyClass(IBodyProducer, FileBodyProducer)
    assert verifyClass(IPushProducer, FileBodyProducer)
    producer = FileBodyProducer(file, 10, clock=clock)
    assert verifyObject(IBodyProducer, producer)
    assert ISendfileConsumer.extends(IConsumer)
    assert verifyClass(ISendfileConsumer, SendfileConsumer)
    assert WOULD_BLOCK is _writethrough.WOULD_BLOCK


def test_protocolDropInSignature(
    file: BinaryIO, content: bytes, clock: TurnClock
) -> None:
    """The protocol builds it as ``(fileBody, length, paused=, clock=)``."""
    producer = FileBodyProducer(file, len(content), paused=True, clock=clock)
    consumer = WritingConsumer()
    done = producer.startProducing(consumer)
    assert consumer.data == []  # started paused
    producer.resumeProducing()
    clock.turn()
    assert result(done) is None
    assert consumer.received() == content


# -- whole file, from its current position ---------------------------------------


def test_wholeFileWithoutSendfile(
    file: BinaryIO, content: bytes, clock: TurnClock
) -> None:
    file.seek(10)
    producer = FileBodyProducer(file, None, clock=clock)
    assert producer.length is UNKNOWN_LENGTH
    consumer = WritingConsumer()
    done = run(producer, consumer, clock)
    assert result(done) is None
    assert consumer.received() == content[10:]
    assert max(len(d) for d in consumer.data) == BLOCK_BYTES
    # A file object stays its owner's to close.
    assert not file.closed
    assert clock.getDelayedCalls() == []


def test_neverReadsPastTheLength(
    file: BinaryIO, content: bytes, clock: TurnClock
) -> None:
    producer = FileBodyProducer(file, BLOCK_BYTES + 7, clock=clock)
    assert producer.length == BLOCK_BYTES + 7
    consumer = WritingConsumer()
    assert result(run(producer, consumer, clock)) is None
    assert consumer.received() == content[: BLOCK_BYTES + 7]
    assert file.tell() == BLOCK_BYTES + 7


def test_wholeFileWithSendfile(
    file: BinaryIO, content: bytes, clock: TurnClock
) -> None:
    file.seek(100)
    producer = FileBodyProducer(file, len(content) - 100, clock=clock)
    consumer = SendfileConsumer()
    assert result(run(producer, consumer, clock)) is None
    assert consumer.received() == content[100:]
    assert consumer.calls == [(file.fileno(), 100, len(content) - 100)]


def test_unknownLengthIsNeverSentWithSendfile(
    file: BinaryIO, content: bytes, clock: TurnClock
) -> None:
    producer = FileBodyProducer(file, None, clock=clock)
    consumer = SendfileConsumer()
    assert result(run(producer, consumer, clock)) is None
    assert consumer.calls == []
    assert consumer.received() == content


def test_notAnOSFileIsWritten(content: bytes, clock: TurnClock) -> None:
    body = io.BytesIO(content)
    producer = FileBodyProducer(body, len(content), clock=clock)
    consumer = SendfileConsumer()
    assert result(run(producer, consumer, clock)) is None
    assert consumer.calls == []
    assert consumer.received() == content


def test_sendfileFallsBackToWrite(
    file: BinaryIO, content: bytes, clock: TurnClock
) -> None:
    """After None the rest goes with read/write, from where sendfile stopped."""
    producer = FileBodyProducer(file, len(content), clock=clock)
    consumer = SendfileConsumer(cap=1000, script=[1000, None])
    assert result(run(producer, consumer, clock)) is None
    assert len(consumer.calls) == 2
    assert consumer.received() == content
    assert len(consumer.data[0]) == 1000  # the sendfile part


def test_wouldBlockWaitsForResume(
    file: BinaryIO, content: bytes, clock: TurnClock
) -> None:
    producer = FileBodyProducer(file, len(content), clock=clock)
    consumer = SendfileConsumer(script=[WOULD_BLOCK])
    consumer.registerProducer(producer, True)
    done = producer.startProducing(consumer)
    assert consumer.calls == [(file.fileno(), 0, len(content))]
    assert consumer.data == []
    clock.turn()
    assert not fired(done)
    assert clock.getDelayedCalls() == []
    # The consumer resumes it when the socket can take more: same offset.
    producer.resumeProducing()
    assert consumer.calls[1] == (file.fileno(), 0, len(content))
    assert result(done) is None
    assert consumer.received() == content


# -- backpressure, stop ---------------------------------------------------------


def test_pauseAndResume(file: BinaryIO, content: bytes, clock: TurnClock) -> None:
    producer = FileBodyProducer(file, len(content), clock=clock)
    consumer = WritingConsumer(pauseEveryWrite=True)
    consumer.registerProducer(producer, True)
    done = producer.startProducing(consumer)
    assert len(consumer.data) == 1
    clock.turn()
    assert len(consumer.data) == 1  # paused: nothing more on its own
    for expected in (2, 3, 4):
        producer.resumeProducing()
        assert len(consumer.data) == expected
    assert not fired(done)
    producer.resumeProducing()  # finds the end of the file
    assert result(done) is None
    assert consumer.received() == content
    assert clock.getDelayedCalls() == []


def test_resumeFromInsideWrite(
    file: BinaryIO, content: bytes, clock: TurnClock
) -> None:
    """A consumer that pauses and resumes within write does not recurse."""
    producer = FileBodyProducer(file, len(content), clock=clock)

    @implementer(IConsumer)
    class Bouncing(WritingConsumer):
        def write(self, data: bytes) -> None:
            super().write(data)
            producer.pauseProducing()
            producer.resumeProducing()

    consumer = Bouncing()
    assert result(run(producer, consumer, clock)) is None
    assert consumer.received() == content


def test_resumedFromInsideWouldBlock(
    file: BinaryIO, content: bytes, clock: TurnClock
) -> None:
    """A consumer that pauses and at once resumes, then says WOULD_BLOCK."""
    producer = FileBodyProducer(file, len(content), clock=clock)

    @implementer(ISendfileConsumer)
    class Flapping(SendfileConsumer):
        def sendfile(self, fd: int, offset: int, count: int) -> int | None:
            if not self.calls:
                self.calls.append((fd, offset, count))
                producer.pauseProducing()
                producer.resumeProducing()
                return WOULD_BLOCK
            return super().sendfile(fd, offset, count)

    consumer = Flapping()
    done = producer.startProducing(consumer)
    assert result(done) is None
    assert consumer.received() == content


def test_stopNeverFiresAndLeavesNoCall(path: Path, clock: TurnClock) -> None:
    size = (BLOCKS_PER_TURN + 2) * BLOCK_BYTES
    path.write_bytes(os.urandom(size))
    fd = openFd(path)
    producer = FileBodyProducer(fd, size, clock=clock, offset=0)
    consumer = WritingConsumer()
    done = producer.startProducing(consumer)
    assert len(clock.getDelayedCalls()) == 1  # yielded after a turn of blocks
    producer.stopProducing()
    assert clock.getDelayedCalls() == []
    assert not isOpen(fd)  # its own descriptor is closed
    assert producer._fd is None
    producer.resumeProducing()
    clock.turn()
    assert not fired(done)
    assert len(consumer.data) == BLOCKS_PER_TURN


def test_stopWhilePaused(file: BinaryIO, content: bytes, clock: TurnClock) -> None:
    producer = FileBodyProducer(file, len(content), clock=clock)
    consumer = WritingConsumer(pauseEveryWrite=True)
    consumer.registerProducer(producer, True)
    done = producer.startProducing(consumer)
    producer.stopProducing()
    producer.resumeProducing()
    assert len(consumer.data) == 1
    assert not fired(done)
    assert not file.closed  # not its own: the protocol closes it


# -- a file that ends early -----------------------------------------------------


def test_shortFileCompletesShort(
    file: BinaryIO, content: bytes, clock: TurnClock
) -> None:
    """
    Without a check, a file shorter than announced completes with fewer
    bytes: the consumer's framing check aborts the response.
    """
    producer = FileBodyProducer(file, len(content) + 500, clock=clock)
    consumer = WritingConsumer()
    assert result(run(producer, consumer, clock)) is None
    assert consumer.received() == content


def test_shortFileWithSendfile(path: Path, content: bytes, clock: TurnClock) -> None:
    fd = openFd(path)
    producer = FileBodyProducer(fd, len(content) + 500, clock=clock, offset=0)
    consumer = SendfileConsumer()
    assert result(run(producer, consumer, clock)) is None
    assert consumer.received() == content
    assert consumer.calls[-1] == (fd, len(content), 500)  # sent 0: the end
    assert not isOpen(fd)


class Changed(Exception):
    pass


def test_checkFailsAShortFileWithoutWritingThePartialBlock(
    path: Path, content: bytes, clock: TurnClock
) -> None:
    fd = openFd(path)
    size = len(content)
    checked: list[int] = []

    def check(checkedFd: int) -> None:
        checked.append(checkedFd)
        if os.fstat(checkedFd).st_size != size:
            raise Changed()

    producer = FileBodyProducer(fd, size, clock=clock, offset=0, check=check)
    consumer = WritingConsumer(pauseEveryWrite=True)
    consumer.registerProducer(producer, True)
    done = producer.startProducing(consumer)
    os.truncate(path, BLOCK_BYTES + 10)
    producer.resumeProducing()
    failure = result(done)
    assert isinstance(failure, Failure)
    assert isinstance(failure.value, Changed)
    assert [len(d) for d in consumer.data] == [BLOCK_BYTES]
    assert set(checked) == {fd}
    assert not isOpen(fd)
    assert producer._fd is None


def test_checkRunsAfterEverySendfileCall(
    path: Path, content: bytes, clock: TurnClock
) -> None:
    fd = openFd(path)
    calls: list[int] = []

    def check(checkedFd: int) -> None:
        calls.append(checkedFd)
        if len(calls) == 2:
            raise Changed()

    producer = FileBodyProducer(fd, len(content), clock=clock, offset=0, check=check)
    consumer = SendfileConsumer(cap=1000)
    failure = result(run(producer, consumer, clock))
    assert isinstance(failure, Failure) and isinstance(failure.value, Changed)
    assert len(consumer.calls) == 2
    assert not isOpen(fd)


def test_readErrorFails(clock: TurnClock) -> None:
    class Broken(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            raise OSError(5, "Input/output error")

    producer = FileBodyProducer(Broken(), 10, clock=clock)  # type: ignore[arg-type]
    failure = result(run(producer, WritingConsumer(), clock))
    assert isinstance(failure, Failure) and isinstance(failure.value, OSError)


# -- ranges and parts (descriptors, owned) ----------------------------------------


@pytest.mark.parametrize("consumerType", [WritingConsumer, SendfileConsumer])
def test_range(
    path: Path, content: bytes, clock: TurnClock, consumerType: type[WritingConsumer]
) -> None:
    fd = openFd(path)
    first, count = BLOCK_BYTES - 3, BLOCK_BYTES + 10
    producer = FileBodyProducer(fd, count, clock=clock, offset=first)
    assert producer.length == count
    consumer = consumerType()
    assert result(run(producer, consumer, clock)) is None
    assert consumer.received() == content[first : first + count]
    assert not isOpen(fd)
    assert producer._fd is None
    if isinstance(consumer, SendfileConsumer):
        assert consumer.calls == [(fd, first, count)]


def test_descriptorStartsAtItsPosition(
    path: Path, content: bytes, clock: TurnClock
) -> None:
    fd = openFd(path)
    os.lseek(fd, 42, os.SEEK_SET)
    producer = FileBodyProducer(fd, 100, clock=clock)
    consumer = WritingConsumer()
    assert result(run(producer, consumer, clock)) is None
    assert consumer.received() == content[42:142]


@pytest.mark.parametrize("consumerType", [WritingConsumer, SendfileConsumer])
def test_partsWithPrefixesAndTrailer(
    path: Path, content: bytes, clock: TurnClock, consumerType: type[WritingConsumer]
) -> None:
    fd = openFd(path)
    parts = [(b"--a\r\n", 0, 10), (b"\r\n--b\r\n", BLOCK_BYTES * 2, BLOCK_BYTES)]
    producer = FileBodyProducer(fd, clock=clock, parts=parts, trailer=b"\r\n--end")
    expected = (
        b"--a\r\n"
        + content[:10]
        + b"\r\n--b\r\n"
        + content[2 * BLOCK_BYTES : 3 * BLOCK_BYTES]
        + b"\r\n--end"
    )
    assert producer.length == len(expected)
    consumer = consumerType()
    assert result(run(producer, consumer, clock)) is None
    assert consumer.received() == expected
    assert not isOpen(fd)


def test_partsWithAFileObject(file: BinaryIO, content: bytes, clock: TurnClock) -> None:
    parts = [(b"<", 5, 3), (b">", 1, 2)]
    producer = FileBodyProducer(file, clock=clock, parts=parts)
    consumer = WritingConsumer()
    assert result(run(producer, consumer, clock)) is None
    assert consumer.received() == b"<" + content[5:8] + b">" + content[1:3]


def test_partsExcludeOffsetAndLength(file: BinaryIO, clock: TurnClock) -> None:
    with pytest.raises(ValueError):
        FileBodyProducer(file, 10, clock=clock, parts=[(b"", 0, 1)])


def test_noFileOnlyCarriesALength(clock: TurnClock) -> None:
    producer = FileBodyProducer(None, 1234, clock=clock)
    assert producer.length == 1234
    producer.stopProducing()  # never started (HEAD, 304): harmless
    failure = result(
        FileBodyProducer(None, 5, clock=clock).startProducing(WritingConsumer())
    )
    assert isinstance(failure, Failure)


def test_unstartedDescriptorIsClosedWhenCollected(path: Path, clock: TurnClock) -> None:
    fd = openFd(path)
    producer = FileBodyProducer(fd, 10, clock=clock, offset=0)
    assert isOpen(fd)
    del producer
    assert not isOpen(fd)


# -- bounded work per reactor turn ------------------------------------------------


def test_yieldsToTheReactorBetweenTurns(
    path: Path, content: bytes, clock: TurnClock
) -> None:
    size = (2 * BLOCKS_PER_TURN + 1) * BLOCK_BYTES
    path.write_bytes(os.urandom(size))
    fd = openFd(path)
    producer = FileBodyProducer(fd, size, clock=clock, offset=0)
    consumer = WritingConsumer()
    done = producer.startProducing(consumer)
    assert len(consumer.data) == BLOCKS_PER_TURN
    assert len(clock.getDelayedCalls()) == 1
    # A resume while a turn is scheduled does not do the turn's work now.
    producer.resumeProducing()
    assert len(consumer.data) == BLOCKS_PER_TURN
    clock.turn()
    assert len(consumer.data) == 2 * BLOCKS_PER_TURN
    clock.turn()
    assert result(done) is None
    assert consumer.received() == path.read_bytes()
    assert clock.getDelayedCalls() == []


def test_sendfileCallsAreBoundedPerTurn(
    path: Path, content: bytes, clock: TurnClock
) -> None:
    fd = openFd(path)
    producer = FileBodyProducer(fd, len(content), clock=clock, offset=0)
    consumer = SendfileConsumer(cap=1000)
    done = producer.startProducing(consumer)
    assert len(consumer.calls) == BLOCKS_PER_TURN
    assert len(clock.getDelayedCalls()) == 1
    clock.turn()
    assert len(consumer.calls) == 2 * BLOCKS_PER_TURN
    producer.stopProducing()
    assert clock.getDelayedCalls() == []
    assert not fired(done)


def test_aRefusedSendfileIsNotABlock(path: Path, clock: TurnClock) -> None:
    """A consumer that says None at once still gets a whole turn of writes."""
    size = (BLOCKS_PER_TURN + 1) * BLOCK_BYTES
    path.write_bytes(os.urandom(size))
    fd = openFd(path)
    producer = FileBodyProducer(fd, size, clock=clock, offset=0)
    consumer = SendfileConsumer(script=[None])
    done = producer.startProducing(consumer)
    assert len(consumer.calls) == 1
    assert [len(d) for d in consumer.data] == [BLOCK_BYTES] * BLOCKS_PER_TURN
    clock.turn()
    assert result(done) is None
    assert consumer.received() == path.read_bytes()


def test_pausedWhileAYieldIsScheduled(
    file: BinaryIO, content: bytes, clock: TurnClock
) -> None:
    producer = FileBodyProducer(file, len(content), clock=clock)
    consumer = SendfileConsumer(cap=1000)
    done = producer.startProducing(consumer)
    assert len(clock.getDelayedCalls()) == 1
    producer.pauseProducing()
    clock.turn()
    assert len(consumer.calls) == BLOCKS_PER_TURN
    assert clock.getDelayedCalls() == []
    producer.resumeProducing()
    assert len(consumer.calls) == 2 * BLOCKS_PER_TURN
    producer.stopProducing()
    assert clock.getDelayedCalls() == []
    assert not fired(done)
