"""
WebSocket through ``--proxy`` with real clients and real proxies in front
(issue 21): autobahn's echo server upstream, connserver's ``ReverseProxy``
mounted at ``/`` in between (as ``--proxy /=URL`` mounts it), and

* headless Chromium as the client (its page from a second connserver, its
  WebSocket to the proxy);
* nginx, then HAProxy, in front of connserver, with docs/deployment.md's
  WebSocket configurations, and the ``websockets`` library as the client.

Each checks messages both ways (text and binary), a large message each way
(megabytes: more than the sockets' buffers hold, so each hop's producer is
paused and resumed on the way), and connserver's one close record for the
tunnel with the bytes it carried each way.  The proxies and Chromium are
skipped, with the reason, where not installed (``.ci/run`` installs them);
everything listens on 127.0.0.1, every wait is bounded.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, threads

from connserver import ConnectionRecord, Request, Response, ReverseProxy

from ._helpers import eventuallyDeferred, realReactor
from ._proxies import HAPROXY, NGINX, Proxy, proxies, startProxy
from ._sockets import TIMEOUT, Server, bounded, finish, serve
from .test_proxy_websocket import autobahnUpstream
from .test_websocket_browser import BROWSER_TIMEOUT, CHROMIUM, runChromium

__all__ = ["proxies"]  # a fixture, used by name

pytestmark = pytest.mark.slow

#: Large enough to fill every socket buffer on the way several times over.
LARGE_TEXT = "x" * 3_000_000
LARGE_BINARY = bytes(range(256)) * 8192  # 2 MiB
MESSAGES: tuple[str | bytes, ...] = (
    "hello",
    "\u00e9\u2713",
    b"\x00\x01\xfe\xff",
    LARGE_TEXT,
    LARGE_BINARY,
)
PAYLOAD = sum(
    len(m.encode() if isinstance(m, str) else m) for m in MESSAGES
)  # bytes of payload each way


async def proxied() -> tuple[Any, Any, Server, ReverseProxy, list[ConnectionRecord]]:
    """The autobahn upstream and connserver with ``--proxy /=`` to it."""
    port, upstream = autobahnUpstream()
    url = f"http://127.0.0.1:{port.getHost().port}"
    proxy = ReverseProxy(url, reactor=realReactor(), prefix="/")
    server = await serve(proxy)
    closes: list[ConnectionRecord] = []
    server.factory.closeObservers.append(closes.append)
    return port, upstream, server, proxy, closes


async def stop(port: Any, server: Server, proxy: ReverseProxy) -> None:
    await bounded(proxy.close())
    await finish(server)
    await port.stopListening()


async def checkTheTunnelsRecord(
    closes: list[ConnectionRecord], upstream: Any
) -> ConnectionRecord:
    """
    One close record for the WebSocket's connection, ``upgraded``, with the
    bytes each way: every payload byte once, plus each frame's head (a
    client's frames are masked: 4 bytes more) and the close frames.  A
    client may fragment a large message (Chromium does, in frames of about
    128 KiB), which adds a head per fragment: a thousandth at most.
    """
    await eventuallyDeferred(lambda: upstream.lost == 1)
    await eventuallyDeferred(lambda: any(r.closeReason == "upgraded" for r in closes))
    upgraded = [r for r in closes if r.closeReason == "upgraded"]
    assert len(upgraded) == 1, closes
    [record] = upgraded
    frames = len(MESSAGES) + 1
    heads = PAYLOAD // 1000 + 128
    received, sent = record.bytesReceived, record.bytesSent
    assert received is not None and sent is not None, record
    assert PAYLOAD < received <= PAYLOAD + heads, record
    assert PAYLOAD < sent <= PAYLOAD + frames * 10 + 128, record
    # The client's frames carry a mask each, the server's none.
    assert received - sent >= 4 * frames - 16
    return record


# -- the websockets library through nginx and HAProxy ---------------------------


def echoThrough(port: int) -> dict[str, Any]:
    """Each message and its echo, then a close (1000) from the client."""
    from websockets.sync.client import connect

    with connect(
        f"ws://127.0.0.1:{port}/ws",
        open_timeout=TIMEOUT,
        close_timeout=TIMEOUT,
        max_size=None,
    ) as ws:
        same = []
        for message in MESSAGES:
            ws.send(message)
            same.append(ws.recv(timeout=TIMEOUT) == message)
        status = ws.response.status_code if ws.response is not None else None
    return {"same": same, "status": status, "closeCode": ws.close_code}


async def throughFront(kind: str, directory: Path, proxies: list[Proxy]) -> None:
    port, upstream, server, proxy, closes = await proxied()
    try:
        options: dict[str, Any] = {"proxyProtocol": False} if kind == "haproxy" else {}
        front = startProxy(
            kind, directory, server.portNumber, websocket=True, **options
        )
        proxies.append(front)
        seen = await bounded(
            threads.deferToThread(echoThrough, front.port), 2 * TIMEOUT + 5
        )
        assert seen == {
            "same": [True] * len(MESSAGES),
            "status": 101,
            "closeCode": 1000,
        }, front.log()
        await checkTheTunnelsRecord(closes, upstream)
        # The tunnel's upstream connection was new and is gone.
        assert upstream.opened == 1 and proxy.pool.idle == []
    finally:
        await stop(port, server, proxy)


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed")
@pytest_twisted.ensureDeferred
async def test_behindNginx(tmp_path: Path, proxies: list[Proxy]) -> None:
    await throughFront("nginx", tmp_path / "nginx", proxies)


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")
@pytest_twisted.ensureDeferred
async def test_behindHAProxy(tmp_path: Path, proxies: list[Proxy]) -> None:
    await throughFront("haproxy", tmp_path / "haproxy", proxies)


# -- headless Chromium ----------------------------------------------------------

PAGE = b"""<!doctype html>
<meta charset="utf-8">
<title>connserver proxied WebSockets</title>
<pre id="result">pending</pre>
<script>
async function digest(data) {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const hash = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(hash)).map((b) => b.toString(16).padStart(2, "0")).join("");
}
async function echo(url, messages) {
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error("could not open " + url));
  });
  const seen = [];
  for (const message of messages) {
    const answer = new Promise((resolve) => { ws.onmessage = (e) => resolve(e.data); });
    ws.send(message);
    const data = await answer;
    const kind = typeof data === "string" ? "text" : "binary";
    const size = typeof data === "string" ? data.length : data.byteLength;
    seen.push(kind + ":" + size + ":" + await digest(data));
  }
  const closed = new Promise((resolve) => {
    ws.onclose = (e) => resolve("close " + e.code + (e.wasClean ? " clean" : " unclean"));
  });
  ws.close(1000);
  seen.push(await closed);
  return seen;
}
(async () => {
  const out = document.getElementById("result");
  try {
    const port = new URLSearchParams(location.search).get("proxy");
    const binary = new Uint8Array(2 * 1024 * 1024);
    for (let i = 0; i < binary.length; i++) binary[i] = i % 256;
    const messages = ["hello", "\\u00e9\\u2713", new Uint8Array([0, 1, 254, 255]),
                      "x".repeat(3000000), binary];
    const seen = await echo("ws://127.0.0.1:" + port + "/ws", messages);
    out.textContent = "RESULT " + JSON.stringify(seen);
  } catch (error) {
    out.textContent = "FAILED " + error;
  }
  fetch("/done");
})();
</script>
<!-- Answered once /done arrives, so that the DOM dump waits for the script. -->
<script src="/gate"></script>
"""


def pageHandler() -> Any:
    """The page, and ``/gate`` answered after ``/done`` (bounded)."""
    gates: list[defer.Deferred[Response]] = []
    script = Response(200, [(b"Content-Type", b"text/javascript")], b"")

    def handler(request: Request) -> Any:
        if request.path == b"/gate":
            gate: defer.Deferred[Response] = defer.Deferred()
            gates.append(gate)
            gate.addTimeout(BROWSER_TIMEOUT / 2, realReactor())
            gate.addErrback(lambda _: script)
            return gate
        if request.path == b"/done":
            while gates:
                gate = gates.pop()
                if not gate.called:
                    gate.callback(script)
            return Response(204, [], b"")
        return Response(200, [(b"Content-Type", b"text/html; charset=utf-8")], PAGE)

    return handler


def expectedFromChromium() -> list[str]:
    seen = []
    for message in MESSAGES:
        data = message.encode() if isinstance(message, str) else message
        kind = "text" if isinstance(message, str) else "binary"
        # JavaScript's length of a string is in UTF-16 code units.
        size = len(message.encode("utf-16-le")) // 2 if kind == "text" else len(data)
        seen.append(f"{kind}:{size}:{hashlib.sha256(data).hexdigest()}")
    return [*seen, "close 1000 clean"]


@pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary (apt-get install chromium)"
)
@pytest_twisted.ensureDeferred
async def test_chromiumThroughTheProxy(tmp_path: Path) -> None:
    port, upstream, server, proxy, closes = await proxied()
    page = await serve(pageHandler())
    try:
        url = f"http://127.0.0.1:{page.portNumber}/?proxy={server.portNumber}"
        dom = await bounded(
            threads.deferToThread(runChromium, url, tmp_path / "profile"),
            BROWSER_TIMEOUT + 5,
        )
        match = re.search(r'<pre id="result">([^<]*)</pre>', dom)
        assert match is not None, dom
        text = html.unescape(match.group(1))
        assert text.startswith("RESULT "), text
        assert json.loads(text.removeprefix("RESULT ")) == expectedFromChromium()
        await checkTheTunnelsRecord(closes, upstream)
        assert upstream.opened == 1
    finally:
        await finish(page)
        await stop(port, server, proxy)
