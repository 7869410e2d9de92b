"""
``Exchange``: one request and its response, from the head to the last byte.

An exchange owns its request's life (as hypercorn's ``HTTPStream`` does):
it is the body source the handler reads (``bodyWanted``, ``pauseBody``,
``resumeBody``, ``stopBody``), it runs the handler, and it writes the
response (a streamed body through its ``ResponseBody``, the consumer the
body's producer writes to) and its own log record.  The connection gives it
what all its exchanges share (the ``ExchangeOwner`` surface) and decides
what happens between exchanges.

States decide (a transition ``EXCHANGE_TRANSITIONS`` in ``_http.state`` does
not allow raises):

    QUEUED ─→ HANDLING ─→ RESPONDING ─→ DONE
       └─────────┴───────────┴──→ ABANDONED

The body has a state of its own (``BodyState``), since it arrives
independently of the response: a handler may answer before the body ends,
and then the rest is drained (``DISCARDING``) or the connection closes.
Most attributes keep their class-level default for a bodiless request, so
creating one is cheap.
"""

from __future__ import annotations

from collections.abc import Iterable
from inspect import iscoroutine
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet.address import HostnameAddress, IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.web.iweb import IBodyProducer

from connserver._connection.flow import Flow
from connserver._connection.message import NO_BODY, Request, Response, ResponseDeferred
from connserver._connection.observers import recordRequest
from connserver._connection.responsebody import ResponseBody
from connserver._connection.takeover import switchProtocols
from connserver._connection.timer import Phase
from connserver._http.config import ServerConfig
from connserver._http.errors import ClientGone, ProtocolError, ResponseFramingError
from connserver._http.forwarded import resolveClient
from connserver._http.framing import (
    BodyFraming,
    encodeHeaderBlock,
    makeWriter,
    statusLine,
)
from connserver._http.headers import splitList
from connserver._http.parser import RequestHead
from connserver._http.persistence import PersistenceDecision, PersistencePolicy
from connserver._http.responsehead import HeadBuilder, finishHead
from connserver._http.state import (
    BodyState,
    ConnectionState,
    ExchangeState,
    refuseTransition,
)
from connserver._http.stats import ConnectionStats

__all__ = ["BodyState", "Exchange", "ExchangeOwner", "ExchangeState"]

_log = Logger(namespace="connserver")
_NO_OPTIONS: frozenset[bytes] = frozenset()
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# The bits of the states an exchange moves to on every request.
_TO_HANDLING = ExchangeState.HANDLING.bit
_TO_RESPONDING = ExchangeState.RESPONDING.bit
_TO_DONE = ExchangeState.DONE.bit


class ExchangeOwner(TypingProtocol):
    """
    What an exchange uses of its connection (``HTTPServerProtocol``
    provides it): the facts its requests share, the factory's services, and
    the hand-offs between exchanges.
    """

    factory: Any
    config: ServerConfig
    clock: IReactorTime
    heads: HeadBuilder
    stats: ConnectionStats
    flow: Flow
    pipeline: Any
    takeover: Any
    timer: Any
    state: ConnectionState
    peer: Any
    host: Any
    peerHost: str
    peerTrusted: bool
    isSecure: bool
    scheme: str
    connectionId: int
    maxBodyBytes: int | None
    acceptedAt: float
    served: int
    draining: bool
    closeAfterCurrent: bool
    closeLogged: bool
    closeReason: str | None

    def setState(self, new: ConnectionState) -> None:
        """Move the connection to ``new`` (checked against the table)."""

    def processEvents(self) -> None:
        """Run a round: dispatch, pull parser events, arm the timer."""

    def responseFinished(self, exchange: Exchange, closeReason: str | None) -> None:
        """The front exchange's response is complete: next, or close (why)."""

    def startClose(self, reason: str) -> None:
        """Close in stages, for ``reason``."""

    def abort(self) -> None:
        """Reset the connection now."""


