"""
HTTPServerProtocol on StringTransport + Clock: exact wire behaviour,
persistence end to end (RFC 9112 §9), pipelining, errors and 100-continue.
Timers are in test_protocol_timers.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from connserver._connection.factory import ConnectionFactory
from connserver._connection.message import Request, Response
from connserver._http.config import ServerConfig
from connserver._http.errors import ProtocolError
from connserver._http.state import ConnectionState

from ._harness import PEER, TCPStringTransport, connect, hello, parseResponses

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def test_getKeepAliveExactBytes() -> None:
    clock = Clock()
    clock.advance(1_700_000_000)  # a fixed Date
    conn = connect(hello, clock=clock)
    conn.send(GET)
    assert conn.take() == (
        b"HTTP/1.1 200 OK\r\n"
        b"Date: Tue, 14 Nov 2023 22:13:20 GMT\r\n"
        b"Server: connserver\r\n"
        b"Content-Type: text/plain\r\n"
        b"Content-Length: 130\r\n"
        # The idle timeout advertised (keepAliveHint, the default).
        b"Connection: keep-alive\r\n"
        b"Keep-Alive: timeout=75\r\n"
        b"\r\n" + b"x" * 130
    )
    assert conn.protocol.state is ConnectionState.WAITING
    assert not conn.closing
    conn.send(GET)
    assert [r.status for r in conn.responses()] == [200]
    assert conn.factory.stats.responses == 2


def test_byteByByteRequest() -> None:
    conn = connect(hello)
    conn.sendByteByByte(GET + GET)
    assert [r.status for r in conn.responses()] == [200, 200]


def test_http10GetsHttp11StatusLine() -> None:
    """RFC 9110 §6.2 / checklist A7: respond with our highest version."""
    conn = connect(hello)
    conn.send(b"GET / HTTP/1.0\r\n\r\n")
    assert conn.output().startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Connection: close\r\n" in conn.output()
    assert conn.closing
    assert conn.protocol.closeReason == "http10-default"


# -- persistence end to end (RFC 9112 §9.3, §9.6) --------------------------


@pytest.mark.parametrize(
    "connectionLines",
    [
        pytest.param([b"keep-alive, close"], id="rfc9112-9.3-keep-alive-close"),
        pytest.param([b"close,foo"], id="rfc9112-9.3-close-foo"),
        pytest.param([b"CLOSE"], id="rfc9110-7.6.1-uppercase"),
        pytest.param([b"foo", b"close"], id="rfc9110-5.3-second-field-line"),
        pytest.param([b"  close "], id="rfc9110-5.6.3-ows"),
        pytest.param([b", close ,"], id="rfc9110-5.6.1-empty-elements"),
    ],
)
def test_clientCloseClosesAndPipelinedIsDiscarded(connectionLines: list[bytes]) -> None:
    """Checklist C5 + C23: one response with close; the next request is never answered."""
    calls: list[bytes] = []

    def handler(request: Request) -> Response:
        calls.append(request.target)
        return hello(request)

    conn = connect(handler)
    fields = b"".join(b"Connection: " + line + b"\r\n" for line in connectionLines)
    conn.send(
        b"GET /a HTTP/1.1\r\nHost: x\r\n"
        + fields
        + b"\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    responses = conn.responses()
    assert len(responses) == 1
    assert responses[0].header(b"connection") == b"close"
    assert calls == [b"/a"]
    assert conn.transport.writeClosed
    assert conn.protocol.closeReason == "client-close"


def test_enclosedIsNotClose() -> None:
    conn = connect(hello)
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: enclosed\r\n\r\n")
    assert conn.responses()[0].header(b"connection") == b"keep-alive"
    assert not conn.closing


@pytest.mark.parametrize(
    "connection",
    [
        pytest.param(b"keep-alive", id="rfc9112-9.3-http10-keep-alive"),
        pytest.param(b"Keep-Alive, X-Foo", id="rfc9112-9.3-http10-keep-alive-in-list"),
    ],
)
def test_http10KeepAliveEchoed(connection: bytes) -> None:
    """Checklist C7, C8: echo keep-alive with Keep-Alive: timeout, max."""
    conn = connect(hello)
    request = b"GET / HTTP/1.0\r\nConnection: " + connection + b"\r\n\r\n"
    conn.send(request)
    out = conn.take()
    assert b"\r\nConnection: keep-alive\r\n" in out
    assert b"\r\nKeep-Alive: timeout=75, max=999\r\n" in out
    assert b"\r\nContent-Length: 130\r\n" in out
    assert not conn.closing
    conn.send(request)
    assert b"\r\nKeep-Alive: timeout=75, max=998\r\n" in conn.take()
    assert conn.protocol.state is ConnectionState.WAITING


@implementer(IBodyProducer)
class ListProducer:
    """Writes its parts on start; known or unknown length."""

    def __init__(self, parts: list[bytes], length: object = UNKNOWN_LENGTH) -> None:
        self.parts = parts
        self.length = length
        self.stopped = False
        self.paused = 0

    def startProducing(self, consumer: object) -> Deferred[None]:
        for part in self.parts:
            consumer.write(part)  # type: ignore[attr-defined]
        return succeed(None)

    def pauseProducing(self) -> None:
        self.paused += 1

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        self.stopped = True


def streamed(request: Request) -> Response:
    return Response(200, body=ListProducer([b"hello ", b"world"]))


def test_http10KeepAliveUnknownLengthCloses() -> None:
    """Checklist C11/B3/B17: HTTP/1.0 + unknown length → close-delimited, no TE."""
    conn = connect(streamed)
    conn.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    out = conn.output()
    assert b"Transfer-Encoding" not in out
    assert b"Content-Length" not in out
    assert b"\r\nConnection: close\r\n" in out
    assert out.endswith(b"\r\n\r\nhello world")
    assert conn.closing
    assert conn.protocol.closeReason == "unknown-length-http10"


def test_http11UnknownLengthIsChunkedAndPersists() -> None:
    conn = connect(streamed)
    conn.send(GET)
    out = conn.output()
    assert b"\r\nTransfer-Encoding: chunked\r\n" in out
    assert out.endswith(b"6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n")
    assert conn.responses()[0].body == b"hello world"
    assert not conn.closing


def test_handlerCloseWithPipelinedRequest() -> None:
    """Checklist C24: the handler's close ends the connection; nothing more is processed."""
    calls: list[bytes] = []

    def handler(request: Request) -> Response:
        calls.append(request.target)
        return Response(200, {b"Connection": b"close"}, b"bye")

    conn = connect(handler)
    conn.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    responses = conn.responses()
    assert len(responses) == 1
    assert responses[0].header(b"connection") == b"close"
    assert calls == [b"/a"]
    assert conn.protocol.closeReason == "handler-close"
    assert conn.output().count(b"HTTP/1.1") == 1


