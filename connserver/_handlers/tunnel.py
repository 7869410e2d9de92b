"""
The reverse proxy's tunnel: once the upstream answered a client's
``Upgrade`` with ``101 Switching Protocols`` (RFC 9110 §7.8), the client's
connection and the upstream's are spliced, bytes both ways, until both
directions are closed.

The client's side is the protocol connserver's takeover hands the client
connection to (``ClientSide``); the upstream's is the ``UpstreamConnection``
that carried the handshake, whose reads come here once it switched (on
plain TCP through ``UpstreamReader``, which the tunnel makes the upstream
transport's protocol, so that the upstream's FIN arrives as a half-close).
Each transport is registered as the other's producer, so a side that stops
reading stops the other side's reads (backpressure both ways, nothing
buffered here beyond one read).  One reactor timer per tunnel bounds the
time without a byte either way (``idleTimeout``): it is re-armed lazily
(a timestamp moves on traffic; the timer re-arms for the rest when it fires
early) and cancelled when the tunnel ends.

A half-close is passed on in both directions, as a TCP proxy does (nginx's
WebSocket proxying, HAProxy's tunnel mode): a side's FIN becomes a FIN on
the other side's write direction, and the other direction keeps flowing.
The tunnel ends (both connections closed, the timer cancelled) once both
directions are closed, on any other close of either side, or on the idle
timeout.  Where a transport cannot half-close (TLS: Twisted's
``TLSMemoryBIOProtocol`` has no ``loseWriteConnection``, and a TLS 1.2
``close_notify`` asks the peer to close its side too, RFC 5246 §7.2.1), a
FIN from the other side closes the tunnel cleanly instead.  The close
record is the client connection's (``close=upgraded in= out=``).

A switch that connserver does not complete (the client is gone, the
takeover refused the 101, the response was abandoned) never connects the
client side: the proxy calls ``refused`` and the upstream is aborted at
once, its timer with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from typing import Protocol as TypingProtocol

from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from connserver._twisted.reactor import cancelCall
from connserver._twisted.sockets import canHalfClose

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["ClientSide", "Tunnel", "UpstreamReader", "UpstreamSide"]

_log = Logger(namespace="connserver")


class UpstreamSide(TypingProtocol):
    """What the tunnel needs of the upstream connection (``upstream.py``'s)."""

    transport: Any

    def tunnelEnded(self) -> None:
        """The tunnel is over: the connection is never used again."""

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """The connection is gone (its own bookkeeping, then the tunnel's)."""


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
        clientHalfCloses: bool = True,
    ) -> None:
        self.clock = clock
        #: The client's connection can shut its write direction alone:
        #: plain TCP, not TLS (which the takeover's transport does not
        #: declare, and whose wrapper would reach the TCP socket beneath
        #: the TLS session for ``loseWriteConnection``).
        self.clientHalfCloses = clientHalfCloses
        self.url = url
        self.upstream = upstream
        self.idleTimeout = idleTimeout
        self.client = ClientSide(self)
        #: The upstream's bytes that arrived before the client side was
        #: connected (those that followed its 101), written to it first.
        self.held: list[bytes] | None = [early] if early else []
        self.ended = False
        #: The client's side was handed the connection (the switch is done).
        self.connected = False
        #: The upstream's connection is gone (nothing to close there).
        self.upstreamGone = False
        #: The client sent its FIN (nothing more comes from it).
        self.clientDone = False
        #: The upstream sent its FIN (nothing more comes from it).
        self.upstreamDone = False
        self.lastActivity = clock.seconds()
        self.timer: IDelayedCall | None = None
        if idleTimeout is not None:
            self.timer = clock.callLater(idleTimeout, self._expire)
        upstreamTransport: Any = upstream.transport
        if canHalfClose(upstreamTransport) and hasattr(upstreamTransport, "protocol"):
            # The transport tells its protocol of a FIN as a half-close only
            # if that protocol is half-closeable; the upstream connection
            # (and the endpoint's wrapper around it) is not, since an HTTP
            # response ends with the connection.  From here on the
            # transport's reads, FIN and close come through the tunnel's
            # own reader.
            upstreamTransport.protocol = UpstreamReader(self)
        # Until the client's side is connected, read nothing more upstream.
        upstreamTransport.pauseProducing()

    # -- the client side --------------------------------------------------

    def clientConnected(self) -> None:
        """The takeover handed the client's connection over."""
        self.connected = True
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
        if self.upstreamDone:
            # The upstream's FIN came with its 101: pass it on now.
            self._shutWrite(clientTransport, self.clientHalfCloses)
            return
        upstreamTransport.resumeProducing()

    def refused(self, why: str) -> None:
        """
        The proxy answered the client's request with the 101, but connserver
        did not hand the connection over (``why``): the upstream connection
        is aborted now, not left to the idle timeout.
        """
        if self.connected or self.ended:
            return
        _log.info(
            "a switch to a proxied tunnel to {url} was not completed ({why}); "
            "upstream connection closed",
            url=self.url,
            why=why,
        )
        self.end(Failure(ConnectionAborted(why)))

    def fromClient(self, data: bytes) -> None:
        self.lastActivity = self.clock.seconds()
        transport = self.upstream.transport
        if transport is not None and not self.ended:
            transport.write(data)

    def clientHalfClosed(self) -> None:
        """The client sent its FIN: send ours upstream (it may still answer)."""
        self.clientDone = True
        if self.upstreamDone or self.upstreamGone:
            self.end(None)
            return
        self._shutWrite(self.upstream.transport, True)

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

    def upstreamHalfClosed(self) -> None:
        """The upstream sent its FIN: send ours to the client (it may still send)."""
        self.upstreamDone = True
        if self.clientDone:
            self.end(None)
            return
        if self.held is not None:
            # Not connected yet: the FIN follows the held bytes then.
            return
        self._shutWrite(self.client.transport, self.clientHalfCloses)

    def upstreamLost(self, reason: Failure) -> None:
        """The upstream's connection is gone: the client's is closed."""
        self.upstreamGone = True
        self.end(reason if not reason.check(ConnectionDone) else None)

    # -- half-closes ------------------------------------------------------

    def _shutWrite(self, transport: Any, allowed: bool) -> None:
        """
        Shut ``transport``'s write direction after what is written, the other
        side having sent its FIN; a transport that cannot half-close (TLS,
        or not ``allowed``) is closed with the rest of the tunnel.
        """
        if transport is None or not allowed or not canHalfClose(transport):
            self.end(None)
            return
        # Nothing more will be written here, so nothing is to be produced
        # for it; and while a paused producer stays registered, Twisted
        # resumes it instead of sending the FIN once its buffer empties.
        if getattr(transport, "producer", None) is not None:
            transport.unregisterProducer()
        transport.loseWriteConnection()

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
        cancelCall(timer)
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


@implementer(IHalfCloseableProtocol)
class UpstreamReader(Protocol):
    """
    The upstream transport's protocol once the connection switched (plain
    TCP): its bytes and its FIN go to the tunnel, its close to the upstream
    connection (which tells the tunnel).
    """

    def __init__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel

    def dataReceived(self, data: bytes) -> None:
        self.tunnel.fromUpstream(data)

    def readConnectionLost(self) -> None:
        self.tunnel.upstreamHalfClosed()

    def writeConnectionLost(self) -> None:
        """Our FIN to the upstream is sent: nothing to do."""

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.tunnel.upstream.connectionLost(reason)
