"""
``ReverseProxy``: forward requests under a prefix to an upstream HTTP server.

connserver is then "the first proxy" the ``Connection`` header is written
for (RFC 9110 §7.6.1): hop-by-hop fields, the standard ones and every field a
message names in ``Connection``, belong to one connection and are consumed
here in both directions; end-to-end fields pass unchanged.  The message to
the client is framed by connserver's own rules (chunked for HTTP/1.1, length
or close for HTTP/1.0), not by the upstream's.

Upstream connections are connserver's own client (``upstream.py``): its
strict response parser and framing, and a pool that never reuses a
connection whose framing is in doubt.  A request that fails on a reused
connection before any response byte is retried once, on a new connection,
when it is idempotent and bodiless.  Bodies stream both ways with
backpressure and are never buffered whole.  See ``docs/proxy.md``.
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError, ConnectionRefusedError
from twisted.internet.interfaces import IConsumer, IPushProducer, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from connserver._connection.message import Request, Response, ResponseDeferred
from connserver._handlers.tunnel import Tunnel
from connserver._handlers.upstream import (
    UpstreamConnection,
    UpstreamPool,
    responseOptions,
)
from connserver._http.errors import BodyInterrupted, ProtocolError
from connserver._http.framing import statusLine
from connserver._http.headers import HOP_BY_HOP, isToken
from connserver._http.parser import ResponseHead
from connserver._http.paths import (
    hasEncodedSeparator,
    mayHaveDotSegments,
    removeDotSegments,
    splitTarget,
)
from connserver._twisted.reactor import defaultReactor

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

__all__ = ["RETRIED_METHODS", "ReverseProxy", "UpstreamTimeout", "parseUpstreamURL"]

_log = Logger(namespace="connserver")

#: What the proxy calls itself in ``Via`` (RFC 9110 §7.6.3: a pseudonym
#: instead of the host name, so no internal name leaks).
_PSEUDONYM = b"connserver"

# Fields of the client's request that are not forwarded besides the
# hop-by-hop ones: the framing is the upstream connection's (written here
# from the client's), the expectation is met on the client's hop (the body
# is sent without waiting for a 100), Host is set below, and the
# forwarding fields are rebuilt (X-Forwarded-Proto is replaced outright).
_NOT_FORWARDED = HOP_BY_HOP | {
    b"content-length",
    b"expect",
    b"host",
    b"x-forwarded-proto",
    b"x-forwarded-for",
    b"forwarded",
    b"max-forwards",
}

# Fields of the upstream's response not relayed besides the hop-by-hop
# ones: the framing is connserver's, and so are Date and Server (as nginx's
# proxy_hide_header defaults: the upstream's software is not advertised).
_NOT_RELAYED = HOP_BY_HOP | {b"content-length", b"date", b"server"}

#: Idempotent methods (RFC 9110 §9.2.2): retried once, without a body, on
#: a new connection when a reused one failed before any response byte.
RETRIED_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"DELETE", b"TRACE", b"PUT"})

_TEXT = (b"Content-Type", b"text/plain; charset=utf-8")
_ALLOW = (b"Allow", b"GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH")
_VIA_RESPONSE = {
    (1, 1): (b"Via", b"1.1 " + _PSEUDONYM),
    (1, 0): (b"Via", b"1.0 " + _PSEUDONYM),
}
_HTTP11_SUFFIX = b" HTTP/1.1\r\n"
#: This hop's forwarding lines kept per (Host, peer, scheme, version).
_HOP_CACHE_SIZE = 256
_CHUNKED_END = b"0\r\n\r\n"

# RFC 7239 §4: Forwarded = 1#forwarded-element, forwarded-element =
# [ forwarded-pair ] *( ";" [ forwarded-pair ] ), forwarded-pair = token "="
# value, value = token / quoted-string.
_FTOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_FQUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_FPAIR = _FTOKEN + rb"=(?:" + _FTOKEN + rb"|" + _FQUOTED + rb")"
_FELEMENT = rb"(?:" + _FPAIR + rb")?(?:;(?:" + _FPAIR + rb")?)*"
_FORWARDED_RE = re.compile(
    rb"[ \t]*" + _FELEMENT + rb"(?:[ \t]*,[ \t]*" + _FELEMENT + rb")*[ \t]*"
)
# X-Forwarded-For has no grammar but its use: addresses (an IPv6 one maybe
# in brackets, either maybe with a port) or "unknown".
_XFF_NODE_RE = re.compile(
    r"([0-9.]+)(?::[0-9]{1,5})?|\[([0-9A-Fa-f:.]+)\](?::[0-9]{1,5})?"
    r"|([0-9A-Fa-f:.]+)|unknown"
)


def parseUpstreamURL(text: str) -> tuple[bytes, bytes, bytes]:
    """
    ``http[s]://HOST[:PORT][/PATH]`` as (``scheme://host:port``, the path
    as given (empty without one), ``host:port``); ``ValueError`` with a short
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
        parts.path.encode("ascii"),
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


