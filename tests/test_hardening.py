"""
Hostile and broken clients on StringTransport + Clock (issue 7): slow
clients, floods, the request-smuggling matrix and faults.  Each test ends
with the connection gone, no timer left and no live connection in the
factory; the memory a hostile client costs is checked against a bound.
"""

from __future__ import annotations

import gc
import io
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.logger import LogEvent
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from connserver._connection.factory import OVER_CAPACITY_RESPONSE, ConnectionFactory
from connserver._connection.message import Request, Response
from connserver._http.config import ServerConfig
from connserver._http.limits import (
    DESCRIPTOR_RESERVE,
    connectionBudget,
    maxConnectionsWarning,
    raiseOpenFileLimit,
)
from connserver._http.state import ConnectionState

from ._harness import (
    PEER,
    Connection,
    FakePort,
    TCPStringTransport,
    ZeroFile,
    connect,
    hello,
    openOn,
)

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
KiB = 1024
MiB = 1024 * KiB


# -- helpers -------------------------------------------------------------------


class BoundedTransport(TCPStringTransport):
    """
    A transport with a send buffer of ``limit`` bytes, as a TCP transport
    whose peer does not read: past the limit it pauses its producer (the
    protocol), and ``drain`` lets the peer read and resumes it.
    """

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.writePaused = False
        self.peak = 0

    def write(self, data: bytes) -> None:
        super().write(data)  # type: ignore[no-untyped-call]
        size = len(self.io.getvalue())
        self.peak = max(self.peak, size)
        if size > self.limit and not self.writePaused and self.producer is not None:
            self.writePaused = True
            self.producer.pauseProducing()

    def drain(self) -> bytes:
        data: bytes = self.io.getvalue()
        self.clear()  # type: ignore[no-untyped-call]
        if self.writePaused and self.producer is not None:
            self.writePaused = False
            self.producer.resumeProducing()
        return data


def connectBounded(
    handler: Callable[[Request], Any], limit: int, **config: Any
) -> Connection:
    clock = Clock()
    factory = ConnectionFactory(handler, config=ServerConfig(**config), reactor=clock)
    protocol = factory.buildProtocol(PEER)
    assert protocol is not None
    transport = BoundedTransport(limit)
    protocol.makeConnection(transport)  # type: ignore[no-untyped-call]
    return Connection(protocol, transport, clock, factory)


def finish(conn: Connection, reason: Failure | None = None) -> None:
    """Deliver connectionLost; nothing may be left behind."""
    conn.lose(reason)
    assert conn.clock.getDelayedCalls() == []
    assert conn.factory.stats.active == 0
    assert conn.factory.connections() == []
    assert conn.protocol.state is ConnectionState.CLOSED


def runTimers(conn: Connection, limit: float = 3600.0) -> None:
    """Advance the clock until the protocol has asked the transport to go."""
    step = 0.5
    elapsed = 0.0
    while (
        not (conn.transport.disconnecting or conn.transport.aborted) and elapsed < limit
    ):
        conn.clock.advance(step)
        elapsed += step
    assert conn.transport.disconnecting or conn.transport.aborted


def released(conn: Connection) -> weakref.ref[Any]:
    """A weak reference to the protocol, to check nothing keeps it alive."""
    return weakref.ref(conn.protocol)


def echo(request: Request) -> Deferred[Response]:
    return request.readBody().addCallback(
        lambda body: Response(200, body=cast(BinaryIO, body))
    )


# -- slow clients ------------------------------------------------------------------


def test_trickledHeadGets408AtTheHeadDeadline() -> None:
    """
    Slowloris: one header byte every half second never completes a head.
    The deadline is absolute, so the trickle is answered 408 + close at
    requestHeadTimeout (RFC 9110 §15.5.9), and what it buffers is bounded
    by maxHeadBytes meanwhile.
    """
    conn = connect(hello, requestHeadTimeout=10.0, maxHeadBytes=4 * KiB)
    trickle = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
    sent = 0
    for _ in range(1000):  # bounded: the deadline comes after 20 bytes
        if conn.closing:
            break
        conn.send(trickle[sent : sent + 1])
        sent += 1
        parser = conn.protocol.parser
        assert parser is None or parser.bufferedByteCount <= 4 * KiB
        conn.clock.advance(0.5)
    assert conn.clock.seconds() == 10.0
    [response] = conn.responses()
    assert response.status == 408
    assert response.header(b"connection") == b"close"
    assert conn.protocol.closeReason == "header-timeout"
    assert conn.transport.writeClosed  # lingering close, not an abort
    finish(conn)
    assert conn.factory.stats.closes == {"header-timeout": 1}


def test_trickledHeadOverTheLimitIs431AtOnce() -> None:
    """A fast trickle crosses maxHeadBytes first: 431 without waiting for the timer."""
    conn = connect(hello, requestHeadTimeout=10.0, maxHeadBytes=1 * KiB)
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
    for _ in range(2 * KiB):
        if conn.closing:
            break
        conn.send(b"X-A: b\r\n"[:1])
        conn.clock.advance(0.001)
    assert conn.clock.seconds() < 10.0
    assert [r.status for r in conn.responses()] == [431]
    # Whatever else arrives is discarded (lingering read), not buffered.
    conn.send(b"x" * 100_000)
    assert conn.protocol.parser is None
    finish(conn)


def test_blankLinesBetweenRequestsDoNotHoldTheConnection() -> None:
    """
    RFC 9112 §2.2 lets a server ignore empty lines before a request line;
    a client that sends only those forever is still closed by a timer.
    """
    conn = connect(hello, idleTimeout=5.0, requestHeadTimeout=20.0)
    conn.send(GET)
    conn.take()
    for _ in range(100):
        if conn.closing:
            break
        conn.send(b"\r\n")
        conn.clock.advance(1.0)
    assert conn.closing
    assert conn.clock.seconds() <= 20.0
    assert conn.protocol.closeReason in {"idle-timeout", "header-timeout"}
    finish(conn)


