"""
Compression on the fly, error pages and the fallback on real sockets
(127.0.0.1, port 0), with real clients run as subprocesses: curl
``--compressed`` (HTTP/1.1 and HTTP/1.0, small cached and large streamed
files) and REDbot, which checks a response and its follow-ups (304s, a
range, gzip negotiation) against the RFCs.  Every run is bounded.
"""

from __future__ import annotations

import gzip
import importlib
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.utils import getProcessOutputAndValue

from connserver._handlers.static import StaticFiles

from ._helpers import ensureDeferred
from ._sockets import Server, bounded, finish, serve
from .test_static_compress import bigText

CURL = shutil.which("curl") or "/usr/bin/curl"
HAVE_CURL = os.path.exists(CURL)
HERE = Path(__file__).resolve().parent


PAGE = b"".join(
    b'<div class="row"><a href="/item/%d">Item number %d</a></div>\n' % (i, i)
    for i in range(400)
)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "page.html").write_bytes(PAGE)
    (tmp_path / "big.txt").write_bytes(bigText(600_000))
    (tmp_path / "small.txt").write_bytes(b"hello\n")
    (tmp_path / "index.html").write_bytes(b"<!doctype html><div id=app></div>")
    (tmp_path / "404.html").write_bytes(b"<h1>lost</h1>")
    old = os.path.getmtime(tmp_path) - 100
    for path in tmp_path.iterdir():
        os.utime(path, (old, old))
    return tmp_path


async def serveSite(site: Path) -> Server:
    from twisted.internet import reactor

    return await serve(
        StaticFiles(
            site,
            reactor=reactor,
            errorPages={404: "/404.html"},
            fallback="/index.html",
        )
    )


async def run(argv: list[str], timeout: float = 60) -> bytes:
    out, err, code = await bounded(
        getProcessOutputAndValue(argv[0], argv[1:], env=dict(os.environ)), timeout
    )
    assert code == 0, (argv, err)
    data: bytes = out
    return data


def url(server: Server, path: str) -> str:
    return f"http://127.0.0.1:{server.portNumber}{path}"


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_CURL, reason="curl is not installed")
@pytest.mark.parametrize("version", ["--http1.1", "--http1.0"])
@ensureDeferred
async def test_curlCompressed(site: Path, tmp_path: Path, version: str) -> None:
    server = await serveSite(site)
    try:
        for name in ("page.html", "big.txt"):
            headers = tmp_path / f"{name}.headers"
            body = await run(
                [
                    CURL,
                    "-sS",
                    "--max-time",
                    "30",
                    version,
                    "--compressed",
                    "-D",
                    str(headers),
                    url(server, "/" + name),
                ]
            )
            head = headers.read_bytes().lower()
            assert body == (site / name).read_bytes()
            assert b"\r\ncontent-encoding: " in head
            assert b"\r\nvary: accept-encoding\r\n" in head
            if name == "big.txt":  # streamed: no length known up front
                assert b"content-length" not in head
                if version == "--http1.1":
                    assert b"\r\ntransfer-encoding: chunked\r\n" in head
                else:
                    assert b"transfer-encoding" not in head
            else:
                assert b"\r\ncontent-length: " in head
    finally:
        await finish(server)


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_CURL, reason="curl is not installed")
@ensureDeferred
async def test_curlGzipBytesAndFallback(site: Path) -> None:
    server = await serveSite(site)
    try:
        raw = await run(
            [
                CURL,
                "-sS",
                "--max-time",
                "30",
                "-H",
                "Accept-Encoding: gzip",
                url(server, "/page.html"),
            ]
        )
        assert gzip.decompress(raw) == PAGE
        assert len(raw) < len(PAGE) // 4
        identity = await run(
            [CURL, "-sS", "--max-time", "30", url(server, "/page.html")]
        )
        assert identity == PAGE
        route = await run([CURL, "-sS", "--max-time", "30", url(server, "/app/x")])
        assert route == (site / "index.html").read_bytes()
        status = await run(
            [
                CURL,
                "-sS",
                "--max-time",
                "30",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                url(server, "/missing.css"),
            ]
        )
        assert status == b"404"
        page = await run([CURL, "-sS", "--max-time", "30", url(server, "/gone.js")])
        assert page == b"<h1>lost</h1>"
    finally:
        await finish(server)


def redbotAvailable() -> bool:
    return importlib.util.find_spec("redbot") is not None


async def redbot(server: Server, path: str, *fields: str) -> list[dict[str, Any]]:
    out = await run(
        [sys.executable, str(HERE / "_redbotcheck.py"), url(server, path), *fields],
        timeout=90,
    )
    report = json.loads(out)
    assert report["done"], report
    notes: list[dict[str, Any]] = report["notes"]
    return notes


@pytest.mark.slow
@pytest.mark.skipif(not redbotAvailable(), reason="redbot is not installed")
@ensureDeferred
async def test_redbotFindsNoErrors(site: Path) -> None:
    """
    REDbot on a compressed text file (its gzip follow-up, and as the main
    request), a streamed compressed one, an uncompressed one, 304s (its
    If-None-Match and If-Modified-Since follow-ups) and a range (its Range
    follow-up, served from the identity coding): no BAD note anywhere.
    """
    server = await serveSite(site)
    try:
        checks = [
            ("/page.html",),
            ("/page.html", "Accept-Encoding: gzip"),
            ("/big.txt", "Accept-Encoding: gzip"),
            ("/small.txt",),
        ]
        seen: dict[str, set[int]] = {}
        for check in checks:
            notes = await redbot(server, *check)
            bad = [note for note in notes if note["level"] == "BAD"]
            assert bad == [], (check, bad)
            for note in notes:
                seen.setdefault(note["id"], set()).add(note["status"])
        # What the checks covered, as REDbot saw it.
        assert "CONNEG_GZIP_GOOD" in seen  # the compressed response
        assert 304 in seen["INM_304"]  # a 304 per encoding
        assert 206 in seen["RANGE_CORRECT"]  # a range, from identity
    finally:
        await finish(server)
