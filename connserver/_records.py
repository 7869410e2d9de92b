"""
``RequestRecord``: what the server knows about one answered request.

The protocol builds one per response and hands it to the factory's
observers (the access log, the status counters).  Pure module: nothing here
imports ``twisted.internet``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RequestRecord"]


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