def test_stalledBodyGets408AtBodyTimeout() -> None:
    conn = connect(echo, bodyTimeout=5.0)
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
    for _ in range(10):  # progress resets the inactivity deadline
        conn.send(b"x")
        conn.clock.advance(4.9)
    assert conn.output() == b""
    conn.clock.advance(0.1)
    [response] = conn.responses(b"POST")
    assert response.status == 408
    assert response.header(b"connection") == b"close"
    assert conn.protocol.closeReason == "body-timeout"
    finish(conn)


def test_trickledBodyCostsAtMostMaxBodyBytes() -> None:
    """
    A body read whole is bounded by maxBodyBytes however it arrives: the
    413 comes as soon as the limit is crossed (trickled or not).
    """
    conn = connect(echo, maxBodyBytes=1000, bodyTimeout=5.0)
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(2000):
        if conn.closing:
            break
        conn.send(b"1\r\nx\r\n")
        conn.clock.advance(1.0)
    [response] = conn.responses(b"POST")
    assert response.status == 413
    assert response.header(b"connection") == b"close"
    finish(conn)


def test_unreadBodyDrainIsBoundedByBodyTimeout() -> None:
    """An unread body is drained after the response; a stall there is cut too."""
    conn = connect(hello, bodyTimeout=5.0)
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
    assert [r.status for r in conn.responses(b"POST")] == [200]
    conn.clock.advance(5.0)
    assert conn.closing
    assert conn.protocol.closeReason == "body-timeout"
    finish(conn)


def test_neverReadingClientDownloadingAFileIsBoundedAndCut() -> None:
    """
    A 64 MiB file to a client that never reads: the file producer stops at
    the transport's pause, so the server holds one block beyond the send
    buffer, and sendTimeout aborts the connection.
    """
    body = ZeroFile(64 * MiB)
    conn = connectBounded(
        lambda request: Response(200, body=cast(BinaryIO, body)),
        limit=64 * KiB,
        sendTimeout=30.0,
    )
    transport = conn.transport
    assert isinstance(transport, BoundedTransport)
    conn.send(GET)
    assert transport.writePaused
    assert transport.peak <= 64 * KiB + 512 * KiB
    assert body.position <= 512 * KiB
    conn.clock.advance(29.9)
    assert not transport.aborted
    conn.clock.advance(0.1)
    assert transport.aborted
    assert conn.protocol.closeReason == "send-timeout"
    finish(conn, Failure(ConnectionLost()))
    assert body.closed
    assert conn.factory.stats.closes == {"send-timeout": 1}


def test_slowReaderThatKeepsReadingIsNotCut() -> None:
    """Progress resets sendTimeout: a slow but steady reader gets the whole file."""
    body = ZeroFile(4 * MiB)
    conn = connectBounded(
        lambda request: Response(200, body=cast(BinaryIO, body)),
        limit=64 * KiB,
        sendTimeout=10.0,
    )
    transport = conn.transport
    assert isinstance(transport, BoundedTransport)
    conn.send(GET)
    received = 0
    for _ in range(200):  # bounded: 4 MiB in 64 KiB reads is 64 rounds
        if conn.protocol.state is ConnectionState.WAITING:
            break
        conn.clock.advance(9.0)
        received += len(transport.drain())
        assert not transport.aborted
    assert received > 4 * MiB
    assert body.closed
    finish(conn)


@implementer(IBodyProducer)
class EndlessProducer:
    """A streaming body that writes whenever it is not paused."""

    length = UNKNOWN_LENGTH

    def __init__(self) -> None:
        self.paused = False
        self.stopped = False
        self.consumer: Any = None
        self.written = 0

    def startProducing(self, consumer: Any) -> Deferred[None]:
        self.consumer = consumer
        self.done: Deferred[None] = Deferred()
        self.pump()
        return self.done

    def pump(self) -> None:
        while not self.paused and not self.stopped and self.written < 64 * MiB:
            self.consumer.write(b"z" * 16 * KiB)
            self.written += 16 * KiB

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.pump()

    def stopProducing(self) -> None:
        self.stopped = True


def test_neverReadingClientOfAStreamedBodyIsCut() -> None:
    producer = EndlessProducer()
    conn = connectBounded(
        lambda request: Response(200, body=producer),
        limit=64 * KiB,
        sendTimeout=30.0,
    )
    conn.send(GET)
    assert producer.paused
    assert producer.written <= 64 * KiB + 16 * KiB
    conn.clock.advance(30.0)
    assert conn.transport.aborted
    finish(conn, Failure(ConnectionLost()))
    assert producer.stopped


def test_pipeliningClientThatNeverReadsIsBounded() -> None:
    """
    A client that pipelines small requests and never reads would make the
    server buffer one response per request (7x the bytes it sent) unless
    reading stops while the transport is full.  Once the send buffer is
    full, the server must stop answering (and reading) until it drains.
    """
    conn = connectBounded(hello, limit=16 * KiB, maxRequestsPerConnection=None)
    transport = conn.transport
    assert isinstance(transport, BoundedTransport)
    for _ in range(200):
        conn.send(GET * 50)  # 10,000 requests in 64 KiB reads
    # 16 KiB of ~250-byte responses: the buffer holds a hundred or so, and
    # at most one queue of pipelined requests more may be answered.
    assert transport.peak <= 16 * KiB + 17 * 300
    assert conn.factory.stats.responses < 200
    finish(conn)


# -- floods ----------------------------------------------------------------------


