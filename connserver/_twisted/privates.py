"""
Every read or write of a private name of Twisted, but the TCP transport's.

connserver reaches past Twisted's public API in a few places, for speed
(``twisted.web``'s header internals) or because no public way exists (an
endpoint's address, an adopted port's shutdown).  Each such access is here, as a small function: the
private name is looked up once, at import, and when a future Twisted no
longer has it the function falls back on public behaviour (slower, or
missing one refinement, never wrong) and says so in its docstring.
``tests/test_privates.py`` checks that each name still exists in the
installed Twisted, and that each fallback behaves as the private does: run
it before raising the bound on ``twisted`` in ``pyproject.toml``.

The TCP transport's private attributes (write buffers, disconnect flags)
are read by ``connserver._twisted.writethrough``, which checks them once
per transport class in the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web import http_headers, resource

__all__ = [
    "HAS_ADOPTED_PORT_SHUTDOWN",
    "HAS_ENCODING_RESOURCE",
    "HAS_NAME_ENCODER",
    "HAS_RAW_HEADERS",
    "HAS_SANITIZER",
    "HAS_TCP_ENDPOINT_ADDRESS",
    "encodeHeaderName",
    "encoderFor",
    "keepSharedSocketOnStop",
    "rawHeaders",
    "sanitizeFieldValue",
    "tcpEndpointAddress",
]

# -- twisted.web.http_headers ---------------------------------------------

_CASE_MAPPINGS = {
    b"Content-Md5": b"Content-MD5",
    b"Dnt": b"DNT",
    b"Etag": b"ETag",
    b"P3p": b"P3P",
    b"Te": b"TE",
    b"Www-Authenticate": b"WWW-Authenticate",
    b"X-Xss-Protection": b"X-XSS-Protection",
}
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")


def _encodeHeaderNameFallback(name: str | bytes) -> bytes:
    """What ``http_headers._nameEncoder.encode`` does, with public means."""
    raw = name.encode("iso-8859-1") if isinstance(name, str) else name
    if not _TOKEN.match(raw):
        raise ValueError(f"invalid header field name {raw!r}")
    result = b"-".join(word.capitalize() for word in raw.split(b"-"))
    return _CASE_MAPPINGS.get(result, result)


_nameEncoder = getattr(http_headers, "_nameEncoder", None)
#: ``twisted.web.http_headers._nameEncoder`` is there.
HAS_NAME_ENCODER = callable(getattr(_nameEncoder, "encode", None))

#: A field name as ``twisted.web``'s ``Headers`` keys it (bytes, in
#: Header-Case): ``http_headers._nameEncoder.encode``, which caches the
#: names it saw.  Without it, the same canonical form computed each time.
encodeHeaderName: Callable[[str | bytes], bytes] = (
    _nameEncoder.encode if HAS_NAME_ENCODER else _encodeHeaderNameFallback  # type: ignore[union-attr]
)


def _sanitizeFallback(value: bytes) -> bytes:
    """What ``http_headers._sanitizeLinearWhitespace`` does."""
    return b" ".join(value.splitlines())


_sanitizer = getattr(http_headers, "_sanitizeLinearWhitespace", None)
#: ``twisted.web.http_headers._sanitizeLinearWhitespace`` is there.
HAS_SANITIZER = callable(_sanitizer)

#: A field value as ``Headers`` stores it, CR, LF and CRLF made spaces:
#: ``http_headers._sanitizeLinearWhitespace``; without it, the same
#: one-line expression.
sanitizeFieldValue: Callable[[bytes], bytes] = (
    _sanitizer if HAS_SANITIZER else _sanitizeFallback  # type: ignore[assignment]
)

#: ``Headers`` instances keep their fields in a ``_rawHeaders`` dict.
HAS_RAW_HEADERS = isinstance(getattr(http_headers.Headers(), "_rawHeaders", None), dict)


def rawHeaders(headers: http_headers.Headers) -> dict[bytes, list[bytes]] | None:
    """
    The dict a plain ``twisted.web`` ``Headers`` keeps its fields in
    (``Headers._rawHeaders``: Header-Case name to list of values), to read
    and write them without a method call per field; None for a subclass,
    or when Twisted no longer has it: then the caller uses
    ``getAllRawHeaders`` and ``setRawHeaders``.
    """
    if not HAS_RAW_HEADERS or type(headers) is not http_headers.Headers:
        return None
    raw: dict[bytes, list[bytes]] = headers._rawHeaders
    return raw


# -- twisted.web.resource -------------------------------------------------

_IEncodingResource: Any = getattr(resource, "_IEncodingResource", None)
#: ``twisted.web.resource._IEncodingResource`` is there.
HAS_ENCODING_RESOURCE = _IEncodingResource is not None


def encoderFor(resrc: object, request: object) -> Any:
    """
    The response encoder (gzip) an ``EncodingResourceWrapper`` chooses for
    ``request``, as ``server.Request.render`` asks it through the private
    ``resource._IEncodingResource``; None when ``resrc`` encodes nothing.
    Without the interface, any resource with a ``getEncoder`` is asked.
    """
    if HAS_ENCODING_RESOURCE:
        if not _IEncodingResource.providedBy(resrc):
            return None
    elif not callable(getattr(resrc, "getEncoder", None)):
        return None
    return resrc.getEncoder(request)  # type: ignore[attr-defined]


# -- twisted.internet -----------------------------------------------------

_ENDPOINT_ADDRESS = ("_interface", "_port", "_backlog")
#: ``TCP4ServerEndpoint`` (and ``TCP6ServerEndpoint``) store their address
#: as ``_interface``, ``_port`` and ``_backlog``.
HAS_TCP_ENDPOINT_ADDRESS = all(
    hasattr(TCP4ServerEndpoint(None, 0), name)  # type: ignore[no-untyped-call]
    for name in _ENDPOINT_ADDRESS
)


def tcpEndpointAddress(endpoint: TCP4ServerEndpoint) -> tuple[str, int, int] | None:
    """
    (interface, port, backlog) of a TCP server endpoint, from its private
    ``_interface``, ``_port`` and ``_backlog``; None without them, and then
    ``--reuse-port`` shares that listener's socket as it does a non-TCP one.
    """
    if not HAS_TCP_ENDPOINT_ADDRESS:
        return None
    return (endpoint._interface, endpoint._port, endpoint._backlog)


#: ``tcp.Port`` (and so ``unix.Port``) calls ``shutdown(2)`` on close only
#: when its ``_shouldShutdown`` is true.
HAS_ADOPTED_PORT_SHUTDOWN = isinstance(getattr(tcp.Port, "_shouldShutdown", None), bool)


def keepSharedSocketOnStop(port: Any) -> None:
    """
    Make an adopted listening ``unix.Port`` close only this process's
    descriptor when it stops: its private ``_shouldShutdown`` turned off
    (``shutdown(2)`` would stop the socket listening in every process), and
    ``tcp.Port.connectionLost`` instead of the unix one (which unlinks the
    socket's path).  Without ``_shouldShutdown``, the path is still kept,
    but stopping the port may shut the shared socket down.
    """
    if HAS_ADOPTED_PORT_SHUTDOWN:
        port._shouldShutdown = False
    port.connectionLost = lambda reason: tcp.Port.connectionLost(port, reason)  # type: ignore[no-untyped-call]
