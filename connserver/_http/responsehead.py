"""
Response heads: the status line and header fields a response goes out with.

``HeadBuilder`` turns a handler's status and fields into wire lines once per
response, in two steps around the persistence decision (which needs the
framing this module chooses):

1. :meth:`HeadBuilder.prepare`: the status line, ``Date``, ``Server``,
   ``Strict-Transport-Security`` on TLS, the handler's fields (validated,
   RFC 9110 §5.5), and the framing fields (RFC 9112 §6).  Fields the server
   owns are taken out of the handler's hands: ``Connection`` (its options
   go to the policy), ``Keep-Alive``, ``Transfer-Encoding`` and
   ``Content-Length`` (checked against the body).
2. :func:`finishHead`: the policy's ``Connection`` and ``Keep-Alive`` lines
   and the empty line.

One builder serves a factory.  It keeps a bounded cache of validated field
lines, because handlers repeat the same ``Content-Type`` and
``Cache-Control`` values; per-response values (ETags, cookies) pass through
it and are evicted first-in first-out, so they cannot crowd out the common
lines for good.

Pure module: nothing here imports ``twisted.internet``; it is tested without
a transport.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from connserver._http.errors import ResponseFramingError
from connserver._http.framing import (
    BodyFraming,
    chooseFraming,
    framingHeaders,
    responseMayHaveBody,
    statusLine,
    validateResponseField,
)
from connserver._http.headers import splitList
from connserver._http.persistence import PersistenceDecision

__all__ = ["FIELD_CACHE_SIZE", "HeadBuilder", "PreparedHead", "finishHead"]

#: Validated field lines kept per factory.
FIELD_CACHE_SIZE = 1024

_CRLF = b"\r\n"
_HEADER_SEP = b": "
_NO_OPTIONS: frozenset[bytes] = frozenset()
# Fields the server computes itself (RFC 9110 §7.6.1: hop-by-hop fields belong
# to the connection, which the server owns; RFC 9112 §6: framing is ours).
_SERVER_OWNED = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"content-length"}
)
# Fields whose presence changes what the server adds: looked at every time.
_NOT_CACHED = frozenset({b"server", b"date", b"upgrade"})
# RFC 9110 §7.8: "A sender of Upgrade MUST also send an 'upgrade' connection
# option in the Connection header field" (a 426, or a 200 advertising one).
_UPGRADE_OPTION = frozenset({b"upgrade"})
# The options the persistence policy answers itself.
_POLICY_OPTIONS = frozenset({b"close", b"keep-alive"})

#: ``(lines, framing, length, responseOptions)``: a head before the
#: persistence decision; ``lines`` lacks Connection, Keep-Alive and the end.
PreparedHead = tuple[list[bytes], BodyFraming, int | None, frozenset[bytes]]


def _latin1(text: str) -> bytes:
    return text.encode("latin-1")


class HeadBuilder:
    """
    Builds response heads for one factory: prebuilt ``Server`` and
    ``Strict-Transport-Security`` lines, and a bounded cache of validated
    handler field lines.
    """

    __slots__ = ("_cache", "_cacheSize", "hstsLine", "serverLine")

    def __init__(
        self,
        serverLine: bytes = b"",
        hstsLine: bytes = b"",
        cacheSize: int = FIELD_CACHE_SIZE,
    ) -> None:
        #: ``Server: ...`` CRLF, or empty.
        self.serverLine = serverLine
        #: ``Strict-Transport-Security: ...`` CRLF (sent over TLS only), or empty.
        self.hstsLine = hstsLine
        self._cache: dict[tuple[Any, Any], bytes] = {}
        self._cacheSize = cacheSize

    @property
    def cachedLines(self) -> int:
        """How many validated field lines the cache holds (for tests)."""
        return len(self._cache)

    def prepare(
        self,
        method: bytes,
        version: tuple[int, int],
        code: int,
        reason: bytes | None,
        fields: Iterable[tuple[bytes | str, bytes | str]],
        bodyLength: int | None,
        dateLine: bytes,
        secure: bool,
    ) -> PreparedHead:
        """
        Every line of the head but Connection and Keep-Alive, the framing
        and the body length it announces, and the handler's Connection
        options.  Raises ``ResponseFramingError`` or ``ValueError`` for a
        response that cannot be sent as given.
        """
        if code < 200:
            raise ValueError("a handler's final response cannot be 1xx")
        lines = [statusLine(code, reason), dateLine, self.serverLine]
        if secure and self.hstsLine:
            lines.append(self.hstsLine)
        handlerLength: bytes | None = None
        responseOptions = _NO_OPTIONS
        cache = self._cache
        for name, value in fields:
            line = cache.get((name, value))
            if line is not None:
                lines.append(line)
                continue
            nameBytes = name if isinstance(name, bytes) else _latin1(name)
            valueBytes = value if isinstance(value, bytes) else _latin1(value)
            lowered = nameBytes.lower()
            if lowered in _SERVER_OWNED:
                if lowered == b"content-length":
                    handlerLength = valueBytes
                elif lowered == b"connection":
                    responseOptions = responseOptions | frozenset(
                        token.lower() for token in splitList([valueBytes])
                    )
                continue
            validateResponseField(nameBytes, valueBytes)
            line = nameBytes + _HEADER_SEP + valueBytes + _CRLF
            if lowered not in _NOT_CACHED:
                self._remember((name, value), line)
            elif lowered == b"upgrade":
                responseOptions = responseOptions | _UPGRADE_OPTION
            else:
                # The handler's own Server or Date replaces the server's.
                lines[1 if lowered == b"date" else 2] = b""
            lines.append(line)
        framing, length = _frame(method, version, code, handlerLength, bodyLength)
        if length is not None and framing is _FR_CONTENT_LENGTH:
            lines.append(b"Content-Length: %d\r\n" % length)
        else:
            for name, value in framingHeaders(framing, method, code, length):
                lines.append(name + _HEADER_SEP + value + _CRLF)
        return lines, framing, length, responseOptions

    def _remember(self, key: tuple[Any, Any], line: bytes) -> None:
        cache = self._cache
        if len(cache) >= self._cacheSize:
            # First in, first out: a burst of one-off values (ETags, cookies)
            # passes through instead of filling it for good.
            del cache[next(iter(cache))]
        cache[key] = line


def _frame(
    method: bytes,
    version: tuple[int, int],
    code: int,
    handlerLength: bytes | None,
    bodyLength: int | None,
) -> tuple[BodyFraming, int | None]:
    """The framing of a response and the length it announces (RFC 9112 §6.3)."""
    declared: int | None = None
    if handlerLength is not None:
        if not handlerLength.isdigit():
            raise ResponseFramingError("invalid Content-Length from handler")
        declared = int(handlerLength)
    if not responseMayHaveBody(method, code):
        # HEAD, 204, 304 (RFC 9110 §8.6): nothing is sent after the head.  A
        # HEAD or 304 may carry the length a GET / 200 would have: the
        # handler's Content-Length if it gave one, else the length of the
        # body it produced, and none for an empty body (which may only mean
        # "not produced": a wrong length is worse than none).
        return _FR_NONE, declared if declared is not None else (bodyLength or None)
    if declared is not None:
        if bodyLength is None:
            bodyLength = declared
        elif bodyLength != declared:
            raise ResponseFramingError(
                f"Content-Length {declared} contradicts a body of {bodyLength} bytes"
            )
    if bodyLength is not None:
        return _FR_CONTENT_LENGTH, bodyLength
    return chooseFraming(method, version, code, None), None


def finishHead(
    lines: list[bytes],
    decision: PersistenceDecision,
    responseOptions: frozenset[bytes] = _NO_OPTIONS,
) -> bytes:
    """
    The whole head: ``lines``, the policy's fields, the empty line.  The
    ``Connection`` line is the policy's ``close`` or ``keep-alive`` followed
    by the handler's other options (``responseOptions``, as ``prepare``
    gave them): they name the handler's fields that belong to this
    connection only (RFC 9110 §7.6.1), and ``upgrade`` goes with an
    ``Upgrade`` field (§7.8).
    """
    connection = decision.connectionHeader
    if responseOptions:
        extra = sorted(responseOptions - _POLICY_OPTIONS)
        if extra:
            if connection is not None:
                extra.insert(0, connection)
            connection = b", ".join(extra)
    if connection is not None:
        lines.append(b"Connection: " + connection + _CRLF)
    if decision.keepAliveHeader is not None:
        lines.append(b"Keep-Alive: " + decision.keepAliveHeader + _CRLF)
    lines.append(_CRLF)
    return b"".join(lines)


# Enum members as module globals: looking a member up on its Enum class
# costs a descriptor call (about 70 ns), and the request path reads these
# several times per request.
_FR_CONTENT_LENGTH = BodyFraming.CONTENT_LENGTH
_FR_NONE = BodyFraming.NONE
