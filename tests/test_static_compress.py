"""
``StaticFiles`` round two: compression on the fly (negotiation, Vary, ETag
per coding, 304 and ranges, the cache, streaming with backpressure, HTTP/1.0),
error pages and the single-page fallback; handler calls and wire tests on
``StringTransport`` + ``Clock``.  Real sockets (curl, REDbot) are in
``test_static_compress_socket.py``.
"""

from __future__ import annotations

import gzip
import importlib
import os
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.web.iweb import UNKNOWN_LENGTH

from connserver._handlers import static as _static
from connserver._handlers.compress import GZIP_LEVEL, CompressingProducer
from connserver._handlers.static import COMPRESS_BLOCK_BYTES, StaticFiles

from ._harness import connect
from ._helpers import recordOsCalls
from .test_static import fields, get

brotli: Any = importlib.import_module("brotli")

#: Realistic, repetitive HTML: compresses well, as real pages do.
PAGE = b"".join(
    b'<div class="row"><a href="/item/%d">Item number %d</a> <span>%s</span></div>\n'
    % (i, i, b"lorem ipsum dolor sit amet " * (i % 4))
    for i in range(200)
)
ROUTE_INDEX = b"<!doctype html><title>app</title><div id=root></div>"


@pytest.fixture
def clockStart() -> float:
    """The files' mtimes are wall-clock times: the shared clock starts now."""
    return time.time()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    base = tmp_path / "root"
    base.mkdir()
    (base / "page.html").write_bytes(PAGE)
    (base / "small.html").write_bytes(b"<p>tiny</p>")
    (base / "data.json").write_bytes(b'{"k": "%s"}' % (b"v" * 2000))
    (base / "blob.bin").write_bytes(bytes(4096))
    (base / "index.html").write_bytes(ROUTE_INDEX)
    (base / "404.html").write_bytes(b"<h1>custom not found</h1>")
    old = time.time() - 100
    for path in base.rglob("*"):
        os.utime(path, (old, old))
    return base


def handler(root: Path, clock: Clock, **options: Any) -> StaticFiles:
    return StaticFiles(root, reactor=clock, **options)


AE_GZIP = (b"accept-encoding", b"gzip")
AE_BROWSER = (b"accept-encoding", b"gzip, deflate, br, zstd")


# -- negotiation and headers ---------------------------------------------------


def test_gzipOnTheFly(root: Path, clock: Clock) -> None:
    files = handler(root, clock)
    identity = get(files, b"/page.html")
    response = get(files, b"/page.html", AE_GZIP)
    got = fields(response)
    assert response.code == 200
    assert got[b"content-encoding"] == b"gzip"
    assert got[b"content-type"] == b"text/html; charset=utf-8"
    assert got[b"vary"] == b"Accept-Encoding"
    assert isinstance(response.body, bytes)
    assert gzip.decompress(response.body) == PAGE
    assert len(response.body) < len(PAGE) // 3
    # A strong ETag of its own, the identity one with -gz inside the quotes.
    plainTag = fields(identity)[b"etag"]
    assert got[b"etag"] == plainTag[:-1] + b'-gz"'
    # Ranges are for the identity coding only.
    assert b"accept-ranges" not in got
    assert fields(identity)[b"accept-ranges"] == b"bytes"


def test_brotliPreferredOnTies(root: Path, clock: Clock) -> None:
    response = get(handler(root, clock), b"/page.html", AE_BROWSER)
    got = fields(response)
    assert got[b"content-encoding"] == b"br"
    assert got[b"etag"].endswith(b'-br"')
    assert isinstance(response.body, bytes)
    assert brotli.decompress(response.body) == PAGE


def test_qValuesChooseGzipOverBr(root: Path, clock: Clock) -> None:
    response = get(
        handler(root, clock), b"/page.html", (b"accept-encoding", b"br;q=0.5, gzip")
    )
    assert fields(response)[b"content-encoding"] == b"gzip"


