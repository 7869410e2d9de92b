"""
A twistd application file: static files, a connserver handler and a
twisted.web resource on one port, with an access log and the status page.

    .venv/bin/twistd -ny examples/site.tac        # http://127.0.0.1:8080/
    PORT=9000 ACCESS_LOG=access.log .venv/bin/twistd -ny examples/site.tac

``PORT`` (8080) and ``ACCESS_LOG`` (``-``: standard output) come from the
environment.  SIGTERM drains: in-flight responses finish first.  A port
already in use is one line and exit status 1, as with ``twistd connserver``.
"""

import os

from twisted.application import service
from twisted.internet import endpoints, reactor
from twisted.web.resource import Resource
from twisted.web.static import Data

from connserver import (
    ConnectionFactory,
    ConnectionServerService,
    Response,
    ServerConfig,
    StaticFiles,
    WebResourceHandler,
)

HERE = os.path.dirname(os.path.abspath(__file__))


def hello(request):
    """A connserver handler: request in, Response out."""
    return Response(200, {"Content-Type": "text/plain; charset=utf-8"}, b"hello\n")


# Any twisted.web resource tree (or a Klein app's app.resource()).  It sees
# the whole path: mounted at /web, the tree's root has a "web" child.
web = Resource()
web.putChild(b"web", Data(b"<p>twisted.web, served by connserver</p>\n", "text/html"))

factory = ConnectionFactory(
    StaticFiles(os.path.join(HERE, "www")), config=ServerConfig(idleTimeout=30)
)
port = os.environ.get("PORT", "8080")
server = ConnectionServerService(
    factory,
    [endpoints.serverFromString(reactor, f"tcp:{port}:interface=127.0.0.1")],
)
# A port in use (or any failure to listen) is one line, not a traceback.
server.oneLineStartupErrors = True
server.mount("/hello", hello)
server.mount("/web", WebResourceHandler(web))
server.addStatusPage("/status")
server.addAccessLog(os.environ.get("ACCESS_LOG", "-"))

application = service.Application("connserver example")
server.setServiceParent(application)