def test_maxRequestsBoundary() -> None:
    """Checklist C10: the last allowed response says close."""
    conn = connect(hello, maxRequestsPerConnection=3)
    conn.send(GET * 2)
    assert [r.header(b"connection") for r in conn.responses()] == [
        b"keep-alive",
        b"keep-alive",
    ]
    assert not conn.closing
    conn.send(GET + GET)
    responses = conn.responses()
    assert len(responses) == 3
    assert responses[2].header(b"connection") == b"close"
    assert conn.protocol.closeReason == "max-requests"


def test_maxConnectionAge() -> None:
    conn = connect(hello, maxConnectionAge=10.0)
    conn.send(GET)
    conn.clock.advance(10)
    conn.send(GET)
    responses = conn.responses()
    assert [r.header(b"connection") for r in responses] == [b"keep-alive", b"close"]
    # A closing response advertises no idle timeout.
    assert [r.header(b"keep-alive") for r in responses] == [b"timeout=75", None]
    assert conn.protocol.closeReason == "max-age"


def test_keepAliveDisabled() -> None:
    conn = connect(hello, keepAlive=False)
    conn.send(GET)
    assert conn.responses()[0].header(b"connection") == b"close"
    assert conn.protocol.closeReason == "keepalive-disabled"


def test_proxyConnectionAndKeepAliveFieldDoNotChangePersistence() -> None:
    """Checklist H4/H6: connection-specific fields without their option are ignored."""
    conn = connect(hello)
    conn.send(
        b"GET / HTTP/1.0\r\nProxy-Connection: keep-alive\r\nKeep-Alive: timeout=1\r\n\r\n"
    )
    assert conn.closing
    conn = connect(hello)
    conn.send(
        b"GET / HTTP/1.1\r\nHost: x\r\nKeep-Alive: timeout=1\r\nVia: 1.0 p\r\n\r\n"
    )
    assert not conn.closing
    # The server's own hint, not the request's Keep-Alive echoed.
    assert conn.responses()[0].header(b"keep-alive") == b"timeout=75"


