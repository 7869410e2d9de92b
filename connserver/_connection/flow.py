"""
``Flow``: a connection's reading and writing pauses, and the batching of
its writes.

Two kinds of backpressure meet here (RFC 9112 §9.5: rely on flow control).
Write backpressure comes from the transport, which calls the protocol's
``pauseProducing`` when its buffer is full; ``writePaused`` records it, and
while it holds no new request is dispatched, so parsed-ahead requests wait,
the parser's buffer fills and reading pauses.  Read backpressure is ours:
reading from the socket pauses while a body consumer paused or too much is
read ahead (``setReading``), so that an unread body or a pipeline flood
costs bounded memory.

Writes made while the protocol runs a round are gathered (``gathering``)
and sent as one write (``flush``) at the end of the reactor's turn, with
the answers of every other connection the turn served (``afterTurn``: the
client is woken once, not once per answer), or once ``BATCH_WRITES``
writes or ``BATCH_BYTES`` are gathered, so that the transport's
backpressure still bites: a pipeline of small requests is answered in one
packet.  Whatever writes or closes otherwise (a streamed body, a
sendfile, the closer, a takeover) flushes first.  Only Twisted's own TCP
transport waits for the turn's end; on others (TLS, a test's in-memory
transport) the gathered bytes go at the round's end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from connserver._connection.timer import Phase
from connserver._http.state import ConnectionState, ExchangeState
from connserver._twisted.afterturn import AfterTurn, afterTurnOf
from connserver._twisted.writethrough import WOULD_BLOCK, TransportWriter

__all__ = ["BATCH_BYTES", "BATCH_WRITES", "READ_AHEAD_LIMIT", "WOULD_BLOCK", "Flow"]

#: Read no further ahead than this while a handler is not consuming: the
#: bound on memory per connection for unread bodies and pipelined heads.
READ_AHEAD_LIMIT = 64 * 1024

#: Bytes and writes gathered from one round of requests before they are
#: written anyway: one queue of pipelined answers (maxPipelinedRequests'
#: default) in one packet, and the transport's backpressure at most that
#: late.
BATCH_BYTES = 16 * 1024
BATCH_WRITES = 16


@implementer(IPushProducer)
class Flow:
    """
    The pauses in each direction and the write batch of one connection
    (``conn``, an ``HTTPServerProtocol``).  It is the transport's streaming
    producer: the transport pauses it when its buffer is full and resumes
    it when it drained.  ``attach`` gives it the transport; ``detach`` drops
    it when the connection is gone, after which writes go nowhere.
    """

    __slots__ = (
        "_batchBytes",
        "_conn",
        "_out",
        "_transport",
        "_turn",
        "batch",
        "gathering",
        "queuedForTurn",
        "readPaused",
        "writePaused",
    )

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._out: TransportWriter | None = None
        self._transport: Any = None
        #: Reading from the socket is paused (ours: a consumer, read-ahead).
        self.readPaused = False
        #: The transport paused us: its buffer is full.
        self.writePaused = False
        #: Inside a round (the protocol sets it): writes are gathered, and
        #: leave at the round's end.
        self.gathering = False
        #: Writes gathered in this round (None between rounds: an idle
        #: connection holds no list).
        self.batch: list[bytes] | None = None
        self._batchBytes = 0
        #: The reactor's end-of-turn queue (plain TCP only), and whether this
        #: flow waits in it.
        self._turn: AfterTurn | None = None
        self.queuedForTurn = False

    def attach(self, transport: Any) -> TransportWriter:
        """Write to ``transport`` from now on."""
        self._transport = transport
        out = self._out = TransportWriter(transport)
        if out.plainTCP:
            self._turn = afterTurnOf(transport.reactor)
        return out

    def detach(self) -> None:
        """The transport is gone: drop the batch, write nothing more."""
        self._out = None
        self._transport = None
        self.batch = None
        self._batchBytes = 0

    # -- writing -----------------------------------------------------------

    def send(self, data: bytes) -> None:
        """
        Queue ``data`` for the client: gathered inside a round (up to
        ``BATCH_BYTES`` or ``BATCH_WRITES``), otherwise written at once.
        """
        if self.gathering:
            batch = self.batch
            if batch is None:
                batch = self.batch = []
            batch.append(data)
            self._batchBytes += len(data)
            if self._batchBytes >= BATCH_BYTES or len(batch) >= BATCH_WRITES:
                self.flush()
        elif self.batch is not None:
            # Gathered bytes wait for the turn's end: these follow them.
            self.batch.append(data)
            self.flush()
        else:
            out = self._out
            if out is not None:
                out.write(data)

    def gathered(self, call: Callable[[Any], object], arg: Any) -> None:
        """
        ``call(arg)`` with its writes gathered as inside a round (an
        asynchronous handler's answer, written outside one), then
        ``endRound``.
        """
        if self.gathering:
            call(arg)
            return
        self.gathering = True
        try:
            call(arg)
        finally:
            self.gathering = False
            if self.batch is not None:
                self.endRound()

    def endRound(self) -> None:
        """
        The round is over: what it gathered leaves at the end of the
        reactor's turn (plain TCP), or now.
        """
        turn = self._turn
        if turn is None or turn.atOnce():
            self.flush()
        elif not self.queuedForTurn:
            self.queuedForTurn = True
            turn.add(_flushQueued, self)

    def flush(self) -> None:
        """Write what is gathered now (a head before a sendfile, a close)."""
        batch = self.batch
        if batch is None:
            return
        data = batch[0] if len(batch) == 1 else b"".join(batch)
        self.batch = None
        self._batchBytes = 0
        out = self._out
        if out is not None:
            out.write(data)

    def sendFile(self, fd: int, offset: int, count: int) -> int | None:
        """
        ``sendfile`` through the transport (``TransportWriter.sendFile``),
        after whatever is gathered (the head goes first); None when the
        transport cannot.
        """
        out = self._out
        if out is None:
            return None
        if self.batch is not None:
            self.flush()
        return out.sendFile(fd, offset, count)

    def waitUntilWritable(self) -> None:
        """Have the transport resume us once the socket takes more."""
        if self._out is not None:
            self._out.waitUntilWritable()

    def delivered(self) -> int:
        """
        Bytes written that have left the transport's buffer, or -1 when the
        transport does not say (then sendTimeout is an absolute deadline).
        """
        out = self._out
        return -1 if out is None else out.delivered()

    # -- IPushProducer: the transport's write backpressure -------------------

    def pauseProducing(self) -> None:
        """The transport's buffer is full: stop producing, arm sendTimeout."""
        conn = self._conn
        if self.writePaused or conn.state is _C_CLOSED:
            return
        self.writePaused = True
        queue = conn.pipeline.queue
        front = queue[0] if queue else None
        if front is not None and front.streamed is not None:
            front.streamed.producer.pauseProducing()
        conn.timer.refreshTimer()

    def resumeProducing(self) -> None:
        """The transport drained: write progress was made."""
        conn = self._conn
        if not self.writePaused or conn.state is _C_CLOSED:
            return
        self.writePaused = False
        timer = conn.timer
        if timer.phase is _PH_SEND:
            # Progress: a pause that follows (even at once, inside the
            # producer's next write) starts a fresh sendTimeout.
            timer.clear()
        if conn.closing is not None and conn.closing.flushed():
            return
        queue = conn.pipeline.queue
        front = queue[0] if queue else None
        if front is not None and front.streamed is not None:
            front.streamed.producer.resumeProducing()
        if front is not None and front.state is _X_QUEUED:
            # Requests wait while the client does not read (RFC 9112 §9.5:
            # rely on flow control); now they may go on.
            conn.processEvents()
        else:
            timer.refreshTimer()

    def stopProducing(self) -> None:
        """The transport is going away; ``connectionLost`` does the rest."""

    # -- reading -----------------------------------------------------------

    def setReading(self, pause: bool) -> None:
        """Pause or resume reading from the socket (no call if unchanged)."""
        if pause is not self.readPaused and self._transport is not None:
            self.readPaused = pause
            if pause:
                self._transport.pauseProducing()
            else:
                self._transport.resumeProducing()


def _flushQueued(flow: Flow) -> None:
    flow.queuedForTurn = False
    flow.flush()


_C_CLOSED = ConnectionState.CLOSED
_PH_SEND = Phase.SEND
_X_QUEUED = ExchangeState.QUEUED
