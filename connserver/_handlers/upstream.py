"""
The reverse proxy's upstream client: connections to one upstream, read
with connserver's own strict response parser, and their pool.

Every connection reads its responses with
:class:`~connserver._http.parser.ResponseParser` and judges each one before
it may carry another request: a framing fault (a status line without three
digits, Content-Length with Transfer-Encoding, an invalid or repeated
Content-Length, Transfer-Encoding on HTTP/1.0, an unrequested ``101``),
bytes beyond the message, a body that ends with the connection, or any
byte that arrives while it sits idle in the pool: each makes the connection
unusable, and it is closed, never pooled (RFC 9112 §6.3, §9.3).  What to
tell the client is the listener's (the proxy's exchange) to decide: a 502
before the response head, an aborted response after it.

The pool keeps at most ``maxIdle`` idle connections, most recently used
first (the others time out first), each closed after ``idleTimeout``
seconds.  An idle connection that the upstream closes (FIN or RST) leaves
the pool at once.  Each connection has one lazy timer (a deadline moved by
a timestamp, re-armed only when it fires early) for its idle timeout, the
wait for the response head and the wait between two body bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from connserver._http.errors import ProtocolError
from connserver._http.headers import optionsFromValues, splitList
from connserver._http.parser import (
    NEED_DATA,
    BodyData,
    ResponseHead,
    ResponseParser,
)
from connserver._twisted.afterturn import afterTurnOf
from connserver._twisted.reactor import cancelCall
from connserver._twisted.sockets import setNoDelay
from connserver._twisted.writethrough import TransportWriter

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

    from connserver._handlers.tunnel import Tunnel

__all__ = [
    "UpstreamConnection",
    "UpstreamListener",
    "UpstreamPool",
    "UpstreamState",
    "responseOptions",
]

_log = Logger(namespace="connserver")

#: At most this many interim (1xx) responses before the final one: more is
#: an upstream that never answers, not one that gives hints.
MAX_INTERIM = 16

_NO_OPTIONS: frozenset[bytes] = frozenset()
#: The options of the distinct Connection values seen (an upstream sends
#: the same "keep-alive" on every response), at most this many.
_OPTIONS_CACHE_SIZE = 64
_optionsCache: dict[tuple[bytes, ...], frozenset[bytes]] = {}


def responseOptions(head: ResponseHead) -> frozenset[bytes]:
    """The lowercased options of a response's ``Connection`` field lines."""
    values = head.connection
    if not values:
        return _NO_OPTIONS
    options = _optionsCache.get(values)
    if options is None:
        options = optionsFromValues(values)
        if len(_optionsCache) >= _OPTIONS_CACHE_SIZE:
            _optionsCache.clear()
        _optionsCache[values] = options
    return options


class UpstreamListener(Protocol):
    """What a connection tells the request it carries (the proxy's exchange)."""

    def interim(self, head: ResponseHead) -> None:
        """An interim 1xx response (never 101, which is a fault)."""

    def responseComplete(self, head: ResponseHead, body: bytes) -> None:
        """The final response arrived whole; the connection is released."""

    def responseStarted(self, head: ResponseHead, body: list[bytes]) -> None:
        """The final response's head, and the body bytes that came with it."""

    def bodyData(self, data: bytes) -> None:
        """More of the response body."""

    def bodyEnd(self) -> None:
        """The response body is complete; the connection is released."""

    def switched(self, head: ResponseHead, protocol: bytes, early: bytes) -> None:
        """
        The upstream accepted the request's upgrade to ``protocol`` (its
        ``101``); ``early``: the bytes that followed the 101.  The
        connection is the listener's now (``UpstreamConnection.tunnel``).
        """

    def upstreamFailed(self, why: str, retryable: bool) -> None:
        """
        The connection failed (``why``: ``upstream-failed``,
        ``upstream-bad-response`` or ``upstream-timeout``); it is closed.
        ``retryable``: a reused connection that gave no response byte.
        """


class UpstreamState(Enum):
    """Where an upstream connection is."""

    #: Carrying a request, or being handed to one.
    BUSY = "busy"
    #: In the pool.
    IDLE = "idle"
    #: Closed, or closing: never used again.
    CLOSED = "closed"


_BUSY = UpstreamState.BUSY
_IDLE = UpstreamState.IDLE
_CLOSED = UpstreamState.CLOSED