# -- pipelining (RFC 9112 §9.3.2) --------------------------------------------


def test_pipelinedResponsesInOrderDespiteOutOfOrderCompletion() -> None:
    """Checklist C2/C15: responses go out in request order."""
    pending: dict[bytes, Deferred[Response]] = {}
    seen: list[bytes] = []

    def handler(request: Request) -> Deferred[Response]:
        seen.append(request.target)
        d: Deferred[Response] = Deferred()
        pending[request.target] = d
        return d

    conn = connect(handler)
    conn.send(
        b"".join(b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n" % n for n in (b"a", b"b", b"c"))
    )
    # Handlers run one at a time, in order.
    assert seen == [b"/a"]
    pending[b"/a"].callback(Response(200, body=b"a"))
    assert seen == [b"/a", b"/b"]
    pending[b"/b"].callback(Response(200, body=b"b"))
    pending[b"/c"].callback(Response(200, body=b"c"))
    assert [r.body for r in conn.responses()] == [b"a", b"b", b"c"]


def test_pipelineQueueBoundPausesReading() -> None:
    pending: list[Deferred[Response]] = []

    def handler(request: Request) -> Deferred[Response]:
        d: Deferred[Response] = Deferred()
        pending.append(d)
        return d

    conn = connect(handler, maxPipelinedRequests=2, maxRequestsPerConnection=None)
    # More than the read-ahead limit so that reading must pause.
    many = GET * 5000
    conn.send(many)
    assert len(conn.protocol.pipeline.queue) == 2
    assert conn.transport.producerState == "paused"
    while pending:
        pending.pop(0).callback(Response(200, body=b"ok"))
    assert conn.transport.producerState == "producing"
    assert len(conn.responses()) == 5000
    assert conn.factory.stats.responses == 5000


def test_thousandPipelinedSynchronousRequests() -> None:
    """A long pipeline of synchronous answers does not deepen the stack."""
    conn = connect(hello, maxRequestsPerConnection=None)
    conn.send(GET * 3000)
    assert conn.factory.stats.responses == 3000
    assert conn.protocol.state is ConnectionState.WAITING


# -- bodies --------------------------------------------------------------------


def echo(request: Request) -> Deferred[Response]:
    return request.readBody().addCallback(lambda body: Response(200, body=body))


def test_readBodyContentLength() -> None:
    conn = connect(echo)
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhel")
    assert conn.output() == b""
    assert conn.protocol.state is ConnectionState.READING_BODY
    conn.send(b"lo" + GET)
    responses = conn.responses()
    assert [r.body for r in responses] == [b"hello", b""]


def test_readBodyChunkedWithTrailers() -> None:
    """Checklist B1."""
    conn = connect(echo)
    conn.send(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"
    )
    assert conn.responses()[0].body == b"hello"
    assert not conn.closing


def test_bodyLargerThanMaxBodyBytesIs413() -> None:
    """Checklist C22: an early 413 with close."""
    conn = connect(echo, maxBodyBytes=10)
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123")
    response = conn.responses()[0]
    assert response.status == 413
    assert response.header(b"connection") == b"close"
    assert conn.closing


def test_chunkedBodyOverLimitIs413() -> None:
    conn = connect(echo, maxBodyBytes=10)
    conn.send(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n"
        + b"x" * 32
        + b"\r\n"
    )
    assert conn.responses()[0].status == 413
    assert conn.closing


def test_unreadBodyIsDrainedWhenSmall() -> None:
    """Checklist C12: drained, and the next request is answered; never parsed from the body."""
    conn = connect(hello)
    conn.send(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789" + GET
    )
    responses = conn.responses()
    assert [r.status for r in responses] == [200, 200]
    assert not conn.closing


def test_unreadBodyTooLargeCloses() -> None:
    conn = connect(hello, maxBodyBytes=5)
    conn.send(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789" + GET
    )
    responses = conn.responses()
    assert len(responses) == 1
    assert responses[0].header(b"connection") == b"close"
    assert conn.protocol.closeReason == "unread-body"


def test_requestWithoutLengthHasEmptyBody() -> None:
    """Checklist B16."""
    conn = connect(echo)
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\n\r\n" + GET)
    assert [r.body for r in conn.responses()] == [b"", b""]


def test_streamingBodyBackpressure() -> None:
    """Pausing the body consumer pauses reading from the socket."""
    received: list[bytes] = []
    transports: list[object] = []

    class Consumer:
        def makeConnection(self, transport: object) -> None:
            transports.append(transport)

        def dataReceived(self, data: bytes) -> None:
            received.append(data)

        def connectionLost(self, reason: Failure) -> None:
            received.append(b"<end>")

    def handler(request: Request) -> Deferred[Response]:
        request.deliverBody(Consumer())  # type: ignore[arg-type]
        return Deferred()

    conn = connect(handler)
    conn.send(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n" + b"a" * 1000
    )
    assert received == [b"a" * 1000]
    transports[0].pauseProducing()  # type: ignore[attr-defined]
    conn.send(b"b" * 100_000)
    assert received == [b"a" * 1000]
    assert conn.transport.producerState == "paused"
    transports[0].resumeProducing()  # type: ignore[attr-defined]
    assert b"".join(received) == b"a" * 1000 + b"b" * 100_000
    assert conn.transport.producerState == "producing"


# -- 100-continue (RFC 9110 §10.1.1) -----------------------------------------------


def test_continueSentWhenBodyIsRead() -> None:
    conn = connect(echo)
    conn.send(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    )
    assert conn.output() == b"HTTP/1.1 100 Continue\r\n\r\n"
    conn.send(b"hello")
    response = conn.responses()[0]
    assert response.informational == [100]
    assert response.body == b"hello"
    assert not conn.closing


def test_noContinueWhenHandlerAnswersWithoutReading() -> None:
    conn = connect(hello)
    conn.send(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    )
    out = conn.output()
    assert b"100 Continue" not in out
    assert out.startswith(b"HTTP/1.1 200 OK")
    # The client may never send the body: the connection cannot be reused.
    assert b"\r\nConnection: close\r\n" in out
    assert conn.protocol.closeReason == "unread-body"


def test_noContinueForHttp10() -> None:
    conn = connect(echo)
    conn.send(b"POST / HTTP/1.0\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    assert conn.output() == b""
    conn.send(b"hello")
    assert conn.output().startswith(b"HTTP/1.1 200 OK")


def test_unknownExpectationIs417() -> None:
    conn = connect(hello)
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nExpect: foo\r\n\r\n")
    response = conn.responses()[0]
    assert response.status == 417
    assert response.header(b"connection") == b"close"


def test_continueTooLargeIsAnswered413WithoutContinue() -> None:
    conn = connect(echo, maxBodyBytes=4)
    conn.send(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    )
    out = conn.output()
    assert b"100 Continue" not in out
    assert out.startswith(b"HTTP/1.1 413 ")


# -- errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", 400, id="rfc9112-3.2-no-host"),
        pytest.param(
            b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, id="rfc9110-15.6.6-http2"
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            501,
            id="rfc9112-6.1-unknown-coding",
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
            id="rfc9112-6.1-cl-and-te",
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            400,
            id="rfc9112-5.1-space-before-colon",
        ),
        pytest.param(
            b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n",
            414,
            id="rfc9112-3-long-request-line",
        ),
    ],
)
def test_badRequestsGetErrorAndClose(request_: bytes, status: int) -> None:
    calls: list[Request] = []

    def handler(request: Request) -> Response:
        calls.append(request)
        return hello(request)

    conn = connect(handler)
    conn.send(request_ + GET)
    responses = conn.responses()
    assert [r.status for r in responses] == [status]
    assert responses[0].header(b"connection") == b"close"
    assert responses[0].header(b"content-length") is not None
    assert calls == []
    assert conn.protocol.closeReason == "protocol-error"
    assert conn.closing


