"""
connserver's handler path against twisted.web's Site, side by side.

Both answer 130 bytes from memory on keep-alive connections; each server
runs in its own process pinned to core 0, wrk runs pinned to core 1, and
the servers alternate over several rounds so that both see the same
machine.  Target (issue 3): connserver at least 3x twisted.web.

    python bench/bench_protocol.py [--seconds 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _servers import freePort, python, server, wrk

CONNSERVER = textwrap.dedent(
    """
    import sys
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ServerEndpoint
    from connserver import ConnectionFactory, Response, ServerConfig

    BODY = b"x" * 130
    HEADERS = [(b"Content-Type", b"text/plain")]

    def handler(request):
        return Response(200, HEADERS, BODY)

    factory = ConnectionFactory(handler, config=ServerConfig(maxRequestsPerConnection=None))
    TCP4ServerEndpoint(reactor, int(sys.argv[1]), interface="127.0.0.1").listen(factory)
    reactor.run()
    """
)

TWISTED_WEB = textwrap.dedent(
    """
    import sys
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ServerEndpoint
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    BODY = b"x" * 130

    class Hello(Resource):
        isLeaf = True
        def render_GET(self, request):
            request.setHeader(b"Content-Type", b"text/plain")
            return BODY

    site = Site(Hello())
    site.displayTracebacks = False
    TCP4ServerEndpoint(reactor, int(sys.argv[1]), interface="127.0.0.1").listen(site)
    reactor.run()
    """
)


# Not an HTTP server: a bare Twisted protocol that answers every request
# terminator with a fixed response.  Its figure is the ceiling that the
# reactor and the kernel leave to any Twisted HTTP server on this machine.
TWISTED_CEILING = textwrap.dedent(
    """
    import sys
    from twisted.internet import protocol, reactor
    from twisted.internet.endpoints import TCP4ServerEndpoint

    RESPONSE = (
        b"HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\n"
        b"Content-Length: 130\\r\\n\\r\\n" + b"x" * 130
    )

    class Fixed(protocol.Protocol):
        def dataReceived(self, data):
            self.transport.write(RESPONSE * data.count(b"\\r\\n\\r\\n"))

    factory = protocol.Factory.forProtocol(Fixed)
    TCP4ServerEndpoint(reactor, int(sys.argv[1]), interface="127.0.0.1").listen(factory)
    reactor.run()
    """
)


def measure(name: str, source: str, seconds: int) -> float:
    port = freePort()
    with server([python(), "-c", source, str(port)], port):
        wrk(f"http://127.0.0.1:{port}/", seconds=1)  # warm up
        result = wrk(f"http://127.0.0.1:{port}/", seconds=seconds)
    if result["non2xx"] or result["socketErrors"]:
        print(f"  warning: {name}: {result}")
    return result["rps"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    servers = (
        ("connserver", CONNSERVER),
        ("twisted.web", TWISTED_WEB),
        ("ceiling", TWISTED_CEILING),
    )
    results: dict[str, list[float]] = {name: [] for name, _ in servers}
    for round_ in range(args.rounds):
        for name, source in servers:
            rps = measure(name, source, args.seconds)
            results[name].append(rps)
            print(f"round {round_ + 1}: {name:12} {rps:10.0f} req/s")
    cs = statistics.median(results["connserver"])
    tw = statistics.median(results["twisted.web"])
    ratio = cs / tw
    ceiling = statistics.median(results["ceiling"])
    print(
        f"median: connserver {cs:.0f} req/s, twisted.web {tw:.0f} req/s, "
        f"ratio {ratio:.2f}x (target >= 3x: {'PASS' if ratio >= 3 else 'MISS'})"
    )
    print(
        f"ceiling (bare Twisted protocol, no HTTP): {ceiling:.0f} req/s = "
        f"{ceiling / tw:.2f}x twisted.web; connserver reaches "
        f"{cs / ceiling:.0%} of it"
    )


if __name__ == "__main__":
    main()
