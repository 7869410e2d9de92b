"""
Property-based fuzzing of the whole protocol (issue 7), on StringTransport
and Clock: arbitrary byte streams split arbitrarily, and a stateful machine
that interleaves bytes, time, write backpressure, late handler answers,
half-closes and resets.

Whatever a client sends, the server may only answer with what its handler
gave (200) or an error status a client caused (4xx, 501, 505), or close: no
exception escapes, nothing is logged as a failure, no state transition is
undefined, every connection is eventually closed by a timer of its own, and
no timer outlives the connection.

The example counts here keep the module to a few seconds; ``bench/fuzz_long.py``
runs the same properties for longer (``FUZZ_EXAMPLES``).
"""

from __future__ import annotations

import gc
import itertools
import os
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from connserver._connection.message import Request, Response
from connserver._http.config import ServerConfig
from connserver._http.state import ConnectionState

from ._harness import Connection, connect

#: Examples per property; bench/fuzz_long.py raises it.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))
STATEFUL_EXAMPLES = int(os.environ.get("FUZZ_STATEFUL_EXAMPLES", "60"))

#: Statuses the server may send: the handlers' 200, 100 Continue, and the
#: errors a client can cause.  500 means a server bug.
ALLOWED = {100, 200, 400, 408, 413, 414, 417, 431, 501, 505}
_STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) ")

FRAGMENTS = [
    b"GET / HTTP/1.1\r\n",
    b"GET /d HTTP/1.1\r\n",
    b"POST /r HTTP/1.1\r\n",
    b"POST /s HTTP/1.1\r\n",
    b"HEAD /p HTTP/1.1\r\n",
    b"GET / HTTP/1.0\r\n",
    b"GET /f HTTP/1.1\r\n",
    b"OPTIONS * HTTP/1.1\r\n",
    b"Host: x\r\n",
    b"Host: x\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: 0\r\n",
    b"Content-Length: 100\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Connection: close\r\n",
    b"Connection: keep-alive\r\n",
    b"Expect: 100-continue\r\n",
    b"\r\n",
    b"\r\n",
    b"\n",
    b"hello",
    b"5\r\nhello\r\n",
    b"0\r\n\r\n",
    b"0\r\nX-T: 1\r\n\r\n",
    b"5;e=1\r\n",
    b"\r",
    b" ",
    b":",
    b"\x00",
    b"\xff",
    b"HTTP/2.0",
]

fragments = st.sampled_from(FRAGMENTS)
streams = st.lists(
    st.one_of(fragments, fragments, st.binary(min_size=1, max_size=12)),
    max_size=40,
).map(b"".join)

configs = st.builds(
    ServerConfig,
    maxHeadBytes=st.sampled_from([128, 512, 16 * 1024]),
    maxRequestLineBytes=st.sampled_from([40, 8 * 1024]),
    maxHeaderCount=st.sampled_from([3, 100]),
    maxBodyBytes=st.sampled_from([4, 64, None]),
    maxPipelinedRequests=st.sampled_from([1, 2, 16]),
    maxRequestsPerConnection=st.sampled_from([1, 3, None]),
    keepAlive=st.booleans(),
)


@implementer(IBodyProducer)
class SlowProducer:
    """A streamed body of unknown length that finishes when told to."""

    length = UNKNOWN_LENGTH

    def __init__(self) -> None:
        self.consumer: Any = None
        self.done: Deferred[None] = Deferred()
        self.paused = False
        self.stopped = False

    def startProducing(self, consumer: Any) -> Deferred[None]:
        self.consumer = consumer
        consumer.write(b"streamed")
        return self.done

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.stopped = True


