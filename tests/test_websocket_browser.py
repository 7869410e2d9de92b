"""
A real browser's WebSockets on connserver (issue 22): headless Chromium
loads a page from connserver whose script opens ``ws://`` to it, then
``wss://`` to connserver's TLS listener (a self-signed certificate, hence
``--ignore-certificate-errors``; Chromium offers ALPN ``h2, http/1.1``),
sends text and binary messages, checks each echo, closes, and writes what
it saw into the DOM, which ``--dump-dom`` prints.

connserver runs in-process (``WebSocketHandler`` with autobahn's echo, the
page from a plain handler); Chromium runs in a thread, bounded by a
timeout.  Skipped, with the reason, where no Chromium is installed
(``apt-get install chromium``; .ci/run installs it).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, threads

from connserver import Request, Response, WebSocketHandler

from ._helpers import realReactor
from ._sockets import bounded, finish, serve
from ._websockets import echoFactory
from .test_websocket import Closes

pytestmark = pytest.mark.slow

CHROMIUM = next(
    (
        path
        for name in ("chromium", "chromium-browser", "google-chrome")
        if (path := shutil.which(name)) is not None
    ),
    None,
)
#: How long Chromium may take, start to DOM dump.
BROWSER_TIMEOUT = 60

PAGE = b"""<!doctype html>
<meta charset="utf-8">
<title>connserver WebSockets</title>
<pre id="result">pending</pre>
<script>
async function echo(url, messages) {
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error("could not open " + url));
  });
  const echoes = [];
  for (const message of messages) {
    const answer = new Promise((resolve) => { ws.onmessage = (e) => resolve(e.data); });
    ws.send(message);
    let data = await answer;
    if (data instanceof ArrayBuffer) {
      data = "binary:" + Array.from(new Uint8Array(data)).join(",");
    }
    echoes.push(data);
  }
  const closed = new Promise((resolve) => {
    ws.onclose = (e) => resolve("close " + e.code + (e.wasClean ? " clean" : " unclean"));
  });
  ws.close(1000);
  echoes.push(await closed);
  return echoes;
}
(async () => {
  const out = document.getElementById("result");
  try {
    const tlsPort = new URLSearchParams(location.search).get("wss");
    const messages = ["hello", "\\u00e9\\u2713", new Uint8Array([0, 1, 254, 255])];
    const plain = await echo("ws://" + location.host + "/ws", messages);
    const secure = await echo("wss://127.0.0.1:" + tlsPort + "/ws", messages);
    out.textContent = "RESULT " + JSON.stringify({plain, secure});
  } catch (error) {
    out.textContent = "FAILED " + error;
  }
  // The result is in the DOM: let the page finish loading.
  fetch("/done");
})();
</script>
<!-- Parser-blocking, answered once /done arrives: the load event, and with it
     the DOM dump, waits for the script above (WebSocket traffic alone does
     not hold headless Chromium's dump back). -->
<script src="/gate"></script>
"""


def pageAndWebSockets() -> Any:
    """The page, the echo at ``/ws``, and ``/gate`` answered after ``/done``."""
    websocket = WebSocketHandler(echoFactory())
    gates: list[defer.Deferred[Response]] = []
    done = Response(204, [], b"")

    def handler(request: Request) -> Any:
        if request.path == b"/ws":
            return websocket(request)
        if request.path == b"/gate":
            gate: defer.Deferred[Response] = defer.Deferred()
            gates.append(gate)
            # Bounded: a page whose script never finishes still loads.
            gate.addTimeout(BROWSER_TIMEOUT / 2, realReactor())
            gate.addErrback(lambda _: script)
            return gate
        if request.path == b"/done":
            while gates:
                gate = gates.pop()
                if not gate.called:
                    gate.callback(script)
            return done
        return Response(200, [(b"Content-Type", b"text/html; charset=utf-8")], PAGE)

    script = Response(200, [(b"Content-Type", b"text/javascript")], b"")
    return handler


def runChromium(url: str, profile: Path) -> str:
    """Chromium, headless, loads ``url`` and prints the DOM once it settles."""
    assert CHROMIUM is not None
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--ignore-certificate-errors",
            f"--user-data-dir={profile}",
            # Virtual time runs the page's timers fast; Chromium waits for
            # the network (the WebSockets' traffic too) before it dumps.
            "--virtual-time-budget=20000",
            "--dump-dom",
            url,
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=BROWSER_TIMEOUT,
    )
    if '<pre id="result">' not in result.stdout:
        raise AssertionError(
            f"Chromium exited {result.returncode} without a result:\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        )
    return result.stdout


@pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary (apt-get install chromium)"
)
@pytest_twisted.ensureDeferred
async def test_chromiumEchoesOverWsAndWss(tmp_path: Path) -> None:
    handler = pageAndWebSockets()
    plain = await serve(handler)
    secure = await serve(handler, tls=True)
    closes = [Closes(plain), Closes(secure)]
    try:
        url = f"http://127.0.0.1:{plain.portNumber}/?wss={secure.portNumber}"
        dom = await bounded(
            threads.deferToThread(runChromium, url, tmp_path / "profile"),
            BROWSER_TIMEOUT + 5,
        )
        match = re.search(r'<pre id="result">([^<]*)</pre>', dom)
        assert match is not None, dom
        text = html.unescape(match.group(1))
        assert text.startswith("RESULT "), text
        seen = json.loads(text.removeprefix("RESULT "))
        expected = ["hello", "\u00e9\u2713", "binary:0,1,254,255", "close 1000 clean"]
        assert seen == {"plain": expected, "secure": expected}
        # Each server recorded its WebSocket's close as the WebSocket's own.
        for server, closing in zip((plain, secure), closes, strict=True):
            records = await closing.wait()
            upgraded = [r for r in records if r.closeReason == "upgraded"]
            assert len(upgraded) == 1, records
            assert upgraded[0].secure is (server is secure)
    finally:
        await finish(plain, secure)