def test_errorAfterGoodPipelinedRequestKeepsOrder() -> None:
    conn = connect(hello)
    conn.send(GET + b"GET / HTTP/1.1\r\n\r\n")
    assert [r.status for r in conn.responses()] == [200, 400]


def test_handlerRaisesGives500AndClose() -> None:
    def handler(request: Request) -> Response:
        raise RuntimeError("secret detail")

    conn = connect(handler)
    conn.send(GET)
    out = conn.output()
    assert out.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"secret" not in out
    assert b"Connection: close" in out
    assert conn.protocol.closeReason == "handler-error"


def test_deferredFailureGives500() -> None:
    d: Deferred[Response] = Deferred()
    conn = connect(lambda request: d)
    conn.send(GET)
    d.errback(ValueError("boom"))
    assert conn.responses()[0].status == 500


def test_coroutineHandler() -> None:
    async def handler(request: Request) -> Response:
        body = await request.readBody()
        return Response(201, body=body)

    conn = connect(handler)
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
    response = conn.responses()[0]
    assert (response.status, response.body) == (201, b"ok")


def test_protocolErrorFromHandlerUsesItsStatus() -> None:
    def handler(request: Request) -> Response:
        raise ProtocolError("nope", 431)

    conn = connect(handler)
    conn.send(GET)
    assert conn.responses()[0].status == 431


