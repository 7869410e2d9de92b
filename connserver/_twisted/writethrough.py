"""
``TransportWriter``: how a connection's bytes reach the socket.

Twisted's TCP transport buffers every ``write`` and sends it on the next
reactor iteration, registering for writability (one ``epoll_ctl``) and
unregistering after the send (another).  For a small keep-alive response
that is most of the cost of the write.  When the transport's buffer is
empty, sending at once keeps the bytes in order and skips both calls, as
asyncio's ``write`` does; whatever the kernel does not take goes through
``transport.write`` as usual, so backpressure, producers and error handling
stay Twisted's.

The same object sends file bodies with the kernel's ``sendfile``, and counts
the bytes written, so that ``sendTimeout`` can tell a slow reader (bytes
still leave) from one that stopped.  Over TLS and other transports it only
counts and hands every write to the transport.

Both read private attributes of Twisted's TCP transport (``_REQUIRED``
below): its two write buffers, its disconnect flags and its socket.  They
are checked once per transport class; a class that lacks any of them (a
future Twisted) gets plain ``transport.write``, no ``sendfile``, and
``delivered() == -1``: slower, never wrong.  ``tests/test_writethrough.py``
checks on a real connection that each of them still exists and still means
what this module assumes; run it before raising the bound on ``twisted``
in ``pyproject.toml``.
"""

from __future__ import annotations

import fcntl
import os
import struct
import termios
from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import ISSLTransport, ITransport

__all__ = ["WOULD_BLOCK", "TransportWriter"]

#: ``sendFile`` result: the socket (or Twisted's buffer ahead of it) is full.
WOULD_BLOCK = -1

#: The most one sendfile call sends, so that one download does not hold
#: the reactor while the socket keeps taking bytes.
_SENDFILE_MAX = 4 * 1024 * 1024
_OUTQ = getattr(termios, "TIOCOUTQ", None)
_INT = struct.Struct("i")


#: What this module reads from a ``tcp.Connection`` beyond ``ITransport``,
#: with the type it must have; checked once per transport class.
#: ``socket`` (with ``send`` and ``fileno``) is looked up per connection.
_REQUIRED: tuple[tuple[str, type], ...] = (
    # bool is an int: Twisted keeps some flags as 0/1.
    ("connected", int),
    ("disconnecting", int),
    ("_writeDisconnecting", int),
    # Bytes not yet copied into dataBuffer, and how many.
    ("_tempDataBuffer", list),
    ("_tempDataLen", int),
    # Bytes being sent: dataBuffer[offset:] is still to go.
    ("dataBuffer", bytes),
    ("offset", int),
    # doWrite resumes a streaming producer marked paused once it drains.
    ("producerPaused", int),
)
_REQUIRED_METHODS = ("write", "startWriting")

#: The verdict of ``_hasInternals`` per transport class.
_verdicts: dict[type, bool] = {}


def _hasInternals(transport: object) -> bool:
    """Whether ``transport`` has every private attribute this module reads."""
    for name, kind in _REQUIRED:
        if not isinstance(getattr(transport, name, None), kind):
            return False
    return all(callable(getattr(transport, name, None)) for name in _REQUIRED_METHODS)


def _supported(transport: object) -> bool:
    """``_hasInternals``, decided once per class."""
    cls = type(transport)
    verdict = _verdicts.get(cls)
    if verdict is None:
        verdict = _verdicts[cls] = _hasInternals(transport)
    return verdict


def _plainTCP(transport: object) -> bool:
    return (
        isinstance(transport, tcp.Connection)
        and not ISSLTransport.providedBy(transport)
        and not getattr(transport, "TLS", False)
        and _supported(transport)
    )