def test_thousandPipelinedRequestsInOneWriteStayBoundedAndInOrder() -> None:
    pending: list[tuple[bytes, Deferred[Response]]] = []
    queueSizes: list[int] = []

    def handler(request: Request) -> Deferred[Response]:
        d: Deferred[Response] = Deferred()
        pending.append((request.target, d))
        return d

    conn = connect(handler, maxPipelinedRequests=8, maxRequestsPerConnection=None)
    conn.send(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % n for n in range(1000)))
    while pending:
        queueSizes.append(len(conn.protocol.pipeline.queue))
        target, d = pending.pop(0)
        d.callback(Response(200, body=target))
    assert max(queueSizes) <= 8
    bodies = []
    data = conn.output()
    for part in data.split(b"HTTP/1.1 200 OK")[1:]:
        bodies.append(part.rsplit(b"\r\n\r\n", 1)[1])
    assert bodies == [b"/%d" % n for n in range(1000)]
    assert conn.factory.stats.responses == 1000
    finish(conn)


@pytest.mark.parametrize(
    ("prefix", "filler", "status"),
    [
        pytest.param(b"GET /", b"a" * 4096, 414, id="rfc9112-3-request-line"),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ", b"b" * 4096, 431, id="field-value"
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: x\r\n", b"X-N: 1\r\n" * 512, 431, id="field-count"
        ),
    ],
)
def test_oversizedHeadIsRefusedAtOnceAndTheRestDiscarded(
    prefix: bytes, filler: bytes, status: int
) -> None:
    """A megabyte-long head costs at most the limit: the error comes as it is crossed."""
    conn = connect(hello)
    conn.send(prefix)
    for _ in range(256):  # 1 MiB
        conn.send(filler)
        parser = conn.protocol.parser
        assert parser is None or parser.bufferedByteCount <= 16 * KiB + len(filler)
    [response] = conn.responses()
    assert response.status == status
    assert response.header(b"connection") == b"close"
    assert conn.protocol.closeReason == "protocol-error"
    finish(conn)


@pytest.mark.parametrize(
    ("head", "status"),
    [
        pytest.param(b"Content-Length: 2000000", 413, id="declared-too-large"),
        pytest.param(
            b"Content-Length: 99999999999999999999999", 400, id="checklist-B11-overflow"
        ),
        pytest.param(b"Transfer-Encoding: chunked", 413, id="chunked-over-limit"),
    ],
)
def test_oversizedBodyIs413WithClose(head: bytes, status: int) -> None:
    conn = connect(echo, maxBodyBytes=1 * MiB)
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n\r\n")
    for _ in range(40):
        if conn.closing:
            break
        conn.send(b"10000\r\n" + b"y" * 0x10000 + b"\r\n")
    [response] = conn.responses(b"POST")
    assert response.status == status
    assert response.header(b"connection") == b"close"
    finish(conn)


@pytest.mark.parametrize(
    "chunks",
    [
        pytest.param(b"F" * 17 + b"\r\n", id="size-over-16-hex-digits"),
        pytest.param(b"0" * 100 + b"5\r\nhello\r\n", id="size-token-over-64-chars"),
        pytest.param(b"5" + b";a=b" * 2000 + b"\r\n", id="endless-extensions"),
        pytest.param(b"5;a=" + b"v" * 10_000, id="endless-extension-value"),
        pytest.param(b"0\r\n" + b"X-T: 1\r\n" * 3000, id="endless-trailers"),
    ],
)
def test_chunkTricksAreRefusedAtOnce(chunks: bytes) -> None:
    conn = connect(echo)
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    conn.send(chunks)
    [response] = conn.responses(b"POST")
    assert response.status in {400, 431}
    assert response.header(b"connection") == b"close"
    finish(conn)


def test_hugeButValidChunkSizeIsStreamedNotAllocated() -> None:
    """
    A 16-hex-digit chunk size is valid (RFC 9112 §7.1): it must not be
    allocated up front; reading it whole is bounded by maxBodyBytes.
    """
    conn = connect(echo, maxBodyBytes=64 * KiB)
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    conn.send(b"7FFFFFFFFFFFFFFF\r\n")
    for _ in range(4):
        conn.send(b"q" * 32 * KiB)
    [response] = conn.responses(b"POST")
    assert response.status == 413
    finish(conn)


def test_connectionFloodWithNothingIdleRefusesUntilTimersFreeSlots() -> None:
    """
    maxConnections slowloris connections and nothing idle to shed: accepting
    pauses, extra accepts (same reactor turn) are refused without a crash,
    and the head deadline frees the slots, which resumes accepting.
    """
    clock = Clock()
    factory = ConnectionFactory(
        hello, ServerConfig(maxConnections=5, requestHeadTimeout=10.0), reactor=clock
    )
    port = FakePort()
    factory.addListeningPort(port)  # type: ignore[arg-type]
    slow = []
    for _ in range(5):
        conn = openOn(factory, clock)
        assert conn is not None
        conn.send(b"GET / HTTP/1.1\r\n")
        slow.append(conn)
    assert not port.reading
    for _ in range(50):
        # Refused: a 503 written at once, the request never read.
        refused = openOn(factory, clock)
        assert refused is not None
        assert refused.output() == OVER_CAPACITY_RESPONSE
        refused.lose()
    assert factory.stats.refused == 50
    clock.advance(10.0)
    for conn in slow:
        assert [r.status for r in conn.responses()] == [408]
        conn.lose()
    assert port.reading
    assert factory.stats.active == 0
    fresh = openOn(factory, clock)
    assert fresh is not None
    fresh.send(GET)
    assert [r.status for r in fresh.responses()] == [200]
    finish(fresh)


# -- request smuggling ----------------------------------------------------------------

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
POST = b"POST /p HTTP/1.1\r\nHost: x\r\n"
CHUNKED = b"Transfer-Encoding: chunked\r\n"
BARE_LF_TE = (
    POST
    + b"Transfer-Encoding: chunked\nX-A: 1\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    + SMUGGLED
)
GARDEN_BARE_LF = b"GET / HTTP/1.1\r\nHost: a\r\nUseless:\n\nGET / HTTP/1.1\r\n\r\n"
GARDEN_BARE_LF_SMUGGLED = b"GET / HTTP/1.1\r\nHost: a\r\nUseless:\n\n" + SMUGGLED