def _forwardedParses(values: list[bytes]) -> bool:
    """True when every ``Forwarded`` line is RFC 7239 §4 syntax."""
    for value in values:
        if _FORWARDED_RE.fullmatch(value) is None:
            return False
    return True


def _xffParses(values: list[bytes]) -> bool:
    """True when every ``X-Forwarded-For`` element is an address or unknown."""
    for value in values:
        for element in value.split(b","):
            text = element.strip(b" \t").decode("latin-1")
            match = _XFF_NODE_RE.fullmatch(text)
            if match is None:
                return False
            address = match.group(1) or match.group(2) or match.group(3)
            if address is not None:
                try:
                    ipaddress.ip_address(address)
                except ValueError:
                    return False
    return True


class UpstreamTimeout(Exception):
    """The upstream sent no body byte for ``responseTimeout`` seconds."""


# -- bodies -----------------------------------------------------------------


class _RequestBodyPump:
    """
    The client's request body, as ``Request.deliverBody`` gives it, written
    to the upstream connection with this hop's framing.  The upstream
    transport pausing it (its producer is the client's body) pauses reading
    from the client's socket; nothing is buffered here.  Asking for the body
    is what sends the client its ``100 Continue`` (RFC 9110 §10.1.1), so that
    happens only once the request head is on its way upstream.
    """

    __slots__ = ("chunked", "connection", "exchange", "limit", "producer", "size")

    def __init__(
        self, exchange: _ProxyExchange, connection: UpstreamConnection
    ) -> None:
        self.exchange = exchange
        self.connection = connection
        self.chunked = exchange.request.chunked
        self.limit: int | None = exchange.proxy._bodyLimit(exchange.request)
        self.size = 0
        self.producer: IPushProducer | None = None

    def makeConnection(self, producer: IPushProducer) -> None:
        self.producer = producer
        transport = self.connection.transport
        if transport is not None:
            transport.registerProducer(producer, True)  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        if self.exchange.pump is not self:
            return
        self.size += len(data)
        limit = self.limit
        if limit is not None and self.size > limit:
            # --max-body-bytes: the upstream request is aborted, the client
            # gets 413 (if no response started), nothing more is read.
            self.exchange.bodyFailed(413, "body-too-large")
            return
        if self.chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        self.connection.writeBody(data)

    def connectionLost(self, reason: Failure) -> None:
        exchange = self.exchange
        self._unregister()
        if exchange.pump is not self:
            return
        exchange.pump = None
        if reason.check(ResponseDone):
            self.connection.endBody(_CHUNKED_END if self.chunked else b"")
        elif reason.check(ProtocolError):
            # A malformed chunked body (400), or a limit: the client's
            # fault, answered with its status.
            error = reason.value
            assert isinstance(error, ProtocolError)
            exchange.bodyFailed(error.statusCode, "bad-request-body")
        else:
            exchange.bodyFailed(400, "request-body-cut")

    def _unregister(self) -> None:
        transport = self.connection.transport
        if transport is not None and self.producer is not None:
            if getattr(transport, "producer", None) is self.producer:
                transport.unregisterProducer()  # type: ignore[attr-defined]

    def stop(self) -> None:
        """No more of the body is wanted (the upstream answered or failed)."""
        self._unregister()
        if self.producer is not None:
            self.producer.stopProducing()


