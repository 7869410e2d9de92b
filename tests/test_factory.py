"""ConnectionFactory: registry and counters, maxConnections, drain."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from connserver._connection.factory import OVER_CAPACITY_RESPONSE, ConnectionFactory
from connserver._connection.message import Request, Response
from connserver._http.config import ServerConfig
from connserver._http.state import ConnectionState

from ._harness import PEER, Connection, FakePort, hello, openOn

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def open_(factory: ConnectionFactory, clock: Clock) -> Connection:
    conn = openOn(factory, clock)
    assert conn is not None
    return conn


def test_countsByStateAndCloseReasons() -> None:
    clock = Clock()
    factory = ConnectionFactory(hello, ServerConfig(), reactor=clock)
    a = open_(factory, clock)
    b = open_(factory, clock)
    a.send(GET)
    b.send(b"GET / HT")
    assert factory.stats.byState() == {
        "reading": 1,
        "handling": 0,
        "writing": 0,
        "waiting": 1,
        "upgraded": 0,
        "closing": 0,
    }
    assert factory.stats.active == 2
    assert factory.stats.accepted == 2
    b.send(b"TP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    b.lose()
    a.clock.advance(ServerConfig().idleTimeout or 0)
    a.lose()
    assert factory.stats.closes == {"client-close": 1, "idle-timeout": 1}
    assert factory.stats.requestsPerConnection == {1: 2}
    assert factory.stats.active == 0
    assert (factory.stats.handled, factory.stats.responses) == (2, 2)
    assert clock.getDelayedCalls() == []


def test_maxConnectionsPausesAcceptingAndShedsIdleOldestFirst() -> None:
    clock = Clock()
    factory = ConnectionFactory(hello, ServerConfig(maxConnections=3), reactor=clock)
    port = FakePort()
    factory.addListeningPort(port)  # type: ignore[arg-type]
    first = open_(factory, clock)
    second = open_(factory, clock)
    first.send(GET)  # idle first
    second.send(GET)  # idle second
    third = open_(factory, clock)  # reaches the limit
    assert not port.reading
    # Nobody waits: every connection keeps its slot ("above this many").
    assert not first.closing and not second.closing
    # A client waits in the backlog: the longest-idle connection is closed
    # at once, without lingering.
    factory.clientWaiting()
    assert first.transport.disconnecting
    assert first.protocol.closeReason == "max-connections"
    assert not second.closing
    # The client takes the slot (shed connections no longer hold one)...
    fourth = open_(factory, clock)
    assert not second.closing
    # ...one more accepted in the same reactor turn takes the next idle
    # one's slot...
    fifth = open_(factory, clock)
    assert second.transport.disconnecting
    # ...and with nothing idle left, the next is refused (with a 503).
    refused = open_(factory, clock)
    assert refused.output() == OVER_CAPACITY_RESPONSE
    refused.lose()
    assert factory.stats.refused == 1
    # A client waits and nothing can give up its slot: looked at again
    # shortly, and when a connection becomes idle.
    factory.clientWaiting()
    assert not third.closing
    third.send(GET)
    assert third.protocol.state is ConnectionState.WAITING
    assert not third.closing  # nobody is known to wait any more
    factory.clientWaiting()
    assert third.transport.disconnecting
    for conn in (first, second, third):
        conn.lose()
    assert port.reading
    fourth.lose()
    fifth.lose()
    assert clock.getDelayedCalls() == []


def test_atMaxConnectionsNobodyIsShedUnlessAClientWaits() -> None:
    """Two keep-alive clients and two slots: both keep their connection."""
    clock = Clock()
    factory = ConnectionFactory(hello, ServerConfig(maxConnections=2), reactor=clock)
    factory.addListeningPort(FakePort())  # type: ignore[arg-type]
    a, b = open_(factory, clock), open_(factory, clock)
    for _ in range(3):
        for conn in (a, b):
            conn.send(GET)
        clock.advance(1)
    assert [len(conn.responses()) for conn in (a, b)] == [3, 3]
    assert not a.closing and not b.closing
    assert factory.stats.closes == {}


def test_aWaitingClientTakesTheSlotOfALingeringConnectionFirst() -> None:
    """
    Every slot held: one connection answered 408 lingers for its peer's FIN
    (lingerTimeout), one is idle.  A waiting client gets the lingering one's
    slot at once, not after the linger; the idle one stays.
    """
    clock = Clock()
    factory = ConnectionFactory(
        hello,
        ServerConfig(maxConnections=2, requestHeadTimeout=2.0, lingerTimeout=5.0),
        reactor=clock,
    )
    port = FakePort()
    factory.addListeningPort(port)  # type: ignore[arg-type]
    slow = open_(factory, clock)
    idle = open_(factory, clock)
    slow.send(b"GET / HTTP/1.1\r\n")
    idle.send(GET)
    clock.advance(2.0)
    assert [r.status for r in slow.responses()] == [408]
    assert not slow.transport.disconnecting  # half-closed: lingering
    # No client waits: the linger runs its course.
    assert not port.reading
    factory.clientWaiting()
    assert slow.transport.disconnecting
    assert not idle.closing
    slow.lose()
    assert port.reading
    assert slow.protocol.closeReason == "header-timeout"


def test_aWaitingClientIsLookedAfterWhileNoSlotCanBeFreed() -> None:
    """Every slot busy: looked at again every 0.1 s, until one lingers."""
    clock = Clock()
    factory = ConnectionFactory(
        hello,
        ServerConfig(maxConnections=1, requestHeadTimeout=2.0),
        reactor=clock,
    )
    factory.addListeningPort(FakePort())  # type: ignore[arg-type]
    slow = open_(factory, clock)
    slow.send(b"GET / HTTP/1.1\r\n")
    factory.clientWaiting()
    assert not slow.closing
    calls = [c for c in clock.getDelayedCalls() if c.getTime() == 0.1]
    assert len(calls) == 1
    clock.advance(0.1)  # watched again (a FakePort has no socket to watch)
    slow.lose()
    assert clock.getDelayedCalls() == []


def test_drainClosesIdleAnswersInFlightWithCloseAndFires() -> None:
    clock = Clock()
    pending: list[Deferred[Response]] = []

    def handler(request: Request) -> Deferred[Response]:
        d: Deferred[Response] = Deferred()
        pending.append(d)
        return d

    factory = ConnectionFactory(
        handler, ServerConfig(drainGraceTimeout=1.0), reactor=clock
    )
    idle = open_(factory, clock)
    busy = open_(factory, clock)
    busy.send(GET)
    done = factory.drain(30)
    fired: list[object] = []
    done.addCallback(fired.append)
    assert factory.buildProtocol(PEER) is None  # no new connections
    clock.advance(1.0)
    assert idle.closing and idle.protocol.closeReason == "draining"
    idle.lose()
    pending[0].callback(Response(200, body=b"ok"))
    response = busy.responses()[0]
    assert response.header(b"connection") == b"close"
    assert busy.protocol.closeReason == "draining"
    assert not fired
    busy.lose()
    assert fired == [None]
    assert clock.getDelayedCalls() == []


def test_requestDuringDrainGraceIsAnsweredWithClose() -> None:
    clock = Clock()
    factory = ConnectionFactory(
        hello, ServerConfig(drainGraceTimeout=1.0), reactor=clock
    )
    conn = open_(factory, clock)
    conn.send(GET)
    factory.drain(30)
    clock.advance(0.5)
    conn.send(GET)
    responses = conn.responses()
    assert [r.header(b"connection") for r in responses] == [b"keep-alive", b"close"]
    # The response in the drain grace says close, and advertises no timeout.
    assert [r.header(b"keep-alive") for r in responses] == [b"timeout=75", None]
    conn.lose()


def test_drainDeadlineAborts() -> None:
    clock = Clock()
    factory = ConnectionFactory(
        lambda request: Deferred(), ServerConfig(), reactor=clock
    )
    conn = open_(factory, clock)
    conn.send(GET)
    done = factory.drain(5)
    fired: list[object] = []
    done.addCallback(fired.append)
    clock.advance(4.9)
    assert not conn.transport.aborted
    clock.advance(0.1)
    assert conn.transport.aborted
    conn.lose(Failure(ConnectionDone()))
    assert fired == [None]
    assert conn.protocol.closeReason == "drain-timeout"
    assert clock.getDelayedCalls() == []


def test_drainWithNoConnectionsFiresAtOnce() -> None:
    factory = ConnectionFactory(hello, ServerConfig(), reactor=Clock())
    fired: list[object] = []
    factory.drain().addCallback(fired.append)
    assert fired == [None]


def test_requestObserversGetRecords() -> None:
    clock = Clock()
    factory = ConnectionFactory(
        hello, ServerConfig(maxRequestsPerConnection=2), reactor=clock
    )
    records = []
    factory.requestObservers.append(records.append)
    conn = open_(factory, clock)
    conn.send(b"GET /a HTTP/1.1\r\nHost: x\r\nUser-Agent: ua\r\n\r\n")
    clock.advance(2)
    conn.send(b"GET /b HTTP/1.1\r\nHost: x\r\nReferer: r\r\n\r\n")
    assert [(r.target, r.requestIndex, r.closeReason, r.status) for r in records] == [
        (b"/a", 1, None, 200),
        (b"/b", 2, "max-requests", 200),
    ]
    assert records[0].userAgent == b"ua" and records[1].referer == b"r"
    assert records[1].connectionAge == 2
    assert records[0].peerHost == "127.0.0.1"
    assert records[0].bodyBytes == 130
    conn.lose()


def test_failingObserverDoesNotStopServing() -> None:
    clock = Clock()
    factory = ConnectionFactory(hello, ServerConfig(), reactor=clock)

    def broken(record: object) -> None:
        raise OSError("disk full")

    factory.requestObservers.append(broken)
    conn = open_(factory, clock)
    conn.send(GET + GET)
    assert len(conn.responses()) == 2
    conn.lose()


def test_oneConnectionOverTheLimitShedsOneIdleConnection() -> None:
    clock = Clock()
    factory = ConnectionFactory(hello, ServerConfig(maxConnections=4), reactor=clock)
    factory.addListeningPort(FakePort())  # type: ignore[arg-type]
    a, b, c = (open_(factory, clock) for _ in range(3))
    for conn in (a, b, c):
        conn.send(GET)
    open_(factory, clock)  # reaches the limit: nobody waits, nobody is shed
    assert not a.closing
    open_(factory, clock)  # same reactor turn, over the limit: sheds one
    assert [conn.closing for conn in (a, b, c)] == [True, False, False]


def test_aConnectionStillReceivingABodyIsNotShed() -> None:
    """Closing it at once would turn the body's next bytes into a reset."""
    clock = Clock()
    factory = ConnectionFactory(hello, ServerConfig(maxConnections=1), reactor=clock)
    factory.addListeningPort(FakePort())  # type: ignore[arg-type]
    conn = open_(factory, clock)
    conn.send(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"a" * 10
    )
    assert conn.responses(b"POST")[0].status == 200
    factory.clientWaiting()
    assert not conn.closing
    conn.send(b"a" * 99_990)  # the discard ends: now it is idle, and shed
    factory.clientWaiting()
    assert conn.transport.disconnecting
    assert conn.protocol.closeReason == "max-connections"
    clock.advance(1)


