"""
``ReverseProxy``: forward requests under a prefix to an upstream HTTP server.

connserver is then "the first proxy" the ``Connection`` header is written
for (RFC 9110 §7.6.1): hop-by-hop fields, the standard ones and every field a
message names in ``Connection``, belong to one connection and are consumed
here in both directions; end-to-end fields pass unchanged.  The message to
the client is framed by connserver's own rules (chunked for HTTP/1.1, length
or close for HTTP/1.0), not by the upstream's.

Upstream connections come from Twisted's own client: ``twisted.web.client
.Agent`` over a persistent ``HTTPConnectionPool``.  The pool retries, once
and on a new connection, a bodiless request with an idempotent method that
failed on a reused connection before any response byte (the idle-close race
seen from the proxy side); connserver relies on that retry rather than
repeating it.  Bodies stream both ways with backpressure and are never
buffered whole.  See ``docs/proxy.md``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectError, ConnectionRefusedError
from twisted.internet.interfaces import (
    IConsumer,
    IPushProducer,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    ResponseDone,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers as TwistedHeaders
from twisted.web.iweb import (
    UNKNOWN_LENGTH,
    IAgentEndpointFactory,
    IBodyProducer,
    IResponse,
)
from zope.interface import implementer

from connserver._connection.message import Request, Response
from connserver._http.errors import BodyInterrupted, ResponseFramingError
from connserver._http.framing import validateResponseField
from connserver._http.headers import HOP_BY_HOP, isToken, optionsFromValues
from connserver._twisted.privates import (
    HTTP11ClientProtocol,
    clientParser,
    setPoolProtocolFactory,
)
from connserver._twisted.reactor import defaultReactor
from connserver._twisted.sockets import setNoDelay

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["RETRIED_METHODS", "ReverseProxy", "UpstreamTimeout", "parseUpstreamURL"]

_log = Logger(namespace="connserver")

#: What the proxy calls itself in ``Via`` (RFC 9110 §7.6.3: a pseudonym
#: instead of the host name, so no internal name leaks).
_PSEUDONYM = b"connserver"

# Fields of the client's request that are not forwarded besides the
# hop-by-hop ones: the framing is the upstream connection's (Twisted's
# client writes Content-Length or chunked from the body producer), and the
# expectation is met on the client's hop (Twisted's client sends the body
# without waiting for a 100, so forwarding Expect would promise a wait
# that never happens).
_NOT_FORWARDED = HOP_BY_HOP | {b"content-length", b"expect", b"host"}

#: Methods the pool retries (``_RetryingHTTP11ClientProtocol._shouldRetry``),
#: and only without a body.  PUT is idempotent too but Twisted does not retry
#: it; neither does connserver.
RETRIED_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"DELETE", b"TRACE"})

_BAD_GATEWAY = b"502 Bad Gateway\n"
_GATEWAY_TIMEOUT = b"504 Gateway Timeout\n"
_TEXT = (b"Content-Type", b"text/plain; charset=utf-8")


def parseUpstreamURL(text: str) -> tuple[bytes, bytes, bytes]:
    """
    ``http[s]://HOST[:PORT][/PATH]`` as (``scheme://host:port``, the path
    without its trailing slash, ``host:port``); ``ValueError`` with a short
    reason otherwise (the command line's one-line error).
    """
    if not text.isascii() or any(c.isspace() for c in text):
        raise ValueError(f"an upstream URL is ASCII without spaces, not {text!r}")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected http://HOST[:PORT][/PATH], not {text!r}")
    if parts.query or parts.fragment or "?" in text or "#" in text:
        raise ValueError(f"an upstream URL has no query or fragment: {text!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"an upstream URL has no user or password: {text!r}")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise ValueError(f"bad port in the upstream URL {text!r}") from None
    return (
        f"{parts.scheme}://{parts.netloc}".encode("ascii"),
        parts.path.rstrip("/").encode("ascii"),
        parts.netloc.encode("ascii"),
    )


def _clientAddress(request: Request) -> str | None:
    """
    The address of the node this request came from, as text: the one place
    that says so (the ``for=`` of ``Forwarded``, ``X-Forwarded-For``).  It is
    the connection's peer, not ``Request.clientAddress``: each proxy appends
    the node it received the request from (RFC 7239 §5.2), so behind a
    trusted proxy the client is already earlier in the list.
    """
    return getattr(request.peer, "host", None)


def _forwardedNode(address: str | None) -> bytes:
    """An RFC 7239 §6 node: IPv6 in brackets and quotes, else as is."""
    if not address:
        return b"unknown"
    if ":" in address:
        return b'"[' + address.encode("ascii", "replace") + b']"'
    return address.encode("ascii", "replace")


def _quotedIfNeeded(value: bytes) -> bytes:
    """RFC 7239 §4: a value is a token or a quoted-string."""
    if isToken(value):
        return value
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


# -- the upstream client: Twisted's, told to keep the Connection options --


class _UpstreamProtocol(HTTP11ClientProtocol):
    """
    Twisted's HTTP/1.1 client protocol, which also notes the upstream
    response's ``Connection`` options on the response.  Twisted's parser
    keeps ``Connection`` aside (with the other connection-control fields) but
    leaves the fields it names among the response's headers; a proxy must
    remove those (RFC 9110 §7.6.1), so it must know them.
    """

    def connectionMade(self) -> None:
        # Twisted's client writes a request's head and body separately, and
        # the upstream's delayed ACK (40 ms on Linux) would hold the second
        # write under Nagle's algorithm: every proxied request would wait.
        setNoDelay(self.transport)
        super().connectionMade()

    def request(self, request: Any) -> Deferred[Any]:
        d: Deferred[Any] = super().request(request)
        parser = clientParser(self)
        if parser is not None:
            d.addCallback(_noteOptions, parser)
        return d


def _noteOptions(response: Any, parser: Any) -> Any:
    values = parser.connHeaders.getRawHeaders(b"connection", ())
    response._connserverOptions = optionsFromValues(values)
    return response


class _UpstreamFactory(Factory):
    """What ``HTTPConnectionPool`` builds its connections with (its ``_factory``)."""

    noisy = False

    def __init__(self, quiescentCallback: Any, metadata: object) -> None:
        self._quiescentCallback = quiescentCallback

    def buildProtocol(self, addr: object) -> _UpstreamProtocol:
        return _UpstreamProtocol(self._quiescentCallback)  # type: ignore[no-untyped-call]


@implementer(IAgentEndpointFactory)
class _OneEndpoint:
    """The upstream's endpoint, built once (``Agent.usingEndpointFactory``)."""

    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self._endpoint = endpoint

    def endpointForURI(self, uri: object) -> IStreamClientEndpoint:
        return self._endpoint


def _upstreamEndpoint(reactor: Any, url: str) -> IStreamClientEndpoint:
    """TCP to the upstream's host and port; TLS over it for ``https``."""
    from twisted.internet.endpoints import (
        HostnameEndpoint,
        TCP4ClientEndpoint,
        TCP6ClientEndpoint,
        wrapClientTLS,
    )
    from twisted.web.client import BrowserLikePolicyForHTTPS

    parts = urlsplit(url)
    host = parts.hostname or ""
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    endpoint: IStreamClientEndpoint
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        # A name: resolved at each new connection, every address tried.
        endpoint = HostnameEndpoint(reactor, host, port)
    else:
        # An address: no resolver thread and no wait between attempts
        # (HostnameEndpoint's), so a refused upstream is a 502 at once.
        tcp = TCP4ClientEndpoint if literal.version == 4 else TCP6ClientEndpoint
        endpoint = tcp(reactor, host, port)
    if secure:
        creator = BrowserLikePolicyForHTTPS().creatorForNetloc(  # type: ignore[no-untyped-call]
            host.encode("idna"), port
        )
        endpoint = wrapClientTLS(creator, endpoint)
    return endpoint


# -- bodies -----------------------------------------------------------------


@implementer(IBodyProducer)
class _RequestBody:
    """
    The client's request body as Twisted's client wants it: an
    ``IBodyProducer`` fed from ``Request.deliverBody``.  The upstream
    transport pausing it pauses reading from the client's socket; nothing
    is buffered here.  Asking for the body is what sends the client its
    ``100 Continue`` (RFC 9110 §10.1.1), so that happens only once the
    request is on its way upstream.
    """

    def __init__(self, request: Request, exchange: _ProxyExchange) -> None:
        self._request = request
        self._exchange = exchange
        self.length: Any = (
            UNKNOWN_LENGTH if request.chunked else int(request.contentLength or 0)
        )
        self._consumer: IConsumer | None = None
        self._source: IPushProducer | None = None
        self._done: Deferred[None] | None = None

    # IBodyProducer, called by Twisted's client

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._consumer = consumer
        done = self._done = Deferred()
        # The upstream is connected and the head is written: the response
        # timer waits until the body is through (the client's body timers
        # bound the upload meanwhile).
        self._exchange.stopTimer()
        # A body that is already here is delivered (and ended) at once.
        self._request.deliverBody(self)  # type: ignore[arg-type]
        return done

    def pauseProducing(self) -> None:
        if self._source is not None:
            self._source.pauseProducing()

    def resumeProducing(self) -> None:
        if self._source is not None:
            self._source.resumeProducing()

    def stopProducing(self) -> None:
        if self._source is not None:
            self._source.stopProducing()

    # IProtocol, called by the Request

    def makeConnection(self, producer: IPushProducer) -> None:
        self._source = producer

    def dataReceived(self, data: bytes) -> None:
        if self._consumer is not None:
            self._consumer.write(data)

    def connectionLost(self, reason: Failure) -> None:
        done, self._done = self._done, None
        if done is None:
            return
        if reason.check(ResponseDone):
            self._exchange.startTimer()
            done.callback(None)
        else:
            done.errback(reason)


class UpstreamTimeout(Exception):
    """The upstream sent no body byte for ``responseTimeout`` seconds."""


@implementer(IBodyProducer)
class _UpstreamBody(Protocol):
    """
    The upstream's response body as connserver's ``Response`` wants it: an
    ``IBodyProducer`` whose pausing pauses the upstream transport (a client
    that stops reading stops the upstream read), and a protocol receiving
    the body from Twisted's ``IResponse.deliverBody``.

    While the body flows and the client is reading, ``timeout`` bounds the
    wait for the next upstream byte (nginx's ``proxy_read_timeout``); while
    the client has paused it, connserver's ``sendTimeout`` is the bound.
    The timer is one lazy ``DelayedCall`` (armed only if the body does not
    come with its head, moved by a timestamp per chunk).
    """

    def __init__(
        self, upstream: IResponse, reactor: IReactorTime, timeout: float | None
    ) -> None:
        self._upstream = upstream
        length = upstream.length
        self.length: Any = UNKNOWN_LENGTH if length is UNKNOWN_LENGTH else length
        self._consumer: IConsumer | None = None
        self._done: Deferred[None] | None = None
        self._stopped = False
        self._reactor = reactor
        self._timeout = timeout
        self._timer: IDelayedCall | None = None
        self._lastByte = 0.0
        self._paused = False

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._consumer = consumer
        done = self._done = Deferred()
        self._upstream.deliverBody(self)  # type: ignore[no-untyped-call]
        if self._done is not None and self._timeout is not None:
            self._lastByte = self._reactor.seconds()
            self._timer = self._reactor.callLater(self._timeout, self._check)
        return done

    def _check(self) -> None:
        self._timer = None
        if self._done is None or self._timeout is None:
            return
        now = self._reactor.seconds()
        left = self._lastByte + self._timeout - now
        if self._paused or left > 0:
            self._timer = self._reactor.callLater(
                self._timeout if self._paused else left, self._check
            )
            return
        done, self._done = self._done, None
        self._stopped = True
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]
        done.errback(UpstreamTimeout(f"no upstream byte for {self._timeout:g} s"))

    def _cancelTimer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def pauseProducing(self) -> None:
        self._paused = True
        if self.transport is not None:
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def resumeProducing(self) -> None:
        self._paused = False
        self._lastByte = self._reactor.seconds()
        if self.transport is not None:
            self.transport.resumeProducing()  # type: ignore[attr-defined]

    def stopProducing(self) -> None:
        """
        The client went away, or the body is never sent (HEAD, 204, 304):
        drop the upstream connection unless the body is already complete
        (then it goes back to the pool).
        """
        self._stopped = True
        self._cancelTimer()
        if self._consumer is None:
            # Never started: Twisted holds the connection paused until
            # someone takes the body; take it, to stop it at once.
            self._consumer = _NoConsumer()  # type: ignore[assignment]
            self._upstream.deliverBody(self)  # type: ignore[no-untyped-call]
            return
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def connectionMade(self) -> None:
        if self._stopped and self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        if not self._stopped and self._consumer is not None:
            if self._timer is not None:
                self._lastByte = self._reactor.seconds()
            self._consumer.write(data)

    def connectionLost(self, reason: Failure = ResponseDone) -> None:  # type: ignore[assignment]
        self._cancelTimer()
        done, self._done = self._done, None
        if done is None:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            # PotentialDataLoss: a close-delimited upstream body, which
            # ends the only way it can.
            done.callback(None)
        else:
            # Cut short upstream: connserver aborts the client's response
            # (close reason response-error) rather than pad it, and logs
            # this one line (no traceback: the upstream failed, not us).
            done.errback(
                BodyInterrupted(
                    "the upstream's body ended early: "
                    + (reason.getErrorMessage() or type(reason.value).__name__)
                )
            )