@implementer(IBodyProducer)
class _UpstreamBody:
    """
    The upstream's response body as connserver's ``Response`` wants it: an
    ``IBodyProducer`` whose pausing pauses reading the upstream (a client
    that stops reading stops the upstream read).  While the body flows and
    the client reads, the connection's timer bounds the wait for the next
    upstream byte (nginx's ``proxy_read_timeout``); while the client has
    paused it, connserver's ``sendTimeout`` is the bound.
    """

    def __init__(
        self, exchange: _ProxyExchange, length: int | None, parts: list[bytes]
    ) -> None:
        self.exchange = exchange
        self.length: Any = UNKNOWN_LENGTH if length is None else length
        self._parts: list[bytes] | None = parts
        self._consumer: IConsumer | None = None
        self._done: Deferred[None] | None = None
        self._ended: Failure | bool = False

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._consumer = consumer
        done = self._done = Deferred()
        parts, self._parts = self._parts, None
        for part in parts or ():
            consumer.write(part)
        ended = self._ended
        if ended is True:
            self._finish(None)
        elif ended:
            self._finish(ended)
        elif parts is not None and self.exchange.connection is not None:
            # Held while nobody consumed: read on.
            self.exchange.connection.resumeReading()
        return done

    def pauseProducing(self) -> None:
        connection = self.exchange.connection
        if connection is not None:
            connection.pauseReading()

    def resumeProducing(self) -> None:
        connection = self.exchange.connection
        if connection is not None:
            connection.resumeReading()

    def stopProducing(self) -> None:
        """
        The client went away, or the body is never sent (HEAD, 204, 304,
        the client gone): the upstream connection is dropped unless the
        body already ended (then it went back to the pool).
        """
        self._parts = None
        self._consumer = None
        self._done = None
        self.exchange.abandon()

    # From the exchange

    def data(self, data: bytes) -> None:
        consumer = self._consumer
        if consumer is not None:
            consumer.write(data)
        elif self._parts is not None:
            self._parts.append(data)
            # Nobody consumes yet: hold the upstream (bounded by one read).
            if self.exchange.connection is not None:
                self.exchange.connection.pauseReading()

    def end(self, failure: Failure | None) -> None:
        if self._consumer is None:
            self._ended = failure if failure is not None else True
            return
        self._finish(failure)

    def _finish(self, failure: Failure | None) -> None:
        done, self._done = self._done, None
        if done is None:
            return
        if failure is None:
            done.callback(None)
        else:
            done.errback(failure)


# -- one proxied request ------------------------------------------------------------