#: (id, request bytes, outcome).  The outcome is either an error status,
#: meaning: that error, Connection: close, and no handler saw the smuggled
#: request; or the exact list of (target, body) pairs the handler must see,
#: meaning: the bytes parse one way only, and the one RFC 9112 defines.
SMUGGLING: list[tuple[str, bytes, int | list[tuple[bytes, bytes]]]] = [
    # CL.TE and TE.CL: both framings present (RFC 9112 §6.1: reject and close).
    (
        "cl-te",
        POST + b"Content-Length: 6\r\n" + CHUNKED + b"\r\n0\r\n\r\nG" + SMUGGLED,
        400,
    ),
    (
        "te-cl",
        POST + CHUNKED + b"Content-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
        400,
    ),
    ("te-cl-zero", POST + CHUNKED + b"Content-Length: 0\r\n\r\n" + SMUGGLED, 400),
    (
        "te-cl-http10",
        b"POST /p HTTP/1.0\r\n" + CHUNKED + b"Content-Length: 5\r\n\r\n0\r\n\r\n",
        400,
    ),
    # TE.TE: obfuscated spellings.  A coding we do not know is 501 when
    # chunked follows it, 400 when it is last (RFC 9112 §6.3 ¶4).
    (
        "te-xchunked",
        POST + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    (
        "te-chunked-comma-chunked",
        POST + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    (
        "te-duplicated-lines",
        POST + CHUNKED + CHUNKED + b"\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    (
        "te-chunked-then-identity",
        POST + CHUNKED + b"Transfer-Encoding: identity\r\n\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    ("te-identity", POST + b"Transfer-Encoding: identity\r\n\r\n" + SMUGGLED, 400),
    ("te-empty", POST + b"Transfer-Encoding: \r\n\r\n" + SMUGGLED, 400),
    ("te-comma-only", POST + b"Transfer-Encoding: ,\r\n\r\n" + SMUGGLED, 400),
    (
        "te-gzip-chunked",
        POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        501,
    ),
    (
        "te-chunked-gzip",
        POST + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    (
        "te-vertical-tab",
        POST + b"Transfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    (
        "te-form-feed",
        POST + b"Transfer-Encoding:\x0cchunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    (
        "te-nul",
        POST + b"Transfer-Encoding: chunked\x00\r\n\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    (
        "te-space-before-colon",
        POST + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    (
        "te-obs-fold",
        POST + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    (
        "te-folded-into-other",
        POST + b"X-A: 1\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    ("te-http10", b"POST /p HTTP/1.0\r\n" + CHUNKED + b"\r\n0\r\n\r\n" + SMUGGLED, 400),
    (
        "te-quoted",
        POST + b'Transfer-Encoding: "chunked"\r\n\r\n0\r\n\r\n' + SMUGGLED,
        400,
    ),
    # Spellings RFC 9110 defines one way: OWS is not part of the value
    # (§5.5), codings are case-insensitive (§10.1.4).  Parsed as chunked; the
    # next request is a real pipelined request, and it is the only other one
    # answered.
    (
        "te-leading-space",
        POST
        + b"Transfer-Encoding:   chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        + SMUGGLED,
        [(b"/p", b"hello"), (b"/smuggled", b"")],
    ),
    (
        "te-trailing-space",
        POST
        + b"Transfer-Encoding: chunked  \r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        + SMUGGLED,
        [(b"/p", b"hello"), (b"/smuggled", b"")],
    ),
    (
        "te-tab",
        POST
        + b"Transfer-Encoding:\tchunked\t\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        + SMUGGLED,
        [(b"/p", b"hello"), (b"/smuggled", b"")],
    ),
    (
        "te-capitalised",
        POST + b"Transfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
        [(b"/p", b"hello"), (b"/smuggled", b"")],
    ),
    (
        "te-name-case",
        POST + b"TRANSFER-ENCODING: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
        [(b"/p", b"hello"), (b"/smuggled", b"")],
    ),
    # A bare LF ending a head line (RFC 9112 §2.2 MAY) is refused by default:
    # a front end that forwards it inside a field value sees one request
    # where a lenient server sees two.  With allowBareLf these are parsed as
    # BARE_LF_LENIENT says.
    ("te-bare-lf-line", BARE_LF_TE, 400),
    # HTTP Garden's pair, verbatim (the second request has no Host, so a
    # lenient server answers 200 then 400), and with a second request that
    # a lenient server would answer.
    ("garden-bare-lf-empty-field", GARDEN_BARE_LF, 400),
    ("garden-bare-lf-smuggled", GARDEN_BARE_LF_SMUGGLED, 400),
    ("bare-lf-request-line", b"GET /a HTTP/1.1\nHost: x\r\n\r\n" + SMUGGLED, 400),
    ("bare-lf-field-line", POST + b"X-A: 1\n\r\n" + SMUGGLED, 400),
    ("bare-lf-end-of-head", POST + b"X-A: 1\r\n\n" + SMUGGLED, 400),
    ("bare-lf-trailer", POST + CHUNKED + b"\r\n0\r\nX: 1\n\r\n" + SMUGGLED, 400),
    ("bare-lf-end-of-trailers", POST + CHUNKED + b"\r\n0\r\n\n" + SMUGGLED, 400),
    # Not Transfer-Encoding at all: no body, so the would-be chunk is the
    # next "request" and is refused; nothing is smuggled through.
    (
        "te-underscore",
        POST + b"Transfer_Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    (
        "te-misspelled",
        POST + b"Transfer-Encodin: chunked\r\n\r\n" + SMUGGLED,
        [(b"/p", b""), (b"/smuggled", b"")],
    ),
    # Content-Length tricks (RFC 9112 §6.3 ¶5: invalid is 400 and close).
    ("cl-plus", POST + b"Content-Length: +5\r\n\r\nhello" + SMUGGLED, 400),
    ("cl-hex", POST + b"Content-Length: 0x5\r\n\r\nhello" + SMUGGLED, 400),
    ("cl-underscore", POST + b"Content-Length: 1_0\r\n\r\nhelloworld" + SMUGGLED, 400),
    ("cl-negative", POST + b"Content-Length: -5\r\n\r\nhello" + SMUGGLED, 400),
    ("cl-two-numbers", POST + b"Content-Length: 5 5\r\n\r\nhello" + SMUGGLED, 400),
    ("cl-list-same", POST + b"Content-Length: 5, 5\r\n\r\nhello" + SMUGGLED, 400),
    (
        "cl-two-lines-differ",
        POST + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!" + SMUGGLED,
        400,
    ),
    (
        "cl-two-lines-same",
        POST + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello" + SMUGGLED,
        400,
    ),
    ("cl-empty", POST + b"Content-Length: \r\n\r\n" + SMUGGLED, 400),
    ("cl-decimal", POST + b"Content-Length: 5.0\r\n\r\nhello" + SMUGGLED, 400),
    (
        "cl-unicode-digit",
        POST + "Content-Length: \u0665".encode() + b"\r\n\r\nhello" + SMUGGLED,
        400,
    ),
    ("cl-vertical-tab", POST + b"Content-Length:\x0b5\r\n\r\nhello" + SMUGGLED, 400),
    ("cl-obs-fold", POST + b"Content-Length:\r\n 5\r\n\r\nhello" + SMUGGLED, 400),
    (
        "cl-leading-zeros",
        POST + b"Content-Length: 0005\r\n\r\nhello" + SMUGGLED,
        [(b"/p", b"hello"), (b"/smuggled", b"")],
    ),
    (
        "cl-ows",
        POST + b"Content-Length: \t5 \r\n\r\nhello" + SMUGGLED,
        [(b"/p", b"hello"), (b"/smuggled", b"")],
    ),
    # Chunk-size tricks (RFC 9112 §7.1: chunk-size = 1*HEXDIG).
    ("chunk-0x", POST + CHUNKED + b"\r\n0x5\r\nhello\r\n0\r\n\r\n" + SMUGGLED, 400),
    (
        "chunk-space-semicolon",
        POST + CHUNKED + b"\r\n5 ;\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    (
        "chunk-trailing-space",
        POST + CHUNKED + b"\r\n5 \r\nhello\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    (
        "chunk-negative",
        POST + CHUNKED + b"\r\n-5\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    ("chunk-plus", POST + CHUNKED + b"\r\n+5\r\nhello\r\n0\r\n\r\n" + SMUGGLED, 400),
    (
        "chunk-huge",
        POST + CHUNKED + b"\r\n" + b"F" * 20 + b"\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    (
        "chunk-size-bare-lf",
        POST + CHUNKED + b"\r\n5\nhello\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    (
        "chunk-data-bare-lf",
        POST + CHUNKED + b"\r\n5\r\nhello\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    ("chunk-data-no-crlf", POST + CHUNKED + b"\r\n5\r\nhello0\r\n\r\n" + SMUGGLED, 400),
    (
        "chunk-data-longer",
        POST + CHUNKED + b"\r\n3\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    (
        "chunk-data-cr-only",
        POST + CHUNKED + b"\r\n5\r\nhello\r0\r\n\r\n" + SMUGGLED,
        400,
    ),
    (
        "chunk-empty-size",
        POST + CHUNKED + b"\r\n\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    (
        "chunk-size-nul",
        POST + CHUNKED + b"\r\n5\x00\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    (
        "trailer-content-length",
        POST + CHUNKED + b"\r\n0\r\nContent-Length: 5\r\n\r\nhello" + SMUGGLED,
        400,
    ),
    ("trailer-bare-cr", POST + CHUNKED + b"\r\n0\r\nX: a\rb\r\n\r\n" + SMUGGLED, 400),
    (
        "chunk-extension-ok",
        POST + CHUNKED + b"\r\n5 ; a = b\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
        [(b"/p", b"hello"), (b"/smuggled", b"")],
    ),
    (
        "chunk-leading-zeros",
        POST + CHUNKED + b"\r\n0005\r\nhello\r\n000\r\n\r\n" + SMUGGLED,
        [(b"/p", b"hello"), (b"/smuggled", b"")],
    ),
    (
        "chunk-uppercase-hex",
        POST + CHUNKED + b"\r\nA\r\n0123456789\r\n0\r\n\r\n" + SMUGGLED,
        [(b"/p", b"0123456789"), (b"/smuggled", b"")],
    ),
    # NUL, CR and LF in names and values (RFC 9110 §5.5, RFC 9112 §2.2).
    ("nul-in-name", POST + b"X\x00A: 1\r\n\r\n" + SMUGGLED, 400),
    ("nul-in-value", POST + b"X-A: 1\x002\r\n\r\n" + SMUGGLED, 400),
    ("cr-in-value", POST + b"X-A: 1\rContent-Length: 5\r\n\r\nhello" + SMUGGLED, 400),
    ("cr-in-name", POST + b"X\rA: 1\r\n\r\n" + SMUGGLED, 400),
    ("lf-in-name", POST + b"X\nA: 1\r\n\r\n" + SMUGGLED, 400),
    ("cr-in-target", b"GET /a\rb HTTP/1.1\r\nHost: x\r\n\r\n" + SMUGGLED, 400),
    ("nul-in-target", b"GET /a\x00b HTTP/1.1\r\nHost: x\r\n\r\n" + SMUGGLED, 400),
    (
        "space-in-target",
        b"GET /a HTTP/1.1 /b HTTP/1.1\r\nHost: x\r\n\r\n" + SMUGGLED,
        400,
    ),
    ("obs-fold", POST + b"X-A: 1\r\n 2\r\n\r\n" + SMUGGLED, 400),
    (
        "whitespace-before-first-field",
        POST[:-9] + b"\r\n Host: x\r\n\r\n" + SMUGGLED,
        400,
    ),
    ("two-hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + SMUGGLED, 400),
    ("empty-field-name", POST + b": 1\r\n\r\n" + SMUGGLED, 400),
    # A request hidden in a body is body, whatever it looks like.
    (
        "request-in-cl-body",
        POST + b"Content-Length: %d\r\n\r\n" % len(SMUGGLED) + SMUGGLED,
        [(b"/p", SMUGGLED)],
    ),
    (
        "request-in-chunk",
        POST + CHUNKED + b"\r\n%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n",
        [(b"/p", SMUGGLED)],
    ),
    (
        "request-in-get-body",
        b"GET /g HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED)
        + SMUGGLED,
        [(b"/g", SMUGGLED)],
    ),
]


@pytest.mark.parametrize(
    ("data", "outcome"),
    [pytest.param(data, outcome, id=name) for name, data, outcome in SMUGGLING],
)
@pytest.mark.parametrize("split", ["whole", "byte-by-byte"])
def test_smuggling(
    data: bytes, outcome: int | list[tuple[bytes, bytes]], split: str
) -> None:
    seen: list[tuple[bytes, bytes]] = []

    def handler(request: Request) -> Deferred[Response]:
        def answer(body: bytes) -> Response:
            seen.append((request.target, body))
            return Response(200, body=b"ok:" + request.target)

        return request.readBody().addCallback(answer)

    conn = connect(handler)
    if split == "whole":
        conn.send(data)
    else:
        conn.sendByteByByte(data)
    out = conn.output()
    if isinstance(outcome, int):
        assert b"/smuggled" not in [target for target, _ in seen]
        assert b"ok:/smuggled" not in out
        statuses = [r.status for r in conn.responses(b"POST", b"GET")]
        assert statuses[-1] == outcome
        assert all(status == 200 for status in statuses[:-1])
        assert conn.responses(b"POST", b"GET")[-1].header(b"connection") == b"close"
        assert conn.closing
        # Anything after the error is discarded, never parsed.
        conn.send(SMUGGLED)
        assert conn.output() == out
    else:
        assert seen == outcome
        statuses = [r.status for r in conn.responses(b"POST", b"GET")]
        assert statuses == [200] * len(outcome)
        assert out.count(b"HTTP/1.1 ") == len(outcome)
        assert not conn.closing
    finish(conn)


@pytest.mark.parametrize("split", ["whole", "byte-by-byte"])
def test_bareLFIsReadAsALineEndOnlyWithAllowBareLF(split: str) -> None:
    """
    allowBareLf restores the lenient reading (RFC 9112 §2.2 MAY), and with
    it the two readings HTTP Garden's pair relies on: the default refuses it.
    """
    cases: list[tuple[bytes, list[tuple[bytes, bytes]], list[int]]] = [
        (BARE_LF_TE, [(b"/p", b"hello"), (b"/smuggled", b"")], [200, 200]),
        (GARDEN_BARE_LF_SMUGGLED, [(b"/", b""), (b"/smuggled", b"")], [200, 200]),
        # The verbatim pair's second request has no Host: 400, but answered.
        (GARDEN_BARE_LF, [(b"/", b"")], [200, 400]),
    ]
    for data, expected, statuses in cases:
        seen: list[tuple[bytes, bytes]] = []

        def handler(
            request: Request, seen: list[tuple[bytes, bytes]] = seen
        ) -> Deferred[Response]:
            def answer(body: bytes) -> Response:
                seen.append((request.target, body))
                return Response(200, body=b"ok")

            return request.readBody().addCallback(answer)

        for allow in (True, False):
            del seen[:]
            conn = connect(handler, allowBareLf=allow)
            if split == "whole":
                conn.send(data)
            else:
                conn.sendByteByByte(data)
            got = [r.status for r in conn.responses(b"POST", b"GET")]
            if allow:
                assert (seen, got) == (expected, statuses)
            else:
                assert (seen, got) == ([], [400])
                assert conn.closing
            finish(conn)


def test_unreadBodyWithHiddenRequestIsDrainedNotAnswered() -> None:
    """Checklist C12: a handler that ignores the body; the body is not a request."""
    targets: list[bytes] = []

    def handler(request: Request) -> Response:
        targets.append(request.target)
        return Response(200, body=b"ok")

    conn = connect(handler)
    conn.send(
        POST
        + b"Content-Length: %d\r\n\r\n" % len(SMUGGLED)
        + SMUGGLED
        + b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert targets == [b"/p", b"/next"]
    finish(conn)


def test_unreadChunkedBodyWithHiddenRequestCloses() -> None:
    targets: list[bytes] = []

    def handler(request: Request) -> Response:
        targets.append(request.target)
        return Response(200, body=b"ok")

    conn = connect(handler)
    conn.send(
        POST + CHUNKED + b"\r\n%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n"
    )
    assert targets == [b"/p"]
    assert conn.closing
    assert conn.responses(b"POST")[0].header(b"connection") == b"close"
    finish(conn)


def test_earlyErrorWithExpectContinueNeverParsesTheBody() -> None:
    """
    RFC 9110 §10.1.1: a 413 instead of 100 means the client may or may not
    send the body; the server closes, so a body that looks like a request is
    never read as one.
    """
    targets: list[bytes] = []

    def handler(request: Request) -> Deferred[Response]:
        targets.append(request.target)
        return echo(request)

    conn = connect(handler, maxBodyBytes=10)
    conn.send(
        POST + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED)
    )
    conn.send(SMUGGLED)
    assert targets == [b"/p"]
    [response] = conn.responses(b"POST")
    assert response.status == 413
    assert response.informational == []
    assert conn.closing
    finish(conn)


# -- faults ------------------------------------------------------------------------


def test_resetMidRequestBodyFailsTheReaderAndLeavesNothing() -> None:
    failures: list[Failure] = []

    def handler(request: Request) -> Deferred[Response]:
        def failed(failure: Failure) -> Response:
            failures.append(failure)
            return Response(500)

        return request.readBody().addCallbacks(lambda body: Response(200), failed)

    conn = connect(handler)
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
    ref = released(conn)
    finish(conn, Failure(ConnectionLost()))
    assert len(failures) == 1
    assert conn.output() == b""
    assert conn.protocol.closeReason == "peer-reset"
    assert conn.factory.stats.closes == {"peer-reset": 1}
    del conn
    gc.collect()
    assert ref() is None


def test_resetMidResponseStopsTheProducerAndClosesTheFile(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"f" * (2 * MiB))
    opened: list[Any] = []

    def handler(request: Request) -> Response:
        f = path.open("rb")
        opened.append(f)
        return Response(200, body=f)

    conn = connectBounded(handler, limit=64 * KiB)
    conn.send(GET)
    assert conn.transport.producer is not None
    finish(conn, Failure(ConnectionLost()))
    assert opened[0].closed
    assert conn.factory.stats.closes == {"peer-reset": 1}


def test_resetMidStreamedResponseStopsTheProducer() -> None:
    producer = EndlessProducer()
    conn = connectBounded(lambda request: Response(200, body=producer), limit=64 * KiB)
    conn.send(GET)
    finish(conn, Failure(ConnectionLost()))
    assert producer.stopped


def test_handlerRaisingGives500AndLeavesNothing(logFailures: list[LogEvent]) -> None:
    def handler(request: Request) -> Response:
        raise ZeroDivisionError("boom")

    conn = connect(handler)
    conn.send(GET + GET)
    [response] = conn.responses()
    assert response.status == 500
    assert response.header(b"connection") == b"close"
    assert conn.protocol.closeReason == "handler-error"
    assert len(logFailures) == 1
    runTimers(conn)
    finish(conn)


@pytest.mark.parametrize(
    "result",
    [
        pytest.param(lambda: None, id="none"),
        pytest.param(lambda: b"bytes", id="bytes"),
        pytest.param(lambda: Response(99), id="1xx-final"),
        pytest.param(lambda: Response(200, {b"X": b"a\nb"}), id="lf-in-field"),
        pytest.param(lambda: Response(200, {b"X Y": b"1"}), id="bad-field-name"),
        pytest.param(
            lambda: Response(200, {b"Content-Length": b"-1"}), id="bad-content-length"
        ),
    ],
)
def test_handlerReturningNonsenseGives500(
    result: Callable[[], Any], logFailures: list[LogEvent]
) -> None:
    conn = connect(lambda request: result())
    conn.send(GET)
    assert [r.status for r in conn.responses()] == [500]
    assert b"\nb" not in conn.output()
    finish(conn)


def test_handlerReadingTheBodyTwiceGives500(logFailures: list[LogEvent]) -> None:
    first: list[Deferred[bytes]] = []

    def handler(request: Request) -> Deferred[Response]:
        first.append(request.readBody())
        return echo(request)

    conn = connect(handler)
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab")
    assert [r.status for r in conn.responses(b"POST")] == [500]
    finish(conn)
    # The first read is the handler's to handle (it sees the body, or the
    # connection's end as a failure).
    results: list[object] = []
    first[0].addBoth(results.append)
    assert results in ([b"ab"], []) or isinstance(results[0], Failure)


def test_deferredThatNeverFiresIsClosedByDrain() -> None:
    never: Deferred[Response] = Deferred()
    clock = Clock()
    factory = ConnectionFactory(lambda request: never, ServerConfig(), reactor=clock)
    conn = openOn(factory, clock)
    assert conn is not None
    conn.send(GET)
    done = factory.drain(5.0)
    fired: list[object] = []
    done.addCallback(fired.append)
    clock.advance(4.9)
    assert not conn.transport.aborted
    clock.advance(0.1)
    assert conn.transport.aborted
    assert conn.protocol.closeReason == "drain-timeout"
    finish(conn, Failure(ConnectionLost()))
    assert fired == [None]
    # The late answer is dropped without a write or an error.
    never.callback(Response(200, body=b"late"))
    assert conn.output() == b""


def test_pendingHandlerIsCancelledWhenTheConnectionGoes() -> None:
    """
    A handler waiting on something slow (a long poll, a backend call) should
    learn that nobody will read its answer: the protocol cancels its
    Deferred, as twisted.web's Request.notifyFinish lets a resource do.
    Otherwise the Deferred's callbacks keep the protocol alive.
    """
    cancelled: list[Deferred[Response]] = []

    def handler(request: Request) -> Deferred[Response]:
        return Deferred(cancelled.append)

    conn = connect(handler)
    conn.send(GET)
    ref = released(conn)
    finish(conn, Failure(ConnectionLost()))
    assert len(cancelled) == 1
    # The CancelledError is the protocol's to swallow: no 500, no log.
    assert conn.output() == b""
    del conn
    gc.collect()
    assert ref() is None


@implementer(IBodyProducer)
class FailingProducer:
    """Writes some bytes, then fails (a backend that went away)."""

    def __init__(self, length: int | object) -> None:
        self.length = length
        self.stopped = False

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(b"partial")
        self.done: Deferred[None] = Deferred()
        return self.done

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        self.stopped = True


@pytest.mark.parametrize(
    "length",
    [pytest.param(100, id="known"), pytest.param(UNKNOWN_LENGTH, id="chunked")],
)
def test_producerFailingLaterAbortsWithoutATerminator(
    length: int | object, logFailures: list[LogEvent]
) -> None:
    producer = FailingProducer(length)
    conn = connect(lambda request: Response(200, body=producer))
    conn.send(GET + GET)
    producer.done.errback(OSError("backend gone"))
    assert conn.transport.aborted
    assert conn.protocol.closeReason == "response-error"
    # Never a well-formed end: no last chunk, no padding.
    assert not conn.output().endswith(b"0\r\n\r\n")
    assert conn.output().count(b"HTTP/1.1 ") == 1
    finish(conn, Failure(ConnectionLost()))


def test_fileTruncatedMidSendAborts(tmp_path: Path) -> None:
    """A file that shrinks under us yields fewer bytes than its length: abort."""
    path = tmp_path / "shrinking"
    path.write_bytes(b"s" * (2 * MiB))
    f = path.open("rb")
    conn = connectBounded(lambda request: Response(200, body=f), limit=64 * KiB)
    transport = conn.transport
    assert isinstance(transport, BoundedTransport)
    conn.send(GET)
    assert transport.writePaused
    path.write_bytes(b"")  # truncated while the client is reading
    transport.drain()
    assert transport.aborted
    assert conn.protocol.closeReason == "response-error"
    assert f.closed
    finish(conn, Failure(ConnectionLost()))


def test_fileDeletedMidSendIsStillSentWhole(tmp_path: Path) -> None:
    """On POSIX an open file outlives its name: the response completes."""
    path = tmp_path / "deleted"
    path.write_bytes(b"d" * (1 * MiB))
    f = path.open("rb")
    conn = connectBounded(lambda request: Response(200, body=f), limit=64 * KiB)
    transport = conn.transport
    assert isinstance(transport, BoundedTransport)
    conn.send(GET)
    path.unlink()
    received = b""
    for _ in range(100):  # bounded: 1 MiB in 64 KiB reads is 16 rounds
        if conn.protocol.state is ConnectionState.WAITING:
            break
        received += transport.drain()
        assert not transport.aborted
    received += transport.drain()
    assert received.endswith(b"d" * 1000)
    assert f.closed
    finish(conn)


class ErrorFile(io.RawIOBase):
    """A file whose reads start failing (a disk error, an NFS server gone)."""

    def __init__(self) -> None:
        self.reads = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        self.reads += 1
        if self.reads > 1:
            raise OSError(5, "Input/output error")
        return b"e" * 1000


def test_fileReadErrorMidSendAborts(logFailures: list[LogEvent]) -> None:
    body = ErrorFile()
    conn = connect(
        lambda request: Response(
            200, {b"Content-Length": b"10000"}, cast(BinaryIO, body)
        )
    )
    conn.send(GET)
    assert conn.transport.aborted
    assert conn.protocol.closeReason == "response-error"
    finish(conn, Failure(ConnectionLost()))
    assert body.closed


def test_observerAndHandlerFaultsDoNotLeakAcrossConnections(
    logFailures: list[LogEvent],
) -> None:
    """Hundreds of faulty exchanges on one factory leave it empty and timer-free."""
    clock = Clock()
    calls = 0

    def handler(request: Request) -> Response:
        nonlocal calls
        calls += 1
        if calls % 3 == 0:
            raise RuntimeError("every third")
        return Response(200, body=b"ok")

    def observer(record: object) -> None:
        raise RuntimeError("observer")

    factory = ConnectionFactory(handler, ServerConfig(), reactor=clock)
    factory.requestObservers.append(observer)
    conns = []
    for n in range(300):
        conn = openOn(factory, clock)
        assert conn is not None
        conn.send(GET if n % 2 else GET + b"GET /x HTTP/1.1\r\n")
        if n % 5 == 0:
            conn.lose(Failure(ConnectionLost()))
        conns.append(conn)
    for _ in range(3600):
        clock.advance(1.0)
    for conn in conns:
        if conn.protocol.state is not ConnectionState.CLOSED:
            assert conn.transport.disconnecting or conn.transport.aborted
            conn.lose()
    assert factory.connections() == []
    assert factory.stats.active == 0
    assert clock.getDelayedCalls() == []
    assert sum(factory.stats.closes.values()) == 300


def test_resumeAfterConnectionLostLeavesNoTimer() -> None:
    """
    A close decided while writes are paused waits for the transport to
    drain; if the connection is lost first, a late resume must do nothing.
    """
    conn = connect(hello, requestHeadTimeout=5.0)
    conn.protocol.flow.pauseProducing()
    conn.clock.advance(5.0)  # the head deadline: a silent close, deferred
    conn.lose()
    conn.protocol.flow.resumeProducing()
    conn.protocol.flow.pauseProducing()
    assert conn.clock.getDelayedCalls() == []
    assert conn.protocol.state is ConnectionState.CLOSED


def test_pushProducerInterfaceIsHonoured() -> None:
    """The protocol registers as a streaming producer on its transport."""
    conn = connect(hello)
    assert IPushProducer.providedBy(conn.transport.producer)
    assert conn.transport.streaming
    finish(conn, Failure(ConnectionDone()))


# -- descriptor limits (connserver._http.limits) --------------------------------------------


@pytest.fixture
def restoreFileLimit() -> Iterator[tuple[int, int]]:
    import resource

    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        yield before
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


def test_raiseOpenFileLimitGoesToTheHardLimitAndNeverDown(
    restoreFileLimit: tuple[int, int],
) -> None:
    import resource

    soft, hard = restoreFileLimit
    lowered = min(soft, 256)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    assert raiseOpenFileLimit(lowered - 10) == (lowered, hard)
    raised = raiseOpenFileLimit(lowered + 10)
    assert raised is not None and raised[0] == min(lowered + 10, hard)
    full = raiseOpenFileLimit()
    assert full is not None
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == full
    assert full[0] == hard or hard == resource.RLIM_INFINITY


def test_maxConnectionsWarningWhenItDoesNotFitTheDescriptorLimit(
    restoreFileLimit: tuple[int, int],
) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, restoreFileLimit[1]))
    assert connectionBudget() == 1024 - DESCRIPTOR_RESERVE
    assert connectionBudget(descriptorsPerConnection=2) == (1024 - 64) // 2
    assert maxConnectionsWarning(900) is None
    warning = maxConnectionsWarning(4096)
    assert warning is not None and "960" in warning
    assert maxConnectionsWarning(None) is not None
    assert maxConnectionsWarning(900, descriptorsPerConnection=2) is not None