class _NoConsumer:
    def write(self, data: bytes) -> None:
        pass


#: A "." or ".." segment of a path, also percent-encoded ("%2e"): what
#: could move a forwarded target out of its mount.
_DOT_SEGMENT = re.compile(rb"/(?:\.|%2[eE]){1,2}(?:/|$)")

# -- the handler ----------------------------------------------------------------


class _ProxyExchange:
    """One proxied request: its upstream Deferred and its response timer."""

    __slots__ = ("deferred", "proxy", "timedOut", "timer")

    def __init__(self, proxy: ReverseProxy) -> None:
        self.proxy = proxy
        self.deferred: Deferred[Any] | None = None
        self.timer: IDelayedCall | None = None
        self.timedOut = False

    def startTimer(self) -> None:
        timeout = self.proxy.responseTimeout
        if timeout is not None and self.timer is None:
            self.timer = self.proxy._reactor.callLater(timeout, self._expired)

    def stopTimer(self) -> None:
        timer, self.timer = self.timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _expired(self) -> None:
        self.timer = None
        self.timedOut = True
        if self.deferred is not None:
            self.deferred.cancel()


class ReverseProxy:
    """
    A handler that forwards each request to ``url`` and relays the answer.

    ``url`` is ``http://host:port`` or ``https://host:port``, with an
    optional path prepended to each request's target (``/api/x?q`` goes to
    ``url`` + ``/api/x?q``: the mount prefix is kept, as nginx's
    ``proxy_pass`` without a URI does).

    In both directions it removes ``Connection``, every field it names, and
    the standard hop-by-hop fields (``Keep-Alive``, ``TE``,
    ``Transfer-Encoding``, ``Trailer``, ``Upgrade``, ``Proxy-Connection``,
    ``Proxy-Authenticate``, ``Proxy-Authorization``), RFC 9110 §7.6.1.  It
    appends ``Via`` (RFC 9110 §7.6.3) both ways, and ``Forwarded`` (RFC 7239)
    and ``X-Forwarded-For`` to the request, and sets ``X-Forwarded-Proto``.
    The client's ``Host`` is kept unless ``rewriteHost``.

    Upstream connections are pooled (``pool``, an ``HTTPConnectionPool``,
    made if not given): at most ``maxPerUpstream`` idle ones per upstream,
    each closed after ``upstreamIdleTimeout`` seconds idle, which must be
    shorter than the upstream's own idle timeout.  An upstream that has not
    answered ``responseTimeout`` seconds after the request (its body
    included) was sent gets a 504; one that cannot be reached, or fails
    before its response head, a 502; one that stalls that long inside its
    body while the client reads has the client's response aborted.  Neither tells the client more than
    the status: the reason goes to the access log (``note=``).
    """

    def __init__(
        self,
        url: str | bytes,
        *,
        reactor: IReactorTime | None = None,
        pool: HTTPConnectionPool | None = None,
        rewriteHost: bool = False,
        maxPerUpstream: int = 128,
        upstreamIdleTimeout: float = 4.0,
        responseTimeout: float | None = 60.0,
    ) -> None:
        text = url.decode("ascii") if isinstance(url, bytes) else url
        base, basePath, upstreamHost = parseUpstreamURL(text)
        if maxPerUpstream < 1:
            raise ValueError("maxPerUpstream must be at least 1")
        if upstreamIdleTimeout <= 0:
            raise ValueError("upstreamIdleTimeout must be positive")
        if responseTimeout is not None and responseTimeout <= 0:
            raise ValueError("responseTimeout must be positive or None")
        if reactor is None:
            reactor = defaultReactor()
        assert reactor is not None
        self._reactor = reactor
        #: The upstream's scheme, host and port, and the path prepended.
        self.url = text
        self._base = base
        self._basePath = basePath
        self._upstreamHost = upstreamHost
        self.rewriteHost = rewriteHost
        self.responseTimeout = responseTimeout
        if pool is None:
            pool = HTTPConnectionPool(reactor, persistent=True)  # type: ignore[no-untyped-call]
            pool.maxPersistentPerHost = maxPerUpstream
            pool.cachedConnectionTimeout = upstreamIdleTimeout  # type: ignore[assignment]
        # Twisted's client with a protocol that keeps the upstream's
        # Connection options (see _UpstreamProtocol).
        setPoolProtocolFactory(pool, _UpstreamFactory)
        pool.retryAutomatically = True
        #: The connection pool (``closeCachedConnections()`` at shutdown).
        self.pool = pool
        # One endpoint for every request: Agent would otherwise build one
        # (and IDNA-encode the host) per request.
        self._agent = Agent.usingEndpointFactory(  # type: ignore[no-untyped-call]
            reactor, _OneEndpoint(_upstreamEndpoint(reactor, text)), pool=pool
        )

    def close(self) -> Deferred[None]:
        """Close the idle upstream connections (at shutdown)."""
        d: Deferred[None] = self.pool.closeCachedConnections()  # type: ignore[no-untyped-call]
        return d

    def __call__(self, request: Request) -> Deferred[Response] | Response:
        target = request.target
        if not target.startswith(b"/"):
            # Absolute-form or asterisk-form: not something a mounted
            # prefix receives; nothing sensible to forward.
            return Response(400, [_TEXT], b"400 Bad Request\n")
        if _DOT_SEGMENT.search(target.partition(b"?")[0]):
            # "/api/../secret" matched the /api mount on its raw path; an
            # upstream that removes dot-segments (RFC 3986 §5.2.4) would
            # serve /secret, outside the mount.  nginx normalises before it
            # matches; a proxy that forwards the target unchanged refuses.
            return Response(400, [_TEXT], b"400 Bad Request\n", note="dot-segment")
        exchange = _ProxyExchange(self)
        headers = self._requestHeaders(request)
        body = _RequestBody(request, exchange) if request.hasBody else None
        d = self._agent.request(
            request.method,
            self._base + self._basePath + target,
            headers,
            body,
        )
        exchange.deferred = d
        exchange.startTimer()
        result: Deferred[Response] = d.addCallbacks(
            self._relay,
            self._failed,
            callbackArgs=(exchange,),
            errbackArgs=(exchange,),
        )
        return result

    def _requestHeaders(self, request: Request) -> TwistedHeaders:
        """The fields sent upstream (RFC 9110 §7.6.1, §7.6.3; RFC 7239)."""
        drop = _NOT_FORWARDED | request.connectionOptions
        out = TwistedHeaders()
        add = out.addRawHeader
        for name, value in request.headers:
            if name.lower() not in drop:
                add(name, value)
        clientHost = request.headers.get(b"host")
        host = self._upstreamHost if self.rewriteHost or not clientHost else clientHost
        out.setRawHeaders(b"Host", [host])
        major, minor = request.version
        out.addRawHeader(b"Via", b"%d.%d %s" % (major, minor, _PSEUDONYM))
        address = _clientAddress(request)
        scheme = b"https" if request.isSecure else b"http"
        forwarded = b"for=" + _forwardedNode(address) + b";proto=" + scheme
        if clientHost:
            forwarded += b";host=" + _quotedIfNeeded(clientHost)
        out.addRawHeader(b"Forwarded", forwarded)
        xff = request.headers.getAll(b"x-forwarded-for")
        node = (address or "unknown").encode("ascii", "replace")
        out.setRawHeaders(b"X-Forwarded-For", [b", ".join([*xff, node])])
        # A single value: the scheme the client used, whatever an untrusted
        # client claimed (Request.scheme follows X-Forwarded-Proto and
        # Forwarded only from --trusted-proxies).
        out.setRawHeaders(b"X-Forwarded-Proto", [request.scheme.encode("ascii")])
        return out

    def _relay(self, upstream: IResponse, exchange: _ProxyExchange) -> Response:
        exchange.stopTimer()
        options: frozenset[bytes] = getattr(upstream, "_connserverOptions", frozenset())
        drop = HOP_BY_HOP | options
        fields: list[tuple[bytes, bytes]] = []
        for name, values in upstream.headers.getAllRawHeaders():
            if name.lower() not in drop:
                for value in values:
                    fields.append((name, value))
        major, minor = upstream.version[1], upstream.version[2]
        fields.append((b"Via", b"%d.%d %s" % (major, minor, _PSEUDONYM)))
        body = _UpstreamBody(upstream, self._reactor, self.responseTimeout)
        try:
            # What connserver would refuse to send (a 500 from the server)
            # is the upstream's fault: 502, RFC 9110 §15.6.3.
            for name, value in fields:
                validateResponseField(name, value)
            return Response(upstream.code, fields, body, reason=upstream.phrase or None)
        except (ValueError, ResponseFramingError):
            body.stopProducing()
            return self._error(502, "upstream-bad-response")

    def _failed(self, failure: Failure, exchange: _ProxyExchange) -> Response:
        exchange.stopTimer()
        if exchange.timedOut:
            return self._error(504, "upstream-timeout")
        if failure.check(CancelledError):
            # The client went away (connserver cancelled us): no answer is
            # wanted; the upstream request is aborted already.
            return self._error(502, "client-gone")
        if failure.check(ConnectionRefusedError):
            note = "upstream-refused"
        elif failure.check(ConnectError):
            note = "upstream-unreachable"
        else:
            note = "upstream-failed"
        _log.info(
            "upstream {url} failed: {error}",
            url=self.url,
            error=failure.getErrorMessage() or repr(failure.value),
        )
        return self._error(502, note)

    def _error(self, code: int, note: str) -> Response:
        body = _BAD_GATEWAY if code == 502 else _GATEWAY_TIMEOUT
        return Response(code, [_TEXT], body, note=note)
