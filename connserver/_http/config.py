"""
``ServerConfig``: every timeout and limit in one frozen, validated object.

Seconds are floats, sizes are bytes, and ``None`` turns a limit off.  Each
field says what it protects against and what peers use, so that an operator
can choose with the same facts we had.  Pure module: nothing here imports
``twisted.internet``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from connserver._http.forwarded import FORWARDED_HEADERS, Network, parseNetworks

__all__ = ["ServerConfig", "configFieldDocs"]

KiB = 1024
MiB = 1024 * KiB


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """The limits and timeouts of a connserver server (see ``docs/config.md``)."""

    idleTimeout: float | None = field(
        default=75.0,
        metadata=_doc(
            "Close a persistent connection that waits this long for its next "
            "request (silently, RFC 9112 §9.5).  Frees sockets held by idle "
            "clients.  nginx keepalive_timeout 75 s, Apache KeepAliveTimeout "
            "5 s, twisted.web 60 s.  Behind a proxy it must be longer than the "
            "proxy's idle timeout towards connserver, or the proxy sends "
            "requests on connections connserver is closing (502s, see "
            "docs/deployment.md): 75 s is above AWS ALB's 60 s and nginx's "
            "upstream keepalive_timeout of 60 s."
        ),
    )
    requestHeadTimeout: float | None = field(
        default=20.0,
        metadata=_doc(
            "Absolute deadline for a request head, from its first byte (from "
            "accept for the first request); trickled bytes do not reset it.  "
            "Defeats slowloris.  Answered with 408 and a close.  nginx "
            "client_header_timeout 60 s, Apache RequestReadTimeout header=20-40."
        ),
    )
    bodyTimeout: float | None = field(
        default=30.0,
        metadata=_doc(
            "Longest pause while reading a request body; progress resets it.  "
            "Defeats slow-body attacks.  408 and a close.  nginx "
            "client_body_timeout 60 s, Apache RequestReadTimeout body=20."
        ),
    )
    sendTimeout: float | None = field(
        default=60.0,
        metadata=_doc(
            "Longest time response bytes may wait in the transport without any "
            "progress (a client that never reads).  Aborts the connection.  "
            "nginx send_timeout 60 s; twisted.web has none."
        ),
    )
    handlerTimeout: float | None = field(
        default=None,
        metadata=_doc(
            "Longest time a handler may take to start its response, from when "
            "it is called; then it is cancelled and the client gets 503 with "
            "Connection: close (or an abort, once response bytes were sent).  "
            "Bounds a handler that hangs on a dead backend.  None (the "
            "default) lets handlers run as long as they need.  gunicorn "
            "--timeout 30 s (kills the worker), uvicorn none, nginx "
            "proxy_read_timeout 60 s for its upstreams."
        ),
    )
    minBodyRate: int | None = field(
        default=None,
        metadata=_doc(
            "Slowest average rate, in bytes a second, at which a client may "
            "send a request body: after bodyTimeout seconds of reading, the "
            "body must have come at least this fast, or the answer is 408 and "
            "a close (close reason body-too-slow).  Defeats a client that "
            "trickles a body just inside bodyTimeout.  None (the default) "
            "checks no rate.  Apache mod_reqtimeout MinRate (body=20,MinRate=500 "
            "by default: 20 s plus 1 s per 500 bytes); nginx has none."
        ),
    )
    abortTimeout: float | None = field(
        default=15.0,
        metadata=_doc(
            "After a clean close was asked, abort the connection if it is not "
            "gone by then.  twisted.web abortTimeout 15 s."
        ),
    )
    lingerTimeout: float | None = field(
        default=5.0,
        metadata=_doc(
            "After the last response byte and the write-side half-close, keep "
            "reading and discarding for up to this long so that a client that "
            "is still sending reads the response instead of a reset (RFC 9112 "
            "§9.6).  nginx lingering_timeout 5 s (lingering_time 30 s)."
        ),
    )
    drainTimeout: float | None = field(
        default=30.0,
        metadata=_doc(
            "On graceful shutdown, how long in-flight responses may take before "
            "what remains is aborted.  gunicorn graceful_timeout 30 s."
        ),
    )
    drainGraceTimeout: float = field(
        default=1.0,
        metadata=_doc(
            "During a drain, an idle connection is closed after this short "
            "window; a request arriving within it is answered with "
            "Connection: close (covers the client that already sent it)."
        ),
    )
    keepAlive: bool = field(
        default=True,
        metadata=_doc(
            "Allow persistent connections.  When off every response carries "
            "Connection: close (RFC 9112 §9.3).  nginx keepalive_timeout 0."
        ),
    )
    keepAliveHint: bool = field(
        default=True,
        metadata=_doc(
            "Send Keep-Alive: timeout=N (idleTimeout in whole seconds, rounded "
            "down) with Connection: keep-alive on HTTP/1.1 keep-alive responses, so "
            "that clients which honour it (Node's fetch, undici) retire an idle "
            "connection before the server closes it, instead of sending a "
            "request into the close (the client side of the idle-close race).  "
            "Never on closing responses, nor with idleTimeout none or under 1 s.  Node.js "
            "sends it by default (timeout=5); nginx keepalive_timeout's second "
            "value."
        ),
    )
    maxRequestsPerConnection: int | None = field(
        default=1000,
        metadata=_doc(
            "Close a connection after this many responses (the last one says "
            "Connection: close).  Spreads load and bounds per-connection state.  "
            "nginx keepalive_requests 1000, Apache MaxKeepAliveRequests 100."
        ),
    )
    maxConnectionAge: float | None = field(
        default=3600.0,
        metadata=_doc(
            "Close a connection, after its current response, once it is this "
            "old.  nginx keepalive_time 1 h."
        ),
    )
    maxConnections: int | None = field(
        default=4096,
        metadata=_doc(
            "At most this many open connections: at the limit, stop accepting; "
            "when a client then waits, close a connection that only lingers "
            "for its peer's FIN, else the longest-idle keep-alive one, to "
            "make room for it (nobody is closed while nobody waits).  "
            "Protects file descriptors and memory.  nginx worker_connections "
            "512-1024."
        ),
    )
    maxPipelinedRequests: int = field(
        default=16,
        metadata=_doc(
            "Requests parsed ahead of the one being answered; past it reading "
            "pauses until the queue drains.  Bounds memory under a pipeline "
            "flood.  (nginx and Apache read one request ahead at a time.)"
        ),
    )
    maxRequestLineBytes: int = field(
        default=8 * KiB,
        metadata=_doc(
            "Longest request line; longer gives 414.  nginx "
            "large_client_header_buffers 8 KiB, Apache LimitRequestLine 8190."
        ),
    )
    maxHeadBytes: int = field(
        default=16 * KiB,
        metadata=_doc(
            "Largest request head (request line and fields); larger gives 431.  "
            "h11 16 KiB, Node.js 16 KiB, Apache 8 KiB per field."
        ),
    )
    maxHeaderCount: int = field(
        default=100,
        metadata=_doc(
            "Most header fields in a request head (and in trailers); more "
            "gives 431.  Apache LimitRequestFields 100, Node.js 2000."
        ),
    )
    allowBareLf: bool = field(
        default=False,
        metadata=_doc(
            "Accept a bare LF (without CR) as the end of the request line, of a "
            "field line, of the head and of trailer lines (RFC 9112 §2.2 MAY).  "
            "Off: such a request gets 400 and a close, because a front end that "
            "forwards a bare LF inside a field value sees one request where a "
            "lenient server sees two (request smuggling).  Node.js llhttp and "
            "twisted.web refuse it; nginx accepts it.  Chunk framing lines "
            "always need CRLF."
        ),
    )
    maxBodyBytes: int | None = field(
        default=1 * MiB,
        metadata=_doc(
            "Largest request body a handler may read whole (and the most the "
            "server drains from an unread body); past it the answer is 413.  "
            "nginx client_max_body_size 1 MiB."
        ),
    )
    serverHeader: str | None = field(
        default="connserver",
        metadata=_doc(
            "The Server header on every response; None (none on the command "
            "line) sends none."
        ),
    )
    hstsMaxAge: int | None = field(
        default=None,
        metadata=_doc(
            "Send Strict-Transport-Security: max-age=SECONDS on every response "
            "over TLS (never over plain TCP, RFC 6797 §7.2), so that browsers "
            "use HTTPS only for the host from then on.  Protects against "
            "SSL-stripping downgrades.  None sends none.  Off by default in "
            "nginx, Apache and twisted.web too; 31536000 (a year) is usual once "
            "HTTPS works everywhere on the host, 0 tells browsers to forget it."
        ),
    )

    trustedProxies: tuple[Network, ...] = field(
        default=(),
        metadata=_doc(
            "Peers (CIDR networks, comma-separated: 10.0.0.0/8,::1) whose "
            "forwarding fields (the family forwardedHeader names) "
            "name the client: the right-most untrusted hop becomes "
            "Request.clientAddress and the forwarded scheme Request.scheme.  From any "
            "other peer these fields are ignored, as they are by default "
            "(empty): anyone can write them.  nginx set_real_ip_from, "
            "gunicorn --forwarded-allow-ips, uvicorn --forwarded-allow-ips."
        ),
    )
    forwardedHeader: str = field(
        default="x-forwarded-for",
        metadata=_doc(
            "Which forwarding fields a trustedProxies peer is believed in: "
            "x-forwarded-for (X-Forwarded-For names the client, the right-most "
            "X-Forwarded-Proto the scheme) or forwarded (RFC 7239 Forwarded, "
            "for= and proto=).  The other family is ignored: a proxy passes "
            "on unchanged the fields it does not write, so a client could "
            "name itself in them.  Set the one your proxy writes.  nginx "
            "real_ip_header X-Forwarded-For."
        ),
    )

    def __post_init__(self) -> None:
        try:
            networks = parseNetworks(self.trustedProxies)
        except ValueError as error:
            raise ValueError(
                f"ServerConfig.trustedProxies must be CIDR networks: {error}"
            ) from None
        # Parsed once, here: the field always holds networks.
        object.__setattr__(self, "trustedProxies", networks)
        if isinstance(self.forwardedHeader, str):
            # Field names are case-insensitive (RFC 9110 §5.1).
            object.__setattr__(
                self, "forwardedHeader", self.forwardedHeader.strip().lower()
            )
        for f in fields(self):
            value = getattr(self, f.name)
            _validate(f.name, value)
        if self.minBodyRate is not None and self.bodyTimeout is None:
            raise ValueError(
                "ServerConfig.minBodyRate needs bodyTimeout (its grace period)"
            )

    def replace(self, **changes: Any) -> ServerConfig:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)


_OPTIONAL_POSITIVE_SECONDS = {
    "idleTimeout",
    "requestHeadTimeout",
    "bodyTimeout",
    "sendTimeout",
    "abortTimeout",
    "lingerTimeout",
    "drainTimeout",
    "maxConnectionAge",
    "handlerTimeout",
}
_OPTIONAL_POSITIVE_INT = {
    "maxRequestsPerConnection",
    "maxConnections",
    "maxBodyBytes",
    "minBodyRate",
}
_POSITIVE_INT = {
    "maxPipelinedRequests",
    "maxRequestLineBytes",
    "maxHeadBytes",
    "maxHeaderCount",
}


def _validate(name: str, value: object) -> None:
    def fail(expected: str) -> None:
        raise ValueError(f"ServerConfig.{name} must be {expected}, not {value!r}")

    if name in _OPTIONAL_POSITIVE_SECONDS:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            fail("a number of seconds or None")
        elif not (0 < value < float("inf")):
            fail("a positive finite number of seconds or None")
    elif name == "drainGraceTimeout":
        if isinstance(value, bool) or not isinstance(value, int | float):
            fail("a number of seconds")
        elif not (0 <= value < float("inf")):
            fail("a non-negative finite number of seconds")
    elif name in _OPTIONAL_POSITIVE_INT:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            fail("a positive whole number or None")
    elif name in _POSITIVE_INT:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            fail("a positive whole number")
    elif name == "hstsMaxAge":
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            fail("a whole number of seconds (0 or more) or None")
    elif name == "forwardedHeader":
        if value not in FORWARDED_HEADERS:
            fail(" or ".join(FORWARDED_HEADERS))
    elif name in ("keepAlive", "keepAliveHint", "allowBareLf"):
        if not isinstance(value, bool):
            fail("True or False")
    elif name == "serverHeader":
        if value is not None and (
            not isinstance(value, str)
            or not value.isascii()
            or not value.isprintable()
            or not value.strip()
        ):
            fail("printable ASCII text or None")


def configFieldDocs() -> dict[str, str]:
    """Each field's documentation, keyed by field name (for the CLI and docs)."""
    return {f.name: f.metadata["doc"] for f in fields(ServerConfig)}
