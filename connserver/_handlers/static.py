"""
``StaticFiles``: a handler that serves a directory tree, correctly and fast.

Correct means RFC 9110 validators (§8.8), conditional requests in the order
of §13.2.2, ranges (§14) and safe path mapping; fast means that a small file
that has not changed costs one ``stat`` and a copy of prebuilt header fields
per request, and a large file streams in big ``pread`` blocks under the
protocol's backpressure.  See ``docs/static.md`` for every choice.
"""

from __future__ import annotations

import copy
import mimetypes
import os
import re
import stat
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from email.utils import formatdate
from typing import Any
from urllib.parse import quote_from_bytes, unquote_to_bytes

from twisted.internet.interfaces import IReactorTime

from connserver._connection.fileproducer import (
    BLOCK_BYTES,
    BLOCKS_PER_TURN,
    FileBodyProducer,
)
from connserver._connection.message import Request, Response
from connserver._handlers.compress import (
    SUPPORTED_CODINGS,
    CompressingProducer,
    compressBytes,
)
from connserver._handlers.static_conditional import (
    MAX_RANGES,
    NOT_MODIFIED,
    PRECONDITION_FAILED,
    RANGE_COALESCE_GAP,
    UNSATISFIABLE,
    WHOLE,
    Preconditions,
    byterangesParts,
)
from connserver._handlers.static_listing import listingPage, scanDirectory
from connserver._http.encoding import IDENTITY, acceptableCodings
from connserver._http.headers import Headers
from connserver._twisted.reactor import defaultReactor

__all__ = [
    "COMPRESS_BLOCK_BYTES",
    "DEFAULT_CACHED_FILE_BYTES",
    "DEFAULT_CACHE_BYTES",
    "DEFAULT_CACHE_ENTRIES",
    "DEFAULT_MIN_COMPRESS_BYTES",
    "MAX_PATH_BYTES",
    "MAX_RANGES",
    "RANGE_COALESCE_GAP",
    "READ_CHUNK_BYTES",
    "FileChangedError",
    "StaticFiles",
    "pagePath",
]

#: Longest request path (percent-encoded) served; longer gets 414.  The
#: protocol's request-line limit (8 KiB) is the outer bound; this one keeps
#: every path well under Linux's PATH_MAX (4096) after joining the root.
MAX_PATH_BYTES = 4096
# MAX_RANGES and RANGE_COALESCE_GAP are defined with the Range parsing, in
# static_conditional, and exported here too.
#: Default bound on the bytes held by the small-file cache (content + headers).
DEFAULT_CACHE_BYTES = 32 * 1024 * 1024
#: Default bound on the number of cache entries (small and large files).
DEFAULT_CACHE_ENTRIES = 4096
#: Files up to this size are kept in memory; larger ones stream from disk.
DEFAULT_CACHED_FILE_BYTES = 256 * 1024
#: Bytes read (and written to the transport) at a time for a streamed file.
READ_CHUNK_BYTES = BLOCK_BYTES
#: Files smaller than this are never compressed on the fly (nginx's
#: gzip_min_length is 20 bytes; below about 1 KiB the saving is smaller
#: than a TCP segment and not worth the CPU or the Vary).
DEFAULT_MIN_COMPRESS_BYTES = 1024
#: A large file streamed compressed is read in blocks this big, at most
#: ``_COMPRESS_BLOCKS_PER_TURN`` per reactor turn: about 4 ms of zlib work
#: a turn, so that compressing one download does not stall the others.
COMPRESS_BLOCK_BYTES = 64 * 1024
_COMPRESS_BLOCKS_PER_TURN = 2
#: What a compressed variant costs in the cache beyond its bytes.
_VARIANT_OVERHEAD = 256
#: A streaming producer writes at most this many chunks before yielding to
#: the reactor, so that one fast client cannot starve the others.
_CHUNKS_PER_TURN = BLOCKS_PER_TURN
#: What an entry costs in the cache beyond its content (headers, paths).
_ENTRY_OVERHEAD = 512
#: What one spelling of a request path costs in the cache beyond its bytes.
_SPELLING_OVERHEAD = 128
#: Most request-path spellings remembered for one cached file (``/a.txt``,
#: ``/%61.txt``...); an older one is forgotten, and costs a resolve again.
_MAX_SPELLINGS_PER_FILE = 8

_ALLOW = b"GET, HEAD"
_VARY = (b"vary", b"Vary", b"Accept-Encoding")
_ETAG_SUFFIXES = {b"gzip": b"-gz", b"br": b"-br"}
# Media types worth compressing besides text/*: what nginx's gzip_types and
# Caddy's encode list, plus any +json or +xml structured suffix (RFC 6839).
_COMPRESSIBLE_TYPES = frozenset(
    {
        b"application/json",
        b"application/javascript",
        b"application/x-javascript",
        b"application/xml",
        b"application/wasm",
        b"application/manifest+json",
        b"image/svg+xml",
        b"image/x-icon",
    }
)
_NOT_FOUND = b"404 Not Found\n"
_TEXT_PLAIN = b"text/plain; charset=utf-8"
_HTML = b"text/html; charset=utf-8"

