"""
A handler for the ``twistd connserver --handler`` subprocess tests.

``/slow?release=PATH`` answers only once the file ``PATH`` exists (polled
every 20 ms), so a test can send SIGTERM while the response is pending and
then decide exactly when it completes; ``/pid`` answers with the process id
of the process that served it; anything else answers at once.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qs

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from connserver._connection.message import Request, Response

_log = Logger()


def app(request: Request) -> Response | Deferred[Response]:
    if request.path == b"/pid":  # which process answered (--workers tests)
        return Response(200, {"Content-Type": "text/plain"}, b"%d" % os.getpid())
    if request.path != b"/slow":
        return Response(200, {"Content-Type": "text/plain"}, b"fast\n")
    release = parse_qs(request.query.decode())["release"][0]
    done: Deferred[Response] = Deferred()

    def check() -> None:
        if os.path.exists(release):
            loop.stop()
            done.callback(Response(200, {"Content-Type": "text/plain"}, b"slow done\n"))

    loop = LoopingCall(check)
    loop.start(0.02, now=False)
    _log.info("slow request waiting for {release}", release=release)
    return done
