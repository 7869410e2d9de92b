"""
Run twisted.web resources, and Klein apps, as connserver handlers.

:class:`WebResourceHandler` renders each request with a
``twisted.web.server.Request`` (:class:`_WebRequest`, a lighter subclass
for a request connserver has already parsed) attached to a small stand-in
for ``HTTPChannel`` (:class:`_Exchange`).  The resource sees the twisted.web
it knows (``NOT_DONE_YET``, ``notifyFinish``, ``registerProducer``,
sessions, ``request.content``), while connserver keeps the connection:
framing, persistence (``PersistencePolicy``), timers and drain.  A render
that returns bytes becomes a ``Response`` with a bytes body at once, with no
``Deferred``; otherwise the status and header fields are captured at the
first write, a body that is complete by then becomes ``bytes``, and anything
still streaming becomes an ``IBodyProducer`` that passes backpressure on to
the producer the resource registered.  See ``docs/web.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes as unquote

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IDelayedCall,
    IPullProducer,
    IPushProducer,
    IReactorTime,
)
from twisted.python.failure import Failure
from twisted.web import http, http_headers, resource, server
from twisted.web.error import UnsupportedMethod
from twisted.web.http import NO_BODY_CODES, RESPONSES, parse_qs
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from twisted.web.resource import IResource
from zope.interface import implementer

from connserver._connection.message import Handler, Request, Response
from connserver._http.headers import splitList
from connserver._twisted.privates import (
    encodeHeaderName,
    encoderFor,
    rawHeaders,
    sanitizeFieldValue,
)
from connserver._twisted.reactor import defaultReactor

if TYPE_CHECKING:
    from twisted.web.server import Session, Site

__all__ = ["WebResourceHandler", "asHandler"]

#: Response fields the resource may set but connserver owns: framing (RFC 9112
#: §6.1, §6.2) and connection management (RFC 9110 §7.6.1, RFC 9112 §9.3).
#: ``Connection: close`` is the exception, put back by :meth:`_Exchange._capture`.
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
#: Every field :meth:`_Exchange._capture` looks at more closely.
_SPECIAL_FIELDS = _DROPPED_FIELDS | {b"content-length", b"server"}
_CLOSE = (b"Connection", b"close")
#: Field name as twisted.web stores it -> its lowercased form if it is one of
#: _SPECIAL_FIELDS, else b"" (bounded, as names come from resources).
_FIELD_KINDS: dict[bytes, bytes] = {}
_FIELD_KINDS_MAX = 1000
#: The shared, always empty, starting value of ``_Exchange._buffer``.
_NO_BUFFER: list[bytes] = []

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


def _closedByResource() -> Failure:
    """
    The reason for ``request.transport.loseConnection()``: ``ConnectionDone``,
    what the request sees under ``Site`` once the transport has closed.
    """
    return Failure(ConnectionDone("the resource closed the connection"))


def _abortedByResource() -> Failure:
    """
    The reason for ``request.transport.abortConnection()``:
    ``ConnectionAborted``, what Twisted's TCP transport reports for it.
    """
    return Failure(ConnectionAborted("the resource aborted the connection"))


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

    A call returns the ``Response`` itself when the resource answered before
    control returned (a ``render_*`` returning bytes, the common case), so
    that the protocol writes it at once; otherwise a ``Deferred`` that fires
    with it once the status is known.
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
            reactor = defaultReactor()
        assert reactor is not None
        self.resource = resource
        self.reactor = reactor
        site = server.Site(resource, reactor=reactor)  # type: ignore[no-untyped-call]
        if sessionFactory is not None:
            site.sessionFactory = sessionFactory  # type: ignore[assignment]
        self.site = site

    def __repr__(self) -> str:
        return f"<WebResourceHandler {self.resource!r}>"

    def __call__(self, request: Request) -> Response | Deferred[Response]:
        """
        Render ``request``: the ``Response`` if it is complete at once, else
        a ``Deferred`` that fires once the status is known.
        """
        if request.hasBody:
            reading = request.readBody()
            return reading.addCallback(self._render, request)
        return _Exchange(self.site, self.reactor, request).render(b"")

    def _render(self, body: bytes, request: Request) -> Response | Deferred[Response]:
        return _Exchange(self.site, self.reactor, request).render(body)


class _OnFirstUse:
    """
    An attribute computed the first time it is read and then stored on the
    instance like any other (a non-data descriptor, so assigning works).
    """

    __slots__ = ("_make", "_name")

    def __init__(self, make: Callable[[Any], Any]) -> None:
        self._make = make
        self._name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        value = self._make(instance)
        instance.__dict__[self._name] = value
        return value


_encodeName = encodeHeaderName


def _sanitized(value: bytes) -> bytes:
    """A field value as twisted.web stores it: CR and LF become spaces."""
    if b"\n" in value or b"\r" in value:
        return sanitizeFieldValue(value)
    return value


def _requestHeaders(web: _WebRequest) -> http_headers.Headers:
    """twisted.web's ``requestHeaders``, built only if a resource asks."""
    headers = http_headers.Headers()
    raw = rawHeaders(headers)
    for _, name, value in web._requestFields._fields:
        if raw is None:
            headers.addRawHeader(name, value)
        else:
            raw.setdefault(_encodeName(name), []).append(_sanitized(value))
    return headers