class UpstreamConnection(TwistedProtocol):
    """
    One connection to the upstream: writes a request, parses its response
    strictly, and goes back to the pool only when nothing about it is in
    doubt.
    """

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.parser = ResponseParser()
        self.state = _BUSY
        self.listener: UpstreamListener | None = None
        #: Requests sent on this connection (a reused one has > 1).
        self.requests = 0
        #: A byte of the current request's response has arrived.
        self.received = False
        #: The current request, body included, is all written.
        self.requestDone = True
        #: The final response's head has arrived (the body is streaming).
        self.streaming = False
        self.keepAlive = False
        self.interims = 0
        self.deadline: float | None = None
        self.timer: IDelayedCall | None = None
        #: When the timer fires (it may fire before the deadline, never after).
        self.timerAt = 0.0
        self.lost: Deferred[None] | None = None
        #: The protocols the current request offered to switch to (its
        #: ``Upgrade``, sent on a new connection that is never pooled).
        self.upgrades: tuple[bytes, ...] = ()
        #: The proxy's tunnel once the connection switched protocols.
        self.tunnel: Tunnel | None = None
        #: Writes the request: straight to the socket while Twisted's buffer
        #: is empty (set when connected).
        self.out: TransportWriter | None = None

    # -- Twisted's callbacks ------------------------------------------------

    def connectionMade(self) -> None:
        # A request's head and body may leave in separate writes; under
        # Nagle's algorithm the second would wait for the upstream's
        # delayed ACK.
        setNoDelay(self.transport)
        # Written through while Twisted's buffer is empty, as the server's
        # responses are: a request head left to Twisted's buffer costs a
        # reactor turn and two epoll_ctl calls (register for writability,
        # unregister after the send) on every proxied request.
        assert self.transport is not None
        self.out = TransportWriter(self.transport)

    def dataReceived(self, data: bytes) -> None:
        if self.listener is None:
            tunnel = self.tunnel
            if tunnel is not None:
                # Switched protocols: the bytes are the tunnel's.
                tunnel.fromUpstream(data)
                return
            # RFC 9112 §9.3: nothing may arrive between responses; whatever
            # did belongs to no request, and the framing is in doubt.
            self.close("bytes from the upstream while idle")
            return
        self.received = True
        parser = self.parser
        parser.receiveData(data)
        if self.streaming and self.deadline is not None:
            self.deadline = self.pool.clock.seconds() + self.pool.responseTimeout  # type: ignore[operator]
        self._pump()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        state, self.state = self.state, _CLOSED
        self._cancelTimer()
        tunnel, self.tunnel = self.tunnel, None
        if tunnel is not None:
            tunnel.upstreamLost(reason)
        if state is _IDLE:
            self.pool.discard(self)
        listener = self.listener
        if listener is not None:
            self.parser.receiveEOF()
            self._pump()
            listener = self.listener
            if listener is not None:
                self.listener = None
                listener.upstreamFailed(
                    "upstream-failed", self.requests > 1 and not self.received
                )
        lost, self.lost = self.lost, None
        if lost is not None:
            lost.callback(None)

    # -- requests -----------------------------------------------------------

    def send(
        self,
        listener: UpstreamListener,
        method: bytes,
        head: bytes,
        hasBody: bool,
        upgrades: tuple[bytes, ...] = (),
    ) -> None:
        """
        Write a request's head; its body follows (``writeBody``,
        ``endBody``).  ``upgrades``: the protocols the head offers to switch
        to (a 101 naming one of them is followed, RFC 9110 §7.8).
        """
        self.listener = listener
        self.upgrades = upgrades
        self.state = _BUSY
        self.requests += 1
        self.received = False
        self.streaming = False
        self.interims = 0
        self.requestDone = not hasBody
        self.parser.expectResponse(method)
        if hasBody or upgrades:
            # (The body, or the tunnel, follows the head at once.)
            self._sendHead(head)
        else:
            self.pool.afterTurn(self._sendHead, head)
        if not hasBody:
            self.setDeadline(self.pool.responseTimeout)
        else:
            # The client's body timers bound the upload; the response timer
            # starts once it is through.
            self.deadline = None

    def _sendHead(self, head: bytes) -> None:
        # Not if the request was abandoned (or the connection lost) since.
        out = self.out
        if self.state is _BUSY and out is not None:
            out.write(head)

    def writeBody(self, data: bytes) -> None:
        """Some request body bytes, already framed for this hop."""
        if self.state is _BUSY and self.out is not None and self.transport is not None:
            self.out.write(data)

    def endBody(self, last: bytes) -> None:
        """The end of the request body (``last``: the chunked terminator)."""
        self.requestDone = True
        if self.state is not _BUSY or self.transport is None:
            return
        if last and self.out is not None:
            self.out.write(last)
        if self.listener is not None and not self.streaming:
            self.setDeadline(self.pool.responseTimeout)

    def pauseReading(self) -> None:
        """The client stopped reading: stop reading the upstream (no timer)."""
        self.deadline = None
        if self.state is _BUSY and self.transport is not None:
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def resumeReading(self) -> None:
        if self.state is _BUSY and self.transport is not None:
            self.setDeadline(self.pool.responseTimeout)
            self.transport.resumeProducing()  # type: ignore[attr-defined]
            if self.parser.bufferedByteCount:
                self._pump()

    def abandon(self) -> None:
        """The request is gone (the client left): close, unless already done."""
        if self.listener is not None or self.state is _BUSY:
            self.listener = None
            self.abort()

    def _pump(self) -> None:
        """Hand the parser's events to the listener, judging each."""
        parser = self.parser
        try:
            while True:
                listener = self.listener
                if listener is None:
                    return
                event = parser.nextEvent()
                if event is NEED_DATA:
                    return
                kind = type(event)
                if kind is BodyData:
                    listener.bodyData(event.data)  # type: ignore[union-attr]
                elif kind is ResponseHead:
                    assert isinstance(event, ResponseHead)
                    if event.status >= 200:
                        self._finalHead(event, listener)
                    elif event.status == 101:
                        self._switch(event, listener)
                        return
                    else:
                        self.interims += 1
                        if self.interims > MAX_INTERIM:
                            self._fail("too many interim responses")
                            return
                        listener.interim(event)
                else:
                    self._messageDone()
                    listener.bodyEnd()
        except ProtocolError as e:
            self._fail(e.message)

    def _switch(self, head: ResponseHead, listener: UpstreamListener) -> None:
        """
        A ``101``: followed when its ``Upgrade`` names a protocol the
        request offered (RFC 9110 §7.8: "the server MUST send an Upgrade
        header field to indicate the new protocol(s)"); any other is a
        fault, and the connection closes.
        """
        offered = self.upgrades
        names = [token.strip() for token in splitList(head.headers.getAll(b"upgrade"))]
        chosen = names[0] if len(names) == 1 else None
        if not offered or chosen is None or chosen.lower() not in offered:
            self._fail("a 101 Switching Protocols to a protocol not offered")
            return
        self.listener = None
        self.deadline = None
        self._cancelTimer()
        listener.switched(head, chosen, self.parser.takeBuffered())

    def tunnelEnded(self) -> None:
        """The tunnel this connection carried is over: never used again."""
        self.state = _CLOSED
        self._cancelTimer()

    def _finalHead(self, head: ResponseHead, listener: UpstreamListener) -> None:
        """The final head: relay it with the body already here, or whole."""
        # RFC 9112 §9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 only
        # with "keep-alive".
        options = responseOptions(head)
        if head.version == (1, 1):
            self.keepAlive = b"close" not in options
        else:
            self.keepAlive = b"keep-alive" in options
        parser = self.parser
        parts: list[bytes] = []
        while True:
            event = parser.nextEvent()
            if event is NEED_DATA:
                break
            if type(event) is BodyData:
                parts.append(event.data)
                continue
            self._messageDone()
            listener.responseComplete(
                head, parts[0] if len(parts) == 1 else b"".join(parts)
            )
            return
        self.streaming = True
        if self.deadline is not None:
            self.setDeadline(self.pool.responseTimeout)
        listener.responseStarted(head, parts)

    def _messageDone(self) -> None:
        """The final response is complete: back to the pool, or closed."""
        self.listener = None
        self.streaming = False
        if self.parser.bufferedByteCount:
            # RFC 9112 §6.3: bytes beyond the message (beyond Content-Length,
            # a body on a 204, 304 or HEAD answer): the framing is in doubt.
            self.close("bytes beyond the end of the response")
        elif not self.requestDone:
            # Answered before the request body was all sent: cut it.
            self.abort()
        elif not self.keepAlive or self.state is not _BUSY or self.upgrades:
            # A connection that offered an upgrade is never pooled.
            self.close(None)
        else:
            self.pool.release(self)

    def _fail(self, why: str) -> None:
        """A framing fault: the listener learns it, the connection closes."""
        listener, self.listener = self.listener, None
        self.close(why)
        if listener is not None:
            listener.upstreamFailed("upstream-bad-response", False)

    def close(self, why: str | None) -> None:
        """
        Close for good: at once for a fault (``why``, logged), else with a
        FIN after what is written (the upstream sees a clean close).
        """
        if why is not None:
            _log.info(
                "upstream {url}: {why}; connection closed", url=self.pool.url, why=why
            )
            self.abort()
            return
        if self.state is _IDLE:
            self.pool.discard(self)
        self.state = _CLOSED
        self._cancelTimer()
        if self.transport is not None:
            self.transport.loseConnection()

    def abort(self) -> None:
        if self.state is _IDLE:
            self.pool.discard(self)
        self.state = _CLOSED
        self._cancelTimer()
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    # -- the one timer ----------------------------------------------------

    def setDeadline(self, seconds: float | None) -> None:
        """Expire ``seconds`` from now (None: no deadline)."""
        if seconds is None:
            self.deadline = None
            return
        clock = self.pool.clock
        deadline = self.deadline = clock.seconds() + seconds
        timer = self.timer
        if timer is None:
            self.timer = clock.callLater(seconds, self._expire)
            self.timerAt = deadline
        elif deadline < self.timerAt:
            timer.reset(seconds)
            self.timerAt = deadline

    def _expire(self) -> None:
        self.timer = None
        deadline = self.deadline
        if deadline is None or self.state is _CLOSED:
            return
        clock = self.pool.clock
        left = deadline - clock.seconds()
        if left > 0:
            self.timer = clock.callLater(left, self._expire)
            self.timerAt = deadline
            return
        self.deadline = None
        if self.state is _IDLE:
            self.close(None)  # the idle timeout
            return
        listener, self.listener = self.listener, None
        self.abort()
        if listener is not None:
            listener.upstreamFailed("upstream-timeout", False)

    def _cancelTimer(self) -> None:
        timer, self.timer = self.timer, None
        cancelCall(timer)


