"""Tests of response framing: choice, framing fields, writers, status lines."""

from __future__ import annotations

import pytest

from connserver._http.errors import ResponseFramingError
from connserver._http.framing import (
    BodyFraming,
    ChunkedWriter,
    CloseDelimitedWriter,
    ContentLengthWriter,
    NoBodyWriter,
    chooseFraming,
    encodeHeaderBlock,
    framingHeaders,
    makeWriter,
    responseMayHaveBody,
    statusLine,
    validateResponseField,
)
from connserver._http.headers import Headers

F = BodyFraming


@pytest.mark.parametrize(
    ("method", "status", "expected"),
    [
        pytest.param(b"GET", 200, True, id="rfc9112-6.3-get-200"),
        pytest.param(b"HEAD", 200, False, id="rfc9110-9.3.2-head"),
        pytest.param(b"HEAD", 404, False, id="rfc9110-9.3.2-head-error"),
        pytest.param(b"GET", 100, False, id="rfc9110-15.2-1xx"),
        pytest.param(b"GET", 103, False, id="rfc9110-15.2-103"),
        pytest.param(b"GET", 204, False, id="rfc9110-15.3.5-204"),
        pytest.param(b"GET", 304, False, id="rfc9110-15.4.5-304"),
        pytest.param(b"POST", 205, True, id="rfc9110-15.3.6-205-framed"),
        pytest.param(b"CONNECT", 200, False, id="rfc9112-6.3-connect-2xx"),
        pytest.param(b"CONNECT", 407, True, id="rfc9112-6.3-connect-error"),
        pytest.param(b"get", 200, True, id="rfc9110-9.1-methods-case-sensitive"),
    ],
)
def test_responseMayHaveBody(method: bytes, status: int, expected: bool) -> None:
    assert responseMayHaveBody(method, status) is expected


@pytest.mark.parametrize(
    ("method", "version", "status", "length", "expected"),
    [
        pytest.param(b"GET", (1, 1), 200, 10, F.CONTENT_LENGTH, id="B9-known-1.1"),
        pytest.param(b"GET", (1, 0), 200, 10, F.CONTENT_LENGTH, id="B9-known-1.0"),
        pytest.param(b"GET", (1, 1), 200, 0, F.CONTENT_LENGTH, id="empty-known"),
        pytest.param(b"GET", (1, 1), 200, None, F.CHUNKED, id="rfc9112-7.1-C11"),
        pytest.param(
            b"GET", (1, 0), 200, None, F.CLOSE_DELIMITED, id="rfc9112-6.1-B3-no-te-1.0"
        ),
        pytest.param(b"HEAD", (1, 1), 200, None, F.NONE, id="B12-head"),
        pytest.param(b"HEAD", (1, 0), 200, 5, F.NONE, id="B12-head-known"),
        pytest.param(b"GET", (1, 1), 204, None, F.NONE, id="B2-204"),
        pytest.param(b"GET", (1, 1), 304, 5, F.NONE, id="B12-304"),
        pytest.param(b"GET", (1, 1), 101, None, F.NONE, id="B2-1xx"),
        pytest.param(b"CONNECT", (1, 1), 200, None, F.NONE, id="connect-tunnel"),
    ],
)
def test_chooseFraming(
    method: bytes,
    version: tuple[int, int],
    status: int,
    length: int | None,
    expected: BodyFraming,
) -> None:
    assert chooseFraming(method, version, status, length) is expected


