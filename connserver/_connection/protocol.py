"""
``HTTPServerProtocol``: the Twisted glue around the pure core.

It feeds bytes to the parser, runs the handler, writes responses in order,
owns the per-phase timers and the write backpressure, and asks
``PersistencePolicy`` (never ``Connection`` itself) whether to keep the
connection.  State changes go through ``_state.checkTransition``.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from inspect import iscoroutine
from typing import TYPE_CHECKING, Any, BinaryIO, cast
from typing import Protocol as Protocol_

from twisted.internet.address import HostnameAddress, IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IProducer,
    IPushProducer,
    IReactorTime,
    ISSLTransport,
)
from twisted.internet.protocol import Protocol
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from connserver._connection.fileproducer import FileBodyProducer, ISendfileConsumer
from connserver._connection.message import NO_BODY, Request, Response
from connserver._connection.timer import Phase, PhaseTimer
from connserver._http.config import ServerConfig
from connserver._http.errors import BodyInterrupted, ProtocolError, ResponseFramingError
from connserver._http.forwarded import isTrusted, resolveClient
from connserver._http.framing import (
    BodyFraming,
    BodyWriter,
    ContentLengthWriter,
    makeWriter,
    statusLine,
)
from connserver._http.headers import Headers, splitList
from connserver._http.parser import (
    NEED_DATA,
    BodyData,
    EndOfMessage,
    RequestHead,
    RequestParser,
)
from connserver._http.persistence import PersistenceDecision
from connserver._http.records import ConnectionRecord, RequestRecord
from connserver._http.responsehead import finishHead
from connserver._http.state import ConnectionState, checkTransition
from connserver._twisted.writethrough import WOULD_BLOCK, TransportWriter

if TYPE_CHECKING:
    from connserver._connection.factory import ConnectionStats
    from connserver._connection.message import Handler
    from connserver._http.persistence import PersistencePolicy
    from connserver._http.responsehead import HeadBuilder

__all__ = ["ConnectionOwner", "HTTPServerProtocol"]


class ConnectionOwner(Protocol_):
    """
    What a connection needs of its factory, and all it uses: the declared
    surface between the two (``ConnectionFactory`` provides it).  The
    factory, in turn, uses only the protocol's public methods and
    attributes (``closeIdle``, ``startDrain``, ``abortNow``, ``state``,
    ``closeReason``, ``requestsServed``, ``idleSince``).
    """

    config: ServerConfig
    reactor: IReactorTime
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


_S = ConnectionState
_HEAD = Phase.HEAD
_BODY = Phase.BODY
_SEND = Phase.SEND
_IDLE = Phase.IDLE
_LINGER = Phase.LINGER
_ABORT = Phase.ABORT
_HANDLER = Phase.HANDLER
#: How often a stalled send is looked at: sendTimeout is then kept to within
#: this of the last byte that left.
_SEND_POLL = 1.0
_WAITING = ConnectionState.WAITING
_log = Logger(namespace="connserver")

#: Read no further ahead than this while a handler is not consuming: the
#: bound on memory per connection for unread bodies and pipelined heads.
_READ_AHEAD_LIMIT = 64 * 1024

#: Bytes and writes gathered from one round of requests before they are
#: written anyway: one queue of pipelined answers (maxPipelinedRequests'
#: default) in one packet, and the transport's backpressure at most that
#: late.
_BATCH_BYTES = 16 * 1024
_BATCH_WRITES = 16

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CRLF = b"\r\n"
_HEADER_SEP = b": "
_CONNECTION_DONE = Failure(ConnectionDone())
_NO_OPTIONS: frozenset[bytes] = frozenset()
# The pipeline of a connection with no request in it: an empty tuple shared
# by all (typed as the list it stands for; nothing appends to it, a list is
# made for the first request), so that an idle connection holds no list.
_NO_QUEUE: list[Any] = cast(Any, ())


class _Exchange:
    """
    One request and the progress of its response.  Most fields keep their
    class-level default for a simple request, so creating one is cheap.
    """

    request: Request | None = None
    error: ProtocolError | None = None
    startedAt = 0.0
    bodyWanted = False
    bodyPaused = False
    bodyStopped = False
    bodyReceived = 0
    discarding = False
    expectContinue = False
    continueSent = False
    dispatched = False
    responseStarted = False
    finished = False
    status = 0
    bodyBytes = 0
    #: The handler's ``Response.note`` for the access log.
    note: str | None = None
    decision: PersistenceDecision | None = None
    producer: Any = None
    file: BinaryIO | None = None
    #: The error the server gave the body reader (the client went away).
    bodyFailure: BaseException | None = None
    #: The handler's Deferred while it has not fired.
    pending: Deferred[Response] | None = None
    #: When an asynchronous handler was called (for handlerTimeout).
    dispatchedAt = 0.0
    #: When the current stretch of body reading began, and the bytes
    #: received by then (for minBodyRate).
    bodyClockAt = 0.0
    bodyClockFrom = 0
    #: The client's address as a trusted proxy named it, for the log.
    clientHost: str | None = None

    def __init__(self, head: RequestHead | None, startedAt: float) -> None:
        self.head = head
        self.startedAt = startedAt
        self.bodyComplete = head is None or (
            head.contentLength == 0 and not head.chunked
        )


@implementer(ISendfileConsumer)
class _BodyConsumer:
    """Frames what a response body producer writes, and counts it."""

    __slots__ = ("_exchange", "_protocol", "_writer")

    def __init__(
        self, protocol: HTTPServerProtocol, exchange: _Exchange, writer: BodyWriter
    ) -> None:
        self._protocol = protocol
        self._exchange = exchange
        self._writer = writer

    def write(self, data: bytes) -> None:
        self._protocol._writeBody(self._exchange, self._writer, data)

    def sendfile(self, fd: int, offset: int, count: int) -> int | None:
        """
        Send ``count`` bytes of the open file ``fd`` from ``offset`` with
        the kernel's ``sendfile`` (an optional extension of ``IConsumer``
        for file producers).  Returns the bytes sent (0 only at the end of
        the file), ``WOULD_BLOCK`` after pausing the producer until the
        socket can take more, or None when the producer must ``write``
        instead (TLS, chunked framing, ...).
        """
        return self._protocol._sendFileBody(
            self._exchange, self._writer, fd, offset, count
        )

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        # An IBodyProducer may hand us a producer of its own; the protocol
        # already relays the transport's pause/resume to the body producer.
        pass

    def unregisterProducer(self) -> None:
        pass


@implementer(IPushProducer, IHalfCloseableProtocol)
class HTTPServerProtocol(Protocol):
    """
    One HTTP/1.x connection.

    Built by ``ConnectionFactory``; registers itself as the transport's
    streaming producer so that the transport tells it when writes stall
    (sendTimeout) and relays that backpressure to response body producers.
    """

    # Slots keep an idle connection small (the instance dict of a class
    # with this many attributes would not share its keys).
    __slots__ = (
        "_again",
        "_batch",
        "_batchBytes",
        "_clock",
        "_closeAfterCurrent",
        "_closeLogged",
        "_closeWhenFlushed",
        "_config",
        "_draining",
        "_driving",
        "_eofPending",
        "_heads",
        "_incoming",
        "_linger",
        "_lost",
        "_out",
        "_parser",
        "_peerHalfClosed",
        "_peerHost",
        "_peerKnown",
        "_peerTrusted",
        "_queue",
        "_readPaused",
        "_sendMark",
        "_sendProgressAt",
        "_served",
        "_stats",
        "_timer",
        "_writePaused",
        "acceptedAt",
        "closeReason",
        "connected",
        "connectionId",
        "factory",
        "host",
        "idleSince",
        "isSecure",
        "maxBodyBytes",
        "peer",
        "scheme",
        "state",
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
        self.state = _S.ACCEPTED
        self.closeReason: str | None = None
        self.acceptedAt = 0.0
        self._out: TransportWriter | None = None
        self._config = factory.config
        self._stats = factory.stats
        self._heads = factory.heads
        #: Stamped by the factory's count each time the connection becomes
        #: idle: shedding closes the longest-idle first.
        self.idleSince = 0
        #: What every request of this connection shares (see
        #: ``Request._fromConnection``): the addresses, TLS, the body bound.
        self.maxBodyBytes = factory.config.maxBodyBytes
        # Responses written inside one round of _processEvents, sent as one
        # write at its end (pipelined answers coalesce).
        # (None between rounds: an idle connection holds no list.)
        self._batch: list[bytes] | None = None
        self._batchBytes = 0
        self._clock = factory.reactor
        self._parser: RequestParser | None = RequestParser(factory.config)
        # The pipeline, front first (a list: it holds at most
        # maxPipelinedRequests, and an empty deque costs 600 bytes).
        self._queue: list[_Exchange] = _NO_QUEUE
        self._incoming: _Exchange | None = None
        self._served = 0
        self._closeAfterCurrent = False
        # A final response's record carried closeReason: the close is
        # accounted for, and no ConnectionRecord follows (one per connection).
        self._closeLogged = False
        self._readPaused = False
        self._writePaused = False
        self._closeWhenFlushed = False
        self._peerHalfClosed = False
        # The addresses are read again at the first byte: behind the PROXY
        # protocol (haproxy: endpoints) Twisted's wrapper knows the client's
        # address only once it has parsed the header, after connectionMade.
        self._peerKnown = False
        # Whether the peer is in trustedProxies (then the forwarding fields
        # of its requests name the client).
        self._peerTrusted = False
        self._eofPending = False
        # Bytes delivered (see TransportWriter.delivered) when the send
        # timer was last armed.
        self._sendMark = 0
        # When bytes were last seen leaving (for sendTimeout).
        self._sendProgressAt = 0.0
        self._draining = False
        self._linger = True
        self._lost = False
        self._driving = False
        self._again = False
        self.isSecure = False
        self.scheme = "http"
        self.peer: Any = None
        self.host: Any = None
        self._peerHost = "-"
        # The single lazy timer: one phase at a time, a deadline, and at
        # most one pending DelayedCall that re-arms itself when the deadline
        # moved later (so a busy keep-alive connection causes no timer churn).
        self._timer = PhaseTimer(self._clock, self)

    # -- connection events -------------------------------------------------

    def connectionMade(self) -> None:
        transport = self.transport
        assert transport is not None
        self.acceptedAt = self._clock.seconds()
        self.isSecure = ISSLTransport.providedBy(transport)
        if self.isSecure:
            self.scheme = "https"
        self.peer = transport.getPeer()
        self.host = self.factory.sharedAddress(transport.getHost())
        self._peerHost = getattr(self.peer, "host", None) or "-"
        self._out = TransportWriter(transport)
        # A plain TCP connection's addresses cannot change: only a wrapper
        # (the PROXY protocol's) needs a second look at the first byte.
        self._peerKnown = self._out.plainTCP
        if self._peerKnown and self._config.trustedProxies:
            self._peerTrusted = isTrusted(self._peerHost, self._config.trustedProxies)
        setNoDelay(transport)
        transport.registerProducer(self, True)  # type: ignore[attr-defined]
        self.factory.registerConnection(self)
        # The head deadline runs from accept for the first request (it also
        # bounds a TLS handshake that never finishes).
        self._setTimer(_HEAD, self._config.requestHeadTimeout)

    def dataReceived(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:
            # Closing: lingering read, discard (RFC 9112 §9.6).
            return
        if not self._peerKnown:
            self._learnAddresses()
        parser.receiveData(data)
        self._processEvents()

    def _learnAddresses(self) -> None:
        """The client's and the local address, as they are once bytes flow."""
        self._peerKnown = True
        transport = self.transport
        assert transport is not None
        self.peer = transport.getPeer()
        self.host = self.factory.sharedAddress(transport.getHost())
        self._peerHost = getattr(self.peer, "host", None) or "-"
        if self._config.trustedProxies:
            # Behind the PROXY protocol this is the address its header
            # names: trusted only if that is a proxy too.
            self._peerTrusted = isTrusted(self._peerHost, self._config.trustedProxies)

    def readConnectionLost(self) -> None:
        """
        The client half-closed.  That is an event after the bytes it sent:
        complete requests are still answered (RFC 9112 §9.6 note), and the
        connection closes once nothing more can arrive to answer.
        """
        self._peerHalfClosed = True
        if self.state is _S.CLOSING:
            # The lingering read is over.
            self._loseConnection()
            return
        # Pulling on the parser reaches NEED_DATA once every byte before the
        # half-close is consumed; _checkEndOfInput acts from there.
        self._processEvents()

    def _checkEndOfInput(self) -> None:
        """
        The parser asked for more bytes after the client's half-close: the
        message it is inside (if any) can never complete, and once no
        response is pending the connection closes.
        """
        if self._lost or self.state is _S.CLOSING:
            return
        incoming = self._incoming
        if incoming is not None and not incoming.bodyComplete:
            self._incoming = None
            incoming.bodyComplete = True
            self._closeAfterCurrent = True
            if incoming.request is not None and not incoming.discarding:
                self._failBody(incoming, ConnectionDone("the client closed mid-body"))
        if not self._queue:
            self._startClose("peer-closed")

    def writeConnectionLost(self) -> None:
        """Our write side is shut; nothing to do until the read side ends."""

    def connectionLost(self, reason: Failure = _CONNECTION_DONE) -> None:
        if self._lost:
            return
        self._lost = True
        if self.closeReason is None:
            if reason.check(ConnectionDone):
                self.closeReason = "peer-closed"
            elif reason.check("OpenSSL.SSL.Error"):
                # A failed handshake (no protocol or cipher in common, a TLS
                # 1.1 client) or a bad record.
                self.closeReason = "tls-error"
            elif reason.check(ConnectionAborted):
                # Aborted on this side, but not by one of connserver's own
                # decisions (each sets its reason first): an embedding
                # application called the transport's abortConnection.
                self.closeReason = "aborted"
            else:
                self.closeReason = "peer-reset"
        self._timer.cancel()
        self._parser = None
        lost = ConnectionLost("the connection was lost")
        exchanges = list(self._queue)
        if self._incoming is not None and self._incoming not in exchanges:
            exchanges.append(self._incoming)
        self._queue = _NO_QUEUE
        self._incoming = None
        try:
            for exchange in exchanges:
                exchange.finished = True
                if exchange.request is not None and not exchange.bodyComplete:
                    exchange.bodyComplete = True
                    try:
                        self._failBody(exchange, lost)
                    except Exception:
                        _log.failure("a body reader failed on connection loss")
                self._abandon(exchange)
        finally:
            # Whatever handler code did above, the factory must learn that
            # this connection is gone (its slot, drain()).
            self.state = _S.CLOSED
            self._batch = None
            if not self._closeLogged and self.factory.closeObservers:
                self._recordClose()
            self.factory.unregisterConnection(self)

    # -- IPushProducer: the transport's write backpressure ----------------

    def pauseProducing(self) -> None:
        """The transport's buffer is full: stop producing, arm sendTimeout."""
        if self._writePaused or self._lost:
            return
        self._writePaused = True
        front = self._queue[0] if self._queue else None
        if front is not None and front.producer is not None:
            front.producer.pauseProducing()
        self._refreshTimer()

    def resumeProducing(self) -> None:
        """The transport drained: write progress was made."""
        if not self._writePaused or self._lost:
            return
        self._writePaused = False
        if self._timer.phase is _SEND:
            # Progress: a pause that follows (even at once, inside the
            # producer's next write) starts a fresh sendTimeout.
            self._timer.clear()
        if self._closeWhenFlushed:
            self._closeWhenFlushed = False
            self._closeTransport()
            return
        front = self._queue[0] if self._queue else None
        if front is not None and front.producer is not None:
            front.producer.resumeProducing()
        if front is not None and not front.dispatched:
            # Requests wait while the client does not read (RFC 9112 §9.5:
            # rely on flow control); now they may go on.
            self._processEvents()
        else:
            self._refreshTimer()

    def stopProducing(self) -> None:
        """The transport is going away; ``connectionLost`` does the rest."""

    # -- state ---------------------------------------------------------------

    def _setState(self, new: ConnectionState) -> None:
        current = self.state
        if new is not current:
            if not current.allowed & new.bit:
                checkTransition(current, new)  # raises InvalidTransition
            self.state = new
            if new is _WAITING:
                self.factory.connectionIdle(self)

    # -- reading requests --------------------------------------------------

    def _processEvents(self) -> None:
        """
        Dispatch the front request and pull parser events as far as the
        handler and the queue allow.  Re-entrant calls (a handler that
        answers synchronously, a body read started inside a handler) only
        ask for another round, so a long pipeline never deepens the stack.
        """
        if self._driving:
            self._again = True
            return
        self._driving = True
        try:
            again = True
            while again:
                self._again = False
                queue = self._queue
                if (
                    queue
                    and not queue[0].dispatched
                    and not self._writePaused
                    and not self._lost
                    and self.state is not _S.CLOSING
                ):
                    self._dispatch(queue[0])
                self._pullEvents()
                again = self._again
        finally:
            self._driving = False
            if self._batch is not None:
                self._flush()
        if self._eofPending:
            self._eofPending = False
            self._checkEndOfInput()
            if self._lost or self.state is _S.CLOSING:
                return
        state = self.state
        if state is _WAITING or state is _S.ACCEPTED:
            # Bytes of a request that is not complete yet (a request that
            # arrives whole goes straight to HANDLING).
            parser = self._parser
            if (
                parser is not None
                and self._incoming is None
                and (parser.inMessage or parser.bufferedByteCount)
            ):
                self._setState(_S.READING_HEAD)
        if self._readPaused or (
            self._parser is not None
            and (
                self._parser.bufferedByteCount > _READ_AHEAD_LIMIT
                or self._incoming is not None
            )
        ):
            self._updateReading()
        self._refreshTimer()

    def _pullEvents(self) -> None:
        parser = self._parser
        maxQueue = self._config.maxPipelinedRequests
        while parser is not None and not self._closeAfterCurrent:
            incoming = self._incoming
            if incoming is not None:
                if not incoming.bodyComplete and not incoming.discarding:
                    if incoming is not (self._queue[0] if self._queue else None):
                        break
                    if (
                        not incoming.bodyWanted
                        or incoming.bodyPaused
                        or incoming.bodyStopped
                    ):
                        break
            elif len(self._queue) >= maxQueue:
                break
            try:
                event = parser.nextEvent()
            except ProtocolError as error:
                self._parseFailed(error)
                return
            if event is NEED_DATA:
                if self._peerHalfClosed:
                    self._eofPending = True
                return
            eventType = type(event)
            if eventType is RequestHead:
                exchange = self._headReceived(cast(RequestHead, event))
                if (
                    self._queue[0] is exchange
                    and not self._writePaused
                    and not self._lost
                    and self.state is not _S.CLOSING
                ):
                    # The common case: nothing ahead of it, so run its
                    # handler before reading further ahead; a synchronous
                    # answer is complete when this returns.
                    self._dispatch(exchange)
            elif eventType is BodyData:
                self._bodyReceived(cast(BodyData, event).data)
            else:
                self._messageEnded(cast(EndOfMessage, event))
            parser = self._parser

    def _updateReading(self) -> None:
        """Pause reading when a consumer paused or too much is read ahead."""
        transport = self.transport
        if transport is None or self._lost:
            return
        parser = self._parser
        pause = False
        if parser is not None:
            incoming = self._incoming
            if incoming is not None and incoming.bodyPaused and not incoming.discarding:
                pause = True
            elif parser.bufferedByteCount > _READ_AHEAD_LIMIT:
                pause = True
        if pause != self._readPaused:
            self._readPaused = pause
            if pause:
                transport.pauseProducing()  # type: ignore[attr-defined]
            else:
                transport.resumeProducing()  # type: ignore[attr-defined]

    def _headReceived(self, head: RequestHead) -> _Exchange:
        exchange = _Exchange(head, self._clock.seconds())
        self._stats.requests += 1
        if exchange.bodyComplete:
            # No body: the parser's EndOfMessage is due; skip it so that the
            # parser is between messages again.
            parser = self._parser
            assert parser is not None
            parser.skipEndOfMessage()
        else:
            self._incoming = exchange
        if head.version >= (1, 1):
            expect = head.expect
            if expect:
                # RFC 9110 §10.1.1: 100-continue is the only expectation;
                # a server MAY answer 417 to any other (and MUST ignore
                # Expect in HTTP/1.0 requests).
                values = {v.lower() for v in splitList(expect)}
                if values == {b"100-continue"}:
                    exchange.expectContinue = not exchange.bodyComplete
                else:
                    exchange.error = ProtocolError(
                        "unsupported expectation", 417, closeConnection=True
                    )
        self._enqueue(exchange)
        return exchange

    def _enqueue(self, exchange: _Exchange) -> None:
        """Append to the pipeline (the shared empty one becomes a list)."""
        if self._queue:
            self._queue.append(exchange)
        else:
            self._queue = [exchange]

    def _bodyReceived(self, data: bytes) -> None:
        exchange = self._incoming
        assert exchange is not None
        exchange.bodyReceived += len(data)
        if exchange.discarding:
            # Bounded by construction: only a known remainder of at most
            # maxBodyBytes is discarded (_bodyConsumable); bodyTimeout runs.
            if self._timer.phase is _BODY:
                self._timer.bump(self._config.bodyTimeout)
            return
        if exchange.request is not None and not exchange.bodyStopped:
            exchange.request._deliverData(data)
        if self._timer.phase is _BODY:
            config = self._config
            rate = config.minBodyRate
            timeout = config.bodyTimeout
            if rate is None or timeout is None:
                self._timer.bump(timeout)
            else:
                # Apache's MinRate: after bodyTimeout, one more second for
                # every minBodyRate bytes; and never longer than bodyTimeout
                # without a byte.
                self._timer.extendTo(
                    min(
                        self._clock.seconds() + timeout,
                        exchange.bodyClockAt
                        + timeout
                        + (exchange.bodyReceived - exchange.bodyClockFrom) / rate,
                    )
                )

    def _messageEnded(self, event: EndOfMessage) -> None:
        exchange = self._incoming
        assert exchange is not None
        self._incoming = None
        exchange.bodyComplete = True
        if exchange.discarding and self.state is _S.WAITING:
            # The unread body is gone: now the connection is really idle.
            self.factory.connectionIdle(self)
        if exchange.request is not None and not exchange.discarding:
            exchange.request._deliverEnd()
        if self.state is _S.READING_BODY and self._queue and exchange is self._queue[0]:
            self._setState(_S.HANDLING)

    def _parseFailed(self, error: ProtocolError) -> None:
        _log.info(
            "bad request from {peer}: {status} {message}",
            peer=self._peerHost,
            status=error.statusCode,
            message=error.message,
        )
        self._parser = None
        incoming = self._incoming
        self._incoming = None
        if incoming is not None and not incoming.bodyComplete:
            # An error inside a body (chunked framing): the request that owns
            # the body cannot be trusted any more than the connection.
            if incoming.request is not None:
                incoming.request._deliverEnd(Failure(error))
            if incoming.responseStarted or incoming.dispatched:
                incoming.bodyComplete = True
                self._closeAfterCurrent = True
                if not incoming.responseStarted:
                    incoming.error = error
                return
        if incoming is None:
            # A request that never parsed is still a request received (and
            # answered with a 4xx), as nginx counts it; one cut short inside
            # its body was counted with its head.
            self._stats.requests += 1
        exchange = _Exchange(None, self._clock.seconds())
        exchange.error = error
        self._enqueue(exchange)
        self._again = True

    # -- the body source offered to Request ---------------------------------

    def _failBody(self, exchange: _Exchange, error: BaseException) -> None:
        """Tell the body reader that the rest of the body will not come."""
        exchange.bodyFailure = error
        assert exchange.request is not None
        exchange.request._deliverEnd(Failure(error))

    def _startBodyClock(self, exchange: _Exchange) -> None:
        """minBodyRate counts from when the body is wanted (again)."""
        if self._config.minBodyRate is not None:
            exchange.bodyClockAt = self._clock.seconds()
            exchange.bodyClockFrom = exchange.bodyReceived

    def _bodyWanted(self, exchange: _Exchange) -> None:
        exchange.bodyWanted = True
        self._startBodyClock(exchange)
        if (
            exchange.expectContinue
            and not exchange.continueSent
            and not exchange.responseStarted
            and not self._lost
        ):
            # RFC 9110 §10.1.1: send 100 Continue when the body is wanted.
            exchange.continueSent = True
            assert self.transport is not None
            self._send(_CONTINUE)
        self._processEvents()

    def _bodyPause(self, exchange: _Exchange) -> None:
        exchange.bodyPaused = True
        self._updateReading()
        self._refreshTimer()

    def _bodyResume(self, exchange: _Exchange) -> None:
        if exchange.bodyPaused:
            exchange.bodyPaused = False
            # The pause was the server's: the rate counts from here.
            self._startBodyClock(exchange)
            self._processEvents()

    def _bodyStop(self, exchange: _Exchange) -> None:
        # The consumer wants no more: what remains is discarded (within the
        # drain limits) or the connection closes after the response.
        exchange.bodyStopped = True
        exchange.bodyPaused = False
        self._updateReading()
        self._refreshTimer()

    # -- handling ------------------------------------------------------------

    def _dispatch(self, exchange: _Exchange) -> None:
        """Run the handler for the exchange at the front of the queue."""
        exchange.dispatched = True
        # A request is in: whatever timer ran (idle, head) is over; the next
        # refresh arms what applies from now (body, send, idle).
        self._timer.clear()
        if exchange.error is not None:
            self._writeError(exchange, exchange.error.statusCode, "protocol-error")
            return
        head = exchange.head
        assert head is not None
        self._setState(_S.HANDLING if exchange.bodyComplete else _S.READING_BODY)
        request = Request._fromConnection(
            head.method,
            head.target,
            head.version,
            head.headers,
            head.contentLength,
            head.chunked,
            self.factory.connectionOptionsOf(head.connection)
            if head.connection
            else _NO_OPTIONS,
            self,
            self._served + 1,
            NO_BODY if exchange.bodyComplete else _ExchangeBody(self, exchange),
        )
        exchange.request = request
        if self._peerTrusted:
            self._applyForwarded(exchange, request)
        if exchange.bodyComplete:
            # No body: nobody reads it yet, so "delivered whole" is a flag.
            request._bodyDone = True
        try:
            result = self.factory.handler(request)
        except Exception:
            self._handlerFailed(exchange, Failure())
            return
        if type(result) is Response:
            self._respond(exchange, result)
            return
        deferred: Deferred[Response]
        if isinstance(result, Deferred):
            deferred = result
        elif iscoroutine(result):
            deferred = Deferred.fromCoroutine(result)
        elif isinstance(result, Response):
            self._respond(exchange, result)
            return
        else:
            self._handlerFailed(
                exchange,
                Failure(TypeError(f"handler returned {type(result).__name__}")),
            )
            return
        # Cancelled if the connection goes before the handler answers.
        exchange.pending = deferred
        exchange.dispatchedAt = self._clock.seconds()
        deferred.addCallbacks(
            self._handlerAnswered,
            self._handlerFailedAsync,
            callbackArgs=(exchange,),
            errbackArgs=(exchange,),
        )

    def _handlerAnswered(self, response: object, exchange: _Exchange) -> None:
        exchange.pending = None
        self._respond(exchange, response)

    def _handlerFailedAsync(self, failure: Failure, exchange: _Exchange) -> None:
        exchange.pending = None
        self._handlerFailed(exchange, failure)

    def _handlerFailed(self, exchange: _Exchange, failure: Failure) -> None:
        if self._lost or exchange.finished or self.state is _S.CLOSING:
            # Nobody is left to answer, but a bug that shows only when
            # clients go away must still be seen: log it once, unless it is
            # the cancellation (or the body failure) the server caused.
            if not failure.check(CancelledError) and (
                exchange.bodyFailure is None
                or failure.value is not exchange.bodyFailure
            ):
                _log.failure(
                    "handler failed for {method} {target} from {peer} "
                    "(after its connection ended)",
                    failure,
                    method=exchange.head.method if exchange.head else b"-",
                    target=exchange.head.target if exchange.head else b"-",
                    peer=self._peerHost,
                )
            return
        error = failure.value
        if error is exchange.bodyFailure and exchange.bodyFailure is not None:
            # The client went away while the handler read the body: nobody
            # is left to answer, and it is not the handler's fault.
            _log.info(
                "request from {peer} ended early: {error}",
                peer=self._peerHost,
                error=error,
            )
            self._startClose("peer-closed")
            return
        if isinstance(error, ProtocolError):
            self._writeError(exchange, error.statusCode, "protocol-error")
            return
        _log.failure(
            "handler failed for {method} {target} from {peer}",
            failure,
            method=exchange.head.method if exchange.head else b"-",
            target=exchange.head.target if exchange.head else b"-",
            peer=self._peerHost,
        )
        self._writeError(exchange, 500, "handler-error")

    # -- writing responses --------------------------------------------------

    def _bodyConsumable(self, exchange: _Exchange) -> bool:
        """RFC 9112 §9.3: can the rest of the request body be read and dropped?"""
        if exchange.bodyComplete:
            return True
        head = exchange.head
        if head is None or head.contentLength is None:
            return False  # chunked and unfinished: unknown remainder
        if exchange.expectContinue and not exchange.continueSent:
            # The client may be waiting for 100 and never send the body.
            return False
        limit = self._config.maxBodyBytes
        remaining = head.contentLength - exchange.bodyReceived
        return limit is None or remaining <= limit

    def _respond(self, exchange: _Exchange, response: object) -> None:
        if (
            self._lost
            or exchange.finished
            or exchange.responseStarted
            or self.state is _S.CLOSING
        ):
            if isinstance(response, Response):
                _closeBody(response)
            return
        if not isinstance(response, Response):
            self._handlerFailed(
                exchange,
                Failure(TypeError(f"handler returned {type(response).__name__}")),
            )
            return
        try:
            headBytes, framing, length = self._prepareHead(exchange, response)
        except (ResponseFramingError, ValueError, TypeError):
            _closeBody(response)
            self._handlerFailed(exchange, Failure())
            return
        transport = self.transport
        assert transport is not None
        exchange.responseStarted = True
        self._setState(_S.WRITING)
        body = response.body
        if type(body) is bytes:
            if framing is BodyFraming.CONTENT_LENGTH:
                exchange.bodyBytes = len(body)
                self._send(headBytes + body if body else headBytes)
            else:
                writer = makeWriter(framing, length)
                data = writer.write(body) + writer.finish(response.trailers)
                exchange.bodyBytes = len(body) if data else 0
                self._send(headBytes + data)
            self._responseDone(exchange)
            return
        if framing is BodyFraming.NONE:
            # HEAD, 204, 304: the body is never started (RFC 9110 §9.3.2).
            self._send(headBytes)
            _closeBody(response)
            self._responseDone(exchange)
            return
        self._send(headBytes)
        producer: Any
        if IBodyProducer.providedBy(body):
            producer = body
        else:
            fileBody = cast(BinaryIO, body)
            exchange.file = fileBody
            producer = FileBodyProducer(
                fileBody, length, paused=self._writePaused, clock=self._clock
            )
        exchange.producer = producer
        writer = makeWriter(framing, length)
        consumer = _BodyConsumer(self, exchange, writer)
        try:
            done = producer.startProducing(consumer)
        except Exception:
            done = Deferred()
            done.errback(Failure())
        if self._writePaused and not exchange.finished:
            producer.pauseProducing()
        done.addCallbacks(
            lambda _: self._bodyFinished(exchange, writer, response.trailers),
            lambda failure: self._bodyFailed(exchange, failure),
        )

    def _prepareHead(
        self, exchange: _Exchange, response: Response
    ) -> tuple[bytes, BodyFraming, int | None]:
        """Build the head (``_responsehead``); ask the policy about persistence."""
        head = exchange.head
        assert head is not None
        factory = self.factory
        now = self._clock.seconds()
        lines, framing, length, responseOptions = self._heads.prepare(
            head.method,
            head.version,
            response.code,
            response.reason,
            response.fieldPairs(),
            response.bodyLength(),
            factory.dateLine(now),
            self.isSecure,
        )
        request = exchange.request
        # By position (the names are decide()'s): once per response.
        decision = factory.policy.decide(
            head.version,  # version
            request.connectionOptions if request is not None else _NO_OPTIONS,
            responseOptions,
            framing is not BodyFraming.CLOSE_DELIMITED,  # responseLengthKnown
            self._served + 1,  # requestsServed
            now - self.acceptedAt,  # connectionAge
            self._draining,
            exchange.bodyComplete or self._bodyConsumable(exchange),
            not self._closeAfterCurrent,  # framingSafe
        )
        exchange.decision = decision
        exchange.status = response.code
        if response.note is not None:
            exchange.note = response.note
        if not decision.keepAlive:
            # RFC 9112 §9.6: process no further requests on this connection.
            self._closeAfterCurrent = True
        return finishHead(lines, decision), framing, length

    def _writeBody(self, exchange: _Exchange, writer: BodyWriter, data: bytes) -> None:
        if self._lost or exchange.finished or not data:
            return
        try:
            wire = writer.write(data)
        except ResponseFramingError as error:
            self._abortResponse(exchange, str(error))
            return
        exchange.bodyBytes += len(data)
        if wire:
            assert self.transport is not None
            self._send(wire)

    def _sendFileBody(
        self, exchange: _Exchange, writer: BodyWriter, fd: int, offset: int, count: int
    ) -> int | None:
        if self._lost or exchange.finished:
            return None
        out = self._out
        if out is None or type(writer) is not ContentLengthWriter:
            return None
        if self._batch is not None:
            self._flush()  # the head goes first
        sent = out.sendFile(fd, offset, count)
        if sent is None:
            return None
        if sent == WOULD_BLOCK:
            # Wait for the socket like any write would: pause the producer,
            # and let the transport resume us when it can take more.
            self.pauseProducing()
            out.waitUntilWritable()
            return WOULD_BLOCK
        try:
            writer.account(sent)
        except ResponseFramingError as error:
            self._abortResponse(exchange, str(error))
            return None
        exchange.bodyBytes += sent
        return sent

    def _bodyFinished(
        self, exchange: _Exchange, writer: BodyWriter, trailers: Headers | None
    ) -> None:
        if self._lost or exchange.finished:
            return
        try:
            tail = writer.finish(trailers)
        except ResponseFramingError as error:
            self._abortResponse(exchange, str(error))
            return
        if tail:
            assert self.transport is not None
            self._send(tail)
        self._closeFile(exchange)
        exchange.producer = None
        self._responseDone(exchange)

    def _bodyFailed(self, exchange: _Exchange, failure: Failure) -> None:
        if self._lost or exchange.finished:
            return
        if failure.check(BodyInterrupted):
            # A known, named cause (the source ended early): one line.
            _log.warn(
                "response body for {peer} interrupted: {why}",
                peer=self._peerHost,
                why=failure.getErrorMessage(),
            )
        else:
            _log.failure(
                "response body failed for {peer}", failure, peer=self._peerHost
            )
        self._abortResponse(exchange, "body-error")

    def _abortResponse(self, exchange: _Exchange, why: str) -> None:
        """A response cannot be completed as framed: abort, never pad."""
        _log.warn("aborting a response to {peer}: {why}", peer=self._peerHost, why=why)
        exchange.finished = True
        self._stopBodyProducer(exchange)
        self.closeReason = "response-error"
        self._abort()

    def _abandon(self, exchange: _Exchange) -> None:
        """
        Nobody will read this exchange's response: cancel a handler still
        working on it (twisted.web's notifyFinish fails through this), stop
        its body producer, close its file.
        """
        pending, exchange.pending = exchange.pending, None
        if pending is not None:
            # Also reaches a Deferred that fired but waits on an inner one.
            try:
                pending.cancel()
            except Exception:
                _log.failure("cancelling a handler's Deferred failed")
        self._stopBodyProducer(exchange)

    def _stopBodyProducer(self, exchange: _Exchange) -> None:
        producer = exchange.producer
        exchange.producer = None
        if producer is not None:
            try:
                producer.stopProducing()
            except Exception:
                _log.failure("stopping a body producer failed")
        self._closeFile(exchange)

    def _closeFile(self, exchange: _Exchange) -> None:
        if exchange.file is not None:
            fileBody, exchange.file = exchange.file, None
            try:
                fileBody.close()
            except OSError:
                pass

    def _responseDone(self, exchange: _Exchange) -> None:
        """The response is complete on the wire (as far as we are concerned)."""
        exchange.finished = True
        self._served += 1
        decision = exchange.decision
        keepAlive = decision is not None and decision.keepAlive
        closeReason = None if keepAlive or decision is None else decision.reason
        factory = self.factory
        factory.stats.responses += 1
        if closeReason is not None:
            self._closeLogged = True
        if factory.requestObservers:
            self._record(exchange, closeReason)
        if len(self._queue) == 1:
            self._queue = _NO_QUEUE
        else:
            self._queue.pop(0)
        if exchange.bodyComplete:
            # Done with its request.  (With a body, request -> body source ->
            # exchange -> request is a cycle: cut here, it is freed now and
            # not by the cycle collector.)
            exchange.request = None
        if not keepAlive:
            self._startClose(closeReason or "protocol-error")
            return
        if not exchange.bodyComplete:
            # Drain the unread body (RFC 9112 §9.3), bounded by maxBodyBytes.
            exchange.discarding = True
            if exchange.request is not None:
                self._failBody(
                    exchange, ConnectionDone("the response ended before the body")
                )
        self._next()

    def _next(self) -> None:
        """
        Move to the next request in the pipeline (``_processEvents``
        dispatches it), or to idle.
        """
        if not self._queue:
            incoming = self._incoming
            parser = self._parser
            if incoming is not None and incoming.discarding:
                # Only an unread body is left to discard: idle as far as
                # requests go (the body timer bounds the discard).
                self._setState(_S.WAITING)
            elif parser is not None and (parser.inMessage or parser.bufferedByteCount):
                self._setState(_S.READING_HEAD)
            else:
                self._setState(_S.WAITING)
        if self.state is _S.CLOSING or self._lost:
            return
        if self._driving:
            # Inside _processEvents: its loop goes on pulling events; a
            # pipelined request already queued is dispatched by its next
            # round.
            if self._queue:
                self._again = True
            return
        # A response finished outside _processEvents (an asynchronous
        # handler, a body producer): go on from here, and arm the timers.
        self._processEvents()

    def _applyForwarded(self, exchange: _Exchange, request: Request) -> None:
        """
        A trusted proxy's ``Forwarded`` / ``X-Forwarded-*`` fields name the
        client (``_forwarded``); malformed ones are ignored (the peer stays).
        """
        config = self._config
        hop = resolveClient(
            request.headers, config.trustedProxies, config.forwardedHeader
        )
        if hop is None:
            return
        if hop.host is not None:
            request.clientAddress = _hopAddress(hop.host, hop.port or 0)
            exchange.clientHost = hop.host
        if hop.scheme is not None:
            request.scheme = hop.scheme

    def _record(self, exchange: _Exchange, closeReason: str | None) -> None:
        head = exchange.head
        now = self._clock.seconds()
        headers = head.headers if head is not None else None
        record = RequestRecord(
            timestamp=exchange.startedAt,
            peerHost=exchange.clientHost or self._peerHost,
            # No head (a request that never parsed): empty, which the access
            # log writes as "-" (combined) or null (JSON).
            method=head.method if head is not None else b"",
            target=head.target if head is not None else b"",
            version=head.version if head is not None else (1, 1),
            status=exchange.status,
            bodyBytes=exchange.bodyBytes,
            referer=headers.get(b"referer") if headers is not None else None,
            userAgent=headers.get(b"user-agent") if headers is not None else None,
            connectionId=self.connectionId,
            requestIndex=self._served,
            connectionAge=now - self.acceptedAt,
            duration=now - exchange.startedAt,
            closeReason=closeReason,
            secure=self.isSecure,
            note=exchange.note,
        )
        for observer in self.factory.requestObservers:
            try:
                observer(record)
            except Exception:
                _log.failure("a request observer failed")

    def _recordClose(self) -> None:
        """
        The connection ended without a final response carrying its reason:
        one ``ConnectionRecord`` for the close observers (the access log).
        """
        reason = self.closeReason
        assert reason is not None
        now = self._clock.seconds()
        record = ConnectionRecord(
            timestamp=now,
            peerHost=self._peerHost,
            connectionId=self.connectionId,
            requestsServed=self._served,
            connectionAge=now - self.acceptedAt,
            closeReason=reason,
            secure=self.isSecure,
        )
        for observer in self.factory.closeObservers:
            try:
                observer(record)
            except Exception:
                _log.failure("a close observer failed")

    def _writeError(self, exchange: _Exchange, status: int, reason: str) -> None:
        """
        The one place that writes error responses: a small text body,
        Content-Length and ``Connection: close``, and only while no byte of
        this exchange's response is written; after that, the only answer is
        an abort (STYLE.md 4).
        """
        if self._lost or self.state is _S.CLOSING:
            return
        if exchange.responseStarted:
            self._abortResponse(exchange, f"error {status} after response start")
            return
        transport = self.transport
        assert transport is not None
        phrase = statusLine(status)
        body = phrase[9:]  # b"400 Bad Request\r\n"
        isHead = exchange.head is not None and exchange.head.method == b"HEAD"
        head = b"".join(
            [
                phrase,
                self.factory.dateLine(self._clock.seconds()),
                self._heads.serverLine,
                b"Content-Type: text/plain; charset=utf-8\r\n",
                b"Content-Length: %d\r\n" % len(body),
                b"Connection: close\r\n\r\n",
            ]
        )
        exchange.responseStarted = True
        exchange.status = status
        exchange.bodyBytes = 0 if isHead else len(body)
        exchange.decision = None
        self._closeAfterCurrent = True
        self._setState(_S.WRITING)
        self._send(head if isHead else head + body)
        self.closeReason = self.closeReason or reason
        exchange.finished = True
        self._served += 1
        self.factory.stats.responses += 1
        self._closeLogged = True
        if self.factory.requestObservers:
            self._record(exchange, self.closeReason)
        self._startClose(self.closeReason)

    # -- output ------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        """
        Queue ``data`` for the client.  Inside a round of ``_processEvents``
        writes gather into one (pipelined answers leave in one packet),
        up to ``_BATCH_BYTES`` or ``_BATCH_WRITES`` so that the transport's
        backpressure still bites; otherwise it is written at once.
        """
        if self._driving:
            batch = self._batch
            if batch is None:
                batch = self._batch = []
            batch.append(data)
            self._batchBytes += len(data)
            if self._batchBytes >= _BATCH_BYTES or len(batch) >= _BATCH_WRITES:
                self._flush()
        else:
            out = self._out
            if out is not None:
                out.write(data)

    def _flush(self) -> None:
        batch = self._batch
        assert batch is not None
        data = batch[0] if len(batch) == 1 else b"".join(batch)
        self._batch = None
        self._batchBytes = 0
        out = self._out
        if out is not None and not self._lost:
            out.write(data)

    # -- timers ------------------------------------------------------------

    def _setTimer(self, phase: Phase, timeout: float | None) -> None:
        """Make ``phase`` the running one (``PhaseTimer.start``)."""
        if phase is _SEND and self._timer.phase is not _SEND:
            # sendTimeout measures progress from here; when the transport
            # says how much left, look every _SEND_POLL seconds, so that the
            # cut comes within sendTimeout (plus the poll) of the last
            # progress, not a whole sendTimeout after a late one.
            self._sendMark = self._delivered()
            self._sendProgressAt = self._clock.seconds()
            if timeout is not None and self._sendMark >= 0:
                timeout = min(timeout, _SEND_POLL)
        self._timer.start(phase, timeout)

    def _refreshTimer(self) -> None:
        """Choose the phase that applies now (DESIGN.md, Timers)."""
        if self._lost or self.state is _S.CLOSING:
            return
        config = self._config
        if self._writePaused and (self._queue or self.state is _S.WAITING):
            if self._timer.phase is not _SEND:
                self._setTimer(_SEND, config.sendTimeout)
            return
        front = self._queue[0] if self._queue else None
        if front is not None:
            incoming = self._incoming
            if (
                incoming is front
                and incoming.bodyWanted
                and not incoming.bodyPaused
                and not incoming.bodyStopped
                and not incoming.bodyComplete
            ):
                if self._timer.phase is not _BODY:
                    self._setTimer(_BODY, config.bodyTimeout)
            elif (
                front.pending is not None
                and not front.responseStarted
                and config.handlerTimeout is not None
            ):
                if self._timer.phase is not _HANDLER:
                    left = front.dispatchedAt + config.handlerTimeout
                    self._setTimer(_HANDLER, max(0.0, left - self._clock.seconds()))
            elif self._timer.phase is not None:
                self._timer.clear()
            return
        incoming = self._incoming
        if incoming is not None and incoming.discarding:
            if self._timer.phase is not _BODY:
                self._setTimer(_BODY, config.bodyTimeout)
        elif self.state is _S.READING_HEAD or self.state is _S.ACCEPTED:
            if self._timer.phase is not _HEAD:
                self._setTimer(_HEAD, config.requestHeadTimeout)
        elif self.state is _S.WAITING:
            if self._timer.phase is not _IDLE:
                timeout = config.idleTimeout
                if self._draining:
                    timeout = config.drainGraceTimeout
                self._setTimer(_IDLE, timeout)
        elif self._timer.phase is not None:
            self._timer.clear()

    def phaseExpired(self, phase: Phase) -> None:
        """The running phase reached its deadline: its own outcome (``PhaseTimer``)."""
        if self._lost:
            return
        if phase is _HEAD:
            self._headTimedOut()
        elif phase is _BODY:
            self._bodyTimedOut()
        elif phase is _SEND:
            delivered = self._delivered()
            now = self._clock.seconds()
            if delivered > self._sendMark:
                # Bytes left this host since the last look: a slow reader,
                # not a stalled one.  sendTimeout is about no progress at all.
                self._sendMark = delivered
                self._sendProgressAt = now
            timeout = self._config.sendTimeout
            if delivered >= 0 and timeout is not None:
                left = self._sendProgressAt + timeout - now
                if left > 0:
                    self._timer.start(_SEND, min(left, _SEND_POLL))
                    return
            _log.info("send timeout for {peer}", peer=self._peerHost)
            if not self._closeLogged:
                # (A close that a final response already gave its reason
                # for keeps that reason: one record per connection.)
                self.closeReason = "send-timeout"
            self._abort()
        elif phase is _IDLE:
            self._startClose("draining" if self._draining else "idle-timeout")
        elif phase is _HANDLER:
            self._handlerTimedOut()
        elif phase is _LINGER:
            self._loseConnection()
        else:
            self._abort()

    def _delivered(self) -> int:
        """
        Bytes written that have left the transport's buffer, or -1 when the
        transport does not say (then sendTimeout is an absolute deadline).
        """
        return -1 if self._out is None else self._out.delivered()

    def _headTimedOut(self) -> None:
        parser = self._parser
        if parser is not None and (parser.inMessage or parser.bufferedByteCount):
            # RFC 9110 §15.5.9: 408 says the server wants to close.
            # Bytes of a request arrived: it counts, answered with 408.
            self._stats.requests += 1
            exchange = _Exchange(None, self._clock.seconds())
            exchange.error = ProtocolError("request head timeout", 408)
            self._parser = None
            self._incoming = None
            self._enqueue(exchange)
            self._writeError(exchange, 408, "header-timeout")
        else:
            self._startClose("header-timeout")

    def _bodyTimedOut(self) -> None:
        incoming = self._incoming
        front = self._queue[0] if self._queue else None
        reason = "body-timeout"
        config = self._config
        rate = config.minBodyRate
        if (
            rate is not None
            and config.bodyTimeout is not None
            and incoming is not None
            and not incoming.discarding
        ):
            received = incoming.bodyReceived - incoming.bodyClockFrom
            budget = incoming.bodyClockAt + config.bodyTimeout + received / rate
            if self._clock.seconds() >= budget:
                reason = "body-too-slow"
                _log.info(
                    "request body from {peer} slower than minBodyRate",
                    peer=self._peerHost,
                )
        if incoming is not None and incoming is front and not incoming.responseStarted:
            self.closeReason = reason
            self._writeError(incoming, 408, reason)
        else:
            self._startClose(reason)

    def _handlerTimedOut(self) -> None:
        """handlerTimeout: cancel the handler; 503 if nothing was sent yet."""
        front = self._queue[0] if self._queue else None
        if front is None or front.pending is None or front.responseStarted:
            return  # answered meanwhile
        head = front.head
        _log.warn(
            "handler timeout for {method} {target} from {peer}",
            method=head.method if head else b"-",
            target=head.target if head else b"-",
            peer=self._peerHost,
        )
        pending, front.pending = front.pending, None
        self.closeReason = "handler-timeout"
        # 503 with Connection: close (RFC 9110 §15.6.4), then the close; the
        # cancelled handler's failure is expected and not logged.
        self._writeError(front, 503, "handler-timeout")
        try:
            pending.cancel()
        except Exception:
            _log.failure("cancelling a handler's Deferred failed")

    # -- closing -------------------------------------------------------------

    def _startClose(self, reason: str) -> None:
        """
        Close in stages (RFC 9112 §9.6): half-close our write side after the
        last byte, keep reading and discarding for up to lingerTimeout so a
        client still sending reads the response rather than a reset, then
        close; abort if that takes longer than abortTimeout.
        """
        if self._lost or self.state is _S.CLOSING:
            return
        if self.closeReason is None:
            self.closeReason = reason
        self._parser = None
        incoming, self._incoming = self._incoming, None
        queue = list(self._queue)
        self._queue = _NO_QUEUE
        if incoming is not None and incoming not in queue:
            queue.append(incoming)
        # The state and the exchanges change first: what runs below (a
        # handler told that its body will not come) may answer at once, and
        # must find every exchange finished and the connection closing.
        for exchange in queue:
            exchange.finished = True
        self._setState(_S.CLOSING)
        closing = ConnectionDone("the connection is closing")
        for exchange in queue:
            self._abandon(exchange)
            if exchange.request is not None and not exchange.bodyComplete:
                # A handler still reading the body learns it will not come.
                exchange.bodyComplete = True
                self._failBody(exchange, closing)
        if self._lost:
            return
        if self._readPaused:
            self._readPaused = False
            assert self.transport is not None
            self.transport.resumeProducing()  # type: ignore[attr-defined]
        if self._writePaused:
            # Bytes wait in the transport: close once they drain, bounded by
            # sendTimeout (the send phase stays armed).
            self._closeWhenFlushed = True
            self._setTimer(_SEND, self._config.sendTimeout)
            return
        self._closeTransport()

    def _closeTransport(self) -> None:
        if self._batch is not None:
            self._flush()
        transport = self.transport
        assert transport is not None
        transport.unregisterProducer()  # type: ignore[attr-defined]
        halfClose = getattr(transport, "loseWriteConnection", None)
        linger = self._config.lingerTimeout
        if (
            halfClose is not None
            and linger is not None
            and self._linger
            and not self.isSecure
            and not self._peerHalfClosed
        ):
            halfClose()
            self._setTimer(_LINGER, linger)
        else:
            self._loseConnection()

    def _loseConnection(self) -> None:
        if self._lost:
            return
        if self._batch is not None:
            self._flush()
        assert self.transport is not None
        self.transport.loseConnection()
        if not self._lost:
            self._setTimer(_ABORT, self._config.abortTimeout)

    def _abort(self) -> None:
        if self._lost:
            return
        if self.closeReason is None:
            self.closeReason = "aborted"
        if self._batch is not None:
            # Answers completed earlier in this round leave first, as they
            # would have without the batching; then the reset.
            self._flush()
        assert self.transport is not None
        self.transport.abortConnection()  # type: ignore[attr-defined]

    # -- called by the factory -------------------------------------------------

    def startDrain(self) -> None:
        """Shutting down: finish what is in flight with ``Connection: close``."""
        if self._draining or self._lost:
            return
        self._draining = True
        if self.state is _S.WAITING or (
            self.state is _S.ACCEPTED
            and (self._parser is None or not self._parser.bufferedByteCount)
        ):
            self._setTimer(_IDLE, self._config.drainGraceTimeout)

    @property
    def requestsServed(self) -> int:
        """Responses completed on this connection (error responses included)."""
        return self._served

    def closeIdle(self, reason: str) -> bool:
        """
        Close this connection if it is truly idle (used to shed load):
        waiting for a request, with no unread body still arriving and no
        byte of a next request received.  Then no byte can reach a closed
        socket and turn into a reset, so it closes at once, without the
        lingering read, to free its slot (bytes still queued for the client
        are sent before the FIN).  True if it closed.
        """
        if self.state is not _S.WAITING or self._lost or self._incoming is not None:
            return False
        parser = self._parser
        if parser is not None and parser.bufferedByteCount:
            return False
        self._linger = False
        self._startClose(reason)
        return True

    def abortNow(self, reason: str) -> None:
        """Abort whatever is in progress (the drain deadline)."""
        if self.closeReason is None:
            self.closeReason = reason
        self._abort()


def _hopAddress(host: str, port: int) -> IAddress:
    """A forwarded hop as an address (RFC 7239 identifiers as hostnames)."""
    if ":" in host:
        return IPv6Address("TCP", host, port)
    if host[0].isdigit():
        return IPv4Address("TCP", host, port)
    return HostnameAddress(host.encode("ascii"), port)


class _ExchangeBody:
    """The body source a ``Request`` reads through (see ``_message``)."""

    __slots__ = ("_exchange", "_protocol")

    def __init__(self, protocol: HTTPServerProtocol, exchange: _Exchange) -> None:
        self._protocol = protocol
        self._exchange = exchange

    def bodyWanted(self, request: Request) -> None:
        self._protocol._bodyWanted(self._exchange)

    def pauseBody(self) -> None:
        self._protocol._bodyPause(self._exchange)

    def resumeBody(self) -> None:
        self._protocol._bodyResume(self._exchange)

    def stopBody(self) -> None:
        self._protocol._bodyStop(self._exchange)


def setNoDelay(transport: object) -> None:
    """
    Turn off Nagle's algorithm (TCP_NODELAY), as nginx does on keep-alive
    connections: responses leave in few writes (a head and a body, or one
    batch of pipelined answers), and a small last write must not wait for
    the client's delayed ACK (40 ms on Linux).
    """
    getHandle = getattr(transport, "getHandle", None)
    if getHandle is None:
        return
    try:
        handle = getHandle()
        if handle.family in (socket.AF_INET, socket.AF_INET6):
            handle.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass  # not a TCP socket (UNIX, a test transport)


def _closeBody(response: Response) -> None:
    """Release a response body that will never be sent."""
    body = response.body
    if type(body) is bytes:
        return
    if IBodyProducer.providedBy(body):
        # Never started (HEAD, 204, 304, or the client left): tell it, so
        # that whatever feeds it (a twisted.web resource) stops too.
        producer: Any = body
        try:
            producer.stopProducing()
        except Exception:
            _log.failure(
                "stopping an unstarted body producer failed", level=LogLevel.warn
            )
        return
    close = getattr(body, "close", None)
    if close is not None:
        try:
            close()
        except OSError:
            pass
