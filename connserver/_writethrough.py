"""
Write-through for plain TCP transports.

Twisted's TCP transport buffers every ``write`` and sends it on the next
reactor iteration, registering for writability (one ``epoll_ctl``) and
unregistering after the send (another).  For a small keep-alive response
that is most of the cost of the write.  When the transport's buffer is
empty, sending at once keeps the bytes in order and skips both calls, as
asyncio's ``write`` does; whatever the kernel does not take goes through
``transport.write`` as usual, so backpressure, producers and error handling
stay Twisted's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import ISSLTransport, ITransport

__all__ = ["queuedBytes", "writerFor"]


def writerFor(transport: ITransport) -> Callable[[bytes], None]:
    """The fastest correct way to write to ``transport``."""
    if (
        not isinstance(transport, tcp.Connection)
        or ISSLTransport.providedBy(transport)
        or getattr(transport, "TLS", False)
    ):
        return transport.write
    connection: Any = transport
    send = connection.socket.send

    def write(data: bytes) -> None:
        c = connection
        if (
            c.connected
            and not c.disconnecting
            and not c._writeDisconnecting
            and not c._tempDataBuffer
            and c.offset >= len(c.dataBuffer)
        ):
            try:
                sent = send(data)
            except OSError:
                # EAGAIN, or an error Twisted's own write path will meet and
                # report through connectionLost.
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        c.write(data)

    return write


def queuedBytes(transport: object) -> int | None:
    """
    Bytes written to ``transport`` that have not reached the kernel yet, or
    None when the transport does not say.  ``sendTimeout`` compares two
    readings to tell a slow reader (progress) from one that stopped.
    """
    if isinstance(transport, tcp.Connection):
        connection: Any = transport
        return int(
            connection._tempDataLen + len(connection.dataBuffer) - connection.offset
        )
    # TLS (TLSMemoryBIOProtocol): its plaintext backlog plus what the TCP
    # transport below still holds.
    backlog = getattr(transport, "_appSendBuffer", None)
    below = getattr(transport, "transport", None)
    if isinstance(backlog, list) and below is not None:
        underneath = queuedBytes(below)
        if underneath is None:
            return None
        return sum(len(chunk) for chunk in backlog) + underneath
    return None
