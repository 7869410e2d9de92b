"""
Embed connserver in a Twisted program: one handler, one endpoint.

    .venv/bin/python examples/embed.py      # http://127.0.0.1:8080/
"""

from __future__ import annotations

from twisted.internet import endpoints, reactor

from connserver import ConnectionFactory, Request, Response, ServerConfig


async def handler(request: Request) -> Response:
    """Echo a POST body; greet anything else."""
    if request.method == b"POST":
        body = await request.readBody()
        return Response(200, [(b"Content-Type", b"application/octet-stream")], body)
    return Response(200, [(b"Content-Type", b"text/plain; charset=utf-8")], b"hello\n")


def main() -> None:
    endpoint = endpoints.serverFromString(reactor, "tcp:8080:interface=127.0.0.1")
    listening = endpoint.listen(
        ConnectionFactory(handler, config=ServerConfig(idleTimeout=30))
    )
    listening.addCallback(
        lambda port: print(f"serving on http://127.0.0.1:{port.getHost().port}/")
    )
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
