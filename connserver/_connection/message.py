"""
``Request`` and ``Response``: what a handler receives and returns.

A handler is any callable ``handler(request) -> Response | Deferred[Response]
| coroutine``.  The request body is read on demand, whole
(:meth:`Request.readBody`, bounded by ``maxBodyBytes``) or streamed with
backpressure (:meth:`Request.deliverBody`, Twisted's ``IResponse`` idiom), so
that a handler which never reads a body costs nothing and a ``100 Continue``
is sent only when the body is wanted (RFC 9110 §10.1.1).  A handler inside
connserver that answers later may return a ``ResponseDeferred``, which the
exchange consumes without a callback chain (see its section below).
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IProtocol, IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from connserver._connection.takeover import SwitchProtocols, transportFor
from connserver._http.errors import ProtocolError
from connserver._http.headers import Headers, connectionOptions
from connserver._http.state import InputState
from connserver._http.upgrade import offeredUpgrades

__all__ = [
    "DirectConsumer",
    "Handler",
    "HeadersLike",
    "Request",
    "Response",
    "ResponseBody",
    "ResponseDeferred",
    "SwitchProtocols",
]

if TYPE_CHECKING:
    from twisted.internet.interfaces import ITransport  # noqa: F401


#: The types a response body may have.
ResponseBody = bytes | IBodyProducer | BinaryIO | SwitchProtocols
#: What ``Response(headers=...)`` accepts.
HeadersLike = (
    Headers
    | Mapping[str, str]
    | Mapping[bytes, bytes]
    | Iterable[tuple[str, str]]
    | Iterable[tuple[bytes, bytes]]
)


class _BodySource(Protocol):
    """What the connection offers a request for reading its body."""

    def bodyWanted(self, request: Request) -> None:
        """The handler asked for the body: start (``100 Continue``) delivering."""

    def pauseBody(self) -> None:
        """The consumer wants no more data for now."""

    def resumeBody(self) -> None:
        """The consumer wants data again."""

    def stopBody(self) -> None:
        """The consumer wants no more of the body at all."""


@implementer(IPushProducer)
class _BodyProducer:
    """The transport handed to a body consumer: pausing it pauses reading."""

    __slots__ = ("_source",)

    def __init__(self, source: _BodySource) -> None:
        self._source = source

    def pauseProducing(self) -> None:
        self._source.pauseBody()

    def resumeProducing(self) -> None:
        self._source.resumeBody()

    def stopProducing(self) -> None:
        self._source.stopBody()


@implementer(IProtocol)
class _Accumulator:
    """Collects a whole body for :meth:`Request.readBody`, up to a limit."""

    def __init__(self, limit: int | None, done: Deferred[bytes]) -> None:
        self._limit = limit
        self._done = done
        self._parts: list[bytes] = []
        self._size = 0
        self._producer: IPushProducer | None = None

    def makeConnection(self, transport: IPushProducer) -> None:  # type: ignore[override]
        self._producer = transport
        self.connectionMade()

    def connectionMade(self) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        if self._done.called:
            return
        self._size += len(data)
        if self._limit is not None and self._size > self._limit:
            assert self._producer is not None
            self._producer.stopProducing()
            self._done.errback(
                ProtocolError("request body larger than maxBodyBytes", 413)
            )
            return
        self._parts.append(data)

    def connectionLost(self, reason: Failure = ResponseDone) -> None:  # type: ignore[assignment]
        if self._done.called:
            return
        if reason.check(ResponseDone):
            self._done.callback(b"".join(self._parts))
        else:
            self._done.errback(reason)


class _ConnectionFacts(Protocol):
    """What a connection knows that each of its requests shares."""

    peer: IAddress | None
    host: IAddress | None
    isSecure: bool
    scheme: str
    connectionId: int
    maxBodyBytes: int | None
    draining: bool


def _scheme(isSecure: bool) -> str:
    return "https" if isSecure else "http"


class Request:
    """
    One HTTP request, as a handler sees it.

    ``headers`` are the request's fields in order (``Headers``, bytes);
    ``connectionOptions`` are the lowercased tokens of every ``Connection``
    line, so that a handler can tell which fields belong to this hop only
    (RFC 9110 §7.6.1).  ``path`` and ``query`` split ``target`` at the first
    ``?``; neither is percent-decoded.
    """

    __slots__ = (
        "_bodyDone",
        "_bodyFailure",
        "_connection",
        "_consumer",
        "_inputEnded",
        "_maxBodyBytes",
        "_options",
        "_source",
        "chunked",
        "clientAddress",
        "connectionId",
        "contentLength",
        "headers",
        "host",
        "isSecure",
        "method",
        "path",
        "peer",
        "query",
        "requestIndex",
        "scheme",
        "target",
        "version",
    )

    def __init__(
        self,
        method: bytes,
        target: bytes,
        version: tuple[int, int] = (1, 1),
        headers: Headers | None = None,
        *,
        peer: IAddress | None = None,
        host: IAddress | None = None,
        isSecure: bool = False,
        connectionId: int = 0,
        requestIndex: int = 1,
        contentLength: int | None = 0,
        chunked: bool = False,
        maxBodyBytes: int | None = None,
        body: bytes | None = None,
        bodySource: _BodySource | None = None,
        clientAddress: IAddress | None = None,
        scheme: str | None = None,
    ) -> None:
        self.method = method
        self.target = target
        path, sep, query = target.partition(b"?")
        self.path = path
        self.query = query if sep else b""
        self.version = version
        self.headers = headers if headers is not None else Headers()
        self.peer = peer
        self.host = host
        self.isSecure = isSecure
        self.clientAddress = clientAddress if clientAddress is not None else peer
        self.scheme = scheme if scheme is not None else _scheme(isSecure)
        self.connectionId = connectionId
        self.requestIndex = requestIndex
        self.contentLength = contentLength
        self.chunked = chunked
        self._options: frozenset[bytes] | None = None
        self._maxBodyBytes = maxBodyBytes
        self._connection: Any = None
        self._consumer: IProtocol | None = None
        self._bodyDone = False
        self._bodyFailure: Failure | None = None
        self._inputEnded: Callable[[], None] | None = None
        if bodySource is None:
            # A request made by hand (tests, adapters): the body is in memory.
            bodySource = _MemoryBody(body or b"")
            self.contentLength = len(body or b"")
            self.chunked = False
        self._source = bodySource

    @classmethod
    def _fromConnection(
        cls,
        method: bytes,
        target: bytes,
        version: tuple[int, int],
        headers: Headers,
        contentLength: int | None,
        chunked: bool,
        options: frozenset[bytes],
        connection: _ConnectionFacts,
        requestIndex: int,
        bodySource: _BodySource,
    ) -> Request:
        """
        The request as the server builds it, once per request: the slots set
        directly, with what the connection knows shared in ``connection``
        (no keyword parsing, no defaults to fill).
        """
        self: Request = object.__new__(cls)
        self.method = method
        self.target = target
        path, sep, query = target.partition(b"?")
        self.path = path
        self.query = query if sep else b""
        self.version = version
        self.headers = headers
        self.peer = connection.peer
        self.host = connection.host
        self.isSecure = connection.isSecure
        # The protocol replaces these two when a trusted proxy forwarded
        # the request (``--trusted-proxies``).
        self.clientAddress = connection.peer
        self.scheme = connection.scheme
        self.connectionId = connection.connectionId
        self.requestIndex = requestIndex
        self.contentLength = contentLength
        self.chunked = chunked
        self._options = options
        self._maxBodyBytes = connection.maxBodyBytes
        # The connection itself: interim responses, switching protocols.
        self._connection = connection
        self._consumer = None
        # No body: nobody reads it yet, so "delivered whole" is a flag.
        self._bodyDone = bodySource is NO_BODY
        self._bodyFailure = None
        self._inputEnded = None
        self._source = bodySource
        return self

    @property
    def draining(self) -> bool:
        """
        The server drains this request's connection (it shuts down
        gracefully): the response closes the connection, and a handler
        should start nothing meant to outlive it (a tunnel, say).
        """
        connection = self._connection
        return connection is not None and bool(connection.draining)

    def notifyInputEnd(self, callback: Callable[[], None]) -> None:
        """
        Call ``callback`` once if the client half-closes (sends its FIN)
        while this request is in flight; at once if it did already.

        connserver itself answers a client that half-closed (RFC 9112 §9.6:
        its requests are still complete).  Browsers, curl and proxies close
        only when they give up on a response, though, and an application
        framework may take it so: ASGI's ``http.disconnect``, as uvicorn and
        Daphne send it.
        """
        connection = self._connection
        if connection is None:
            return  # Made by hand: no client to close.
        if connection.peerInput is not InputState.OPEN:
            callback()
        else:
            self._inputEnded = callback

    def _tellInputEnded(self) -> None:
        """The client half-closed (called by the connection's pipeline)."""
        callback, self._inputEnded = self._inputEnded, None
        if callback is not None:
            try:
                callback()
            except Exception:
                _log.failure("a notifyInputEnd callback failed")

    def __repr__(self) -> str:
        return f"<Request {self.method!r} {self.target!r} HTTP/{self.version[0]}.{self.version[1]}>"

    @property
    def connectionOptions(self) -> frozenset[bytes]:
        """The lowercased tokens of every ``Connection`` field line."""
        if self._options is None:
            self._options = connectionOptions(self.headers)
        return self._options

    @property
    def upgrades(self) -> tuple[bytes, ...]:
        """
        The protocols this request may be switched to (lowercased, the
        client's preference first): what its ``Upgrade`` field offers when
        it is an HTTP/1.1 request with a ``Connection: upgrade`` option and
        no body, else ``()`` (RFC 9110 §7.8; ``h2c`` is never offered).  A
        handler answers one of them with ``Response.switchProtocols``.
        """
        connection = self._connection
        if connection is not None:
            # Worked out once when the head arrived: a request that may
            # switch is the one the pipeline holds, and no other may.
            holding = connection.pipeline.holding
            if holding is not None and holding.request is self:
                offered: tuple[bytes, ...] = holding.offered
                return offered
            return ()
        return offeredUpgrades(
            self.version,
            self.connectionOptions,
            self.headers.getAll(b"upgrade"),
            self.hasBody,
        )

    def sendInformational(
        self,
        code: int,
        headers: Iterable[tuple[bytes, bytes]] = (),
        reason: bytes | None = None,
    ) -> bool:
        """
        Send an interim (1xx) response ahead of the final one, such as
        ``103 Early Hints`` (RFC 8297): only while no byte of this request's
        response is written, and never to an HTTP/1.0 client (RFC 9110
        §15.2).  ``100 Continue`` is connserver's own (sent when the body is
        read) and ``101`` is ``Response.switchProtocols``.  True if it was
        sent.
        """
        if not 102 <= code <= 199:
            raise ValueError(f"not an interim status this way: {code}")
        connection = self._connection
        if connection is None or self.version < (1, 1):
            return False
        front = connection.pipeline.front()
        if front is None or front.request is not self:
            return False
        return bool(front.sendInterim(code, reason, headers))

    def takeOverTransport(self) -> Any:
        """
        The connection's transport, for code that takes the connection over
        itself and writes its own ``101`` (a twisted.web resource such as
        autobahn's ``WebSocketResource`` does, through
        ``request.channel.transport``).  Assigning a protocol to the
        returned transport's ``protocol`` (or ``wrappedProtocol``) attribute
        hands the connection to it: HTTP steps aside, and bytes that
        arrived after the request head reach that protocol after whatever
        the taking code feeds it first.  Only for a request that offers an
        upgrade (``upgrades``); RuntimeError otherwise.
        """
        if self._connection is None or not self.upgrades:
            raise RuntimeError("this request did not ask to switch protocols")
        return transportFor(self._connection, self)

    @property
    def maxBodyBytes(self) -> int | None:
        """The body limit that applies to this request (None: no limit)."""
        return self._maxBodyBytes

    @property
    def hasBody(self) -> bool:
        """True when the request has (or may have) a non-empty body."""
        return self.chunked or bool(self.contentLength)

    @property
    def bodyRequested(self) -> bool:
        """True once the handler asked for the body."""
        return self._consumer is not None

    def deliverBody(self, protocol: IProtocol) -> None:
        """
        Stream the body to ``protocol``: ``makeConnection`` with an
        ``IPushProducer`` (pausing it pauses reading from the socket), then
        ``dataReceived`` for each piece, then ``connectionLost`` with
        ``ResponseDone`` at the end, or another failure if the body could
        not be read whole (the client went away, or a timeout).
        """
        if self._consumer is not None:
            raise RuntimeError("the request body can be delivered only once")
        self._consumer = protocol
        protocol.makeConnection(_BodyProducer(self._source))  # type: ignore[arg-type]
        if self._bodyDone:
            protocol.connectionLost(self._bodyFailure or Failure(ResponseDone()))
            return
        self._source.bodyWanted(self)

    def readBody(self) -> Deferred[bytes]:
        """
        The whole body.  Fails with ``ProtocolError`` (413) when it is larger
        than ``maxBodyBytes``; a handler that lets that failure propagate
        answers 413.
        """
        done: Deferred[bytes] = Deferred()
        limit = self._maxBodyBytes
        if (
            limit is not None
            and self.contentLength is not None
            and self.contentLength > limit
        ):
            # Known too large from the head alone: fail before reading (and
            # before any 100 Continue, RFC 9110 §10.1.1).
            done.errback(ProtocolError("request body larger than maxBodyBytes", 413))
            return done
        self.deliverBody(_Accumulator(limit, done))
        return done

    # Called by the body source (the connection's exchange), not by handlers.

    def receiveBodyData(self, data: bytes) -> None:
        """The body source has more of the body: to the consumer, if any."""
        if self._consumer is not None:
            self._consumer.dataReceived(data)

    def receiveBodyEnd(self, failure: Failure | None = None) -> None:
        """The body ended (``failure``: it will not come whole); once only."""
        if self._bodyDone:
            return
        self._bodyDone = True
        self._bodyFailure = failure
        if self._consumer is not None:
            self._consumer.connectionLost(failure or Failure(ResponseDone()))


class _NoBody:
    """
    The body source of a request without a body (the common GET): shared by
    all of them, so that such a request needs no per-request source.  Its
    pause, resume and stop have nothing to act on.
    """

    def bodyWanted(self, request: Request) -> None:
        request.receiveBodyEnd()

    def pauseBody(self) -> None:
        pass

    def resumeBody(self) -> None:
        pass

    def stopBody(self) -> None:
        pass


class _MemoryBody(_NoBody):
    """The body source of a request built by hand: the bytes are all here."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def bodyWanted(self, request: Request) -> None:
        if self._body:
            request.receiveBodyData(self._body)
        request.receiveBodyEnd()


#: The body source of every bodiless request (see ``Request._fromConnection``).
NO_BODY: _BodySource = _NoBody()


def _toBytes(value: str | bytes) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else value


def _toHeaders(headers: HeadersLike | None) -> Headers:
    if headers is None:
        return Headers()
    if isinstance(headers, Headers):
        return headers
    items: Iterable[tuple[str | bytes, str | bytes]]
    if isinstance(headers, Mapping):
        items = headers.items()
    else:
        items = headers
    return Headers((_toBytes(name), _toBytes(value)) for name, value in items)


class Response:
    """
    What a handler returns: a status code, header fields and a body.

    The body is ``bytes``, an ``IBodyProducer`` (``length`` known or
    ``UNKNOWN_LENGTH``), or a binary file object opened for reading.  The
    server owns framing and persistence: it computes ``Content-Length`` /
    ``Transfer-Encoding``, ``Connection`` and ``Keep-Alive`` itself.  A
    ``Connection: close`` set here is honoured (the connection closes after
    this response, RFC 9112 §9.6); a ``Content-Length`` set here must agree
    with the body, or the response fails.
    """

    __slots__ = ("_fields", "_headers", "body", "code", "note", "reason", "trailers")

    def __init__(
        self,
        code: int = 200,
        headers: HeadersLike | None = None,
        body: ResponseBody = b"",
        *,
        reason: bytes | None = None,
        trailers: Headers | None = None,
        note: str | None = None,
    ) -> None:
        if not 100 <= code <= 599:
            raise ValueError(f"status code must be 100-599, not {code}")
        self.code = code
        # A list or tuple of (bytes, bytes) pairs is kept as given and only
        # turned into Headers if someone asks: the server writes the pairs
        # straight to the wire, and handlers often reuse one constant list.
        if headers is None or isinstance(headers, Headers):
            self._headers: Headers | None = headers
            self._fields: Any = None
        elif isinstance(headers, list | tuple):
            self._headers = None
            self._fields = headers
        else:
            self._headers = _toHeaders(headers)
            self._fields = None
        self.body = body
        self.reason = reason
        self.trailers = trailers
        #: A word for the access log on how this answer came about (the
        #: proxy's ``upstream-timeout``), or None.
        self.note = note

    @classmethod
    def _relayed(
        cls,
        code: int,
        fields: list[tuple[bytes, bytes]],
        body: ResponseBody,
        reason: bytes | None,
    ) -> Response:
        """
        A response whose status and fields were already checked (the
        reverse proxy's, from its upstream's strict parser): the slots set
        directly, as ``Request._fromConnection`` does, once per request.
        """
        self: Response = object.__new__(cls)
        self.code = code
        self._headers = None
        self._fields = fields
        self.body = body
        self.reason = reason
        self.trailers = None
        self.note = None
        return self

    @classmethod
    def switchProtocols(
        cls,
        upgrade: bytes,
        protocol: IProtocol,
        headers: HeadersLike | None = None,
        *,
        handshake: bytes | None = None,
    ) -> Response:
        """
        Accept the request's upgrade to ``upgrade`` (one of
        ``Request.upgrades``) and hand the connection to ``protocol``.

        connserver writes ``101 Switching Protocols`` with ``Upgrade:
        upgrade``, ``Connection: upgrade`` and ``headers`` (a WebSocket
        handshake's ``Sec-WebSocket-Accept``, say), then calls
        ``protocol.makeConnection`` with the transport and delivers any
        bytes that arrived after the request head as its first
        ``dataReceived``.  With ``handshake``, connserver writes no 101: the
        protocol receives ``handshake`` first (the request head, for a
        library that answers its own handshake) and answers itself.  A 101
        for a protocol the request did not offer is a 500, never sent.
        """
        return cls(101, headers, SwitchProtocols(upgrade, protocol, handshake))

    @property
    def headers(self) -> Headers:
        """The response's header fields (created on first use)."""
        if self._headers is None:
            self._headers = _toHeaders(self._fields or ())
            self._fields = None
        return self._headers

    @headers.setter
    def headers(self, value: HeadersLike) -> None:
        self._headers = _toHeaders(value)
        self._fields = None

    def fieldPairs(self) -> Iterable[tuple[bytes | str, bytes | str]]:
        """The header fields as (name, value) pairs, as given, for the wire."""
        if self._fields is not None:
            pairs: Iterable[tuple[bytes | str, bytes | str]] = self._fields
            return pairs
        if self._headers is None:
            return ()
        return self._headers

    def __repr__(self) -> str:
        return f"<Response {self.code}>"

    def bodyLength(self) -> int | None:
        """The body's length when it is known without reading it, else None."""
        body = self.body
        if isinstance(body, bytes):
            return len(body)
        if IBodyProducer.providedBy(body):
            length = body.length
            return None if length is UNKNOWN_LENGTH else int(length)
        if isinstance(body, SwitchProtocols):
            return 0
        if isinstance(body, io.IOBase) or hasattr(body, "read"):
            try:
                fileBody: BinaryIO = body
                position = fileBody.tell()
                end = fileBody.seek(0, io.SEEK_END)
                fileBody.seek(position)
                return end - position
            except (OSError, ValueError):
                return None
        raise TypeError(f"unsupported response body: {type(body).__name__}")


#: The handler type: called once per request.
Handler = Callable[[Request], Response | Deferred[Response] | Awaitable[Response]]


_log = Logger(namespace="connserver")

# ``ResponseDeferred``: the Deferred of a handler inside connserver that
# answers later (the reverse proxy), which the connection's exchange can
# consume without Twisted's callback chain.
#
# Every asynchronous answer through a plain ``Deferred`` builds a chain
# (``addCallbacks``) and runs it (``callback``: ``_startRunCallbacks``,
# ``_runCallbacks``) for one consumer, the exchange: about 17,000 CPU
# instructions per proxied request, more than any other single step of the
# proxy's own.  A ``ResponseDeferred`` that nothing was chained to when the
# handler returned it takes the exchange as its direct consumer
# (``consumeDirectly``): ``callback`` and ``errback`` hand the outcome to it
# and leave the Deferred fired with ``None``, as the chain would have (the
# exchange's callbacks return ``None``).  To anyone else, and whenever
# something was chained to it first, it is an ordinary ``Deferred``.


class DirectConsumer(Protocol):
    """What consumes a ``ResponseDeferred`` directly (``Exchange``)."""

    def handlerAnswered(self, response: object) -> None:
        """The handler's answer."""

    def handlerFailedAsync(self, failure: Failure) -> None:
        """The handler failed (or was cancelled)."""


class ResponseDeferred(Deferred[Any]):
    """
    A ``Deferred`` that one consumer may take its outcome from directly.

    Once ``consumeDirectly`` accepted a consumer, the first ``callback`` or
    ``errback`` goes to it, then the Deferred is fired with ``None``;
    callbacks added after that see ``None``, as they would have after the
    consumer's own callbacks in the chain.  ``cancel`` works as for any
    Deferred (its ``CancelledError`` reaches the consumer).
    """

    _consumer: DirectConsumer | None = None
    #: Something was chained to it (then it stays an ordinary Deferred).
    _chained = False

    # Each public way to add to the chain marks it chained: a consumer
    # registered after that would come first, out of turn.
    def addCallbacks(self, *args: Any, **kwargs: Any) -> Any:
        self._chained = True
        return super().addCallbacks(*args, **kwargs)

    def addCallback(self, *args: Any, **kwargs: Any) -> Any:
        self._chained = True
        return super().addCallback(*args, **kwargs)

    def addErrback(self, *args: Any, **kwargs: Any) -> Any:
        self._chained = True
        return super().addErrback(*args, **kwargs)

    def addBoth(self, *args: Any, **kwargs: Any) -> Any:
        self._chained = True
        return super().addBoth(*args, **kwargs)

    def consumeDirectly(self, consumer: DirectConsumer) -> bool:
        """
        Make ``consumer`` the first to learn the outcome, without a chain;
        False (nothing changes) when something is chained already, it has
        fired, or it has a consumer: then chain as usual.
        """
        if self._chained or self.called or self._consumer is not None:
            return False
        self._consumer = consumer
        return True

    def callback(self, result: Any) -> None:
        consumer = self._consumer
        if consumer is None or self.called:
            super().callback(result)  # (AlreadyCalledError when fired)
            return
        if isinstance(result, Failure):
            self.errback(result)
            return
        self._consumer = None
        try:
            consumer.handlerAnswered(result)
        except Exception:
            # Where the chain would have kept it as an unhandled error.
            _log.failure("the consumer of a handler's answer failed")
        self._fired()

    def errback(self, fail: Failure | BaseException | None = None) -> None:
        consumer = self._consumer
        if consumer is None or self.called:
            super().errback(fail)
            return
        failure = fail if isinstance(fail, Failure) else Failure(fail)
        self._consumer = None
        try:
            consumer.handlerFailedAsync(failure)
        except Exception:
            _log.failure("the consumer of a handler's failure failed")
        self._fired()

    def _fired(self) -> None:
        """Fired with ``None``, the consumer's result, as the chain leaves it."""
        if self._chained:
            # Chained after the consumer: those callbacks run now, on None.
            super().callback(None)
        else:
            # What twisted.internet.defer.succeed does for a fired Deferred
            # (called and result are Deferred's documented attributes).
            self.result = None
            self.called = True
