"""
``StaticFiles``: unit tests calling the handler with hand-made requests,
then wire tests through ``ConnectionFactory(StaticFiles(root))`` on
``StringTransport`` + ``Clock`` (exact bytes, 304 persistence, HEAD, ranges).
Real sockets are in ``test_static_socket.py``.
"""

from __future__ import annotations

import email.utils
import html
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.iweb import IBodyProducer

from connserver._connection.message import Request, Response
from connserver._handlers import static as _static
from connserver._handlers.static import (
    MAX_PATH_BYTES,
    MAX_RANGES,
    READ_CHUNK_BYTES,
    FileChangedError,
    StaticFiles,
)
from connserver._http.headers import Headers

from ._helpers import FakeConsumer, recordOsCalls

HELLO = b"hello world"


@pytest.fixture
def clockStart() -> float:
    """The files' mtimes are wall-clock times: the shared clock starts now."""
    return time.time()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    base = tmp_path / "root"
    base.mkdir()
    (base / "hello.txt").write_bytes(HELLO)
    (base / "page.html").write_bytes(b"<p>hi</p>")
    (base / "empty.txt").write_bytes(b"")
    (base / "thousand.bin").write_bytes(bytes(range(256)) * 3 + bytes(232))
    (base / ".secret").write_bytes(b"hidden")
    (base / "sub").mkdir()
    (base / "sub" / "index.html").write_bytes(b"<h1>index</h1>")
    (base / "bare").mkdir()
    (base / "bare" / "b.txt").write_bytes(b"b")
    (base / "bare" / "a dir").mkdir()
    (base / "bare" / "<i>&\"x'.txt").write_bytes(b"x")
    (base / "bare" / ".dot").write_bytes(b"d")
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"TOP SECRET")
    # Make the files a few seconds old, so their Last-Modified is a strong
    # validator (RFC 9110 §8.8.2.2) whatever the clock says.
    old = time.time() - 100
    for path in base.rglob("*"):
        os.utime(path, (old, old), follow_symlinks=False)
    return base


def get(
    handler: StaticFiles,
    target: bytes,
    *fields: tuple[bytes, bytes],
    method: bytes = b"GET",
    version: tuple[int, int] = (1, 1),
) -> Response:
    request = Request(method, target, version, Headers([(b"host", b"x"), *fields]))
    response = handler(request)
    assert isinstance(response, Response)
    return response


def fields(response: Response) -> dict[bytes, bytes]:
    return {name.lower(): value for name, value in response.headers}


def drain(response: Response, clock: Clock) -> bytes:
    """The whole body of ``response``, running a producer to its end."""
    body = response.body
    if isinstance(body, bytes):
        return body
    assert IBodyProducer.providedBy(body)
    producer: Any = body
    consumer = FakeConsumer()
    done = producer.startProducing(consumer)
    results: list[object] = []
    done.addBoth(results.append)
    while not results:
        clock.advance(0)
    assert results == [None], results
    data = b"".join(consumer.data)
    assert len(data) == body.length
    return data


# -- construction -------------------------------------------------------------


def test_rootMustBeADirectory(tmp_path: Path, clock: Clock) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        StaticFiles(tmp_path / "missing", reactor=clock)
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(ValueError, match="not a directory"):
        StaticFiles(tmp_path / "f", reactor=clock)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads everything")
