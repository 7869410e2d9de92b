"""
Golden cases against a real ``twistd -n connserver`` (raw sockets).

One server serves a directory made here (fixed contents, fixed mtimes) with
an access log file; each case is one connection: the request bytes are sent,
then (unless the case says not to) the client half-closes, and everything the
server sends is read until it closes.  The process is started as
``tests/test_twistd.py`` starts it: a private ``PYTHONPATH`` directory holds
a copy of the plugin and a link to the package, and the server listens on
127.0.0.1 port 0 and says which port in its log.

Normalised, as they depend on the clock or the machine: the ``Date`` value,
the inode part of ``ETag`` values, the ``multipart/byteranges`` boundary
(random), and in the access log the time, the ``age=`` and ``dur=`` values.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .runner import showBytes

ROOT = Path(__file__).resolve().parent.parent.parent
TIMEOUT = 10.0
#: The mtime of every served file: Sun, 01 Oct 2023 12:00:00 GMT.
MTIME = 1_696_161_600
#: The server's short timeouts, so that two cases can watch them fire.
IDLE_TIMEOUT = "2"
HEAD_TIMEOUT = "2"

FILES: dict[str, bytes] = {
    "index.html": b"<!doctype html>\n<title>golden</title>\n<p>index</p>\n",
    "hello.txt": b"hello, world\n",
    "sub/file.txt": b"0123456789abcdefghijklmnopqrstuvwxyz\n",
    "data.bin": bytes(range(256)) * 40,
    "big.txt": b"".join(b"line %05d of a text file\n" % i for i in range(4000)),
    "empty.txt": b"",
    "with space.txt": b"a name with a space\n",
}


@dataclass(frozen=True)
class WireCase:
    id: str
    data: bytes
    halfClose: bool = True


def get(target: bytes, *fields: bytes, version: bytes = b"1.1") -> bytes:
    lines = [b"GET %s HTTP/%s" % (target, version)]
    if version == b"1.1":
        lines.append(b"Host: golden.test")
    return b"\r\n".join([*lines, *fields]) + b"\r\n\r\n"


def request(method: bytes, target: bytes, *fields: bytes, body: bytes = b"") -> bytes:
    lines = [b"%s %s HTTP/1.1" % (method, target), b"Host: golden.test", *fields]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


LAST_MODIFIED = b"Sun, 01 Oct 2023 12:00:00 GMT"

CASES = [
    WireCase("get-file", get(b"/hello.txt", b"User-Agent: golden/1")),
    WireCase("get-file-http10", get(b"/hello.txt", version=b"1.0")),
    WireCase(
        "get-file-http10-keep-alive",
        get(b"/hello.txt", b"Connection: keep-alive", version=b"1.0") * 2,
    ),
    WireCase("head-file", request(b"HEAD", b"/hello.txt")),
    WireCase("get-index", get(b"/", b"Referer: http://golden.test/from")),
    WireCase("get-missing", get(b"/missing.txt")),
    WireCase("get-directory-without-slash", get(b"/sub")),
    WireCase("get-directory-without-index", get(b"/sub/")),
    WireCase("get-empty-file", get(b"/empty.txt")),
    WireCase("get-percent-encoded", get(b"/with%20space.txt")),
    WireCase("get-dot-dot", get(b"/sub/../hello.txt")),
    WireCase("get-traversal", get(b"/../../etc/passwd")),
    WireCase(
        "not-modified", get(b"/sub/file.txt", b"If-Modified-Since: " + LAST_MODIFIED)
    ),
    WireCase(
        "modified-since-older",
        get(b"/sub/file.txt", b"If-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT"),
    ),
    WireCase("range", get(b"/sub/file.txt", b"Range: bytes=0-4")),
    WireCase("range-suffix", get(b"/sub/file.txt", b"Range: bytes=-5")),
    WireCase("range-multiple", get(b"/big.txt", b"Range: bytes=0-9, 50000-50009")),
    WireCase("range-unsatisfiable", get(b"/sub/file.txt", b"Range: bytes=1000-")),
    WireCase("binary-file", get(b"/data.bin")),
    WireCase("big-file-gzip-not-asked", get(b"/big.txt")),
    WireCase("pipelined", get(b"/hello.txt") + get(b"/") + get(b"/missing")),
    WireCase(
        "connection-close",
        get(b"/hello.txt") + get(b"/hello.txt", b"Connection: close"),
        halfClose=False,
    ),
    WireCase(
        "post-to-file",
        request(b"POST", b"/hello.txt", b"Content-Length: 3", body=b"abc"),
    ),
    WireCase("options-asterisk", request(b"OPTIONS", b"*")),
    WireCase("unknown-method", request(b"BREW", b"/hello.txt")),
    WireCase("bad-request-line", b"GET /hello.txt HTTP/1.1 extra\r\n\r\n"),
    WireCase("obs-fold", get(b"/hello.txt", b"X-A: 1", b" 2")),
    WireCase(
        "content-length-and-chunked",
        request(
            b"POST",
            b"/hello.txt",
            b"Content-Length: 3",
            b"Transfer-Encoding: chunked",
            body=b"3\r\nabc\r\n0\r\n\r\n",
        ),
    ),
    WireCase("request-line-too-long", get(b"/" + b"a" * 9000)),
    WireCase("idle-timeout", get(b"/hello.txt"), halfClose=False),
    WireCase(
        "head-timeout",
        b"GET /hello.txt HTTP/1.1\r\nHost: golden.test\r\n",
        halfClose=False,
    ),
]


# -- the server ----------------------------------------------------------------


def makeSite(site: Path) -> Path:
    """A PYTHONPATH entry with the plugin and the package (test_twistd's way)."""
    plugins = site / "twisted" / "plugins"
    plugins.mkdir(parents=True)
    shutil.copy(ROOT / "twisted" / "plugins" / "connserver_plugin.py", plugins)
    (site / "connserver").symlink_to(ROOT / "connserver")
    return site


def makeFiles(www: Path) -> None:
    for name, content in FILES.items():
        path = www / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    for path in sorted(www.rglob("*"), reverse=True):
        os.utime(path, (MTIME, MTIME))
    os.utime(www, (MTIME, MTIME))


def twistdCommand(*args: str) -> list[str]:
    script = Path(sys.executable).parent / "twistd"
    if script.exists():
        return [sys.executable, str(script), *args]
    return [
        sys.executable,
        "-c",
        "from twisted.scripts.twistd import run; run()",
        *args,
    ]


class Server:
    """A running ``twistd -n connserver``; its output is read by a thread."""

    def __init__(self, site: Path, cwd: Path, *args: str) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(site)
        env.pop("PYTHONSTARTUP", None)
        self.process = subprocess.Popen(
            twistdCommand(
                "-n",
                "--pidfile=",
                "connserver",
                "--listen",
                "tcp:0:interface=127.0.0.1",
                *args,
            ),
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        try:
            match = self.waitFor(r"connserver listening on ipv4 127\.0\.0\.1:(\d+)")
        except BaseException:
            self.kill()
            raise
        self.port = int(match.group(1))

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def waitFor(self, pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"no log line matching {pattern!r}:\n{''.join(self.log)}"
                ) from None
            if line is None:
                raise AssertionError(f"twistd exited:\n{''.join(self.log)}")
            self.log.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=TIMEOUT)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=TIMEOUT)
        if self.process.stdout is not None:
            self.process.stdout.close()


