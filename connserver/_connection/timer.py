"""
``PhaseTimer``: the one timer of a connection.

A connection waits for one thing at a time (docs/architecture.md, Timers):
a request head, body bytes, the client to read, the next request, the end
of a lingering close, the end of a close.  Each is a :class:`Phase` with its
own timeout and outcome.  Which phase applies to an open connection is a
pure function of a few facts (:func:`choosePhase`, tested as a table); this
object keeps the deadline.

It is lazy, so that a busy keep-alive connection causes no timer churn: at
most one ``DelayedCall`` is pending; progress only moves the deadline later
(:meth:`PhaseTimer.bump`), and the call, when it fires early, re-arms itself
for what is left.  A phase ended by the protocol just clears the phase; the
pending call then fires into nothing.
"""

from __future__ import annotations

from enum import Enum
from heapq import heappop, heappush
from typing import Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from connserver._http.state import ConnectionState
from connserver._twisted.reactor import cancelCall

__all__ = ["Phase", "PhaseTimer", "TimerOwner", "TimerQueue", "choosePhase"]


class Phase(Enum):
    """What the connection is waiting for, each with its own timeout."""

    #: requestHeadTimeout: a complete request head (408, or a silent close).
    HEAD = "head"
    #: bodyTimeout: more request body (408).
    BODY = "body"
    #: sendTimeout: the client to take response bytes (abort).
    SEND = "send"
    #: idleTimeout (drainGraceTimeout while draining): the next request.
    IDLE = "idle"
    #: lingerTimeout: the end of the lingering read after a half-close.
    LINGER = "linger"
    #: abortTimeout: the transport to go after a clean close was asked.
    ABORT = "abort"
    #: handlerTimeout: the handler to start its response (503, or an abort).
    HANDLER = "handler"


_WAITING = ConnectionState.WAITING
_READING_HEAD = ConnectionState.READING_HEAD
_ACCEPTED = ConnectionState.ACCEPTED


def choosePhase(
    state: ConnectionState,
    writePaused: bool,
    hasFront: bool,
    frontReadingBody: bool,
    frontAwaitingHandler: bool,
    discardingBody: bool,
) -> Phase | None:
    """
    The phase that applies to an open (not closing) connection now.

    :param state: the connection's state.
    :param writePaused: the transport asked us to stop writing.
    :param hasFront: a request is in the pipeline.
    :param frontReadingBody: the front request's body is wanted, flowing
        and not complete.
    :param frontAwaitingHandler: the front request's handler has not
        answered yet and ``handlerTimeout`` applies.
    :param discardingBody: an answered request's unread body is drained.
    """
    if writePaused and (hasFront or state is _WAITING):
        # The client does not read what we wrote (sendTimeout).
        return _PH_SEND
    if hasFront:
        if frontReadingBody:
            return _PH_BODY
        if frontAwaitingHandler:
            return _PH_HANDLER
        return None
    if discardingBody:
        return _PH_BODY
    if state is _READING_HEAD or state is _ACCEPTED:
        return _PH_HEAD
    if state is _WAITING:
        return _PH_IDLE
    return None


class TimerOwner(Protocol):
    """Who is told when a phase ends (a connection)."""

    def phaseExpired(self, phase: Phase) -> None:
        """The deadline of ``phase`` was reached: its outcome."""