class Handlers:
    """
    The handlers the fuzzers talk to, chosen by path: ``/r`` reads the body
    whole, ``/s`` streams it, ``/d`` answers later (a Deferred the test
    fires), ``/p`` answers with a producer the test finishes; anything else
    answers at once without reading the body.
    """

    def __init__(self) -> None:
        self.pending: list[Deferred[Response]] = []
        self.producers: list[SlowProducer] = []

    def __call__(self, request: Request) -> Response | Deferred[Response]:
        path = request.path
        if path == b"/r":
            return request.readBody().addCallback(
                lambda body: Response(200, body=b"%d" % len(body))
            )
        if path == b"/s":
            received: list[bytes] = []
            done: Deferred[Response] = Deferred()

            class Sink:
                def makeConnection(self, transport: Any) -> None:
                    self.transport = transport

                def dataReceived(self, data: bytes) -> None:
                    received.append(data)

                def connectionLost(self, reason: Failure) -> None:
                    done.callback(Response(200, body=b"%d" % len(b"".join(received))))

            request.deliverBody(Sink())  # type: ignore[arg-type]
            return done
        if path == b"/d":
            d: Deferred[Response] = Deferred()
            self.pending.append(d)
            return d
        if path == b"/p":
            producer = SlowProducer()
            self.producers.append(producer)
            return Response(200, body=producer)
        return Response(200, [(b"Content-Type", b"text/plain")], b"ok")

    def settle(self) -> None:
        """Answer everything still pending."""
        while self.pending:
            self.pending.pop(0).callback(Response(200, body=b"late"))
        for producer in self.producers:
            if not producer.done.called:
                producer.done.callback(None)


def checkStatuses(conn: Connection) -> None:
    statuses = {int(code) for code in _STATUS.findall(conn.output())}
    assert statuses <= ALLOWED, statuses


def closeEventually(conn: Connection, handlers: Handlers) -> None:
    """
    Liveness: once handlers answer and the client reads, every connection is
    closed by the server's own timers, within the largest timeout.
    """
    protocol = conn.protocol
    for _ in range(200):
        if (
            protocol.state is ConnectionState.CLOSED
            or conn.transport.disconnecting
            or conn.transport.aborted
        ):
            break
        handlers.settle()
        protocol.flow.resumeProducing()
        conn.clock.advance(30.0)
    assert (
        protocol.state is ConnectionState.CLOSED
        or conn.transport.disconnecting
        or conn.transport.aborted
    )
    conn.lose(Failure(ConnectionDone()))
    assert protocol.state is ConnectionState.CLOSED
    assert conn.clock.getDelayedCalls() == []
    assert conn.factory.stats.active == 0
    assert conn.factory.connections() == []


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=streams, cuts=st.lists(st.integers(0, 400), max_size=8), config=configs)
def test_arbitraryBytesArbitrarilySplit(
    data: bytes, cuts: list[int], config: ServerConfig, logFailures: list[LogEvent]
) -> None:
    del logFailures[:]
    handlers = Handlers()
    conn = connect(handlers, config=config)
    points = sorted({c for c in cuts if c < len(data)} | {0, len(data)})
    for start, end in itertools.pairwise(points):
        conn.send(data[start:end])
    checkStatuses(conn)
    closeEventually(conn, handlers)
    checkStatuses(conn)
    del conn, handlers
    gc.collect()
    assert logFailures == []


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    data=st.binary(max_size=300),
    cuts=st.lists(st.integers(0, 300), max_size=8),
)
def test_randomBytesNeverCrash(
    data: bytes, cuts: list[int], logFailures: list[LogEvent]
) -> None:
    del logFailures[:]
    handlers = Handlers()
    conn = connect(handlers)
    points = sorted({c for c in cuts if c < len(data)} | {0, len(data)})
    for start, end in itertools.pairwise(points):
        conn.send(data[start:end])
    checkStatuses(conn)
    closeEventually(conn, handlers)
    del conn, handlers
    gc.collect()
    assert logFailures == []


