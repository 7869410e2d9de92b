"""
Every close accounted for (issue 12): each close reason of
``CONNECTION_CLOSE_REASONS`` is provoked here, and the access log, in both
formats, holds exactly one line with that reason, and one close line per
connection accepted.

A close that a final response decided is carried by that response's line
(``close=client-close``); any other close (an idle timeout, the peer going,
a head timeout before any byte, the drain, shedding, a refusal, an abort,
a TLS error) writes a line of its own when the connection is gone
(``ConnectionRecord``, ``"-" -`` in place of the request and status).
Everything runs in memory over ``Clock``, except the TLS handshake.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from connserver import AccessLog, ConnectionFactory, Request, Response, ServerConfig
from connserver._http.persistence import CONNECTION_CLOSE_REASONS
from connserver._http.records import ConnectionRecord
from connserver._running.accesslog import formatCombined, formatJSON

from ._harness import PEER, Connection, FakePort, TCPStringTransport, hello, openOn

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


class Logs:
    """A combined and a JSON access log on one factory, as twistd wires them."""

    def __init__(self, factory: ConnectionFactory, clock: Clock) -> None:
        self.factory = factory
        self.clock = clock
        self.combined = io.StringIO()
        self.json = io.StringIO()
        self.logs = [
            AccessLog(self.combined, "combined", reactor=clock),
            AccessLog(self.json, "json", reactor=clock),
        ]
        for log in self.logs:
            factory.requestObservers.append(log)
            factory.closeObservers.append(log)

    def closeReasons(self) -> tuple[list[str], list[str]]:
        """The close reasons in each log, in order ('-' / null lines left out)."""
        for log in self.logs:
            log.flush()
        combined = [
            line.rsplit(" close=", 1)[1]
            for line in self.combined.getvalue().splitlines()
            if not line.endswith(" close=-")
        ]
        objects = [json.loads(line) for line in self.json.getvalue().splitlines()]
        return combined, [o["close"] for o in objects if o["close"] is not None]


def newFactory(handler: Any, clock: Clock, **config: Any) -> ConnectionFactory:
    return ConnectionFactory(handler, config=ServerConfig(**config), reactor=clock)


def opened(factory: ConnectionFactory, clock: Clock) -> Connection:
    conn = openOn(factory, clock)
    assert conn is not None
    return conn


def delivered(conn: Connection, reason: type[Exception] = ConnectionDone) -> None:
    """The reactor delivers connectionLost once the transport closed."""
    assert conn.closing or conn.transport.aborted
    conn.lose(Failure(reason()))


def oneRequest(request: bytes = GET) -> Callable[[ConnectionFactory, Clock], None]:
    """A case: one connection, one request, closed by the response's decision."""

    def run(factory: ConnectionFactory, clock: Clock) -> None:
        conn = opened(factory, clock)
        conn.send(request)
        delivered(conn)

    return run


@implementer(IBodyProducer)
class Stream:
    """A body of unknown length that ends (or overruns its length) when told."""

    def __init__(self, length: Any = UNKNOWN_LENGTH) -> None:
        self.length = length
        self.consumer: Any = None
        self.done: Deferred[None] = Deferred()

    def startProducing(self, consumer: Any) -> Deferred[None]:
        self.consumer = consumer
        consumer.write(b"part")
        return self.done

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


def raising(request: Request) -> Response:
    raise RuntimeError("handler bug")


def never(request: Request) -> Deferred[Response]:
    return Deferred()


def reading(request: Request) -> Deferred[Response]:
    return request.readBody().addCallback(lambda body: Response(200, body=body))


def readingButAnswering(request: Request) -> Deferred[Response]:
    """Reads the body, and answers even when it fails midway."""
    return request.readBody().addCallbacks(
        lambda body: Response(200, body=body),
        lambda failure: Response(200, body=b"partial"),
    )


# -- the cases, one function per reason (and a second for some) ------------------


def idleDrainAfterStream(factory: ConnectionFactory, clock: Clock) -> None:
    """A streamed response, kept alive, ends during a drain; the idle close follows."""
    stream = Stream()
    factory.handler = lambda request: Response(200, body=stream)
    conn = opened(factory, clock)
    conn.send(GET)
    factory.drain(30)
    stream.done.callback(None)  # the head said keep-alive: it was sent before
    clock.advance(factory.config.drainGraceTimeout)
    delivered(conn)


def drainedResponse(factory: ConnectionFactory, clock: Clock) -> None:
    """A request in the drain's grace window: its response says close."""
    conn = opened(factory, clock)
    factory.drain(30)
    conn.send(GET)
    delivered(conn)


def unsafeFraming(factory: ConnectionFactory, clock: Clock) -> None:
    """
    The client half-closes inside a body the handler reads; the handler
    answers anyway: the next request's start cannot be trusted.
    """
    conn = opened(factory, clock)
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    conn.protocol.readConnectionLost()
    assert conn.responses(b"POST")[0].body == b"partial"
    delivered(conn)