# Extensions that the standard library does not know or maps poorly.
_EXTRA_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".md": "text/markdown",
    ".webp": "image/webp",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".otf": "font/otf",
    ".ttf": "font/ttf",
    ".webmanifest": "application/manifest+json",
    ".wasm": "application/wasm",
    ".ico": "image/x-icon",
    ".xml": "application/xml",
}
# A file name ending in a compression suffix is that compressed format, not
# the inner type with a Content-Encoding (that would make clients decode it).
_ENCODING_TYPES = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "compress": "application/x-compress",
    "br": "application/octet-stream",
}
_CHARSET_TYPES = frozenset(
    {
        "text/javascript",
        "application/javascript",
        "application/json",
        "application/manifest+json",
        "application/xml",
        "image/svg+xml",
    }
)

_mimeTypes = mimetypes.MimeTypes()
for _ext, _type in _EXTRA_TYPES.items():
    _mimeTypes.add_type(_type, _ext)

# Request fields that take a request off the fast path.  A cached small file
# is answered from prebuilt fields when the request has none of these.
_SLOW_FIELDS = frozenset(
    {
        b"if-match",
        b"if-none-match",
        b"if-modified-since",
        b"if-unmodified-since",
        b"range",
        b"if-range",
    }
)

_ABSOLUTE_FORM_RE = re.compile(rb"[A-Za-z][A-Za-z0-9+.\-]*://[^/]*")
# A last path segment after which the path names a directory (decoded).
_DIRECTORY_ENDINGS = frozenset({b"", b".", b".."})
# What a redirect's Location keeps unencoded in a segment (RFC 3986 pchar).
_PATH_SAFE = "!$&'()*+,;=:@-._~"


def _contentType(name: bytes) -> bytes:
    """The Content-Type for a file name, with ``charset=utf-8`` for text."""
    guessed, encoding = _mimeTypes.guess_type(os.fsdecode(name), strict=False)
    if encoding is not None:
        guessed = _ENCODING_TYPES.get(encoding, "application/octet-stream")
    if guessed is None:
        return b"application/octet-stream"
    if guessed.startswith("text/") or guessed in _CHARSET_TYPES:
        return guessed.encode("ascii") + b"; charset=utf-8"
    return guessed.encode("ascii")


def _compressible(contentType: bytes) -> bool:
    """Whether a Content-Type is one that on-the-fly compression applies to."""
    mediaType = contentType.partition(b";")[0].strip()
    return (
        mediaType.startswith(b"text/")
        or mediaType in _COMPRESSIBLE_TYPES
        or mediaType.endswith((b"+json", b"+xml"))
    )


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    """What says "the same file, unchanged": device, inode, size, mtime_ns."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _plain(
    code: int, text: bytes, extra: Sequence[tuple[bytes, bytes]] = ()
) -> Response:
    headers = Headers([(b"Content-Type", _TEXT_PLAIN), *extra])
    return Response(code, headers, text)


def _notFound() -> Response:
    return _plain(404, _NOT_FOUND)


def _varyOf(entry: _Entry) -> list[tuple[bytes, bytes]]:
    """``Vary: Accept-Encoding`` for an error about a negotiated file."""
    return [(b"Vary", b"Accept-Encoding")] if entry.vary else []


def pagePath(page: str, what: str) -> bytes:
    """
    A configured page (``/404.html``) as a request path, or ValueError
    naming ``what``: the command line checks ``--error-page`` and
    ``--fallback`` with it before the server starts.
    """
    if (
        not isinstance(page, str)
        or not page.startswith("/")
        or page.endswith("/")
        or not page.isascii()
        or not page.isprintable()
        or any(c in page for c in "?# ")
        or any(part in (".", "..", "") for part in page[1:].split("/"))
    ):
        separator = "" if what.endswith("=") else " "
        raise ValueError(
            f"{what}{separator}{page!r}: expected a file path under the root, "
            + ("such as /index.html" if "fallback" in what else "such as /404.html")
        )
    return page.encode("ascii")


def _checkedRoot(root: str | os.PathLike[str]) -> str:
    """The real path of a static root, or ValueError if it cannot be served."""
    realRoot = os.path.realpath(os.fspath(root))
    if not os.path.isdir(realRoot):
        raise ValueError(f"static root {os.fspath(root)!r} is not a directory")
    if not os.access(realRoot, os.R_OK | os.X_OK):
        raise ValueError(f"static root {os.fspath(root)!r} is not readable")
    return realRoot


def _cacheControlFields(cacheControl: str | None) -> list[tuple[bytes, bytes, bytes]]:
    """The configured Cache-Control as file response fields, or ValueError."""
    if cacheControl is None:
        return []
    if not cacheControl.isascii() or not cacheControl.isprintable():
        raise ValueError("cacheControl must be printable ASCII")
    return [(b"cache-control", b"Cache-Control", cacheControl.encode("ascii"))]


def _checkWholeNumbers(**values: int) -> None:
    """Refuse a size or count option that is not a whole number (bools too)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a whole number >= 0")


def _errorPagePaths(errorPages: Mapping[int, str]) -> dict[int, bytes]:
    """The configured error pages as request paths, or ValueError."""
    pages: dict[int, bytes] = {}
    for code, page in errorPages.items():
        if isinstance(code, bool) or not isinstance(code, int):
            raise ValueError(f"error page status {code!r} is not a number")
        if not 400 <= code <= 599:
            raise ValueError(f"error page status {code} is not 4xx or 5xx")
        pages[code] = pagePath(page, f"error page for {code}")
    return pages


