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

import os
from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import ISSLTransport, ITransport

__all__ = [
    "WOULD_BLOCK",
    "SendFile",
    "queuedBytes",
    "sendFileFor",
    "waitUntilWritable",
    "writerFor",
]


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


#: ``sendFile(fd, offset, count)``: the bytes the kernel took (0 only when
#: the file ended), ``WOULD_BLOCK`` when the socket (or Twisted's buffer
#: ahead of it) is full, or None when it cannot be used.
WOULD_BLOCK = -1
SendFile = Callable[[int, int, int], "int | None"]

#: The most one sendfile call sends, so that one download does not hold
#: the reactor while the socket keeps taking bytes.
_SENDFILE_MAX = 4 * 1024 * 1024


def sendFileFor(transport: ITransport) -> SendFile | None:
    """
    ``os.sendfile`` straight to a plain TCP transport's socket, or None
    (TLS, other transports, or no ``os.sendfile``).

    The kernel copies file pages to the socket with no Python-level read
    and no copy through Twisted's buffer; it is what makes large files as
    cheap to serve as nginx does.  It is only used while the transport's own
    buffer is empty, so that bytes stay in order.
    """
    if (
        not hasattr(os, "sendfile")
        or not isinstance(transport, tcp.Connection)
        or ISSLTransport.providedBy(transport)
        or getattr(transport, "TLS", False)
    ):
        return None
    connection: Any = transport
    socketFd = connection.socket.fileno()

    def sendFile(fd: int, offset: int, count: int) -> int | None:
        c = connection
        if not c.connected or c.disconnecting or c._writeDisconnecting:
            return None
        if c._tempDataBuffer or c.offset < len(c.dataBuffer):
            # Earlier bytes (the response head) are still in Twisted's
            # buffer: they go first.
            return WOULD_BLOCK
        try:
            return os.sendfile(socketFd, fd, offset, min(count, _SENDFILE_MAX))
        except (BlockingIOError, InterruptedError):
            return WOULD_BLOCK
        except OSError:
            # Let Twisted's own write path meet the error and report it.
            return None

    return sendFile


def waitUntilWritable(transport: ITransport) -> None:
    """
    Have ``transport`` resume its (paused) streaming producer once the
    socket can take more bytes: Twisted's ``doWrite`` does exactly that
    when its buffer is empty and the producer is marked paused.
    """
    connection: Any = transport
    connection.producerPaused = True
    connection.startWriting()