def _receivedCookies(web: _WebRequest) -> dict[bytes, bytes]:
    """twisted.web's ``received_cookies``, parsed only if a resource asks."""
    cookies: dict[bytes, bytes] = {}
    for lowered, _, value in web._requestFields._fields:
        if lowered != b"cookie" or not value:
            continue
        for cookie in _sanitized(value).split(b";"):
            name, sep, rest = cookie.lstrip().partition(b"=")
            if sep:
                cookies[name] = rest
    return cookies


class _Replay:
    """
    A resource whose first ``render`` gives back what the real resource's
    first ``render`` gave (its result or its exception), so that
    ``server.Request.render`` can take over after the fact; later renders
    (the ``GET`` behind a faked ``HEAD``) go to the real resource.
    """

    def __init__(self, resource: IResource, outcome: object) -> None:
        self._resource = resource
        self._outcome = outcome
        self._used = False

    def render(self, request: server.Request) -> object:
        if self._used:
            return self._resource.render(request)  # type: ignore[no-untyped-call]
        self._used = True
        if isinstance(self._outcome, BaseException):
            raise self._outcome
        return self._outcome

    def __repr__(self) -> str:
        return repr(self._resource)


class _WebRequest(server.Request):
    """
    A ``twisted.web.server.Request`` for a request connserver has already
    parsed and validated.

    It is built without the channel machinery (the ``_Exchange`` is its
    channel and transport); ``requestHeaders`` and ``received_cookies`` are
    filled from connserver's fields only when a resource reads them;
    ``process`` does not set the ``Date`` and ``Server`` fields (connserver
    sends its own); and a ``render`` that returns bytes (the common case)
    finishes in one step, handing the status, fields and body straight to
    the exchange, with the same result as ``setHeader(Content-Length)``,
    ``write`` and ``finish``.  Everything else takes twisted.web's own path.
    """

    queued = False
    requestHeaders = _OnFirstUse(_requestHeaders)
    received_cookies = _OnFirstUse(_receivedCookies)
    # An empty body's BytesIO, made only if a resource reads it; the same
    # for the lists and the dict below, which most requests never touch.
    content = _OnFirstUse(lambda web: BytesIO())
    notifications = _OnFirstUse(lambda web: [])
    cookies = _OnFirstUse(lambda web: [])
    _adapterCache = _OnFirstUse(lambda web: {})

    def __init__(  # a lighter http.Request.__init__: super() is not called
        self, exchange: _Exchange, site: Site, request: Request
    ) -> None:
        # What http.Request.__init__ and Componentized.__init__ set, from
        # what connserver already knows.
        self.channel = exchange  # type: ignore[assignment]
        self.transport = exchange  # type: ignore[assignment]
        self.site = site
        # getClientAddress() and getClientIP(): behind a trusted proxy, the
        # client it names.
        self.client = request.clientAddress or _UNKNOWN_ADDRESS
        self.host = request.host or _UNKNOWN_ADDRESS
        self.responseHeaders = http_headers.Headers()
        self._parsePOSTFormSubmission = site._parsePOSTFormSubmission
        self._requestFields = request.headers
        # What requestReceived sets (it is called only for a request with a
        # body, to parse a form; without one, process() follows at once).
        self.method = request.method
        self.uri = request.target
        version = request.version
        self.clientproto = _VERSIONS.get(version) or _versionBytes(version)
        self.path = request.path
        query = request.query
        self.args = parse_qs(query, 1) if query else {}  # type: ignore[no-untyped-call]

    def getHeader(self, key: Any) -> Any:
        """The last value of a request field (as ``http.Request.getHeader``)."""
        if "requestHeaders" in self.__dict__:
            return server.Request.getHeader(self, key)
        name = key.encode("iso-8859-1") if isinstance(key, str) else key
        lowered = name.lower()
        found: bytes | None = None
        for low, _, value in self._requestFields._fields:
            if low == lowered:
                found = value
        if found is None:
            return None
        found = _sanitized(found)
        return found.decode("utf8") if isinstance(key, str) else found

    def getStateToCopyFor(self, issuer: object) -> Any:
        self.requestHeaders  # noqa: B018 -- built before __dict__ is copied
        self.received_cookies  # noqa: B018
        return server.Request.getStateToCopyFor(self, issuer)  # type: ignore[no-untyped-call]

    def setHeader(self, name: Any, value: Any) -> None:
        """``setRawHeaders(name, [value])``, with less work for bytes."""
        raw = rawHeaders(self.responseHeaders)
        if type(value) is bytes and raw is not None:
            if b"\n" in value or b"\r" in value:
                value = sanitizeFieldValue(value)
            raw[_encodeName(name)] = [value]
        else:
            headers = self.responseHeaders
            headers.setRawHeaders(name, [value])

    def process(self) -> None:
        """``server.Request.process``, without the Date and Server fields."""
        path = self.path
        self.prepath = []
        if b"%" in path:
            self.postpath = list(map(unquote, path[1:].split(b"/")))
        else:
            # unquote() gives back a segment without "%" as it is.
            self.postpath = path[1:].split(b"/")
        if path == b"*":
            self._handleStar()  # type: ignore[no-untyped-call]
            return
        try:
            site = self.site
            assert site is not None
            if type(site) is server.Site:
                # Site.getResourceFor, inline.
                self.sitepath: list[bytes] = []
                resrc = resource.getChildForRequest(site.resource, self)  # type: ignore[no-untyped-call]
            else:
                resrc = site.getResourceFor(self)  # type: ignore[no-untyped-call]
            encoder = encoderFor(resrc, self)
            if encoder is not None:
                self._encoder = encoder
            self.render(resrc)
        except BaseException:
            self.processingFailed(Failure())  # type: ignore[no-untyped-call]

    def render(self, resrc: IResource) -> None:
        """
        ``server.Request.render``: bytes from a GET (or POST, ...) finish at
        once; anything else (HEAD, an unsupported method, a non-bytes result,
        a response already begun) is handed to twisted.web's own ``render``.
        """
        try:
            body = resrc.render(self)  # type: ignore[no-untyped-call]
        except UnsupportedMethod as e:
            server.Request.render(self, _Replay(resrc, e))  # type: ignore[no-untyped-call]
            return
        if body is server.NOT_DONE_YET:
            return
        if (
            type(body) is bytes
            # Not begun (finish() begins it too), not a HEAD, 204 or 304.
            and not self.startedWriting
            and not self._disconnected
            and self.producer is None
            and self._encoder is None
            and self.method != b"HEAD"
            and self.code not in NO_BODY_CODES
        ):
            self._finishWith(body)
            return
        server.Request.render(self, _Replay(resrc, body))  # type: ignore[no-untyped-call]

    def _finishWith(self, body: bytes) -> None:
        """
        ``setHeader(b"Content-Length", ...)``, ``write(body)``, ``finish()``
        in one step, as twisted.web would do them (default Content-Type,
        Last-Modified, ETag, Set-Cookie), then handed to the exchange.
        """
        headers = self.responseHeaders
        size = len(body)
        length = [b"%d" % size]
        defaultType = self.defaultContentType if size else None
        raw = rawHeaders(headers)
        if raw is not None:
            raw[b"Content-Length"] = length
            if defaultType is not None and not raw.get(b"Content-Type"):
                raw[b"Content-Type"] = [defaultType]
        else:
            headers.setRawHeaders(b"Content-Length", length)
            if defaultType is not None and not headers.getRawHeaders(b"Content-Type"):
                headers.setRawHeaders(b"Content-Type", [defaultType])
        state = self.__dict__
        if (
            self.lastModified is not None
            or self.etag is not None
            or state.get("cookies")
        ):
            self._lateFields(headers)
        self.startedWriting = 1
        self.sentLength = size
        self.finished = 1
        exchange: _Exchange = self.channel  # type: ignore[assignment]
        del self.channel
        exchange._complete(self.code, self.code_message, headers, body)
        self._release()

    def _cleanup(self) -> None:
        """``http.Request._cleanup``, called by ``finish``."""
        if self.producer:
            self._log.failure(
                "",
                Failure(
                    RuntimeError(f"Producer was not unregistered for {self.uri!r}")
                ),
            )
            self.unregisterProducer()  # type: ignore[no-untyped-call]
        self.channel.requestDone(self)  # type: ignore[no-untyped-call]
        del self.channel
        self._release()

    def _release(self) -> None:
        """
        The end of ``http.Request._cleanup``: close the body file and fire
        ``notifyFinish``, without making either if nobody asked for it.
        """
        state = self.__dict__
        content = state.get("content")
        if content is not None:
            try:
                content.close()
            except OSError:
                pass
        # http.Request deletes content, which under Site leaves the class's
        # None (not a new empty BytesIO).
        state["content"] = None
        notifications = state.get("notifications")
        if notifications:
            self.notifications = []
            for d in notifications:
                d.callback(None)

    def _lateFields(self, headers: http_headers.Headers) -> None:
        """The fields ``http.Request.write`` adds just before the head."""
        if self.lastModified is not None:
            if headers.hasHeader(b"Last-Modified"):
                self._log.info(
                    "Warning: last-modified specified both in"
                    " header list and lastModified attribute."
                )
            else:
                headers.setRawHeaders(
                    b"Last-Modified",
                    [http.datetimeToString(self.lastModified)],  # type: ignore[no-untyped-call]
                )
        if self.etag is not None:
            headers.setRawHeaders(b"ETag", [self.etag])
        if self.cookies:
            headers.setRawHeaders(b"Set-Cookie", self.cookies)