def _withPageBody(response: Response, page: Response) -> Response:
    """
    An error response with an error page's body: the original status and
    its own fields (Allow, Content-Range, Retry-After, Vary...), with the
    page's Content-Type and body; no validators, which would describe the
    page, not the target.
    """
    fields = [
        (name, value)
        for name, value in response.headers
        if name.lower() != b"content-type"
    ]
    contentType = page.headers.get(b"content-type")
    if contentType is not None:
        fields.insert(0, (b"Content-Type", contentType))
    return Response(response.code, Headers(fields), page.body)


class FileChangedError(Exception):
    """
    A file changed while it was being sent: it became shorter, or its size
    or modification time moved.  The producer fails with this instead of
    padding or cutting the body, so the protocol aborts the connection and
    the client sees an incomplete response, never a wrong one.
    """


class _FileChanged(Exception):
    """The file changed between its ``stat`` and its use: resolve it again."""


class _Entry:
    """What the cache keeps for one file: identity, validators, fields, content."""

    __slots__ = (
        "body",
        "contentType",
        "cost",
        "encoding",
        "etag",
        "fields",
        "fsPath",
        "gzip",
        "identity",
        "lastModified",
        "mtime",
        "negotiable",
        "pairs",
        "size",
        "validatorFields",
        "variants",
        "vary",
    )

    def __init__(
        self,
        fsPath: bytes,
        st: os.stat_result,
        contentType: bytes,
        mtime: int,
        lastModified: bytes,
        extraFields: list[tuple[bytes, bytes, bytes]],
        body: bytes | None,
        gzip: bool,
        negotiable: bool = False,
        vary: bool = False,
    ) -> None:
        self.fsPath = fsPath
        self.identity = _identity(st)
        self.size = st.st_size
        # RFC 9110 §8.8.3: a strong validator changes with the content.  The
        # inode, size and nanosecond mtime together change on every write and
        # every replacement (rename over) of the file.
        self.etag = b'"%x-%x-%x"' % (st.st_ino, st.st_size, st.st_mtime_ns)
        self.lastModified = lastModified
        self.mtime = mtime
        self.contentType = contentType
        self.gzip = gzip
        #: Compressed on the fly for clients that accept it (then every
        #: response for it says Vary: Accept-Encoding, RFC 9110 §12.5.5).
        self.negotiable = negotiable
        self.vary = vary or negotiable
        #: The content coding of a variant compressed on the fly (None for
        #: a file as it is on disk, the .gz sibling included).
        self.encoding: bytes | None = None
        #: The compressed variants made from this entry, by coding.
        self.variants: dict[bytes, _Entry] = {}
        # The fields a 304 repeats (RFC 9110 §15.4.5: ETag, Cache-Control,
        # Vary; Last-Modified helps caches that only kept dates).
        self.validatorFields: list[tuple[bytes, bytes, bytes]] = [
            (b"last-modified", b"Last-Modified", lastModified),
            (b"etag", b"ETag", self.etag),
            *extraFields,
        ]
        if self.vary:
            self.validatorFields.append(_VARY)
        fields = [(b"content-type", b"Content-Type", contentType)]
        if gzip:
            fields.append((b"content-encoding", b"Content-Encoding", b"gzip"))
        fields += self.validatorFields
        fields.append((b"accept-ranges", b"Accept-Ranges", b"bytes"))
        self.fields = fields
        # The same as (name, value) pairs, which a Response keeps as given:
        # a cache hit builds no Headers, and the protocol's line cache finds
        # every line by its pair.
        self.pairs = tuple((name, value) for _, name, value in fields)
        self.body = body
        self.cost = _ENTRY_OVERHEAD + len(fsPath) + (len(body) if body else 0)

    def encoded(self, coding: bytes, body: bytes | None) -> _Entry:
        """
        The variant of this entry compressed with ``coding``: ``body`` when
        it is small (None when it streams), and an ETag of its own, the
        file's with ``-gz`` or ``-br`` inside the quotes, so that a strong
        comparison never matches across codings (RFC 9110 §8.8.3.3).
        """
        variant = copy.copy(self)
        variant.encoding = coding
        variant.negotiable = False
        variant.variants = {}
        variant.etag = self.etag[:-1] + _ETAG_SUFFIXES[coding] + b'"'
        variant.validatorFields = [
            (b"etag", b"ETag", variant.etag) if field[0] == b"etag" else field
            for field in self.validatorFields
        ]
        # No Accept-Ranges: ranges are served from the identity coding only,
        # and a client must not ask for ranges of these bytes.
        variant.fields = [
            (b"content-type", b"Content-Type", self.contentType),
            (b"content-encoding", b"Content-Encoding", coding),
            *variant.validatorFields,
        ]
        variant.pairs = tuple((name, value) for _, name, value in variant.fields)
        variant.body = body
        variant.size = -1 if body is None else len(body)
        variant.cost = _VARIANT_OVERHEAD + (0 if body is None else len(body))
        return variant


_FileKey = tuple[bytes, int, int, bool]


def _fileKey(entry: _Entry) -> _FileKey:
    """The file an entry is for: its path under the root, device, inode, variant."""
    return (entry.fsPath, entry.identity[0], entry.identity[1], entry.gzip)


def _spellingCost(spelling: Any) -> int:
    path = spelling[0] if isinstance(spelling, tuple) else spelling
    return _SPELLING_OVERHEAD + len(path)