class ConnectionMachine(RuleBasedStateMachine):
    """
    One connection driven by interleaved client and server events.  The
    invariants run after every step; teardown checks liveness and that
    nothing is left.
    """

    def __init__(self) -> None:
        super().__init__()
        self.failures: list[LogEvent] = []

        @implementer(ILogObserver)
        def observe(event: LogEvent) -> None:
            if "log_failure" in event:
                self.failures.append(event)

        self.observer = observe
        globalLogPublisher.addObserver(observe)
        self.handlers = Handlers()
        self.conn: Connection | None = None
        self.halfClosed = False
        self.lost = False
        self.writePaused = False

    @initialize(config=configs)
    def start(self, config: ServerConfig) -> None:
        self.conn = connect(self.handlers, config=config)

    @property
    def c(self) -> Connection:
        assert self.conn is not None
        return self.conn

    def alive(self) -> bool:
        return (
            self.conn is not None
            and not self.lost
            and self.c.protocol.state is not ConnectionState.CLOSED
        )

    @precondition(lambda self: self.alive() and not self.halfClosed)
    @rule(data=streams)
    def sendBytes(self, data: bytes) -> None:
        if self.c.transport.disconnecting:
            return  # the transport delivers nothing after its close
        self.c.send(data)

    @rule(seconds=st.sampled_from([0.01, 0.5, 1.0, 5.0, 16.0, 31.0, 61.0]))
    def advanceClock(self, seconds: float) -> None:
        # Also after the connection is gone: nothing may fire then.
        self.c.clock.advance(seconds)

    @precondition(lambda self: self.alive() and not self.writePaused)
    @rule()
    def pauseWriting(self) -> None:
        self.writePaused = True
        self.c.protocol.flow.pauseProducing()

    @precondition(lambda self: self.alive() and self.writePaused)
    @rule()
    def resumeWriting(self) -> None:
        self.writePaused = False
        self.c.protocol.flow.resumeProducing()

    @precondition(lambda self: self.alive() and bool(self.handlers.pending))
    @rule(streamed=st.booleans())
    def answerLater(self, streamed: bool) -> None:
        d = self.handlers.pending.pop(0)
        if streamed:
            producer = SlowProducer()
            self.handlers.producers.append(producer)
            d.callback(Response(200, body=producer))
        else:
            d.callback(Response(200, body=b"late"))

    @precondition(
        lambda self: (
            self.alive() and any(not p.done.called for p in self.handlers.producers)
        )
    )
    @rule(fail=st.booleans())
    def finishProducer(self, fail: bool) -> None:
        for producer in self.handlers.producers:
            if not producer.done.called:
                if fail:
                    producer.done.errback(Failure(OSError("backend gone")))
                else:
                    producer.done.callback(None)
                return

    @precondition(lambda self: self.alive() and not self.halfClosed)
    @rule()
    def halfClose(self) -> None:
        self.halfClosed = True
        if not self.c.transport.disconnecting:
            self.c.protocol.readConnectionLost()

    @precondition(lambda self: self.alive())
    @rule(reset=st.booleans())
    def lose(self, reset: bool) -> None:
        self.lost = True
        reason = Failure(ConnectionLost() if reset else ConnectionDone())
        self.c.lose(reason)

    @invariant()
    def consistent(self) -> None:
        if self.conn is None:
            return
        conn = self.c
        checkStatuses(conn)
        stats = conn.factory.stats
        assert sum(stats.byState().values()) == stats.active
        if conn.protocol.state is ConnectionState.CLOSED:
            assert conn.protocol.state is ConnectionState.CLOSED
            assert conn.clock.getDelayedCalls() == []
            assert stats.active == 0
        else:
            # One lazy timer per connection, never more.
            assert len(conn.clock.getDelayedCalls()) <= 1

    def teardown(self) -> None:
        try:
            if self.conn is not None:
                if (
                    self.writePaused
                    and self.c.protocol.state is not ConnectionState.CLOSED
                ):
                    # A transport stops calling its producer once it is gone.
                    self.writePaused = False
                    self.c.protocol.flow.resumeProducing()
                closeEventually(self.c, self.handlers)
                # A Deferred that failed unhandled is reported when it is
                # collected: collect now, so the report belongs to this run.
                self.conn = None
                self.handlers = Handlers()
                gc.collect()
                assert self.failures == []
        finally:
            globalLogPublisher.removeObserver(self.observer)


ConnectionMachine.TestCase.settings = settings(
    max_examples=STATEFUL_EXAMPLES,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_connectionMachine = ConnectionMachine.TestCase