class _ProxyExchange:
    """
    One proxied request: the upstream connection it rides, its request
    body, and the Deferred that connserver waits on for the response.  It is
    the connection's ``UpstreamListener``.
    """

    __slots__ = (
        "body",
        "connecting",
        "connection",
        "deferred",
        "done",
        "head",
        "proxy",
        "pump",
        "request",
        "retried",
        "upgrades",
    )

    def __init__(
        self,
        proxy: ReverseProxy,
        request: Request,
        head: bytes,
        upgrades: tuple[bytes, ...],
    ) -> None:
        self.proxy = proxy
        self.request = request
        self.head = head
        #: What connserver waits on (its exchange consumes it directly);
        #: None once fired.
        self.deferred: Deferred[Response] | None = ResponseDeferred(self._cancel)
        self.connection: UpstreamConnection | None = None
        self.connecting: Deferred[UpstreamConnection] | None = None
        self.pump: _RequestBodyPump | None = None
        self.body: _UpstreamBody | None = None
        self.retried = False
        #: What the request offers to switch to (sent upstream), or ().
        self.upgrades = upgrades
        #: The Deferred has fired (or was cancelled).
        self.done = False

    def start(self, fresh: bool = False) -> None:
        pool = self.proxy.pool
        connection = None if fresh else pool.take()
        if connection is not None:
            self._send(connection)
            return
        connecting = self.connecting = pool.connect()
        connecting.addCallbacks(self._connected, self._connectFailed)

    def _connected(self, connection: UpstreamConnection) -> None:
        self.connecting = None
        if self.done:
            connection.close(None)
            return
        self._send(connection)

    def _connectFailed(self, failure: Failure) -> None:
        self.connecting = None
        if self.done:
            return
        if failure.check(ConnectionRefusedError):
            note = "upstream-refused"
        elif failure.check(ConnectError):
            note = "upstream-unreachable"
        else:
            note = "upstream-failed"
        self._log(failure.getErrorMessage() or repr(failure.value))
        self._answer(_textAnswer(502, note))

    def _send(self, connection: UpstreamConnection) -> None:
        self.connection = connection
        request = self.request
        hasBody = request.chunked or bool(request.contentLength)  # (hasBody)
        connection.send(self, request.method, self.head, hasBody, self.upgrades)
        if hasBody and connection.listener is self:
            pump = self.pump = _RequestBodyPump(self, connection)
            request.deliverBody(pump)  # type: ignore[arg-type]

    def _answer(self, response: Response) -> None:
        if not self.done:
            self.done = True
            # Let go of it first: its canceller refers back here, a cycle a
            # Deferred fired without its chain does not break.
            deferred, self.deferred = self.deferred, None
            if deferred is not None:
                deferred.callback(response)

    def _cancel(self, deferred: Deferred[Response]) -> None:
        # The client went away (or the handler timed out): drop everything.
        self.done = True
        self.abandon()

    def abandon(self) -> None:
        """Nobody wants the response any more."""
        connecting, self.connecting = self.connecting, None
        if connecting is not None:
            connecting.cancel()
        self._stopPump()
        connection, self.connection = self.connection, None
        if connection is not None and connection.listener is self:
            connection.abandon()

    def _stopPump(self) -> None:
        pump, self.pump = self.pump, None
        if pump is not None:
            pump.stop()

    def _log(self, why: str) -> None:
        _log.info("upstream {url} failed: {error}", url=self.proxy.url, error=why)

    # -- UpstreamListener ----------------------------------------------------

    def interim(self, head: ResponseHead) -> None:
        # RFC 9110 §15.2: a proxy MUST forward 1xx responses, unless the
        # client is HTTP/1.0 (which knows none); 100 Continue is connserver's
        # own, met on the client's hop.
        if head.status == 100 or self.request.version < (1, 1) or self.done:
            return
        fields = self.proxy._relayedFields(head, interim=True)
        reason = head.reason or None
        self.request.sendInformational(head.status, fields, reason)

    def switched(self, head: ResponseHead, protocol: bytes, early: bytes) -> None:
        """
        The upstream switched to ``protocol``, which the client offered
        (RFC 9110 §7.8): the client gets a 101 with the upstream's
        end-to-end fields, and the two connections are spliced.

        When connserver does not hand the client's connection over, the
        upstream connection is aborted at once (never left to the tunnel's
        idle timeout): the client went away or the handler timed out before
        the 101 arrived (``done``: the client gets nothing more, or its
        503); the server began to drain (the client gets 503, RFC 9110
        §15.6.4, and no new tunnel outlives the drain); or the takeover
        refused the 101 (the client gets connserver's 500) or was never
        reached (the exchange was already answered or closing).
        """
        connection, self.connection = self.connection, None
        assert connection is not None
        if self.done:
            connection.abort()
            return
        proxy = self.proxy
        if self.request.draining:
            # The drain told the connections as it began: a tunnel spliced
            # now would outlive it.
            connection.abort()
            self._answer(_textAnswer(503, "draining"))
            return
        tunnel = Tunnel(
            proxy._reactor,
            connection,
            proxy.tunnelIdleTimeout,
            early,
            proxy.url,
            # TLS cannot half-close here (tunnel.py says why).
            clientHalfCloses=not self.request.isSecure,
        )
        connection.tunnel = tunnel
        fields = proxy._relayedFields(head)
        self._answer(Response.switchProtocols(protocol, tunnel.client, fields))
        # connserver takes a handler's answer as the Deferred fires: by now
        # the takeover has connected the client's side, or it never will.
        tunnel.refused("the client's connection was not handed over")

    def responseComplete(self, head: ResponseHead, body: bytes) -> None:
        self.connection = None
        if self.pump is not None:
            # Answered before the body was all sent: the rest is not wanted.
            self._stopPump()
        # Written to the client with the other answers of this reactor
        # turn (UpstreamPool.afterTurn: one wake-up of the client per turn,
        # not one per answer).
        self.proxy.pool.afterTurn(
            self._answer, self.proxy._relay(head, body, self.request.method)
        )

    def responseStarted(self, head: ResponseHead, body: list[bytes]) -> None:
        producer = self.body = _UpstreamBody(self, head.contentLength, body)
        self._answer(self.proxy._relay(head, producer, self.request.method))

    def bodyData(self, data: bytes) -> None:
        if self.body is not None:
            self.body.data(data)

    def bodyEnd(self) -> None:
        self.connection = None
        self._stopPump()
        if self.body is not None:
            self.body.end(None)

    def upstreamFailed(self, why: str, retryable: bool) -> None:
        self.connection = None
        self._stopPump()
        if self.done and self.body is None:
            return
        if self.body is not None:
            # After the head: the client's response is aborted (never padded).
            if why == "upstream-timeout":
                error: Exception = UpstreamTimeout(
                    f"no upstream byte for {self.proxy.responseTimeout:g} s"
                )
            else:
                error = BodyInterrupted(f"the upstream's body ended early ({why})")
            self.body.end(Failure(error))
            return
        request = self.request
        if (
            retryable
            and not self.retried
            and not request.hasBody
            and request.method in RETRIED_METHODS
        ):
            # The idle-close race seen from this side: once, on a new one.
            self.retried = True
            self.start(fresh=True)
            return
        if why == "upstream-timeout":
            self._answer(_textAnswer(504, why))
        else:
            self._answer(_textAnswer(502, why))

    def bodyFailed(self, status: int, note: str) -> None:
        """The client's request body failed (``status``: what to answer)."""
        self.pump = None
        if self.body is not None:
            self.abandon()
            self.body.end(Failure(BodyInterrupted(f"the request body failed ({note})")))
            return
        self.abandon()
        self._answer(_textAnswer(status, note))


