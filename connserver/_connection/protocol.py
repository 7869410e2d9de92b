"""
``HTTPServerProtocol``: one HTTP/1.x connection on Twisted.

The protocol is thin: Twisted's callbacks, the round loop, and hand-offs.
Each piece of a connection's state has one owner:

* the parser (``_http.parser``) owns the bytes received;
* an ``Exchange`` per request owns that request's life, its body and its
  response (``exchange``);
* the ``Pipeline`` keeps the exchanges in order (``pipeline``);
* ``Flow`` owns the pauses in each direction and the write batch (``flow``);
* the ``Closer`` owns the stages of a close (``closer``);
* the ``PhaseTimer`` keeps the one deadline, and ``choosePhase`` says which
  phase applies (``timer``);
* ``PersistencePolicy`` decides keep-alive or close; the protocol never
  reads ``Connection`` itself.

State changes go through the ``ConnectionState`` table: a transition it does
not allow raises.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IReactorTime,
    ISSLTransport,
)
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from connserver._connection.closer import ConnectionCloser
from connserver._connection.deadlines import ConnectionTimer
from connserver._connection.exchange import Exchange
from connserver._connection.flow import READ_AHEAD_LIMIT, Flow
from connserver._connection.message import Handler
from connserver._connection.observers import recordClose
from connserver._connection.pipeline import InputState, Pipeline
from connserver._connection.takeover import Takeover
from connserver._connection.timer import Phase, TimerQueue
from connserver._http.config import ServerConfig
from connserver._http.forwarded import isTrusted
from connserver._http.parser import (
    RequestParser,
)
from connserver._http.persistence import PersistencePolicy
from connserver._http.records import ConnectionRecord, RequestRecord
from connserver._http.responsehead import HeadBuilder
from connserver._http.state import ConnectionState, ExchangeState, checkTransition
from connserver._http.stats import ConnectionStats
from connserver._twisted.sockets import setNoDelay

__all__ = ["ConnectionOwner", "HTTPServerProtocol", "InputState", "RoundState"]


class ConnectionOwner(TypingProtocol):
    """
    What a connection needs of its factory, and all it uses: the declared
    surface between the two (``ConnectionFactory`` provides it).  The
    factory, in turn, uses only the protocol's public methods and
    attributes (``closeIdle``, ``startDrain``, ``abortNow``, ``state``,
    ``closeReason``, ``requestsServed``, ``idleSince``).
    """

    config: ServerConfig
    reactor: IReactorTime
    timers: TimerQueue
    policy: PersistencePolicy
    stats: ConnectionStats
    handler: Handler
    requestObservers: list[Callable[[RequestRecord], None]]
    closeObservers: list[Callable[[ConnectionRecord], None]]
    heads: HeadBuilder

    def dateLine(self, now: float) -> bytes:
        """The ``Date`` field line for ``now``."""

    def connectionOptionsOf(self, values: tuple[bytes, ...]) -> frozenset[bytes]:
        """The Connection options of these field values."""

    def registerConnection(self, protocol: HTTPServerProtocol) -> None:
        """The connection is made."""

    def unregisterConnection(self, protocol: HTTPServerProtocol) -> None:
        """The connection is gone."""

    def connectionIdle(self, protocol: HTTPServerProtocol) -> None:
        """The connection waits for its next request now."""

    def sharedAddress(self, address: IAddress) -> IAddress:
        """One object for equal addresses (a listener's own address)."""


class RoundState(Enum):
    """The round loop of ``processEvents`` (re-entrant calls only ask)."""

    IDLE = "idle"
    RUNNING = "running"
    #: Running, and asked for another round.
    AGAIN = "again"


_S = ConnectionState
_WAITING = _S.WAITING
_CLOSING = _S.CLOSING
_CLOSED = _S.CLOSED
_UPGRADED = _S.UPGRADED
_RUNNING = RoundState.RUNNING
_AGAIN = RoundState.AGAIN
_IDLE_ROUND = RoundState.IDLE
_QUEUED = ExchangeState.QUEUED
_CONNECTION_DONE = Failure(ConnectionDone())
_log = Logger(namespace="connserver")


@implementer(IHalfCloseableProtocol)
class HTTPServerProtocol(Protocol):
    """
    One HTTP/1.x connection.

    Built by ``ConnectionFactory``.  Its ``Flow`` is the transport's
    streaming producer: the transport tells it when writes stall
    (sendTimeout), and it relays that backpressure to response bodies.
    The attributes without an underscore are the surface its exchanges use
    (``ExchangeOwner``).
    """

    # Slots keep an idle connection small (the instance dict of a class
    # with this many attributes would not share its keys).
    __slots__ = (
        "_peerKnown",
        "_round",
        "acceptedAt",
        "clock",
        "closeAfterCurrent",
        "closeLogged",
        "closeReason",
        "closing",
        "config",
        "connected",
        "connectionId",
        "draining",
        "factory",
        "flow",
        "heads",
        "host",
        "idleSince",
        "isSecure",
        "maxBodyBytes",
        "parser",
        "peer",
        "peerHost",
        "peerInput",
        "peerTrusted",
        "pipeline",
        "scheme",
        "served",
        "state",
        "stats",
        "takeover",
        "timer",
        "transport",
    )

    factory: ConnectionOwner

    def __init__(self, factory: ConnectionOwner, connectionId: int) -> None:
        # Twisted's Protocol keeps these two in an instance dict; as slots
        # (set here, since a slot hides the base class's default) an idle
        # connection has no dict at all.
        self.transport = None
        self.connected = 0
        self.factory = factory
        self.connectionId = connectionId
        self.state = _C_ACCEPTED
        self.closeReason: str | None = None
        self.acceptedAt = 0.0
        config = self.config = factory.config
        self.stats = factory.stats
        self.heads = factory.heads
        self.clock = factory.reactor
        #: Stamped by the factory's count each time the connection becomes
        #: idle: shedding closes the longest-idle first.
        self.idleSince = 0
        #: What every request of this connection shares (see
        #: ``Request._fromConnection``): the addresses, TLS, the body bound.
        self.maxBodyBytes = config.maxBodyBytes
        self.isSecure = False
        self.scheme = "http"
        self.peer: Any = None
        self.host: Any = None
        self.peerHost = "-"
        # The addresses are read again at the first byte: behind the PROXY
        # protocol (haproxy: endpoints) Twisted's wrapper knows the client's
        # address only once it has parsed the header, after connectionMade.
        self._peerKnown = False
        #: The peer is in trustedProxies (its forwarding fields name the
        #: client).
        self.peerTrusted = False
        self.parser: RequestParser | None = RequestParser(config)
        self.pipeline = Pipeline(self, config.maxPipelinedRequests)
        self.flow = Flow(self)
        #: The closer, once a close has begun (its stage says how far).
        self.closing: ConnectionCloser | None = None
        #: After a switch of protocols (101): the protocol that owns it now.
        self.takeover: Takeover | None = None
        #: Responses completed on this connection.
        self.served = 0
        #: RFC 9112 §9.6: no further request is processed on this connection.
        self.closeAfterCurrent = False
        #: A final response's record carried closeReason: the close is
        #: accounted for, and no ConnectionRecord follows.
        self.closeLogged = False
        self.draining = False
        self.peerInput = _IN_OPEN
        self._round = _IDLE_ROUND
        # The single lazy timer: one phase at a time, a deadline, and at
        # most one pending DelayedCall that re-arms itself when the deadline
        # moved later (so a busy keep-alive connection causes no timer churn).
        self.timer = ConnectionTimer(self)

    # -- connection events -------------------------------------------------

    def connectionMade(self) -> None:
        transport = self.transport
        assert transport is not None
        self.acceptedAt = self.clock.seconds()
        self.isSecure = ISSLTransport.providedBy(transport)
        if self.isSecure:
            self.scheme = "https"
        out = self.flow.attach(transport)
        self._learnAddresses()
        # A plain TCP connection's addresses cannot change: only a wrapper
        # (the PROXY protocol's) needs a second look at the first byte.
        self._peerKnown = out.plainTCP
        setNoDelay(transport)
        transport.registerProducer(self.flow, True)  # type: ignore[attr-defined]
        self.factory.registerConnection(self)
        # The head deadline runs from accept for the first request (it also
        # bounds a TLS handshake that never finishes).
        self.timer.arm(_PH_HEAD)

    def dataReceived(self, data: bytes) -> None:
        parser = self.parser
        if parser is None:
            # Closing: lingering read, discard (RFC 9112 §9.6).  Upgraded:
            # the new protocol's.
            if self.state is _UPGRADED:
                self.takeover.dataReceived(data)  # type: ignore[union-attr]
            return
        if not self._peerKnown:
            self._peerKnown = True
            self._learnAddresses()
        parser.receiveData(data)
        self.processEvents()

    def _learnAddresses(self) -> None:
        """The client's and the local address, as they are now."""
        transport = self.transport
        assert transport is not None
        self.peer = transport.getPeer()
        self.host = self.factory.sharedAddress(transport.getHost())
        self.peerHost = getattr(self.peer, "host", None) or "-"
        trusted = self.config.trustedProxies
        if trusted:
            # Behind the PROXY protocol this is the address its header
            # names: trusted only if that is a proxy too.
            self.peerTrusted = isTrusted(self.peerHost, trusted)

    def readConnectionLost(self) -> None:
        """
        The client half-closed.  That is an event after the bytes it sent:
        complete requests are still answered (RFC 9112 §9.6 note), and the
        connection closes once nothing more can arrive to answer.
        """
        self.peerInput = _IN_HALF_CLOSED
        if self.state is _UPGRADED:
            self.takeover.readConnectionLost()  # type: ignore[union-attr]
            return
        if self.state is _CLOSING:
            # The lingering read is over.
            self.closer().lose()
            return
        self.pipeline.inputEnded()
        # Pulling on the parser reaches NEED_DATA once every byte before the
        # half-close is consumed; Pipeline.endOfInput acts from there.
        self.processEvents()

    def writeConnectionLost(self) -> None:
        """Our write side is shut; nothing to do until the read side ends."""

    def connectionLost(self, reason: Failure = _CONNECTION_DONE) -> None:
        if self.state is _CLOSED:
            return
        if self.state is _UPGRADED:
            self.takeover.targetLost(reason)  # type: ignore[union-attr]
        if self.closeReason is None:
            self.closeReason = _lostReason(reason)
        self.setState(_CLOSED)
        self.timer.cancel()
        self.parser = None
        if self.closing is not None:
            self.closing.gone()
        self.flow.detach()
        try:
            self.pipeline.abandonAll(ConnectionLost("the connection was lost"), True)
        finally:
            # Whatever handler code did above, the factory must learn that
            # this connection is gone (its slot, drain()).
            if not self.closeLogged and self.factory.closeObservers:
                recordClose(self)
            self.factory.unregisterConnection(self)

    # -- IPushProducer: the transport's write backpressure ----------------

    # -- state ---------------------------------------------------------------

    def setState(self, new: ConnectionState) -> None:
        """Move to ``new``; the table (``_http.state``) must allow it."""
        current = self.state
        if new is not current:
            if not current.allowed & new.bit:
                checkTransition(current, new)  # raises InvalidTransition
            self.state = new
            if new is _WAITING:
                self.factory.connectionIdle(self)

    # -- the round loop ------------------------------------------------------

    def processEvents(self) -> None:
        """
        Dispatch the front request and pull parser events as far as the
        handler and the pipeline allow; then write what the round produced
        and arm the one timer that applies.  Re-entrant calls (a handler
        that answers synchronously, a body read started inside a handler)
        only ask for another round, so a long pipeline never deepens the
        stack.
        """
        if self._round is not _IDLE_ROUND:
            self._round = _AGAIN
            return
        self._round = _RUNNING
        flow = self.flow
        flow.gathering = True
        try:
            while True:
                queue = self.pipeline.queue
                if (
                    queue
                    and queue[0].state is _QUEUED
                    and not flow.writePaused
                    and self.state is not _CLOSING
                    and self.state is not _CLOSED
                ):
                    # (The front may run its handler: the transport has not
                    # paused us, and the connection is not closing.)
                    queue[0].dispatch()
                self.pipeline.pull()
                if self._round is not _AGAIN:
                    break
                self._round = _RUNNING
        finally:
            self._round = _IDLE_ROUND
            flow.gathering = False
            if flow.batch is not None:
                flow.endRound()
        self._afterRound()

    def _afterRound(self) -> None:
        """
        What a round leaves: the end of the input acted on, the state of a
        request head still arriving, reading paused or resumed, the timer.
        """
        if self.peerInput is _IN_EXHAUSTED:
            self.peerInput = _IN_HALF_CLOSED
            if self.state is not _CLOSING and self.state is not _CLOSED:
                self.pipeline.endOfInput()
            if self.state is _CLOSING or self.state is _CLOSED:
                return
        state = self.state
        parser = self.parser
        if state is _WAITING or state is _C_ACCEPTED:
            # Bytes of a request that is not complete yet (a request that
            # arrives whole goes straight to HANDLING).
            if (
                parser is not None
                and self.pipeline.incoming is None
                and (parser.inMessage or parser.bufferedByteCount)
            ):
                self.setState(_C_READING_HEAD)
        if self.flow.readPaused or (
            parser is not None
            and (
                parser.bufferedByteCount > READ_AHEAD_LIMIT
                or self.pipeline.incoming is not None
            )
        ):
            self.pipeline.updateReading()
        self.timer.refreshTimer()

    def responseFinished(self, exchange: Exchange, closeReason: str | None) -> None:
        """
        The front exchange's response is complete: close for
        ``closeReason``, or move on to the next request in the pipeline
        (``processEvents`` dispatches it), or to idle.
        """
        if closeReason is not None:
            self.pipeline.popFront()
            self.startClose(closeReason)
            return
        self.pipeline.advance(exchange)
        if self.state is _CLOSING or self.state is _CLOSED:
            return
        if self._round is not _IDLE_ROUND:
            # Inside processEvents: its loop goes on pulling events; a
            # pipelined request already queued is dispatched by its next
            # round.
            if self.pipeline.queue:
                self._round = _AGAIN
            return
        # A response finished outside processEvents (an asynchronous
        # handler, a body producer): go on from here, and arm the timers.
        parser = self.parser
        if (
            self.state is _WAITING
            and parser is not None
            and not parser.bufferedByteCount
            and self.peerInput is _IN_OPEN
            and not self.flow.readPaused
            and self.pipeline.incoming is None
        ):
            # Nothing was read ahead: a round would find no event to pull
            # and nothing to resume; only the idle timer is left to arm.
            # (Every proxied or otherwise asynchronous keep-alive answer
            # ends here.)
            self.timer.refreshTimer()
            return
        self.processEvents()

    def askAgain(self) -> None:
        """Inside a round: run another (a request was queued meanwhile)."""
        self._round = _AGAIN

    # -- closing -------------------------------------------------------------

    def startClose(self, reason: str, linger: bool = True) -> None:
        """
        Close for ``reason``, in stages (RFC 9112 §9.6, ``ConnectionCloser``),
        lingering after the half-close unless ``linger`` is false.
        """
        if self.state is not _CLOSING and self.state is not _CLOSED:
            self.closer().begin(reason, linger)

    def closer(self) -> ConnectionCloser:
        """The connection's closer (made when a close begins)."""
        closer = self.closing
        if closer is None:
            closer = self.closing = ConnectionCloser(self)
        return closer

    def abort(self) -> None:
        """Reset the connection now (answers completed earlier go first)."""
        if self.state is _CLOSED:
            return
        if self.closeReason is None:
            self.closeReason = "aborted"
        # Answers completed earlier in this round leave first, as they would
        # have without the batching; then the reset.
        self.flow.flush()
        self.closer().abort()

    # -- called by the factory -------------------------------------------------

    def startDrain(self) -> None:
        """Shutting down: finish what is in flight with ``Connection: close``."""
        if self.draining or self.state is _CLOSED:
            return
        self.draining = True
        if self.state is _UPGRADED:
            self.takeover.drain()  # type: ignore[union-attr]
        parser = self.parser
        if self.state is _WAITING or (
            self.state is _C_ACCEPTED
            and (parser is None or not parser.bufferedByteCount)
        ):
            self.timer.start(_PH_IDLE, self.config.drainGraceTimeout)

    @property
    def requestsServed(self) -> int:
        """Responses completed on this connection (error responses included)."""
        return self.served

    def closeIdle(self, reason: str) -> bool:
        """
        Close this connection if it is truly idle (used to shed load):
        waiting for a request, with no unread body still arriving and no
        byte of a next request received.  Then no byte can reach a closed
        socket and turn into a reset, so it closes at once, without the
        lingering read, to free its slot (bytes still queued for the client
        are sent before the FIN).  True if it closed.
        """
        if self.state is not _WAITING or self.pipeline.incoming is not None:
            return False
        parser = self.parser
        if parser is not None and parser.bufferedByteCount:
            return False
        self.startClose(reason, linger=False)
        return True

    def abortNow(self, reason: str) -> None:
        """Abort whatever is in progress (the drain deadline)."""
        if self.closeReason is None:
            self.closeReason = reason
        self.abort()


def _lostReason(reason: Failure) -> str:
    """The close reason of a connection that ended without one of ours."""
    if reason.check(ConnectionDone):
        return "peer-closed"
    if reason.check("OpenSSL.SSL.Error"):
        # A failed handshake (no protocol or cipher in common, a TLS 1.1
        # client) or a bad record.
        return "tls-error"
    if reason.check(ConnectionAborted):
        # Aborted on this side, but not by one of connserver's own decisions
        # (each sets its reason first): an embedding application called the
        # transport's abortConnection.
        return "aborted"
    return "peer-reset"


# Enum members as module globals: looking a member up on its Enum class
# costs a descriptor call (about 70 ns), and the request path reads these
# several times per request.
_C_ACCEPTED = ConnectionState.ACCEPTED
_C_READING_HEAD = ConnectionState.READING_HEAD
_IN_EXHAUSTED = InputState.EXHAUSTED
_IN_HALF_CLOSED = InputState.HALF_CLOSED
_IN_OPEN = InputState.OPEN
_PH_HEAD = Phase.HEAD
_PH_IDLE = Phase.IDLE
_PH_SEND = Phase.SEND
