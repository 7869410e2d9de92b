"""
An incremental, strict RFC 9112 request parser: bytes in, events out; and
its response mode (:class:`ResponseParser`), which the reverse proxy's
upstream client reads responses with.

Like h11 this is sans-IO: the protocol pushes bytes with
:meth:`RequestParser.receiveData` and pulls events with
:meth:`RequestParser.nextEvent` until it gets :data:`NEED_DATA`.  A request is
``RequestHead``, zero or more ``BodyData`` and one ``EndOfMessage``; the next
pipelined request follows at once.  Anything that breaks the grammar or a
configured limit raises :class:`~connserver._http.errors.ProtocolError` carrying the
status to answer with, and the parser stays dead afterwards: after a framing
error nothing on the connection can be trusted (RFC 9112 §6.3).

The parser gives the same events (after merging adjacent ``BodyData``) and the
same error whatever way the bytes are split, and it never waits for more bytes
once the input is decidably invalid or over a limit.  Choices where the RFCs
leave room are listed in ``docs/parser.md``.

Pure module: nothing here imports twisted.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from enum import Enum

from connserver._http.config import ServerConfig
from connserver._http.errors import ProtocolError
from connserver._http.headers import TOKEN_RE, Headers, splitList

__all__ = [
    "NEED_DATA",
    "BodyData",
    "EndOfMessage",
    "Event",
    "NeedData",
    "RequestHead",
    "RequestParser",
    "ResponseHead",
    "ResponseParser",
]


@dataclass(frozen=True, slots=True)
class RequestHead:
    """The request line and header section of one request."""

    method: bytes
    target: bytes
    version: tuple[int, int]
    headers: Headers
    contentLength: int | None
    chunked: bool
    #: The values of the ``Connection`` and ``Expect`` field lines, noted
    #: while the fields are validated so that the server need not search
    #: the headers again (they are in ``headers`` too).
    connection: tuple[bytes, ...] = field(default=(), compare=False, repr=False)
    expect: tuple[bytes, ...] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class BodyData:
    """Some bytes of the request content, already de-chunked."""

    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    """The request is complete; ``trailers`` holds a chunked trailer section."""

    trailers: Headers


_SET_METHOD = vars(RequestHead)["method"].__set__
_SET_TARGET = vars(RequestHead)["target"].__set__
_SET_VERSION = vars(RequestHead)["version"].__set__
_SET_HEADERS = vars(RequestHead)["headers"].__set__
_SET_LENGTH = vars(RequestHead)["contentLength"].__set__
_SET_CHUNKED = vars(RequestHead)["chunked"].__set__
_SET_CONNECTION = vars(RequestHead)["connection"].__set__
_SET_EXPECT = vars(RequestHead)["expect"].__set__


def _makeRequestHead(
    method: bytes,
    target: bytes,
    version: tuple[int, int],
    headers: Headers,
    contentLength: int | None,
    chunked: bool,
    connection: tuple[bytes, ...] = (),
    expect: tuple[bytes, ...] = (),
) -> RequestHead:
    """
    ``RequestHead(...)`` without the frozen dataclass ``__init__``, which
    goes through ``object.__setattr__`` per field: the slot descriptors are
    about twice as fast, on the hottest path of the parser.
    """
    head: RequestHead = object.__new__(RequestHead)
    _SET_METHOD(head, method)
    _SET_TARGET(head, target)
    _SET_VERSION(head, version)
    _SET_HEADERS(head, headers)
    _SET_LENGTH(head, contentLength)
    _SET_CHUNKED(head, chunked)
    _SET_CONNECTION(head, connection)
    _SET_EXPECT(head, expect)
    return head


_SET_TRAILERS = vars(EndOfMessage)["trailers"].__set__


def _makeEndOfMessage(trailers: Headers) -> EndOfMessage:
    """``EndOfMessage(trailers)`` by the slot descriptor (see above)."""
    end: EndOfMessage = object.__new__(EndOfMessage)
    _SET_TRAILERS(end, trailers)
    return end


class NeedData(Enum):
    """The sentinel type of :data:`NEED_DATA` (an Enum so that mypy narrows it)."""

    NEED_DATA = "need-data"


NEED_DATA = NeedData.NEED_DATA

Event = RequestHead | BodyData | EndOfMessage


class _Phase(Enum):
    """Where the parser is inside the current request."""

    HEAD = "head"  # before or inside a request head
    BODY = "body"  # Content-Length content
    CHUNK_SIZE = "chunk-size"  # expecting a chunk-size line
    CHUNK_DATA = "chunk-data"  # inside chunk-data
    CHUNK_CRLF = "chunk-crlf"  # expecting the CRLF after chunk-data
    TRAILERS = "trailers"  # after last-chunk, expecting the trailer section
    END = "end"  # EndOfMessage is due without more bytes
    UNTIL_CLOSE = "until-close"  # a response body that ends with the connection


# Module-level aliases of the two hot phases (a global lookup is cheaper
# than an Enum attribute lookup on every event).
_HEAD = _Phase.HEAD
_END = _Phase.END

_TOKEN = TOKEN_RE.pattern

# RFC 9112 §3: request-line = method SP request-target SP HTTP-version.
# The target is restricted to visible ASCII (0x21-0x7E): every
# request-target form of RFC 9112 §3.2 is made of such bytes once
# percent-encoded, and refusing the rest refuses ambiguous targets early.
# The CR is the CRLF's; it is optional only with allowBareLf (a bare-LF line
# has none, RFC 9112 §2.2 MAY; refused by default, see docs/parser.md).
_REQUEST_LINE_RE = re.compile(
    rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])\r"
)
_REQUEST_LINE_LENIENT_RE = re.compile(
    rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])\r?"
)
_VERSION_RE = re.compile(rb"HTTP/([0-9])\.([0-9])")

# RFC 9112 §5: field-line = field-name ":" OWS field-value OWS, and RFC 9110
# §5.5: field-value = *field-content, made of VCHAR, obs-text, SP and HTAB
# (NUL, CR, LF and the other controls are invalid).  The value group starts
# and ends with a visible byte so that OWS is excluded without rstrip().
_FIELD_LINE_RE = re.compile(
    rb"(" + _TOKEN + rb"):[ \t]*"
    rb"((?:[\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?)"
    rb"[ \t]*\r?"
)
# The same, anchored at each line start of a block and ending with its LF:
# a bare CR cannot match (CR is not field-content), so it fails the line.
# The value keeps its trailing OWS (excluding it in the pattern costs more
# backtracking than an rstrip()).  The strict pattern needs CRLF, so a
# bare-LF line fails the count like any other bad line.
_FIELD_LINES_RE = re.compile(
    rb"^(" + _TOKEN + rb"):[ \t]*([\t\x20-\x7e\x80-\xff]*)\r\n",
    re.MULTILINE,
)
_FIELD_LINES_LENIENT_RE = re.compile(
    rb"^(" + _TOKEN + rb"):[ \t]*([\t\x20-\x7e\x80-\xff]*)\r?\n",
    re.MULTILINE,
)
_VALUE_RE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_EMPTY_LINES_RE = re.compile(rb"(?:\r?\n)*")
# The end of a head or trailer section: the LF of its last line, then an
# empty line (CRLF, or a bare LF: RFC 9112 §2.2).  Both modes end the head at
# the same place; the strict one then refuses the bare LFs in it, so that
# ``Useless:\n\n`` is a 400 at once, not a wait for a CRLF CRLF.
_HEAD_END_RE = re.compile(rb"\n\r?\n")
#: An LF that is not the end of a CRLF (the lookbehind sees bytes before the
#: search start, so a search can resume anywhere).
_BARE_LF_RE = re.compile(rb"(?<!\r)\n")
_BARE_LF_MESSAGE = "bare LF as a line terminator (allowBareLf is off)"

# RFC 9112 §3.2 / RFC 3986 §3.2.2: Host = uri-host [ ":" port ], where
# uri-host is an IP-literal or a reg-name (IPv4address is a reg-name too).
# _HOST_RE is the fast path for reg-names; _validHost() does the rest.
_REG_NAME_CHARS = rb"[A-Za-z0-9\-._~!$&'()*+,;=]*"
_HOST_RE = re.compile(
    _REG_NAME_CHARS + rb"(?:%[0-9A-Fa-f]{2}" + _REG_NAME_CHARS + rb")*(?::[0-9]*)?"
)
_IP_LITERAL_HOST_RE = re.compile(rb"\[([0-9A-Za-z\-._~!$&'()*+,;=:]+)\](?::[0-9]*)?")
_IPV6_CHARS_RE = re.compile(rb"[0-9A-Fa-f:.]+")
_IPVFUTURE_RE = re.compile(rb"[vV][0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+")

# RFC 9110 §8.6: Content-Length = 1*DIGIT.
_DIGITS_RE = re.compile(rb"[0-9]+")
#: More digits than this (after leading zeros) is refused: 10**18 bytes is
#: beyond any real body and keeps every length a machine-sized integer.
_MAX_LENGTH_DIGITS = 18

# RFC 9112 §6.1: transfer-coding = token *( OWS ";" OWS transfer-parameter ),
# transfer-parameter = token BWS "=" BWS ( token / quoted-string ).
_QUOTED = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
_TRANSFER_CODING_RE = re.compile(
    _TOKEN
    + rb"(?:[ \t]*;[ \t]*"
    + _TOKEN
    + rb"[ \t]*=[ \t]*(?:"
    + _TOKEN
    + rb"|"
    + _QUOTED
    + rb"))*"
)

# RFC 9112 §7.1 and §7.1.1: chunk = chunk-size [ chunk-ext ] CRLF, with
# chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ).
# Framing lines must end in CRLF: a bare LF here is refused (see
# docs/parser.md) because lenient chunk framing is a request-smuggling vector.
_CHUNK_LINE_RE = re.compile(
    rb"([0-9A-Fa-f]+)(?:[ \t]*;[ \t]*"
    + _TOKEN
    + rb"(?:[ \t]*=[ \t]*(?:"
    + _TOKEN
    + rb"|"
    + _QUOTED
    + rb"))?)*\r"
)
#: Longest chunk-size line, extensions and CRLF included.
MAX_CHUNK_LINE_BYTES = 4096
#: Longest chunk-size token, and most significant hex digits (2**64 - 1).
_MAX_CHUNK_SIZE_CHARS = 64
_MAX_CHUNK_SIZE_DIGITS = 16

#: Fields the parser reads itself.  They are also refused in trailers: RFC
#: 9110 §6.5.1 says fields needed to frame or route a message cannot be
#: processed once the content has been received.
_FRAMING_FIELDS = frozenset({b"host", b"content-length", b"transfer-encoding"})
# The fields the head validation notes as it goes: framing, and the two the
# server acts on (RFC 9110 §7.6.1 Connection, §10.1.1 Expect).
_NOTED_FIELDS = _FRAMING_FIELDS | {b"connection", b"expect"}

_Field = tuple[bytes, bytes, bytes]
_StartLine = tuple[bytes, bytes, tuple[int, int]]


def _error(message: str, statusCode: int = 400) -> ProtocolError:
    return ProtocolError(message, statusCode, closeConnection=True)


def _parseRequestLine(
    data: bytes, end: int, lineRe: re.Pattern[bytes] = _REQUEST_LINE_RE
) -> _StartLine:
    """
    Parse the request line ``data[:end]`` (without its LF, maybe with its
    CR); ``lineRe`` is the strict or the lenient (bare LF) pattern.

    RFC 9110 §2.5: a recipient of a higher minor version "SHOULD process the
    message as if it were in the highest minor version within that major
    version to which the recipient is conformant", so HTTP/1.2 is (1, 1);
    another major version is 505 (RFC 9110 §15.6.6).
    """
    match = lineRe.fullmatch(data, 0, end)
    if match is not None:
        method, target, major, minor = match.groups()
        if major != b"1":
            raise _error("unsupported HTTP major version", 505)
        return method, target, (1, 0) if minor == b"0" else (1, 1)
    raise _requestLineError(data[:end], lineRe is _REQUEST_LINE_RE)


def _requestLineError(line: bytes, strict: bool) -> ProtocolError:
    """Explain why a request line did not match (the slow path)."""
    if strict and not line.endswith(b"\r"):
        # RFC 9112 §2.2 lets a recipient accept a bare LF; by default this
        # one does not (docs/parser.md).
        return _error("bare LF ending the request line (allowBareLf is off)")
    if line.endswith(b"\r"):
        line = line[:-1]
    if b"\r" in line:
        # RFC 9112 §2.2: a bare CR outside the content is invalid.
        return _error("bare CR in the request line")
    parts = line.split(b" ")
    if len(parts) != 3:
        return _error("malformed request line")
    method, target, version = parts
    if TOKEN_RE.fullmatch(method) is None:
        return _error("invalid method")
    if not target or re.fullmatch(rb"[\x21-\x7e]+", target) is None:
        # Strict choice: only visible ASCII in the target (docs/parser.md).
        return _error("invalid request-target")
    match = _VERSION_RE.fullmatch(version)
    if match is not None and match.group(1) != b"1":
        return _error("unsupported HTTP major version", 505)
    return _error("malformed HTTP-version")


def _fieldLineError(line: bytes, first: bool) -> ProtocolError:
    """Explain why a field line did not match (the slow path)."""
    if line.endswith(b"\r"):
        line = line[:-1]
    if b"\r" in line:
        # RFC 9112 §2.2: "A sender MUST NOT generate a bare CR ... A
        # recipient of such a bare CR MUST consider that element to be
        # invalid or replace each bare CR with SP".
        return _error("bare CR in a field line")
    if line[:1] in (b" ", b"\t"):
        if first:
            # RFC 9112 §2.2: whitespace between the start-line and the
            # first field line: reject the message as invalid.
            return _error("whitespace before the first field line")
        # RFC 9112 §5.2: "A server that receives an obs-fold in a request
        # message ... MUST either reject the message by sending a 400 (Bad
        # Request) ... or replace each received obs-fold with one or more SP".
        return _error("obsolete line folding in a field")
    colon = line.find(b":")
    if colon == -1:
        return _error("field line without a colon")
    name = line[:colon]
    if name[-1:] in (b" ", b"\t"):
        # RFC 9112 §5.1: "A server MUST reject, with a response status code
        # of 400 (Bad Request), any received request message that contains
        # whitespace between a header field name and colon."
        return _error("whitespace between a field name and the colon")
    if TOKEN_RE.fullmatch(name) is None:
        return _error("invalid field name")
    if _VALUE_RE.fullmatch(line, colon + 1) is None:
        # RFC 9110 §5.5: field values containing CR, LF or NUL are invalid;
        # the other controls are not field-content either.
        return _error("invalid character in a field value")
    return _error("malformed field line")  # pragma: no cover - defensive


def _parseFieldLines(
    data: bytes, start: int, end: int, maxCount: int, strict: bool = True
) -> list[_Field]:
    """
    Validate the field lines in ``data[start:end]`` (each ending in LF, the
    first preceded by an LF or at the start of ``data``) into
    ``(lower, name, value)`` triples.

    One ``findall`` of a line-anchored pattern does the work in C: each
    match spans exactly one whole line, so the lines are valid if and only
    if there are as many matches as lines.  Only bad lines are split and
    diagnosed one by one.  When ``strict``, a bare LF is reported before any
    other error (the incremental path reports it as soon as it arrives, so
    the whole-head path must give it the same precedence).
    """
    if start >= end:
        return []
    count = data.count(b"\n", start, end)
    if count > maxCount:
        if strict and _BARE_LF_RE.search(data, start, end) is not None:
            raise _error(_BARE_LF_MESSAGE)
        raise _error("too many header fields", 431)
    pairs = (_FIELD_LINES_RE if strict else _FIELD_LINES_LENIENT_RE).findall(
        data, start, end
    )
    if len(pairs) != count:
        if strict and _BARE_LF_RE.search(data, start, end) is not None:
            raise _error(_BARE_LF_MESSAGE)
        for index, line in enumerate(data[start : end - 1].split(b"\n")):
            if _FIELD_LINE_RE.fullmatch(line) is None:
                raise _fieldLineError(line, index == 0)
        raise _error("malformed field line")  # pragma: no cover - defensive
    # rstrip() drops SP and HTAB here: the other bytes it strips cannot be
    # in a matched value.
    return [(name.lower(), name, value.rstrip()) for name, value in pairs]


def _validHost(value: bytes) -> bool:
    """True if ``value`` is ``uri-host [ ":" port ]`` (RFC 9112 §3.2)."""
    if _HOST_RE.fullmatch(value) is not None:
        return True
    match = _IP_LITERAL_HOST_RE.fullmatch(value)
    if match is None:
        return False
    literal = match.group(1)
    if _IPVFUTURE_RE.fullmatch(literal) is not None:
        return True
    if _IPV6_CHARS_RE.fullmatch(literal) is None:
        return False
    try:
        ipaddress.IPv6Address(literal.decode("ascii"))
    except ValueError:
        return False
    return True


def _checkUnusualHost(hosts: list[bytes], version: tuple[int, int]) -> None:
    """
    Refuse a missing, repeated or invalid Host; the common single reg-name
    Host is accepted by the caller without this call.

    RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status
    code to any HTTP/1.1 request message that lacks a Host header field and
    to any request message that contains more than one Host header field
    line or a Host header field with an invalid field value."
    """
    if len(hosts) == 1:
        if not _validHost(hosts[0]):
            raise _error("invalid Host")
    elif hosts:
        raise _error("more than one Host field line")
    elif version != (1, 0):
        raise _error("missing Host in an HTTP/1.1 request")


def _checkChunkedFraming(
    version: tuple[int, int], lengths: list[bytes], codings: list[bytes]
) -> None:
    """
    Refuse a Transfer-Encoding that cannot frame this request; kept out of
    the head's validation because most requests carry none.
    """
    if version == (1, 0):
        # RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding
        # MUST be treated as having faulty framing.
        raise _error("Transfer-Encoding in an HTTP/1.0 request")
    if lengths:
        # RFC 9112 §6.1: Content-Length with Transfer-Encoding "ought
        # to be handled as an error", and the server MUST close the
        # connection after responding.
        raise _error("Content-Length with Transfer-Encoding; the connection must close")
    _checkTransferEncoding(codings)


def _contentLength(values: list[bytes]) -> int:
    """
    The body length from the ``Content-Length`` field lines.

    RFC 9112 §6.3 ¶5: an invalid Content-Length is unrecoverable, 400 and
    close.  A list, even of identical values (``3, 3`` or two lines of 3),
    is refused too (the MAY to accept it is not taken, as nginx does not):
    it only ever comes from broken or hostile senders.
    """
    if len(values) > 1:
        raise _error("more than one Content-Length field line")
    value = values[0]
    if _DIGITS_RE.fullmatch(value) is None:
        if b"," in value:
            raise _error("a list in Content-Length")
        raise _error("invalid Content-Length")
    digits = value.lstrip(b"0")
    if len(digits) > _MAX_LENGTH_DIGITS:
        # RFC 9110 §8.6: anticipate large values and avoid overflow; the
        # string is cut before int() so the digit limit of int() never bites.
        raise _error("Content-Length too large")
    return int(digits) if digits else 0


def _checkTransferEncoding(values: list[bytes]) -> None:
    """
    Accept exactly ``chunked``; refuse every other Transfer-Encoding.

    RFC 9112 §6.3 ¶4: if chunked is not the final coding of a request, 400
    and close.  §6.1: chunked MUST NOT be applied more than once.  Any other
    coding is one this server does not understand: 501 (§6.1 SHOULD).
    """
    codings = splitList(values)
    if not codings:
        raise _error("empty Transfer-Encoding")
    lowered = [coding.lower() for coding in codings]
    if lowered[-1] != b"chunked":
        raise _error("the final transfer coding is not chunked")
    if b"chunked" in lowered[:-1]:
        raise _error("chunked applied more than once")
    for coding in codings[:-1]:
        if _TRANSFER_CODING_RE.fullmatch(coding) is None:
            raise _error("malformed transfer coding")
    if len(codings) > 1:
        raise _error("unsupported transfer coding", 501)


_DEFAULT_CONFIG = ServerConfig()


class RequestParser:
    """
    Parse a stream of HTTP/1.0 and HTTP/1.1 requests, strictly.

    The buffer is a ``bytearray`` consumed from the front (amortised O(1) in
    CPython), and every search remembers how far it got, so input fed one
    byte at a time costs linear work.
    """

    __slots__ = (
        "_bareFrom",
        "_buf",
        "_error",
        "_headStarted",
        "_lineEnd",
        "_lineSearchFrom",
        "_maxHeadBytes",
        "_maxHeaderCount",
        "_maxLineBytes",
        "_phase",
        "_remaining",
        "_requestLineRe",
        "_searchFrom",
        "_startLine",
        "_strict",
        "_trailers",
    )

    def __init__(self, config: ServerConfig = _DEFAULT_CONFIG) -> None:
        self._maxHeadBytes = config.maxHeadBytes
        self._maxHeaderCount = config.maxHeaderCount
        self._maxLineBytes = config.maxRequestLineBytes
        # Bare LF refused unless allowBareLf (docs/parser.md, "bare LF").
        self._strict = not config.allowBareLf
        self._requestLineRe = (
            _REQUEST_LINE_LENIENT_RE if config.allowBareLf else _REQUEST_LINE_RE
        )
        # Strict mode: where the search for a bare LF in the head or the
        # trailers resumes (everything before it was checked).
        self._bareFrom = 0
        self._buf = bytearray()
        self._error: ProtocolError | None = None
        self._phase = _Phase.HEAD
        self._headStarted = False
        self._searchFrom = 0
        self._lineEnd = -1
        self._lineSearchFrom = 0
        self._startLine: _StartLine | None = None
        self._remaining = 0
        # (A shared empty tuple while there are none: an idle connection
        # holds no list.)
        self._trailers: list[_Field] | tuple[()] = ()

    @property
    def bufferedByteCount(self) -> int:
        """Bytes received and not yet consumed into events."""
        return len(self._buf)

    def takeBuffered(self) -> bytes:
        """
        Every byte received and not consumed, as it came; the parser keeps
        none.  What follows a request head that switched protocols belongs
        to the new protocol (RFC 9110 §7.8).
        """
        data = bytes(self._buf)
        self._buf = bytearray()
        return data

    @property
    def inMessage(self) -> bool:
        """
        True from the first byte of a request (ignored empty lines aside)
        until its ``EndOfMessage`` has been returned: the protocol uses it to
        tell an idle connection from a partly received request.
        """
        return self._phase is not _Phase.HEAD or self._headStarted

    def receiveData(self, data: bytes) -> None:
        """
        Append ``data`` to the buffer.

        Once the parser is dead the bytes are dropped, so that a lingering
        close can keep reading without the buffer growing.
        """
        if self._error is not None:
            return
        self._buf += data
        if not self._headStarted and self._phase is _HEAD:
            self._skipEmptyLines()

    def feed(self, data: bytes) -> list[Event]:
        """``receiveData(data)``, then every event up to :data:`NEED_DATA`."""
        self.receiveData(data)
        events: list[Event] = []
        while True:
            event = self.nextEvent()
            if event is NEED_DATA:
                return events
            events.append(event)

    def skipEndOfMessage(self) -> None:
        """
        Consume the ``EndOfMessage`` due right after the head of a bodiless
        request without building it: the server's fast path for the common
        request (the event would carry nothing).  Only valid when that event
        is due; the parser is then between messages.
        """
        if self._phase is not _END or self._trailers:
            raise RuntimeError("no bodiless EndOfMessage is due")
        self._phase = _HEAD
        self._headStarted = False
        if self._buf:
            self._skipEmptyLines()

    def nextEvent(self) -> Event | NeedData:
        """
        The next event, or :data:`NEED_DATA` if more bytes are needed.

        Raises :class:`ProtocolError`; the parser is then dead and raises the
        same error on every later call.
        """
        if self._error is not None:
            raise self._error.with_traceback(None)
        try:
            phase = self._phase
            if phase is _HEAD:
                if not self._buf:
                    return NEED_DATA  # the common case between requests
                return self._parseHead()
            if phase is _END:
                return self._endMessage()
            if phase is _Phase.BODY:
                return self._readBody()
            if phase is _Phase.CHUNK_DATA:
                return self._readChunkData()
            if phase is _Phase.CHUNK_SIZE:
                return self._readChunkSize()
            if phase is _Phase.CHUNK_CRLF:
                return self._readChunkCRLF()
            if phase is _Phase.UNTIL_CLOSE:
                return self._readUntilClose()
            return self._readTrailers()
        except ProtocolError as e:
            self._error = e
            raise

    def _readUntilClose(self) -> BodyData | NeedData:
        """A body that ends with the connection (responses only): all of it."""
        buf = self._buf
        if not buf:
            return NEED_DATA
        data = bytes(buf)
        buf.clear()
        return BodyData(data)

    # -- the head ---------------------------------------------------------

    def _skipEmptyLines(self) -> None:
        """
        Drop empty lines before a request line (RFC 9112 §2.2: a server
        "SHOULD ignore at least one empty line (CRLF) received prior to the
        request-line").  The work is linear in the bytes dropped; a lone CR
        is kept, undecided, until the next byte.
        """
        buf = self._buf
        if not buf:
            return
        first = buf[0]
        if first != 10 and first != 13:
            self._headStarted = True
            return
        end = _EMPTY_LINES_RE.match(buf)
        if end is not None and end.end():
            del buf[: end.end()]
        if buf and not (len(buf) == 1 and buf[0] == 13):
            self._headStarted = True

    def _parseHead(self) -> RequestHead | NeedData:
        if not self._headStarted:
            self._skipEmptyLines()
            if not self._headStarted:
                return NEED_DATA
        buf = self._buf
        maxHead = self._maxHeadBytes

        # The head ends at the first empty line: "\n\r\n" or "\n\n" (a bare
        # LF, refused in _finishHead unless allowBareLf).  Only terminators
        # inside the first maxHeadBytes count: a later one means the head is
        # too large anyway.
        found = _HEAD_END_RE.search(buf, self._searchFrom, maxHead)
        if found is not None and self._startLine is None:
            # Fast path: a whole head arrived at once.  With the request line
            # within its limit no other outcome than parsing it is possible.
            last = found.start()
            lineEnd = buf.find(b"\n", 0, last + 1)
            if lineEnd <= self._maxLineBytes:
                headEnd = found.end()
                if headEnd == len(buf):
                    head = bytes(buf)
                    buf.clear()
                else:
                    head = bytes(buf[:headEnd])
                    del buf[:headEnd]
                self._searchFrom = 0
                self._lineEnd = -1
                self._lineSearchFrom = 0
                # (_bareFrom is still 0: it only moves once a request line
                # has been parsed on the incremental path.)
                return self._finishHead(
                    head,
                    lineEnd,
                    last,
                    _parseRequestLine(head, lineEnd, self._requestLineRe),
                )
        return self._parseHeadIncrementally(found)

    def _parseHeadIncrementally(
        self, found: re.Match[bytes] | None
    ) -> RequestHead | NeedData:
        """
        The head so far, when it did not arrive whole with a short request
        line: apply the limits in the order the bytes decide them, and
        finish the head once its end (``found``) is buffered.  Kept out of
        :meth:`_parseHead` so that a head arriving at once takes no extra
        call.
        """
        buf = self._buf
        maxHead = self._maxHeadBytes
        size = len(buf)
        if found is None:
            tooBig = size >= maxHead
            self._searchFrom = max(0, min(size, maxHead) - 2)
        else:
            tooBig = False
        if self._startLine is None:
            self._checkRequestLine(size, tooBig)
        if found is None and self._strict and self._startLine is not None:
            # A bare LF after the request line is decided by the byte that
            # brings it, before the 431 (decided at maxHeadBytes) and before
            # the rest of the head arrives.
            self._checkBareLF(self._lineEnd + 1, min(size, maxHead))
        if tooBig:
            # RFC 9110 §15.5.20 / RFC 6585 §5: 431 for an oversized head.
            raise _error("request head too large", 431)
        if found is None:
            return NEED_DATA
        startLine = self._startLine
        assert startLine is not None
        lineEnd = self._lineEnd
        headEnd = found.end()
        head = bytes(buf[:headEnd])
        del buf[:headEnd]
        self._searchFrom = 0
        self._lineEnd = -1
        self._lineSearchFrom = 0
        self._startLine = None
        self._bareFrom = 0
        return self._finishHead(head, lineEnd, found.start(), startLine)

    def _checkBareLF(self, start: int, limit: int) -> None:
        """
        Strict mode: raise if ``buf[start:limit]`` holds an LF without its
        CR.  The search resumes where the last one stopped, so bytes fed one
        at a time cost linear work.
        """
        if self._bareFrom > start:
            start = self._bareFrom
        if start < limit and _BARE_LF_RE.search(self._buf, start, limit) is not None:
            raise _error(_BARE_LF_MESSAGE)
        self._bareFrom = limit

    def _findHeadEnd(self, start: int, limit: int) -> int:
        """Index of the LF that ends the last head line, or -1."""
        found = _HEAD_END_RE.search(self._buf, start, limit)
        return -1 if found is None else found.start()

    def _checkRequestLine(self, size: int, tooBig: bool) -> None:
        """
        Apply the request-line length limit and validate the request line as
        soon as it is complete, in the order the bytes decide them.

        The 414 is decided once maxRequestLineBytes + 1 bytes of line content
        are buffered without an LF (one more if the last is a CR that may
        start the CRLF); the 431 once maxHeadBytes are buffered without the
        end of the head.  Whichever point comes first in the byte stream
        wins, so that the outcome does not depend on how bytes were split.
        """
        buf = self._buf
        maxLine = self._maxLineBytes
        window = maxLine + 2
        lineEnd = self._lineEnd
        if lineEnd == -1:
            lineEnd = buf.find(b"\n", self._lineSearchFrom, window)
            if lineEnd == -1:
                self._lineSearchFrom = min(size, window)
            else:
                self._lineEnd = lineEnd
        contentEnd = lineEnd if lineEnd != -1 else min(size, window)
        decided431 = self._maxHeadBytes if tooBig else size + 1
        if contentEnd > maxLine:
            decided414 = maxLine + 1 + (buf[maxLine] == 13)
            if decided414 <= contentEnd and decided414 <= decided431:
                # RFC 9112 §3: a server that receives a request-target longer
                # than it wishes to parse MUST respond with 414.
                raise _error("request line too long", 414)
        if lineEnd != -1 and lineEnd + 1 <= decided431:
            self._startLine = _parseRequestLine(
                bytes(buf[:lineEnd]), lineEnd, self._requestLineRe
            )

    def _finishHead(
        self, head: bytes, lineEnd: int, last: int, startLine: _StartLine
    ) -> RequestHead:
        """
        Validate the fields of a consumed ``head`` and set up the body.

        The field lines run from after the request line's LF (at ``lineEnd``)
        to the LF at ``last`` (inclusive), none if the head ends right there;
        the empty line after ``last`` is a CRLF or, unless allowed, a 400.
        """
        strict = self._strict
        if strict and head[last + 1] != 13:
            raise _error(_BARE_LF_MESSAGE)
        fields = _parseFieldLines(
            head, lineEnd + 1, last + 1, self._maxHeaderCount, strict
        )

        hosts: list[bytes] = []
        lengths: list[bytes] = []
        codings: list[bytes] = []
        connection: tuple[bytes, ...] = ()
        expect: tuple[bytes, ...] = ()
        for lower, _, value in fields:
            if lower in _NOTED_FIELDS:
                if lower == b"host":
                    hosts.append(value)
                elif lower == b"content-length":
                    lengths.append(value)
                elif lower == b"transfer-encoding":
                    codings.append(value)
                elif lower == b"connection":
                    connection += (value,)
                else:
                    expect += (value,)
        method, target, version = startLine
        if len(hosts) != 1 or _HOST_RE.fullmatch(hosts[0]) is None:
            _checkUnusualHost(hosts, version)
        contentLength: int | None
        if codings:
            _checkChunkedFraming(version, lengths, codings)
            contentLength = None
            self._phase = _Phase.CHUNK_SIZE
        elif lengths:
            contentLength = _contentLength(lengths)
            self._remaining = contentLength
            self._phase = _Phase.BODY if contentLength else _Phase.END
        else:
            # RFC 9112 §6.3 ¶7: neither field means no content.
            contentLength = 0
            self._phase = _Phase.END
        return _makeRequestHead(
            method,
            target,
            version,
            Headers._fromLowered(fields),
            contentLength,
            contentLength is None,
            connection,
            expect,
        )

    # -- content ----------------------------------------------------------

    def _readBody(self) -> BodyData | NeedData:
        return self._takeContent(_Phase.END)

    def _takeContent(self, after: _Phase) -> BodyData | NeedData:
        """
        What is buffered of the current content (Content-Length body or
        chunk-data), up to what remains of it; ``after`` is the phase once
        it is all taken.
        """
        buf = self._buf
        if not buf:
            return NEED_DATA
        remaining = self._remaining
        if len(buf) <= remaining:
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(buf[:remaining])
            del buf[:remaining]
        remaining -= len(data)
        self._remaining = remaining
        if not remaining:
            self._phase = after
        return BodyData(data)

    def _readChunkSize(self) -> NeedData | BodyData | EndOfMessage:
        buf = self._buf
        lineEnd = buf.find(b"\n", self._searchFrom, MAX_CHUNK_LINE_BYTES)
        if lineEnd == -1:
            if len(buf) >= MAX_CHUNK_LINE_BYTES:
                raise _error("chunk-size line too long")
            self._searchFrom = len(buf)
            return NEED_DATA
        line = bytes(buf[:lineEnd])
        del buf[: lineEnd + 1]
        self._searchFrom = 0
        match = _CHUNK_LINE_RE.fullmatch(line)
        if match is None:
            if not line.endswith(b"\r"):
                raise _error("chunk-size line not ended by CRLF")
            raise _error("malformed chunk-size line")
        digits = match.group(1)
        significant = digits.lstrip(b"0")
        if (
            len(digits) > _MAX_CHUNK_SIZE_CHARS
            or len(significant) > _MAX_CHUNK_SIZE_DIGITS
        ):
            raise _error("chunk size too large")
        if not significant:
            self._phase = _Phase.TRAILERS
            return self._readTrailers()
        self._remaining = int(significant, 16)
        self._phase = _Phase.CHUNK_DATA
        return self._readChunkData()

    def _readChunkData(self) -> BodyData | NeedData:
        return self._takeContent(_Phase.CHUNK_CRLF)

    def _readChunkCRLF(self) -> NeedData | BodyData | EndOfMessage:
        # RFC 9112 §7.1: chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
        buf = self._buf
        if len(buf) < 2:
            if buf and buf[0] != 13:
                raise _error("chunk data not followed by CRLF")
            return NEED_DATA
        if buf[0] != 13 or buf[1] != 10:
            raise _error("chunk data not followed by CRLF")
        del buf[:2]
        self._phase = _Phase.CHUNK_SIZE
        return self._readChunkSize()

    def _readTrailers(self) -> NeedData | EndOfMessage:
        """
        Read the trailer section after last-chunk (RFC 9112 §7.1.2), under
        the header rules and with its own maxHeadBytes / maxHeaderCount
        budget.
        """
        buf = self._buf
        size = len(buf)
        if not size:
            return NEED_DATA
        first = buf[0]
        strict = self._strict
        if first == 10:
            if strict:
                raise _error(_BARE_LF_MESSAGE)
            headEnd, last = 1, -1
        elif first == 13 and size == 1:
            return NEED_DATA
        elif first == 13 and buf[1] == 10:
            headEnd, last = 2, -1
        elif first == 13:
            raise _error("bare CR in a field line")
        else:
            maxHead = self._maxHeadBytes
            last = self._findHeadEnd(self._searchFrom, maxHead)
            if last == -1:
                if strict:
                    # As in the head: decided before the 431 (see _parseHead).
                    self._checkBareLF(0, min(size, maxHead))
                if size >= maxHead:
                    raise _error("trailer section too large", 431)
                self._searchFrom = max(0, size - 2)
                return NEED_DATA
            if buf[last + 1] == 13:
                headEnd = last + 3
            elif strict:
                raise _error(_BARE_LF_MESSAGE)
            else:
                headEnd = last + 2
        block = bytes(buf[: last + 1])
        del buf[:headEnd]
        self._searchFrom = 0
        self._bareFrom = 0
        fields = _parseFieldLines(block, 0, last + 1, self._maxHeaderCount, strict)
        for lower, _, _ in fields:
            if lower in _FRAMING_FIELDS:
                raise _error("framing field in the trailer section")
        self._trailers = fields
        return self._endMessage()

    def _endMessage(self) -> EndOfMessage:
        """Emit EndOfMessage and get ready for a pipelined request."""
        trailers = self._trailers
        self._phase = _Phase.HEAD
        self._headStarted = False
        self._trailers = ()
        if self._buf:
            self._skipEmptyLines()
        return _makeEndOfMessage(Headers._fromLowered(trailers if trailers else []))


# -- the response mode ----------------------------------------------------------


@dataclass(slots=True)
class ResponseHead:
    """The status line and header section of one response (an interim 1xx too)."""

    version: tuple[int, int]
    status: int
    #: The reason phrase as received (maybe empty).
    reason: bytes
    headers: Headers
    #: The Content-Length field's value when there is one (for HEAD, 304
    #: and 204 too, where it frames nothing), else None.
    contentLength: int | None
    chunked: bool
    #: True when the body ends with the connection (RFC 9112 §6.3 ¶8).
    untilClose: bool
    #: The values of the ``Connection`` field lines.
    connection: tuple[bytes, ...] = ()


# RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ],
# status-code = 3DIGIT, reason-phrase = 1*( HTAB / SP / VCHAR / obs-text ).
# The SP before an empty reason is optional here (many servers omit it);
# "2_00", "+200" or "20" are not three digits.  The CR is required.
_STATUS_LINE_RE = re.compile(
    rb"HTTP/([0-9])\.([0-9]) ([0-9]{3})(?: ([\t\x20-\x7e\x80-\xff]*))?\r"
)


class ResponseParser(RequestParser):
    """
    Parse the responses of one upstream connection, strictly: the same
    field grammar, limits and body framing as requests, with the response
    rules of RFC 9112 §6.3.

    The caller says which request each response answers
    (:meth:`expectResponse`: a response to HEAD has no body).  Events are
    ``ResponseHead`` (zero or more interim 1xx, then the final one), the
    body's ``BodyData`` and one ``EndOfMessage``.  Any fault raises
    :class:`ProtocolError` (its status is irrelevant: the proxy answers
    502), and the parser stays dead: a connection whose framing is in doubt
    is never reused.  What follows the final response's ``EndOfMessage``
    (``bufferedByteCount``) is the caller's to judge: on a persistent
    connection nothing may.

    The request path does not change: this class overrides only the head
    (``_parseHead``) and the end of a message; the body reading, including
    a body that ends with the connection, is the shared dispatch's.
    """

    __slots__ = ("_headOnly",)

    def __init__(self, config: ServerConfig = _DEFAULT_CONFIG) -> None:
        super().__init__(config)
        self._headOnly = False

    def expectResponse(self, method: bytes) -> None:
        """The next response answers a ``method`` request (HEAD: no body)."""
        self._headOnly = method == b"HEAD"

    def receiveEOF(self) -> None:
        """
        The upstream closed: a body that ends with the connection is
        complete (RFC 9112 §6.3 ¶8); any other unfinished message stays
        unfinished (``nextEvent`` returns NEED_DATA, which the caller takes
        as a failure).
        """
        if self._phase is _Phase.UNTIL_CLOSE:
            self._phase = _END

    @property
    def untilClose(self) -> bool:
        """True while reading a body that ends with the connection."""
        return self._phase is _Phase.UNTIL_CLOSE

    def nextEvent(self) -> ResponseHead | BodyData | EndOfMessage | NeedData:  # type: ignore[override]
        """The next event, or :data:`NEED_DATA`; raises :class:`ProtocolError`."""
        return super().nextEvent()  # type: ignore[return-value]

    def _endMessage(self) -> EndOfMessage:
        # No empty lines are skipped between responses: on a persistent
        # connection every byte after a response is a fault.
        trailers = self._trailers
        self._phase = _HEAD
        self._trailers = ()
        return _makeEndOfMessage(Headers._fromLowered(trailers if trailers else []))

    def _parseHead(self) -> ResponseHead | NeedData:  # type: ignore[override]
        buf = self._buf
        maxHead = self._maxHeadBytes
        found = _HEAD_END_RE.search(buf, self._searchFrom, maxHead)
        if found is None:
            size = len(buf)
            if size >= maxHead:
                raise _error("response head too large", 502)
            # A bare LF in a head that is not complete yet is decided now.
            self._checkBareLF(0, size)
            self._searchFrom = max(0, size - 2)
            return NEED_DATA
        last = found.start()
        headEnd = found.end()
        head = bytes(buf[:headEnd])
        del buf[:headEnd]
        self._searchFrom = 0
        self._bareFrom = 0
        lineEnd = head.find(b"\n")
        match = _STATUS_LINE_RE.fullmatch(head, 0, lineEnd)
        if match is None:
            raise _error(f"malformed status line {head[:lineEnd][:80]!r}", 502)
        major, minor, code, reason = match.groups()
        if major != b"1":
            raise _error("unsupported HTTP major version in a response", 502)
        status = int(code)
        if not 100 <= status <= 599:
            # RFC 9110 §15: the first digit is the class, 1 to 5.
            raise _error(f"status code {status} out of range", 502)
        if head[last + 1] != 13:
            raise _error(_BARE_LF_MESSAGE, 502)
        fields = _parseFieldLines(head, lineEnd + 1, last + 1, self._maxHeaderCount)
        lengths: list[bytes] = []
        codings: list[bytes] = []
        connection: tuple[bytes, ...] = ()
        for lower, _, value in fields:
            if lower in _NOTED_FIELDS:
                if lower == b"content-length":
                    lengths.append(value)
                elif lower == b"transfer-encoding":
                    codings.append(value)
                elif lower == b"connection":
                    connection += (value,)
        version = (1, 0) if minor == b"0" else (1, 1)
        contentLength = _responseLength(version, lengths, codings)
        chunked = bool(codings)
        untilClose = self._frameResponseBody(status, chunked, contentLength)
        return ResponseHead(
            version,
            status,
            reason or b"",
            Headers._fromLowered(fields),
            contentLength,
            chunked,
            untilClose,
            connection,
        )

    def _frameResponseBody(
        self, status: int, chunked: bool, contentLength: int | None
    ) -> bool:
        """
        The phase that reads this response's body (RFC 9112 §6.3); True if
        it ends only when the connection does.
        """
        if status < 200:
            return False  # interim: another head follows (RFC 9110 §15.2)
        if self._headOnly or status == 204 or status == 304:
            # RFC 9112 §6.3 ¶1: no content, whatever the fields say.
            self._phase = _END
        elif chunked:
            self._phase = _Phase.CHUNK_SIZE
        elif contentLength is not None:
            self._remaining = contentLength
            self._phase = _Phase.BODY if contentLength else _END
        else:
            # RFC 9112 §6.3 ¶8: the body ends when the connection does.
            self._phase = _Phase.UNTIL_CLOSE
            return True
        return False


def _responseLength(
    version: tuple[int, int], lengths: list[bytes], codings: list[bytes]
) -> int | None:
    """
    The Content-Length of a response head, after the framing checks of
    RFC 9112 §6.1 and §6.3: Transfer-Encoding in HTTP/1.0, Content-Length
    with Transfer-Encoding, a coding other than a single chunked, and an
    invalid or repeated Content-Length are faults (a proxy may not guess
    where such a message ends, and the connection cannot be reused).
    """
    if codings:
        if version == (1, 0):
            # RFC 9112 §6.1: faulty framing; the connection must close.
            raise _error("Transfer-Encoding in an HTTP/1.0 response", 502)
        if lengths:
            # RFC 9112 §6.3 ¶3: "ought to be handled as an error".
            raise _error("Content-Length with Transfer-Encoding in a response", 502)
        codings = splitList(codings)
        if [coding.lower() for coding in codings] != [b"chunked"]:
            # Another coding could only be relayed close-delimited and
            # still coded; refused instead.
            raise _error("a transfer coding other than chunked in a response", 502)
        return None
    if not lengths:
        return None
    try:
        return _contentLength(lengths)
    except ProtocolError as e:
        raise _error(e.message + " in a response", 502) from None
