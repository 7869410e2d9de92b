"""
``ConnectionTimer``: the one timer of a connection, and what each phase's
end means for it.

Which phase applies is ``choosePhase``'s answer from the connection's facts
(``refreshTimer``); each phase has its own timeout (``arm``) and its own
outcome (``phaseExpired``): a 408, a silent close, an abort, a 503.  It is a
``PhaseTimer`` (one lazy ``DelayedCall``) that is its own owner, so that a
connection has one timer object, not two.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from connserver._connection.exchange import Exchange
from connserver._connection.timer import Phase, PhaseTimer, choosePhase
from connserver._http.errors import ProtocolError
from connserver._http.state import BodyState, ConnectionState, ExchangeState

__all__ = ["ConnectionTimer"]

_log = Logger(namespace="connserver")
_CLOSING = ConnectionState.CLOSING
_CLOSED = ConnectionState.CLOSED
_UPGRADED = ConnectionState.UPGRADED
_READING = BodyState.READING
_DISCARDING = BodyState.DISCARDING
_QUEUED = ExchangeState.QUEUED
_HANDLING = ExchangeState.HANDLING
#: How often a stalled send is looked at: sendTimeout is then kept to within
#: this of the last byte that left.
_SEND_POLL = 1.0


class ConnectionTimer(PhaseTimer):
    """
    The phase timer of one ``HTTPServerProtocol`` (``conn``): it arms the
    phase that applies and carries out each phase's outcome.
    """

    __slots__ = ("_conn", "_sendMark", "_sendProgressAt")

    def __init__(self, conn: Any) -> None:
        super().__init__(conn.factory.timers, self)
        self._conn = conn
        # Bytes delivered when the send phase began, and when bytes were
        # last seen leaving (for sendTimeout).
        self._sendMark = 0
        self._sendProgressAt = 0.0

    def refreshTimer(self) -> None:
        """Arm the phase that applies now (``choosePhase``)."""
        conn = self._conn
        state = conn.state
        if state is _CLOSING or state is _CLOSED or state is _UPGRADED:
            return
        pipeline = conn.pipeline
        queue = pipeline.queue
        front = queue[0] if queue else None
        incoming = pipeline.incoming
        phase = choosePhase(
            state,
            conn.flow.writePaused,
            front is not None,
            incoming is front and front is not None and front.body is _READING,
            front is not None
            and conn.config.handlerTimeout is not None
            and front.awaitingHandler(),
            incoming is not None and incoming.body is _DISCARDING,
        )
        if phase is not self.phase:
            if phase is None:
                self.clear()
            else:
                self.arm(phase)

    def arm(self, phase: Phase) -> None:
        """Start ``phase`` with its timeout (``PhaseTimer.start``)."""
        conn = self._conn
        config = conn.config
        timeout: float | None
        if phase is _PH_SEND:
            timeout = config.sendTimeout
            if self.phase is not _PH_SEND:
                # sendTimeout measures progress from here; when the transport
                # says how much left, look every _SEND_POLL seconds, so that
                # the cut comes within sendTimeout (plus the poll) of the
                # last progress, not a whole sendTimeout after a late one.
                self._sendMark = conn.flow.delivered()
                self._sendProgressAt = conn.clock.seconds()
                if timeout is not None and self._sendMark >= 0:
                    timeout = min(timeout, _SEND_POLL)
        elif phase is _PH_BODY:
            timeout = config.bodyTimeout
        elif phase is _PH_HEAD:
            timeout = config.requestHeadTimeout
        elif phase is _PH_IDLE:
            timeout = config.drainGraceTimeout if conn.draining else config.idleTimeout
        else:  # HANDLER: what is left of handlerTimeout
            front = conn.pipeline.front()
            assert front is not None and config.handlerTimeout is not None
            left = front.dispatchedAt + config.handlerTimeout - conn.clock.seconds()
            timeout = max(0.0, left)
        self.start(phase, timeout)

    def phaseExpired(self, phase: Phase) -> None:
        """The running phase reached its deadline: its own outcome (``PhaseTimer``)."""
        conn = self._conn
        if conn.state is _CLOSED:
            return
        if phase is _PH_HEAD:
            self._headTimedOut()
        elif phase is _PH_BODY:
            self._bodyTimedOut()
        elif phase is _PH_SEND:
            self._sendTimedOut()
        elif phase is _PH_IDLE:
            conn.startClose("draining" if conn.draining else "idle-timeout")
        elif phase is _PH_HANDLER:
            front = conn.pipeline.front()
            if front is not None:
                front.timeOutHandler()
        elif phase is _PH_LINGER:
            conn.closer().lose()
        else:
            conn.abort()

    def _sendTimedOut(self) -> None:
        conn = self._conn
        delivered = conn.flow.delivered()
        now = conn.clock.seconds()
        if delivered > self._sendMark:
            # Bytes left this host since the last look: a slow reader, not a
            # stalled one.  sendTimeout is about no progress at all.
            self._sendMark = delivered
            self._sendProgressAt = now
        timeout = conn.config.sendTimeout
        if delivered >= 0 and timeout is not None:
            left = self._sendProgressAt + timeout - now
            if left > 0:
                self.start(_PH_SEND, min(left, _SEND_POLL))
                return
        _log.info("send timeout for {peer}", peer=conn.peerHost)
        if not conn.closeLogged:
            # (A close that a final response already gave its reason for
            # keeps that reason: one record per connection.)
            conn.closeReason = "send-timeout"
        conn.abort()

    def _headTimedOut(self) -> None:
        conn = self._conn
        parser = conn.parser
        if parser is not None and (parser.inMessage or parser.bufferedByteCount):
            # RFC 9110 §15.5.9: 408 says the server wants to close.
            # Bytes of a request arrived: it counts, answered with 408.
            conn.stats.requests += 1
            exchange = Exchange(conn, None, conn.clock.seconds())
            exchange.error = ProtocolError("request head timeout", 408)
            conn.parser = None
            conn.pipeline.incoming = None
            conn.pipeline.append(exchange)
            exchange.writeError(408, "header-timeout")
        else:
            conn.startClose("header-timeout")

    def _bodyTimedOut(self) -> None:
        conn = self._conn
        pipeline = conn.pipeline
        incoming = pipeline.incoming
        reason = "body-timeout"
        config = conn.config
        rate = config.minBodyRate
        if (
            rate is not None
            and config.bodyTimeout is not None
            and incoming is not None
            and incoming.body is not _DISCARDING
        ):
            received = incoming.bodyReceived - incoming.bodyClockFrom
            budget = incoming.bodyClockAt + config.bodyTimeout + received / rate
            if conn.clock.seconds() >= budget:
                reason = "body-too-slow"
                _log.info(
                    "request body from {peer} slower than minBodyRate",
                    peer=conn.peerHost,
                )
        if (
            incoming is not None
            and incoming is pipeline.front()
            and (incoming.state is _QUEUED or incoming.state is _HANDLING)
        ):
            conn.closeReason = reason
            incoming.writeError(408, reason)
        else:
            conn.startClose(reason)


# Enum members as module globals: looking a member up on its Enum class
# costs a descriptor call (about 70 ns), and the request path reads these
# several times per request.
_PH_BODY = Phase.BODY
_PH_HANDLER = Phase.HANDLER
_PH_HEAD = Phase.HEAD
_PH_IDLE = Phase.IDLE
_PH_LINGER = Phase.LINGER
_PH_SEND = Phase.SEND