class _Cache:
    """
    A least-recently-used map of files, bounded by total cost and entry
    count, looked up by request-path spelling.

    An entry is keyed by the file it serves (the decoded path under the
    root, device, inode, and whether it is the gzip variant), never by the
    spelling of the request path: ``/a.txt`` and ``/%61.txt`` share one
    entry.  Each entry remembers up to ``_MAX_SPELLINGS_PER_FILE`` spellings
    that resolved to it, so that a hit is still two dict lookups and the one
    ``stat`` of the entry's path; the spellings count toward the bytes, and
    an entry goes with its last spelling.
    """

    __slots__ = (
        "_aliases",
        "_entries",
        "_maxBytes",
        "_maxEntries",
        "_spellings",
        "bytes",
    )

    def __init__(self, maxBytes: int, maxEntries: int) -> None:
        self._entries: OrderedDict[_FileKey, _Entry] = OrderedDict()
        self._aliases: dict[Any, _FileKey] = {}
        self._spellings: dict[_FileKey, list[Any]] = {}
        self._maxBytes = maxBytes
        self._maxEntries = maxEntries
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, spelling: Any) -> _Entry | None:
        fileKey = self._aliases.get(spelling)
        if fileKey is None:
            return None
        self._entries.move_to_end(fileKey)
        return self._entries[fileKey]

    def put(self, spelling: Any, entry: _Entry) -> _Entry:
        """
        Remember ``entry`` under ``spelling``; return the entry to use: an
        equal one already cached for the same file (with its compressed
        variants) wins over the new one.
        """
        if entry.cost > self._maxBytes or self._maxEntries < 1:
            return entry
        fileKey = _fileKey(entry)
        if self._aliases.get(spelling) != fileKey:
            self._forget(spelling)
        existing = self._entries.get(fileKey)
        if existing is None:
            self._entries[fileKey] = entry
            self._spellings[fileKey] = []
            self.bytes += entry.cost
        else:
            self._entries.move_to_end(fileKey)
            if existing.identity != entry.identity:
                # The same file changed in place: the new entry replaces it.
                self._entries[fileKey] = entry
                self.bytes += entry.cost - existing.cost
            else:
                entry = existing
        spellings = self._spellings[fileKey]
        if spelling not in self._aliases:
            self._aliases[spelling] = fileKey
            spellings.append(spelling)
            self.bytes += _spellingCost(spelling)
            if len(spellings) > _MAX_SPELLINGS_PER_FILE:
                oldest = spellings.pop(0)
                del self._aliases[oldest]
                self.bytes -= _spellingCost(oldest)
        while self.bytes > self._maxBytes or len(self._entries) > self._maxEntries:
            evictedKey, _ = next(iter(self._entries.items()))
            self._drop(evictedKey)
        return entry

    def grow(self, entry: _Entry, cost: int) -> bool:
        """
        Count ``cost`` more bytes (a compressed variant) for a cached
        entry, evicting others as needed; False (nothing counted) when the
        entry is not in the cache or would no longer fit.
        """
        fileKey = _fileKey(entry)
        if self._entries.get(fileKey) is not entry:
            return False
        if entry.cost + cost > self._maxBytes:
            return False
        entry.cost += cost
        self.bytes += cost
        self._entries.move_to_end(fileKey)
        while self.bytes > self._maxBytes:
            evictedKey = next(iter(self._entries))
            self._drop(evictedKey)
        return True

    def discard(self, spelling: Any) -> None:
        """Drop the entry ``spelling`` leads to (the file changed or went)."""
        fileKey = self._aliases.get(spelling)
        if fileKey is not None:
            self._drop(fileKey)

    def _forget(self, spelling: Any) -> None:
        """Forget one spelling; its entry goes too if it was the last."""
        fileKey = self._aliases.pop(spelling, None)
        if fileKey is None:
            return
        self.bytes -= _spellingCost(spelling)
        spellings = self._spellings[fileKey]
        spellings.remove(spelling)
        if not spellings:
            self._drop(fileKey)

    def _drop(self, fileKey: _FileKey) -> None:
        entry = self._entries.pop(fileKey)
        self.bytes -= entry.cost
        for spelling in self._spellings.pop(fileKey):
            del self._aliases[spelling]
            self.bytes -= _spellingCost(spelling)


class _SameFile:
    """
    ``FileBodyProducer``'s check for a streamed file: after every block, the
    descriptor's ``fstat`` identity must still be the one the response was
    built from, else :class:`FileChangedError` (never a padded or stretched
    body).
    """

    __slots__ = ("_identity",)

    def __init__(self, identity: tuple[int, int, int, int]) -> None:
        self._identity = identity

    def __call__(self, fd: int) -> None:
        try:
            changed = _identity(os.fstat(fd)) != self._identity
        except OSError as e:
            raise FileChangedError(f"stat failed: {e.strerror}") from e
        if changed:
            raise FileChangedError("the file changed while being sent")


