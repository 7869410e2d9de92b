"""
Run twisted.web resources, and Klein apps, as connserver handlers.

:class:`WebResourceHandler` renders each request with a stock
``twisted.web.server.Request`` attached to a small stand-in for
``HTTPChannel`` (:class:`_Exchange`).  The resource sees the twisted.web it
knows (``NOT_DONE_YET``, ``notifyFinish``, ``registerProducer``, sessions,
``request.content``), while connserver keeps the connection: framing,
persistence (``PersistencePolicy``), timers and drain.  The response status
and header fields are captured at the first write; a body that is complete
by then becomes ``bytes``, anything still streaming becomes an
``IBodyProducer`` that passes backpressure on to the producer the resource
registered.  See ``docs/web.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import TYPE_CHECKING, Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IDelayedCall,
    IPullProducer,
    IPushProducer,
    IReactorTime,
)
from twisted.python.failure import Failure
from twisted.web import http_headers, server
from twisted.web.http import NO_BODY_CODES, RESPONSES
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from twisted.web.resource import IResource
from zope.interface import implementer

from ._headers import Headers, splitList
from ._message import Handler, Request, Response

if TYPE_CHECKING:
    from twisted.web.server import Session, Site

__all__ = ["WebResourceHandler", "asHandler"]

#: Response fields the resource may set but connserver owns: framing (RFC 9112
#: §6.1, §6.2) and connection management (RFC 9110 §7.6.1, RFC 9112 §9.3).
#: ``Connection: close`` is the exception, put back by :meth:`_Exchange.writeHeaders`.
_DROPPED_FIELDS = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"trailer",
        b"upgrade",
        # The protocol stamps its own Date on every response (RFC 9110 §6.6.1);
        # twisted.web's Request.process sets one that would be a duplicate.
        b"date",
    }
)
#: The Server value twisted.web's ``Request.process`` sets on every response;
#: dropped so that connserver's own Server field is the only one.
_TWISTED_SERVER = [server.version]
#: Every field :meth:`_Exchange.writeHeaders` looks at more closely.
_SPECIAL_FIELDS = _DROPPED_FIELDS | {b"content-length", b"server"}

#: Bytes of response body buffered before the protocol attaches a consumer:
#: enough that a small file becomes a ``bytes`` body with a known length,
#: small enough that a large one waits for the connection's backpressure.
_PREFETCH = 64 * 1024
#: ``resumeProducing`` calls on a pull producer per reactor turn, so that a
#: producer of many small chunks cannot starve other connections.
_PULL_BATCH = 16

_VERSIONS = {(1, 0): b"HTTP/1.0", (1, 1): b"HTTP/1.1"}
_UNKNOWN_ADDRESS = IPv4Address("TCP", "0.0.0.0", 0)


def _clientGone() -> Failure:
    """The reason a resource's request sees when the client went away."""
    return Failure(ConnectionLost("the client went away"))


def _versionBytes(version: tuple[int, int]) -> bytes:
    known = _VERSIONS.get(version)
    if known is not None:
        return known
    return b"HTTP/%d.%d" % version


class WebResourceHandler:
    """
    A connserver handler that renders a twisted.web ``IResource`` tree.

    One ``Site`` is built here and shared by every request, so that sessions
    persist between requests and nothing site-wide is rebuilt per request;
    ``site`` is public for its settings (``displayTracebacks``, sessions).
    The request body is read whole first (bounded by ``maxBodyBytes``: a
    larger one fails with ``ProtocolError`` 413) and given to the resource
    as ``request.content``, as twisted.web does.
    """

    def __init__(
        self,
        resource: IResource,
        *,
        reactor: IReactorTime | None = None,
        sessionFactory: Callable[[Site, bytes], Session] | None = None,
    ) -> None:
        if not IResource.providedBy(resource):
            raise TypeError(f"{resource!r} does not provide IResource")
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        assert reactor is not None
        self.resource = resource
        self.reactor = reactor
        site = server.Site(resource, reactor=reactor)  # type: ignore[no-untyped-call]
        if sessionFactory is not None:
            site.sessionFactory = sessionFactory  # type: ignore[assignment]
        self.site = site

    def __repr__(self) -> str:
        return f"<WebResourceHandler {self.resource!r}>"

    def __call__(self, request: Request) -> Deferred[Response]:
        """Render ``request``; the Deferred fires once the status is known."""
        if request.hasBody:
            reading = request.readBody()
            return reading.addCallback(self._render, request)
        return self._render(b"", request)

    def _render(self, body: bytes, request: Request) -> Deferred[Response]:
        return _Exchange(self.site, self.reactor, request).render(body)


