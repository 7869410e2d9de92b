"""
Headless Chromium's WebSockets on a Starlette app under ``twistd
connserver --asgi`` (issue 24): the page, script and checks of
``tests/test_websocket_browser.py`` (text and binary echoes, a clean
close, ``ws://`` and ``wss://`` with a self-signed certificate), served
by the ASGI app in a subprocess, on 127.0.0.1 port 0.  Every wait is
bounded; skipped where no Chromium is installed.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._certs import CertificateFiles, makeCertificate
from .test_twistd import ROOT, TIMEOUT, Server, sslListen
from .test_websocket_browser import CHROMIUM, PAGE, runChromium

pytest.importorskip("starlette")
pytest.importorskip("wsproto")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None, reason="no chromium binary (apt-get install chromium)"
    ),
]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    site = tmp_path / "site"
    plugins = site / "twisted" / "plugins"
    plugins.mkdir(parents=True)
    shutil.copy(ROOT / "twisted" / "plugins" / "connserver_plugin.py", plugins)
    (site / "connserver").symlink_to(ROOT / "connserver")
    shutil.copy(ROOT / "tests" / "_asgibrowser.py", site / "cs_asgibrowser.py")
    (site / "cs_asgibrowser.html").write_bytes(PAGE)
    certificate: CertificateFiles = makeCertificate(tmp_path)
    s = Server(
        site,
        tmp_path,
        "--asgi",
        "cs_asgibrowser:app",
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "--listen",
        sslListen(certificate),
        plain=False,
    )
    try:
        yield s.waitUntilListening(2)
    finally:
        if s.process.poll() is None:
            s.process.kill()
            s.process.wait(timeout=TIMEOUT)
        if s.process.stdout is not None:
            s.process.stdout.close()


def test_chromiumEchoesOverWsAndWss(server: Server, tmp_path: Path) -> None:
    plain, secure = server.ports
    dom = runChromium(f"http://127.0.0.1:{plain}/?wss={secure}", tmp_path / "profile")
    match = re.search(r'<pre id="result">([^<]*)</pre>', dom)
    assert match is not None, dom
    text = html.unescape(match.group(1))
    assert text.startswith("RESULT "), text
    seen = json.loads(text.removeprefix("RESULT "))
    expected = ["hello", "\u00e9\u2713", "binary:0,1,254,255", "close 1000 clean"]
    assert seen == {"plain": expected, "secure": expected}
    server.stop()