class _ConnectionFactory(Factory):
    noisy = False

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool

    def buildProtocol(self, addr: Any) -> UpstreamConnection:
        return UpstreamConnection(self.pool)


class UpstreamPool:
    """
    The connections to one upstream: at most ``maxIdle`` idle ones, most
    recently used first, each closed after ``idleTimeout`` seconds idle.
    Busy connections are not bounded by it (as nginx's ``keepalive N``).
    """

    def __init__(
        self,
        clock: IReactorTime,
        endpoint: IStreamClientEndpoint,
        url: str,
        maxIdle: int,
        idleTimeout: float,
        responseTimeout: float | None,
    ) -> None:
        self.clock = clock
        self.url = url
        self.maxIdle = maxIdle
        self.idleTimeout = idleTimeout
        self.responseTimeout = responseTimeout
        #: The idle connections, the most recently used last.
        self.idle: list[UpstreamConnection] = []
        #: Connections opened, for tests and the figures.
        self.opened = 0
        self.closed = False
        self._endpoint = endpoint
        self._factory = _ConnectionFactory(self)
        self._turn = afterTurnOf(clock)

    def afterTurn(self, call: Callable[[Any], None], arg: Any) -> None:
        """
        ``call(arg)`` once the reactor has handled every event of this turn
        (``connserver._twisted.afterturn``).

        The requests' heads and the relayed responses wait for it, so that
        each peer (the upstream, the client) is woken about once per turn
        rather than once per request.  Measured with bench_proxy.py's load:
        72 -> 60 us of CPU per proxied request, the same run alternating
        builds.
        """
        self._turn.add(call, arg)

    def take(self) -> UpstreamConnection | None:
        """The most recently used idle connection, if any."""
        idle = self.idle
        if idle:
            connection = idle.pop()
            connection.state = _BUSY
            return connection
        return None

    def connect(self) -> Deferred[UpstreamConnection]:
        """A new connection."""
        self.opened += 1
        d: Deferred[Any] = self._endpoint.connect(self._factory)
        return d

    def release(self, connection: UpstreamConnection) -> None:
        """``connection`` finished a request cleanly: keep it, or close it."""
        if self.closed or len(self.idle) >= self.maxIdle:
            connection.close(None)
            return
        connection.state = _IDLE
        self.idle.append(connection)
        connection.setDeadline(self.idleTimeout)

    def discard(self, connection: UpstreamConnection) -> None:
        """``connection`` is closing: it leaves the pool."""
        try:
            self.idle.remove(connection)
        except ValueError:
            pass

    def close(self) -> Deferred[Any]:
        """Close the idle connections (at shutdown); no new one is kept."""
        self.closed = True
        waits: list[Deferred[None]] = []
        for connection in list(self.idle):
            lost = connection.lost = Deferred()
            waits.append(lost)
            connection.close(None)
        self.idle.clear()
        return DeferredList(waits)