class _Exchange:
    """
    One request as a resource renders it: what ``twisted.web.http.Request``
    needs of its ``HTTPChannel`` (and of the channel's transport), and the
    source of the connserver ``Response``.

    twisted.web's Request writes the status line and fields through
    :meth:`writeHeaders`, body bytes through :meth:`write`, and reports its
    end through :meth:`requestDone`.  This object turns those calls into one
    ``Response``; if the body is still being written when the status is
    known, the response body is a :class:`_StreamedBody` reading from here.
    """

    # Most state starts at a class-level default, so that building one per
    # request sets only what differs (this object is on every request's path).
    _web: server.Request | None = None
    _rendering = False
    _pulling = False
    _code = 200
    _reason: bytes | None = None
    _headers: Headers | None = None
    _length: int | None = None
    _closeAfter = False
    _emitted = False
    _finished = False
    _stopped = False
    _buffered = 0
    # A pull producer was asked for data and has not written yet: it is not
    # asked again until it does (IPullProducer.resumeProducing).
    _owed = False
    _consumer: IConsumer | None = None
    _consumerPaused = False
    _done: Deferred[None] | None = None
    _producer: IPushProducer | IPullProducer | None = None
    _streaming = False
    _producerPaused = False
    _tick: IDelayedCall | None = None

    def __init__(self, site: Site, reactor: IReactorTime, request: Request) -> None:
        self.site = site
        # Resources reach the connection as request.transport (getPeer,
        # loseConnection); this object answers for it too.
        self.transport = self
        self._reactor = reactor
        self._request = request
        self._result: Deferred[Response] = Deferred(self._cancel)
        self._buffer: list[bytes] = []

    def render(self, body: bytes) -> Deferred[Response]:
        """Hand the request to the resource tree; fires with the Response."""
        request = self._request
        web = server.Request(self)  # type: ignore[no-untyped-call]
        self._web = web
        content = BytesIO()
        # Left at its end, as HTTPChannel leaves it: requestReceived takes
        # tell() as the body length (and parses form bodies only if non-zero).
        content.write(body)
        web.content = content
        rawHeaders = web.requestHeaders
        for name, value in request.headers:
            rawHeaders.addRawHeader(name, value)
        web.parseCookies()  # type: ignore[no-untyped-call]
        self._rendering = True
        try:
            web.requestReceived(  # type: ignore[no-untyped-call]
                request.method, request.target, _versionBytes(request.version)
            )
        finally:
            self._rendering = False
        self._settle()
        return self._result

    # What twisted.web.http.Request calls on its channel.

    def getPeer(self) -> IAddress:
        """The client's address (a placeholder for a hand-made request)."""
        return self._request.peer or _UNKNOWN_ADDRESS

    def getHost(self) -> IAddress:
        """The server's address (a placeholder for a hand-made request)."""
        return self._request.host or _UNKNOWN_ADDRESS

    def isSecure(self) -> bool:
        """Whether the connection uses TLS."""
        return self._request.isSecure

    def writeHeaders(
        self,
        version: bytes,
        code: bytes,
        reason: bytes,
        headers: http_headers.Headers,
    ) -> None:
        """
        Capture the status and fields at the resource's first write.

        Framing and connection fields are dropped because connserver decides
        them (RFC 9112 §6.1: a server MUST NOT apply chunked twice; the
        Connection options are per hop, RFC 9110 §7.6.1), except that a
        ``close`` option is kept so that the connection closes after this
        response, as the resource asked (RFC 9112 §9.6).
        """
        web = self._web
        assert web is not None
        # twisted.web chose chunked for a 1.1 response of unknown length;
        # connserver frames the body, so the bytes must arrive unframed.
        web.chunked = 0
        status = int(code)
        self._code = status
        # The standard phrase goes as None, so the protocol uses its
        # prebuilt status line.
        self._reason = None if reason == RESPONSES.get(status) else reason
        kept: list[tuple[bytes, bytes, bytes]] = []
        close = self._closeAfter
        length: int | None = None
        for name, values in headers.getAllRawHeaders():
            lowered = name.lower()
            if lowered in _SPECIAL_FIELDS:
                if lowered == b"content-length":
                    # RFC 9110 §8.6: Content-Length = 1*DIGIT; anything else
                    # (or several values) leaves the length unknown.
                    if len(values) == 1 and values[0].isdigit():
                        length = int(values[0])
                        kept.append((lowered, name, values[0]))
                    continue
                if lowered == b"server":
                    if values != _TWISTED_SERVER:
                        kept.extend((lowered, name, value) for value in values)
                    continue
                if lowered == b"connection" and not close:
                    close = any(
                        option.lower() == b"close" for option in splitList(values)
                    )
                continue
            for value in values:
                kept.append((lowered, name, value))
        if close:
            kept.append((b"connection", b"Connection", b"close"))
        out = Headers._fromLowered(kept)
        self._headers = out
        self._length = length
        if not self._rendering and not self._pulling:
            # Written from a callback: wait one reactor turn, so that a
            # write() followed by finish() in the same callback still gives a
            # bytes body of known length (HTTP/1.0 keep-alive needs it).
            self._kick()

    def write(self, data: bytes) -> None:
        """Body bytes from the resource (dropped once the client is gone)."""
        if self._stopped or not data:
            return
        self._owed = False
        consumer = self._consumer
        if consumer is not None:
            consumer.write(data)
            if self._producer is not None and not self._streaming:
                # A pull producer that wrote from a callback: it wants to be
                # asked again.
                self._kickPull()
            return
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered >= _PREFETCH:
            self._updatePause()

    def writeSequence(self, data: list[bytes]) -> None:
        """Several pieces of body, for code that writes to the transport."""
        self.write(b"".join(data))

    def registerProducer(
        self, producer: IPushProducer | IPullProducer, streaming: bool
    ) -> None:
        """The resource streams its body (``static.File`` does)."""
        if self._producer is not None:
            raise RuntimeError(
                f"Cannot register producer {producer!r}, because producer "
                f"{self._producer!r} was never unregistered."
            )
        self._owed = False
        self._producer = producer
        self._streaming = bool(streaming)
        self._producerPaused = False
        if self._stopped:
            producer.stopProducing()
        elif self._streaming:
            self._updatePause()
        else:
            self._kickPull()

    def unregisterProducer(self) -> None:
        """The resource's producer is done."""
        self._owed = False
        self._producer = None
        self._streaming = False
        self._producerPaused = False

    def requestDone(self, web: server.Request) -> None:
        """twisted.web's ``Request.finish``: the body is complete."""
        self._owed = False
        self._finished = True
        if self._stopped:
            return
        if not self._emitted:
            if not self._rendering and not self._pulling:
                self._emit()
            return
        self._cancelTick()
        done = self._done
        if done is not None:
            self._done = None
            done.callback(None)

    def loseConnection(self) -> None:
        """
        The resource wants the connection closed: the response says
        ``Connection: close`` (if its fields are not yet sent), and
        connserver closes after it.
        """
        self._closeAfter = True
        headers = self._headers
        if headers is not None and not self._emitted:
            if b"close" not in {v.lower() for v in headers.getList(b"connection")}:
                headers.add(b"Connection", b"close")

    abortConnection = loseConnection

    def pauseProducing(self) -> None:
        """Reading is connserver's; the body was read before rendering."""

    def resumeProducing(self) -> None:
        """Reading is connserver's; the body was read before rendering."""

    def stopProducing(self) -> None:
        """Reading is connserver's; the body was read before rendering."""

    def _respondToBadRequestAndDisconnect(self) -> None:
        # Called by requestReceived for a malformed multipart body.
        if not self._emitted and not self._result.called:
            self._emitted = True
            self._result.callback(
                Response(400, [(b"Connection", b"close")], b"Bad Request")
            )

    # Producing the Response.

    def _settle(self) -> None:
        """
        At a quiet point (the render call returned, or a reactor turn after
        the resource wrote from a callback): emit the response if the status
        is known, after taking what a pull producer gives at once.
        """
        self._tick = None
        if self._stopped:
            return
        self._pull()
        if not self._emitted and (self._finished or self._headers is not None):
            self._emit()

    def _emit(self) -> None:
        if self._emitted or self._result.called:
            return
        self._emitted = True
        self._cancelTick()
        headers = self._headers if self._headers is not None else Headers()
        body: bytes | _StreamedBody
        if self._request.method == b"HEAD" or self._code in NO_BODY_CODES:
            # No body will be sent (RFC 9110 §9.3.2, §15.3.5, §15.4.5), but
            # the length a GET or a 200 would have had may be: a producer
            # that is never started carries the resource's Content-Length
            # (or an unknown length, as the GET would have had).
            body = _StreamedBody(self, self._length)
        elif self._finished:
            body = b"".join(self._buffer)
            self._buffer = []
            self._buffered = 0
        else:
            body = _StreamedBody(self, self._length)
        try:
            response = Response(self._code, headers, body, reason=self._reason)
        except ValueError as e:
            self._result.errback(e)
            return
        self._result.callback(response)

    def _wantsData(self) -> bool:
        if self._stopped or self._finished:
            return False
        if self._consumer is None:
            return self._buffered < _PREFETCH
        return not self._consumerPaused

    def _updatePause(self) -> None:
        """Tell a push producer to pause or resume to match demand."""
        producer = self._producer
        if producer is None or not self._streaming or self._stopped:
            return
        pause = not self._wantsData()
        if pause != self._producerPaused:
            assert IPushProducer.providedBy(producer)
            self._producerPaused = pause
            if pause:
                producer.pauseProducing()
            else:
                producer.resumeProducing()

    def _pull(self) -> None:
        """Ask a pull producer for data while there is demand for it."""
        if self._pulling:
            return
        self._pulling = True
        try:
            for _ in range(_PULL_BATCH):
                producer = self._producer
                if (
                    producer is None
                    or self._streaming
                    or self._owed
                    or not self._wantsData()
                ):
                    return
                self._owed = True
                producer.resumeProducing()
                if self._owed:
                    # It will write later; that write asks for the next turn.
                    return
            self._kickPull()
        finally:
            self._pulling = False

    def _kickPull(self) -> None:
        if not self._pulling and not self._rendering:
            self._kick()

    def _kick(self) -> None:
        if self._tick is None and not self._stopped:
            self._tick = self._reactor.callLater(0, self._settle)

    def _cancelTick(self) -> None:
        tick = self._tick
        if tick is not None:
            self._tick = None
            if tick.active():
                tick.cancel()

    def _startProducing(self, consumer: IConsumer) -> Deferred[None]:
        if self._stopped:
            # The client left before the body was wanted: never fires
            # (IBodyProducer.stopProducing).
            return Deferred()
        self._consumer = consumer
        buffered = self._buffer
        self._buffer = []
        self._buffered = 0
        for chunk in buffered:
            consumer.write(chunk)
        if self._finished:
            return succeed(None)
        done = self._done = Deferred()
        self._updatePause()
        self._pull()
        return done

    def _pauseProducing(self) -> None:
        self._consumerPaused = True
        self._updatePause()

    def _resumeProducing(self) -> None:
        self._consumerPaused = False
        self._updatePause()
        self._pull()

    def _cancel(self, result: Deferred[Response]) -> None:
        # The connection was lost while the resource was still rendering.
        self._abandon(_clientGone())

    def _abandon(self, reason: Failure) -> None:
        """
        The client is gone: stop the resource's producer and tell its request,
        as ``HTTPChannel.connectionLost`` does, so that ``notifyFinish``
        fails and later writes are dropped.
        """
        if self._stopped:
            return
        self._stopped = True
        self._cancelTick()
        self._buffer = []
        self._buffered = 0
        self._done = None
        producer = self._producer
        if producer is not None:
            producer.stopProducing()
        web = self._web
        if web is not None and not self._finished:
            web.connectionLost(reason)  # type: ignore[no-untyped-call]