def test_raisingCancellerDoesNotKeepTheConnectionRegistered() -> None:
    def canceller(d: Deferred[Response]) -> None:
        raise RuntimeError("canceller bug")

    clock = Clock()
    factory = ConnectionFactory(
        lambda request: Deferred(canceller), ServerConfig(), reactor=clock
    )
    conn = open_(factory, clock)
    conn.send(GET)
    conn.lose()
    assert factory.stats.active == 0
    fired: list[object] = []
    factory.drain(1.0).addCallback(fired.append)
    assert fired == [None]


def test_aRequestAbortedAtTheDrainDeadlineIsLoggedWithItsReason() -> None:
    """
    One record for the request the deadline cut (its handler still
    running: no status), with close=drain-timeout, and no close record.
    """
    from connserver._http.records import ConnectionRecord, RequestRecord
    from connserver._running.accesslog import formatCombined, formatJSON

    clock = Clock()
    factory = ConnectionFactory(
        lambda request: Deferred(), ServerConfig(), reactor=clock
    )
    records: list[RequestRecord | ConnectionRecord] = []
    factory.requestObservers.append(records.append)
    factory.closeObservers.append(records.append)
    first = open_(factory, clock)
    first.send(GET.replace(b"GET /", b"GET /first"))
    cut = open_(factory, clock)
    cut.send(GET.replace(b"GET /", b"GET /slow"))
    factory.drain(5)
    clock.advance(5)
    for conn in (first, cut):
        conn.lose(Failure(ConnectionDone()))
    assert len(records) == 2
    assert all(isinstance(r, RequestRecord) for r in records)
    assert [r.closeReason for r in records] == ["drain-timeout"] * 2
    line = formatCombined(records[1])
    assert '"GET /slow HTTP/1.1" - 0 ' in line and "close=drain-timeout" in line
    assert '"status":null' in formatJSON(records[1])
