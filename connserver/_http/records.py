"""
``RequestRecord``: what the server knows about one answered request;
``ConnectionRecord``: a connection that ended without a final response
saying why.

The protocol builds a ``RequestRecord`` per response and hands it to the
factory's ``requestObservers`` (the access log, the metrics); a connection
whose close no response carried (an idle timeout, the peer closing, a
shed or refused connection, an abort) gives one ``ConnectionRecord`` to
the factory's ``closeObservers`` instead.  So every connection's close
reason is recorded exactly once.  Pure module: nothing here imports
``twisted.internet``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConnectionRecord", "RequestRecord"]


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request and its response, with the connection facts around it."""

    #: Wall-clock time (epoch seconds) when the request head was complete.
    timestamp: float
    #: The client's address as text (``"127.0.0.1"``), or ``"-"``.
    peerHost: str
    method: bytes
    target: bytes
    version: tuple[int, int]
    status: int
    #: Response body bytes written (headers excluded), as Combined Log Format.
    bodyBytes: int
    referer: bytes | None
    userAgent: bytes | None
    #: The factory's id for the connection (1, 2, ...).
    connectionId: int
    #: The request's position on its connection, from 1.
    requestIndex: int
    #: Seconds from accept to the end of this response.
    connectionAge: float
    #: Seconds from the complete request head to the end of the response.
    duration: float
    #: Why the connection closes after this response, or None if it persists.
    closeReason: str | None
    #: Whether the connection uses TLS.
    secure: bool = False
    #: The handler's word on the outcome (``Response.note``: the proxy's
    #: ``upstream-refused``, ``upstream-timeout``, ...), or None.
    note: str | None = None
    #: The scheme the client used: ``https`` behind a TLS listener, or what a
    #: trusted proxy's forwarding fields said (``--trusted-proxies``).
    scheme: str = "http"


@dataclass(frozen=True, slots=True)
class ConnectionRecord:
    """
    A connection that closed without a final response carrying its reason
    (see ``CONNECTION_CLOSE_REASONS``): one per such connection.
    """

    #: Wall-clock time (epoch seconds) when the connection ended.
    timestamp: float
    #: The client's address as text (``"127.0.0.1"``), or ``"-"``.
    peerHost: str
    #: The factory's id for the connection (1, 2, ...).
    connectionId: int
    #: Responses completed on the connection.
    requestsServed: int
    #: Seconds from accept to the close.
    connectionAge: float
    #: Why the connection closed.
    closeReason: str
    #: Whether the connection uses TLS.
    secure: bool = False
    #: After a switch of protocols (101): the bytes the new protocol
    #: received and wrote (None for an HTTP connection).
    bytesReceived: int | None = None
    bytesSent: int | None = None