@pytest.mark.parametrize(
    ("framing", "method", "status", "length", "expected"),
    [
        pytest.param(
            F.CONTENT_LENGTH,
            b"GET",
            200,
            1234,
            [(b"Content-Length", b"1234")],
            id="rfc9110-8.6-content-length",
        ),
        pytest.param(
            F.CHUNKED,
            b"GET",
            200,
            None,
            [(b"Transfer-Encoding", b"chunked")],
            id="rfc9112-7.1-chunked",
        ),
        pytest.param(F.CLOSE_DELIMITED, b"GET", 200, None, [], id="close-delimited"),
        pytest.param(
            F.NONE,
            b"HEAD",
            200,
            42,
            [(b"Content-Length", b"42")],
            id="rfc9110-8.6-B10-head-sends-get-length",
        ),
        pytest.param(
            F.NONE,
            b"GET",
            304,
            42,
            [(b"Content-Length", b"42")],
            id="rfc9110-8.6-B10-304-sends-200-length",
        ),
        pytest.param(F.NONE, b"HEAD", 200, None, [], id="head-unknown-length"),
        pytest.param(F.NONE, b"GET", 204, 0, [], id="rfc9110-8.6-B10-never-204"),
        pytest.param(F.NONE, b"HEAD", 204, 5, [], id="rfc9110-8.6-never-204-head"),
        pytest.param(F.NONE, b"GET", 100, 5, [], id="rfc9110-8.6-B10-never-1xx"),
        pytest.param(
            F.NONE, b"CONNECT", 200, 5, [], id="rfc9110-8.6-never-connect-2xx"
        ),
    ],
)
def test_framingHeaders(
    framing: BodyFraming,
    method: bytes,
    status: int,
    length: int | None,
    expected: list[tuple[bytes, bytes]],
) -> None:
    assert framingHeaders(framing, method, status, length) == expected


@pytest.mark.parametrize("version", [(1, 0), (1, 1)])
@pytest.mark.parametrize("method", [b"GET", b"HEAD", b"POST", b"CONNECT"])
@pytest.mark.parametrize("status", [100, 101, 200, 204, 206, 304, 404, 500])
@pytest.mark.parametrize("length", [None, 0, 7])
def test_neverBothLengthAndTransferEncoding(
    version: tuple[int, int], method: bytes, status: int, length: int | None
) -> None:
    """RFC 9112 §6.2 (B8): never CL with TE; B3: never TE to HTTP/1.0."""
    framing = chooseFraming(method, version, status, length)
    names = [name for name, _ in framingHeaders(framing, method, status, length)]
    assert not (b"Content-Length" in names and b"Transfer-Encoding" in names)
    if version == (1, 0):
        assert b"Transfer-Encoding" not in names
    if status < 200 or status == 204:
        assert names == []


def test_contentLengthFramingNeedsLength() -> None:
    with pytest.raises(ValueError):
        framingHeaders(F.CONTENT_LENGTH, b"GET", 200, None)
    with pytest.raises(ValueError):
        makeWriter(F.CONTENT_LENGTH, None)


def test_contentLengthWriter() -> None:
    writer = ContentLengthWriter(5)
    assert writer.remaining == 5
    assert writer.write(b"ab") == b"ab"
    assert writer.write(b"") == b""
    assert writer.remaining == 3
    with pytest.raises(ResponseFramingError):
        writer.write(b"cdef")  # one byte too many
    assert writer.remaining == 3  # nothing was taken
    assert writer.write(b"cde") == b"cde"
    assert writer.finish(Headers([(b"X-T", b"1")])) == b""  # trailers dropped
    with pytest.raises(ResponseFramingError):
        writer.write(b"x")
    with pytest.raises(ResponseFramingError):
        writer.finish()


def test_contentLengthWriterShortBody() -> None:
    writer = ContentLengthWriter(3)
    writer.write(b"ab")
    with pytest.raises(ResponseFramingError, match="1 bytes short"):
        writer.finish()


def test_contentLengthWriterNegative() -> None:
    with pytest.raises(ValueError):
        ContentLengthWriter(-1)


