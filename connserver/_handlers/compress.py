"""
Compression for ``StaticFiles``: whole small bodies (compressed once per
file version and cached), and :class:`CompressingProducer`, which streams a
large file through a compressor under the protocol's backpressure without
ever holding the file.

gzip comes from the standard library's ``zlib``; brotli from the optional
``brotli`` package (``pip install 'connserver[brotli]'``), used when it can
be imported.
"""

from __future__ import annotations

import importlib
import zlib
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from connserver._connection.fileproducer import FileBodyProducer

__all__ = [
    "BROTLI_QUALITY",
    "GZIP_LEVEL",
    "SUPPORTED_CODINGS",
    "CompressingProducer",
    "compressBytes",
]

#: zlib level for gzip: 6, the default of zlib and of ``gzip`` itself (so
#: sizes compare with ``gzip -6``), about 3x zlib's level 1 in CPU.
GZIP_LEVEL = 6
#: brotli quality: 5 compresses text better than gzip -6 at about its
#: speed; 11 (the package default) is 30x slower, too slow for the reactor.
BROTLI_QUALITY = 5
#: brotli window (log2): 1 MiB bounds a stream's memory (the default 4 MiB
#: gains next to nothing on web files).
BROTLI_LGWIN = 20

try:
    _brotli: Any = importlib.import_module("brotli")
except ImportError:  # the optional extra is not installed
    _brotli = None

#: The codings compressed on the fly, in the server's order of preference
#: (RFC 9110 §12.5.3 leaves ties to the server): br, when available, then
#: gzip.
SUPPORTED_CODINGS: tuple[bytes, ...] = (
    (b"br", b"gzip") if _brotli is not None else (b"gzip",)
)


class _Compressor(Protocol):
    def compress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class _Brotli:
    """brotli's ``Compressor`` behind zlib's names."""

    __slots__ = ("_compressor",)

    def __init__(self) -> None:
        self._compressor = _brotli.Compressor(
            mode=_brotli.MODE_TEXT, quality=BROTLI_QUALITY, lgwin=BROTLI_LGWIN
        )

    def compress(self, data: bytes) -> bytes:
        result: bytes = self._compressor.process(data)
        return result

    def flush(self) -> bytes:
        result: bytes = self._compressor.finish()
        return result


def _compressor(coding: bytes) -> _Compressor:
    if coding == b"gzip":
        # wbits 16 + 15: the gzip wrapper (RFC 1952) around a 32 KiB window.
        return zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    if coding == b"br" and _brotli is not None:
        return _Brotli()
    raise ValueError(f"unsupported content coding {coding!r}")


def compressBytes(coding: bytes, data: bytes) -> bytes:
    """``data`` compressed whole with ``coding`` (``gzip`` or ``br``)."""
    compressor = _compressor(coding)
    return compressor.compress(data) + compressor.flush()


@implementer(IConsumer)
class _CompressingConsumer:
    """What the file producer writes to: compresses, then writes on."""

    __slots__ = ("_compressor", "_consumer")

    def __init__(self, compressor: _Compressor, consumer: IConsumer) -> None:
        self._compressor = compressor
        self._consumer = consumer

    def write(self, data: bytes) -> None:
        out = self._compressor.compress(data)
        if out:
            self._consumer.write(out)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass


@implementer(IBodyProducer, IPushProducer)
class CompressingProducer:
    """
    Streams a file compressed with one coding: a ``FileBodyProducer``
    reads it in blocks (never the whole file), each block is compressed as
    it comes, and the compressed bytes go to the consumer.

    Pausing, resuming and stopping go straight to the file producer, so the
    protocol's backpressure stops the reading; what is held is one block
    and the compressor's window.  The length is unknown: HTTP/1.1 gets it
    chunked, HTTP/1.0 close-delimited (RFC 9112 §6.3).  The file producer
    is given a plain consumer (not ``ISendfileConsumer``), so it reads.
    """

    length = UNKNOWN_LENGTH

    def __init__(self, coding: bytes, files: FileBodyProducer) -> None:
        self._compressor = _compressor(coding)
        self._files = files
        self._done: Deferred[None] | None = None

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        done: Deferred[None] = Deferred()
        self._done = done
        inner = self._files.startProducing(
            _CompressingConsumer(self._compressor, consumer)
        )

        def finished(_: None) -> None:
            try:
                tail = self._compressor.flush()
            except Exception:
                done.errback(Failure())
                return
            if tail:
                consumer.write(tail)
            done.callback(None)

        def failed(failure: Failure) -> None:
            done.errback(failure)

        inner.addCallbacks(finished, failed)
        return done

    def pauseProducing(self) -> None:
        self._files.pauseProducing()

    def resumeProducing(self) -> None:
        self._files.resumeProducing()

    def stopProducing(self) -> None:
        # IBodyProducer: after stopProducing the Deferred never fires; the
        # file producer's does not either, so neither callback above runs.
        self._files.stopProducing()
