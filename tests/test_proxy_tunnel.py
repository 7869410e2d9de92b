"""
The proxy's tunnel with ``Clock`` and string transports (issue 21): an
upstream's half-close passed on to the client, the tunnel's end once both
directions are closed, the idle timeout, and every switch that connserver
does not complete closing the upstream connection at once.  (Real sockets
and real clients are in ``test_proxy_websocket.py`` and
``test_proxy_websocket_interop.py``.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from connserver import ConnectionRecord, Request, Response, ReverseProxy
from connserver._handlers.tunnel import Tunnel, UpstreamReader

from ._harness import Connection, TCPStringTransport, connect
from ._websockets import ACCEPT, handshake

SWITCH = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
    b"Connection: upgrade\r\nSec-WebSocket-Accept: " + ACCEPT + b"\r\n\r\n"
)

UPSTREAM = IPv4Address("TCP", "127.0.0.1", 9000)


@implementer(ISSLTransport)
class TLSStringTransport(StringTransport):
    """A transport that cannot half-close, as connserver's TLS one cannot."""

    def __init__(self) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


@dataclass
class Setup:
    clock: MemoryReactorClock
    proxy: ReverseProxy
    client: Connection
    closes: list[ConnectionRecord]
    upstream: Any = None
    upstreamTransport: Any = None

    def connectUpstream(self, transport: Any = None) -> None:
        """The upstream accepts the proxy's connection (as the reactor would)."""
        _, _, factory, _, _ = self.clock.tcpClients[-1]
        protocol = factory.buildProtocol(UPSTREAM)
        transport = transport if transport is not None else TCPStringTransport()
        # A TCP transport knows its protocol: the tunnel replaces it.
        transport.protocol = protocol
        protocol.makeConnection(transport)
        self.upstream = protocol
        self.upstreamTransport = transport
        # The end of the reactor's pass: the proxy's batched sends go out.
        self.clock.advance(0)

    def fromUpstream(self, data: bytes) -> None:
        self.upstreamTransport.protocol.dataReceived(data)
        self.clock.advance(0)

    def switch(self, early: bytes = b"") -> None:
        self.connectUpstream()
        assert b"Upgrade: websocket" in self.upstreamTransport.value()
        self.upstreamTransport.clear()
        self.fromUpstream(SWITCH + early)

    def tunnelTimers(self) -> list[Any]:
        return [
            call
            for call in self.clock.getDelayedCalls()
            if isinstance(getattr(call.func, "__self__", None), Tunnel)
        ]

    def upstreamLost(self, reason: Failure | None = None) -> None:
        self.upstreamTransport.protocol.connectionLost(
            reason or Failure(ConnectionDone())
        )


def setUp(
    handler: Any = None, transport: Any = None, **options: Any
) -> tuple[Setup, Any]:
    clock = MemoryReactorClock()
    config = options.pop("config", None)
    proxy = ReverseProxy("http://127.0.0.1:9000", reactor=clock, **options)
    served = handler(proxy) if handler is not None else proxy
    if transport is None:
        client = connect(served, clock=clock, config=config)
    else:
        client = _connectOver(served, clock, transport)
    closes: list[ConnectionRecord] = []
    client.factory.closeObservers.append(closes.append)
    return Setup(clock, proxy, client, closes), served


def _connectOver(handler: Any, clock: MemoryReactorClock, transport: Any) -> Connection:
    from connserver._connection.factory import ConnectionFactory

    factory = ConnectionFactory(handler, reactor=clock)
    protocol = factory.buildProtocol(transport.getPeer())
    assert protocol is not None
    protocol.makeConnection(transport)
    return Connection(protocol, transport, clock, factory)


def opened() -> Setup:
    """A tunnel spliced, nothing passed yet; the 101 taken off the client's."""
    setup, _ = setUp()
    setup.client.send(handshake())
    setup.switch()
    head = setup.client.take()
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    return setup


def assertNothingLeft(setup: Setup) -> None:
    """No timer of the tunnel's or the upstream connection's is left."""
    assert setup.clock.getDelayedCalls() == []
    assert setup.proxy.pool.idle == []


