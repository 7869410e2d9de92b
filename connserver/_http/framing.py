"""
Response framing: which framing a response gets, the fields that announce
it, and writers that turn body data into wire bytes.

Sans-IO like h11's ``_writers``: every writer returns the bytes to send and
raises :class:`~connserver._http.errors.ResponseFramingError` when the body
disagrees with the framing already announced, because at that point the only
safe answer is to close the connection (RFC 9112 §6.3).

Pure module: nothing here imports twisted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import Enum
from typing import Protocol

from connserver._http.errors import ResponseFramingError
from connserver._http.headers import TOKEN_RE, Headers

__all__ = [
    "BodyFraming",
    "BodyWriter",
    "ChunkedWriter",
    "CloseDelimitedWriter",
    "ContentLengthWriter",
    "NoBodyWriter",
    "chooseFraming",
    "encodeHeaderBlock",
    "framingHeaders",
    "makeWriter",
    "responseMayHaveBody",
    "statusLine",
    "validateResponseField",
]


class BodyFraming(Enum):
    """How the end of a response body is found by the client (RFC 9112 §6.3)."""

    NONE = "none"  # the response ends with its header section
    CONTENT_LENGTH = "content-length"
    CHUNKED = "chunked"
    CLOSE_DELIMITED = "close-delimited"  # the body ends when the connection does


def responseMayHaveBody(method: bytes, status: int) -> bool:
    """
    False when the response ends with its header section whatever it says.

    RFC 9112 §6.3 ¶1: responses to HEAD (RFC 9110 §9.3.2), and 1xx
    (§15.2), 204 (§15.3.5) and 304 (§15.4.5) responses have no content.
    A 2xx to CONNECT (RFC 9112 §6.3 ¶2) turns the connection into a tunnel,
    so it has no framed body either.
    """
    if method == b"HEAD" or status < 200 or status == 204 or status == 304:
        return False
    return not (method == b"CONNECT" and 200 <= status < 300)


def chooseFraming(
    method: bytes, version: tuple[int, int], status: int, contentLength: int | None
) -> BodyFraming:
    """
    The framing for a response to a ``version`` request.

    A known length is sent as Content-Length (RFC 9110 §8.6: an origin
    SHOULD send it when the size is known).  Otherwise HTTP/1.1 gets chunked
    (RFC 9112 §7.1), and HTTP/1.0 gets a close-delimited body (RFC 9112 §6.3
    ¶8), because a server MUST NOT send Transfer-Encoding in a response to a
    request below HTTP/1.1 (RFC 9112 §6.1).
    """
    if not responseMayHaveBody(method, status):
        return _FR_NONE
    if contentLength is not None:
        return _FR_CONTENT_LENGTH
    if version >= (1, 1):
        return _FR_CHUNKED
    return _FR_CLOSE_DELIMITED


def framingHeaders(
    framing: BodyFraming, method: bytes, status: int, contentLength: int | None
) -> list[tuple[bytes, bytes]]:
    """
    The framing fields to send with ``framing``, never both Content-Length
    and Transfer-Encoding (RFC 9112 §6.2: a sender MUST NOT).

    With no body, HEAD and 304 responses may still carry the Content-Length a
    GET / 200 would have had (RFC 9110 §8.6), and get it when it is known;
    1xx and 204 responses MUST NOT carry one, nor a 2xx to CONNECT.
    """
    if framing is _FR_CONTENT_LENGTH:
        if contentLength is None or contentLength < 0:
            raise ValueError("Content-Length framing needs a non-negative length")
        return [(b"Content-Length", b"%d" % contentLength)]
    if framing is _FR_CHUNKED:
        return [(b"Transfer-Encoding", b"chunked")]
    if framing is _FR_NONE and contentLength is not None:
        if status < 200 or status == 204:
            return []
        if method == b"CONNECT" and 200 <= status < 300:
            return []
        if method == b"HEAD" or status == 304:
            if contentLength < 0:
                raise ValueError("Content-Length must not be negative")
            return [(b"Content-Length", b"%d" % contentLength)]
    return []


class BodyWriter(Protocol):
    """Turns body data into wire bytes under one framing."""

    def write(self, data: bytes) -> bytes:
        """The wire bytes for ``data``."""
        ...

    def finish(self, trailers: Headers | None = None) -> bytes:
        """The wire bytes that end the body."""
        ...


class ContentLengthWriter:
    """
    Passes data through, checking it adds up to the declared length: a
    sender MUST NOT send more or fewer bytes than it declared, since the
    client would misread the next response (RFC 9112 §6.3 ¶5, RFC 9110 §8.6).
    """

    __slots__ = ("_finished", "_remaining")

    def __init__(self, length: int) -> None:
        if length < 0:
            raise ValueError("Content-Length must not be negative")
        self._remaining = length
        self._finished = False

    @property
    def remaining(self) -> int:
        """Bytes still owed to the client."""
        return self._remaining

    def write(self, data: bytes) -> bytes:
        if self._finished:
            raise ResponseFramingError("write after the end of the body")
        size = len(data)
        if size > self._remaining:
            raise ResponseFramingError(
                f"body exceeds its Content-Length by {size - self._remaining} bytes"
            )
        self._remaining -= size
        return data

    def account(self, size: int) -> None:
        """
        Count ``size`` body bytes that reached the client another way (the
        kernel's ``sendfile``), with the same check as :meth:`write`.
        """
        if self._finished:
            raise ResponseFramingError("write after the end of the body")
        if size > self._remaining:
            raise ResponseFramingError(
                f"body exceeds its Content-Length by {size - self._remaining} bytes"
            )
        self._remaining -= size

    def finish(self, trailers: Headers | None = None) -> bytes:
        """End the body; trailers cannot be sent without chunked, so are dropped."""
        if self._finished:
            raise ResponseFramingError("body finished twice")
        if self._remaining:
            raise ResponseFramingError(
                f"body ended {self._remaining} bytes short of its Content-Length"
            )
        self._finished = True
        return b""


class ChunkedWriter:
    """
    The chunked transfer coding (RFC 9112 §7.1): one chunk per non-empty
    write (an empty chunk would be the last-chunk), then ``0``, the trailer
    section and the final CRLF.
    """

    __slots__ = ("_finished",)

    def __init__(self) -> None:
        self._finished = False

    def write(self, data: bytes) -> bytes:
        if self._finished:
            raise ResponseFramingError("write after the end of the body")
        if not data:
            return b""
        return b"%x\r\n%b\r\n" % (len(data), data)

    def finish(self, trailers: Headers | None = None) -> bytes:
        """
        The last-chunk and trailer section (RFC 9112 §7.1.2).  Trailer
        fields are validated like header fields, since a CR or LF in one
        would split the message.
        """
        if self._finished:
            raise ResponseFramingError("body finished twice")
        self._finished = True
        if not trailers:
            return b"0\r\n\r\n"
        lines = [b"0\r\n"]
        for name, value in trailers:
            validateResponseField(name, value)
            lines.append(name + b": " + value + b"\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)


class CloseDelimitedWriter:
    """
    Passes data through: the body ends when the server closes the
    connection (RFC 9112 §6.3 ¶8), which the protocol must then do.
    """

    __slots__ = ("_finished",)

    def __init__(self) -> None:
        self._finished = False

    def write(self, data: bytes) -> bytes:
        if self._finished:
            raise ResponseFramingError("write after the end of the body")
        return data

    def finish(self, trailers: Headers | None = None) -> bytes:
        if self._finished:
            raise ResponseFramingError("body finished twice")
        self._finished = True
        return b""


class NoBodyWriter:
    """
    Discards the body of a response that has none on the wire (HEAD, 1xx,
    204, 304: RFC 9112 §6.3 ¶1), so handlers need not special-case HEAD
    (RFC 9110 §9.3.2).  ``discarded`` counts what was dropped.
    """

    __slots__ = ("_finished", "discarded")

    def __init__(self) -> None:
        self._finished = False
        self.discarded = 0

    def write(self, data: bytes) -> bytes:
        if self._finished:
            raise ResponseFramingError("write after the end of the body")
        self.discarded += len(data)
        return b""

    def finish(self, trailers: Headers | None = None) -> bytes:
        if self._finished:
            raise ResponseFramingError("body finished twice")
        self._finished = True
        return b""


def makeWriter(framing: BodyFraming, contentLength: int | None) -> BodyWriter:
    """The writer for ``framing`` (``contentLength`` is needed by CONTENT_LENGTH)."""
    if framing is _FR_CONTENT_LENGTH:
        if contentLength is None:
            raise ValueError("Content-Length framing needs a length")
        return ContentLengthWriter(contentLength)
    if framing is _FR_CHUNKED:
        return ChunkedWriter()
    if framing is _FR_CLOSE_DELIMITED:
        return CloseDelimitedWriter()
    return NoBodyWriter()


# RFC 9110 §5.5: field-value = *field-content, made of VCHAR, obs-text, SP
# and HTAB.  CR, LF and NUL would split or truncate the message (response
# splitting); the other controls are invalid too.
_FIELD_VALUE_RE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")


def validateResponseField(name: bytes, value: bytes) -> None:
    """
    Raise :class:`ResponseFramingError` unless ``name`` is a token (RFC 9110
    §5.1) and ``value`` is a valid field value (RFC 9110 §5.5).

    :func:`encodeHeaderBlock` calls it for every field, so that no field
    can break the wire; it costs two precompiled-regex matches.
    """
    if TOKEN_RE.fullmatch(name) is None:
        raise ResponseFramingError(f"invalid response field name {name!r}")
    if _FIELD_VALUE_RE.fullmatch(value) is None:
        raise ResponseFramingError(f"invalid value for response field {name!r}")


def encodeHeaderBlock(
    statusLine: bytes, headers: Iterable[tuple[bytes, bytes]]
) -> bytes:
    """
    The status line, each field as ``Name: value`` CRLF, then the empty line
    (RFC 9112 §2.1).  Every field is checked by :func:`validateResponseField`.
    """
    lines = [statusLine]
    append = lines.append
    for name, value in headers:
        validateResponseField(name, value)
        append(name + b": " + value + b"\r\n")
    append(b"\r\n")
    return b"".join(lines)


# RFC 9110 §15: the registered status codes and their reason phrases.
_REASONS: dict[int, bytes] = {
    100: b"Continue",
    101: b"Switching Protocols",
    102: b"Processing",
    103: b"Early Hints",
    200: b"OK",
    201: b"Created",
    202: b"Accepted",
    203: b"Non-Authoritative Information",
    204: b"No Content",
    205: b"Reset Content",
    206: b"Partial Content",
    207: b"Multi-Status",
    208: b"Already Reported",
    226: b"IM Used",
    300: b"Multiple Choices",
    301: b"Moved Permanently",
    302: b"Found",
    303: b"See Other",
    304: b"Not Modified",
    305: b"Use Proxy",
    307: b"Temporary Redirect",
    308: b"Permanent Redirect",
    400: b"Bad Request",
    401: b"Unauthorized",
    402: b"Payment Required",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    406: b"Not Acceptable",
    407: b"Proxy Authentication Required",
    408: b"Request Timeout",
    409: b"Conflict",
    410: b"Gone",
    411: b"Length Required",
    412: b"Precondition Failed",
    413: b"Content Too Large",
    414: b"URI Too Long",
    415: b"Unsupported Media Type",
    416: b"Range Not Satisfiable",
    417: b"Expectation Failed",
    421: b"Misdirected Request",
    422: b"Unprocessable Content",
    423: b"Locked",
    424: b"Failed Dependency",
    425: b"Too Early",
    426: b"Upgrade Required",
    428: b"Precondition Required",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    451: b"Unavailable For Legal Reasons",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
    506: b"Variant Also Negotiates",
    507: b"Insufficient Storage",
    508: b"Loop Detected",
    510: b"Not Extended",
    511: b"Network Authentication Required",
}

# RFC 9110 §6.2: a server sends its highest conformant version, HTTP/1.1,
# in every response, whatever the request's version.
_STATUS_LINES: dict[int, bytes] = {
    code: b"HTTP/1.1 %d %b\r\n" % (code, reason) for code, reason in _REASONS.items()
}

# RFC 9112 §4: reason-phrase = 1*( HTAB / SP / VCHAR / obs-text )
_REASON_RE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")


def statusLine(status: int, reason: bytes | None = None) -> bytes:
    """
    ``HTTP/1.1 <status> <reason>`` CRLF, from a prebuilt table when no
    reason is given.  Codes outside 100-599 raise ``ValueError`` (RFC 9110
    §15: a status code is three digits, first 1 to 5); an unregistered code
    gets the reason ``Unknown`` (clients must not rely on reason phrases,
    RFC 9112 §4).
    """
    if reason is None:
        line = _STATUS_LINES.get(status)
        if line is not None:
            return line
    if type(status) is not int or not 100 <= status <= 599:
        raise ValueError(f"invalid HTTP status code {status!r}")
    if reason is None:
        reason = b"Unknown"
    elif _REASON_RE.fullmatch(reason) is None:
        raise ValueError(f"invalid reason phrase {reason!r}")
    return b"HTTP/1.1 %d %b\r\n" % (status, reason)


# Enum members as module globals: looking a member up on its Enum class
# costs a descriptor call (about 70 ns), and the request path reads these
# several times per request.
_FR_CHUNKED = BodyFraming.CHUNKED
_FR_CLOSE_DELIMITED = BodyFraming.CLOSE_DELIMITED
_FR_CONTENT_LENGTH = BodyFraming.CONTENT_LENGTH
_FR_NONE = BodyFraming.NONE