class TransportWriter:
    """
    One connection's writer: write-through and ``sendfile`` on plain TCP,
    the transport's own ``write`` elsewhere, and a count of bytes written.
    """

    # Slots, and the socket rather than its bound send method: thousands of
    # idle connections each hold one.
    __slots__ = (
        "_connection",
        "_plain",
        "_socket",
        "_socketFd",
        "_transport",
        "written",
    )

    def __init__(self, transport: ITransport) -> None:
        self._transport = transport
        self._plain = _plainTCP(transport)
        connection: Any = transport
        self._connection = connection
        self.written = 0
        self._socket: Any = None
        self._socketFd = -1
        if self._plain:
            try:
                skt = connection.socket
                self._socketFd = skt.fileno()
                self._socket = skt
            except (AttributeError, OSError):
                # No socket (gone already, or not where it was): plain writes.
                self._plain = False
                self._socket = None
                self._socketFd = -1

    @property
    def plainTCP(self) -> bool:
        """True when this is Twisted's own TCP connection, with no wrapper."""
        return bool(self._plain)

    def write(self, data: bytes) -> None:
        """Write ``data``, at once if the transport holds nothing before it."""
        self.written += len(data)
        c = self._connection
        if (
            self._plain
            and c.connected
            and not c.disconnecting
            and not c._writeDisconnecting
            and not c._tempDataBuffer
            and c.offset >= len(c.dataBuffer)
        ):
            try:
                sent = self._socket.send(data)
            except OSError:
                # EAGAIN, or an error Twisted's own write path will meet and
                # report through connectionLost.
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        c.write(data)

    def sendFile(self, fd: int, offset: int, count: int) -> int | None:
        """
        Send up to ``count`` bytes of file ``fd`` from ``offset`` straight to
        the socket: the bytes the kernel took (0 only when the file ended),
        ``WOULD_BLOCK`` when the socket or Twisted's buffer is full, or None
        when sendfile cannot be used here (TLS, not connected, an error
        Twisted's write path will report).
        """
        if not self._plain or not hasattr(os, "sendfile"):
            return None
        c = self._connection
        if not c.connected or c.disconnecting or c._writeDisconnecting:
            return None
        if c._tempDataBuffer or c.offset < len(c.dataBuffer):
            # Earlier bytes (the response head) are still in Twisted's
            # buffer: they go first.
            return WOULD_BLOCK
        try:
            sent = os.sendfile(self._socketFd, fd, offset, min(count, _SENDFILE_MAX))
        except (BlockingIOError, InterruptedError):
            return WOULD_BLOCK
        except OSError:
            return None
        self.written += sent
        return sent

    def waitUntilWritable(self) -> None:
        """
        Have the transport resume its (paused) streaming producer once the
        socket can take more bytes: Twisted's ``doWrite`` does exactly that
        when its buffer is empty and the producer is marked paused.
        """
        if not self._plain:
            return  # sendFile never said WOULD_BLOCK here
        c = self._connection
        c.producerPaused = True
        c.startWriting()

    def delivered(self) -> int:
        """
        Bytes written that have left this host's buffers (Twisted's and, on
        Linux, the kernel's send queue), or -1 when the transport does not
        say (not TCP, or a Twisted whose TCP buffers this module does not
        know).  ``sendTimeout`` compares two readings.
        """
        queued = self.queued()
        if queued is None:
            return -1
        return self.written - queued

    def queued(self) -> int | None:
        """Bytes written and not yet taken by the peer, where known."""
        transport = self._transport
        if self._plain:
            c = self._connection
            pending: int = c._tempDataLen + len(c.dataBuffer) - c.offset
            return pending + self._kernelQueued()
        # TLS (TLSMemoryBIOProtocol): its plaintext backlog, then what the
        # TCP transport below still holds.
        backlog = getattr(transport, "_appSendBuffer", None)
        below = getattr(transport, "transport", None)
        if isinstance(backlog, list) and _plainTCP(below):
            lower: Any = below
            pending = lower._tempDataLen + len(lower.dataBuffer) - lower.offset
            return sum(len(chunk) for chunk in backlog) + pending
        return None

    def _kernelQueued(self) -> int:
        """The socket's send queue (bytes not yet acknowledged by the peer)."""
        if _OUTQ is None:
            return 0
        try:
            result = fcntl.ioctl(self._socketFd, _OUTQ, b"\0\0\0\0")
        except OSError:
            return 0
        value: int = _INT.unpack(result)[0]
        return value
