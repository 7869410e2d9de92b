"""
WebSockets through what runs in front of connserver and around it (issue
22), with ``examples/websocket_echo.py`` (a Klein route returning autobahn's
``WebSocketResource``) and the ``websockets`` library's client:

* ``twistd -n connserver --handler examples.websocket_echo:app --workers 2``:
  both workers carry WebSockets (the status page's worker rows), every one
  echoes, and SIGTERM closes each with 1001 (Going Away) before twistd exits;
* behind the real HAProxy (HTTP mode, its own upgrade handling, with and
  without ``send-proxy-v2``) and nginx (``proxy_http_version 1.1``, the
  ``map $http_upgrade $connection_upgrade`` and the two ``proxy_set_header``
  lines), run from the configurations docs/deployment.md prints, which this
  module checks are there verbatim.

The proxies run in the foreground from a temporary directory (skipped,
with the reason, where not installed); connserver runs in-process on the
test's reactor, the blocking client in a thread.  Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import http.client
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import threads

from ._helpers import eventually, realReactor
from ._proxies import (
    HAPROXY,
    HAPROXY_WEBSOCKET,
    NGINX,
    NGINX_WEBSOCKET,
    Proxy,
    proxies,
    startProxy,
)
from ._sockets import TIMEOUT, Server, bounded, finish, serve
from .test_twistd import ROOT, server
from .test_workers import statusJSON, waitReady

pytestmark = pytest.mark.slow

__all__ = ["proxies", "server"]  # fixtures, used by name

CLIENT = "127.0.0.5"
MESSAGES = ("hello", b"\x00\x01\xfe\xff")

needHAProxy = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")
needNginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """
    test_twistd's ``PYTHONPATH`` entry (the plugin and the package), with
    ``examples`` too, so that ``--handler examples.websocket_echo:app``
    imports as it does from a checkout.
    """
    site = tmp_path_factory.mktemp("site")
    plugins = site / "twisted" / "plugins"
    plugins.mkdir(parents=True)
    shutil.copy(ROOT / "twisted" / "plugins" / "connserver_plugin.py", plugins)
    (site / "connserver").symlink_to(ROOT / "connserver")
    (site / "examples").symlink_to(ROOT / "examples")
    return site


def openWebSocket(uri: str, **options: Any) -> Any:
    """``websockets.sync.client.connect``: use it as a context manager."""
    from websockets.sync.client import connect

    return connect(uri, open_timeout=TIMEOUT, close_timeout=TIMEOUT, **options)


def echoAll(ws: Any) -> list[str | bytes]:
    echoes = []
    for message in MESSAGES:
        ws.send(message)
        echoes.append(ws.recv(timeout=TIMEOUT))
    return echoes


def closeCodeOnceClosed(ws: Any) -> int | None:
    """Wait (bounded) for the server's close; the code it sent."""
    from websockets.exceptions import ConnectionClosed

    try:
        ws.recv(timeout=TIMEOUT)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None
    raise AssertionError("a message instead of the close")


# -- twistd --workers 2 ---------------------------------------------------------


def test_twistdWorkersEachCarryWebSockets(server: Callable[..., Any]) -> None:
    s = server(
        "--handler",
        "examples.websocket_echo:app",
        "--workers",
        "2",
        "--status-path",
        "/st",
        "--drain-timeout",
        "5",
    )
    pids = waitReady(s, 2)
    uri = f"ws://127.0.0.1:{s.port}/ws"
    opened: list[Any] = []
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:

        def bothWorkersCarryWebSockets() -> bool:
            # Both workers accept on the shared socket: open WebSockets
            # (and keep them open) until each worker's row counts at least
            # two connections, so at least one WebSocket each besides the
            # status request itself.
            nonlocal rows
            for _ in range(2):
                opened.append(stack.enter_context(openWebSocket(uri)))
            rows = statusJSON(s.port)["workers"]  # type: ignore[assignment]
            return len(rows) == 2 and all(row["connections"] >= 2 for row in rows)

        eventually(
            bothWorkersCarryWebSockets,
            timeout=3 * TIMEOUT,
            interval=0.3,
            message=lambda: (len(opened), rows),
        )
        assert {row["pid"] for row in rows} == set(pids.values())
        for ws in opened:
            assert echoAll(ws) == list(MESSAGES)
        # SIGTERM: each worker drains, each WebSocket is told Going Away.
        s.process.send_signal(signal.SIGTERM)
        assert [closeCodeOnceClosed(ws) for ws in opened] == [1001] * len(opened)
        s.checkExited()


