"""Socket options for Twisted's TCP transports, server and client side alike."""

from __future__ import annotations

import socket

__all__ = ["setNoDelay"]


def setNoDelay(transport: object) -> None:
    """
    Turn off Nagle's algorithm (TCP_NODELAY), as nginx does on keep-alive
    connections: responses leave in few writes (a head and a body, or one
    batch of pipelined answers), and a small last write must not wait for
    the client's delayed ACK (40 ms on Linux).
    """
    getHandle = getattr(transport, "getHandle", None)
    if getHandle is None:
        return
    try:
        handle = getHandle()
        if handle.family in (socket.AF_INET, socket.AF_INET6):
            handle.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass  # not a TCP socket (UNIX, a test transport)