def test_rootMustBeReadable(tmp_path: Path, clock: Clock) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0)
    try:
        with pytest.raises(ValueError, match="not readable"):
            StaticFiles(locked, reactor=clock)
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"cacheControl": "a\nb"}, id="cache-control-newline"),
        pytest.param({"maxCacheBytes": -1}, id="negative-cache"),
        pytest.param({"maxCachedFileBytes": True}, id="bool-size"),
    ],
)
def test_badOptions(root: Path, clock: Clock, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        StaticFiles(root, reactor=clock, **kwargs)


# -- plain GET and HEAD -------------------------------------------------------


def test_getSmallFile(root: Path, clock: Clock) -> None:
    handler = StaticFiles(root, reactor=clock)
    response = get(handler, b"/hello.txt")
    st = os.stat(root / "hello.txt")
    assert response.code == 200
    assert response.body == HELLO
    assert list(response.headers) == [
        (b"Content-Type", b"text/plain; charset=utf-8"),
        (
            b"Last-Modified",
            email.utils.formatdate(int(st.st_mtime), usegmt=True).encode(),
        ),
        (b"ETag", b'"%x-%x-%x"' % (st.st_ino, st.st_size, st.st_mtime_ns)),
        (b"Accept-Ranges", b"bytes"),
    ]


@pytest.mark.parametrize(
    "name, expected",
    [
        ("a.html", b"text/html; charset=utf-8"),
        ("a.css", b"text/css; charset=utf-8"),
        ("a.js", b"text/javascript; charset=utf-8"),
        ("a.json", b"application/json; charset=utf-8"),
        ("a.svg", b"image/svg+xml; charset=utf-8"),
        ("a.png", b"image/png"),
        ("a.woff2", b"font/woff2"),
        ("a.tar.gz", b"application/gzip"),
        ("a.unknownext", b"application/octet-stream"),
        ("noextension", b"application/octet-stream"),
    ],
)
def test_contentType(tmp_path: Path, clock: Clock, name: str, expected: bytes) -> None:
    (tmp_path / name).write_bytes(b"x")
    response = get(StaticFiles(tmp_path, reactor=clock), b"/" + name.encode())
    assert fields(response)[b"content-type"] == expected


def test_headSmallFileHasGetHeaders(root: Path, clock: Clock) -> None:
    handler = StaticFiles(root, reactor=clock)
    head = get(handler, b"/hello.txt", method=b"HEAD")
    full = get(handler, b"/hello.txt")
    assert head.code == 200
    assert list(head.headers) == list(full.headers)
    assert head.bodyLength() == full.bodyLength() == len(HELLO)


def test_headLargeFileDoesNotOpenIt(
    root: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = StaticFiles(root, reactor=clock, maxCachedFileBytes=4)
    full = get(handler, b"/thousand.bin")
    opened = recordOsCalls(monkeypatch, "open", record=lambda name, args: args[0])
    head = get(handler, b"/thousand.bin", method=b"HEAD")
    assert opened == []
    assert head.code == 200
    assert list(head.headers) == list(full.headers)
    assert head.bodyLength() == 1000
    assert drain(full, clock) == (root / "thousand.bin").read_bytes()
    assert clock.getDelayedCalls() == []


def test_largeFileStreams(root: Path, clock: Clock) -> None:
    big = root / "big.bin"
    content = os.urandom(3 * READ_CHUNK_BYTES + 17)
    big.write_bytes(content)
    handler = StaticFiles(root, reactor=clock)
    response = get(handler, b"/big.bin")
    assert response.code == 200
    assert IBodyProducer.providedBy(response.body)
    assert response.bodyLength() == len(content)
    assert drain(response, clock) == content
    assert clock.getDelayedCalls() == []


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"])
def test_otherMethods405(root: Path, clock: Clock, method: bytes) -> None:
    response = get(StaticFiles(root, reactor=clock), b"/hello.txt", method=method)
    assert response.code == 405
    assert fields(response)[b"allow"] == b"GET, HEAD"


def test_optionsAsterisk(root: Path, clock: Clock) -> None:
    response = get(StaticFiles(root, reactor=clock), b"*", method=b"OPTIONS")
    assert response.code == 204
    assert fields(response)[b"allow"] == b"GET, HEAD"


# -- the cache ----------------------------------------------------------------


def test_cacheHitCostsOneStat(
    root: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = StaticFiles(root, reactor=clock)
    get(handler, b"/hello.txt")
    calls = recordOsCalls(monkeypatch, "stat", "lstat", "open", "fstat", "read")
    monkeypatch.setattr(os.path, "realpath", lambda *a, **k: pytest.fail("realpath"))
    response = get(handler, b"/hello.txt")
    assert response.body == HELLO
    assert calls == ["stat"]


def test_cacheRevalidatesChangedFile(root: Path, clock: Clock) -> None:
    handler = StaticFiles(root, reactor=clock)
    first = get(handler, b"/hello.txt")
    path = root / "hello.txt"
    path.write_bytes(b"HELLO WORLD")  # same size, new mtime
    os.utime(path, ns=(0, os.stat(path).st_mtime_ns + 1_000_000_000))
    second = get(handler, b"/hello.txt")
    assert second.body == b"HELLO WORLD"
    assert fields(second)[b"etag"] != fields(first)[b"etag"]


def test_cacheSeesReplacementByRename(root: Path, clock: Clock) -> None:
    handler = StaticFiles(root, reactor=clock)
    get(handler, b"/hello.txt")
    st = os.stat(root / "hello.txt")
    (root / "new").write_bytes(b"replacement")
    os.utime(root / "new", ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(root / "new", root / "hello.txt")
    assert get(handler, b"/hello.txt").body == b"replacement"


def test_cacheForgetsDeletedFile(root: Path, clock: Clock) -> None:
    handler = StaticFiles(root, reactor=clock)
    assert get(handler, b"/hello.txt").code == 200
    (root / "hello.txt").unlink()
    assert get(handler, b"/hello.txt").code == 404


def test_cacheBoundedByEntries(root: Path, clock: Clock) -> None:
    handler = StaticFiles(root, reactor=clock, maxCacheEntries=2)
    for name in (b"/hello.txt", b"/page.html", b"/thousand.bin"):
        assert get(handler, name).code == 200
    assert len(handler._cache) == 2


def test_cacheBoundedByBytes(root: Path, clock: Clock) -> None:
    handler = StaticFiles(root, reactor=clock, maxCacheBytes=2000)
    for name in (b"/hello.txt", b"/page.html", b"/thousand.bin"):
        assert get(handler, name).code == 200
    assert handler._cache.bytes <= 2000
    assert len(handler._cache) < 3


def spellings(name: bytes, count: int) -> list[bytes]:
    """``count`` distinct percent-encoded spellings of ``/name``."""
    out = []
    for mask in range(count):  # bit i set: byte i is percent-encoded
        encoded = b"".join(
            b"%%%02x" % byte if mask >> index & 1 else bytes([byte])
            for index, byte in enumerate(name)
        )
        out.append(b"/" + encoded)
    assert len(set(out)) == count
    return out


def test_cacheKeepsOneEntryPerFileWhateverTheSpelling(root: Path, clock: Clock) -> None:
    """
    128 spellings of one 200 KB file are one cache entry (they were 128, 25.6
    MB: a cheap way to flush the cache), and all serve the same bytes.
    """
    content = os.urandom(200_000)
    (root / "big.txt").write_bytes(content)
    handler = StaticFiles(root, reactor=clock, maxCachedFileBytes=256 * 1024)
    names = spellings(b"big.txt", 128)
    assert names[0] == b"/big.txt" and b"/%62ig.txt" in names
    for target in [*names, b"/big.txt?q=1", b"http://x/big.txt", *names]:
        response = get(handler, target)
        assert (response.code, response.body) == (200, content)
        assert len(handler._cache) == 1
        assert handler._cache.bytes < 210_000
    # Dot segments removed and empty segments merged: the same file, the
    # same one entry.
    for target in (b"/./big.txt", b"//big.txt", b"/%2e/big.txt", b"/x/../big.txt"):
        assert get(handler, target).body == content
    assert len(handler._cache) == 1
    # A hit by any spelling still costs one stat; a change seen through one
    # spelling is seen through all.
    (root / "big.txt").write_bytes(b"new")
    assert get(handler, names[5]).body == b"new"
    assert get(handler, names[0]).body == b"new"
    assert len(handler._cache) == 1


def test_cacheHitByAnotherSpellingCostsOneStat(
    root: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = StaticFiles(root, reactor=clock)
    get(handler, b"/hello.txt")
    get(handler, b"/%68ello.txt")
    calls = recordOsCalls(monkeypatch, "stat", "lstat", "open", "fstat", "read")
    monkeypatch.setattr(os.path, "realpath", lambda *a, **k: pytest.fail("realpath"))
    for target in (b"/%68ello.txt", b"/hello.txt"):
        del calls[:]
        assert get(handler, target).body == HELLO
        assert calls == ["stat"]
    assert len(handler._cache) == 1


def test_cacheDistinguishesVariantsAndFiles(root: Path, clock: Clock) -> None:
    """Different files, or the gzip variant and the .gz file, stay apart."""
    (root / "t.txt.gz").write_bytes(b"gz")
    handler = StaticFiles(root, reactor=clock, precompressed=True)
    plain = get(handler, b"/t.txt.gz")
    assert fields(plain)[b"content-type"] != b"text/plain; charset=utf-8"
    (root / "t.txt").write_bytes(b"t")
    gzipped = get(handler, b"/t.txt", (b"accept-encoding", b"gzip"))
    assert fields(gzipped)[b"content-encoding"] == b"gzip"
    assert fields(gzipped)[b"content-type"] == b"text/plain; charset=utf-8"
    assert b"content-encoding" not in fields(get(handler, b"/t%2etxt.gz"))
    assert get(handler, b"/sub/").body == get(handler, b"/sub/index.html").body
    assert len(handler._cache) == 3  # t.txt.gz twice (variant or not), index


def test_cacheSpellingsPerFileAreBounded(root: Path, clock: Clock) -> None:
    """Spellings of one file cannot grow its entry without bound."""
    handler = StaticFiles(root, reactor=clock)
    get(handler, b"/hello.txt")
    once = handler._cache.bytes
    for target in spellings(b"hello.txt", 200):
        assert get(handler, target).body == HELLO
    assert len(handler._cache) == 1
    assert handler._cache.bytes <= once + 8 * (_static._SPELLING_OVERHEAD + 40)


def test_cacheDisabled(root: Path, clock: Clock) -> None:
    handler = StaticFiles(root, reactor=clock, maxCacheEntries=0)
    assert get(handler, b"/hello.txt").body == HELLO
    assert get(handler, b"/hello.txt").body == HELLO
    assert len(handler._cache) == 0


def test_responsesDoNotShareHeaders(root: Path, clock: Clock) -> None:
    handler = StaticFiles(root, reactor=clock)
    first = get(handler, b"/hello.txt")
    first.headers.add(b"X-Mutated", b"1")
    assert b"x-mutated" not in fields(get(handler, b"/hello.txt"))


def test_futureMtimeIsClampedToNow(root: Path, clock: Clock) -> None:
    path = root / "hello.txt"
    future = clock.seconds() + 86400
    os.utime(path, (future, future))
    response = get(StaticFiles(root, reactor=clock), b"/hello.txt")
    expected = email.utils.formatdate(int(clock.seconds()), usegmt=True).encode()
    assert fields(response)[b"last-modified"] == expected


# -- conditional requests (RFC 9110 §13.2.2) ----------------------------------

PAST = b"Sat, 01 Jan 2000 00:00:00 GMT"
FUTURE = b"Fri, 01 Jan 2100 00:00:00 GMT"


@pytest.mark.parametrize(
    "conditions, status",
    [
        pytest.param([(b"if-match", b"ETAG")], 200, id="if-match-same"),
        pytest.param([(b"if-match", b'"x", ETAG')], 200, id="if-match-in-list"),
        pytest.param([(b"if-match", b"*")], 200, id="if-match-star"),
        pytest.param([(b"if-match", b'"other"')], 412, id="if-match-other"),
        pytest.param([(b"if-match", b"W/ETAG")], 412, id="if-match-weak-is-strong"),
        pytest.param([(b"if-unmodified-since", PAST)], 412, id="ius-past"),
        pytest.param([(b"if-unmodified-since", FUTURE)], 200, id="ius-future"),
        pytest.param([(b"if-unmodified-since", b"garbage")], 200, id="ius-invalid"),
        pytest.param(
            [(b"if-match", b"ETAG"), (b"if-unmodified-since", PAST)],
            200,
            id="if-match-overrides-ius",
        ),
        pytest.param([(b"if-none-match", b"ETAG")], 304, id="inm-same"),
        pytest.param([(b"if-none-match", b"W/ETAG")], 304, id="inm-weak-compare"),
        pytest.param([(b"if-none-match", b"*")], 304, id="inm-star"),
        pytest.param([(b"if-none-match", b'"other"')], 200, id="inm-other"),
        pytest.param([(b"if-modified-since", FUTURE)], 304, id="ims-future"),
        pytest.param([(b"if-modified-since", b"LASTMOD")], 304, id="ims-equal"),
        pytest.param([(b"if-modified-since", PAST)], 200, id="ims-past"),
        pytest.param([(b"if-modified-since", b"junk")], 200, id="ims-invalid"),
        pytest.param(
            [(b"if-none-match", b'"other"'), (b"if-modified-since", FUTURE)],
            200,
            id="inm-overrides-ims",
        ),
        pytest.param(
            [(b"if-match", b'"other"'), (b"if-none-match", b"ETAG")],
            412,
            id="412-before-304",
        ),
        pytest.param(
            [(b"if-unmodified-since", PAST), (b"if-modified-since", FUTURE)],
            412,
            id="ius-before-ims",
        ),
    ],
)
@pytest.mark.parametrize("size", ["cached", "streamed"])
def test_preconditions(
    root: Path,
    clock: Clock,
    conditions: list[tuple[bytes, bytes]],
    status: int,
    size: str,
) -> None:
    handler = StaticFiles(
        root, reactor=clock, maxCachedFileBytes=100 if size == "cached" else 4
    )
    plain = get(handler, b"/hello.txt")
    etag = fields(plain)[b"etag"]
    lastModified = fields(plain)[b"last-modified"]
    sent = [
        (name, value.replace(b"ETAG", etag).replace(b"LASTMOD", lastModified))
        for name, value in conditions
    ]
    response = get(handler, b"/hello.txt", *sent)
    assert response.code == status
    if status == 304:
        # No content is sent for a 304, but its Content-Length is the 200's.
        assert response.bodyLength() == len(HELLO)
        assert fields(response) == {b"etag": etag, b"last-modified": lastModified}
    elif status == 200:
        assert drain(response, clock) == HELLO
    else:
        assert b"hello" not in drain(response, clock)
    assert clock.getDelayedCalls() == []


def test_notModifiedForHead(root: Path, clock: Clock) -> None:
    handler = StaticFiles(root, reactor=clock)
    etag = fields(get(handler, b"/hello.txt"))[b"etag"]
    response = get(handler, b"/hello.txt", (b"if-none-match", etag), method=b"HEAD")
    assert response.code == 304


# -- ranges (RFC 9110 §14) ------------------------------------------------------


@pytest.mark.parametrize(
    "value, status, contentRange, body",
    [
        pytest.param(b"bytes=0-4", 206, b"bytes 0-4/11", b"hello", id="first"),
        pytest.param(b"bytes=6-", 206, b"bytes 6-10/11", b"world", id="open-ended"),
        pytest.param(b"bytes=-5", 206, b"bytes 6-10/11", b"world", id="suffix"),
        pytest.param(b"bytes=-50", 206, b"bytes 0-10/11", HELLO, id="suffix-long"),
        pytest.param(b"bytes=3-100", 206, b"bytes 3-10/11", b"lo world", id="clamp"),
        pytest.param(b"BYTES = 0-0", 206, b"bytes 0-0/11", b"h", id="unit-case-ows"),
        pytest.param(b"bytes=0-1, 3-4", 206, b"bytes 0-4/11", b"hello", id="coalesce"),
        pytest.param(b"bytes=4-4,0-4", 206, b"bytes 0-4/11", b"hello", id="overlap"),
        pytest.param(b"bytes=11-", 416, b"bytes */11", None, id="past-end"),
        pytest.param(b"bytes=-0", 416, b"bytes */11", None, id="suffix-zero"),
        pytest.param(b"bytes=20-30,40-", 416, b"bytes */11", None, id="all-past-end"),
        pytest.param(
            b"bytes=99999999999999999999999-", 416, b"bytes */11", None, id="huge"
        ),
        pytest.param(b"items=0-1", 200, None, HELLO, id="unknown-unit"),
        pytest.param(b"bytes=5-2", 200, None, HELLO, id="last-before-first"),
        pytest.param(b"bytes=abc", 200, None, HELLO, id="garbage"),
        pytest.param(b"bytes=-", 200, None, HELLO, id="bare-dash"),
        pytest.param(b"bytes=", 200, None, HELLO, id="empty-set"),
        pytest.param(
            b"bytes=" + b",".join([b"0-0"] * (MAX_RANGES + 1)),
            200,
            None,
            HELLO,
            id="too-many-ranges",
        ),
        pytest.param(
            b"bytes=" + b",".join([b"0-0"] * MAX_RANGES),
            206,
            b"bytes 0-0/11",
            b"h",
            id="max-ranges-coalesced",
        ),
    ],
)
@pytest.mark.parametrize("size", ["cached", "streamed"])
def test_singleRange(
    root: Path,
    clock: Clock,
    value: bytes,
    status: int,
    contentRange: bytes | None,
    body: bytes | None,
    size: str,
) -> None:
    handler = StaticFiles(
        root, reactor=clock, maxCachedFileBytes=100 if size == "cached" else 4
    )
    response = get(handler, b"/hello.txt", (b"range", value))
    assert response.code == status
    assert fields(response).get(b"content-range") == contentRange
    if body is not None:
        assert drain(response, clock) == body
        assert fields(response)[b"content-type"] == b"text/plain; charset=utf-8"
    assert clock.getDelayedCalls() == []


def parseMultipart(response: Response, content: bytes, clock: Clock) -> list[bytes]:
    contentType = fields(response)[b"content-type"]
    match = re.fullmatch(rb"multipart/byteranges; boundary=([0-9a-f]+)", contentType)
    assert match is not None
    boundary = match.group(1)
    body = drain(response, clock)
    assert body.startswith(b"--" + boundary + b"\r\n")
    assert body.endswith(b"\r\n--" + boundary + b"--\r\n")
    parts = body[: -len(b"\r\n--" + boundary + b"--\r\n")].split(
        b"\r\n--" + boundary + b"\r\n"
    )
    parts[0] = parts[0][len(b"--" + boundary + b"\r\n") :]
    ranges = []
    for part in parts:
        head, _, data = part.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[0] == b"Content-Type: application/octet-stream"
        rangeMatch = re.fullmatch(rb"Content-Range: bytes (\d+)-(\d+)/(\d+)", lines[1])
        assert rangeMatch is not None
        first, last, total = map(int, rangeMatch.groups())
        assert total == len(content)
        assert data == content[first : last + 1]
        ranges.append(b"%d-%d" % (first, last))
    return ranges


@pytest.mark.parametrize("size", ["cached", "streamed"])
def test_multipleRanges(root: Path, clock: Clock, size: str) -> None:
    handler = StaticFiles(
        root, reactor=clock, maxCachedFileBytes=2000 if size == "cached" else 4
    )
    content = (root / "thousand.bin").read_bytes()
    response = get(
        handler, b"/thousand.bin", (b"range", b"bytes=900-,0-9,500-509,-10,5-14")
    )
    assert response.code == 206
    assert b"content-range" not in fields(response)
    # Sorted and coalesced: 0-9 and 5-14 merge, 900- and -10 overlap.
    assert parseMultipart(response, content, clock) == [b"0-14", b"500-509", b"900-999"]
    assert clock.getDelayedCalls() == []


def test_multipartBoundaryDiffers(root: Path, clock: Clock) -> None:
    handler = StaticFiles(root, reactor=clock)
    value = (b"range", b"bytes=0-0,500-500")
    first = fields(get(handler, b"/thousand.bin", value))[b"content-type"]
    second = fields(get(handler, b"/thousand.bin", value))[b"content-type"]
    assert first != second


@pytest.mark.parametrize(
    "ifRange, status",
    [
        pytest.param(b"ETAG", 206, id="etag-match"),
        pytest.param(b'"other"', 200, id="etag-other"),
        pytest.param(b"W/ETAG", 200, id="weak-never-matches"),
        pytest.param(b"LASTMOD", 206, id="date-equal"),
        pytest.param(PAST, 200, id="date-other"),
        pytest.param(b"junk", 200, id="invalid"),
    ],
)
def test_ifRange(root: Path, clock: Clock, ifRange: bytes, status: int) -> None:
    handler = StaticFiles(root, reactor=clock)
    plain = fields(get(handler, b"/hello.txt"))
    value = ifRange.replace(b"ETAG", plain[b"etag"]).replace(
        b"LASTMOD", plain[b"last-modified"]
    )
    response = get(
        handler, b"/hello.txt", (b"range", b"bytes=0-4"), (b"if-range", value)
    )
    assert response.code == status


def test_ifRangeDateIsWeakWhenJustModified(root: Path, clock: Clock) -> None:
    # RFC 9110 §8.8.2.2: a Last-Modified within a second of now is weak, and
    # If-Range needs a strong validator.
    os.utime(root / "hello.txt", (clock.seconds(), clock.seconds()))
    handler = StaticFiles(root, reactor=clock)
    lastModified = fields(get(handler, b"/hello.txt"))[b"last-modified"]
    response = get(
        handler, b"/hello.txt", (b"range", b"bytes=0-4"), (b"if-range", lastModified)
    )
    assert response.code == 200


def test_rangeIgnoredForHead(root: Path, clock: Clock) -> None:
    handler = StaticFiles(root, reactor=clock)
    response = get(handler, b"/hello.txt", (b"range", b"bytes=0-4"), method=b"HEAD")
    assert response.code == 200
    assert response.bodyLength() == len(HELLO)


def test_rangeOnEmptyFileIgnored(root: Path, clock: Clock) -> None:
    response = get(
        StaticFiles(root, reactor=clock), b"/empty.txt", (b"range", b"bytes=0-")
    )
    assert response.code == 200
    assert response.body == b""


def test_rangeAfterFailedPrecondition(root: Path, clock: Clock) -> None:
    handler = StaticFiles(root, reactor=clock)
    response = get(
        handler, b"/hello.txt", (b"range", b"bytes=0-1"), (b"if-match", b'"x"')
    )
    assert response.code == 412


# -- the body producer ----------------------------------------------------------


def streamedResponse(root: Path, clock: Clock, size: int) -> tuple[Response, bytes]:
    content = os.urandom(size)
    (root / "big.bin").write_bytes(content)
    handler = StaticFiles(root, reactor=clock, maxCachedFileBytes=0)
    return get(handler, b"/big.bin"), content


def test_producerHonoursPause(root: Path, clock: Clock) -> None:
    response, content = streamedResponse(root, clock, 3 * READ_CHUNK_BYTES)
    producer: Any = response.body
    consumer = FakeConsumer(pauseEveryWrite=True)
    consumer.registerProducer(producer, True)
    done = producer.startProducing(consumer)
    assert len(consumer.data) == 1
    clock.advance(0)
    assert len(consumer.data) == 1
    for expected in (2, 3):
        producer.resumeProducing()
        assert len(consumer.data) == expected
    results: list[object] = []
    done.addBoth(results.append)
    producer.resumeProducing()
    assert results == [None]
    assert b"".join(consumer.data) == content
    assert producer._fd is None
    assert clock.getDelayedCalls() == []


def test_producerYieldsToReactor(root: Path, clock: Clock) -> None:
    chunks = _static._CHUNKS_PER_TURN
    response, content = streamedResponse(root, clock, (chunks + 1) * READ_CHUNK_BYTES)
    producer: Any = response.body
    consumer = FakeConsumer()
    done = producer.startProducing(consumer)
    assert len(consumer.data) == chunks
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(0)
    assert self_result(done) is None
    assert b"".join(consumer.data) == content
    assert clock.getDelayedCalls() == []


def self_result(deferred: Deferred[Any]) -> object:
    results: list[object] = []
    deferred.addBoth(results.append)
    assert len(results) == 1
    return results[0]


def test_producerFailsOnTruncation(root: Path, clock: Clock) -> None:
    response, _ = streamedResponse(root, clock, 3 * READ_CHUNK_BYTES)
    producer: Any = response.body
    consumer = FakeConsumer(pauseEveryWrite=True)
    consumer.registerProducer(producer, True)
    done = producer.startProducing(consumer)
    os.truncate(root / "big.bin", READ_CHUNK_BYTES + 10)
    producer.resumeProducing()
    result = self_result(done)
    assert isinstance(result, Failure)
    assert isinstance(result.value, FileChangedError)
    # Nothing short was written: only whole chunks before the truncation.
    assert [len(d) for d in consumer.data] == [READ_CHUNK_BYTES]
    assert producer._fd is None


def test_producerFailsWhenFileChanges(root: Path, clock: Clock) -> None:
    response, _ = streamedResponse(root, clock, 2 * READ_CHUNK_BYTES)
    producer: Any = response.body
    consumer = FakeConsumer(pauseEveryWrite=True)
    consumer.registerProducer(producer, True)
    done = producer.startProducing(consumer)
    with open(root / "big.bin", "ab") as grow:
        grow.write(b"more")
    producer.resumeProducing()
    result = self_result(done)
    assert isinstance(result, Failure)
    assert isinstance(result.value, FileChangedError)
    assert sum(len(d) for d in consumer.data) == READ_CHUNK_BYTES


def test_producerStopNeverFires(root: Path, clock: Clock) -> None:
    chunks = _static._CHUNKS_PER_TURN
    response, _ = streamedResponse(root, clock, (chunks + 2) * READ_CHUNK_BYTES)
    producer: Any = response.body
    done = producer.startProducing(FakeConsumer())
    assert len(clock.getDelayedCalls()) == 1
    producer.stopProducing()
    assert clock.getDelayedCalls() == []
    assert producer._fd is None
    results: list[object] = []
    done.addBoth(results.append)
    producer.resumeProducing()
    assert results == []


def test_fileReplacedBetweenStatAndOpen(
    root: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cached identity no longer matches what open() finds: the handler
    # resolves the path again rather than serving the old validators.
    handler = StaticFiles(root, reactor=clock, maxCachedFileBytes=0)
    assert get(handler, b"/thousand.bin").code == 200
    content = b"new content!"
    realOpen = os.open

    def swapThenOpen(path: Any, *args: Any, **kwargs: Any) -> int:
        monkeypatch.setattr(os, "open", realOpen)
        (root / "replacement").write_bytes(content)
        os.replace(root / "replacement", root / "thousand.bin")
        return realOpen(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", swapThenOpen)
    response = get(handler, b"/thousand.bin")
    assert response.code == 200
    assert drain(response, clock) == content


# -- path safety ----------------------------------------------------------------


@pytest.mark.parametrize(
    "target, status",
    [
        pytest.param(b"/../outside.txt", 404, id="dotdot"),
        pytest.param(b"/sub/../../outside.txt", 404, id="dotdot-inner"),
        pytest.param(b"/%2e%2e/outside.txt", 404, id="pct-dotdot"),
        pytest.param(b"/%2E%2E/outside.txt", 404, id="pct-dotdot-upper"),
        pytest.param(b"/.%2e/outside.txt", 404, id="pct-half-dotdot"),
        pytest.param(b"/sub/..", 403, id="trailing-dotdot-is-the-root"),
        pytest.param(b"/sub/../..", 404, id="trailing-dotdot-leaves"),
        pytest.param(b"/sub/%2e%2e/%2e%2e/outside.txt", 404, id="pct-dotdot-leaves"),
        pytest.param(b"//../outside.txt", 404, id="merged-then-dotdot"),
        pytest.param(b"/sub/../.secret", 404, id="dotdot-to-dotfile"),
        pytest.param(b"/%2e%2e%2foutside.txt", 404, id="pct-slash"),
        pytest.param(b"/sub%2findex.html", 404, id="pct-slash-inside"),
        pytest.param(b"/sub%5cindex.html", 404, id="pct-backslash"),
        pytest.param(b"/..\\outside.txt", 404, id="backslash"),
        pytest.param(b"/sub\\index.html", 404, id="backslash-inside"),
        pytest.param(b"/hello.txt%00.html", 400, id="nul"),
        pytest.param(b"/%252e%252e/outside.txt", 404, id="double-encoded"),
        pytest.param(b"//outside.txt", 404, id="empty-segment"),
        pytest.param(b"/.secret", 404, id="dotfile"),
        pytest.param(b"/%2esecret", 404, id="pct-dotfile"),
        pytest.param(b"/" + b"a" * 300, 404, id="long-segment"),
        pytest.param(b"/" + b"a/" * (MAX_PATH_BYTES // 2), 414, id="overlong"),
        pytest.param(b"/%ff%fe", 404, id="not-utf8"),
        pytest.param(b"relative", 400, id="relative"),
        pytest.param(b"/hello.txt/", 404, id="file-with-slash"),
        pytest.param(b"/missing", 404, id="missing"),
        pytest.param(b"/hello.txt", 200, id="control"),
        pytest.param(b"/hell%6f.txt", 200, id="pct-decoded-once"),
        pytest.param(b"/hello.txt?a=../b", 200, id="query-ignored"),
        pytest.param(b"/./hello.txt", 200, id="dot-segment"),
        pytest.param(b"//hello.txt", 200, id="merged-slashes"),
        pytest.param(b"/sub/../hello.txt", 200, id="dotdot-inside"),
        pytest.param(b"/sub/%2e%2e/hello.txt", 200, id="pct-dotdot-inside"),
        pytest.param(b"/sub//./index.html", 200, id="merged-and-dot"),
        pytest.param(b"http://x//sub/../hello.txt", 200, id="absolute-form-dotdot"),
        pytest.param(b"http://x/hello.txt", 200, id="absolute-form"),
        pytest.param(b"HTTP://x", 403, id="absolute-form-root"),
    ],
)
def test_pathSafety(root: Path, clock: Clock, target: bytes, status: int) -> None:
    response = get(StaticFiles(root, reactor=clock), target)
    assert response.code == status
    body = drain(response, clock)
    assert b"SECRET" not in body and b"hidden" not in body
    assert str(root).encode() not in body
    assert all(str(root).encode() not in value for _, value in response.headers)


def test_symlinkInsideRootFollowed(root: Path, clock: Clock) -> None:
    (root / "link.txt").symlink_to("hello.txt")
    (root / "linkdir").symlink_to("sub")
    handler = StaticFiles(root, reactor=clock)
    assert get(handler, b"/link.txt").body == HELLO
    assert get(handler, b"/linkdir/").body == b"<h1>index</h1>"


def test_symlinkOutsideRootRefused(root: Path, clock: Clock) -> None:
    (root / "escape.txt").symlink_to(root.parent / "outside.txt")
    (root / "escapedir").symlink_to(root.parent)
    (root / "bare" / "escape").symlink_to(root.parent / "outside.txt")
    handler = StaticFiles(root, reactor=clock, listing=True)
    assert get(handler, b"/escape.txt").code == 404
    assert get(handler, b"/escapedir/outside.txt").code == 404
    assert b"escape" not in drain(get(handler, b"/bare/"), clock)
    following = StaticFiles(root, reactor=clock, followSymlinks=True, listing=True)
    assert get(following, b"/escape.txt").body == b"TOP SECRET"
    assert get(following, b"/escapedir/outside.txt").body == b"TOP SECRET"
    assert b"escape" in drain(get(following, b"/bare/"), clock)


def test_symlinkSwappedInAfterCaching(root: Path, clock: Clock) -> None:
    handler = StaticFiles(root, reactor=clock)
    assert get(handler, b"/hello.txt").body == HELLO
    (root / "hello.txt").unlink()
    (root / "hello.txt").symlink_to(root.parent / "outside.txt")
    assert get(handler, b"/hello.txt").code == 404


def test_showHidden(root: Path, clock: Clock) -> None:
    handler = StaticFiles(root, reactor=clock, showHidden=True, listing=True)
    assert get(handler, b"/.secret").body == b"hidden"
    assert b".dot" in drain(get(handler, b"/bare/"), clock)
    assert get(handler, b"/../outside.txt").code == 404


def test_fifoNotOpened(root: Path, clock: Clock) -> None:
    os.mkfifo(root / "pipe")
    assert get(StaticFiles(root, reactor=clock), b"/pipe").code == 404


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads everything")
def test_unreadableFile403(root: Path, clock: Clock) -> None:
    (root / "hello.txt").chmod(0)
    response = get(StaticFiles(root, reactor=clock), b"/hello.txt")
    assert response.code == 403
    assert str(root).encode() not in drain(response, clock)


# -- directories ------------------------------------------------------------------


@pytest.mark.parametrize(
    "target, location",
    [
        (b"/sub", b"/sub/"),
        (b"/sub?a=1&b=%20", b"/sub/?a=1&b=%20"),
        (b"/sub?", b"/sub/?"),
        (b"/s%75b", b"/sub/"),
        (b"//sub", b"/sub/"),
        (b"/bare/../sub", b"/sub/"),
        (b"/bare/a%20dir", b"/bare/a%20dir/"),
        (b"///bare//a%20dir?x", b"/bare/a%20dir/?x"),
    ],
)
def test_directoryRedirect(
    root: Path, clock: Clock, target: bytes, location: bytes
) -> None:
    response = get(StaticFiles(root, reactor=clock), target)
    assert response.code == 301
    assert fields(response)[b"location"] == location


def test_dotSegmentsAndSlashesNormalised(root: Path, clock: Clock) -> None:
    """nginx serves ``/sub/../x`` as ``/x`` and ``//x`` as ``/x``; so do we."""
    handler = StaticFiles(root, reactor=clock)
    for target in (b"/sub/../hello.txt", b"//hello.txt", b"/sub/./../hello.txt"):
        assert get(handler, target).body == HELLO
    for target in (b"/sub/.", b"/sub//", b"//sub/", b"/bare/../sub/"):
        assert get(handler, target).body == b"<h1>index</h1>"


def test_directoryIndex(root: Path, clock: Clock) -> None:
    handler = StaticFiles(root, reactor=clock)
    response = get(handler, b"/sub/")
    assert response.code == 200
    assert response.body == b"<h1>index</h1>"
    assert fields(response)[b"content-type"] == b"text/html; charset=utf-8"
    assert b"etag" in fields(response)


def test_directoryWithoutIndexForbidden(root: Path, clock: Clock) -> None:
    response = get(StaticFiles(root, reactor=clock), b"/bare/")
    assert response.code == 403


_ROW_RE = re.compile(
    r'<tr><td><a href="([^"]*)">([^<]*)</a></td><td>([^<]*)</td>'
    r'<td class="size">([^<]*)</td></tr>'
)


def listingRows(body: str) -> list[tuple[str, str, str, str]]:
    """(href, text, date, size) of each row of a listing."""
    return _ROW_RE.findall(body)


def test_listing(root: Path, clock: Clock) -> None:
    (root / "bare" / "b.txt").write_bytes(b"bbb")
    os.utime(root / "bare" / "b.txt", (1_700_000_000, 1_700_000_000))
    response = get(StaticFiles(root, reactor=clock, listing=True), b"/bare/")
    assert response.code == 200
    assert fields(response)[b"content-type"] == b"text/html; charset=utf-8"
    body = drain(response, clock).decode()
    rows = listingRows(body)
    assert [(href, text) for href, text, _, _ in rows] == [
        ("../", "../"),
        ("%3Ci%3E%26%22x%27.txt", "&lt;i&gt;&amp;&quot;x&#x27;.txt"),
        ("a%20dir/", "a dir/"),
        ("b.txt", "b.txt"),
    ]
    # Size in bytes (a directory has none) and the modification time, UTC.
    assert [size for *_, size in rows] == ["-", "1", "-", "3"]
    assert rows[3][2] == "2023-11-14 22:13"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", rows[2][2])
    assert "<i>" not in body
    assert "<script" not in body
    assert str(root) not in body


@pytest.mark.parametrize(
    "query, names",
    [
        (b"", ["<i>&\"x'.txt", "a dir/", "b.txt", "c.txt"]),
        (b"C=N;O=D", ["c.txt", "b.txt", "a dir/", "<i>&\"x'.txt"]),
        (b"C=S;O=A", ["a dir/", "<i>&\"x'.txt", "c.txt", "b.txt"]),
        (b"C=S;O=D", ["b.txt", "c.txt", "<i>&\"x'.txt", "a dir/"]),
        (b"C=M;O=A", ["c.txt", "b.txt", "a dir/", "<i>&\"x'.txt"]),
        (b"C=M&O=D", ["<i>&\"x'.txt", "a dir/", "b.txt", "c.txt"]),
        (b"C=X;O=Z;junk", ["<i>&\"x'.txt", "a dir/", "b.txt", "c.txt"]),
    ],
)
def test_listingSorts(root: Path, clock: Clock, query: bytes, names: list[str]) -> None:
    """Apache's ``?C=N|M|S;O=A|D`` sorts the table: no script needed."""
    bare = root / "bare"
    (bare / "b.txt").write_bytes(b"b" * 300)
    (bare / "c.txt").write_bytes(b"cc")
    for index, name in enumerate(["c.txt", "b.txt", "a dir", "<i>&\"x'.txt"]):
        os.utime(bare / name, (1_600_000_000 + index, 1_600_000_000 + index))
    handler = StaticFiles(root, reactor=clock, listing=True)
    target = b"/bare/" + (b"?" + query if query else b"")
    body = drain(get(handler, target), clock).decode()
    shown = [html.unescape(text) for _, text, _, _ in listingRows(body)][1:]
    assert shown == names


def test_listingHeadingsLinkToTheirOrder(root: Path, clock: Clock) -> None:
    handler = StaticFiles(root, reactor=clock, listing=True)
    links = re.findall(
        r'<th><a href="([^"]*)">', drain(get(handler, b"/bare/"), clock).decode()
    )
    assert links == ["?C=N;O=D", "?C=M;O=A", "?C=S;O=A"]
    body = drain(get(handler, b"/bare/?C=S;O=A"), clock).decode()
    assert re.findall(r'<th><a href="([^"]*)">', body) == [
        "?C=N;O=A",
        "?C=M;O=A",
        "?C=S;O=D",
    ]


def test_listingRootHasNoParent(root: Path, clock: Clock) -> None:
    (root / "sub" / "index.html").unlink()
    body = drain(get(StaticFiles(root, reactor=clock, listing=True), b"/"), clock)
    assert b'href="../"' not in body
    assert b"<title>Index of /</title>" in body


# -- options ------------------------------------------------------------------------


def test_cacheControl(root: Path, clock: Clock) -> None:
    handler = StaticFiles(root, reactor=clock, cacheControl="max-age=60")
    plain = get(handler, b"/hello.txt")
    assert fields(plain)[b"cache-control"] == b"max-age=60"
    notModified = get(
        handler, b"/hello.txt", (b"if-none-match", fields(plain)[b"etag"])
    )
    assert notModified.code == 304
    assert fields(notModified)[b"cache-control"] == b"max-age=60"
    partial = get(handler, b"/hello.txt", (b"range", b"bytes=0-0"))
    assert fields(partial)[b"cache-control"] == b"max-age=60"


@pytest.fixture
def gzRoot(root: Path) -> Iterator[Path]:
    (root / "app.js").write_bytes(b"plain javascript")
    (root / "app.js.gz").write_bytes(b"\x1f\x8bfake gzip")
    yield root


@pytest.mark.parametrize(
    "acceptEncoding, gzipped",
    [
        (None, False),
        (b"gzip", True),
        (b"deflate, gzip;q=0.5", True),
        (b"gzip;q=0", False),
        (b"GZIP", True),
        (b"*", True),
        (b"*, gzip;q=0", False),
        (b"br", False),
    ],
)
def test_precompressed(
    gzRoot: Path, clock: Clock, acceptEncoding: bytes | None, gzipped: bool
) -> None:
    handler = StaticFiles(gzRoot, reactor=clock, precompressed=True)
    sent = [(b"accept-encoding", acceptEncoding)] if acceptEncoding else []
    for _ in range(2):  # the miss, then the cached hit
        response = get(handler, b"/app.js", *sent)
        got = fields(response)
        assert got[b"vary"] == b"Accept-Encoding"
        assert got[b"content-type"] == b"text/javascript; charset=utf-8"
        if gzipped:
            assert response.body == b"\x1f\x8bfake gzip"
            assert got[b"content-encoding"] == b"gzip"
        else:
            assert response.body == b"plain javascript"
            assert b"content-encoding" not in got


def test_precompressedVariantsHaveDistinctETags(gzRoot: Path, clock: Clock) -> None:
    handler = StaticFiles(gzRoot, reactor=clock, precompressed=True)
    plain = fields(get(handler, b"/app.js"))[b"etag"]
    gzipped = fields(get(handler, b"/app.js", (b"accept-encoding", b"gzip")))[b"etag"]
    assert plain != gzipped


def test_precompressedOffIgnoresGz(gzRoot: Path, clock: Clock) -> None:
    handler = StaticFiles(gzRoot, reactor=clock)
    response = get(handler, b"/app.js", (b"accept-encoding", b"gzip"))
    assert response.body == b"plain javascript"
    assert b"vary" not in fields(response)


# -- on the wire: ConnectionFactory(StaticFiles(root)) over StringTransport ------


def wireConnect(root: Path, clock: Clock, **options: Any) -> Any:
    from ._harness import connect

    return connect(StaticFiles(root, reactor=clock, **options), clock=clock)


def finish(conn: Any, clock: Clock) -> None:
    """Close the connection as the reactor would, and check no timer is left."""
    conn.lose()
    assert clock.getDelayedCalls() == []


def test_wireGetExactBytes(root: Path, clock: Clock) -> None:
    conn = wireConnect(root, clock)
    conn.send(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    st = os.stat(root / "hello.txt")
    date = email.utils.formatdate(int(clock.seconds()), usegmt=True).encode()
    lastModified = email.utils.formatdate(int(st.st_mtime), usegmt=True).encode()
    etag = b'"%x-%x-%x"' % (st.st_ino, st.st_size, st.st_mtime_ns)
    assert conn.take() == (
        b"HTTP/1.1 200 OK\r\n"
        b"Date: " + date + b"\r\n"
        b"Server: connserver\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Last-Modified: " + lastModified + b"\r\n"
        b"ETag: " + etag + b"\r\n"
        b"Accept-Ranges: bytes\r\n"
        b"Content-Length: 11\r\n"
        b"Connection: keep-alive\r\n"
        b"Keep-Alive: timeout=75\r\n"
        b"\r\n" + HELLO
    )
    assert not conn.closing
    finish(conn, clock)


@pytest.mark.parametrize("size", ["cached", "streamed"])
def test_wireNotModifiedKeepsConnection(root: Path, clock: Clock, size: str) -> None:
    options = {"maxCachedFileBytes": 100 if size == "cached" else 4}
    conn = wireConnect(root, clock, **options)
    conn.send(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    etag = conn.responses()[0].header(b"etag")
    conn.transport.clear()
    conn.send(
        b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nIf-None-Match: " + etag + b"\r\n\r\n"
        b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    first, second = conn.responses()
    assert first.status == 304
    assert first.body == b""
    assert first.header(b"etag") == etag
    # RFC 9110 §8.6: a 304 may carry only the Content-Length of the 200.
    assert first.header(b"content-length") in (None, b"11")
    raw = conn.output()
    assert raw.count(b"\r\n\r\n") == 2
    assert raw.split(b"\r\n\r\n")[1].startswith(b"HTTP/1.1 200 OK")
    assert second.status == 200 and second.body == HELLO
    assert not conn.closing
    finish(conn, clock)


@pytest.mark.parametrize("size", ["cached", "streamed"])
def test_wireHeadHasGetHeaders(root: Path, clock: Clock, size: str) -> None:
    options = {"maxCachedFileBytes": 2000 if size == "cached" else 4}
    conn = wireConnect(root, clock, **options)
    conn.send(
        b"HEAD /thousand.bin HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /thousand.bin HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    clock.advance(0)
    head, full = conn.responses(b"HEAD", b"GET")
    assert head.status == full.status == 200
    assert head.headers == full.headers
    assert head.header(b"content-length") == b"1000"
    assert head.body == b""
    assert full.body == (root / "thousand.bin").read_bytes()
    assert not conn.closing
    finish(conn, clock)


@pytest.mark.parametrize("size", ["cached", "streamed"])
def test_wireRanges(root: Path, clock: Clock, size: str) -> None:
    options = {"maxCachedFileBytes": 2000 if size == "cached" else 4}
    conn = wireConnect(root, clock, **options)
    content = (root / "thousand.bin").read_bytes()
    conn.send(
        b"GET /thousand.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\n\r\n"
        b"GET /thousand.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=1000-\r\n\r\n"
        b"GET /thousand.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1,-2\r\n\r\n"
    )
    for _ in range(3):
        clock.advance(0)
    single, unsatisfiable, multi = conn.responses()
    assert single.status == 206
    assert single.header(b"content-range") == b"bytes 10-19/1000"
    assert single.header(b"content-length") == b"10"
    assert single.body == content[10:20]
    assert unsatisfiable.status == 416
    assert unsatisfiable.header(b"content-range") == b"bytes */1000"
    assert multi.status == 206
    boundary = multi.header(b"content-type").rpartition(b"=")[2]
    assert multi.body == (
        b"--%s\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Range: bytes 0-1/1000\r\n\r\n%s"
        b"\r\n--%s\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Range: bytes 998-999/1000\r\n\r\n%s"
        b"\r\n--%s--\r\n" % (boundary, content[:2], boundary, content[-2:], boundary)
    )
    assert multi.header(b"content-length") == b"%d" % len(multi.body)
    assert not conn.closing
    finish(conn, clock)


def test_wire405KeepsConnection(root: Path, clock: Clock) -> None:
    conn = wireConnect(root, clock)
    conn.send(
        b"DELETE /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    rejected, served = conn.responses()
    assert rejected.status == 405
    assert rejected.header(b"allow") == b"GET, HEAD"
    assert served.status == 200
    assert not conn.closing
    finish(conn, clock)


def test_wireLargeFileFollowsBackpressure(root: Path, clock: Clock) -> None:
    content = os.urandom(5 * READ_CHUNK_BYTES + 3)
    (root / "big.bin").write_bytes(content)
    conn = wireConnect(root, clock)
    conn.send(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    headLength = conn.output().index(b"\r\n\r\n") + 4
    # One turn of blocks goes out, then the producer yields to the reactor.
    written = len(conn.output())
    assert written == headLength + _static._CHUNKS_PER_TURN * READ_CHUNK_BYTES
    conn.protocol.flow.pauseProducing()  # the transport's buffer is full
    for _ in range(3):
        clock.advance(0)
    assert len(conn.output()) == written
    conn.protocol.flow.resumeProducing()
    while len(conn.output()) < headLength + len(content):
        written = len(conn.output())
        clock.advance(0)
        assert len(conn.output()) > written
    (response,) = conn.responses()
    assert response.body == content
    assert not conn.closing
    finish(conn, clock)


def test_wireTruncatedFileAborts(root: Path, clock: Clock) -> None:
    content = os.urandom(3 * _static._CHUNKS_PER_TURN * READ_CHUNK_BYTES)
    (root / "big.bin").write_bytes(content)
    conn = wireConnect(root, clock)
    conn.send(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    os.truncate(root / "big.bin", len(content) // 2 + 1)
    for _ in range(3):
        clock.advance(0)
    assert conn.transport.aborted
    head, _, body = conn.output().partition(b"\r\n\r\n")
    assert b"Content-Length: %d" % len(content) in head
    assert len(body) < len(content)
    finish(conn, clock)