# -- behind HAProxy and nginx ---------------------------------------------------


def throughProxy(port: int) -> dict[str, Any]:
    """A WebSocket echo from 127.0.0.5, then a plain GET of the page."""
    with openWebSocket(f"ws://127.0.0.1:{port}/ws", source_address=(CLIENT, 0)) as ws:
        echoes = echoAll(ws)
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=TIMEOUT, source_address=(CLIENT, 0)
    )
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        page = (response.status, response.read())
    finally:
        connection.close()
    return {"echoes": echoes, "closeCode": ws.close_code, "page": page}


async def serveExample(endpointText: str | None = None, **config: Any) -> Server:
    from connserver import ConnectionFactory, ServerConfig, asHandler
    from examples.websocket_echo import app

    if endpointText is None:
        return await serve(asHandler(app), **config)
    from twisted.internet.endpoints import serverFromString

    reactor = realReactor()
    factory = ConnectionFactory(
        asHandler(app), config=ServerConfig(**config), reactor=reactor
    )
    port = await bounded(serverFromString(reactor, endpointText).listen(factory))
    return Server(port, factory, None)


async def checkThrough(server: Server, proxy: Proxy) -> None:
    records: list[Any] = []
    closes: list[Any] = []
    server.factory.requestObservers.append(records.append)
    server.factory.closeObservers.append(closes.append)
    seen = await bounded(threads.deferToThread(throughProxy, proxy.port), TIMEOUT + 5)
    assert seen["echoes"] == list(MESSAGES), proxy.log()
    assert seen["closeCode"] == 1000
    assert seen["page"][0] == 200 and b"WebSocket" in seen["page"][1]
    # The client's address (PROXY v2 or X-Forwarded-For) on the 101's
    # record, and the WebSocket's own close once the proxy closes its side.
    upgrades = [r for r in records if r.status == 101]
    assert [(r.target, r.peerHost) for r in upgrades] == [(b"/ws", CLIENT)]
    assert [c.closeReason for c in closes] == ["upgraded"]


@needHAProxy
@pytest_twisted.ensureDeferred
async def test_behindHAProxy(tmp_path: Path, proxies: list[Proxy]) -> None:
    server = await serveExample("haproxy:tcp:0:interface=127.0.0.1")
    try:
        proxy = startProxy(
            "haproxy", tmp_path / "haproxy", server.portNumber, websocket=True
        )
        proxies.append(proxy)
        await checkThrough(server, proxy)
    finally:
        for proxy in proxies:
            proxy.stop()
        await finish(server)


@needNginx
@pytest_twisted.ensureDeferred
async def test_behindNginx(tmp_path: Path, proxies: list[Proxy]) -> None:
    server = await serveExample(trustedProxies="127.0.0.1")
    try:
        proxy = startProxy(
            "nginx", tmp_path / "nginx", server.portNumber, websocket=True
        )
        proxies.append(proxy)
        await checkThrough(server, proxy)
    finally:
        for proxy in proxies:
            proxy.stop()
        await finish(server)


def test_deploymentDocPrintsTheTestedConfigurations() -> None:
    text = (ROOT / "docs" / "deployment.md").read_text()
    assert HAPROXY_WEBSOCKET in text
    assert NGINX_WEBSOCKET in text
