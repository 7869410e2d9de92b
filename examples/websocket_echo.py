# twisted.web, Klein and autobahn APIs are untyped.
# mypy: disable-error-code="no-untyped-call,misc"
"""
A WebSocket echo on connserver: a Klein app whose ``/ws`` route returns
autobahn's ``WebSocketResource``, and a page at ``/`` whose script talks to
it.

From the command line (needs ``pip install klein 'connserver[websocket]'``)::

    twistd -n connserver --listen tcp:8080:interface=127.0.0.1 \\
        --handler examples.websocket_echo:app

Then open <http://localhost:8080/>, or ``python -m websockets
ws://localhost:8080/ws`` (the ``websockets`` package's interactive client)
and type.  Over TLS (``--listen ssl:8443:...``) the page uses ``wss://``.
With ``--workers N`` each worker carries its own WebSockets; SIGTERM sends
each a close frame 1001 (Going Away) and waits for them up to
``--drain-timeout``.
"""

from __future__ import annotations

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from klein import Klein
from twisted.web.server import Request


class EchoProtocol(WebSocketServerProtocol):
    """Sends every message back as it came (text or binary)."""

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.sendMessage(payload, isBinary)


factory = WebSocketServerFactory()
factory.protocol = EchoProtocol
# One resource for every request: it builds a protocol per connection.
echo = WebSocketResource(factory)

app = Klein()

PAGE = b"""<!doctype html>
<meta charset="utf-8">
<title>connserver WebSocket echo</title>
<input id="text" value="hello" autofocus> <button id="send">send</button>
<pre id="log"></pre>
<script>
const log = (line) => { document.getElementById("log").textContent += line + "\\n"; };
const scheme = location.protocol === "https:" ? "wss:" : "ws:";
const ws = new WebSocket(scheme + "//" + location.host + "/ws");
ws.onopen = () => log("open");
ws.onmessage = (event) => log("echo: " + event.data);
ws.onclose = (event) => log("closed " + event.code);
document.getElementById("send").onclick = () => ws.send(document.getElementById("text").value);
</script>
"""


@app.route("/ws")
def ws(request: Request) -> WebSocketResource:
    # autobahn takes the connection over (request.channel.transport) and
    # answers the handshake itself; connserver counts it as upgraded.
    return echo


@app.route("/")
def home(request: Request) -> bytes:
    request.setHeader("Content-Type", "text/html; charset=utf-8")
    return PAGE