# -- an upstream's half-close ---------------------------------------------------


def test_theUpstreamsFinIsPassedOnAndTheClientKeepsSending() -> None:
    setup = opened()
    assert isinstance(setup.upstreamTransport.protocol, UpstreamReader)
    setup.fromUpstream(b"last words")
    setup.upstreamTransport.protocol.readConnectionLost()
    client = setup.client.transport
    # Its FIN goes to the client after what it sent; nothing is closed.
    assert client.value() == b"last words"
    assert client.writeClosed and not client.disconnecting
    assert client.producer is None
    assert not setup.upstreamTransport.disconnecting
    # The other direction still flows, as long as the client likes.
    setup.clock.advance(100)
    setup.client.send(b"still here")
    assert setup.upstreamTransport.value() == b"still here"
    # The client's FIN: both directions are closed, the tunnel ends.
    setup.client.protocol.readConnectionLost()
    assert client.disconnecting and not client.aborted
    assert setup.upstreamTransport.disconnecting
    assert not setup.upstreamTransport.aborted
    assert setup.tunnelTimers() == []
    setup.client.lose()
    setup.upstreamLost()
    assertNothingLeft(setup)
    [record] = setup.closes
    assert record.closeReason == "upgraded"
    assert (record.bytesReceived, record.bytesSent) == (10, 10)


def test_theClientsFinFirstThenTheUpstreams() -> None:
    setup = opened()
    setup.client.send(b"question")
    setup.client.protocol.readConnectionLost()
    upstream = setup.upstreamTransport
    assert upstream.value() == b"question"
    assert upstream.writeClosed and not upstream.disconnecting
    assert not setup.client.transport.disconnecting
    setup.fromUpstream(b"answer")
    assert setup.client.transport.value() == b"answer"
    upstream.protocol.readConnectionLost()
    assert setup.client.transport.disconnecting and upstream.disconnecting
    setup.upstreamLost()
    setup.client.lose()
    assertNothingLeft(setup)
    [record] = setup.closes
    assert record.closeReason == "upgraded"
    assert (record.bytesReceived, record.bytesSent) == (8, 6)


def test_aHalfClosedTunnelStillHasItsIdleTimeout() -> None:
    setup = opened()
    setup.upstreamTransport.protocol.readConnectionLost()
    setup.clock.advance(299)
    setup.client.send(b"x")
    setup.clock.advance(299)
    assert not setup.client.transport.aborted
    setup.clock.advance(2)
    assert setup.client.transport.aborted and setup.upstreamTransport.aborted
    setup.client.lose(Failure(ConnectionLost()))
    setup.upstreamLost(Failure(ConnectionLost()))
    assertNothingLeft(setup)
    assert len(setup.closes) == 1


def test_theUpstreamsFinWithIts101() -> None:
    """A FIN before the client's side is connected follows the held bytes."""
    setup, _ = setUp()
    setup.client.send(handshake())
    setup.connectUpstream()
    # The tunnel is made as the 101 is parsed; the FIN right after.
    tunnels: list[Tunnel] = []
    real = Tunnel.__init__

    def spy(self: Tunnel, *args: Any, **kwargs: Any) -> None:
        real(self, *args, **kwargs)
        tunnels.append(self)
        self.upstreamHalfClosed()

    Tunnel.__init__ = spy  # type: ignore[method-assign]
    try:
        setup.fromUpstream(SWITCH + b"bye")
    finally:
        Tunnel.__init__ = real  # type: ignore[method-assign]
    [tunnel] = tunnels
    client = setup.client.transport
    assert client.value().endswith(b"\r\n\r\nbye")
    assert client.writeClosed and not client.disconnecting
    # Nothing more to read upstream: it stays paused.
    assert setup.upstreamTransport.producerState == "paused"
    setup.client.protocol.readConnectionLost()
    assert tunnel.ended and client.disconnecting