def pathSegments(path: bytes, showHidden: bool) -> Response | list[bytes]:
    """
    A request path as segments under the root (a directory ends with an
    empty segment), or the error answer.  The path is split on ``/`` first
    and each segment percent-decoded once, so an encoded slash (``%2f``)
    can only ever be part of a name, which is then refused.  As nginx does,
    empty segments are merged (``//x`` is ``/x``) and dot-segments removed
    (RFC 3986 §5.2.4; ``%2e`` is a dot, §6.2.2.2): ``/sub/../index.html``
    is ``/index.html``, and a ``..`` that would leave the root is a 404.
    """
    if not path.startswith(b"/"):
        # RFC 9112 §3.2.2: a server MUST accept the absolute form.
        match = _ABSOLUTE_FORM_RE.match(path)
        if match is None:
            return _plain(400, b"400 Bad Request\n")
        path = path[match.end() :] or b"/"
    if len(path) > MAX_PATH_BYTES:
        return _plain(414, b"414 URI Too Long\n")
    raw = path[1:].split(b"/")
    segments: list[bytes] = []
    for part in raw:
        segment = unquote_to_bytes(part) if b"%" in part else part
        if b"\x00" in segment:
            return _plain(400, b"400 Bad Request\n")
        if segment == b"" or segment == b".":
            continue
        if segment == b"..":
            if not segments:
                return _notFound()  # It would leave the root.
            segments.pop()
            continue
        if (
            b"/" in segment
            or b"\\" in segment
            or (segment.startswith(b".") and not showHidden)
            or len(segment) > 255
        ):
            return _notFound()
        segments.append(segment)
    if (
        not segments
        or raw[-1] in _DIRECTORY_ENDINGS
        or (b"%" in raw[-1] and unquote_to_bytes(raw[-1]) in _DIRECTORY_ENDINGS)
    ):
        # "/", "/a/", "/a/." and "/a/b/.." name a directory.
        segments.append(b"")
    return segments