def test_chunkedWriter() -> None:
    writer = ChunkedWriter()
    assert writer.write(b"") == b""  # an empty chunk would end the body
    assert writer.write(b"hello") == b"5\r\nhello\r\n"
    assert writer.write(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    assert writer.finish() == b"0\r\n\r\n"
    with pytest.raises(ResponseFramingError):
        writer.write(b"late")
    with pytest.raises(ResponseFramingError):
        writer.finish()


def test_chunkedWriterTrailers() -> None:
    writer = ChunkedWriter()
    trailers = Headers([(b"X-Checksum", b"abc"), (b"X-Other", b"1 2")])
    assert writer.finish(trailers) == b"0\r\nX-Checksum: abc\r\nX-Other: 1 2\r\n\r\n"
    assert ChunkedWriter().finish(Headers()) == b"0\r\n\r\n"


def test_chunkedWriterRefusesBadTrailer() -> None:
    with pytest.raises(ResponseFramingError):
        ChunkedWriter().finish(Headers([(b"X", b"a\r\nInjected: 1")]))


def test_closeDelimitedWriter() -> None:
    writer = CloseDelimitedWriter()
    assert writer.write(b"abc") == b"abc"
    assert writer.finish(Headers([(b"X", b"1")])) == b""
    with pytest.raises(ResponseFramingError):
        writer.write(b"x")


def test_noBodyWriter() -> None:
    writer = NoBodyWriter()
    assert writer.write(b"discarded body") == b""
    assert writer.discarded == 14
    assert writer.finish() == b""
    with pytest.raises(ResponseFramingError):
        writer.write(b"x")


@pytest.mark.parametrize(
    ("framing", "length", "kind"),
    [
        (F.CONTENT_LENGTH, 3, ContentLengthWriter),
        (F.CHUNKED, None, ChunkedWriter),
        (F.CLOSE_DELIMITED, None, CloseDelimitedWriter),
        (F.NONE, None, NoBodyWriter),
        (F.NONE, 5, NoBodyWriter),
    ],
)
def test_makeWriter(framing: BodyFraming, length: int | None, kind: type) -> None:
    assert isinstance(makeWriter(framing, length), kind)


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        pytest.param(200, None, b"HTTP/1.1 200 OK\r\n", id="200"),
        pytest.param(404, None, b"HTTP/1.1 404 Not Found\r\n", id="404"),
        pytest.param(413, None, b"HTTP/1.1 413 Content Too Large\r\n", id="413"),
        pytest.param(
            431,
            None,
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
            id="431",
        ),
        pytest.param(
            505, None, b"HTTP/1.1 505 HTTP Version Not Supported\r\n", id="505"
        ),
        pytest.param(299, None, b"HTTP/1.1 299 Unknown\r\n", id="unregistered"),
        pytest.param(200, b"Fine", b"HTTP/1.1 200 Fine\r\n", id="custom-reason"),
        pytest.param(599, b"", b"HTTP/1.1 599 \r\n", id="empty-reason"),
    ],
)
def test_statusLine(status: int, reason: bytes | None, expected: bytes) -> None:
    """RFC 9110 §6.2: always HTTP/1.1, whatever the request's version."""
    assert statusLine(status, reason) == expected


@pytest.mark.parametrize(
    ("status", "reason"),
    [(99, None), (600, None), (1000, None), (200, b"OK\r\nX: 1"), (200, b"\x00")],
)
def test_statusLineInvalid(status: int, reason: bytes | None) -> None:
    with pytest.raises(ValueError):
        statusLine(status, reason)


def test_everyStandardCodeHasAReason() -> None:
    for code in (100, 101, 201, 301, 302, 307, 308, 400, 408, 414, 417, 500, 501):
        line = statusLine(code)
        assert line.startswith(b"HTTP/1.1 %d " % code)
        assert not line.endswith(b" Unknown\r\n")


def test_encodeHeaderBlock() -> None:
    block = encodeHeaderBlock(
        statusLine(200), [(b"Content-Length", b"5"), (b"X-A", b"b c")]
    )
    assert block == b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b c\r\n\r\n"
    assert encodeHeaderBlock(statusLine(204), []) == b"HTTP/1.1 204 No Content\r\n\r\n"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param(b"X", b"a\r\nSet-Cookie: evil", id="rfc9110-5.5-crlf-in-value"),
        pytest.param(b"X", b"a\nb", id="rfc9110-5.5-lf-in-value"),
        pytest.param(b"X", b"a\rb", id="rfc9110-5.5-cr-in-value"),
        pytest.param(b"X", b"a\x00b", id="rfc9110-5.5-nul-in-value"),
        pytest.param(b"X", b"a\x7f", id="rfc9110-5.5-del-in-value"),
        pytest.param(b"X Y", b"1", id="rfc9110-5.1-space-in-name"),
        pytest.param(b"X:", b"1", id="rfc9110-5.1-colon-in-name"),
        pytest.param(b"", b"1", id="rfc9110-5.1-empty-name"),
    ],
)
def test_validateResponseField(name: bytes, value: bytes) -> None:
    with pytest.raises(ResponseFramingError):
        validateResponseField(name, value)
    with pytest.raises(ResponseFramingError):
        encodeHeaderBlock(statusLine(200), [(name, value)])


def test_validateResponseFieldAccepts() -> None:
    validateResponseField(b"X-Ok", b"")
    validateResponseField(b"X-Ok", b"a\tb \x80\xff")