def test_overTLSTheUpstreamsFinClosesTheClientCleanly() -> None:
    """TLS cannot half-close here: the FIN ends the tunnel, no abort."""
    setup, _ = setUp(transport=TLSStringTransport())
    setup.client.send(handshake())
    setup.switch()
    setup.fromUpstream(b"tail")
    setup.upstreamTransport.protocol.readConnectionLost()
    client = setup.client.transport
    assert client.value().endswith(b"tail")
    assert client.disconnecting and not client.aborted
    assert setup.upstreamTransport.disconnecting
    setup.client.lose()
    setup.upstreamLost()
    assertNothingLeft(setup)
    assert [r.closeReason for r in setup.closes] == ["upgraded"]


def test_anUpstreamThatCannotHalfCloseKeepsItsProtocol() -> None:
    """Over TLS upstream the FIN is the connection's end: a clean close."""
    setup, _ = setUp()
    setup.client.send(handshake())
    upstreamTransport = StringTransport()
    setup.connectUpstream(upstreamTransport)
    wrapper = upstreamTransport.protocol
    setup.fromUpstream(SWITCH)
    assert upstreamTransport.protocol is wrapper
    setup.client.protocol.readConnectionLost()
    assert setup.client.transport.disconnecting
    assert upstreamTransport.disconnecting
    setup.upstreamLost()
    setup.client.lose()
    assertNothingLeft(setup)


def test_aClientFinBeforeThe101ReachesTheUpstream() -> None:
    """
    The client half-closed while the upstream had not answered yet: the
    101 is still relayed (the client may read), and the FIN goes upstream
    once the tunnel has the connection (the takeover tells it then).
    """
    setup, _ = setUp()
    setup.client.send(handshake())
    setup.connectUpstream()
    setup.client.protocol.readConnectionLost()
    setup.fromUpstream(SWITCH)
    assert setup.client.output().startswith(b"HTTP/1.1 101 ")
    assert setup.upstreamTransport.writeClosed


# -- switches that connserver does not complete ------------------------------------


def test_theClientGoneBeforeThe101() -> None:
    setup, _ = setUp()
    setup.client.send(handshake())
    setup.connectUpstream()
    setup.client.lose(Failure(ConnectionLost()))
    assert setup.upstreamTransport.aborted
    setup.upstreamLost(Failure(ConnectionLost()))
    assertNothingLeft(setup)


def test_theHandlerTimeoutBeforeThe101() -> None:
    from connserver import ServerConfig

    setup, _ = setUp(config=ServerConfig(handlerTimeout=5.0))
    setup.client.send(handshake())
    setup.connectUpstream()
    setup.clock.advance(5)
    [response] = setup.client.responses()
    assert response.status == 503
    assert setup.upstreamTransport.aborted
    setup.upstreamLost(Failure(ConnectionLost()))
    setup.client.lose()
    assertNothingLeft(setup)


def test_aTakeoverThatRefusesThe101() -> None:
    """The 101 reaches a takeover that refuses it: 500, upstream aborted."""

    def wrap(proxy: ReverseProxy) -> Any:
        def handler(request: Request) -> Any:
            def alter(response: Response) -> Response:
                # A protocol the request did not offer: connserver's 500.
                response.body.upgrade = b"other"
                return response

            return proxy(request).addCallback(alter)  # type: ignore[union-attr]

        return handler

    setup, _ = setUp(handler=wrap)
    setup.client.send(handshake())
    setup.switch()
    [response] = setup.client.responses()
    assert response.status == 500
    assert setup.upstreamTransport.aborted
    assert setup.tunnelTimers() == []
    setup.upstreamLost(Failure(ConnectionLost()))
    setup.client.lose()
    assertNothingLeft(setup)


def badFieldOn101(proxy: ReverseProxy) -> Any:
    """The proxy, its 101 given a field value that is not valid (a control)."""

    def handler(request: Request) -> Any:
        def alter(response: Response) -> Response:
            response.headers.add(b"X-Bad", b"a\x01b")
            return response

        return proxy(request).addCallback(alter)  # type: ignore[union-attr]

    return handler


