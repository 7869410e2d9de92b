"""
The reverse proxy's tunnel: once the upstream answered a client's
``Upgrade`` with ``101 Switching Protocols`` (RFC 9110 §7.8), the client's
connection and the upstream's are spliced, bytes both ways, until either
ends.

The client's side is the protocol connserver's takeover hands the client
connection to (``ClientSide``); the upstream's is the ``UpstreamConnection``
that carried the handshake, whose reads come here once it switched.  Each
transport is registered as the other's producer, so a side that stops
reading stops the other side's reads (backpressure both ways, nothing
buffered here beyond one read).  One reactor timer per tunnel bounds the
time without a byte either way (``idleTimeout``): it is re-armed lazily
(a timestamp moves on traffic; the timer re-arms for the rest when it fires
early) and cancelled when the tunnel ends.  A close on either side closes
the other; a client's half-close is passed on as a half-close upstream.
The close record is the client connection's (``close=upgraded in= out=``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from typing import Protocol as TypingProtocol

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["ClientSide", "Tunnel", "UpstreamSide"]

_log = Logger(namespace="connserver")


class UpstreamSide(TypingProtocol):
    """What the tunnel needs of the upstream connection (``upstream.py``'s)."""

    transport: Any

    def tunnelEnded(self) -> None:
        """The tunnel is over: the connection is never used again."""


class Tunnel:
    """
    One spliced pair: the client's side (``client``, once connserver handed
    the connection over) and the upstream connection (``upstream``).
    """

    def __init__(
        self,
        clock: IReactorTime,
        upstream: UpstreamSide,
        idleTimeout: float | None,
        early: bytes,
        url: str = "",
    ) -> None:
        self.clock = clock
        self.url = url
        self.upstream = upstream
        self.idleTimeout = idleTimeout
        self.client = ClientSide(self)
        #: The upstream's bytes that arrived before the client side was
        #: connected (those that followed its 101), written to it first.
        self.held: list[bytes] | None = [early] if early else []
        self.ended = False
        #: The upstream's connection is gone (nothing to close there).
        self.upstreamGone = False
        self.lastActivity = clock.seconds()
        self.timer: IDelayedCall | None = None
        if idleTimeout is not None:
            self.timer = clock.callLater(idleTimeout, self._expire)
        upstreamTransport: Any = upstream.transport
        # Until the client's side is connected, read nothing more upstream.
        upstreamTransport.pauseProducing()

    # -- the client side --------------------------------------------------

    def clientConnected(self) -> None:
        """The takeover handed the client's connection over."""
        if self.ended:
            self.client.transport.abortConnection()  # type: ignore[union-attr]
            return
        clientTransport: Any = self.client.transport
        upstreamTransport: Any = self.upstream.transport
        held, self.held = self.held, None
        if held:
            clientTransport.write(b"".join(held))
        # Each side's transport produces for the other's.
        clientTransport.registerProducer(upstreamTransport, True)
        upstreamTransport.registerProducer(clientTransport, True)
        upstreamTransport.resumeProducing()

    def fromClient(self, data: bytes) -> None:
        self.lastActivity = self.clock.seconds()
        transport = self.upstream.transport
        if transport is not None and not self.ended:
            transport.write(data)

    def clientHalfClosed(self) -> None:
        """The client sent its FIN: send ours upstream (it may still answer)."""
        transport: Any = self.upstream.transport
        loseWrite = getattr(transport, "loseWriteConnection", None)
        if loseWrite is None:
            self.end(None)
        else:
            loseWrite()

    def clientLost(self, reason: Failure) -> None:
        """The client's connection is gone: so is the upstream's."""
        self.client.transport = None
        self.end(reason)

    # -- the upstream side ------------------------------------------------

    def fromUpstream(self, data: bytes) -> None:
        """The upstream connection's reads, once it switched."""
        self.lastActivity = self.clock.seconds()
        held = self.held
        if held is not None:
            held.append(data)
            return
        transport = self.client.transport
        if transport is not None:
            transport.write(data)

    def upstreamLost(self, reason: Failure) -> None:
        """The upstream's connection is gone: the client's is closed."""
        self.upstreamGone = True
        self.end(reason if not reason.check(ConnectionDone) else None)

    # -- the end ----------------------------------------------------------

    def end(self, reason: Failure | None) -> None:
        """
        Close both sides, once: with a FIN after what is written when the
        tunnel ended cleanly (``reason`` None or a clean close), else at
        once.  The timer is cancelled.
        """
        if self.ended:
            return
        self.ended = True
        self.held = None
        timer, self.timer = self.timer, None
        if timer is not None and timer.active():
            timer.cancel()
        clean = reason is None or reason.check(ConnectionDone) is not None
        upstream = None if self.upstreamGone else self.upstream.transport
        for transport in (self.client.transport, upstream):
            if transport is None:
                continue
            anyTransport: Any = transport
            if getattr(anyTransport, "producer", None) is not None:
                anyTransport.unregisterProducer()
            if clean:
                anyTransport.loseConnection()
            else:
                anyTransport.abortConnection()
        self.upstream.tunnelEnded()

    def _expire(self) -> None:
        self.timer = None
        if self.ended or self.idleTimeout is None:
            return
        left = self.lastActivity + self.idleTimeout - self.clock.seconds()
        if left > 0:
            self.timer = self.clock.callLater(left, self._expire)
            return
        _log.info(
            "a proxied tunnel to {url} was idle {seconds:g} s; closed",
            url=self.url,
            seconds=self.idleTimeout,
        )
        # Nothing moved either way: nothing is left to flush.
        self.end(Failure(TimeoutError("tunnel idle")))


@implementer(IHalfCloseableProtocol)
class ClientSide(Protocol):
    """The protocol the client's connection is handed to (the takeover's)."""

    def __init__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel

    def connectionMade(self) -> None:
        self.tunnel.clientConnected()

    def dataReceived(self, data: bytes) -> None:
        self.tunnel.fromClient(data)

    def readConnectionLost(self) -> None:
        self.tunnel.clientHalfClosed()

    def writeConnectionLost(self) -> None:
        """Our FIN to the client is sent: nothing to do."""

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.tunnel.clientLost(reason)

    def connectionDraining(self) -> None:
        """
        connserver drains: both sides are closed (a FIN after what is
        written); the drain deadline aborts the client's if that lingers,
        and the upstream's goes with it.
        """
        self.tunnel.end(None)
