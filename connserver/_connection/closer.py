"""
``Closer``: the stages of closing a connection (RFC 9112 §9.6).

A server that closes must not let a client's late bytes turn the close into
a reset that destroys the response it has not read yet.  So a close goes in
stages: wait for what is buffered to leave (``FLUSHING``), half-close the
write side and keep reading and discarding (``HALF_CLOSED``, for at most
``lingerTimeout``), then ``loseConnection`` (``LOSING``, for at most
``abortTimeout``), and abort if that does not end it (``ABORTING``).  The
protocol and the over-capacity answer both close through this object; the
phase timer they give it bounds each stage.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from twisted.internet.error import ConnectionDone

from connserver._connection.pipeline import InputState
from connserver._connection.timer import Phase, PhaseTimer
from connserver._http.state import ConnectionState
from connserver._twisted.sockets import canHalfClose

__all__ = ["CloseStage", "Closer", "ConnectionCloser"]


class CloseStage(Enum):
    """How far a close has gone."""

    #: Bytes wait in the transport: close once they have left (the send
    #: phase bounds the wait).
    FLUSHING = "flushing"
    #: Our write side is shut; reading and discarding until the client's
    #: FIN or lingerTimeout.
    HALF_CLOSED = "half-closed"
    #: ``loseConnection`` was asked; abortTimeout bounds it.
    LOSING = "losing"
    #: ``abortConnection`` was asked.
    ABORTING = "aborting"
    #: The transport is gone.
    CLOSED = "closed"


class Closer:
    """
    Closes one transport in stages, arming ``timer`` for each: ``LINGER``
    after the half-close and ``ABORT`` after ``loseConnection``.  The
    owner's ``phaseExpired`` calls ``lose`` and ``abort`` when they end.
    """

    __slots__ = (
        "_abortTimeout",
        "_linger",
        "_producing",
        "_timer",
        "_transport",
        "stage",
    )

    def __init__(
        self,
        transport: Any,
        timer: PhaseTimer,
        abortTimeout: float | None,
        producing: bool = False,
    ) -> None:
        self._transport = transport
        #: The owner is the transport's registered producer (unregistered
        #: at the close, so that the transport does not call it again).
        self._producing = producing
        self._timer = timer
        self._abortTimeout = abortTimeout
        self.stage: CloseStage | None = None
        self._linger: float | None = None

    def waitForFlush(self, linger: float | None) -> None:
        """Close (then as ``close(linger)``) once the transport drains."""
        self.stage = _STAGE_FLUSHING
        self._linger = linger

    def flushed(self) -> bool:
        """The transport drained: go on closing if that was awaited."""
        if self.stage is not _STAGE_FLUSHING:
            return False
        self.close(self._linger)
        return True

    def close(self, linger: float | None) -> None:
        """
        Half-close and linger for ``linger`` seconds when that is possible
        (a TCP transport, not TLS: over TLS the half-close Twisted's
        wrapper offers would shut the TCP connection under it, so
        close_notify instead); otherwise lose the connection now.
        """
        transport = self._transport
        if self._producing:
            self._producing = False
            transport.unregisterProducer()
        if linger is not None and canHalfClose(transport):
            self.stage = _STAGE_HALF_CLOSED
            transport.loseWriteConnection()
            self._timer.start(_PH_LINGER, linger)
        else:
            self.lose()

    def lose(self) -> None:
        """``loseConnection``, bounded by abortTimeout."""
        if self.stage is _STAGE_CLOSED:
            return
        self.stage = _STAGE_LOSING
        self._transport.loseConnection()
        if self.stage is _STAGE_LOSING:
            # (Not if the transport went at once, inside loseConnection.)
            self._timer.start(_PH_ABORT, self._abortTimeout)

    def abort(self) -> None:
        """Reset the connection now."""
        if self.stage is _STAGE_CLOSED:
            return
        self.stage = _STAGE_ABORTING
        self._transport.abortConnection()

    def gone(self) -> None:
        """The transport is gone (``connectionLost``)."""
        self.stage = _STAGE_CLOSED


class ConnectionCloser(Closer):
    """
    The close of one ``HTTPServerProtocol`` (``conn``): it stops reading
    requests, abandons the exchanges in flight, and closes the transport in
    stages once what was written has left.
    """

    __slots__ = ("_conn",)

    def __init__(self, conn: Any) -> None:
        super().__init__(
            conn.transport, conn.timer, conn.config.abortTimeout, producing=True
        )
        self._conn = conn

    def begin(self, reason: str, linger: bool) -> None:
        """
        Close for ``reason``: after the last byte, half-close our write side
        and keep reading and discarding for up to lingerTimeout (unless
        ``linger`` is false, or the client already half-closed), so that a
        client still sending reads the response rather than a reset; then
        close, and abort if that takes longer than abortTimeout.
        """
        conn = self._conn
        if conn.closeReason is None:
            conn.closeReason = reason
        conn.parser = None
        # The state changes first: what runs below (a handler told that its
        # body will not come) may answer at once, and must find every
        # exchange abandoned and the connection closing.
        conn.setState(_C_CLOSING)
        conn.pipeline.abandonAll(ConnectionDone("the connection is closing"), False)
        if conn.state is _C_CLOSED:
            return
        flow = conn.flow
        flow.setReading(False)
        lingerFor = (
            conn.config.lingerTimeout if linger and conn.peerInput is _IN_OPEN else None
        )
        # What this turn gathered goes first (Flow.endRound holds it for
        # the turn's end otherwise).
        flow.flush()
        if flow.writePaused:
            # Bytes wait in the transport: close once they drain, bounded by
            # sendTimeout (the send phase stays armed).
            self.waitForFlush(lingerFor)
            conn.timer.arm(_PH_SEND)
            return
        self.close(lingerFor)


# Enum members as module globals: looking a member up on its Enum class
# costs a descriptor call (about 70 ns), and the request path reads these
# several times per request.
_PH_ABORT = Phase.ABORT
_PH_LINGER = Phase.LINGER
_STAGE_ABORTING = CloseStage.ABORTING
_STAGE_CLOSED = CloseStage.CLOSED
_STAGE_FLUSHING = CloseStage.FLUSHING
_STAGE_HALF_CLOSED = CloseStage.HALF_CLOSED
_STAGE_LOSING = CloseStage.LOSING
_C_CLOSING = ConnectionState.CLOSING
_C_CLOSED = ConnectionState.CLOSED
_IN_OPEN = InputState.OPEN
_PH_SEND = Phase.SEND