def test_identityResponseVaries(root: Path, clock: Clock) -> None:
    for sent in [(), ((b"accept-encoding", b"deflate"),)]:
        response = get(handler(root, clock), b"/page.html", *sent)
        got = fields(response)
        assert response.body == PAGE
        assert b"content-encoding" not in got
        assert got[b"vary"] == b"Accept-Encoding"


@pytest.mark.parametrize(
    "name, compressed",
    [
        ("page.html", True),
        ("data.json", True),
        ("small.html", False),  # under 1 KiB
        ("blob.bin", False),  # not a compressible type
    ],
)
def test_whatIsCompressed(
    root: Path, clock: Clock, name: str, compressed: bool
) -> None:
    response = get(handler(root, clock), b"/" + name.encode(), AE_GZIP)
    got = fields(response)
    assert (b"content-encoding" in got) is compressed
    # Vary only where the response depends on Accept-Encoding.
    assert (b"vary" in got) is compressed


@pytest.mark.parametrize(
    "contentType, compressible",
    [
        (b"text/plain; charset=utf-8", True),
        (b"text/css", True),
        (b"application/json", True),
        (b"text/javascript; charset=utf-8", True),
        (b"image/svg+xml; charset=utf-8", True),
        (b"application/xml", True),
        (b"application/atom+xml", True),
        (b"application/ld+json", True),
        (b"application/wasm", True),
        (b"image/png", False),
        (b"application/gzip", False),
        (b"font/woff2", False),
        (b"application/octet-stream", False),
    ],
)
def test_compressibleTypes(contentType: bytes, compressible: bool) -> None:
    assert _static._compressible(contentType) is compressible


def test_minCompressBytesConfigurable(root: Path, clock: Clock) -> None:
    response = get(handler(root, clock, minCompressBytes=5), b"/small.html", AE_GZIP)
    assert fields(response)[b"content-encoding"] == b"gzip"
    response = get(
        handler(root, clock, minCompressBytes=len(PAGE) + 1), b"/page.html", AE_GZIP
    )
    assert b"content-encoding" not in fields(response)


def test_compressOff(root: Path, clock: Clock) -> None:
    response = get(handler(root, clock, compress=False), b"/page.html", AE_GZIP)
    got = fields(response)
    assert response.body == PAGE
    assert b"content-encoding" not in got and b"vary" not in got


@pytest.mark.parametrize(
    "acceptEncoding", [b"identity;q=0", b"*;q=0", b"gzip;q=0, br;q=0, identity;q=0"]
)
def test_nothingAcceptable406(root: Path, clock: Clock, acceptEncoding: bytes) -> None:
    response = get(
        handler(root, clock), b"/page.html", (b"accept-encoding", acceptEncoding)
    )
    assert response.code == 406
    assert fields(response)[b"vary"] == b"Accept-Encoding"


def test_identityExcludedButGzipAcceptable(root: Path, clock: Clock) -> None:
    response = get(
        handler(root, clock), b"/page.html", (b"accept-encoding", b"gzip, identity;q=0")
    )
    assert fields(response)[b"content-encoding"] == b"gzip"


def test_notNegotiatedResourceIgnoresExclusion(root: Path, clock: Clock) -> None:
    """RFC 9110 §12.1: a resource not subject to negotiation may disregard it."""
    response = get(handler(root, clock), b"/blob.bin", (b"accept-encoding", b"*;q=0"))
    assert response.code == 200


def test_headAnswersLikeGet(root: Path, clock: Clock) -> None:
    files = handler(root, clock)
    full = get(files, b"/page.html", AE_GZIP)
    head = get(files, b"/page.html", AE_GZIP, method=b"HEAD")
    assert head.code == 200
    assert list(head.headers) == list(full.headers)


# -- conditional requests and ranges, per coding ---------------------------------