def test_contentLengthContradictingBodyIs500() -> None:
    conn = connect(lambda request: Response(200, {b"Content-Length": b"10"}, b"abc"))
    conn.send(GET)
    assert conn.responses()[0].status == 500


def test_producerShortOfContentLengthAborts() -> None:
    """A body that ends short of its declared length aborts the connection."""
    conn = connect(
        lambda request: Response(200, body=ListProducer([b"abc"], length=10))
    )
    conn.send(GET)
    assert conn.transport.aborted
    assert conn.protocol.closeReason == "response-error"


def test_producerLongerThanContentLengthAborts() -> None:
    conn = connect(
        lambda request: Response(200, body=ListProducer([b"abcdefghijkl"], length=10))
    )
    conn.send(GET)
    assert conn.transport.aborted
    assert not conn.output().endswith(b"abcdefghijkl")


def test_producerFailingMidBodyAborts() -> None:
    @implementer(IBodyProducer)
    class Failing:
        length = UNKNOWN_LENGTH

        def startProducing(self, consumer: object) -> Deferred[None]:
            consumer.write(b"partial")  # type: ignore[attr-defined]
            d: Deferred[None] = Deferred()
            d.errback(OSError("disk"))
            return d

        def pauseProducing(self) -> None: ...
        def resumeProducing(self) -> None: ...
        def stopProducing(self) -> None: ...

    conn = connect(lambda request: Response(200, body=Failing()))
    conn.send(GET)
    assert conn.transport.aborted


def test_invalidHandlerHeaderIs500() -> None:
    """A handler cannot split the response with CR LF in a value."""
    conn = connect(
        lambda request: Response(200, {b"X-A": b"1\r\nSet-Cookie: evil"}, b"")
    )
    conn.send(GET)
    out = conn.output()
    assert out.startswith(b"HTTP/1.1 500 ")
    assert b"evil" not in out


def test_handlerFramingFieldsAreReplaced() -> None:
    conn = connect(
        lambda request: Response(
            200,
            [
                (b"Transfer-Encoding", b"chunked"),
                (b"Keep-Alive", b"timeout=1"),
                (b"Connection", b"X-Foo"),
            ],
            b"abc",
        )
    )
    conn.send(GET)
    out = conn.output()
    assert b"Transfer-Encoding" not in out
    # The server's Keep-Alive (its idle timeout) only, not the handler's.
    assert b"timeout=1" not in out
    assert out.count(b"Keep-Alive") == 1
    assert b"Keep-Alive: timeout=75\r\n" in out
    assert b"X-Foo" not in out
    assert b"Content-Length: 3\r\n" in out


# -- HEAD, 204, 304 -------------------------------------------------------------------


def test_headHasGetHeadersAndNoBody() -> None:
    conn = connect(hello)
    conn.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n" + GET)
    responses = conn.responses(b"HEAD", b"GET")
    assert responses[0].header(b"content-length") == b"130"
    assert responses[0].body == b""
    assert responses[1].body == b"x" * 130


def test_headOfStreamedBodyDoesNotStartProducer() -> None:
    producer = ListProducer([b"never"])
    conn = connect(lambda request: Response(200, body=producer))
    conn.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"never" not in conn.output()
    assert not conn.closing


@pytest.mark.parametrize("status", [204, 304])
def test_noBodyStatuses(status: int) -> None:
    conn = connect(lambda request: Response(status, body=b""))
    conn.send(GET + GET)
    out = conn.output()
    assert out.count(b"HTTP/1.1 %d" % status) == 2
    if status == 204:
        assert b"Content-Length" not in out
    assert b"Transfer-Encoding" not in out
    assert not conn.closing


