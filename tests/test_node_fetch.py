"""
Node's fetch (undici) and the idle-close race, against the real program.

undici keeps an idle connection for 4 s unless the response says
otherwise; when the server closes it first, a request sent just as the
server's FIN arrives fails (``UND_ERR_SOCKET``).  With ``Keep-Alive:
timeout=N`` (``keepAliveHint``, the default) undici retires the connection
``N`` minus 2 seconds after its last response, before the server's idle
close, so no request is sent into it.

The script (``tests/node/fetch_race.mjs``) runs five chains at once, each
on its own port (its own undici pool), each reusing its one connection
after gaps of 0.3 s and within a few milliseconds of the server's idle
timeout.  Without the hint a few of its 35 requests fail, depending on how
the two event loops line up (``bench/bench_node_race.py`` counts them);
with it, none may.  About 12 s of wall time.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.utils import getProcessOutputAndValue

from connserver import ConnectionFactory, Response, ServerConfig

from ._sockets import bounded, connserverTimers

NODE = shutil.which("node")
SCRIPT = Path(__file__).parent / "node" / "fetch_race.mjs"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        NODE is None, reason="node (Node.js 18+, for fetch) is not installed"
    ),
]

#: connserver's idle timeout in the race: undici subtracts 2 s from the
#: advertised timeout, so 3 s leaves it 1 s of reuse.
IDLE_TIMEOUT = 3.0
#: Idle gaps between a chain's requests, in milliseconds: short ones (the
#: connection is reused) and ones within the race window just under the
#: idle timeout (the response ends about a millisecond before the client's
#: gap starts).
GAPS_MS = [300, 2997, 2998, 300, 2999, 3000]
CHAINS = 5


def _hello(request: Any) -> Response:
    return Response(200, [(b"Content-Type", b"text/plain")], b"hello\n")


async def runRace(config: ServerConfig) -> tuple[dict[str, Any], ConnectionFactory]:
    """Serve on CHAINS ports of one factory, run the node script, return its report."""
    from twisted.internet import reactor

    factory = ConnectionFactory(_hello, config=config, reactor=reactor)
    ports = [
        await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        for _ in range(CHAINS)
    ]
    try:
        urls = [f"http://127.0.0.1:{port.getHost().port}/" for port in ports]
        assert NODE is not None
        out, err, code = await bounded(
            getProcessOutputAndValue(
                NODE,
                [str(SCRIPT), json.dumps({"urls": urls, "gapsMs": GAPS_MS})],
                env={"PATH": "/usr/bin:/bin"},
            ),
            60,
        )
        assert code == 0, err.decode(errors="replace")
        report: dict[str, Any] = json.loads(out)
    finally:
        for port in ports:
            await defer.maybeDeferred(port.stopListening)
        await bounded(factory.drain(2.0))
    assert connserverTimers() == []
    return report, factory


@pytest_twisted.ensureDeferred
async def test_nodeFetchLosesNoRequestWithTheKeepAliveHint() -> None:
    config = ServerConfig(idleTimeout=IDLE_TIMEOUT)
    report, factory = await runRace(config)
    requests = CHAINS * (len(GAPS_MS) + 1)
    assert report["requests"] == requests
    assert report["failures"] == 0, report["errors"]
    stats = factory.stats
    # Every request was answered, and the short gaps reused connections:
    # the hint did not turn keep-alive off.
    assert sum(n * c for n, c in stats.requestsPerConnection.items()) == requests
    assert max(stats.requestsPerConnection) >= 2
    assert stats.accepted < requests