def headTimeoutSilent(factory: ConnectionFactory, clock: Clock) -> None:
    """A connection that never sends a byte."""
    conn = opened(factory, clock)
    clock.advance(factory.config.requestHeadTimeout or 0)
    delivered(conn)


def headTimeout408(factory: ConnectionFactory, clock: Clock) -> None:
    conn = opened(factory, clock)
    conn.send(b"GET / HTTP/1.1\r\nHo")
    clock.advance(factory.config.requestHeadTimeout or 0)
    delivered(conn)


def bodyTimeout(factory: ConnectionFactory, clock: Clock) -> None:
    conn = opened(factory, clock)
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    clock.advance(factory.config.bodyTimeout or 0)
    delivered(conn)


def bodyTooSlow(factory: ConnectionFactory, clock: Clock) -> None:
    conn = opened(factory, clock)
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
    for _ in range(6):
        clock.advance(1)
        conn.send(b"x" * 10)
    delivered(conn)


def handlerTimeout(factory: ConnectionFactory, clock: Clock) -> None:
    conn = opened(factory, clock)
    conn.send(GET)
    clock.advance(5)
    delivered(conn)


def responseError(factory: ConnectionFactory, clock: Clock) -> None:
    """A body producer that writes past the length it announced: aborted."""
    stream = Stream(length=2)
    factory.handler = lambda request: Response(200, body=stream)
    conn = opened(factory, clock)
    conn.send(GET)
    delivered(conn, ConnectionAborted)


def sendTimeout(factory: ConnectionFactory, clock: Clock) -> None:
    """A client that stops reading: the transport's buffer stays full."""
    conn = opened(factory, clock)
    conn.send(GET)
    conn.protocol.flow.pauseProducing()
    clock.advance(factory.config.sendTimeout or 0)
    delivered(conn, ConnectionAborted)


def maxAge(factory: ConnectionFactory, clock: Clock) -> None:
    conn = opened(factory, clock)
    clock.advance(5)
    conn.send(GET)
    delivered(conn)


def idleTimeout(factory: ConnectionFactory, clock: Clock) -> None:
    conn = opened(factory, clock)
    conn.send(GET)
    clock.advance(factory.config.idleTimeout or 0)
    delivered(conn)


def peerClosed(factory: ConnectionFactory, clock: Clock) -> None:
    conn = opened(factory, clock)
    conn.send(GET)
    conn.lose(Failure(ConnectionDone()))


def peerHalfClosed(factory: ConnectionFactory, clock: Clock) -> None:
    """The client's FIN after its request: answered, then closed."""
    conn = opened(factory, clock)
    conn.send(GET)
    conn.protocol.readConnectionLost()
    delivered(conn)


def peerReset(factory: ConnectionFactory, clock: Clock) -> None:
    conn = opened(factory, clock)
    conn.send(GET)
    conn.lose(Failure(ConnectionLost()))


def maxConnections(factory: ConnectionFactory, clock: Clock) -> None:
    """Two clients, one slot: the idle one is shed for the newcomer."""
    factory.addListeningPort(FakePort())  # type: ignore[arg-type]
    first = opened(factory, clock)
    first.send(GET)
    second = opened(factory, clock)
    delivered(first)
    second.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    delivered(second)
    clock.advance(0)  # the reactor's next turn (a shed it planned finds none)


def refused(factory: ConnectionFactory, clock: Clock) -> None:
    """Two clients, one slot, none idle: the newcomer gets 503, unread."""
    factory.handler = never
    factory.addListeningPort(FakePort())  # type: ignore[arg-type]
    busy = opened(factory, clock)
    busy.send(GET)
    protocol = factory.buildProtocol(PEER)
    assert protocol is not None
    transport = TCPStringTransport()
    protocol.makeConnection(transport)
    assert transport.value().startswith(b"HTTP/1.1 503 ")
    clock.advance(1)
    protocol.connectionLost(Failure(ConnectionDone()))
    factory.drain(1)
    clock.advance(1)
    delivered(busy, ConnectionAborted)


def refusedWhileDraining(factory: ConnectionFactory, clock: Clock) -> None:
    factory.drain(1)
    assert factory.buildProtocol(PEER) is None


def drainTimeout(factory: ConnectionFactory, clock: Clock) -> None:
    factory.handler = never
    conn = opened(factory, clock)
    conn.send(GET)
    factory.drain(5)
    clock.advance(5)
    delivered(conn, ConnectionAborted)


def aborted(factory: ConnectionFactory, clock: Clock) -> None:
    """An embedding application aborts a connection itself."""
    conn = opened(factory, clock)
    conn.send(GET)
    [protocol] = factory.connections()
    assert protocol.transport is not None
    protocol.transport.abortConnection()  # type: ignore[attr-defined]
    delivered(conn, ConnectionAborted)


