"""
``PersistencePolicy``: the one owner of close-after-response.

It is asked at response time, when every input is known (RFC 9112 §9.3 and
§9.6), and it is pure: the same inputs always give the same decision.
``HTTPServerProtocol`` never reads ``Connection`` itself.  Pure module:
nothing here imports ``twisted.internet``.
"""

from __future__ import annotations

from dataclasses import dataclass

from connserver._http.config import ServerConfig

__all__ = [
    "CLOSE_REASONS",
    "PersistenceDecision",
    "PersistencePolicy",
    "keepAliveTimeout",
]

#: Every reason the policy can give for closing, with what it means.
#: The access log and the status counters show these strings; they are stable.
CLOSE_REASONS: dict[str, str] = {
    "client-close": "the request carried the close connection option",
    "handler-close": "the handler's response carried Connection: close",
    "keepalive-disabled": "the server is configured without persistence",
    "max-requests": "maxRequestsPerConnection responses were sent",
    "max-age": "the connection reached maxConnectionAge",
    "draining": "the server is shutting down gracefully",
    "unread-body": "the request body was neither read nor drainable",
    "unsafe-framing": "a framing or protocol error made the connection unsafe",
    "unknown-length-http10": "HTTP/1.0 keep-alive asked, but the response length is unknown",
    "http10-default": "HTTP/1.0 without the keep-alive option",
}

#: Every other reason a connection closes for, set by the protocol and the
#: factory (timers, errors, the peer).  With :data:`CLOSE_REASONS` these are
#: all the values of ``closeReason`` and of the ``close=`` log field.
CONNECTION_CLOSE_REASONS: dict[str, str] = {
    **CLOSE_REASONS,
    "protocol-error": "a bad request was answered with a 4xx or 5xx",
    "handler-error": "the handler failed: 500",
    "response-error": "a response body did not match its framing: aborted",
    "header-timeout": "requestHeadTimeout: no complete request head in time",
    "body-timeout": "bodyTimeout: the request body stalled",
    "body-too-slow": "minBodyRate: the request body came slower than the minimum rate",
    "handler-timeout": "handlerTimeout: the handler did not start its response in time (503)",
    "send-timeout": "sendTimeout: the client stopped reading",
    "idle-timeout": "idleTimeout: no next request in time",
    "peer-closed": "the client closed (or half-closed) the connection first",
    "peer-reset": "the connection was reset or lost",
    "tls-error": "the TLS handshake failed (no protocol, version or cipher in common) or a TLS record was bad",
    "max-connections": "an idle connection closed to make room under maxConnections",
    "drain-timeout": "still open at the drain deadline: aborted",
    "aborted": "the transport was aborted outside connserver's own decisions (an embedding application's abortConnection)",
    "refused": "accepted over maxConnections with nothing idle to shed (503), or while draining",
    "upgraded": "switched protocols (101), and the new protocol's connection ended cleanly",
}

_CLOSE = b"close"
_KEEP_ALIVE = b"keep-alive"


@dataclass(frozen=True, slots=True)
class PersistenceDecision:
    """
    What to do with the connection after one response.

    ``connectionHeader`` and ``keepAliveHeader`` are the values to send (or
    ``None`` to send no such field); ``reason`` says why: a key of
    :data:`CLOSE_REASONS` when closing, else ``"http11-default"`` or
    ``"http10-keep-alive"``.
    """

    keepAlive: bool
    connectionHeader: bytes | None
    keepAliveHeader: bytes | None
    reason: str


def _close(reason: str) -> PersistenceDecision:
    # RFC 9112 §9.6: a server that closes SHOULD say so with "close"; we say
    # it on every closing response, as nginx does, so that no client (or
    # intermediary) has to infer the close from the version.
    return PersistenceDecision(False, _CLOSE, None, reason)


_CLOSE_DECISIONS = {reason: _close(reason) for reason in CLOSE_REASONS}
_KEEP_11 = PersistenceDecision(True, None, None, "http11-default")


def keepAliveTimeout(idleTimeout: float | None) -> int | None:
    """
    The ``timeout=`` a ``Keep-Alive`` field advertises for ``idleTimeout``:
    whole seconds rounded down, so that a client never counts on more time
    than the server gives.  None (advertise nothing) without an idle timeout
    or under one second: ``timeout=0`` would read as "do not reuse", and
    ``timeout=1`` would promise more than the server gives.
    """
    if idleTimeout is None or idleTimeout < 1:
        return None
    return int(idleTimeout)


def _keep11(config: ServerConfig) -> PersistenceDecision:
    """
    The one HTTP/1.1 keep-alive decision of a policy, built once.

    With ``keepAliveHint`` and an idle timeout, the response advertises the
    timeout (``Keep-Alive``, RFC 9110 §7.6.1 lists it in ``Connection`` as
    a connection-specific field), as Node.js does by default: a client such
    as undici then retires an idle connection before the server's idle
    close, and never sends a request into it (the idle-close race).
    """
    timeout = keepAliveTimeout(config.idleTimeout)
    if not config.keepAliveHint or timeout is None:
        return _KEEP_11
    hint = b"timeout=%d" % timeout
    return PersistenceDecision(True, _KEEP_ALIVE, hint, "http11-default")