def _keptFields(
    headers: http_headers.Headers, close: bool
) -> tuple[list[tuple[bytes, bytes]], bool, int | None]:
    """
    The response fields ``_Exchange._capture`` keeps, whether a ``close``
    option was among them (or ``close`` already), and the Content-Length.
    """
    kept: list[tuple[bytes, bytes]] = []
    length: int | None = None
    kinds = _FIELD_KINDS
    raw = rawHeaders(headers)
    fields = raw.items() if raw is not None else headers.getAllRawHeaders()
    for name, values in fields:
        lowered = kinds.get(name)
        if lowered is None:
            lowered = name.lower()
            if lowered not in _SPECIAL_FIELDS:
                lowered = b""
            if len(kinds) < _FIELD_KINDS_MAX:
                kinds[name] = lowered
        if lowered:
            if lowered == b"content-length":
                # RFC 9110 §8.6: Content-Length = 1*DIGIT; anything else
                # (or several values) leaves the length unknown.
                if len(values) == 1 and values[0].isdigit():
                    length = int(values[0])
                    kept.append((name, values[0]))
                continue
            if lowered == b"server":
                if values != _TWISTED_SERVER:
                    kept.extend((name, value) for value in values)
                continue
            if lowered == b"connection" and not close:
                close = any(option.lower() == b"close" for option in splitList(values))
            continue
        if len(values) == 1:
            kept.append((name, values[0]))
        else:
            kept.extend((name, value) for value in values)
    return kept, close, length


