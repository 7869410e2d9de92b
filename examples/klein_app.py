# twisted.web and Klein request APIs are untyped.
# mypy: disable-error-code="no-untyped-call"
"""
A small Klein app served by connserver.

From the command line (the app is adapted with ``connserver.asHandler``)::

    twistd -n connserver --listen tcp:8080:interface=127.0.0.1 \\
        --handler examples.klein_app:app

Embedded, with the adapter made explicit::

    python examples/klein_app.py        # serves 127.0.0.1:8080
    python examples/klein_app.py 9000   # another port (0: any free one)

Then ``curl -i localhost:8080/hello/ada``, ``curl -i -d '{"a": 1}'
localhost:8080/echo``, or ``curl -i -0 -H 'Connection: keep-alive'
localhost:8080/ localhost:8080/`` to see one HTTP/1.0 connection serve both.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.web.server import Request

app = Klein()


@app.route("/")
def home(request: Request) -> str:
    return "connserver + Klein\n"


@app.route("/hello/<name>")
def hello(request: Request, name: str) -> str:
    request.setHeader("Content-Type", "text/plain; charset=utf-8")
    return f"hello, {name}\n"


@app.route("/echo", methods=["POST"])
def echo(request: Request) -> bytes:
    # The body was read by connserver (bounded by --max-body-bytes) before
    # the route runs; it is in request.content, as under twisted.web's Site.
    assert request.content is not None
    try:
        document = json.loads(request.content.read() or b"null")
    except ValueError:
        request.setResponseCode(400)
        return b"expected JSON\n"
    request.setHeader("Content-Type", "application/json")
    return json.dumps({"echo": document}).encode() + b"\n"


@app.route("/later")
def later(request: Request) -> Deferred[str]:
    from twisted.internet import reactor

    # Asynchronous: the response is sent when the Deferred fires.  If the
    # client goes away first, notifyFinish() fails and Klein cancels this.
    return deferLater(reactor, 0.5, lambda: "half a second later\n")


@app.route("/bye")
def bye(request: Request) -> str:
    # connserver honours it: this response says Connection: close and the
    # connection closes after it (RFC 9112 §9.6).
    request.setHeader("Connection", "close")
    return "goodbye\n"


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ServerEndpoint

    from connserver import ConnectionFactory, ServerConfig, WebResourceHandler

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    handler = WebResourceHandler(app.resource(), reactor=reactor)
    factory = ConnectionFactory(handler, config=ServerConfig(), reactor=reactor)
    listening = TCP4ServerEndpoint(reactor, port, interface="127.0.0.1").listen(factory)
    listening.addCallback(
        lambda port: print(
            f"serving http://127.0.0.1:{port.getHost().port}/", flush=True
        )
    )
    reactor.run()


if __name__ == "__main__":
    main()