class PersistencePolicy:
    """
    Decides keep-alive or close from the request version, the ``Connection``
    options of the request and of the response, the response framing and the
    connection's budget.  One instance serves every connection of a factory.
    """

    __slots__ = ("_config", "_keep11", "_keepAlive10")

    def __init__(self, config: ServerConfig) -> None:
        self._config = config
        self._keep11 = _keep11(config)
        # The HTTP/1.0 Keep-Alive value depends only on the remaining request
        # budget, so the common cases are built once.
        self._keepAlive10: dict[int | None, PersistenceDecision] = {}

    def decide(
        self,
        version: tuple[int, int],
        requestOptions: frozenset[bytes],
        responseOptions: frozenset[bytes] = frozenset(),
        responseLengthKnown: bool = True,
        requestsServed: int = 1,
        connectionAge: float = 0.0,
        draining: bool = False,
        requestBodyConsumable: bool = True,
        framingSafe: bool = True,
    ) -> PersistenceDecision:
        """
        Decide after the response to one request.  (The arguments may be
        passed by position, in this order, as the server does per response.)

        :param version: the request's HTTP version, ``(1, 0)`` or ``(1, 1)``.
        :param requestOptions: the lowercased tokens of every ``Connection``
            line of the request (``connectionOptions``).
        :param responseOptions: the same for the handler's response.
        :param responseLengthKnown: the response is self-delimiting without
            chunked coding (Content-Length, or a response with no body).
        :param requestsServed: responses on this connection, this one included.
        :param connectionAge: seconds since the connection was accepted.
        :param draining: the server is shutting down gracefully.
        :param requestBodyConsumable: the request body was fully read, or
            what remains of it can be read and discarded within limits.
        :param framingSafe: no framing or protocol error happened; after one,
            the next request's start cannot be trusted.
        """
        config = self._config
        # RFC 9112 §9.3: 'If the "close" connection option is present, the
        # connection will not persist after the current response'.  §9.6: a
        # server that sends close must close too.
        if _CLOSE in requestOptions:
            return _CLOSE_DECISIONS["client-close"]
        if _CLOSE in responseOptions:
            return _CLOSE_DECISIONS["handler-close"]
        if not config.keepAlive:
            return _CLOSE_DECISIONS["keepalive-disabled"]
        maxRequests = config.maxRequestsPerConnection
        if maxRequests is not None and requestsServed >= maxRequests:
            return _CLOSE_DECISIONS["max-requests"]
        maxAge = config.maxConnectionAge
        if maxAge is not None and connectionAge >= maxAge:
            return _CLOSE_DECISIONS["max-age"]
        if draining:
            return _CLOSE_DECISIONS["draining"]
        # RFC 9112 §9.3: a server MUST read the entire request body or close
        # the connection after sending its response.
        if not requestBodyConsumable:
            return _CLOSE_DECISIONS["unread-body"]
        if not framingSafe:
            return _CLOSE_DECISIONS["unsafe-framing"]
        if version >= (1, 1):
            # RFC 9112 §9.3: HTTP/1.1 persists unless told otherwise; a
            # response of unknown length is chunked, so it still delimits.
            return self._keep11
        return self._decideHttp10(requestOptions, responseLengthKnown, requestsServed)

    def _decideHttp10(
        self,
        requestOptions: frozenset[bytes],
        responseLengthKnown: bool,
        requestsServed: int,
    ) -> PersistenceDecision:
        """
        The end of :meth:`decide` for an HTTP/1.0 request that nothing else
        closes, kept apart because HTTP/1.1 is the common case.
        """
        # HTTP/1.0: persistent only when asked with "keep-alive" (RFC 9112
        # §9.3, and Appendix C.2.2) and when the response has a length.
        if _KEEP_ALIVE not in requestOptions:
            return _CLOSE_DECISIONS["http10-default"]
        if not responseLengthKnown:
            return _CLOSE_DECISIONS["unknown-length-http10"]
        maxRequests = self._config.maxRequestsPerConnection
        remaining = None if maxRequests is None else maxRequests - requestsServed
        decision = self._keepAlive10.get(remaining)
        if decision is None:
            decision = self._newKeepAlive10(remaining)
        return decision

    def _newKeepAlive10(self, remaining: int | None) -> PersistenceDecision:
        """
        Build and remember the HTTP/1.0 keep-alive decision for a remaining
        request budget, so that each budget's ``Keep-Alive`` value is made once.
        """
        parts = []
        timeout = keepAliveTimeout(self._config.idleTimeout)
        if timeout is not None:
            parts.append(b"timeout=%d" % timeout)
        if remaining is not None:
            parts.append(b"max=%d" % remaining)
        keepAliveHeader = b", ".join(parts) if parts else None
        decision = PersistenceDecision(
            True, _KEEP_ALIVE, keepAliveHeader, "http10-keep-alive"
        )
        self._keepAlive10[remaining] = decision
        return decision