class _Exchange:
    """
    One request as a resource renders it: what ``twisted.web.http.Request``
    needs of its ``HTTPChannel`` (and of the channel's transport), and the
    source of the connserver ``Response``.

    twisted.web's Request writes the status line and fields through
    :meth:`writeHeaders`, body bytes through :meth:`write`, and reports its
    end through :meth:`requestDone`; a render that returned bytes hands all
    of it over at once through :meth:`_complete`.  This object turns those
    calls into one ``Response``; if the body is still being written when the
    status is known, the response body is a :class:`_StreamedBody` reading
    from here.
    """

    # Most state starts at a class-level default, so that building one per
    # request sets only what differs (this object is on every request's path).
    _web: _WebRequest | None = None
    # http.Request.finish logs through channel.factory when there is one;
    # connserver keeps its own access log.
    factory = None
    _rendering = False
    _pulling = False
    _code = 200
    _reason: bytes | None = None
    _fields: list[tuple[bytes, bytes]] | None = None
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
    # Until render returns: the Response (or the error) the resource
    # produced at once.  After it: the Deferred the handler returned.
    _response: Response | None = None
    # Body bytes written before the protocol asked for them (a list of this
    # exchange's own once the first arrives).
    _buffer: list[bytes] = _NO_BUFFER
    _error: Exception | None = None
    _result: Deferred[Response] | None = None
    # The resource called loseConnection or abortConnection on its
    # transport (the reason its request will see), acted on a reactor turn
    # later (or when render returns), as Twisted's transport acts on them.
    _hangup: Failure | None = None
    _aborting = False
    # Why the body ended early (a hangup after the response was handed
    # over): a later startProducing fails with it, so the protocol aborts.
    _bodyFailure: Failure | None = None

    def __init__(self, site: Site, reactor: IReactorTime, request: Request) -> None:
        self.site = site
        self._reactor = reactor
        self._request = request

    @property
    def transport(self) -> Any:
        """
        Resources reach the connection as ``request.transport`` (``getPeer``,
        ``loseConnection``); this object answers for it too.  (A property,
        not an attribute, so that no reference cycle keeps it alive.)

        For a request that offers to switch protocols, ``channel.transport``
        is the connection's own (``Request.takeOverTransport``): a resource
        that takes it over, as autobahn's ``WebSocketResource`` does
        (assigning its protocol to the transport's ``protocol``), gets the
        connection, and HTTP steps aside.
        """
        request = self._request
        if request.upgrades:
            try:
                return request.takeOverTransport()
            except RuntimeError:
                pass  # not at the front (a request pipelined behind it)
        return self

    @transport.setter
    def transport(self, value: object) -> None:
        """Code that took the transport over sets it to None: nothing to do."""

    def render(self, body: bytes) -> Response | Deferred[Response]:
        """
        Hand the request to the resource tree: the Response if it is known
        when rendering returns, else a Deferred that fires with it.
        """
        request = self._request
        web = _WebRequest(self, self.site, request)
        self._web = web
        self._rendering = True
        try:
            if body:
                content = BytesIO()
                # Left at its end, as HTTPChannel leaves it: requestReceived
                # takes tell() as the body length (and parses form bodies).
                content.write(body)
                web.content = content
                web.requestReceived(  # type: ignore[no-untyped-call]
                    web.method, web.uri, web.clientproto
                )
            else:
                web.process()
        finally:
            self._rendering = False
        if not self._emitted or self._hangup is not None:
            self._settle()
        response = self._response
        if response is not None:
            self._response = None
            return response
        if self._error is not None:
            return fail(self._error)
        result: Deferred[Response] = Deferred(self._cancel)
        self._result = result
        return result

    # What twisted.web.http.Request calls on its channel.

    def getPeer(self) -> IAddress:
        """
        The connection's other end (a placeholder for a hand-made request);
        ``getClientAddress()`` is the client's, behind trusted proxies too.
        """
        return self._request.peer or _UNKNOWN_ADDRESS

    def getHost(self) -> IAddress:
        """The server's address (a placeholder for a hand-made request)."""
        return self._request.host or _UNKNOWN_ADDRESS

    def isSecure(self) -> bool:
        """
        Whether the client used HTTPS: the connection's TLS, or the scheme a
        trusted proxy forwarded (``--trusted-proxies``), so that
        ``prePathURL()`` and redirects say ``https`` behind a TLS proxy.
        """
        return self._request.scheme == "https"

    def writeHeaders(
        self,
        version: bytes,
        code: bytes,
        reason: bytes,
        headers: http_headers.Headers,
    ) -> None:
        """Capture the status and fields at the resource's first write."""
        web = self._web
        assert web is not None
        # twisted.web chose chunked for a 1.1 response of unknown length;
        # connserver frames the body, so the bytes must arrive unframed.
        web.chunked = 0
        self._capture(int(code), reason, headers)
        if not self._rendering and not self._pulling:
            # Written from a callback: wait one reactor turn, so that a
            # write() followed by finish() in the same callback still gives a
            # bytes body of known length (HTTP/1.0 keep-alive needs it).
            self._kick()

    def _complete(
        self, code: int, reason: bytes, headers: http_headers.Headers, body: bytes
    ) -> None:
        """A render that returned bytes: head, body and end at once."""
        self._capture(code, reason, headers)
        self._finished = True
        # Nothing calls back into the request now: drop the reference, so
        # that the two are freed without waiting for the cycle collector.
        self._web = None
        if self._stopped or self._emitted or self._aborting:
            return
        # What _emit does for a finished body: render() only comes here for
        # a response that has one (not HEAD, 204 or 304).
        self._emitted = True
        try:
            # Inside render (see _resolve): it returns the Response itself.
            self._response = Response(code, self._fields, body, reason=self._reason)
        except ValueError as e:
            self._error = e

    def _capture(self, code: int, reason: bytes, headers: http_headers.Headers) -> None:
        """
        Keep the status and the fields connserver does not own.

        Framing and connection fields are dropped because connserver decides
        them (RFC 9112 §6.1: a server MUST NOT apply chunked twice; the
        Connection options are per hop, RFC 9110 §7.6.1), except that a
        ``close`` option is kept so that the connection closes after this
        response, as the resource asked (RFC 9112 §9.6).  The fields become
        the Response's list of (name, value) pairs, which the protocol
        writes (and caches the lines of) as they are.
        """
        self._code = code
        # The standard phrase goes as None, so the protocol uses its
        # prebuilt status line.
        self._reason = None if reason == RESPONSES.get(code) else reason
        kept, close, length = _keptFields(headers, self._closeAfter)
        if close:
            kept.append(_CLOSE)
        self._fields = kept
        self._length = length

    def write(self, data: bytes) -> None:
        """
        Body bytes from the resource (dropped once the client is gone, or
        once the resource aborted the connection: Twisted's transport never
        sends what is written after ``abortConnection``).
        """
        if self._stopped or not data or self._aborting:
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
        buffer = self._buffer
        if buffer is _NO_BUFFER:
            buffer = self._buffer = []
        buffer.append(data)
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
        if self._stopped or self._aborting:
            # Aborted: the response is not completed; _settle ends it.
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
        ``request.transport.loseConnection()`` (and
        ``request.loseConnection()``).  Under ``Site`` what was written in
        this reactor turn still goes out, then the connection closes; here,
        a reactor turn later (or when render returns):

        - a response complete by then is sent whole; if its head was not
          handed to connserver before, it says ``Connection: close`` and
          connserver closes after it (a head already sent stays as it was,
          and so does the connection's persistence);
        - a response begun but not complete ends there: its body fails, so
          the protocol aborts the connection (a framed body cut short must
          never look complete);
        - nothing written: the request sees ``connectionLost``
          (``notifyFinish`` fails with ``ConnectionDone``, later writes are
          dropped) and the handler fails, so connserver answers 500 with
          ``Connection: close`` and closes (a handler cannot close a
          connection without an answer);
        - once the response is complete, the call changes nothing.
        """
        self._closeAfter = True
        fields = self._fields
        if fields is not None and not self._emitted and _CLOSE not in fields:
            fields.append(_CLOSE)
        self._hangUp(_closedByResource(), abort=False)

    def abortConnection(self) -> None:
        """
        ``request.transport.abortConnection()``.  Under ``Site`` nothing
        written from this reactor turn on is sent, and the connection is
        reset; here, a reactor turn later (or when render returns), a
        response that connserver has not been handed complete is never
        completed: its body fails (or, if connserver has not been handed
        its status yet, a 500 head goes with a body that fails at once), so
        the protocol aborts the connection.  The request sees ``connectionLost`` with
        ``ConnectionAborted``.  Once the response is complete, the call
        changes nothing.
        """
        self._hangUp(_abortedByResource(), abort=True)

    def _hangUp(self, reason: Failure, abort: bool) -> None:
        if self._stopped or (self._emitted and self._finished):
            # The client is gone, or the response is complete.
            return
        if abort:
            if self._aborting:
                return
            self._aborting = True
            self._hangup = reason
            # Nothing of what is still held here will be sent.
            self._buffer = []
            self._buffered = 0
        elif self._hangup is None:
            self._hangup = reason
        else:
            return
        if not self._rendering:
            # Inside render, render() settles when it returns.
            self._kick()

    def pauseProducing(self) -> None:
        """Reading is connserver's; the body was read before rendering."""

    def resumeProducing(self) -> None:
        """Reading is connserver's; the body was read before rendering."""

    def stopProducing(self) -> None:
        """Reading is connserver's; the body was read before rendering."""

    def _respondToBadRequestAndDisconnect(self) -> None:
        # Called by requestReceived for a malformed multipart body.
        if not self._emitted:
            self._emitted = True
            self._resolve(Response(400, [_CLOSE], b"Bad Request"))

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
        if self._hangup is None:
            self._pull()
        if self._hangup is not None:
            self._cancelTick()
            self._endForHangup(self._hangup)
        elif not self._emitted and (self._finished or self._fields is not None):
            self._emit()

    def _endForHangup(self, reason: Failure) -> None:
        """
        The turn in which the resource called ``loseConnection`` or
        ``abortConnection`` is over: end the response accordingly.
        """
        if self._emitted:
            if not self._finished:
                # Handed over and still streaming: cut it short.
                self._failBody(reason)
            return
        if not self._aborting:
            if self._finished:
                # Complete within the turn: sent whole, Connection: close.
                self._emit()
                return
            if self._fields is not None:
                # Begun within the turn: the head goes, the body is cut.
                self._emit()
                self._failBody(reason)
                return
        self._unanswered(reason)

    def _failBody(self, reason: Failure) -> None:
        """
        End the body with ``reason``: the protocol aborts the connection
        (``_bodyFailed``), now if it started the body, else when it does.
        """
        done = self._done
        self._bodyFailure = reason
        self._abandon(reason)
        if done is not None:
            done.errback(reason)

    def _unanswered(self, reason: Failure) -> None:
        """
        The connection is to end before any response was handed over: tell
        the request (``connectionLost``), then end the exchange as closely
        to ``Site`` (a close with no response) as a handler can, since the
        protocol has no way to close without writing one.  An abort becomes
        a 500 head whose body fails at once, so that the protocol aborts
        (a reset, as Twisted's ``abortConnection``); a HEAD (whose response
        has no body to fail) and a close fail the handler, so that the
        protocol answers 500 with ``Connection: close`` and closes.
        """
        self._emitted = True
        self._abandon(reason)
        if self._aborting and self._request.method != b"HEAD":
            self._bodyFailure = reason
            self._resolve(Response(500, [_CLOSE], _StreamedBody(self, None)))
            return
        result = self._result
        if result is None:
            # Still inside render: it returns the failure.
            error = reason.value
            assert isinstance(error, Exception)
            self._error = error
        else:
            result.errback(reason)

    def _emit(self) -> None:
        if self._emitted:
            return
        self._emitted = True
        self._cancelTick()
        fields = self._fields if self._fields is not None else []
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
            response = Response(self._code, fields, body, reason=self._reason)
        except ValueError as e:
            result = self._result
            if result is None:
                self._error = e
            else:
                result.errback(e)
            return
        self._resolve(response)

    def _resolve(self, response: Response) -> None:
        result = self._result
        if result is None:
            # Still inside render: it returns the Response itself.
            self._response = response
        else:
            result.callback(response)

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
            if self._bodyFailure is not None:
                # The resource ended the connection: the protocol aborts.
                return fail(self._bodyFailure)
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