class ReverseProxy:
    """
    A handler that forwards each request to ``url`` and relays the answer.

    ``url`` is ``http://host:port`` or ``https://host:port``.  Without a
    path the request's target goes upstream unchanged (the mount prefix is
    kept, as nginx's ``proxy_pass`` without a URI does); with one (``/`` or
    ``/v2/``), the mount ``prefix`` is replaced by it (``proxy_pass
    http://up/``).  Targets in absolute-form are forwarded in origin-form;
    dot-segments are removed first (RFC 3986 §5.2.4), and a target that
    climbs out of the root or the mount is refused (400), as is an encoded
    ``/`` or ``\\`` unless ``allowEncodedSlashes``.

    In both directions it removes ``Connection``, every field it names, and
    the standard hop-by-hop fields (``Keep-Alive``, ``TE``,
    ``Transfer-Encoding``, ``Trailer``, ``Upgrade``, ``Proxy-Connection``,
    ``Proxy-Authenticate``, ``Proxy-Authorization``), RFC 9110 §7.6.1; then
    it appends ``Via`` (RFC 9110 §7.6.3) both ways, and ``Forwarded`` (RFC
    7239) and ``X-Forwarded-For`` to the request (the client's are replaced
    when they do not parse), and sets ``X-Forwarded-Proto``.  Request fields
    whose names hold ``_`` are dropped unless ``forwardUnderscores``.  The
    client's ``Host`` is kept unless ``rewriteHost``.  The upstream's
    ``Server`` and ``Date`` are replaced by connserver's.  ``TRACE`` is 405
    unless ``allowTrace``; ``Max-Forwards`` is honoured on ``OPTIONS`` and
    ``TRACE`` (RFC 9110 §7.6.2).

    Upstream connections are pooled: at most ``maxPerUpstream`` idle ones,
    each closed after ``upstreamIdleTimeout`` seconds idle, which must be
    shorter than the upstream's own idle timeout.  An upstream that has not
    answered ``responseTimeout`` seconds after the request (its body
    included) was sent gets a 504; one that cannot be reached, fails
    before its response head or sends one that does not parse, a 502; one
    that stalls that long inside its body while the client reads, or breaks
    its framing there, has the client's response aborted.  Neither tells the
    client more than the status: the reason goes to the access log
    (``note=``).

    A client's ``Upgrade`` (WebSocket) is offered upstream unless not
    ``allowUpgrade``; an upstream ``101`` is relayed and the two connections
    are spliced (``tunnel.py``), half-closes passed on both ways, until both
    directions are closed or nothing passes for ``tunnelIdleTimeout``
    seconds (None: no bound).  A ``101`` that arrives while the client's
    connection drains is answered 503 instead: no new tunnel is made then.
    """

    def __init__(
        self,
        url: str | bytes,
        *,
        reactor: IReactorTime | None = None,
        prefix: str | bytes | None = None,
        rewriteHost: bool = False,
        maxPerUpstream: int = 128,
        upstreamIdleTimeout: float = 4.0,
        responseTimeout: float | None = 60.0,
        allowEncodedSlashes: bool = False,
        forwardUnderscores: bool = False,
        allowTrace: bool = False,
        allowUpgrade: bool = True,
        tunnelIdleTimeout: float | None = 300.0,
    ) -> None:
        text = url.decode("ascii") if isinstance(url, bytes) else url
        base, basePath, upstreamHost = parseUpstreamURL(text)
        if maxPerUpstream < 1:
            raise ValueError("maxPerUpstream must be at least 1")
        if upstreamIdleTimeout <= 0:
            raise ValueError("upstreamIdleTimeout must be positive")
        if responseTimeout is not None and responseTimeout <= 0:
            raise ValueError("responseTimeout must be positive or None")
        if tunnelIdleTimeout is not None and not 0 < tunnelIdleTimeout < math.inf:
            raise ValueError("tunnelIdleTimeout must be a positive number or None")
        if reactor is None:
            reactor = defaultReactor()
        assert reactor is not None
        self._reactor = reactor
        #: The upstream's URL, as given.
        self.url = text
        self._base = base
        self._basePath = basePath
        self._upstreamHost = upstreamHost
        rawPrefix = prefix.encode("ascii") if isinstance(prefix, str) else prefix
        #: The mount prefix (without its trailing slash), or None.
        self.prefix = None if rawPrefix is None else rawPrefix.rstrip(b"/")
        self.rewriteHost = rewriteHost
        self.responseTimeout = responseTimeout
        self.allowEncodedSlashes = allowEncodedSlashes
        self.forwardUnderscores = forwardUnderscores
        self.allowTrace = allowTrace
        #: Whether a client's Upgrade (WebSocket) is offered upstream.
        self.allowUpgrade = allowUpgrade
        #: Seconds a tunnel may pass no byte either way (None: no bound).
        self.tunnelIdleTimeout = tunnelIdleTimeout
        self._hopCache: dict[tuple[Any, ...], bytes] = {}
        #: The upstream connections (``close()`` at shutdown).
        self.pool = UpstreamPool(
            reactor,
            _upstreamEndpoint(reactor, text),
            text,
            maxPerUpstream,
            upstreamIdleTimeout,
            responseTimeout,
        )

    @property
    def upstreamIdleTimeout(self) -> float:
        """Seconds an idle upstream connection is kept."""
        return self.pool.idleTimeout

    def close(self) -> Deferred[Any]:
        """Close the idle upstream connections (at shutdown)."""
        return self.pool.close()

    def _bodyLimit(self, request: Request) -> int | None:
        # The connection's --max-body-bytes (ServerConfig.maxBodyBytes).
        limit = request.maxBodyBytes
        return limit

    def __call__(self, request: Request) -> Deferred[Response] | Response:
        # Request.upgrades is () unless Connection names "upgrade" (RFC
        # 9110 §7.8): the common request skips working it out.
        upgrades = (
            self._upgrades(request) if b"upgrade" in request.connectionOptions else ()
        )
        head = self._requestHead(request, upgrades)
        if isinstance(head, Response):
            return head
        exchange = _ProxyExchange(self, request, head, upgrades)
        deferred = exchange.deferred
        assert deferred is not None
        # An upgrade rides a new connection, never a pooled one.
        exchange.start(fresh=bool(upgrades))
        return deferred

    # -- the request ------------------------------------------------------

    def _upstreamTarget(
        self, request: Request
    ) -> tuple[bytes, bytes | None] | Response:
        """
        The origin-form target sent upstream and the authority of an
        absolute-form one, or the refusal.
        """
        target = request.target
        path, sep, query = target.partition(b"?")
        if (
            path[:1] == b"/"
            and b"/." not in path
            and b"%" not in path
            and b"\\" not in path
        ):
            # The common target: origin-form, no dot-segment, nothing
            # encoded (what mayHaveDotSegments and hasEncodedSeparator
            # would find needs a "/." or a "%" or a "\\").
            authority = None
            query = sep + query
        else:
            split = splitTarget(target)
            if split is None:
                # The asterisk or authority form: nothing to forward.
                return _textAnswer(400, "bad-target")
            path, query, authority = split
            if mayHaveDotSegments(path):
                normal = removeDotSegments(path)
                if normal is None:
                    return _textAnswer(400, "dot-segment")
                path = normal
            if not self.allowEncodedSlashes and hasEncodedSeparator(path):
                # One segment here, two at an upstream that decodes first:
                # "/api/..%2fsecret" would leave the mount there.
                return _textAnswer(400, "encoded-slash")
        prefix = self.prefix
        if prefix:
            if not (path == prefix or path.startswith(prefix + b"/")):
                # Dot-segments took it out of the mount.
                return _textAnswer(400, "dot-segment")
            basePath = self._basePath
            if basePath:
                rest = path[len(prefix) :]
                path = basePath.rstrip(b"/") + rest if rest else basePath
        elif self._basePath:
            path = self._basePath.rstrip(b"/") + path
        return path + query, authority

    def _requestHead(
        self, request: Request, upgrades: tuple[bytes, ...] | None = None
    ) -> bytes | Response:
        """
        The request head sent upstream (RFC 9110 §7.6.1, §7.6.2, §7.6.3;
        RFC 7239), or the answer given without the upstream.  ``upgrades``:
        what the request offers to switch to (worked out here if None).
        """
        routed = self._upstreamTarget(request)
        if isinstance(routed, Response):
            return routed
        target, authority = routed
        method = request.method
        maxForwards: bytes | None = None
        if method == b"TRACE" or method == b"OPTIONS" or request.contentLength:
            # (A bodiless GET is never answered here: no Max-Forwards rule,
            # no body over the limit.)
            answer, maxForwards = self._answeredHere(request)
            if answer is not None:
                return answer
        parts = [method, b" ", target, _HTTP11_SUFFIX]
        clientHost, xff, forwarded = self._copyFields(request, parts)
        parts.append(self._hopFields(request, authority or clientHost, xff, forwarded))
        if maxForwards is not None:
            parts.extend((b"Max-Forwards: ", maxForwards, b"\r\n"))
        if upgrades is None:
            upgrades = self._upgrades(request)
        if upgrades:
            # RFC 9110 §7.8: Upgrade is hop-by-hop; this hop offers what the
            # client offered, with its own "upgrade" connection option.
            offered = b", ".join(request.headers.getAll(b"upgrade"))
            parts.extend((b"Upgrade: ", offered, b"\r\nConnection: upgrade\r\n"))
        length = request.contentLength
        if request.chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n\r\n")
        elif length:
            parts.append(b"Content-Length: %d\r\n\r\n" % length)
        else:
            parts.append(b"\r\n")
        return b"".join(parts)

    def _upgrades(self, request: Request) -> tuple[bytes, ...]:
        """What the request offers to switch to, when this route allows it."""
        return request.upgrades if self.allowUpgrade else ()

    def _answeredHere(self, request: Request) -> tuple[Response | None, bytes | None]:
        """
        The answer connserver gives without the upstream (TRACE, OPTIONS at
        ``Max-Forwards: 0``, a body over the limit), or the Max-Forwards to
        send on.
        """
        method = request.method
        maxForwards: bytes | None = None
        if method == b"TRACE" or method == b"OPTIONS":
            if method == b"TRACE" and not self.allowTrace:
                # RFC 9110 §9.3.8: TRACE reflects the request, credentials
                # and all; off unless asked for.
                return _textAnswer(405, "trace", _ALLOW), None
            answer, maxForwards = self._maxForwards(request)
            if answer is not None:
                return answer, None
        limit = self._bodyLimit(request)
        length = request.contentLength
        if limit is not None and length is not None and length > limit:
            # --max-body-bytes, before anything is forwarded (nginx's
            # client_max_body_size).
            return _textAnswer(413, "body-too-large"), None
        return None, maxForwards

    def _copyFields(
        self, request: Request, parts: list[bytes]
    ) -> tuple[bytes | None, list[bytes] | None, list[bytes] | None]:
        """
        The client's end-to-end fields, onto ``parts``; what the client's
        Connection names goes first, then connserver's own forwarding fields
        are added (so that naming one cannot remove them).  Returns the
        client's Host and its X-Forwarded-For and Forwarded lines.
        """
        options = request.connectionOptions
        drop = _NOT_FORWARDED | options if options else _NOT_FORWARDED
        underscores = self.forwardUnderscores
        extend = parts.extend
        xff: list[bytes] | None = None
        forwarded: list[bytes] | None = None
        clientHost: bytes | None = None
        for lower, name, value in request.headers._fields:
            if lower in drop:
                if lower == b"host":
                    clientHost = value
                elif lower == b"x-forwarded-for" and b"x-forwarded-for" not in options:
                    xff = [value] if xff is None else [*xff, value]
                elif lower == b"forwarded" and b"forwarded" not in options:
                    forwarded = [value] if forwarded is None else [*forwarded, value]
                continue
            if not underscores and b"_" in lower:
                # X_Forwarded_Proto is X-Forwarded-Proto to CGI and WSGI:
                # dropped, as nginx's underscores_in_headers off does.
                continue
            extend((name, b": ", value, b"\r\n"))
        return clientHost, xff, forwarded

    def _hopFields(
        self,
        request: Request,
        clientHost: bytes | None,
        xff: list[bytes] | None,
        forwarded: list[bytes] | None,
    ) -> bytes:
        """
        This hop's Host, Via, Forwarded, X-Forwarded-For and -Proto lines;
        ``clientHost``: the Host received (absolute-form's authority
        replaces it, RFC 9112 §3.2.2).  Without a client's Forwarded or
        X-Forwarded-For they depend on a few facts that repeat from request
        to request (the Host, the peer's address, the scheme, the version),
        so they are kept, built, per combination.
        """
        address = _clientAddress(request)
        if xff is None and forwarded is None:
            key = (
                clientHost,
                address,
                request.isSecure,
                request.scheme,
                request.version,
            )
            cache = self._hopCache
            lines = cache.get(key)
            if lines is None:
                lines = self._buildHopFields(request, clientHost, address, None, None)
                if len(cache) >= _HOP_CACHE_SIZE:
                    # Hosts are the client's to vary: a bounded memory.
                    cache.clear()
                cache[key] = lines
            return lines
        return self._buildHopFields(request, clientHost, address, xff, forwarded)

    def _buildHopFields(
        self,
        request: Request,
        clientHost: bytes | None,
        address: str | None,
        xff: list[bytes] | None,
        forwarded: list[bytes] | None,
    ) -> bytes:
        host = self._upstreamHost if self.rewriteHost or not clientHost else clientHost
        node = _forwardedNode(address)
        element = (
            b"for=" + node + (b";proto=https" if request.isSecure else b";proto=http")
        )
        if clientHost:
            element += b";host=" + _quotedIfNeeded(clientHost)
        if forwarded is not None and _forwardedParses(forwarded):
            # The lines received, then this hop's own (RFC 7239 §4: one list).
            element = b"\r\nForwarded: ".join([*forwarded, element])
        peer = (address or "unknown").encode("ascii", "replace")
        if xff is not None and _xffParses(xff):
            peer = b", ".join([*xff, peer])
        major, minor = request.version
        return b"".join(
            (
                b"Host: ",
                host,
                b"\r\nVia: %d.%d %s\r\nForwarded: " % (major, minor, _PSEUDONYM),
                element,
                b"\r\nX-Forwarded-For: ",
                peer,
                # A single value: the scheme the client used, whatever an
                # untrusted client claimed (Request.scheme follows
                # X-Forwarded-Proto and Forwarded only from
                # --trusted-proxies).
                b"\r\nX-Forwarded-Proto: ",
                request.scheme.encode("ascii"),
                b"\r\n",
            )
        )

    def _maxForwards(self, request: Request) -> tuple[Response | None, bytes | None]:
        """
        RFC 9110 §7.6.2: on OPTIONS and TRACE, a ``Max-Forwards`` of 0 is
        answered here; any other is forwarded one less.
        """
        values = request.headers.getAll(b"max-forwards")
        if not values:
            return None, None
        value = values[0].strip()
        if len(values) > 1 or not value.isdigit():
            return _textAnswer(400, "max-forwards"), None
        hops = int(value)
        if hops > 0:
            return None, b"%d" % (hops - 1)
        if request.method == b"OPTIONS":
            return Response(200, [_ALLOW], b"", note="max-forwards"), None
        # TRACE (allowTrace): the request as received, as message/http.
        lines = [
            b"%s %s HTTP/%d.%d\r\n" % (request.method, request.target, *request.version)
        ]
        for name, value in request.headers:
            if name.lower() not in _TRACE_HIDDEN:
                lines.append(name + b": " + value + b"\r\n")
        return (
            Response(
                200,
                [(b"Content-Type", b"message/http")],
                b"".join(lines),
                note="max-forwards",
            ),
            None,
        )

    # -- the response -----------------------------------------------------

    def _relayedFields(
        self, head: ResponseHead, interim: bool = False
    ) -> list[tuple[bytes, bytes]]:
        """The upstream's fields that reach the client (RFC 9110 §7.6.1)."""
        drop = _NOT_RELAYED
        options = responseOptions(head)
        fields = [
            (name, value)
            for lower, name, value in head.headers._fields
            if lower not in drop and lower not in options
        ]
        if not interim:
            fields.append(_VIA_RESPONSE[head.version])
        return fields

    def _relay(
        self, head: ResponseHead, body: bytes | _UpstreamBody, method: bytes
    ) -> Response:
        fields = self._relayedFields(head)
        status = head.status
        length = head.contentLength
        if length is not None and (status == 304 or method == b"HEAD"):
            # RFC 9110 §8.6: HEAD and 304 may carry the length a GET would have.
            fields.append((b"Content-Length", b"%d" % length))
        reason: bytes | None = head.reason
        if reason == _STANDARD_REASONS.get(status):
            reason = None  # connserver's prebuilt status line
        return Response._relayed(status, fields, body, reason or None)


def _textAnswer(code: int, note: str, *fields: tuple[bytes, bytes]) -> Response:
    """
    An answer the proxy gives itself (a refused request, a failed or
    draining upstream): a line of text naming the status; ``note`` goes to
    the access log, never to the client.
    """
    return Response(
        code, [_TEXT, *fields], statusLine(code)[9:].rstrip() + b"\n", note=note
    )


#: Fields a TRACE echo leaves out (RFC 9110 §9.3.8: credentials).
_TRACE_HIDDEN = frozenset({b"authorization", b"proxy-authorization", b"cookie"})

#: The registered reason phrases (an upstream's own is relayed as given).
_STANDARD_REASONS = {code: statusLine(code)[13:-2] for code in range(100, 600)}