class TimerQueue:
    """
    The deadlines of many ``PhaseTimer``s behind one ``DelayedCall``.

    A reactor's ``DelayedCall`` costs about 450 bytes (an instance dict, the
    bound method, an args tuple and a kwargs dict); a factory with 10,000
    idle keep-alive connections would hold 10,000 of them.  Here each
    pending deadline is one tuple in a heap, and one call is armed for the
    earliest.  When it fires, the entries due by its time are run in order
    of deadline (then of scheduling); a later one is left to the next call,
    so that calls the reactor holds for other work keep their order.  An
    entry that a sooner deadline replaced stays in the heap until its time
    and is skipped then; once no timer has a live entry the call is
    cancelled and the heap emptied, so nothing is left pending.
    """

    __slots__ = ("_call", "_callAt", "_firing", "_heap", "_live", "_seq", "clock")

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, PhaseTimer]] = []
        self._seq = 0
        #: Timers with a live entry.
        self._live = 0
        self._call: IDelayedCall | None = None
        self._callAt = 0.0
        self._firing = False

    def add(self, timer: PhaseTimer, due: float) -> int:
        """An entry for ``timer`` at ``due``; its number (``timer._seq``)."""
        seq = self._seq = self._seq + 1
        heappush(self._heap, (due, seq, timer))
        if timer._seq is None:
            self._live += 1
        call = self._call
        if not self._firing and (call is None or due < self._callAt):
            # (While firing, the call for the next entry is armed after.)
            if call is not None:
                call.cancel()
            self._arm(due)
        return seq

    def drop(self) -> None:
        """A timer let go of its entry: with none live, nothing stays armed."""
        self._live -= 1
        if self._live == 0:
            self._heap.clear()
            call, self._call = self._call, None
            cancelCall(call)

    def _arm(self, due: float) -> None:
        self._callAt = due
        self._call = self.clock.callLater(
            max(0.0, due - self.clock.seconds()), self._fire
        )

    def _fire(self) -> None:
        self._call = None
        heap = self._heap
        limit = self._callAt
        self._firing = True
        try:
            while heap and heap[0][0] <= limit:
                _, seq, timer = heappop(heap)
                if timer._seq == seq:
                    timer._seq = None
                    self._live -= 1
                    timer._fired()
        finally:
            self._firing = False
            while heap and heap[0][2]._seq != heap[0][1]:
                heappop(heap)  # replaced or cancelled: nothing to arm for
            if heap and self._call is None:
                self._arm(heap[0][0])


class PhaseTimer:
    """
    One phase at a time, its deadline, and at most one live entry in the
    ``TimerQueue``; ``owner.phaseExpired(phase)`` runs when the deadline of
    the phase is reached.  (The owner, not a bound method, is kept: one
    object less for each of thousands of idle connections.)
    """

    __slots__ = ("_clock", "_deadline", "_due", "_owner", "_queue", "_seq", "phase")

    def __init__(self, queue: TimerQueue, owner: TimerOwner) -> None:
        self._queue = queue
        self._clock = queue.clock
        self._owner = owner
        #: The running phase, or None.
        self.phase: Phase | None = None
        self._deadline = 0.0
        #: The number of this timer's live queue entry, and its time.
        self._seq: int | None = None
        self._due = 0.0

    def start(self, phase: Phase, timeout: float | None) -> None:
        """Make ``phase`` the running one, due in ``timeout`` seconds (None: no limit)."""
        if timeout is None:
            self.phase = None
            return
        self.phase = phase
        deadline = self._deadline = self._clock.seconds() + timeout
        if self._seq is None or self._due > deadline:
            # None pending, or sooner: a new entry (a later deadline only
            # moves _deadline, and the entry re-arms when it comes).
            self._seq = self._queue.add(self, deadline)
            self._due = deadline

    def bump(self, timeout: float | None) -> None:
        """Progress: the running phase is due ``timeout`` seconds from now."""
        if timeout is not None:
            self._deadline = self._clock.seconds() + timeout

    def extendTo(self, deadline: float) -> None:
        """
        The running phase is due at ``deadline`` (an absolute time): later
        costs nothing, as with :meth:`bump`; sooner than the pending entry
        makes a new entry.
        """
        self._deadline = deadline
        if self._seq is not None and deadline < self._due:
            self._seq = self._queue.add(self, deadline)
            self._due = deadline

    def clear(self) -> None:
        """No phase runs now (a pending entry fires into nothing, re-arms none)."""
        self.phase = None

    def cancel(self) -> None:
        """No phase, and no pending entry: the connection is gone."""
        self.phase = None
        if self._seq is not None:
            self._seq = None
            self._queue.drop()

    def _fired(self) -> None:
        phase = self.phase
        if phase is None:
            return
        now = self._clock.seconds()
        if now < self._deadline:
            # The deadline moved later since the entry was made.
            self._seq = self._queue.add(self, self._deadline)
            self._due = self._deadline
            return
        self.phase = None
        self._owner.phaseExpired(phase)


# Enum members as module globals: looking a member up on its Enum class
# costs a descriptor call (about 70 ns), and the request path reads these
# several times per request.
_PH_BODY = Phase.BODY
_PH_HANDLER = Phase.HANDLER
_PH_HEAD = Phase.HEAD
_PH_IDLE = Phase.IDLE
_PH_SEND = Phase.SEND