def test_fileBody(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "f.bin"  # type: ignore[operator]
    path.write_bytes(b"z" * 600_000)
    conn = connect(lambda request: Response(200, body=open(path, "rb")))
    conn.send(GET)
    response = conn.responses()[0]
    assert response.header(b"content-length") == b"600000"
    assert response.body == b"z" * 600_000


def test_fileBodyWithBackpressure(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "f.bin"  # type: ignore[operator]
    path.write_bytes(b"z" * 1_000_000)
    fileBody = open(path, "rb")

    conn = connect(lambda request: Response(200, body=fileBody))
    # The transport reports a full buffer before the response starts.
    conn.protocol.flow.pauseProducing()
    conn.send(GET)
    assert len(conn.output()) < 400_000
    conn.protocol.flow.resumeProducing()
    assert conn.responses()[0].body == b"z" * 1_000_000
    assert fileBody.closed


# -- connection loss ------------------------------------------------------------------


def test_connectionLostWhileHandlingStopsProducerAndDeliversBodyFailure() -> None:
    reasons: list[Failure] = []

    class Consumer:
        def makeConnection(self, transport: object) -> None: ...
        def dataReceived(self, data: bytes) -> None: ...
        def connectionLost(self, reason: Failure) -> None:
            reasons.append(reason)

    def handler(request: Request) -> Deferred[Response]:
        request.deliverBody(Consumer())  # type: ignore[arg-type]
        return Deferred()

    conn = connect(handler)
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    conn.lose(Failure(ConnectionLost()))
    assert reasons and reasons[0].check(ConnectionLost)
    assert conn.protocol.closeReason == "peer-reset"
    assert conn.clock.getDelayedCalls() == []
    assert conn.factory.stats.active == 0


def test_clientHalfCloseDoesNotCancelResponse() -> None:
    """Checklist C20."""
    d: Deferred[Response] = Deferred()
    conn = connect(lambda request: d)
    conn.send(GET)
    conn.protocol.readConnectionLost()
    assert not conn.closing
    d.callback(Response(200, body=b"late"))
    assert conn.responses()[0].body == b"late"
    assert conn.closing
    assert conn.protocol.closeReason == "peer-closed"


def test_clientHalfCloseWhileIdleCloses() -> None:
    """Checklist C19."""
    conn = connect(hello)
    conn.send(GET)
    conn.protocol.readConnectionLost()
    assert conn.transport.disconnecting


def test_plainStringTransportWithoutHalfClose() -> None:
    """A transport that cannot half-close (TLS) is closed outright."""
    from twisted.internet.task import Clock

    from connserver._connection.factory import ConnectionFactory
    from connserver._http.config import ServerConfig

    clock = Clock()
    factory = ConnectionFactory(hello, ServerConfig(), reactor=clock)
    protocol = factory.buildProtocol(None)  # type: ignore[arg-type]
    assert protocol is not None
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert transport.disconnecting
    protocol.connectionLost(Failure(ConnectionLost()))
    assert clock.getDelayedCalls() == []


# -- the fast path and the general path ---------------------------------------


class _CountingTransport(TCPStringTransport):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)


def _pipelined(
    handler: Any, answerLater: list[tuple[Request, Deferred[Response]]] | None = None
) -> tuple[bytes, int]:
    """Four pipelined requests in one read; the bytes written and the writes."""
    factory = ConnectionFactory(handler, ServerConfig(), reactor=Clock())
    protocol = factory.buildProtocol(PEER)
    assert protocol is not None
    transport = _CountingTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Hop\r\n\r\n"
        b"HEAD /c HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    )
    while answerLater:
        request, d = answerLater.pop(0)
        d.callback(_answer(request))
    return transport.value(), transport.writes


def _answer(request: Request) -> Response:
    return Response(200, [(b"Content-Type", b"text/plain")], b"%s\n" % request.path)


def test_synchronousAndDeferredAnswersGiveTheSameBytes() -> None:
    """
    A synchronous answer takes the fast path (dispatched as its head is
    parsed, written in one batch with the other pipelined answers); a
    Deferred one that fires later takes the general path.  Same bytes.
    """
    fast, fastWrites = _pipelined(_answer)
    pending: list[tuple[Request, Deferred[Response]]] = []

    def later(request: Request) -> Deferred[Response]:
        d: Deferred[Response] = Deferred()
        pending.append((request, d))
        return d

    slow, slowWrites = _pipelined(later, pending)
    assert slow == fast
    # Four answers, one write on the fast path; one each on the other.
    assert (fastWrites, slowWrites) == (1, 4)
    assert [
        r.status for r in parseResponses(fast, [b"GET", b"GET", b"HEAD", b"GET"])
    ] == [200] * 4