def test_a101WithAFieldTheTakeoverRefuses() -> None:
    """The takeover cannot write the 101: the upstream goes at once."""
    setup, _ = setUp(handler=badFieldOn101)
    setup.client.send(handshake())
    setup.switch()
    assert b"101" not in setup.client.output()
    assert setup.upstreamTransport.aborted
    assert setup.tunnelTimers() == []


def test_a101WithAFieldTheTakeoverRefusesIs500() -> None:
    setup, _ = setUp(handler=badFieldOn101)
    setup.client.send(handshake())
    setup.switch()
    [response] = setup.client.responses()
    assert response.status == 500


def test_a101ToAConnectionAlreadyClosing() -> None:
    """The exchange's connection began to close: the 101 is never taken."""

    def wrap(proxy: ReverseProxy) -> Any:
        def handler(request: Request) -> Any:
            def closeFirst(response: Response) -> Response:
                # The connection closes before the answer reaches it (the
                # state connserver's respond() refuses).
                setup.client.protocol.startClose("peer-closed")
                return response

            return proxy(request).addCallback(closeFirst)  # type: ignore[union-attr]

        return handler

    setup, _ = setUp(handler=wrap)
    setup.client.send(handshake())
    setup.switch()
    assert b"101" not in setup.client.output()
    assert setup.upstreamTransport.aborted
    assert setup.tunnelTimers() == []
    setup.upstreamLost(Failure(ConnectionLost()))
    setup.client.lose()
    assertNothingLeft(setup)


def test_a101DuringADrainIs503() -> None:
    setup, _ = setUp()
    setup.client.send(handshake())
    setup.connectUpstream()
    setup.client.factory.drain(30)
    setup.fromUpstream(SWITCH)
    [response] = setup.client.responses()
    assert response.status == 503
    assert response.header(b"connection") == b"close"
    assert setup.upstreamTransport.aborted
    assert setup.tunnelTimers() == []
    setup.upstreamLost(Failure(ConnectionLost()))
    setup.client.lose()
    assertNothingLeft(setup)


def test_aRefusedSwitchIsLoggedOnce() -> None:
    """``Tunnel.refused`` after the client side connected does nothing."""
    setup = opened()
    tunnel = setup.upstream._wrappedProtocol.tunnel
    tunnel.refused("late")
    assert not tunnel.ended and not setup.upstreamTransport.aborted


# -- --proxy-tunnel-timeout and --proxy-no-upgrade's effect --------------------


def test_theTunnelTimeoutApplies() -> None:
    setup, _ = setUp(tunnelIdleTimeout=5.0)
    setup.client.send(handshake())
    setup.switch()
    assert len(setup.tunnelTimers()) == 1
    setup.clock.advance(4)
    setup.fromUpstream(b"tick")
    setup.clock.advance(4)
    assert not setup.client.transport.aborted
    setup.clock.advance(1)
    assert setup.client.transport.aborted and setup.upstreamTransport.aborted
    setup.client.lose(Failure(ConnectionLost()))
    setup.upstreamLost(Failure(ConnectionLost()))
    assertNothingLeft(setup)


def test_noTunnelTimeout() -> None:
    setup, _ = setUp(tunnelIdleTimeout=None)
    setup.client.send(handshake())
    setup.switch()
    assert setup.tunnelTimers() == []
    setup.clock.advance(10_000)
    assert not setup.client.transport.disconnecting


def test_upgradeRefusedByTheRoute() -> None:
    """
    Without upgrades the handshake goes upstream as a plain GET: the
    upstream's answer to that (here 426) is what the client gets.
    """
    setup, _ = setUp(allowUpgrade=False)
    setup.client.send(handshake())
    setup.connectUpstream()
    sent = setup.upstreamTransport.value().lower()
    assert b"upgrade" not in sent
    setup.fromUpstream(
        b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 3\r\n\r\nno\n"
    )
    [response] = setup.client.responses()
    assert response.status == 426 and response.body == b"no\n"
    # An upgrade-less request may go back to the pool; a 101 would be 502.
    setup.client.lose()
