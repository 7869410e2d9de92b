"""
Socket options for Twisted's TCP transports, server and client side alike,
and whether a transport can half-close.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.interfaces import ISSLTransport

__all__ = ["canHalfClose", "setNoDelay"]


def canHalfClose(transport: Any) -> bool:
    """
    Whether ``transport`` can shut its write direction alone
    (``loseWriteConnection``: TCP's ``shutdown(SHUT_WR)``).  Not over TLS:
    Twisted's ``TLSMemoryBIOProtocol`` would shut the TCP connection under
    the TLS session, and a TLS 1.2 ``close_notify`` asks the peer to close
    its side too (RFC 5246 §7.2.1).
    """
    return (
        transport is not None
        and not ISSLTransport.providedBy(transport)
        and callable(getattr(transport, "loseWriteConnection", None))
    )


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
