"""
``FileBodyProducer``: the one producer that streams a file as a response
body, for ``StaticFiles`` and for handlers that answer with an open file.

It sends a whole file from its current position, a byte range, or several
ranges with framing bytes between them (``multipart/byteranges``).  It never
reads past what it announced, bounds the work it does in one reactor turn,
and follows its consumer's backpressure (``IPushProducer``).  When the
consumer declares :class:`ISendfileConsumer` the bytes go from the page
cache to the socket with the kernel's ``sendfile``; otherwise, or as soon as
the consumer says ``sendfile`` cannot be used, it reads blocks and writes
them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import BinaryIO

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IPushProducer,
    IReactorTime,
)
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from connserver._twisted.reactor import cancelCall, defaultReactor
from connserver._twisted.writethrough import WOULD_BLOCK

__all__ = [
    "BLOCKS_PER_TURN",
    "BLOCK_BYTES",
    "WOULD_BLOCK",
    "FileBodyProducer",
    "ISendfileConsumer",
]

#: Bytes read (and written to the consumer) at a time when not using sendfile.
BLOCK_BYTES = 256 * 1024
#: Blocks read or ``sendfile`` calls made in one reactor turn before the
#: producer yields (``callLater(0)``), so that one fast reader cannot hold
#: the reactor while the socket keeps taking bytes.
BLOCKS_PER_TURN = 4

#: The check hook: called with the descriptor after every block is read
#: (before it is written) or sent, and when the file ends before the
#: announced length; it raises to fail the body.
FileCheck = Callable[[int], None]


class ISendfileConsumer(IConsumer):
    """
    A consumer that can send file bytes itself, with the kernel's
    ``sendfile``, instead of being handed them by ``write``.

    A producer that finds this interface provided may call :meth:`sendfile`
    instead of reading and writing; it must not mix the two for bytes that
    overlap, and it falls back to ``write`` for good once ``sendfile`` has
    returned None.
    """

    def sendfile(fd: int, offset: int, count: int) -> int | None:
        """
        Send up to ``count`` bytes of the open file ``fd`` from ``offset``,
        after everything written before.

        :return: the bytes sent (between 1 and ``count``; 0 only when the
            file ended at ``offset``);
            ``WOULD_BLOCK`` (from ``connserver._twisted.writethrough``) when nothing
            could be sent now: the consumer has then paused the producer
            (``pauseProducing``) and resumes it when the socket can take
            more, and the producer calls again from the same offset;
            or None when ``sendfile`` cannot be used for this body (TLS,
            chunked framing, the connection is going): the producer must
            send the rest with ``write``.
        """


_Part = tuple[bytes, int, int]


def _partsAndLength(
    offset: int | None,
    length: int | None,
    parts: Sequence[_Part] | None,
    trailer: bytes,
) -> tuple[list[_Part], int | str]:
    """
    The parts to send and the body length, from either ``parts`` or
    ``offset``/``length`` (see :class:`FileBodyProducer`), or ValueError;
    a part's offset or count of -1 means "where the file stands" or "to
    its end".
    """
    if parts is not None:
        if offset is not None or length is not None:
            raise ValueError("give parts, or offset and length, not both")
        parts = list(parts)
        total = sum(len(prefix) + count for prefix, _, count in parts)
        return parts, total + len(trailer)
    if (offset is not None and offset < 0) or (length is not None and length < 0):
        raise ValueError("offset and length must be >= 0")
    whole = (b"", -1 if offset is None else offset, -1 if length is None else length)
    return [whole], UNKNOWN_LENGTH if length is None else length


@implementer(IBodyProducer, IPushProducer)
class FileBodyProducer:
    """
    Streams an open file (or parts of it) to a consumer.

    :param file: a binary file object, read with its own ``read`` from its
        current position (or from each part's offset) and left open for its
        owner to close; or a descriptor, read with ``os.pread`` and *owned*
        by the producer, which closes it when the body is done, has failed
        or is stopped (or when the producer is collected unstarted); or None
        for a body that is never sent (HEAD, 304), which only carries
        ``length`` and fails if started.
    :param length: how many bytes to send from ``offset`` (or the current
        position); None sends up to the end of the file, and then the
        length is ``UNKNOWN_LENGTH``.  Never more than this is read, even if
        the file grows.
    :param paused: start paused (the consumer is not writable yet).
    :param clock: what schedules the next turn (``callLater(0)``); the
        global reactor by default.
    :param offset: where the bytes start, instead of the current position.
    :param parts: instead of ``offset``/``length``: ``(prefix, offset,
        count)`` triples, each sent as ``prefix`` then ``count`` file bytes
        from ``offset``; ``trailer`` is written after the last one.
        ``length`` is then their total.
    :param check: called with the descriptor (-1 for a file object that
        has none) after every block is read (before it is written) or sent,
        and when the file ends early; an exception it raises fails the body
        (``StaticFiles`` raises ``FileChangedError`` when the file's
        identity moved).
    :param blockBytes: bytes read at a time when not using sendfile.
    :param blocksPerTurn: blocks read (or sendfile calls) before yielding
        to the reactor; a consumer that does work per block (compression)
        gives smaller numbers, to bound the time of one turn.

    A file that ends before the announced length completes the Deferred
    when there is no ``check`` (or when it does not raise): the bytes sent
    are then fewer than announced, which the consumer's framing check
    turns into an aborted connection.  Nothing is ever padded.
    """

    def __init__(
        self,
        file: BinaryIO | int | None,
        length: int | None = None,
        paused: bool = False,
        clock: IReactorTime | None = None,
        *,
        offset: int | None = None,
        parts: Sequence[_Part] | None = None,
        trailer: bytes = b"",
        check: FileCheck | None = None,
        blockBytes: int = BLOCK_BYTES,
        blocksPerTurn: int = BLOCKS_PER_TURN,
    ) -> None:
        self._fd: int | None = None
        self._blockBytes = blockBytes
        self._blocksPerTurn = blocksPerTurn
        self._parts, self.length = _partsAndLength(offset, length, parts, trailer)
        self._file: BinaryIO | None = None
        if isinstance(file, int):
            self._fd = file
            if any(start < 0 for _, start, _ in self._parts):
                # A descriptor is read with pread: start where it stands.
                here = os.lseek(file, 0, os.SEEK_CUR)
                self._parts = [
                    (prefix, here if start < 0 else start, count)
                    for prefix, start, count in self._parts
                ]
        else:
            self._file = file
        self._trailer = trailer
        self._check = check
        if clock is None:
            clock = defaultReactor()
        assert clock is not None
        self._clock: IReactorTime = clock
        self._paused = paused
        self._stopped = False
        self._producing = False
        self._again = False
        self._call: IDelayedCall | None = None
        self._consumer: IConsumer | None = None
        self._done: Deferred[None] | None = None
        self._sendfile: Callable[[int, int, int], int | None] | None = None
        #: The descriptor that pread and sendfile use (-1: none).
        self._readFd = -1 if self._fd is None else self._fd
        self._part = -1
        self._offset = 0
        #: Bytes left in the current part; -1 up to the end of the file.
        self._remaining = 0

    def __del__(self) -> None:
        # A response that was never started (the connection died first)
        # still releases its descriptor.
        fd = getattr(self, "_fd", None)
        if fd is not None:
            self._fd = None
            os.close(fd)

    # IBodyProducer / IPushProducer ------------------------------------

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._consumer = consumer
        done: Deferred[None] = Deferred()
        self._done = done
        if self._fd is None and self._file is None:
            done.errback(ValueError("this body has no file: it only has a length"))
            return done
        if self._file is not None:
            try:
                self._readFd = self._file.fileno()
            except (OSError, ValueError, AttributeError):
                self._readFd = -1  # not an OS file (BytesIO): read only
        if self._readFd >= 0 and ISendfileConsumer.providedBy(consumer):
            self._sendfile = consumer.sendfile
        self._produce()
        return done

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        if self._stopped:
            return
        self._paused = False
        done = self._done
        if done is not None and not done.called and self._call is None:
            self._produce()

    def stopProducing(self) -> None:
        # IBodyProducer: after stopProducing the Deferred never fires.
        self._stopped = True
        call, self._call = self._call, None
        cancelCall(call)
        self._close()

    # The work -------------------------------------------------------------

    def _scheduled(self) -> None:
        self._call = None
        self._produce()

    def _produce(self) -> None:
        if self._producing:
            # Resumed from inside our own write or sendfile: the loop below
            # goes on, or runs again if it had decided to stop.
            self._again = True
            return
        self._producing = True
        try:
            while True:
                self._again = False
                self._produceSome()
                if not self._again or self._call is not None:
                    break
        finally:
            self._producing = False

    def _produceSome(self) -> None:
        consumer, done = self._consumer, self._done
        assert consumer is not None and done is not None
        blocks = 0
        while not self._paused and not self._stopped and not done.called:
            if self._remaining == 0:
                if not self._nextPart(consumer):
                    return
                continue
            if blocks == self._blocksPerTurn:
                self._call = self._clock.callLater(0, self._scheduled)
                return
            blocks += 1
            if self._sendfile is not None and self._remaining > 0:
                if not self._sendSome():
                    return
                if self._sendfile is None:
                    blocks -= 1  # refused, nothing sent: not a block
                continue
            remaining = self._remaining
            size = self._blockBytes
            want = size if remaining < 0 else min(size, remaining)
            try:
                if self._file is not None:
                    data = self._file.read(want)
                else:
                    data = os.pread(self._readFd, want, self._offset)
            except Exception:
                self._fail(Failure())
                return
            if not data:
                if remaining < 0:
                    self._remaining = 0  # the end of a to-the-end part
                    continue
                self._endedEarly()
                return
            if self._check is not None and not self._checked():
                return
            self._offset += len(data)
            if remaining > 0:
                self._remaining = remaining - len(data)
            consumer.write(data)

    def _nextPart(self, consumer: IConsumer) -> bool:
        """Start the next part, or finish: False when the loop must stop."""
        self._part += 1
        if self._part == len(self._parts):
            if self._trailer:
                consumer.write(self._trailer)
            self._finish()
            return False
        prefix, start, count = self._parts[self._part]
        file = self._file
        try:
            if file is not None:
                if start >= 0:
                    file.seek(start)
                elif self._sendfile is not None and count > 0:
                    start = file.tell()
        except Exception:
            if start >= 0:
                self._fail(Failure())
                return False
            self._sendfile = None  # no position to send from: read
        self._offset = max(start, 0)
        self._remaining = count
        if prefix:
            consumer.write(prefix)
        return True

    def _sendSome(self) -> bool:
        """One ``sendfile`` call: False when the loop must stop."""
        assert self._sendfile is not None
        sent = self._sendfile(self._readFd, self._offset, self._remaining)
        if sent is None:
            # Not usable for this body: read and write from here on.
            self._sendfile = None
            if self._file is not None:
                try:
                    self._file.seek(self._offset)
                except Exception:
                    self._fail(Failure())
                    return False
            return True
        if sent == WOULD_BLOCK:
            # The consumer paused us and resumes us when it can take more.
            return False
        if sent <= 0:
            self._endedEarly()
            return False
        if self._check is not None and not self._checked():
            return False
        sent = min(sent, self._remaining)
        self._offset += sent
        self._remaining -= sent
        return True

    def _checked(self) -> bool:
        """Run the check hook: False (and the body failed) when it raised."""
        assert self._check is not None
        try:
            self._check(self._readFd)
        except Exception:
            self._fail(Failure())
            return False
        return True

    def _endedEarly(self) -> None:
        """The file ended before the announced length."""
        if self._check is not None and not self._checked():
            return
        # Complete short: the consumer's framing check aborts the response.
        self._finish()

    def _finish(self) -> None:
        self._close()
        assert self._done is not None
        self._done.callback(None)

    def _fail(self, failure: Failure) -> None:
        self._close()
        assert self._done is not None
        self._done.errback(failure)

    def _close(self) -> None:
        # Only a descriptor given to the producer is its own to close.
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