@implementer(IBodyProducer)
class _StreamedBody:
    """
    The body of a response the resource is still writing: ``length`` is the
    resource's Content-Length or ``UNKNOWN_LENGTH``; pausing pauses the
    producer the resource registered; stopping (the client went away) makes
    the resource's ``notifyFinish`` fail.
    """

    __slots__ = ("_exchange", "length")

    def __init__(self, exchange: _Exchange, length: int | None) -> None:
        self._exchange = exchange
        self.length: Any = UNKNOWN_LENGTH if length is None else length

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        return self._exchange._startProducing(consumer)

    def pauseProducing(self) -> None:
        self._exchange._pauseProducing()

    def resumeProducing(self) -> None:
        self._exchange._resumeProducing()

    def stopProducing(self) -> None:
        self._exchange._abandon(_clientGone())


def asHandler(obj: object) -> Handler:
    """
    A connserver handler for ``obj``: an ``IResource`` (or a ``Site``, for
    its resource and session factory) is wrapped in
    :class:`WebResourceHandler`; a Klein app (anything with a ``resource()``
    method) is served through ``app.resource()``; another callable is
    assumed to be a handler already.
    """
    if IResource.providedBy(obj):
        return WebResourceHandler(obj)
    if isinstance(obj, server.Site):
        return WebResourceHandler(
            obj.resource, reactor=obj.reactor, sessionFactory=obj.sessionFactory
        )
    makeResource = getattr(obj, "resource", None)
    if callable(makeResource):
        resource = makeResource()
        if not IResource.providedBy(resource):
            raise TypeError(
                f"{obj!r}.resource() returned {resource!r}, which does not "
                "provide twisted.web.resource.IResource"
            )
        return WebResourceHandler(resource)
    if callable(obj):
        return obj
    raise TypeError(
        f"cannot serve {obj!r}: expected a handler callable "
        "(request -> Response), a twisted.web IResource, a Site, or a Klein "
        "app (an object with a resource() method)"
    )