class _Closing(Protocol):
    """A protocol switched to (101) that closes at once."""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()


def upgraded(factory: ConnectionFactory, clock: Clock) -> None:
    """The connection switched protocols, and the new one ended cleanly."""
    factory.handler = lambda r: Response.switchProtocols(b"echo", _Closing())
    conn = opened(factory, clock)
    conn.send(
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n"
    )
    delivered(conn)


def _case(
    run: Callable[[ConnectionFactory, Clock], None],
    handler: Any = hello,
    **config: Any,
) -> tuple[Callable[[ConnectionFactory, Clock], None], Any, dict[str, Any]]:
    return run, handler, config


#: reason -> cases: (scenario, handler, config).
CASES: dict[str, list[tuple[Any, Any, dict[str, Any]]]] = {
    "client-close": [
        _case(oneRequest(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    ],
    "handler-close": [
        _case(oneRequest(), lambda r: Response(200, [(b"Connection", b"close")]))
    ],
    "keepalive-disabled": [_case(oneRequest(), keepAlive=False)],
    "max-requests": [_case(oneRequest(), maxRequestsPerConnection=1)],
    "max-age": [_case(maxAge, maxConnectionAge=5.0)],
    "draining": [_case(drainedResponse), _case(idleDrainAfterStream)],
    "unread-body": [
        _case(
            oneRequest(
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
            )
        )
    ],
    "unsafe-framing": [_case(unsafeFraming, readingButAnswering)],
    "unknown-length-http10": [
        _case(
            oneRequest(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
            lambda r: Response(200, body=_finished(Stream())),
        )
    ],
    "http10-default": [_case(oneRequest(b"GET / HTTP/1.0\r\n\r\n"))],
    "protocol-error": [_case(oneRequest(b"GET /\x01 HTTP/1.1\r\n\r\n"))],
    "handler-error": [_case(oneRequest(), raising)],
    "response-error": [_case(responseError)],
    "header-timeout": [_case(headTimeoutSilent), _case(headTimeout408)],
    "body-timeout": [_case(bodyTimeout, reading)],
    "body-too-slow": [
        _case(bodyTooSlow, reading, minBodyRate=100, bodyTimeout=5.0, maxBodyBytes=None)
    ],
    "handler-timeout": [_case(handlerTimeout, never, handlerTimeout=5.0)],
    "send-timeout": [_case(sendTimeout)],
    "idle-timeout": [_case(idleTimeout)],
    "peer-closed": [_case(peerClosed), _case(peerHalfClosed)],
    "peer-reset": [_case(peerReset)],
    "max-connections": [_case(maxConnections, maxConnections=1)],
    "drain-timeout": [_case(drainTimeout)],
    "aborted": [_case(aborted, never)],
    "refused": [_case(refused, maxConnections=1), _case(refusedWhileDraining)],
    "upgraded": [_case(upgraded)],
}


def _finished(stream: Stream) -> Stream:
    stream.done.callback(None)
    return stream


#: TLS needs a real handshake: test_tlsErrorIsRecordedOnce below.
REAL_SOCKET_ONLY = {"tls-error"}


def test_everyReasonHasACase() -> None:
    assert set(CASES) | REAL_SOCKET_ONLY == set(CONNECTION_CLOSE_REASONS)


@pytest.mark.parametrize(
    ("reason", "case"),
    [
        pytest.param(reason, case, id=f"{reason}-{index}")
        for reason, cases in CASES.items()
        for index, case in enumerate(cases)
    ],
)
def test_eachCloseReasonIsRecordedExactlyOnce(reason: str, case: Any) -> None:
    run, handler, config = case
    clock = Clock()
    clock.advance(1_700_000_000)
    factory = newFactory(handler, clock, **config)
    logs = Logs(factory, clock)
    run(factory, clock)
    stats = factory.stats
    assert stats.active == 0
    assert stats.closes[reason] == 1, dict(stats.closes)
    combined, fromJSON = logs.closeReasons()
    # Exactly one line with the reason, in both formats ...
    assert combined.count(reason) == 1, combined
    assert fromJSON == combined
    # ... and one close line per connection accepted, matching the counters.
    assert len(combined) == stats.accepted == sum(stats.closes.values())
    assert sorted(combined) == sorted(stats.closes.elements())
    assert stats.handled == stats.accepted - stats.refused
    assert stats.handled == sum(stats.requestsPerConnection.values())
    for log in logs.logs:
        log.close()
    assert clock.getDelayedCalls() == []


def test_aCloseLineHasTheConnectionFacts() -> None:
    """Connection id, peer, age, requests served and reason, in both formats."""
    record = ConnectionRecord(
        timestamp=1_741_183_387.25,
        peerHost="203.0.113.7",
        connectionId=7,
        requestsServed=3,
        connectionAge=62.0414,
        closeReason="idle-timeout",
        secure=True,
    )
    assert formatCombined(record) == (
        '203.0.113.7 - - [05/Mar/2025:14:03:07 +0000] "-" - 0 "-" "-" '
        "conn=7 req=3 age=62.041 dur=- close=idle-timeout\n"
    )
    assert json.loads(formatJSON(record)) == {
        "time": "2025-03-05T14:03:07.250Z",
        "remote": "203.0.113.7",
        "method": None,
        "target": None,
        "version": None,
        "status": None,
        "bytes": 0,
        "referer": None,
        "userAgent": None,
        "conn": 7,
        "req": 3,
        "age": 62.0414,
        "dur": None,
        "close": "idle-timeout",
        "secure": True,
    }


def test_idleTimeoutLineCarriesTheConnection() -> None:
    """The record of a real idle close: its id, peer, age and requests served."""
    clock = Clock()
    clock.advance(1_700_000_000)
    factory = newFactory(hello, clock, idleTimeout=5.0)
    records: list[Any] = []
    factory.requestObservers.append(records.append)
    factory.closeObservers.append(records.append)
    conn = opened(factory, clock)
    conn.send(GET + GET)
    clock.advance(5)
    delivered(conn)
    assert [type(r).__name__ for r in records] == [
        "RequestRecord",
        "RequestRecord",
        "ConnectionRecord",
    ]
    close = records[-1]
    assert (close.connectionId, close.peerHost, close.requestsServed) == (
        1,
        "127.0.0.1",
        2,
    )
    assert (close.closeReason, close.connectionAge) == ("idle-timeout", 5.0)
    assert close.timestamp == 1_700_000_005


def test_aClosingResponseThatThenStallsKeepsItsOneRecord() -> None:
    """
    ``Connection: close`` was logged with the response; the client then
    stops reading, and sendTimeout aborts: still one close record, and the
    counters say the same reason as the log.
    """
    clock = Clock()
    stream = Stream()
    factory = newFactory(lambda request: Response(200, body=stream), clock)
    logs = Logs(factory, clock)
    conn = opened(factory, clock)
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    conn.protocol.flow.pauseProducing()
    stream.done.callback(None)
    assert not conn.transport.aborted
    clock.advance(60)
    assert conn.transport.aborted
    delivered(conn, ConnectionAborted)
    assert logs.closeReasons() == (["client-close"], ["client-close"])
    assert factory.stats.closes == {"client-close": 1}


def test_closeObserverFailureIsLoggedAndServingGoesOn(
    logFailures: list[Any],
) -> None:
    clock = Clock()
    factory = newFactory(hello, clock)

    def broken(record: Any) -> None:
        raise RuntimeError("observer bug")

    factory.closeObservers.append(broken)
    conn = opened(factory, clock)
    conn.send(GET)
    conn.lose()
    assert factory.stats.active == 0
    assert factory.stats.closes == {"peer-closed": 1}
    [event] = logFailures
    assert event["log_format"] == "a close observer failed"
    event["log_failure"].trap(RuntimeError)


def test_drainDeadlineIsInTheServersLog() -> None:
    """Issue 12: the drain-timeout abort left no line anywhere."""
    clock = Clock()
    factory = newFactory(never, clock)
    conn = opened(factory, clock)
    conn.send(GET)
    factory.drain(5)
    with capturedLogs() as events:
        clock.advance(5)
    [event] = [e for e in events if "drain deadline" in e["log_format"]]
    assert formatEvent(event) == "drain deadline reached: aborting 1 connection(s)"
    assert event["log_level"] is LogLevel.warn
    delivered(conn, ConnectionAborted)


def test_noCloseObserverNoRecordWork() -> None:
    """Without close observers nothing is built (the default, no access log)."""
    clock = Clock()
    factory = newFactory(hello, clock)
    conn = opened(factory, clock)
    conn.send(GET)
    conn.lose()
    assert factory.closeObservers == []
    assert factory.stats.closes == {"peer-closed": 1}


# -- TLS: a real handshake -----------------------------------------------------


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_tlsErrorIsRecordedOnce() -> None:
    """A client offering only h2: no protocol in common, one tls-error line."""
    from ._sockets import connect, finish, serve

    server = await serve(hello, tls=True)
    clock = Clock()
    logs = Logs(server.factory, clock)
    try:
        client = await connect(server, alpn=[b"h2"], handshake=False)
        await client.waitClosed()
    finally:
        await finish(server)
    combined, fromJSON = logs.closeReasons()
    assert combined == fromJSON == ["tls-error"]
    assert server.factory.stats.closes == {"tls-error": 1}
    assert '"secure":true' in logs.json.getvalue()
