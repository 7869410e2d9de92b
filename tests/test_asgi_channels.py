"""
Django Channels under ``twistd connserver --asgi`` (issue 24), in a
subprocess: a minimal project (``tests/_channelsapp.py``: no database,
the in-memory channel layer) with a Django view for ``http`` and
Channels' WebSocket consumers, checked with an HTTP client and the
``websockets`` client.  Every wait is bounded; 127.0.0.1, port 0.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_asgi_twistd import get
from .test_twistd import ROOT, TIMEOUT, Server

pytest.importorskip("channels")
pytest.importorskip("wsproto")
pytest.importorskip("websockets")

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    site = tmp_path / "site"
    plugins = site / "twisted" / "plugins"
    plugins.mkdir(parents=True)
    shutil.copy(ROOT / "twisted" / "plugins" / "connserver_plugin.py", plugins)
    (site / "connserver").symlink_to(ROOT / "connserver")
    shutil.copy(ROOT / "tests" / "_channelsapp.py", site / "cs_channelsapp.py")
    s = Server(site, tmp_path, "--asgi", "cs_channelsapp:application")
    try:
        yield s.waitUntilListening()
    finally:
        if s.process.poll() is None:
            s.process.kill()
            s.process.wait(timeout=TIMEOUT)
        if s.process.stdout is not None:
            s.process.stdout.close()


def test_channels(server: Server) -> None:
    from websockets.sync.client import connect

    status, headers, body = get(server.port, "/hello?name=connserver")
    assert status == 200, body
    assert headers["Content-Type"] == "text/plain"
    assert body == b"hello from django GET /hello connserver"
    status, _, _ = get(server.port, "/missing")
    assert status == 404

    url = f"ws://127.0.0.1:{server.port}/ws/"
    with (
        connect(url + "echo", open_timeout=TIMEOUT) as first,
        connect(url + "echo", open_timeout=TIMEOUT) as second,
    ):
        for message in ("hello", "\u00e9\u2713", b"\x00\x01\xfe\xff", "x" * 70000):
            first.send(message)
            assert first.recv(timeout=TIMEOUT) == message
        # Through the in-memory channel layer's group, to both consumers.
        first.send("all:news")
        assert first.recv(timeout=TIMEOUT) == "all:news"
        assert second.recv(timeout=TIMEOUT) == "all:news"
    with connect(url + "sync", open_timeout=TIMEOUT) as ws:
        ws.send("sync hello")
        assert ws.recv(timeout=TIMEOUT) == "sync hello"
        ws.send(b"\x00bytes")
        assert ws.recv(timeout=TIMEOUT) == b"\x00bytes"
        ws.send("layer")
        assert ws.recv(timeout=TIMEOUT) == "via layer"
    server.stop()
