"""
``WebSocketHandler``: a WebSocket server factory (autobahn's
``WebSocketServerFactory``) served as a connserver handler.

The WebSocket itself is the library's: connserver checks that the request
offers the ``websocket`` upgrade (RFC 6455 §4.2.1 over RFC 9110 §7.8), then
hands the connection to a protocol from the factory with the request head
as its first bytes, so that the library answers its own handshake (its 101,
``Sec-WebSocket-Accept``, subprotocol and extension negotiation) exactly as
it does under twisted.web's ``WebSocketResource``.
"""

from __future__ import annotations

from typing import Any

from connserver._connection.message import Request, Response

__all__ = ["WebSocketHandler"]

_NOT_A_WEBSOCKET = Response(
    426,
    [(b"Upgrade", b"websocket"), (b"Content-Type", b"text/plain; charset=utf-8")],
    b"426 Upgrade Required: this is a WebSocket endpoint\n",
)


class WebSocketHandler:
    """
    Serve WebSockets from ``factory`` (any ``IProtocolFactory`` whose
    protocols speak WebSocket from the handshake on: autobahn's
    ``WebSocketServerFactory``).

    A request that does not offer ``Upgrade: websocket`` gets ``426 Upgrade
    Required`` with ``Upgrade: websocket`` (RFC 9110 §15.5.22); a factory
    that declines the connection (``buildProtocol`` returns None) gets 503.
    """

    def __init__(self, factory: Any) -> None:
        self.factory = factory

    def __call__(self, request: Request) -> Response:
        if b"websocket" not in request.upgrades:
            return _NOT_A_WEBSOCKET
        protocol = self.factory.buildProtocol(request.clientAddress or request.peer)
        if protocol is None:
            return Response(503, [(b"Content-Type", b"text/plain")], b"503\n")
        return Response.switchProtocols(
            b"websocket", protocol, handshake=requestHead(request)
        )


def requestHead(request: Request) -> bytes:
    """The request head again, as the library parses a handshake."""
    lines = [request.method, b" ", request.target, b" HTTP/1.1\r\n"]
    for name, value in request.headers:
        lines += [name, b": ", value, b"\r\n"]
    lines.append(b"\r\n")
    return b"".join(lines)