# -- one connection --------------------------------------------------------------


def exchange(port: int, wire: WireCase) -> tuple[bytes, str]:
    """Send the case's bytes; read until the server closes.  (bytes, how it ended)"""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client:
        client.sendall(wire.data)
        if wire.halfClose:
            client.shutdown(socket.SHUT_WR)
        try:
            while chunk := client.recv(65536):
                received += chunk
            end = "eof"
        except TimeoutError:
            end = "timeout"
        except ConnectionResetError:
            end = "reset"
    return received, end


_DATE = re.compile(rb"(?im)^(date): [^\r\n]*\r$")
_ETAG = re.compile(rb'(?im)^(etag: (?:W/)?")[0-9a-f]+-')
_BOUNDARY = re.compile(rb"boundary=([0-9A-Za-z]+)")


def normaliseResponse(data: bytes) -> bytes:
    data = _DATE.sub(rb"\1: <date>\r", data)
    data = _ETAG.sub(rb"\1<inode>-", data)
    for boundary in set(_BOUNDARY.findall(data)):
        data = data.replace(boundary, b"<boundary>")
    return data


_LOG_TIME = re.compile(r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\]")
_LOG_AGE = re.compile(r" age=\d+\.\d+")
_LOG_DUR = re.compile(r" dur=\d+\.\d+")
_LOG_CONN = re.compile(r" conn=(\d+) ")


def normaliseLog(text: str) -> dict[int, list[str]]:
    """Access log lines, normalised, by connection id (in order within one)."""
    byConnection: dict[int, list[str]] = {}
    for line in text.splitlines():
        match = _LOG_CONN.search(line)
        connection = int(match.group(1)) if match else 0
        line = _LOG_TIME.sub("[<time>]", line)
        line = _LOG_AGE.sub(" age=<age>", line)
        line = _LOG_DUR.sub(" dur=<dur>", line)
        byConnection.setdefault(connection, []).append(line)
    return byConnection


def runAll() -> list[dict[str, Any]]:
    """Start the server, run every case, stop it; the transcripts."""
    with tempfile.TemporaryDirectory(prefix="golden-") as name:
        tmp = Path(name)
        site = makeSite(tmp / "site")
        www = tmp / "www"
        makeFiles(www)
        accessLog = tmp / "access.log"
        server = Server(
            site,
            tmp,
            "--path",
            str(www),
            "--access-log",
            str(accessLog),
            # Every close line (the default leaves out the ordinary ones):
            # these transcripts show each connection's whole story.
            "--log-closes",
            "all",
            "--idle-timeout",
            IDLE_TIMEOUT,
            "--request-head-timeout",
            HEAD_TIMEOUT,
        )
        try:
            results = [exchange(server.port, wire) for wire in CASES]
            server.stop()
        finally:
            server.kill()
        log = normaliseLog(accessLog.read_text("utf-8") if accessLog.exists() else "")
    transcripts = []
    for index, (wire, (received, end)) in enumerate(zip(CASES, results, strict=True)):
        transcripts.append(
            {
                "id": f"subprocess/{wire.id}",
                "in": showBytes(wire.data),
                "halfClose": wire.halfClose,
                "out": showBytes(normaliseResponse(received)),
                "end": end,
                # Connections are numbered from 1 in the order they came.
                "accessLog": log.pop(index + 1, []),
            }
        )
    if log:
        transcripts.append({"id": "subprocess/unmatched-log-lines", "accessLog": log})
    return transcripts