class Exchange:
    """
    One request and the progress of its response.

    :param owner: the connection.
    :param head: the parsed head, or None for a request that never parsed
        (its ``error`` is answered).
    :param startedAt: when the request arrived (the clock's seconds).
    """

    state = ExchangeState.QUEUED
    body = BodyState.COMPLETE
    request: Request | None = None
    #: The error to answer instead of running the handler.
    error: ProtocolError | None = None
    expectContinue = False
    continueSent = False
    bodyReceived = 0
    status = 0
    bodyBytes = 0
    #: The handler's ``Response.note`` for the access log.
    note: str | None = None
    decision: PersistenceDecision | None = None
    #: A streamed response body on its way out.
    streamed: ResponseBody | None = None
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
    #: The protocols the request offers to switch to (``Request.upgrades``).
    offered: tuple[bytes, ...] = ()

    def __init__(
        self, owner: ExchangeOwner, head: RequestHead | None, startedAt: float
    ) -> None:
        self.owner = owner
        self.head = head
        self.startedAt = startedAt
        if head is None:
            return
        hasBody = head.contentLength != 0 or head.chunked
        if hasBody:
            self.body = _BODY_UNREAD
        if head.version >= (1, 1):
            expect = head.expect
            if expect:
                # RFC 9110 §10.1.1: 100-continue is the only expectation;
                # a server MAY answer 417 to any other (and MUST ignore
                # Expect in HTTP/1.0 requests).
                values = {v.lower() for v in splitList(expect)}
                if values == {b"100-continue"}:
                    self.expectContinue = hasBody
                else:
                    self.error = ProtocolError(
                        "unsupported expectation", 417, closeConnection=True
                    )

    # -- states ------------------------------------------------------------

    def _enter(self, new: ExchangeState) -> None:
        """Move to ``new``, which the table must allow (the rare paths)."""
        if not self.state.allowed & new.bit:
            refuseTransition(self.state, new)
        self.state = new

    @property
    def finished(self) -> bool:
        """Its response is complete, or nobody will read it."""
        state = self.state
        return state is _X_DONE or state is _X_ABANDONED

    def awaitingHandler(self) -> bool:
        """The handler runs asynchronously and has not answered yet."""
        return self.pending is not None and self.state is _X_HANDLING

    def markAbandoned(self) -> None:
        """Nobody will read the response (a complete one stays DONE)."""
        if self.state is not _X_DONE:
            self.state = _X_ABANDONED

    # -- the request body: parser side --------------------------------------

    def receiveData(self, data: bytes) -> None:
        """Body bytes from the parser: to the reader, or dropped."""
        self.bodyReceived += len(data)
        owner = self.owner
        timer = owner.timer
        config = owner.config
        if self.body is _BODY_DISCARDING:
            # Bounded by construction: only a known remainder of at most
            # maxBodyBytes is discarded (bodyConsumable); bodyTimeout runs.
            if timer.phase is _PH_BODY:
                timer.bump(config.bodyTimeout)
            return
        if self.request is not None and self.body is not _BODY_STOPPED:
            self.request.receiveBodyData(data)
        if timer.phase is _PH_BODY:
            rate = config.minBodyRate
            timeout = config.bodyTimeout
            if rate is None or timeout is None:
                timer.bump(timeout)
            else:
                # Apache's MinRate: after bodyTimeout, one more second for
                # every minBodyRate bytes; and never longer than bodyTimeout
                # without a byte.
                timer.extendTo(
                    min(
                        owner.clock.seconds() + timeout,
                        self.bodyClockAt
                        + timeout
                        + (self.bodyReceived - self.bodyClockFrom) / rate,
                    )
                )

    def receiveEnd(self) -> bool:
        """
        The body is complete.  True if it was being discarded (then the
        connection is really idle now).
        """
        discarded = self.body is _BODY_DISCARDING
        self.body = _BODY_COMPLETE
        if self.request is not None and not discarded:
            self.request.receiveBodyEnd()
        return discarded

    def cutShort(self, error: BaseException) -> None:
        """
        The body will never complete (the client half-closed mid-body, the
        connection closes): the reader, if it is still reading, learns it.
        """
        wasDiscarding = self.body is _BODY_DISCARDING
        self.body = _BODY_COMPLETE
        if self.request is not None and not wasDiscarding:
            self.failBody(error)

    def failBody(self, error: BaseException) -> None:
        """Tell the body reader that the rest of the body will not come."""
        self.bodyFailure = error
        assert self.request is not None
        self.request.receiveBodyEnd(Failure(error))

    def bodyConsumable(self) -> bool:
        """RFC 9112 §9.3: can the rest of the request body be read and dropped?"""
        if self.body is _BODY_COMPLETE:
            return True
        head = self.head
        if head is None or head.contentLength is None:
            return False  # chunked and unfinished: unknown remainder
        if self.expectContinue and not self.continueSent:
            # The client may be waiting for 100 and never send the body.
            return False
        limit = self.owner.config.maxBodyBytes
        remaining = head.contentLength - self.bodyReceived
        return limit is None or remaining <= limit

    # -- the request body: the source a Request reads through ---------------

    def _startBodyClock(self) -> None:
        """minBodyRate counts from when the body is wanted (again)."""
        owner = self.owner
        if owner.config.minBodyRate is not None:
            self.bodyClockAt = owner.clock.seconds()
            self.bodyClockFrom = self.bodyReceived

    def bodyWanted(self, request: Request) -> None:
        """The handler asked for the body (``readBody``, ``deliverBody``)."""
        if self.body is _BODY_UNREAD:
            self.body = _BODY_READING
        self._startBodyClock()
        owner = self.owner
        if (
            self.expectContinue
            and not self.continueSent
            and self.state is _X_HANDLING
            and owner.state is not _C_CLOSED
        ):
            # RFC 9110 §10.1.1: send 100 Continue when the body is wanted.
            self.continueSent = True
            owner.flow.send(_CONTINUE)
        owner.processEvents()

    def pauseBody(self) -> None:
        """The reader paused: reading from the socket pauses."""
        if self.body is _BODY_READING or self.body is _BODY_UNREAD:
            self.body = _BODY_PAUSED
        owner = self.owner
        owner.pipeline.updateReading()
        owner.timer.refreshTimer()

    def resumeBody(self) -> None:
        """The reader resumed: the rate counts from here."""
        if self.body is _BODY_PAUSED:
            self.body = _BODY_READING
            # The pause was the server's: the rate counts from here.
            self._startBodyClock()
            self.owner.processEvents()

    def stopBody(self) -> None:
        """
        The reader wants no more: what remains is discarded (within the
        drain limits) or the connection closes after the response.
        """
        if self.body is not _BODY_COMPLETE and self.body is not _BODY_DISCARDING:
            self.body = _BODY_STOPPED
        owner = self.owner
        owner.pipeline.updateReading()
        owner.timer.refreshTimer()

    # -- handling ------------------------------------------------------------

    def dispatch(self) -> None:
        """Run the handler (this exchange is at the front of the pipeline)."""
        if not self.state.allowed & _TO_HANDLING:
            refuseTransition(self.state, _X_HANDLING)
        self.state = _X_HANDLING
        owner = self.owner
        # A request is in: whatever timer ran (idle, head) is over; the next
        # refresh arms what applies from now (body, send, idle).
        owner.timer.clear()
        if self.error is not None:
            self.writeError(self.error.statusCode, "protocol-error")
            return
        head = self.head
        assert head is not None
        bodyComplete = self.body is _BODY_COMPLETE
        owner.setState(_C_HANDLING if bodyComplete else _C_READING_BODY)
        factory = owner.factory
        request = Request._fromConnection(
            head.method,
            head.target,
            head.version,
            head.headers,
            head.contentLength,
            head.chunked,
            factory.connectionOptionsOf(head.connection)
            if head.connection
            else _NO_OPTIONS,
            owner,
            owner.served + 1,
            NO_BODY if bodyComplete else self,
        )
        self.request = request
        if owner.peerTrusted:
            self.clientHost = applyForwarded(request, owner.config)
        try:
            result = factory.handler(request)
        except Exception:
            self.handlerFailed(Failure())
            return
        if type(result) is Response:
            self.respond(result)
            return
        deferred: Deferred[Response]
        if isinstance(result, Deferred):
            deferred = result
        elif iscoroutine(result):
            deferred = Deferred.fromCoroutine(result)
        elif isinstance(result, Response):
            self.respond(result)
            return
        else:
            self.handlerFailed(
                Failure(TypeError(f"handler returned {type(result).__name__}"))
            )
            return
        # Cancelled if the connection goes before the handler answers.
        self.pending = deferred
        self.dispatchedAt = owner.clock.seconds()
        if type(deferred) is not ResponseDeferred or not deferred.consumeDirectly(self):
            deferred.addCallbacks(self.handlerAnswered, self.handlerFailedAsync)

    def handlerAnswered(self, response: object) -> None:
        """
        The asynchronous handler's answer, written as a round's answers
        are: with the other answers of the reactor's turn (``Flow``).
        """
        self.pending = None
        self.owner.flow.gathered(self.respond, response)

    def handlerFailedAsync(self, failure: Failure) -> None:
        """The asynchronous handler failed (or was cancelled)."""
        self.pending = None
        self.handlerFailed(failure)

    def _describe(self) -> dict[str, Any]:
        head = self.head
        return {
            "method": head.method if head else b"-",
            "target": head.target if head else b"-",
            "peer": self.owner.peerHost,
        }

    def handlerFailed(self, failure: Failure) -> None:
        """The handler raised or failed: 500 (or its ProtocolError's status)."""
        owner = self.owner
        if self.finished or owner.state is _C_CLOSING or owner.state is _C_CLOSED:
            # Nobody is left to answer, but a bug that shows only when
            # clients go away must still be seen: log it once, unless it is
            # the cancellation (or the body failure) the server caused.
            if not failure.check(CancelledError) and (
                self.bodyFailure is None or failure.value is not self.bodyFailure
            ):
                _log.failure(
                    "handler failed for {method} {target} from {peer} "
                    "(after its connection ended)",
                    failure,
                    **self._describe(),
                )
            return
        error = failure.value
        if (error is self.bodyFailure and self.bodyFailure is not None) or isinstance(
            error, ClientGone
        ):
            # The client went away while the handler read the body, or it
            # half-closed and the handler took that as giving up: nobody
            # is left to answer, and it is not the handler's fault.
            _log.info(
                "request from {peer} ended early: {error}",
                peer=owner.peerHost,
                error=error,
            )
            owner.startClose("peer-closed")
            return
        if isinstance(error, ProtocolError):
            self.writeError(error.statusCode, "protocol-error")
            return
        _log.failure(
            "handler failed for {method} {target} from {peer}",
            failure,
            **self._describe(),
        )
        self.writeError(500, "handler-error")

    def timeOutHandler(self) -> bool:
        """
        handlerTimeout: cancel the handler and answer 503 with
        ``Connection: close`` (RFC 9110 §15.6.4).  False if it answered
        meanwhile.
        """
        if not self.awaitingHandler():
            return False
        _log.warn(
            "handler timeout for {method} {target} from {peer}", **self._describe()
        )
        pending, self.pending = self.pending, None
        assert pending is not None
        self.owner.closeReason = "handler-timeout"
        # The cancelled handler's failure is expected and not logged.
        self.writeError(503, "handler-timeout")
        _cancel(pending)
        return True

    # -- writing the response ------------------------------------------------

    def respond(self, response: object) -> None:
        """The handler's answer: write its head, then its body."""
        owner = self.owner
        if self.state is not _X_HANDLING or owner.state is _C_CLOSING:
            if isinstance(response, Response):
                closeBody(response)
            return
        if not isinstance(response, Response):
            self.handlerFailed(
                Failure(TypeError(f"handler returned {type(response).__name__}"))
            )
            return
        if response.code == 101:
            switchProtocols(self, response)
            return
        try:
            headBytes, framing, length = self._prepareHead(response)
        except (ResponseFramingError, ValueError, TypeError):
            closeBody(response)
            self.handlerFailed(Failure())
            return
        if not self.state.allowed & _TO_RESPONDING:
            refuseTransition(self.state, _X_RESPONDING)
        self.state = _X_RESPONDING
        owner.setState(_C_WRITING)
        flow = owner.flow
        body = response.body
        if type(body) is bytes:
            if framing is _FR_CONTENT_LENGTH:
                self.bodyBytes = len(body)
                flow.send(headBytes + body if body else headBytes)
            else:
                writer = makeWriter(framing, length)
                data = writer.write(body) + writer.finish(response.trailers)
                self.bodyBytes = len(body) if data else 0
                flow.send(headBytes + data)
            self.responseDone()
            return
        if framing is _FR_NONE:
            # HEAD, 204, 304: the body is never started (RFC 9110 §9.3.2).
            flow.send(headBytes)
            closeBody(response)
            self.responseDone()
            return
        flow.send(headBytes)
        streamed = self.streamed = ResponseBody(
            self, body, makeWriter(framing, length), length
        )
        streamed.start(response.trailers)

    def sendInterim(
        self, code: int, reason: bytes | None, fields: Iterable[tuple[bytes, bytes]]
    ) -> bool:
        """
        ``Request.sendInformational``: a 1xx head, while the handler runs and
        nothing of the response is written (checked fields, ValueError).
        """
        if self.state is not _X_HANDLING:
            return False
        self.owner.flow.send(encodeHeaderBlock(statusLine(code, reason), fields))
        return True

    def switched(self, status: int) -> None:
        """
        The connection switched protocols after this request: its record,
        with the status of the answer (101, or what the protocol that
        answered its own handshake wrote; 0 if it wrote nothing).
        """
        self.status = status
        self.decision = None
        self._enter(_X_RESPONDING)
        self._complete(None)

    def _prepareHead(self, response: Response) -> tuple[bytes, BodyFraming, int | None]:
        """Build the head (``responsehead``); ask the policy about persistence."""
        head = self.head
        assert head is not None
        owner = self.owner
        factory = owner.factory
        now = owner.clock.seconds()
        lines, framing, length, responseOptions = owner.heads.prepare(
            head.method,
            head.version,
            response.code,
            response.reason,
            response.fieldPairs(),
            response.bodyLength(),
            factory.dateLine(now),
            owner.isSecure,
        )
        request = self.request
        policy: PersistencePolicy = factory.policy
        # By position (the names are decide()'s): once per response.
        decision = policy.decide(
            head.version,  # version
            request.connectionOptions if request is not None else _NO_OPTIONS,
            responseOptions,
            framing is not _FR_CLOSE_DELIMITED,  # responseLengthKnown
            owner.served + 1,  # requestsServed
            now - owner.acceptedAt,  # connectionAge
            owner.draining,
            self.body is _BODY_COMPLETE or self.bodyConsumable(),
            not owner.closeAfterCurrent,  # framingSafe
        )
        self.decision = decision
        self.status = response.code
        if response.note is not None:
            self.note = response.note
        if not decision.keepAlive:
            # RFC 9112 §9.6: process no further requests on this connection.
            owner.closeAfterCurrent = True
        return finishHead(lines, decision, responseOptions), framing, length

    def abortResponse(self, why: str, logged: bool = False) -> None:
        """
        A response cannot be completed as framed: abort, never pad.  One log
        line says why, unless the caller ``logged`` the cause already.
        """
        owner = self.owner
        if not logged:
            _log.warn(
                "aborting a response to {peer}: {why}", peer=owner.peerHost, why=why
            )
        self.markAbandoned()
        self._stopBody()
        owner.closeReason = "response-error"
        owner.abort()

    def responseDone(self) -> None:
        """The response is complete on the wire (as far as we are concerned)."""
        decision = self.decision
        keepAlive = decision is not None and decision.keepAlive
        closeReason = None if keepAlive or decision is None else decision.reason
        self._complete(closeReason)
        if self.body is _BODY_COMPLETE:
            # Done with its request.  (With a body, request -> body source ->
            # exchange -> request is a cycle: cut here, it is freed now and
            # not by the cycle collector.)
            self.request = None
        self.owner.responseFinished(
            self, None if keepAlive else closeReason or "protocol-error"
        )

    def _complete(self, closeReason: str | None) -> None:
        """
        Count the complete response and write its record (a final one
        carries the connection's close reason, and no other record follows).
        """
        if not self.state.allowed & _TO_DONE:
            refuseTransition(self.state, _X_DONE)
        self.state = _X_DONE
        owner = self.owner
        owner.served += 1
        owner.stats.responses += 1
        if closeReason is not None:
            owner.closeLogged = True
        if owner.factory.requestObservers:
            recordRequest(self, closeReason)

    def startDiscarding(self) -> None:
        """
        The response is complete before the body: drain the rest (RFC 9112
        §9.3, bounded by maxBodyBytes), and the reader learns it ends here.
        """
        self.body = _BODY_DISCARDING
        if self.request is not None:
            self.failBody(ConnectionDone("the response ended before the body"))

    def writeError(self, status: int, reason: str) -> None:
        """
        The one place that writes error responses: a small text body,
        Content-Length and ``Connection: close``, and only while no byte of
        this exchange's response is written; after that, the only answer is
        an abort.
        """
        owner = self.owner
        if owner.state is _C_CLOSING or owner.state is _C_CLOSED:
            return
        if self.state is _X_RESPONDING or self.finished:
            self.abortResponse(f"error {status} after response start")
            return
        phrase = statusLine(status)
        body = phrase[9:]  # b"400 Bad Request\r\n"
        isHead = self.head is not None and self.head.method == b"HEAD"
        head = b"".join(
            [
                phrase,
                owner.factory.dateLine(owner.clock.seconds()),
                owner.heads.serverLine,
                b"Content-Type: text/plain; charset=utf-8\r\n",
                b"Content-Length: %d\r\n" % len(body),
                b"Connection: close\r\n\r\n",
            ]
        )
        self._enter(_X_RESPONDING)
        self.status = status
        self.bodyBytes = 0 if isHead else len(body)
        self.decision = None
        owner.closeAfterCurrent = True
        owner.setState(_C_WRITING)
        owner.flow.send(head if isHead else head + body)
        reason = owner.closeReason = owner.closeReason or reason
        self._complete(reason)
        owner.startClose(reason)

    # -- letting go ----------------------------------------------------------

    def release(self, error: BaseException, bodyFirst: bool) -> None:
        """
        The exchange is abandoned: a body reader still reading learns
        ``error`` (first, or after letting go of the handler when not
        ``bodyFirst``), a handler still working is cancelled (twisted.web's
        ``notifyFinish`` fails through this), its body producer is stopped
        and its file closed.
        """
        if not bodyFirst:
            self._letGo()
        if self.request is not None and self.body is not _BODY_COMPLETE:
            self.body = _BODY_COMPLETE
            try:
                self.failBody(error)
            except Exception:
                _log.failure("a body reader failed when its connection ended")
        if bodyFirst:
            self._letGo()

    def _letGo(self) -> None:
        pending, self.pending = self.pending, None
        if pending is not None:
            # Also reaches a Deferred that fired but waits on an inner one.
            _cancel(pending)
        self._stopBody()

    def _stopBody(self) -> None:
        streamed, self.streamed = self.streamed, None
        if streamed is not None:
            streamed.stop()

    # -- records ---------------------------------------------------------------