def test_notModifiedPerEncoding(root: Path, clock: Clock) -> None:
    files = handler(root, clock)
    gzTag = fields(get(files, b"/page.html", AE_GZIP))[b"etag"]
    plainTag = fields(get(files, b"/page.html"))[b"etag"]
    notModified = get(files, b"/page.html", AE_GZIP, (b"if-none-match", gzTag))
    assert notModified.code == 304
    assert fields(notModified)[b"etag"] == gzTag
    assert fields(notModified)[b"vary"] == b"Accept-Encoding"
    # The gzip tag does not validate the identity representation ...
    plain = get(files, b"/page.html", (b"if-none-match", gzTag))
    assert plain.code == 200 and plain.body == PAGE
    # ... nor the identity tag the gzip one.
    assert get(files, b"/page.html", AE_GZIP, (b"if-none-match", plainTag)).code == 200
    plainNotModified = get(files, b"/page.html", (b"if-none-match", plainTag))
    assert plainNotModified.code == 304
    assert fields(plainNotModified)[b"vary"] == b"Accept-Encoding"
    # If-Match is a strong comparison against the selected representation.
    failed = get(files, b"/page.html", AE_GZIP, (b"if-match", plainTag))
    assert failed.code == 412
    assert fields(failed)[b"vary"] == b"Accept-Encoding"
    assert get(files, b"/page.html", AE_GZIP, (b"if-match", gzTag)).code == 200


def test_rangeServedFromIdentity(root: Path, clock: Clock) -> None:
    files = handler(root, clock)
    partial = get(files, b"/page.html", AE_GZIP, (b"range", b"bytes=10-19"))
    got = fields(partial)
    assert partial.code == 206
    assert partial.body == PAGE[10:20]
    assert b"content-encoding" not in got
    assert got[b"content-range"] == b"bytes 10-19/%d" % len(PAGE)
    assert got[b"vary"] == b"Accept-Encoding"
    # An If-Range with the gzip tag names another representation: full 200.
    gzTag = fields(get(files, b"/page.html", AE_GZIP))[b"etag"]
    full = get(
        files, b"/page.html", AE_GZIP, (b"range", b"bytes=0-9"), (b"if-range", gzTag)
    )
    assert full.code == 200 and full.body == PAGE


def test_rangeIgnoredWhenIdentityExcluded(root: Path, clock: Clock) -> None:
    response = get(
        handler(root, clock),
        b"/page.html",
        (b"accept-encoding", b"gzip, identity;q=0"),
        (b"range", b"bytes=0-9"),
    )
    assert response.code == 200
    assert isinstance(response.body, bytes)
    assert gzip.decompress(response.body) == PAGE


# -- the cache: compressed once per file version --------------------------------


def test_compressedOncePerFileVersion(
    root: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bytes] = []
    real = _static.compressBytes

    def counting(coding: bytes, data: bytes) -> bytes:
        calls.append(coding)
        return real(coding, data)

    monkeypatch.setattr(_static, "compressBytes", counting)
    files = handler(root, clock)
    for _ in range(5):
        response = get(files, b"/page.html", AE_GZIP)
        assert isinstance(response.body, bytes)
        assert gzip.decompress(response.body) == PAGE
    get(files, b"/%70age.html", AE_GZIP)  # another spelling, the same file
    get(files, b"/page.html", AE_GZIP, method=b"HEAD")
    assert calls == [b"gzip"]
    get(files, b"/page.html", AE_BROWSER)
    get(files, b"/page.html", AE_BROWSER)
    assert calls == [b"gzip", b"br"]
    # The compressed bytes count toward the cache's bound.
    assert files._cache.bytes > 2 * len(PAGE) // 4
    # A new version of the file is compressed again, once.
    (root / "page.html").write_bytes(PAGE + b"<!-- v2 -->")
    for _ in range(3):
        response = get(files, b"/page.html", AE_GZIP)
        assert isinstance(response.body, bytes)
        assert gzip.decompress(response.body).endswith(b"<!-- v2 -->")
    assert calls == [b"gzip", b"br", b"gzip"]


def test_variantNotKeptWhenCacheTooSmall(
    root: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bytes] = []
    real = _static.compressBytes
    monkeypatch.setattr(
        _static, "compressBytes", lambda c, d: calls.append(c) or real(c, d)
    )
    # Room for the file, not for the file and its compressed copy.
    files = handler(root, clock, maxCacheBytes=len(PAGE) + 1200)
    for _ in range(2):
        response = get(files, b"/page.html", AE_GZIP)
        assert isinstance(response.body, bytes)
        assert gzip.decompress(response.body) == PAGE
    assert calls == [b"gzip", b"gzip"]
    assert files._cache.bytes <= len(PAGE) + 1200