class StaticFiles:
    """
    Serve the files under ``root`` for GET and HEAD.

    :param root: the directory to serve; it must exist and be readable.
    :param listing: list a directory that has no ``index.html`` (else 403).
    :param followSymlinks: follow symbolic links whose target is outside
        ``root`` (links that stay inside are always followed).
    :param showHidden: serve and list names that start with a dot.
    :param cacheControl: a ``Cache-Control`` value for every file response.
    :param precompressed: serve ``FILE.gz`` instead of ``FILE`` to clients
        that accept gzip, with ``Content-Encoding: gzip``; every file
        response then carries ``Vary: Accept-Encoding``.  Such a sibling
        wins over compressing on the fly.
    :param compress: compress text, JSON, JavaScript, SVG, XML and WASM
        files of at least ``minCompressBytes`` on the fly, with br (when
        the ``brotli`` package is installed) or gzip, as the request's
        ``Accept-Encoding`` allows (RFC 9110 §12.5.3).
    :param minCompressBytes: smallest file compressed on the fly.
    :param errorPages: a file (a path under the root, such as
        ``"/404.html"``) to send as the body of each error status, with
        that status; a page that is missing leaves the built-in text.
    :param fallback: a file (such as ``"/index.html"``) that answers, with
        its own status, a GET or HEAD for a missing path whose last segment
        has no dot (a single-page application's routes).
    :param reactor: the clock (``seconds()``) and scheduler (``callLater``)
        for Last-Modified clamping and for streaming; the global reactor by
        default.
    :param maxCacheBytes: bound on the memory of the small-file cache.
    :param maxCacheEntries: bound on the number of cached files.
    :param maxCachedFileBytes: largest file whose content is cached.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        listing: bool = False,
        followSymlinks: bool = False,
        showHidden: bool = False,
        cacheControl: str | None = None,
        precompressed: bool = False,
        reactor: IReactorTime | None = None,
        maxCacheBytes: int = DEFAULT_CACHE_BYTES,
        maxCacheEntries: int = DEFAULT_CACHE_ENTRIES,
        maxCachedFileBytes: int = DEFAULT_CACHED_FILE_BYTES,
        compress: bool = True,
        minCompressBytes: int = DEFAULT_MIN_COMPRESS_BYTES,
        errorPages: Mapping[int, str] | None = None,
        fallback: str | None = None,
    ) -> None:
        realRoot = _checkedRoot(root)
        extraFields = _cacheControlFields(cacheControl)
        _checkWholeNumbers(
            maxCacheBytes=maxCacheBytes,
            maxCacheEntries=maxCacheEntries,
            maxCachedFileBytes=maxCachedFileBytes,
            minCompressBytes=minCompressBytes,
        )
        pages = _errorPagePaths(errorPages or {})
        fallbackPath = None if fallback is None else pagePath(fallback, "fallback")
        if reactor is None:
            reactor = defaultReactor()
        assert reactor is not None
        self.root = realRoot
        self.listing = listing
        self.followSymlinks = followSymlinks
        self.showHidden = showHidden
        self.cacheControl = cacheControl
        self.precompressed = precompressed
        self.reactor = reactor
        self.maxCachedFileBytes = maxCachedFileBytes
        self.compress = compress
        self.minCompressBytes = minCompressBytes
        #: The error pages, by status, as paths under the root.
        self.errorPages = pages
        #: The single-page application's fallback path, or None.
        self.fallback = fallbackPath
        self._afterError = bool(pages) or fallbackPath is not None
        self._accepts: dict[Any, tuple[tuple[bytes, ...], bool]] = {}
        self._rootBytes = os.fsencode(realRoot)
        self._rootPrefix = self._rootBytes.rstrip(b"/") + b"/"
        self._cache = _Cache(maxCacheBytes, maxCacheEntries)
        self._extraFields = extraFields
        self._preconditions = Preconditions(reactor)
        self._lastModified: dict[int, bytes] = {}

    # The request path -------------------------------------------------

    def __call__(self, request: Request) -> Response:
        """Answer one request (synchronously: everything here is local I/O)."""
        response = self._serve(request)
        if response.code >= 400 and self._afterError:
            return self._afterErrorResponse(request, response)
        return response

    def _serve(self, request: Request) -> Response:
        method = request.method
        if method != b"GET" and method != b"HEAD":
            if method == b"OPTIONS" and request.target == b"*":
                # RFC 9110 §9.3.7: OPTIONS * asks about the server itself.
                return Response(204, Headers([(b"Allow", _ALLOW)]))
            # RFC 9110 §15.5.6: a 405 MUST carry Allow.
            return _plain(405, b"405 Method Not Allowed\n", [(b"Allow", _ALLOW)])
        path = request.path
        # Accept-Encoding is read here only for a .gz sibling; a negotiable
        # file reads it in _fromEntry, and other files never do.
        gzip = self.precompressed and self._accepted(request.headers)[1]
        key: Any = (path, True) if gzip else path
        entry = self._cache.get(key)
        if entry is not None:
            try:
                st = os.stat(entry.fsPath)
            except OSError:
                st = None
            if st is not None and _identity(st) == entry.identity:
                try:
                    return self._fromEntry(request, entry)
                except _FileChanged:
                    pass
            self._cache.discard(key)
        try:
            return self._slowPath(request, key, gzip)
        except _FileChanged:
            # The file kept changing under us; the client may try again.
            self._cache.discard(key)
            return _plain(503, b"503 Service Unavailable\n", [(b"Retry-After", b"1")])

    def _afterErrorResponse(self, request: Request, response: Response) -> Response:
        """
        The single-page fallback for a 404, then the error page of the
        status.  Both are served by ``_serve``, which applies neither, so
        nothing here can loop.
        """
        code = response.code
        method = request.method
        fallback = self.fallback
        if (
            code == 404
            and fallback is not None
            and (method == b"GET" or method == b"HEAD")
            and b"." not in unquote_to_bytes(request.path.rpartition(b"/")[2])
        ):
            # nginx's try_files $uri /index.html: the fallback file answers
            # with its own status, validators and coding (the request's
            # conditionals and Accept-Encoding apply to it).
            answer = self._serve(
                Request(method, fallback, request.version, request.headers)
            )
            if answer.code != 404 and answer.code != 403:
                return answer
        page = self.errorPages.get(code)
        if page is None:
            return response
        pageMethod = b"HEAD" if method == b"HEAD" else b"GET"
        answer = self._serve(Request(pageMethod, page, request.version, Headers()))
        if answer.code != 200:
            # A missing (or unreadable) error page: the built-in text.
            return response
        return _withPageBody(response, answer)

    def _accepted(self, headers: Headers) -> tuple[tuple[bytes, ...], bool]:
        """
        The acceptable codings for a request, best first, and whether a
        precompressed ``.gz`` may be sent (gzip acceptable and ranked above
        identity); memoised by the field's value, since clients send few
        distinct ones.
        """
        values = headers.getAll(b"accept-encoding")
        memoKey: Any = (
            None if not values else values[0] if len(values) == 1 else tuple(values)
        )
        try:
            return self._accepts[memoKey]
        except KeyError:
            pass
        codings = acceptableCodings(values or None, (b"br", b"gzip"))
        gzip = b"gzip" in codings and (
            IDENTITY not in codings or codings.index(b"gzip") < codings.index(IDENTITY)
        )
        if len(self._accepts) > 256:
            self._accepts.clear()
        self._accepts[memoKey] = (codings, gzip)
        return codings, gzip

    def _select(
        self, request: Request, entry: _Entry, names: list[bytes]
    ) -> _Entry | Response:
        """
        The variant of a negotiable entry to send (RFC 9110 §12.5.3): the
        first acceptable coding that is available, or 406 when identity is
        excluded and nothing else is acceptable (§15.5.7).
        """
        codings = self._accepted(request.headers)[0]
        for coding in codings:
            if coding == IDENTITY:
                return entry
            if coding not in SUPPORTED_CODINGS:
                continue
            if b"range" in names and IDENTITY in codings and request.method == b"GET":
                # Ranges are served from the identity coding: the bytes of
                # a compressed stream are not stable enough to range over.
                return entry
            variant = entry.variants.get(coding)
            if variant is None:
                body = entry.body
                variant = entry.encoded(
                    coding, None if body is None else compressBytes(coding, body)
                )
                if self._cache.grow(entry, variant.cost):
                    # Compressed once per file version: a changed file is a
                    # new entry, with no variants.
                    entry.variants[coding] = variant
            return variant
        return _plain(406, b"406 Not Acceptable\n", [(b"Vary", b"Accept-Encoding")])

    def _fromEntry(self, request: Request, entry: _Entry) -> Response:
        names = request.headers.names()
        if entry.negotiable:
            selected = self._select(request, entry, names)
            if isinstance(selected, Response):
                return selected
            entry = selected
        if _SLOW_FIELDS.isdisjoint(names):
            body = entry.body
            if body is not None:
                return Response(200, entry.pairs, body)
            return self._streamed(request, entry, None)
        return self._conditional(request, entry)

    def _slowPath(self, request: Request, key: Any, gzip: bool) -> Response:
        resolved = self._resolve(request)
        if isinstance(resolved, Response):
            return resolved
        segments, fsPath = resolved
        try:
            st = os.stat(fsPath)
        except PermissionError:
            return _plain(403, b"403 Forbidden\n")
        except (OSError, ValueError):
            return _notFound()
        if stat.S_ISDIR(st.st_mode):
            if segments[-1] != b"":
                return self._redirectToDirectory(request, segments)
            return self._directory(request, key, segments, fsPath, gzip)
        if not stat.S_ISREG(st.st_mode) or segments[-1] == b"":
            # A FIFO or device is never opened (it could block the reactor);
            # "/file/" names a directory that is not there.
            return _notFound()
        return self._file(request, key, fsPath, segments[-1], gzip)

    def _resolve(self, request: Request) -> Response | tuple[list[bytes], bytes]:
        """
        Map the request path to segments under the root (``pathSegments``)
        and a file system path inside it, or an error.  Errors say nothing
        about the filesystem.
        """
        segments = pathSegments(request.path, self.showHidden)
        if isinstance(segments, Response):
            return segments
        fsPath = self._rootPrefix + b"/".join(segments)
        if not self._contained(fsPath):
            return _notFound()
        return segments, fsPath.rstrip(b"/") or b"/"

    def _contained(self, fsPath: bytes) -> bool:
        """True if ``fsPath`` resolves inside the root (or links may leave)."""
        if self.followSymlinks:
            return True
        real = os.path.realpath(fsPath)
        return real == self._rootBytes or real.startswith(self._rootPrefix)

    def _redirectToDirectory(self, request: Request, segments: list[bytes]) -> Response:
        # The Location is the path as resolved (dot-segments removed, slashes
        # merged), each segment percent-encoded, plus a slash, and the query
        # kept.  It has no empty segment, so it can never start with "//" (a
        # network-path reference to another host).
        location = "".join("/" + quote_from_bytes(s, _PATH_SAFE) for s in segments)
        location += "/"
        target = location.encode("ascii")
        if b"?" in request.target:
            target += b"?" + request.query
        return _plain(301, b"301 Moved Permanently\n", [(b"Location", target)])

    def _directory(
        self,
        request: Request,
        key: Any,
        segments: list[bytes],
        fsPath: bytes,
        gzip: bool,
    ) -> Response:
        indexPath = fsPath.rstrip(b"/") + b"/index.html"
        try:
            st = os.stat(indexPath)
        except OSError:
            st = None
        if st is not None and stat.S_ISREG(st.st_mode) and self._contained(indexPath):
            return self._file(request, key, indexPath, b"index.html", gzip)
        if not self.listing:
            return _plain(403, b"403 Forbidden\n")
        return self._listing(request, segments, fsPath)

    def _file(
        self,
        request: Request,
        key: Any,
        fsPath: bytes,
        name: bytes,
        gzip: bool,
    ) -> Response:
        if gzip:
            gzPath = fsPath + b".gz"
            try:
                gzStat = os.stat(gzPath)
            except OSError:
                gzStat = None
            if (
                gzStat is not None
                and stat.S_ISREG(gzStat.st_mode)
                and self._contained(gzPath)
            ):
                fsPath = gzPath
            else:
                gzip = False
        entry = self._load(fsPath, name, gzip)
        if isinstance(entry, int):
            if entry == 403:
                return _plain(403, b"403 Forbidden\n")
            return _notFound()
        entry = self._cache.put(key, entry)
        return self._fromEntry(request, entry)

    def _load(self, fsPath: bytes, name: bytes, gzip: bool) -> _Entry | int:
        """
        Build the cache entry for a regular file, reading it if it is small;
        or the error status (403, 404) when that is not possible.
        """
        for _ in range(3):
            try:
                fd = os.open(fsPath, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except PermissionError:
                return 403
            except OSError:
                return 404
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    return 404
                body: bytes | None = None
                if st.st_size <= self.maxCachedFileBytes:
                    body = _readAll(fd, st.st_size + 1)
                    after = os.fstat(fd)
                    if len(body) != st.st_size or _identity(after) != _identity(st):
                        continue  # changed while being read: read it again
            except OSError:
                return 404
            finally:
                os.close(fd)
            seconds = self._lastModifiedSeconds(st.st_mtime)
            contentType = _contentType(name)
            return _Entry(
                fsPath,
                st,
                contentType,
                seconds,
                self._formatDate(seconds),
                self._extraFields,
                body,
                gzip,
                negotiable=self.compress
                and not gzip
                and st.st_size >= self.minCompressBytes
                and _compressible(contentType),
                vary=self.precompressed,
            )
        raise _FileChanged()

    def _lastModifiedSeconds(self, mtime: float) -> int:
        # RFC 9110 §8.8.2.1: an origin server MUST NOT send a Last-Modified
        # later than the time of the response; a future mtime becomes now.
        return int(min(mtime, self.reactor.seconds()))

    def _formatDate(self, seconds: int) -> bytes:
        value = self._lastModified.get(seconds)
        if value is None:
            if len(self._lastModified) > 1024:
                self._lastModified.clear()
            value = formatdate(seconds, usegmt=True).encode("ascii")
            self._lastModified[seconds] = value
        return value

    # Validators, conditionals and ranges -------------------------------

    def _conditional(self, request: Request, entry: _Entry) -> Response:
        """The response that RFC 9110 §13.2.2 preconditions and Range decide."""
        outcome = self._preconditions.evaluate(
            request.headers,
            request.method == b"GET",
            entry.etag,
            entry.mtime,
            entry.size if entry.encoding is None else 0,
        )
        if isinstance(outcome, list):
            return self._partial(request, entry, outcome)
        if outcome == PRECONDITION_FAILED:
            return self._preconditionFailed(entry)
        if outcome == NOT_MODIFIED:
            return self._notModified(entry)
        if outcome == UNSATISFIABLE:
            return self._unsatisfiable(entry)
        assert outcome == WHOLE
        if entry.body is not None:
            return Response(200, entry.pairs, entry.body)
        return self._streamed(request, entry, None)

    def _preconditionFailed(self, entry: _Entry) -> Response:
        return _plain(412, b"412 Precondition Failed\n", _varyOf(entry))

    def _notModified(self, entry: _Entry) -> Response:
        # RFC 9110 §15.4.5: no content; the validators and caching fields a
        # 200 would carry.  The body given here is never sent: it only lets
        # the protocol send the Content-Length of the 200, the one value
        # §8.6 allows on a 304 (an empty body would claim a length of 0).
        body: bytes | FileBodyProducer
        if entry.body is not None:
            body = entry.body
        elif entry.encoding is not None:
            body = b""  # a compressed stream's length is not known
        else:
            body = FileBodyProducer(None, entry.size, clock=self.reactor)
        return Response(304, Headers._fromLowered(list(entry.validatorFields)), body)

    def _unsatisfiable(self, entry: _Entry) -> Response:
        # RFC 9110 §15.5.17: a 416 SHOULD say the current length.
        return _plain(
            416,
            b"416 Range Not Satisfiable\n",
            [(b"Content-Range", b"bytes */%d" % entry.size), *_varyOf(entry)],
        )

    def _partial(
        self,
        request: Request,
        entry: _Entry,
        ranges: list[tuple[int, int]],
    ) -> Response:
        size = entry.size
        # The validators of the 200 are sent with the 206 too (§15.3.7).
        base = [f for f in entry.fields if f[0] != b"content-type"]
        if len(ranges) == 1:
            first, last = ranges[0]
            fields = [
                (b"content-type", b"Content-Type", entry.contentType),
                *base,
                (
                    b"content-range",
                    b"Content-Range",
                    b"bytes %d-%d/%d" % (first, last, size),
                ),
            ]
            if entry.body is not None:
                body = entry.body[first : last + 1]
                return Response(206, Headers._fromLowered(fields), body)
            return self._streamed(
                request, entry, [(b"", first, last - first + 1)], b"", 206, fields
            )
        # RFC 9110 §14.6: multipart/byteranges, one part per range.
        boundary, parts, trailer = byterangesParts(ranges, entry.contentType, size)
        fields = [
            (
                b"content-type",
                b"Content-Type",
                b"multipart/byteranges; boundary=" + boundary,
            ),
            *[f for f in base if f[0] != b"content-encoding"],
        ]
        if entry.gzip:
            # Each part is a range of the gzip file, so the coding applies.
            fields.insert(1, (b"content-encoding", b"Content-Encoding", b"gzip"))
        if entry.body is not None:
            content = entry.body
            pieces = [
                prefix + content[offset : offset + count]
                for prefix, offset, count in parts
            ]
            pieces.append(trailer)
            return Response(206, Headers._fromLowered(fields), b"".join(pieces))
        return self._streamed(request, entry, parts, trailer, 206, fields)

    def _streamed(
        self,
        request: Request,
        entry: _Entry,
        parts: list[tuple[bytes, int, int]] | None,
        trailer: bytes = b"",
        code: int = 200,
        fields: list[tuple[bytes, bytes, bytes]] | None = None,
    ) -> Response:
        """A response whose body streams from the file (opened for GET only)."""
        if parts is None:
            parts = [(b"", 0, entry.size)]
        if fields is None:
            fields = list(entry.fields)
        coding = entry.encoding
        if coding is not None and request.method != b"GET":
            # HEAD: the fields of the GET; no Content-Length, which is
            # known only once the stream has been compressed.
            return Response(code, Headers._fromLowered(fields), b"")
        fd: int | None = None
        if request.method == b"GET":
            try:
                fd = os.open(entry.fsPath, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except PermissionError:
                return _plain(403, b"403 Forbidden\n")
            except OSError:
                return _notFound()
            try:
                opened = os.fstat(fd)
            except OSError:
                os.close(fd)
                return _notFound()
            if _identity(opened) != entry.identity:
                # Replaced between the stat and the open: start over.
                os.close(fd)
                raise _FileChanged()
        if coding is not None:
            files = FileBodyProducer(
                fd,
                clock=self.reactor,
                parts=[(b"", 0, entry.identity[2])],
                check=_SameFile(entry.identity),
                blockBytes=COMPRESS_BLOCK_BYTES,
                blocksPerTurn=_COMPRESS_BLOCKS_PER_TURN,
            )
            compressed = CompressingProducer(coding, files)
            return Response(code, Headers._fromLowered(fields), compressed)
        producer = FileBodyProducer(
            fd,
            clock=self.reactor,
            parts=parts,
            trailer=trailer,
            check=_SameFile(entry.identity),
        )
        return Response(code, Headers._fromLowered(fields), producer)

    # Listing ----------------------------------------------------------

    def _listing(
        self, request: Request, segments: list[bytes], fsPath: bytes
    ) -> Response:
        """An HTML page of the directory's entries, sorted, names escaped."""
        try:
            items = scanDirectory(fsPath, self.showHidden, self._contained)
        except PermissionError:
            return _plain(403, b"403 Forbidden\n")
        except OSError:
            return _notFound()
        return Response(
            200,
            Headers([(b"Content-Type", _HTML), (b"Cache-Control", b"no-cache")]),
            listingPage(segments, items, request.query),
        )


def _readAll(fd: int, limit: int) -> bytes:
    """Read until end of file or ``limit`` bytes."""
    pieces = []
    total = 0
    while total < limit:
        data = os.read(fd, limit - total)
        if not data:
            break
        pieces.append(data)
        total += len(data)
    return b"".join(pieces)
