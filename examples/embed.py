"""
Embed connserver in a Twisted program: one handler, one endpoint.

    .venv/bin/python examples/embed.py          # http://127.0.0.1:8080/
    .venv/bin/python examples/embed.py 9000     # another port (0: any free one)
"""

from __future__ import annotations

import sys

from twisted.internet import endpoints, reactor

from connserver import ConnectionFactory, Request, Response, ServerConfig


async def handler(request: Request) -> Response:
    """Echo a POST body; greet anything else."""
    if request.method == b"POST":
        body = await request.readBody()
        return Response(200, [(b"Content-Type", b"application/octet-stream")], body)
    return Response(200, [(b"Content-Type", b"text/plain; charset=utf-8")], b"hello\n")


def main(port: int = 8080) -> None:
    endpoint = endpoints.serverFromString(reactor, f"tcp:{port}:interface=127.0.0.1")
    listening = endpoint.listen(
        ConnectionFactory(handler, config=ServerConfig(idleTimeout=30))
    )
    listening.addCallback(
        lambda port: print(
            f"serving http://127.0.0.1:{port.getHost().port}/", flush=True
        )
    )
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8080)