def applyForwarded(request: Request, config: ServerConfig) -> str | None:
    """
    A trusted proxy's ``Forwarded`` / ``X-Forwarded-*`` fields name the
    client and scheme of ``request`` (``_http.forwarded``); malformed ones
    are ignored (the peer stays).  Returns the client's host for the log.
    """
    hop = resolveClient(request.headers, config.trustedProxies, config.forwardedHeader)
    if hop is None:
        return None
    if hop.scheme is not None:
        request.scheme = hop.scheme
    if hop.host is None:
        return None
    request.clientAddress = _hopAddress(hop.host, hop.port or 0)
    return hop.host


def _cancel(deferred: Deferred[Any]) -> None:
    """Cancel a handler's Deferred; a canceller that raises is logged."""
    try:
        deferred.cancel()
    except Exception:
        _log.failure("cancelling a handler's Deferred failed")


def _hopAddress(host: str, port: int) -> IAddress:
    """A forwarded hop as an address (RFC 7239 identifiers as hostnames)."""
    if ":" in host:
        return IPv6Address("TCP", host, port)
    if host[0].isdigit():
        return IPv4Address("TCP", host, port)
    return HostnameAddress(host.encode("ascii"), port)


def closeBody(response: Response) -> None:
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


# Enum members as module globals: looking a member up on its Enum class
# costs a descriptor call (about 70 ns), and the request path reads these
# several times per request.
_BODY_COMPLETE = BodyState.COMPLETE
_BODY_DISCARDING = BodyState.DISCARDING
_BODY_PAUSED = BodyState.PAUSED
_BODY_READING = BodyState.READING
_BODY_STOPPED = BodyState.STOPPED
_BODY_UNREAD = BodyState.UNREAD
_C_CLOSED = ConnectionState.CLOSED
_C_CLOSING = ConnectionState.CLOSING
_C_HANDLING = ConnectionState.HANDLING
_C_READING_BODY = ConnectionState.READING_BODY
_C_WRITING = ConnectionState.WRITING
_FR_CLOSE_DELIMITED = BodyFraming.CLOSE_DELIMITED
_FR_CONTENT_LENGTH = BodyFraming.CONTENT_LENGTH
_FR_NONE = BodyFraming.NONE
_PH_BODY = Phase.BODY
_X_ABANDONED = ExchangeState.ABANDONED
_X_DONE = ExchangeState.DONE
_X_HANDLING = ExchangeState.HANDLING
_X_RESPONDING = ExchangeState.RESPONDING
