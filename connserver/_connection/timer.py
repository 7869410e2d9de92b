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
from typing import Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from connserver._http.state import ConnectionState

__all__ = ["Phase", "PhaseTimer", "TimerOwner", "choosePhase"]


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


class PhaseTimer:
    """
    One phase at a time, its deadline, and at most one pending call;
    ``owner.phaseExpired(phase)`` runs when the deadline of the phase is
    reached.  (The owner, not a bound method, is kept: one object less for
    each of thousands of idle connections.)
    """

    __slots__ = ("_call", "_clock", "_deadline", "_due", "_owner", "phase")

    def __init__(self, clock: IReactorTime, owner: TimerOwner) -> None:
        self._clock = clock
        self._owner = owner
        #: The running phase, or None.
        self.phase: Phase | None = None
        self._deadline = 0.0
        self._call: IDelayedCall | None = None
        self._due = 0.0

    def start(self, phase: Phase, timeout: float | None) -> None:
        """Make ``phase`` the running one, due in ``timeout`` seconds (None: no limit)."""
        if timeout is None:
            self.phase = None
            return
        self.phase = phase
        deadline = self._deadline = self._clock.seconds() + timeout
        call = self._call
        if call is None:
            self._call = self._clock.callLater(timeout, self._fired)
            self._due = deadline
        elif self._due > deadline:
            # Sooner: a new call.  (DelayedCall.reset to an earlier time makes
            # the reactor scan every pending call: with 10,000 idle
            # connections that is most of the cost of closing one.)
            call.cancel()
            self._call = self._clock.callLater(timeout, self._fired)
            self._due = deadline

    def bump(self, timeout: float | None) -> None:
        """Progress: the running phase is due ``timeout`` seconds from now."""
        if timeout is not None:
            self._deadline = self._clock.seconds() + timeout

    def extendTo(self, deadline: float) -> None:
        """
        The running phase is due at ``deadline`` (an absolute time): later
        costs nothing, as with :meth:`bump`; sooner than the pending call
        makes a new call.
        """
        self._deadline = deadline
        call = self._call
        if call is not None and deadline < self._due:
            call.cancel()
            delay = max(0.0, deadline - self._clock.seconds())
            self._call = self._clock.callLater(delay, self._fired)
            self._due = deadline

    def clear(self) -> None:
        """No phase runs now (a pending call fires into nothing, re-arms none)."""
        self.phase = None

    def cancel(self) -> None:
        """No phase, and no pending call: the connection is gone."""
        self.phase = None
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    def _fired(self) -> None:
        self._call = None
        phase = self.phase
        if phase is None:
            return
        now = self._clock.seconds()
        if now < self._deadline:
            # The deadline moved later since the call was made.
            self._call = self._clock.callLater(self._deadline - now, self._fired)
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