def test_precompressedSiblingWins(
    root: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    sibling = gzip.compress(PAGE, 9)
    (root / "page.html.gz").write_bytes(sibling)
    monkeypatch.setattr(_static, "compressBytes", None)  # never called
    files = handler(root, clock, precompressed=True)
    for sent in (AE_GZIP, AE_BROWSER):
        response = get(files, b"/page.html", sent)
        assert response.body == sibling
        assert fields(response)[b"content-encoding"] == b"gzip"
        assert fields(response)[b"vary"] == b"Accept-Encoding"


def test_precompressedWithoutSiblingCompressesOnTheFly(
    root: Path, clock: Clock
) -> None:
    files = handler(root, clock, precompressed=True)
    response = get(files, b"/page.html", AE_BROWSER)
    assert fields(response)[b"content-encoding"] == b"br"
    assert fields(get(files, b"/page.html"))[b"vary"] == b"Accept-Encoding"


# -- large files: streamed compression -------------------------------------------


def bigText(size: int) -> bytes:
    """Text that compresses, but not to nothing (line numbers differ)."""
    lines = []
    total = 0
    index = 0
    while total < size:
        line = b"<li>entry %08d: %s</li>\n" % (index, os.urandom(6).hex().encode())
        lines.append(line)
        total += len(line)
        index += 1
    return b"".join(lines)[:size]


def test_largeFileStreamsCompressed(root: Path, clock: Clock) -> None:
    content = bigText(300_000)
    (root / "big.txt").write_bytes(content)
    files = handler(root, clock, maxCachedFileBytes=1000)
    response = get(files, b"/big.txt", AE_GZIP)
    assert isinstance(response.body, CompressingProducer)
    assert response.body.length is UNKNOWN_LENGTH
    got = fields(response)
    assert got[b"content-encoding"] == b"gzip"
    assert got[b"etag"].endswith(b'-gz"')
    assert got[b"vary"] == b"Accept-Encoding"
    assert gzip.decompress(drainUnknown(response.body, clock)) == content
    brResponse = get(files, b"/big.txt", AE_BROWSER)
    assert brotli.decompress(drainUnknown(brResponse.body, clock)) == content
    # A 304 for the streamed variant: no length (it is not known).
    notModified = get(files, b"/big.txt", AE_GZIP, (b"if-none-match", got[b"etag"]))
    assert notModified.code == 304 and notModified.body == b""
    head = get(files, b"/big.txt", AE_GZIP, method=b"HEAD")
    assert head.code == 200 and head.body == b""
    assert list(head.headers) == list(response.headers)


def drainUnknown(body: Any, clock: Clock) -> bytes:
    from ._helpers import FakeConsumer

    consumer = FakeConsumer()
    done = body.startProducing(consumer)
    results: list[object] = []
    done.addBoth(results.append)
    while not results:
        clock.advance(0)
    assert results == [None], results
    return b"".join(consumer.data)


def test_streamedCompressionFollowsBackpressure(
    root: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = bigText(40 * COMPRESS_BLOCK_BYTES)
    (root / "big.txt").write_bytes(content)
    reads = recordOsCalls(monkeypatch, "pread", record=lambda name, args: args[1])
    conn = connect(handler(root, clock, maxCachedFileBytes=1000), clock=clock)
    conn.send(b"GET /big.txt HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
    # One turn: a bounded number of blocks, never the whole file.
    assert len(reads) == _static._COMPRESS_BLOCKS_PER_TURN
    assert max(reads) == COMPRESS_BLOCK_BYTES
    conn.protocol.flow.pauseProducing()  # the transport's buffer is full
    written = len(conn.output())
    for _ in range(5):
        clock.advance(0)
    assert len(reads) == _static._COMPRESS_BLOCKS_PER_TURN
    assert len(conn.output()) == written
    conn.protocol.flow.resumeProducing()
    for _ in range(100):
        clock.advance(0)
    (response,) = conn.responses()
    assert response.header(b"transfer-encoding") == b"chunked"
    assert response.header(b"content-length") is None
    assert gzip.decompress(response.body) == content
    assert sum(reads) == len(content)
    assert not conn.closing
    conn.lose()
    assert clock.getDelayedCalls() == []


def test_streamedCompressionStopsWhenClientGoes(root: Path, clock: Clock) -> None:
    (root / "big.txt").write_bytes(bigText(40 * COMPRESS_BLOCK_BYTES))
    files = handler(root, clock, maxCachedFileBytes=1000)
    get(files, b"/big.txt")  # cached: the count below sees only the stream
    descriptors = len(os.listdir("/proc/self/fd"))
    conn = connect(files, clock=clock)
    conn.send(b"GET /big.txt HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
    assert len(os.listdir("/proc/self/fd")) == descriptors + 1
    conn.lose()
    clock.advance(0)
    assert clock.getDelayedCalls() == []
    # The file producer under the compressor was stopped: its descriptor closed.
    assert len(os.listdir("/proc/self/fd")) == descriptors


@pytest.mark.parametrize(
    "connection, reason",
    [(b"keep-alive", "unknown-length-http10"), (None, "http10-default")],
)
def test_http10StreamedCompressedIsCloseDelimited(
    root: Path, clock: Clock, connection: bytes | None, reason: str
) -> None:
    content = bigText(200_000)
    (root / "big.txt").write_bytes(content)
    conn = connect(handler(root, clock, maxCachedFileBytes=1000), clock=clock)
    request = b"GET /big.txt HTTP/1.0\r\nAccept-Encoding: gzip\r\n"
    if connection is not None:
        request += b"Connection: " + connection + b"\r\n"
    conn.send(request + b"\r\n")
    for _ in range(50):
        clock.advance(0)
    head, _, body = conn.output().partition(b"\r\n\r\n")
    assert b"\r\nConnection: close" in head
    assert b"Content-Length" not in head and b"Transfer-Encoding" not in head
    assert b"\r\nContent-Encoding: gzip" in head
    assert gzip.decompress(body) == content
    assert conn.closing
    assert conn.protocol.closeReason == reason


def test_http10SmallCompressedKeepsAlive(root: Path, clock: Clock) -> None:
    conn = connect(handler(root, clock), clock=clock)
    conn.send(
        b"GET /page.html HTTP/1.0\r\nAccept-Encoding: gzip\r\n"
        b"Connection: keep-alive\r\n\r\n"
    )
    (response,) = conn.responses()
    assert response.header(b"content-length") == b"%d" % len(response.body)
    assert response.header(b"connection") == b"keep-alive"
    assert gzip.decompress(response.body) == PAGE
    assert not conn.closing
    conn.lose()


def test_streamedFileChangingAborts(root: Path, clock: Clock) -> None:
    content = bigText(40 * COMPRESS_BLOCK_BYTES)
    (root / "big.txt").write_bytes(content)
    conn = connect(handler(root, clock, maxCachedFileBytes=1000), clock=clock)
    conn.send(b"GET /big.txt HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
    os.truncate(root / "big.txt", len(content) // 2)
    for _ in range(50):
        clock.advance(0)
    assert conn.transport.aborted
    assert conn.protocol.closeReason == "response-error"


def test_wireSmallGzipExact(root: Path, clock: Clock) -> None:
    conn = connect(handler(root, clock), clock=clock)
    conn.send(
        b"GET /page.html HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n"
        b"HEAD /page.html HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n"
    )
    full, head = conn.responses(b"GET", b"HEAD")
    assert full.header(b"content-length") == b"%d" % len(full.body)
    assert head.headers == full.headers
    assert zlib.decompress(full.body, 16 + zlib.MAX_WBITS) == PAGE
    # The same level as gzip -6 (compared in bench/bench_compress.py).
    assert GZIP_LEVEL == 6
    conn.lose()


# -- error pages -----------------------------------------------------------------


def test_errorPageKeepsStatus(root: Path, clock: Clock) -> None:
    files = handler(root, clock, errorPages={404: "/404.html"})
    response = get(files, b"/missing.txt")
    assert response.code == 404
    assert response.body == b"<h1>custom not found</h1>"
    got = fields(response)
    assert got[b"content-type"] == b"text/html; charset=utf-8"
    assert b"etag" not in got and b"last-modified" not in got


def test_errorPageKeepsFieldsOfTheError(root: Path, clock: Clock) -> None:
    (root / "405.html").write_bytes(b"no such method")
    files = handler(root, clock, errorPages={405: "/405.html"})
    response = get(files, b"/page.html", method=b"DELETE")
    assert response.code == 405
    assert response.body == b"no such method"
    assert fields(response)[b"allow"] == b"GET, HEAD"


def test_missingErrorPageFallsBackToBuiltIn(root: Path, clock: Clock) -> None:
    files = handler(root, clock, errorPages={404: "/nope.html", 403: "/.hidden.html"})
    response = get(files, b"/missing.txt")
    assert response.code == 404 and response.body == b"404 Not Found\n"
    (root / "dir").mkdir()
    response = get(files, b"/dir/")
    assert response.code == 403 and response.body == b"403 Forbidden\n"


def test_errorPageOnHeadOverTheWire(root: Path, clock: Clock) -> None:
    conn = connect(handler(root, clock, errorPages={404: "/404.html"}), clock=clock)
    conn.send(
        b"HEAD /missing HTTP/1.1\r\nHost: x\r\n\r\nGET /missing HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    head, full = conn.responses(b"HEAD", b"GET")
    assert head.status == full.status == 404
    assert head.body == b""
    assert full.body == b"<h1>custom not found</h1>"
    assert head.header(b"content-length") == full.header(b"content-length")
    assert not conn.closing
    conn.lose()


@pytest.mark.parametrize(
    "pages, error",
    [
        ({302: "/x.html"}, "not 4xx or 5xx"),
        ({600: "/x.html"}, "not 4xx or 5xx"),
        ({404: "x.html"}, "expected a file path"),
        ({404: "/a/../x.html"}, "expected a file path"),
        ({404: "/dir/"}, "expected a file path"),
    ],
)
def test_errorPagesValidated(
    root: Path, clock: Clock, pages: dict[int, str], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        handler(root, clock, errorPages=pages)


# -- single-page application fallback --------------------------------------------


@pytest.mark.parametrize(
    "target, status, body",
    [
        (b"/app/users/42", 200, ROUTE_INDEX),
        (b"/settings", 200, ROUTE_INDEX),
        (b"/v1.2/users", 200, ROUTE_INDEX),  # only the last segment counts
        (b"/deep/route/", 200, ROUTE_INDEX),
        (b"/missing.js", 404, b"404 Not Found\n"),
        (b"/img/logo.png", 404, b"404 Not Found\n"),
        (b"/page.html", 200, PAGE),  # existing files are served as they are
    ],
)
def test_fallback(
    root: Path, clock: Clock, target: bytes, status: int, body: bytes
) -> None:
    files = handler(root, clock, fallback="/index.html")
    response = get(files, target)
    assert response.code == status
    assert response.body == body


def test_fallbackOnlyForGetAndHead(root: Path, clock: Clock) -> None:
    files = handler(root, clock, fallback="/index.html")
    head = get(files, b"/app/route", method=b"HEAD")
    assert head.code == 200
    assert get(files, b"/app/route", method=b"POST").code == 405


def test_fallbackIsConditionalAndCompressed(root: Path, clock: Clock) -> None:
    (root / "index.html").write_bytes(PAGE)
    files = handler(root, clock, fallback="/index.html")
    response = get(files, b"/app/route", AE_GZIP)
    assert fields(response)[b"content-encoding"] == b"gzip"
    etag = fields(response)[b"etag"]
    assert get(files, b"/other", AE_GZIP, (b"if-none-match", etag)).code == 304


def test_fallbackMissingThenErrorPage(root: Path, clock: Clock) -> None:
    (root / "index.html").unlink()
    files = handler(root, clock, fallback="/index.html", errorPages={404: "/404.html"})
    response = get(files, b"/app/route")
    assert response.code == 404
    assert response.body == b"<h1>custom not found</h1>"
    # With an extension: the error page, never the fallback.
    (root / "index.html").write_bytes(ROUTE_INDEX)
    response = get(files, b"/x.css")
    assert response.code == 404 and response.body == b"<h1>custom not found</h1>"


def test_fallbackValidated(root: Path, clock: Clock) -> None:
    with pytest.raises(ValueError, match="expected a file path"):
        handler(root, clock, fallback="index.html")


# -- the command line ------------------------------------------------------------


def parse(*argv: str) -> Any:
    from connserver.tap import Options

    options = Options()
    options.parseOptions(list(argv))
    return options


def test_cliFlags(root: Path) -> None:
    options = parse(
        "--path",
        str(root),
        "--error-page",
        "404=/404.html",
        "--error-page",
        "500=/500.html",
        "--fallback",
        "/index.html",
        "--no-compress",
    )
    assert options["error-pages"] == {404: "/404.html", 500: "/500.html"}
    assert options["fallback"] == "/index.html"
    assert options["no-compress"]
    assert not parse("--path", str(root))["no-compress"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--error-page", "302=/x.html"], "4xx or 5xx"),
        (["--error-page", "404"], "STATUS=/PATH"),
        (["--error-page", "404=x.html"], "expected a file path"),
        (["--fallback", "index.html"], "expected a file path"),
        (["--compress", "--no-compress"], "contradicts"),
        (["--handler", "x:y", "--fallback", "/i.html"], "applies to --path"),
        (["--handler", "x:y", "--error-page", "404=/e.html"], "--error-page applies"),
    ],
)
def test_cliErrors(root: Path, argv: list[str], message: str) -> None:
    with pytest.raises(usage.UsageError, match=message):
        parse(*argv, *(["--path", str(root)] if "--handler" not in argv else []))


@pytest.mark.parametrize("noCompress", [False, True])
def test_cliFlagsReachStaticFiles(root: Path, noCompress: bool) -> None:
    from connserver import tap

    argv = ["--path", str(root), "--error-page", "404=/404.html"]
    argv += ["--fallback", "/index.html"] + (["--no-compress"] if noCompress else [])
    service: Any = tap.makeService(parse(*argv))
    files = service.factory.handler
    assert isinstance(files, StaticFiles)
    assert files.compress is not noCompress
    assert files.errorPages == {404: b"/404.html"}
    assert get(files, b"/app/route").body == ROUTE_INDEX
    assert get(files, b"/gone.css").body == b"<h1>custom not found</h1>"
    response = get(files, b"/page.html", AE_GZIP)
    assert (b"content-encoding" in fields(response)) is not noCompress


def test_withoutBrotli(
    root: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the brotli extra, br is never chosen: gzip, identity, or 406."""
    monkeypatch.setattr(_static, "SUPPORTED_CODINGS", (b"gzip",))
    files = handler(root, clock)
    assert fields(get(files, b"/page.html", AE_BROWSER))[b"content-encoding"] == b"gzip"
    brOnly = get(files, b"/page.html", (b"accept-encoding", b"br"))
    assert brOnly.body == PAGE
    assert fields(brOnly)[b"vary"] == b"Accept-Encoding"
    refused = get(files, b"/page.html", (b"accept-encoding", b"br, identity;q=0"))
    assert refused.code == 406


def test_compressorsWithoutBrotli(monkeypatch: pytest.MonkeyPatch) -> None:
    from connserver._handlers import compress as _compress

    monkeypatch.setattr(_compress, "_brotli", None)
    with pytest.raises(ValueError, match="unsupported content coding"):
        _compress.compressBytes(b"br", b"x")
    assert gzip.decompress(_compress.compressBytes(b"gzip", b"x" * 100)) == b"x" * 100
