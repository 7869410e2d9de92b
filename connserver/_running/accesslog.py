"""
``AccessLog``: one line per answered request, with the connection's story.

Lines are in the Combined Log Format (as Apache and nginx write it) followed
by fields no other Python server offers: the connection id, the request's
index on its connection, the connection's age, the request's duration and,
on the last response of a connection, why it closed::

    127.0.0.1 - - [05/Mar/2025:14:02:07 +0000] "GET /a HTTP/1.1" 200 512 "-" "curl/8.5.0" conn=7 req=3 age=2.041 dur=0.000412 close=-

A connection that ends without a final response saying why (an idle
timeout, the peer closing, a head timeout before any byte, a shed or
refused connection, an abort) writes one line of its own, so that every
connection's close reason is in the log exactly once: no request (``"-"``),
status ``-``, ``req=`` the requests it served and ``dur=-``::

    127.0.0.1 - - [05/Mar/2025:14:03:07 +0000] "-" - 0 "-" "-" conn=7 req=3 age=62.041 dur=- close=idle-timeout

The ``json`` format writes one JSON object per line with the same facts
(``status`` and ``dur`` are null on a close line).  A request the drain
deadline aborts before any response byte has status ``-`` (null).

Writing never blocks the reactor for long: lines are buffered and written
by a reactor timer (every ``flushInterval`` seconds, or at once when the
buffer passes ``bufferBytes``); the timer runs only while lines wait, so an
idle server runs none.  A log file that fails (disk full, removed mount) is
reported once through ``twisted.logger``; its lines are dropped and serving
goes on.

:meth:`AccessLog.reopen` (SIGUSR1 under ``twistd``, as nginx uses it) lets
logrotate rename the file: the lines buffered before it go to the old file,
every line after it to a new file at the same path.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import time
from typing import IO, TYPE_CHECKING, Literal

from twisted.logger import Logger

from connserver._http.records import ConnectionRecord, RequestRecord
from connserver._twisted.reactor import defaultReactor

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = [
    "ACCESS_LOG_FORMATS",
    "LOG_CLOSES",
    "NORMAL_CLOSES",
    "AccessLog",
    "formatCombined",
    "formatJSON",
]

#: The formats ``AccessLog`` writes.
ACCESS_LOG_FORMATS = ("combined", "json")

#: Which close lines ``AccessLog`` writes (``--log-closes``): every one,
#: the abnormal ones only (not :data:`NORMAL_CLOSES`), or none.
LOG_CLOSES = ("all", "abnormal", "none")

#: The reasons of the close lines ``closes="abnormal"`` leaves out: a
#: keep-alive connection's ordinary end, after its requests were logged.
NORMAL_CLOSES = frozenset({"peer-closed", "idle-timeout", "draining"})

_MONTHS = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)


def _escape(value: bytes) -> str:
    """
    Quote-safe text for a log field: as nginx does, ``"``, ``\\`` and bytes
    outside printable ASCII become ``\\xHH``, so a hostile request line or
    User-Agent cannot forge a field or a line.
    """
    if value.isascii() and value.isalnum():
        return value.decode("ascii")
    out = []
    for byte in value:
        if 0x20 <= byte < 0x7F and byte not in (0x22, 0x5C):
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02X}")
    return "".join(out)


# What an address field may hold as is: IPv4/IPv6 text (a transport's
# link-local peer may carry its %interface), RFC 7239 identifiers
# (``unknown``, ``_hidden``) and ``-``.
_SAFE_HOST_RE = re.compile(r"[0-9A-Za-z.:_%\-]+")


def _host(value: str) -> str:
    """
    The address field of a combined line: anything outside the characters
    an address is made of is written as ``\\xHH`` (as :func:`_escape`
    does, and spaces too), so that a forwarded address can never forge a
    field.  Addresses are checked when parsed (``_forwarded``); this is
    the second line of defence, one regex match per line.
    """
    if _SAFE_HOST_RE.fullmatch(value) is not None:
        return value
    out = []
    for byte in value.encode("utf-8", "backslashreplace"):
        char = chr(byte)
        out.append(char if _SAFE_HOST_RE.fullmatch(char) else f"\\x{byte:02X}")
    return "".join(out)


def _clfTime(timestamp: float) -> str:
    # Always UTC: stable across hosts and daylight-saving changes.
    t = time.gmtime(timestamp)
    return (
        f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year:04d}:"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )


def _isoTime(timestamp: float) -> str:
    t = time.gmtime(timestamp)
    millis = int((timestamp % 1) * 1000)
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{millis:03d}Z"
    )


def _requestLine(record: RequestRecord) -> str:
    if not record.method:
        # The request head never parsed (400, 408, 431, ...).
        return "-"
    major, minor = record.version
    return f"{_escape(record.method)} {_escape(record.target)} HTTP/{major}.{minor}"


def _optional(value: bytes | None) -> str:
    return "-" if not value else _escape(value)


def formatCombined(record: RequestRecord | ConnectionRecord) -> str:
    """One Combined Log Format line for ``record`` (with its newline)."""
    if isinstance(record, ConnectionRecord):
        return (
            f"{_host(record.peerHost or '-')} - - [{_clfTime(record.timestamp)}] "
            f'"-" - 0 "-" "-" conn={record.connectionId} '
            f"req={record.requestsServed} age={record.connectionAge:.3f} "
            f"dur=-{_switched(record)} close={record.closeReason}\n"
        )
    return (
        f"{_host(record.peerHost or '-')} - - [{_clfTime(record.timestamp)}] "
        f'"{_requestLine(record)}" {record.status or "-"} {record.bodyBytes} '
        f'"{_optional(record.referer)}" "{_optional(record.userAgent)}" '
        f"conn={record.connectionId} req={record.requestIndex} "
        f"age={record.connectionAge:.3f} dur={record.duration:.6f} "
        f"close={record.closeReason or '-'}"
        f"{'' if record.note is None else ' note=' + record.note}\n"
    )


def _switched(record: ConnectionRecord) -> str:
    """The byte counts of a connection that switched protocols (101)."""
    if record.bytesReceived is None:
        return ""
    return f" in={record.bytesReceived} out={record.bytesSent}"


def _text(value: bytes | None) -> str | None:
    if value is None:
        return None
    return value.decode("ascii", "backslashreplace")


def formatJSON(record: RequestRecord | ConnectionRecord) -> str:
    """One JSON object for ``record``, on one line (with its newline)."""
    if isinstance(record, ConnectionRecord):
        # The keys of a request line, in the same order: a consumer with a
        # fixed schema reads both; status null marks "no response".
        return (
            json.dumps(
                {
                    "time": _isoTime(record.timestamp),
                    "remote": record.peerHost or None,
                    "method": None,
                    "target": None,
                    "version": None,
                    "status": None,
                    "bytes": 0,
                    "referer": None,
                    "userAgent": None,
                    "conn": record.connectionId,
                    "req": record.requestsServed,
                    "age": round(record.connectionAge, 6),
                    "dur": None,
                    "close": record.closeReason,
                    "secure": record.secure,
                    **(
                        {}
                        if record.bytesReceived is None
                        else {"in": record.bytesReceived, "out": record.bytesSent}
                    ),
                },
                separators=(",", ":"),
            )
            + "\n"
        )
    major, minor = record.version
    entry = {
        "time": _isoTime(record.timestamp),
        "remote": record.peerHost or None,
        "method": _text(record.method) or None,
        "target": _text(record.target) if record.method else None,
        "version": f"HTTP/{major}.{minor}" if record.method else None,
        "status": record.status or None,
        "bytes": record.bodyBytes,
        "referer": _text(record.referer),
        "userAgent": _text(record.userAgent),
        "conn": record.connectionId,
        "req": record.requestIndex,
        "age": round(record.connectionAge, 6),
        "dur": round(record.duration, 6),
        "close": record.closeReason,
        "secure": record.secure,
        "scheme": record.scheme,
    }
    if record.note is not None:
        entry["note"] = record.note
    return json.dumps(entry, separators=(",", ":")) + "\n"


_FORMATTERS = {"combined": formatCombined, "json": formatJSON}


class AccessLog:
    """
    A ``factory.requestObservers`` entry that writes one line per request,
    and a ``factory.closeObservers`` entry that writes one line per
    connection that ended without a final response saying why (register it
    in both lists, as ``twistd connserver`` does).

    ``target`` is a path (opened for appending, so that ``O_APPEND`` keeps
    concurrent writers and ``logrotate copytruncate`` safe: by :meth:`open`,
    else on the first write), ``"-"`` for standard output, or an open file
    object (binary or text; never closed by this class).  A file this class
    creates gets ``mode`` (0640: the owner writes, a log shipper in the
    group reads), whatever the umask (a daemonised twistd's is 077); an
    existing file keeps its own.  Call :meth:`close` at shutdown to write
    what is buffered; the service does so after the drain.

    ``closes`` chooses the close lines: ``all``, ``abnormal`` (not those of
    :data:`NORMAL_CLOSES`: the client closing, the idle timeout, the
    graceful stop closing an idle connection) or ``none``.
    """

    _log = Logger()

    def __init__(
        self,
        target: str | os.PathLike[str] | IO[bytes] | IO[str],
        format: Literal["combined", "json"] | str = "combined",
        *,
        reactor: IReactorTime | None = None,
        flushInterval: float = 1.0,
        bufferBytes: int = 64 * 1024,
        closes: Literal["all", "abnormal", "none"] | str = "all",
        mode: int = 0o640,
    ) -> None:
        if closes not in LOG_CLOSES:
            raise ValueError(
                f"closes must be one of {', '.join(LOG_CLOSES)}, not {closes!r}"
            )
        if not 0 <= mode <= 0o777:
            raise ValueError(
                f"mode must be a permission mode such as 0o640, not {mode!r}"
            )
        if format not in _FORMATTERS:
            raise ValueError(
                f"access log format must be one of {', '.join(ACCESS_LOG_FORMATS)}, "
                f"not {format!r}"
            )
        if flushInterval <= 0:
            raise ValueError("flushInterval must be positive")
        self._format = _FORMATTERS[format]
        self.format = format
        self.closes = closes
        self.mode = mode
        self._reactor = reactor
        self.flushInterval = flushInterval
        self.bufferBytes = bufferBytes
        self._path: str | None = None
        self._file: IO[bytes] | IO[str] | None = None
        self._ownsFile = False
        if isinstance(target, str | os.PathLike):
            path = os.fspath(target)
            if path == "-":
                self._file = _standardOutput()
            else:
                self._path = path
                self._ownsFile = True
        else:
            self._file = target
        self._lines: list[str] = []
        self._size = 0
        self._timer: IDelayedCall | None = None
        self._failing = False
        self._dropped = 0
        self._closed = False

    @property
    def name(self) -> str:
        """What the log writes to, for messages."""
        if self._path is not None:
            return self._path
        return str(getattr(self._file, "name", "<stream>"))

    def __call__(self, record: RequestRecord | ConnectionRecord) -> None:
        """Buffer the line for ``record``; never raises (an observer must not)."""
        if isinstance(record, ConnectionRecord) and self.closes != "all":
            if self.closes == "none" or record.closeReason in NORMAL_CLOSES:
                return
        try:
            line = self._format(record)
        except Exception:
            self._log.failure(
                "Could not format an access log line for {record!r}", record=record
            )
            return
        if self._closed:
            self._dropped += 1
            return
        self._lines.append(line)
        self._size += len(line)
        if self._size >= self.bufferBytes:
            self.flush()
        elif self._timer is None:
            self._timer = self._clock().callLater(self.flushInterval, self._timedFlush)

    def _clock(self) -> IReactorTime:
        if self._reactor is None:
            self._reactor = defaultReactor()
        assert self._reactor is not None
        return self._reactor

    def _timedFlush(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        """Write every buffered line now."""
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        if not self._lines:
            return
        data = "".join(self._lines)
        count = len(self._lines)
        self._lines = []
        self._size = 0
        try:
            self._write(data)
        except (OSError, ValueError) as error:
            # ValueError: a file object closed under us.
            self._dropped += count
            self._reportFailure(error)
            self._discardFile()
            return
        if self._failing:
            self._failing = False
            self._log.info(
                "Access log {name} works again; {dropped} lines were lost.",
                name=self.name,
                dropped=self._dropped,
            )
            self._dropped = 0

    def _reportFailure(self, error: Exception) -> None:
        if not self._failing:
            self._failing = True
            self._log.error(
                "Access log {name} cannot be written ({error}); dropping "
                "its lines until it works again. Serving continues.",
                name=self.name,
                error=error,
            )

    def open(self) -> None:
        """
        Create (or open) the file now, at start, rather than at the first
        write; a failure is reported once, and the next write tries again.
        Nothing to do for standard output or a file object.
        """
        if self._file is not None or self._path is None or self._closed:
            return
        try:
            self._file = self._openPath()
        except OSError as error:
            self._reportFailure(error)

    def _openPath(self) -> IO[bytes]:
        """The path opened for appending, created with ``mode`` if new."""
        assert self._path is not None
        flags = os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self._path, flags | os.O_CREAT | os.O_EXCL, self.mode)
        except FileExistsError:
            fd = os.open(self._path, flags)
        else:
            try:
                os.fchmod(fd, self.mode)  # Not narrowed by the umask.
            except OSError:
                pass
        return os.fdopen(fd, "ab")

    def _write(self, data: str) -> None:
        if self._file is None:
            self._file = self._openPath()
        f = self._file
        if isinstance(f, io.TextIOBase):
            f.write(data)
        else:
            f.write(data.encode("utf-8"))  # type: ignore[arg-type]
        f.flush()

    def _discardFile(self) -> None:
        # Reopen on the next write: the failure may have been a removed
        # directory or a rotated file that comes back.
        if self._ownsFile and self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None

    def reopen(self) -> None:
        """
        Close the file and open its path again, for log rotation: after
        ``mv access.log access.log.1`` and a reopen, new lines go to a new
        ``access.log``.

        The lines buffered until now are written first, to the old file (the
        one they were logged to); should that fail, they go to the new one,
        so a reopen drops none.  The new file is opened at once, so that it
        exists (and a failure to create it is reported) before the next
        request.  For standard output or a file object given by the caller
        there is nothing to reopen: the buffer is flushed and a line logged.
        """
        if self._closed:
            return
        if not self._ownsFile:
            self.flush()
            self._log.info(
                "Access log {name} is not a file connserver opened; nothing to reopen.",
                name=self.name,
            )
            return
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        if self._lines and self._file is not None:
            try:
                self._write("".join(self._lines))
            except (OSError, ValueError):
                pass  # Kept for the new file below.
            else:
                self._lines = []
                self._size = 0
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
        try:
            self._file = self._openPath()
        except OSError as error:
            # Reported once; the next flush tries to open the path again.
            self._reportFailure(error)
        self.flush()
        if self._file is not None:
            self._log.info("Access log {name} reopened.", name=self.name)

    def close(self) -> None:
        """Write what is buffered, cancel the timer and close an owned file."""
        self.flush()
        self._closed = True
        if self._ownsFile and self._file is not None:
            try:
                self._file.close()
            except OSError as error:
                self._log.error(
                    "Access log {name} failed to close: {error}",
                    name=self.name,
                    error=error,
                )
            self._file = None


def _standardOutput() -> IO[bytes] | IO[str]:
    # The real standard output, even when twistd later replaces sys.stdout
    # with a logging shim.
    stream = sys.__stdout__ or sys.stdout
    buffer = getattr(stream, "buffer", None)
    return buffer if buffer is not None else stream
