"""
``Connection: upgrade`` and 101 Switching Protocols (RFC 9110 §7.8), on
StringTransport and Clock: what is switched, what is answered without
switching, what the new protocol receives, and how the connection ends.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer

from connserver import (
    AccessLog,
    ConnectionFactory,
    ConnectionState,
    Request,
    Response,
    ServerConfig,
)

from ._harness import Connection, connect, hello, parseResponses

UPGRADE = (
    b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
)


class Echo(Protocol):
    """The new protocol: echoes, closes on b"bye", remembers what it saw."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.made = 0
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        self.made += 1

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)
        assert self.transport is not None
        if data.endswith(b"bye"):
            self.transport.loseConnection()
        else:
            self.transport.write(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost = reason or Failure(ConnectionDone())


class Switching:
    """A handler that switches to a new Echo when asked for ``echo``."""

    def __init__(self, upgrade: bytes = b"echo", **fields: Any) -> None:
        self.upgrade = upgrade
        self.protocols: list[Echo] = []
        self.fields = [(k.encode(), v.encode()) for k, v in fields.items()]

    def __call__(self, request: Request) -> Response:
        if request.path == b"/plain":
            return hello(request)
        echo = Echo()
        self.protocols.append(echo)
        return Response.switchProtocols(self.upgrade, echo, self.fields)


def switched(handler: Switching, data: bytes = UPGRADE, **config: Any) -> Connection:
    conn = connect(handler, **config)
    conn.send(data)
    return conn


def test_switchWritesThe101AndHandsTheTransportOn() -> None:
    handler = Switching(**{"Sec-Test": "yes"})
    conn = switched(handler)
    head = conn.take()
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"\r\nUpgrade: echo\r\n" in head
    assert b"\r\nConnection: upgrade\r\n" in head
    assert b"\r\nSec-Test: yes\r\n" in head
    # A 101 has no content: no framing fields.
    assert b"Content-Length" not in head and b"Transfer-Encoding" not in head
    [echo] = handler.protocols
    assert echo.made == 1
    assert conn.protocol.state is ConnectionState.UPGRADED
    # The HTTP timers are gone; the new protocol owns the bytes.
    assert conn.clock.getDelayedCalls() == []
    conn.send(b"hello")
    assert conn.take() == b"hello"
    assert echo.received == [b"hello"]


def test_bytesInTheSamePacketAsTheRequestComeFirstInOrder() -> None:
    handler = Switching()
    conn = switched(handler, UPGRADE + b"\r\nearly")
    [echo] = handler.protocols
    # Everything after the head, as it came (even a CRLF, which HTTP would
    # have skipped as an empty line), before anything later.
    assert echo.received == [b"\r\nearly"]
    conn.send(b"late")
    assert echo.received == [b"\r\nearly", b"late"]


def test_nothingBehindTheUpgradeRequestIsParsedAsHTTP() -> None:
    """Bytes after an upgrade request wait for its answer."""
    handler = Switching()
    conn = switched(handler, UPGRADE + b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
    [echo] = handler.protocols
    assert echo.received == [b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n"]
    assert conn.factory.stats.requests == 1


def test_notSwitchingParsesOnAfterTheAnswer() -> None:
    """A request that offered an upgrade and got a 200 keeps HTTP going."""
    conn = connect(hello)
    conn.send(UPGRADE + b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    responses = conn.responses()
    assert [r.status for r in responses] == [200, 200]
    assert conn.protocol.state is ConnectionState.WAITING


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(
            b"GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
            id="http10-ignored",
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\n\r\n",
            id="no-connection-upgrade",
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n\r\n",
            id="no-upgrade-field",
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: other\r\n\r\n",
            id="other-protocol",
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n"
            b"Content-Length: 2\r\n\r\nab",
            id="with-a-body",
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
            id="h2c",
        ),
    ],
)
def test_a101ForARequestThatCannotSwitchIsA500NeverSent(request_: bytes) -> None:
    upgrade = b"h2c" if b"h2c" in request_ else b"echo"
    handler = Switching(upgrade)
    conn = connect(handler)
    conn.send(request_)
    output = conn.output()
    assert b" 101 " not in output
    assert output.startswith(b"HTTP/1.1 500 ")
    assert conn.protocol.state is not ConnectionState.UPGRADED


def test_upgradesOffered() -> None:
    conn = connect(hello)
    seen: list[tuple[bytes, ...]] = []

    def handler(request: Request) -> Response:
        seen.append(request.upgrades)
        return hello(request)

    conn.factory.handler = handler
    conn.send(
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\n"
        b"Upgrade: h2c, WebSocket, foo/2\r\n\r\n"
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"
    )
    assert seen == [(b"websocket", b"foo/2"), ()]


def test_handshakeIsFedFirstAndNo101IsWritten() -> None:
    """With ``handshake`` the new protocol answers its own handshake."""
    echo = Echo()
    conn = connect(lambda r: Response.switchProtocols(b"echo", echo, handshake=b"HEAD"))
    conn.send(UPGRADE + b"x")
    assert echo.received == [b"HEAD", b"x"]
    assert conn.take() == b"HEADx"


def test_theCloseIsOneRecordWithTheBytesEachWay() -> None:
    handler = Switching()
    clock = Clock()
    clock.advance(1_700_000_000)
    factory = ConnectionFactory(handler, config=ServerConfig(), reactor=clock)
    out = io.StringIO()
    jsonOut = io.StringIO()
    logs = [AccessLog(out, "combined", reactor=clock)]
    logs.append(AccessLog(jsonOut, "json", reactor=clock))
    for log in logs:
        factory.requestObservers.append(log)
        factory.closeObservers.append(log)
    from ._harness import openOn

    conn = openOn(factory, clock)
    assert conn is not None
    conn.send(UPGRADE)
    clock.advance(2)
    conn.send(b"ping")
    conn.send(b"bye")
    assert conn.transport.disconnecting
    conn.lose()
    for log in logs:
        log.flush()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert '"GET /chat HTTP/1.1" 101 0' in lines[0] and lines[0].endswith("close=-")
    assert lines[1].endswith("dur=- in=7 out=4 close=upgraded")
    assert "age=2.000" in lines[1]
    record = json.loads(jsonOut.getvalue().splitlines()[1])
    assert (record["close"], record["in"], record["out"]) == ("upgraded", 7, 4)
    assert factory.stats.closes["upgraded"] == 1
    [echo] = handler.protocols
    assert echo.lost is not None and echo.lost.check(ConnectionDone)


def test_aClientThatVanishesIsAResetForTheNewProtocol() -> None:
    handler = Switching()
    conn = switched(handler)
    conn.send(b"\x81\x05hel")  # mid-frame
    conn.lose(Failure(ConnectionLost()))
    [echo] = handler.protocols
    assert echo.lost is not None and echo.lost.check(ConnectionLost)
    assert conn.protocol.closeReason == "peer-reset"
    assert conn.factory.connections() == []


def test_halfCloseReachesAHalfCloseableProtocol() -> None:
    @implementer(IHalfCloseableProtocol)
    class HalfCloseable(Echo):
        halfClosed = False

        def readConnectionLost(self) -> None:
            self.halfClosed = True

        def writeConnectionLost(self) -> None:
            pass

    protocol = HalfCloseable()
    conn = connect(lambda r: Response.switchProtocols(b"echo", protocol))
    conn.send(UPGRADE)
    conn.protocol.readConnectionLost()
    assert protocol.halfClosed and not conn.closing
    # A plain protocol is closed on the client's half-close.
    handler = Switching()
    other = switched(handler)
    other.protocol.readConnectionLost()
    assert other.closing


def test_upgradedConnectionsCountAndAreToldOfTheDrain() -> None:
    class Polite(Echo):
        told = 0

        def connectionDraining(self) -> None:
            self.told += 1
            assert self.transport is not None
            self.transport.loseConnection()

    polite = Polite()
    conn = connect(lambda r: Response.switchProtocols(b"echo", polite))
    conn.send(UPGRADE)
    stats = conn.factory.stats
    assert stats.active == 1
    assert stats.byState()["upgraded"] == 1
    conn.factory.drain(10)
    assert polite.told == 1 and conn.closing
    conn.lose()
    assert conn.protocol.closeReason == "draining"
    assert conn.clock.getDelayedCalls() == []


class Later:
    """A handler whose 101 comes when the test says (an upstream's, say)."""

    def __init__(self, protocol: Protocol, *fields: tuple[bytes, bytes]) -> None:
        self.protocol = protocol
        self.fields = list(fields)
        self.deferred: Deferred[Response] = Deferred()

    def __call__(self, request: Request) -> Deferred[Response]:
        return self.deferred

    def answer(self) -> None:
        self.deferred.callback(
            Response.switchProtocols(b"echo", self.protocol, self.fields)
        )


def test_aSwitchAfterTheDrainBeganIsToldOfIt() -> None:
    """
    The drain told every connection when it began; one that switches
    later is told as the new protocol gets it, or nothing would ever end
    it before the drain deadline.
    """

    class Polite(Echo):
        told = 0

        def connectionDraining(self) -> None:
            self.told += 1

    polite = Polite()
    later = Later(polite)
    conn = connect(later)
    conn.send(UPGRADE)
    conn.factory.drain(10)
    assert not conn.closing  # The upgrade request is still being answered.
    later.answer()
    assert conn.take().startswith(b"HTTP/1.1 101 ")
    assert polite.told == 1


def test_aHalfCloseBeforeTheSwitchReachesTheNewProtocolAfterItsBytes() -> None:
    @implementer(IHalfCloseableProtocol)
    class HalfCloseable(Echo):
        def readConnectionLost(self) -> None:
            self.received.append(b"<FIN>")

        def writeConnectionLost(self) -> None:
            pass

    protocol = HalfCloseable()
    later = Later(protocol)
    conn = connect(later)
    conn.send(UPGRADE + b"early")
    conn.protocol.readConnectionLost()
    later.answer()
    assert conn.take().startswith(b"HTTP/1.1 101 ")
    assert protocol.received == [b"early", b"<FIN>"]
    assert not conn.closing


def test_a101WithAFieldItCannotCarryIsA500() -> None:
    """A field value with a control character (RFC 9110 §5.5): never sent."""
    later = Later(Echo(), (b"X-Bad", b"a\x01b"))
    conn = connect(later)
    conn.send(UPGRADE)
    later.answer()
    [response] = parseResponses(conn.take())
    assert response.status == 500
    assert conn.protocol.state is not ConnectionState.UPGRADED


def test_theDrainDeadlineAbortsAnUpgradedConnection() -> None:
    handler = Switching()
    conn = switched(handler)  # Echo ignores the drain: its connection is lost
    conn.factory.drain(5)
    assert conn.closing  # loseConnection, as gracefully as Twisted allows
    conn.transport.disconnecting = False  # the peer does not close
    conn.clock.advance(5)
    assert conn.transport.aborted
    conn.lose(Failure(ConnectionLost()))
    assert conn.protocol.closeReason == "drain-timeout"


def test_anUpgradedConnectionIsNotShedForMaxConnections() -> None:
    handler = Switching()
    conn = switched(handler, maxConnections=1)
    assert conn.protocol.closeIdle("max-connections") is False
    assert conn.protocol.state is ConnectionState.UPGRADED


def test_takeOverTransportIsOnlyForTheRequestThatMaySwitch() -> None:
    errors: list[Exception] = []

    def handler(request: Request) -> Response:
        try:
            request.takeOverTransport()
        except RuntimeError as error:
            errors.append(error)
        return hello(request)

    conn = connect(handler)
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len(errors) == 1
    assert parseResponses(conn.output())[0].status == 200
