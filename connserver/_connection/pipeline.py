"""
``Pipeline``: a connection's requests, from the parser's events to their
turn, in order (RFC 9112 §9.3.2).

Requests may arrive before earlier ones are answered; responses must leave
in request order.  The pipeline pulls the parser's events (``pull``) as far
as the exchanges allow, holds the exchanges received and not yet answered,
front first, bounded by ``maxPipelinedRequests``, and the one whose body is
still arriving (``incoming``, which may be the front or the last).  Only
the front runs its handler.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.error import ConnectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from connserver._connection.exchange import Exchange
from connserver._connection.flow import READ_AHEAD_LIMIT
from connserver._http.errors import ProtocolError
from connserver._http.parser import NEED_DATA, BodyData, RequestHead
from connserver._http.state import (
    BodyState,
    ConnectionState,
    ExchangeState,
    InputState,
)
from connserver._http.upgrade import offeredUpgrades

__all__ = ["InputState", "Pipeline"]

_log = Logger(namespace="connserver")
_READING = BodyState.READING
_DISCARDING = BodyState.DISCARDING
_COMPLETE = BodyState.COMPLETE
_QUEUED = ExchangeState.QUEUED
_HANDLING = ExchangeState.HANDLING


_HALF_CLOSED = InputState.HALF_CLOSED
_EXHAUSTED = InputState.EXHAUSTED

# The queue of a pipeline with no request in it: an empty tuple shared by
# all (typed as the list it stands for; nothing appends to it, a list is made
# for the first request), so that an idle connection holds no list.  (A list,
# not a deque: it holds at most maxPipelinedRequests, and an empty deque
# costs 600 bytes.)
_EMPTY: list[Any] = cast(Any, ())


class Pipeline:
    """The exchanges of one connection, front first, and the incoming one."""

    __slots__ = ("_conn", "holding", "incoming", "limit", "queue")

    def __init__(self, conn: Any, limit: int) -> None:
        #: The connection (``HTTPServerProtocol``): its parser, its state.
        self._conn = conn
        #: Exchanges waiting for or writing their response, front first.
        self.queue: list[Exchange] = _EMPTY
        #: The exchange whose body the parser is still reading, if any.
        self.incoming: Exchange | None = None
        #: maxPipelinedRequests: no further request is parsed past it.
        self.limit = limit
        #: A request that may switch protocols (RFC 9110 §7.8): nothing
        #: behind it is parsed until its answer is known, since what follows
        #: it belongs to the new protocol if it switches.
        self.holding: Exchange | None = None

    def front(self) -> Exchange | None:
        """The exchange whose response goes next."""
        queue = self.queue
        return queue[0] if queue else None

    def isFull(self) -> bool:
        """No further request may be parsed until one is answered."""
        return len(self.queue) >= self.limit

    def append(self, exchange: Exchange) -> None:
        """A request was received (the shared empty queue becomes a list)."""
        if self.queue:
            self.queue.append(exchange)
        else:
            self.queue = [exchange]

    def popFront(self) -> None:
        """The front's response is complete."""
        queue = self.queue
        if len(queue) == 1:
            self.queue = _EMPTY
        else:
            queue.pop(0)

    def takeAll(self) -> list[Exchange]:
        """Every exchange, the incoming one included, and empty the pipeline."""
        exchanges = list(self.queue)
        incoming = self.incoming
        if incoming is not None and incoming not in exchanges:
            exchanges.append(incoming)
        self.queue = _EMPTY
        self.incoming = None
        self.holding = None
        return exchanges

    def abandonAll(self, error: BaseException, bodiesFirst: bool) -> None:
        """
        Nobody will read the responses: every exchange is abandoned (all
        of them first, so that whatever runs below, a handler told that its
        body will not come, finds them so), then each lets go of its
        handler and body producer and its body reader learns ``error``
        (before letting go when ``bodiesFirst``: the connection is lost,
        and the reader's failure is the truer one).
        """
        exchanges = self.takeAll()
        for exchange in exchanges:
            exchange.markAbandoned()
        for exchange in exchanges:
            exchange.release(error, bodiesFirst)

    # -- from the parser ------------------------------------------------------

    def pull(self) -> None:
        """
        Pull parser events as far as the exchanges allow: a new head while
        the pipeline has room and no body is in the way, body bytes while
        the front's reader wants them (or they are discarded).
        """
        conn = self._conn
        parser = conn.parser
        while parser is not None and not conn.closeAfterCurrent:
            if self.holding is not None:
                break
            incoming = self.incoming
            if incoming is not None:
                body = incoming.body
                if body is not _DISCARDING and body is not _COMPLETE:
                    if body is not _READING or incoming is not self.front():
                        break
            elif len(self.queue) >= self.limit:
                break
            try:
                event = parser.nextEvent()
            except ProtocolError as error:
                self._parseFailed(error)
                return
            if event is NEED_DATA:
                if conn.peerInput is _HALF_CLOSED:
                    # After the client's half-close: the end of the input
                    # (acted on at the end of the round).
                    conn.peerInput = _EXHAUSTED
                return
            eventType = type(event)
            if eventType is RequestHead:
                exchange = self._headReceived(cast(RequestHead, event))
                state = conn.state
                if (
                    self.queue[0] is exchange
                    and not conn.flow.writePaused
                    and state is not _C_CLOSING
                    and state is not _C_CLOSED
                ):
                    # The common case: nothing ahead of it, so run its
                    # handler before reading further ahead; a synchronous
                    # answer is complete when this returns.
                    exchange.dispatch()
            elif eventType is BodyData:
                assert incoming is not None
                incoming.receiveData(cast(BodyData, event).data)
            else:
                self._messageEnded()
            parser = conn.parser

    def _headReceived(self, head: RequestHead) -> Exchange:
        conn = self._conn
        exchange = Exchange(conn, head, conn.clock.seconds())
        conn.stats.requests += 1
        if exchange.body is _COMPLETE:
            if head.connection and self._mightSwitch(exchange, head):
                # The parser stays at the end of this head until the answer:
                # what follows is the new protocol's if it switches.
                self.holding = exchange
            else:
                # No body: the parser's EndOfMessage is due; skip it so that
                # the parser is between messages again.
                conn.parser.skipEndOfMessage()
        else:
            self.incoming = exchange
        self.append(exchange)
        return exchange

    def _mightSwitch(self, exchange: Exchange, head: RequestHead) -> bool:
        """
        The bodiless request offers a protocol to switch to (RFC 9110 §7.8):
        noted on the exchange (``offered``).
        """
        options = self._conn.factory.connectionOptionsOf(head.connection)
        if b"upgrade" not in options:
            return False
        offered = offeredUpgrades(
            head.version, options, head.headers.getAll(b"upgrade"), False
        )
        exchange.offered = offered
        return bool(offered)

    def _messageEnded(self) -> None:
        exchange = self.incoming
        assert exchange is not None
        self.incoming = None
        conn = self._conn
        if exchange.receiveEnd() and conn.state is _C_WAITING:
            # The unread body is gone: now the connection is really idle.
            conn.factory.connectionIdle(conn)
        if conn.state is _C_READING_BODY and exchange is self.front():
            conn.setState(_C_HANDLING)

    def _parseFailed(self, error: ProtocolError) -> None:
        conn = self._conn
        _log.info(
            "bad request from {peer}: {status} {message}",
            peer=conn.peerHost,
            status=error.statusCode,
            message=error.message,
        )
        conn.parser = None
        incoming = self.incoming
        self.incoming = None
        if incoming is not None and incoming.body is not _COMPLETE:
            # An error inside a body (chunked framing): the request that owns
            # the body cannot be trusted any more than the connection.
            if incoming.request is not None:
                incoming.request.receiveBodyEnd(Failure(error))
            if incoming.state is not _QUEUED:
                incoming.body = _COMPLETE
                conn.closeAfterCurrent = True
                if incoming.state is _HANDLING:
                    incoming.error = error
                return
        if incoming is None:
            # A request that never parsed is still a request received (and
            # answered with a 4xx), as nginx counts it; one cut short inside
            # its body was counted with its head.
            conn.stats.requests += 1
        exchange = Exchange(conn, None, conn.clock.seconds())
        exchange.error = error
        self.append(exchange)
        conn.askAgain()

    def endOfInput(self) -> None:
        """
        The parser asked for more bytes after the client's half-close: the
        message it is inside (if any) can never complete, and once no
        response is pending the connection closes.
        """
        conn = self._conn
        incoming = self.incoming
        if incoming is not None and incoming.body is not _COMPLETE:
            self.incoming = None
            conn.closeAfterCurrent = True
            incoming.cutShort(ConnectionDone("the client closed mid-body"))
        if not self.queue:
            conn.startClose("peer-closed")

    def inputEnded(self) -> None:
        """
        The client half-closed: the requests in flight are told (those that
        asked, ``Request.notifyInputEnd``).
        """
        for exchange in self.queue:
            if exchange.request is not None:
                exchange.request._tellInputEnded()

    def updateReading(self) -> None:
        """
        Pause reading from the socket while the incoming body's reader
        paused it, or while more than ``READ_AHEAD_LIMIT`` is read ahead.
        """
        conn = self._conn
        if conn.state is _C_CLOSED:
            return
        parser = conn.parser
        pause = False
        if parser is not None:
            incoming = self.incoming
            if incoming is not None and incoming.body is _BODY_PAUSED:
                pause = True
            elif parser.bufferedByteCount > READ_AHEAD_LIMIT:
                pause = True
        conn.flow.setReading(pause)

    def advance(self, exchange: Exchange) -> None:
        """
        The front's response is complete and the connection stays: drain
        its unread body, and the connection waits, or reads the next head.
        """
        queue = self.queue
        if len(queue) == 1:
            self.queue = _EMPTY
        else:
            queue.pop(0)
        conn = self._conn
        if self.holding is exchange:
            # Answered without switching: parse on.
            self.holding = None
            conn.parser.skipEndOfMessage()
        if exchange.body is not _COMPLETE:
            exchange.startDiscarding()
        if self.queue:
            return
        incoming = self.incoming
        parser = conn.parser
        if incoming is not None and incoming.body is _DISCARDING:
            # Only an unread body is left to discard: idle as far as
            # requests go (the body timer bounds the discard).
            conn.setState(_C_WAITING)
        elif parser is not None and (parser.inMessage or parser.bufferedByteCount):
            conn.setState(_C_READING_HEAD)
        else:
            conn.setState(_C_WAITING)


# Enum members as module globals: looking a member up on its Enum class
# costs a descriptor call (about 70 ns), and the request path reads these
# several times per request.
_C_CLOSED = ConnectionState.CLOSED
_C_CLOSING = ConnectionState.CLOSING
_C_HANDLING = ConnectionState.HANDLING
_C_READING_BODY = ConnectionState.READING_BODY
_C_READING_HEAD = ConnectionState.READING_HEAD
_C_WAITING = ConnectionState.WAITING
_BODY_PAUSED = BodyState.PAUSED
