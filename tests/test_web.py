"""
Tests for ``connserver._handlers.web``: twisted.web resources as connserver handlers.

The adapter is tested first on its own, by calling the handler with
hand-made ``Request`` objects and reading the ``Response`` (through a
consumer written here for bodies that stream), then through the protocol
on ``StringTransport`` and ``Clock``, then over a few real sockets.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IPullProducer, IPushProducer
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web import http_headers
from twisted.web.error import UnsupportedMethod
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Session, Site
from twisted.web.server import Request as WebRequest
from zope.interface import implementer

from connserver._connection.factory import ConnectionFactory
from connserver._connection.message import Request, Response
from connserver._handlers.web import WebResourceHandler, asHandler
from connserver._http.errors import ProtocolError
from connserver._http.headers import Headers

from . import _sockets as sockets
from ._harness import Connection, TCPStringTransport, connect, parseResponses
from ._helpers import FakeConsumer

# twisted.web itself still calls its deprecated _Unsafe* error pages (for
# 404, 405 and at import of static); that is twisted.web's behaviour, not ours.
UNSAFE_PAGES = r"ignore:twisted\.web\.resource\._Unsafe.*:DeprecationWarning"
pytestmark = pytest.mark.filterwarnings(UNSAFE_PAGES)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from twisted.web import static

PEER = IPv4Address("TCP", "10.0.0.7", 51000)
HOST = IPv4Address("TCP", "127.0.0.1", 8443)


# -- helpers -----------------------------------------------------------------


def makeRequest(
    method: bytes = b"GET",
    target: bytes = b"/",
    headers: Iterable[tuple[bytes, bytes]] = (),
    body: bytes | None = None,
    version: tuple[int, int] = (1, 1),
    **kwargs: Any,
) -> Request:
    fields = Headers([(b"Host", b"example.com"), *headers])
    return Request(
        method, target, version, fields, body=body, peer=PEER, host=HOST, **kwargs
    )


def result(d: Deferred[Any] | Response) -> Any:
    """
    The result of a Deferred that must have fired successfully, or the
    Response the handler returned at once (it does when rendering finished
    before it returned).
    """
    if isinstance(d, Response):
        return d
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


def failure(d: Deferred[Any]) -> Failure:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box and isinstance(box[0], Failure), box
    f: Failure = box[0]
    return f


def fired(d: Deferred[Any] | Response) -> bool:
    return isinstance(d, Response) or bool(d.called)


def respond(
    resource: Resource, clock: Clock | None = None, **requestArgs: Any
) -> tuple[Deferred[Response] | Response, WebResourceHandler]:
    handler = WebResourceHandler(resource, reactor=clock or Clock())
    return handler(makeRequest(**requestArgs)), handler


def fields(response: Response) -> dict[bytes, list[bytes]]:
    out: dict[bytes, list[bytes]] = {}
    for name, value in response.headers:
        out.setdefault(name.lower(), []).append(value)
    return out


def stream(
    response: Response, sink: FakeConsumer | None = None
) -> tuple[FakeConsumer, Deferred[None]]:
    body = response.body
    assert IBodyProducer.providedBy(body)
    sink = sink or FakeConsumer()
    sink.registerProducer(body, True)
    return sink, body.startProducing(sink)  # type: ignore[attr-defined]


class Leaf(Resource):
    """A resource answering from a function of the request."""

    isLeaf = True

    def __init__(self, render: Any) -> None:
        super().__init__()
        self._render = render

    def render(self, request: WebRequest) -> Any:  # type: ignore[override]
        return self._render(request)


# -- rendering ---------------------------------------------------------------


def test_bytesBody() -> None:
    """A render_GET returning bytes gives a bytes body with its fields."""

    class Hello(Resource):
        isLeaf = True

        def render_GET(self, request: WebRequest) -> bytes:
            request.setHeader(b"Content-Type", b"text/plain")
            return b"hello"

    d, _ = respond(Hello())
    response = result(d)
    assert response.code == 200
    assert response.body == b"hello"
    assert fields(response) == {
        b"content-type": [b"text/plain"],
        b"content-length": [b"5"],
    }


def test_protocolOwnedFieldsDropped() -> None:
    """
    Framing and connection fields set by the resource, twisted.web's Date and
    default Server, are left to connserver (RFC 9112 §6.1, RFC 9110 §7.6.1).
    """

    def render(request: WebRequest) -> bytes:
        request.setHeader(b"Keep-Alive", b"timeout=5")
        request.setHeader(b"Transfer-Encoding", b"chunked")
        request.setHeader(b"Connection", b"X-Foo, Cache-Control")
        request.setHeader(b"Upgrade", b"websocket")
        return b"x"

    response = result(respond(Leaf(render))[0])
    assert set(fields(response)) == {b"content-type", b"content-length"}


def test_resourceServerKept() -> None:
    """A Server field the resource chose itself is kept."""

    def render(request: WebRequest) -> bytes:
        request.setHeader(b"Server", b"myapp/1")
        return b"x"

    assert fields(result(respond(Leaf(render))[0]))[b"server"] == [b"myapp/1"]


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"close", id="close"),
        pytest.param(b"Keep-Alive, CLOSE", id="close-in-list-any-case"),
    ],
)
def test_connectionCloseKept(value: bytes) -> None:
    """
    A resource's ``Connection: close`` stays in the response so that the
    policy closes after it (RFC 9112 §9.6); nothing else of the field does.
    """

    def render(request: WebRequest) -> bytes:
        request.setHeader(b"Connection", value)
        return b"bye"

    response = result(respond(Leaf(render))[0])
    assert fields(response)[b"connection"] == [b"close"]


def test_loseConnectionMeansClose() -> None:
    """``request.loseConnection()`` before the response makes it close."""

    def render(request: WebRequest) -> bytes:
        request.loseConnection()
        return b"x"

    response = result(respond(Leaf(render))[0])
    assert fields(response)[b"connection"] == [b"close"]


def test_statusReasonCookiesRedirect() -> None:
    def render(request: WebRequest) -> bytes:
        request.setResponseCode(303, b"Look Elsewhere")
        request.addCookie(b"k", b"v", path=b"/")
        request.redirect(b"/there")
        request.setResponseCode(303, b"Look Elsewhere")
        return b""

    response = result(respond(Leaf(render))[0])
    assert (response.code, response.reason) == (303, b"Look Elsewhere")
    got = fields(response)
    assert got[b"location"] == [b"/there"]
    assert got[b"set-cookie"] == [b"k=v; Path=/"]


def test_requestView() -> None:
    """The resource sees the request as twisted.web would have parsed it."""
    seen: dict[str, Any] = {}

    def render(request: WebRequest) -> bytes:
        seen["method"] = request.method
        seen["uri"] = request.uri
        seen["path"] = request.path
        seen["args"] = request.args
        seen["clientproto"] = request.clientproto
        seen["header"] = request.getHeader(b"x-thing")
        seen["cookie"] = request.getCookie(b"c")
        seen["client"] = request.getClientAddress()
        seen["host"] = request.getHost()
        seen["secure"] = request.isSecure()
        seen["url"] = str(request.URLPath())
        seen["postpath"] = request.postpath
        return b"ok"

    d, _ = respond(
        Leaf(render),
        target=b"/a/b%20c?x=1&x=2",
        headers=[(b"X-Thing", b"yes"), (b"Cookie", b"c=3; d=4")],
        version=(1, 0),
        isSecure=True,
    )
    assert result(d).code == 200
    assert seen == {
        "method": b"GET",
        "uri": b"/a/b%20c?x=1&x=2",
        "path": b"/a/b%20c",
        "args": {b"x": [b"1", b"2"]},
        "clientproto": b"HTTP/1.0",
        "header": b"yes",
        "cookie": b"3",
        "client": PEER,
        "host": HOST,
        "secure": True,
        "url": "https://example.com:8443/",  # the leaf is the root
        "postpath": [b"a", b"b c"],
    }


def test_resourceTree() -> None:
    """Traversal with putChild works as under Site, 404 included."""
    root = Resource()
    child = Resource()
    root.putChild(b"a", child)
    child.putChild(b"b", static.Data(b"leaf", "text/plain"))
    handler = WebResourceHandler(root, reactor=Clock())
    ok = result(handler(makeRequest(target=b"/a/b")))
    assert (ok.code, ok.body) == (200, b"leaf")
    missing = result(handler(makeRequest(target=b"/nope")))
    assert missing.code == 404


def test_postForm() -> None:
    """``request.content`` holds the body and form fields reach ``args``."""
    seen: dict[str, Any] = {}

    class Form(Resource):
        isLeaf = True

        def render_POST(self, request: WebRequest) -> bytes:
            assert request.content is not None
            seen["content"] = request.content.read()
            seen["args"] = request.args
            return b"posted"

    body = b"name=conn&name=server&x=%2F"
    d, _ = respond(
        Form(),
        method=b"POST",
        headers=[(b"Content-Type", b"application/x-www-form-urlencoded")],
        body=body,
    )
    assert result(d).body == b"posted"
    assert seen == {
        "content": body,
        "args": {b"name": [b"conn", b"server"], b"x": [b"/"]},
    }


def test_bodyTooLarge() -> None:
    """A body over maxBodyBytes fails with 413 before the resource runs."""
    rendered: list[bool] = []

    def render(request: WebRequest) -> bytes:
        rendered.append(True)
        return b""

    d, _ = respond(Leaf(render), method=b"POST", body=b"x" * 10, maxBodyBytes=4)
    error = failure(d).value
    assert isinstance(error, ProtocolError) and error.statusCode == 413
    assert rendered == []


def test_badMultipart() -> None:
    """twisted.web's 400 for a malformed multipart body becomes a closing 400."""
    d, _ = respond(
        Leaf(lambda request: b"never"),
        method=b"POST",
        headers=[(b"Content-Type", b"multipart/form-data")],
        body=b"--zz\r\nbroken",
    )
    response = result(d)
    assert response.code == 400
    assert fields(response)[b"connection"] == [b"close"]


def test_renderException() -> None:
    """An exception in render becomes twisted.web's 500 page."""

    def render(request: WebRequest) -> bytes:
        raise ZeroDivisionError()

    response = result(respond(Leaf(render))[0])
    assert response.code == 500
    assert b"Processing Failed" in response.body


def test_invalidStatus() -> None:
    """A status connserver cannot send fails the handler (the protocol's 500)."""

    def render(request: WebRequest) -> bytes:
        request.setResponseCode(999)
        return b""

    assert failure(respond(Leaf(render))[0]).check(ValueError)


def test_headFromGet() -> None:
    """
    HEAD on a resource without render_HEAD: GET's fields, no body, and the
    length is kept on the body so the protocol sends GET's Content-Length
    (RFC 9110 §9.3.2).
    """

    class Get(Resource):
        isLeaf = True

        def render_GET(self, request: WebRequest) -> bytes:
            return b"x" * 42

    response = result(respond(Get(), method=b"HEAD")[0])
    assert response.code == 200
    assert response.bodyLength() == 42
    assert fields(response)[b"content-length"] == [b"42"]


def test_notModifiedKeepsLength() -> None:
    """
    A 304 carrying the 200's Content-Length (RFC 9110 §8.6) is not a framing
    error: the length rides on a body that is never sent.
    """

    def render(request: WebRequest) -> object:
        request.setResponseCode(304)
        request.setHeader(b"Content-Length", b"1234")
        request.write(b"")
        request.finish()
        return NOT_DONE_YET

    response = result(respond(Leaf(render))[0])
    assert response.code == 304
    assert response.bodyLength() == 1234


# -- deferred rendering --------------------------------------------------------


def test_notDoneYetWriteAndFinishTogether() -> None:
    """
    write() and finish() in one later callback give a bytes body of known
    length (so HTTP/1.0 keep-alive and Content-Length still apply).
    """
    clock = Clock()

    def render(request: WebRequest) -> object:
        def later() -> None:
            request.write(b"late ")
            request.write(b"answer")
            request.finish()

        clock.callLater(1, later)
        return NOT_DONE_YET

    d, _ = respond(Leaf(render), clock)
    assert not fired(d)
    clock.advance(1)
    response = result(d)
    assert response.body == b"late answer"
    assert b"content-length" not in fields(response)
    assert clock.getDelayedCalls() == []


def test_notDoneYetStreams() -> None:
    """
    A response still being written after a reactor turn streams: unknown
    length, data as it is written, the producer's Deferred at finish.
    """
    clock = Clock()
    notified: list[object] = []

    def render(request: WebRequest) -> object:
        request.notifyFinish().addBoth(notified.append)
        clock.callLater(1, request.write, b"one ")
        clock.callLater(2, request.write, b"two")
        clock.callLater(3, request.finish)
        return NOT_DONE_YET

    d, _ = respond(Leaf(render), clock)
    assert not fired(d)
    clock.advance(1)  # the write, then the reactor turn that waits for finish()
    response = result(d)
    assert response.body.length is UNKNOWN_LENGTH
    assert b"transfer-encoding" not in fields(response)
    sink, done = stream(response)
    assert sink.received() == b"one "
    clock.advance(1)
    assert sink.received() == b"one two"
    assert not fired(done)
    clock.advance(1)
    assert result(done) is None
    assert notified == [None]
    assert clock.getDelayedCalls() == []


def test_streamWithContentLength() -> None:
    """A resource's Content-Length is the streamed body's length."""
    clock = Clock()

    def render(request: WebRequest) -> object:
        request.setHeader(b"Content-Length", b"6")
        request.write(b"abc")
        clock.callLater(1, lambda: (request.write(b"def"), request.finish()))
        return NOT_DONE_YET

    response = result(respond(Leaf(render), clock)[0])
    assert response.body.length == 6
    assert fields(response)[b"content-length"] == [b"6"]
    sink, done = stream(response)
    clock.advance(1)
    assert (sink.received(), result(done)) == (b"abcdef", None)


def test_writtenBeforeConsumerIsBuffered() -> None:
    """Bytes written before the protocol starts the body are kept, in order."""
    clock = Clock()
    requests: list[WebRequest] = []

    def render(request: WebRequest) -> object:
        request.write(b"a")
        requests.append(request)
        return NOT_DONE_YET

    response = result(respond(Leaf(render), clock)[0])
    requests[0].write(b"b")
    clock.advance(0)
    sink, done = stream(response)
    requests[0].write(b"c")
    requests[0].finish()
    assert (sink.received(), result(done)) == (b"abc", None)
    assert clock.getDelayedCalls() == []


# -- producers and backpressure ----------------------------------------------


@pytest.fixture
def bigFile(tmp_path: Path) -> Path:
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(300 * 1024))
    return path


def test_staticFileBackpressure(bigFile: Path) -> None:
    """
    static.File's pull producer is asked for data only while the consumer
    wants it: one block per resume when the consumer pauses after each.
    """
    clock = Clock()
    handler = WebResourceHandler(static.File(str(bigFile.parent)), reactor=clock)
    response = result(handler(makeRequest(target=b"/big.bin")))
    size = bigFile.stat().st_size
    assert response.code == 200
    assert response.body.length == size
    sink = FakeConsumer(pauseEveryWrite=True)
    _, done = stream(response, sink)
    assert len(sink.data) == 1  # what was prefetched; then paused
    resumes = 0
    while not fired(done):
        before = len(sink.data)
        response.body.resumeProducing()
        resumes += 1
        assert len(sink.data) - before <= 1
        assert resumes < 100
    assert sink.received() == bigFile.read_bytes()
    assert clock.getDelayedCalls() == []


def test_staticFileUnpausedConsumer(bigFile: Path) -> None:
    """Without backpressure, blocks are pulled in batches between reactor turns."""
    clock = Clock()
    handler = WebResourceHandler(static.File(str(bigFile.parent)), reactor=clock)
    response = result(handler(makeRequest(target=b"/big.bin")))
    sink, done = stream(response)
    while not fired(done):
        clock.advance(0)
    assert sink.received() == bigFile.read_bytes()
    assert clock.getDelayedCalls() == []


def test_staticFileSmall(tmp_path: Path) -> None:
    """A small file is read before the response is handed over: bytes body."""
    (tmp_path / "small.txt").write_bytes(b"small file\n")
    handler = WebResourceHandler(static.File(str(tmp_path)), reactor=Clock())
    response = result(handler(makeRequest(target=b"/small.txt")))
    assert response.body == b"small file\n"
    assert fields(response)[b"content-length"] == [b"11"]


def test_staticFileRange(bigFile: Path) -> None:
    """A single byte range: 206, Content-Range, exactly those bytes."""
    handler = WebResourceHandler(static.File(str(bigFile.parent)), reactor=Clock())
    response = result(
        handler(makeRequest(target=b"/big.bin", headers=[(b"Range", b"bytes=10-19")]))
    )
    size = bigFile.stat().st_size
    assert response.code == 206
    got = fields(response)
    assert got[b"content-range"] == [b"bytes 10-19/%d" % size]
    assert response.body == bigFile.read_bytes()[10:20]


def test_staticFileHead(bigFile: Path) -> None:
    handler = WebResourceHandler(static.File(str(bigFile.parent)), reactor=Clock())
    response = result(handler(makeRequest(method=b"HEAD", target=b"/big.bin")))
    assert response.bodyLength() == bigFile.stat().st_size


@implementer(IPushProducer)
class Ticker:
    """A push producer writing one chunk per clock tick until stopped or done."""

    def __init__(self, request: WebRequest, clock: Clock, count: int) -> None:
        self.request = request
        self.clock = clock
        self.left = count
        self.paused = False
        self.stopped = False
        self.call: Any = None
        self.log: list[str] = []

    def start(self) -> None:
        self.request.registerProducer(self, True)
        self.schedule()

    def schedule(self) -> None:
        if not self.paused and not self.stopped and self.call is None:
            self.call = self.clock.callLater(1, self.tick)

    def tick(self) -> None:
        self.call = None
        self.request.write(b"tick %d;" % self.left)
        self.left -= 1
        if self.left == 0:
            self.request.unregisterProducer()
            self.request.finish()
            return
        self.schedule()

    def pauseProducing(self) -> None:
        self.log.append("pause")
        self.paused = True
        if self.call is not None:
            self.call.cancel()
            self.call = None

    def resumeProducing(self) -> None:
        self.log.append("resume")
        self.paused = False
        self.schedule()

    def stopProducing(self) -> None:
        self.log.append("stop")
        self.stopped = True
        if self.call is not None:
            self.call.cancel()
            self.call = None


def test_pushProducerPauseResume() -> None:
    """The consumer's pause and resume reach the resource's push producer."""
    clock = Clock()
    tickers: list[Ticker] = []

    def render(request: WebRequest) -> object:
        ticker = Ticker(request, clock, 3)
        tickers.append(ticker)
        ticker.start()
        return NOT_DONE_YET

    d, _ = respond(Leaf(render), clock)
    clock.advance(1)
    clock.advance(0)
    response = result(d)
    sink = FakeConsumer(pauseEveryWrite=True)
    _, done = stream(response, sink)
    ticker = tickers[0]
    assert sink.received() == b"tick 3;"
    assert ticker.log == ["pause"]
    clock.advance(5)
    assert sink.received() == b"tick 3;"  # paused: nothing more
    response.body.resumeProducing()
    clock.advance(1)
    assert sink.received() == b"tick 3;tick 2;"
    response.body.resumeProducing()
    clock.advance(1)
    assert result(done) is None
    assert sink.received() == b"tick 3;tick 2;tick 1;"
    assert ticker.log == ["pause", "resume", "pause", "resume", "pause"]
    assert clock.getDelayedCalls() == []


def test_pushProducerPausedWithoutConsumer() -> None:
    """Before the body is started, a push producer is paused past the prefetch."""
    clock = Clock()
    requests: list[WebRequest] = []

    @implementer(IPushProducer)
    class Flood:
        paused = 0

        def pauseProducing(self) -> None:
            self.paused += 1

        def resumeProducing(self) -> None:
            self.paused -= 1

        def stopProducing(self) -> None:
            pass

    flood = Flood()

    def render(request: WebRequest) -> object:
        request.registerProducer(flood, True)
        request.write(b"x" * 70000)
        requests.append(request)
        return NOT_DONE_YET

    response = result(respond(Leaf(render), clock)[0])
    assert flood.paused == 1
    sink, done = stream(response)
    assert flood.paused == 0 and len(sink.received()) == 70000
    requests[0].unregisterProducer()
    requests[0].finish()
    assert result(done) is None


def test_asyncPullProducer() -> None:
    """
    A pull producer that answers each resumeProducing later is asked again
    after each write, and never twice at once.
    """
    clock = Clock()
    asked: list[int] = []

    @implementer(IPullProducer)
    class Slow:
        def __init__(self, request: WebRequest) -> None:
            self.request = request
            self.left = 3
            self.pending = False

        def resumeProducing(self) -> None:
            assert not self.pending, "asked again before it answered"
            self.pending = True
            asked.append(self.left)
            clock.callLater(1, self.answer)

        def answer(self) -> None:
            self.pending = False
            self.request.write(b"%d;" % self.left)
            self.left -= 1
            if self.left == 0:
                self.request.unregisterProducer()
                self.request.finish()

        def stopProducing(self) -> None:
            pass

    def render(request: WebRequest) -> object:
        request.registerProducer(Slow(request), False)
        return NOT_DONE_YET

    d, _ = respond(Leaf(render), clock)
    assert asked == [3] and not fired(d)
    clock.advance(1)
    response = result(d)
    sink, done = stream(response)
    assert sink.received() == b"3;"
    clock.advance(1)
    clock.advance(1)
    assert result(done) is None
    assert sink.received() == b"3;2;1;"
    assert asked == [3, 2, 1]
    assert clock.getDelayedCalls() == []


# -- the client going away -----------------------------------------------------


def test_disconnectWhileRendering() -> None:
    """
    The protocol cancelling the handler's Deferred (the connection was lost
    before any response byte): notifyFinish fails, later writes are dropped.
    """
    clock = Clock()
    notified: list[Any] = []
    requests: list[WebRequest] = []

    def render(request: WebRequest) -> object:
        request.notifyFinish().addBoth(notified.append)
        requests.append(request)
        return NOT_DONE_YET

    d, _ = respond(Leaf(render), clock)
    d.cancel()
    assert failure(d).check(CancelledError)
    assert len(notified) == 1 and notified[0].check(ConnectionLost)
    requests[0].write(b"into the void")  # dropped, as twisted.web does
    with pytest.raises(RuntimeError):
        requests[0].finish()
    assert clock.getDelayedCalls() == []


def test_disconnectWhileStreaming() -> None:
    """stopProducing mid-body: notifyFinish fails, nothing more is written."""
    clock = Clock()
    tickers: list[Ticker] = []
    notified: list[Any] = []

    def render(request: WebRequest) -> object:
        request.notifyFinish().addBoth(notified.append)
        ticker = Ticker(request, clock, 5)
        tickers.append(ticker)
        ticker.start()
        request.write(b"head;")
        return NOT_DONE_YET

    response = result(respond(Leaf(render), clock)[0])
    sink, done = stream(response)
    clock.advance(1)
    assert sink.received() == b"head;tick 5;"
    response.body.stopProducing()
    assert tickers[0].log == ["stop"]
    assert len(notified) == 1 and notified[0].check(ConnectionLost)
    clock.advance(10)
    assert sink.received() == b"head;tick 5;"
    assert not fired(done)  # IBodyProducer: never fires after stopProducing
    assert clock.getDelayedCalls() == []


def test_stoppedBeforeStarted() -> None:
    """The client left after the status was known but before the body started."""
    clock = Clock()
    notified: list[Any] = []

    def render(request: WebRequest) -> object:
        request.notifyFinish().addBoth(notified.append)
        request.write(b"partial")
        return NOT_DONE_YET

    response = result(respond(Leaf(render), clock)[0])
    response.body.stopProducing()
    assert notified[0].check(ConnectionLost)
    sink, done = stream(response)
    assert sink.received() == b"" and not fired(done)
    assert clock.getDelayedCalls() == []


def test_cancelWhileReadingBody() -> None:
    """Cancelling while the body is still being read never renders."""

    class Source:
        def bodyWanted(self, request: Request) -> None:
            pass

        def pauseBody(self) -> None:
            pass

        def resumeBody(self) -> None:
            pass

        def stopBody(self) -> None:
            pass

    rendered: list[bool] = []
    handler = WebResourceHandler(
        Leaf(lambda request: rendered.append(True) or b""), reactor=Clock()
    )
    request = Request(
        b"POST", b"/", (1, 1), Headers(), contentLength=5, bodySource=Source()
    )
    d = handler(request)
    d.cancel()
    assert failure(d).check(CancelledError)
    assert rendered == []


# -- sessions ------------------------------------------------------------------


def test_sessionsPersistAcrossRequests() -> None:
    """One Site per handler: the session cookie finds the same session."""
    clock = Clock()
    uids: list[bytes] = []

    def render(request: WebRequest) -> bytes:
        session = request.getSession()
        uids.append(session.uid)
        return b"ok"

    handler = WebResourceHandler(Leaf(render), reactor=clock)
    first = result(handler(makeRequest()))
    cookie = fields(first)[b"set-cookie"][0].split(b";")[0]
    result(handler(makeRequest(headers=[(b"Cookie", cookie)])))
    assert uids[0] == uids[1]
    assert list(handler.site.sessions) == [uids[0]]
    clock.advance(Session.sessionTimeout)  # expires on the injected clock
    assert handler.site.sessions == {}
    assert clock.getDelayedCalls() == []


def test_sessionFactory() -> None:
    clock = Clock()

    class MySession(Session):
        pass

    kinds: list[type] = []

    def render(request: WebRequest) -> bytes:
        kinds.append(type(request.getSession()))
        return b"ok"

    handler = WebResourceHandler(Leaf(render), reactor=clock, sessionFactory=MySession)
    result(handler(makeRequest()))
    assert kinds == [MySession]
    for session in list(handler.site.sessions.values()):
        session.expire()


# -- asHandler ------------------------------------------------------------------


def test_asHandlerResource() -> None:
    resource = static.Data(b"d", "text/plain")
    handler = asHandler(resource)
    assert isinstance(handler, WebResourceHandler)
    assert handler.resource is resource


def test_asHandlerSite() -> None:
    resource = static.Data(b"d", "text/plain")
    site = Site(resource, reactor=Clock())
    handler = asHandler(site)
    assert isinstance(handler, WebResourceHandler)
    assert handler.resource is resource and handler.reactor is site.reactor


def test_asHandlerAppWithResource() -> None:
    resource = static.Data(b"d", "text/plain")

    class App:
        def resource(self) -> Resource:
            return resource

    handler = asHandler(App())
    assert isinstance(handler, WebResourceHandler)
    assert handler.resource is resource


def test_asHandlerCallable() -> None:
    def plain(request: Request) -> Response:
        return Response(204)

    assert asHandler(plain) is plain


@pytest.mark.parametrize(
    "obj", [pytest.param(42, id="int"), pytest.param("module:attr", id="str")]
)
def test_asHandlerRejects(obj: object) -> None:
    with pytest.raises(TypeError, match="cannot serve"):
        asHandler(obj)


def test_asHandlerResourceMethodReturnsJunk() -> None:
    class App:
        def resource(self) -> object:
            return object()

    with pytest.raises(TypeError, match="IResource"):
        asHandler(App())


def test_notAResource() -> None:
    with pytest.raises(TypeError):
        WebResourceHandler(object())  # type: ignore[arg-type]


# -- through the protocol (StringTransport + Clock) ------------------------------


class Counted(Resource):
    """render_GET with a Content-Length (as Site sets for every bytes body)."""

    isLeaf = True

    def render_GET(self, request: WebRequest) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain")
        return b"counted"


def serve(resource: Resource, clock: Clock, **config: Any) -> Connection:
    return connect(WebResourceHandler(resource, reactor=clock), clock=clock, **config)


def finish(conn: Connection) -> None:
    """Close the connection and check that no timer was left behind."""
    conn.lose()
    assert conn.clock.getDelayedCalls() == []


def test_protocolHttp10KeepAlive() -> None:
    """
    Checklist C7: HTTP/1.0 keep-alive across two requests to a resource that
    sets Content-Length; both answered on one open connection.
    """
    clock = Clock()
    conn = serve(Counted(), clock)
    request = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    conn.send(request)
    conn.send(request)
    responses = conn.responses()
    assert [r.body for r in responses] == [b"counted", b"counted"]
    for response in responses:
        assert response.header(b"connection") == b"keep-alive"
        assert response.header(b"content-length") == b"7"
        assert response.header(b"server") == b"connserver"
        assert response.header(b"date") is not None
    assert conn.output().count(b"\r\nDate: ") == 2
    assert not conn.closing
    finish(conn)


def test_protocolHttp10StreamingCloses() -> None:
    """Checklist C11: 1.0 keep-alive, length unknown: close-delimited, then close."""
    clock = Clock()

    def render(request: WebRequest) -> object:
        request.write(b"part one, ")
        clock.callLater(1, lambda: (request.write(b"part two"), request.finish()))
        return NOT_DONE_YET

    conn = serve(Leaf(render), clock)
    conn.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    clock.advance(1)
    (response,) = conn.responses(eof=True)
    assert response.body == b"part one, part two"
    assert response.header(b"connection") == b"close"
    assert response.header(b"transfer-encoding") is None
    assert conn.protocol.closeReason == "unknown-length-http10"
    finish(conn)


def test_protocolNotDoneYetChunked() -> None:
    """A deferred (NOT_DONE_YET) resource streams chunked to 1.1, once."""
    clock = Clock()

    def render(request: WebRequest) -> object:
        request.write(b"first;")
        clock.callLater(1, request.write, b"second;")
        clock.callLater(2, request.finish)
        return NOT_DONE_YET

    conn = serve(Leaf(render), clock)
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    clock.advance(1)
    clock.advance(1)
    out = conn.output()
    assert out.count(b"Transfer-Encoding: chunked") == 1
    assert out.endswith(b"6\r\nfirst;\r\n7\r\nsecond;\r\n0\r\n\r\n")
    assert [r.body for r in conn.responses()] == [b"first;second;"]
    assert not conn.closing
    finish(conn)


def test_protocolResourceConnectionClose() -> None:
    """
    Checklist C24: a resource's Connection: close closes the connection after
    that response; the pipelined request behind it is not answered.
    """
    clock = Clock()
    seen: list[bytes] = []

    def render(request: WebRequest) -> bytes:
        seen.append(request.uri)
        request.setHeader(b"Connection", b"close")
        return b"last"

    conn = serve(Leaf(render), clock)
    conn.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    (response,) = conn.responses()
    assert response.body == b"last"
    assert response.header(b"connection") == b"close"
    assert seen == [b"/a"]
    assert conn.closing
    assert conn.protocol.closeReason == "handler-close"
    finish(conn)


def test_protocolStaticFileRange(bigFile: Path) -> None:
    """static.File: a range request, then the whole file, on one connection."""
    clock = Clock()
    conn = serve(static.File(str(bigFile.parent)), clock)
    data = bigFile.read_bytes()
    conn.send(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=100-199\r\n\r\n")
    conn.send(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    for _ in range(20):
        clock.advance(0)
    partial, whole = conn.responses()
    assert partial.status == 206
    assert partial.header(b"content-range") == b"bytes 100-199/%d" % len(data)
    assert partial.body == data[100:200]
    assert whole.status == 200
    assert whole.header(b"content-length") == b"%d" % len(data)
    assert whole.body == data
    finish(conn)


class FillingTransport(TCPStringTransport):
    """Pauses its producer once 100 kB are buffered, as a TCP transport does."""

    limit = 100_000
    full = False

    def write(self, data: bytes) -> None:
        super().write(data)
        if len(self.value()) > self.limit and not self.full:
            self.full = True
            self.producer.pauseProducing()

    def drain(self) -> None:
        self.limit = 1 << 30
        self.full = False
        self.producer.resumeProducing()


def test_protocolStaticFileBackpressure(bigFile: Path) -> None:
    """The transport pausing the protocol stops static.File's reads."""
    clock = Clock()
    factory = ConnectionFactory(
        WebResourceHandler(static.File(str(bigFile.parent)), reactor=clock),
        reactor=clock,
    )
    protocol = factory.buildProtocol(PEER)
    assert protocol is not None
    transport = FillingTransport()
    protocol.makeConnection(transport)
    conn = Connection(protocol, transport, clock, factory)
    conn.send(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    for _ in range(10):
        clock.advance(0)
    assert transport.full
    assert len(conn.output()) < 100_000 + 70_000  # one block past the limit
    transport.drain()
    for _ in range(20):
        clock.advance(0)
    (response,) = conn.responses()
    assert response.body == bigFile.read_bytes()
    finish(conn)


def test_protocolHead() -> None:
    """HEAD: GET's Content-Length, no body (RFC 9110 §9.3.2)."""
    clock = Clock()
    conn = serve(Counted(), clock)
    conn.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head, get = conn.responses(b"HEAD", b"GET")
    assert head.header(b"content-length") == b"7" and head.body == b""
    assert get.body == b"counted"
    finish(conn)


def test_protocolBodyTooLarge() -> None:
    """A POST body over maxBodyBytes is answered 413 by the protocol."""
    clock = Clock()
    conn = serve(Counted(), clock, maxBodyBytes=4)
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789")
    (response,) = conn.responses()
    assert response.status == 413
    finish(conn)


def test_protocolDisconnectMidStream() -> None:
    """
    The client disconnects while a deferred resource is writing: notifyFinish
    fails, its producer is stopped, and nothing reaches the transport after.
    """
    clock = Clock()
    tickers: list[Ticker] = []
    notified: list[Any] = []

    def render(request: WebRequest) -> object:
        request.notifyFinish().addBoth(notified.append)
        ticker = Ticker(request, clock, 10)
        tickers.append(ticker)
        ticker.start()
        return NOT_DONE_YET

    conn = serve(Leaf(render), clock)
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    clock.advance(1)
    clock.advance(1)
    assert conn.output().endswith(b"tick 9;\r\n")
    conn.lose(Failure(ConnectionLost()))
    assert len(notified) == 1 and notified[0].check(ConnectionLost)
    assert tickers[0].log == ["stop"]
    written = conn.output()
    clock.advance(5)
    assert conn.output() == written
    assert clock.getDelayedCalls() == []


def test_protocolDisconnectBeforeFirstWrite() -> None:
    """
    The client disconnects while the resource has written nothing yet:
    notifyFinish fails at once (as under Site), and nothing is written.
    """
    clock = Clock()
    notified: list[Any] = []

    def render(request: WebRequest) -> object:
        request.notifyFinish().addBoth(notified.append)
        return NOT_DONE_YET

    conn = serve(Leaf(render), clock)
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.lose(Failure(ConnectionLost()))
    assert len(notified) == 1 and notified[0].check(ConnectionLost)
    assert conn.output() == b""
    assert clock.getDelayedCalls() == []


# -- the resource ends the connection itself (issue 13) ------------------------------

HANGUPS = ["loseConnection", "abortConnection"]
#: What the request's notifyFinish fails with, as under Site on TCP.
HANGUP_REASONS = {
    "loseConnection": ConnectionDone,
    "abortConnection": ConnectionAborted,
}


def gone(conn: Connection) -> None:
    """The connection is lost: no live connection and no timer is left."""
    conn.lose(Failure(ConnectionAborted()) if conn.transport.aborted else None)
    assert conn.factory.stats.active == 0
    assert conn.clock.getDelayedCalls() == []


@pytest.mark.parametrize("version", [b"HTTP/1.1", b"HTTP/1.0"])
@pytest.mark.parametrize("how", HANGUPS)
def test_protocolHangUpMidStream(how: str, version: bytes) -> None:
    """
    A resource writes part of a body (handed to connserver as a stream,
    chunked or close-delimited), then calls ``request.transport.<how>()``:
    a reactor turn later the body fails, so the protocol aborts (it never
    makes the cut body look complete).  Before the fix the connection
    stayed in WRITING for good, with no timer left.  As under Site, what
    is written in the same turn still goes out after loseConnection, not
    after abortConnection, and the request sees connectionLost.
    """
    clock = Clock()
    notified: list[Any] = []
    requests: list[WebRequest] = []

    def render(request: WebRequest) -> object:
        request.notifyFinish().addBoth(notified.append)
        request.write(b"part one;")
        requests.append(request)
        return NOT_DONE_YET

    conn = serve(Leaf(render), clock)
    conn.send(b"GET / " + version + b"\r\nHost: x\r\n\r\n")
    assert b"part one;" in conn.output()
    [request] = requests
    getattr(request.transport, how)()
    request.write(b"part two;")
    assert not conn.transport.aborted and notified == []  # a turn later
    clock.advance(0)
    assert conn.transport.aborted
    assert conn.protocol.closeReason == "response-error"
    assert len(notified) == 1 and notified[0].check(HANGUP_REASONS[how])
    request.write(b"late;")  # dropped: the connection is gone
    with pytest.raises(RuntimeError):
        request.finish()
    out = conn.output()
    assert (b"part two;" in out) == (how == "loseConnection")
    assert b"late;" not in out and not out.endswith(b"0\r\n\r\n")
    assert conn.responses(partial=True) == []
    gone(conn)


@pytest.mark.parametrize("how", HANGUPS)
def test_protocolHangUpBeforeAnyWrite(how: str) -> None:
    """
    ``request.transport.<how>()`` from a callback, nothing written: the
    request sees connectionLost a reactor turn later (as under Site), later
    writes are dropped, and the connection ends.  Site closes without a
    response; a connserver handler cannot, so loseConnection gets a 500
    with Connection: close and a close, and abortConnection a 500 head
    whose body fails at once, so the protocol aborts.
    """
    clock = Clock()
    notified: list[Any] = []
    requests: list[WebRequest] = []

    def render(request: WebRequest) -> object:
        request.notifyFinish().addBoth(notified.append)
        requests.append(request)
        return NOT_DONE_YET

    conn = serve(Leaf(render), clock)
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    [request] = requests
    getattr(request.transport, how)()
    assert notified == [] and conn.output() == b""
    clock.advance(0)
    assert len(notified) == 1 and notified[0].check(HANGUP_REASONS[how])
    request.write(b"late")
    assert b"late" not in conn.output()
    if how == "loseConnection":
        [response] = conn.responses()
        assert response.status == 500
        assert response.header(b"connection") == b"close"
        assert conn.closing and not conn.transport.aborted
    else:
        assert conn.transport.aborted
        assert conn.output().startswith(b"HTTP/1.1 500 ")
        assert conn.responses(partial=True) == []
    gone(conn)


@pytest.mark.parametrize("how", HANGUPS)
def test_protocolHangUpWhileRenderingThenBytes(how: str) -> None:
    """
    Called while rendering, then the render returns bytes: under Site the
    response is written in that turn, so after loseConnection it goes out
    whole before the close (here with Connection: close), and after
    abortConnection nothing of it is sent.
    """

    def render(request: WebRequest) -> bytes:
        getattr(request.transport, how)()
        return b"body"

    clock = Clock()
    conn = serve(Leaf(render), clock)
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    clock.advance(0)
    if how == "loseConnection":
        [response] = conn.responses()
        assert response.body == b"body"
        assert response.header(b"connection") == b"close"
        assert conn.closing and not conn.transport.aborted
    else:
        assert conn.transport.aborted
        assert b"body" not in conn.output()
        assert conn.responses(partial=True) == []
    gone(conn)


def test_protocolLoseConnectionThenFinishInOneTurn() -> None:
    """
    loseConnection, then write and finish in the same turn (from a
    callback): under Site the whole response goes out, then the close;
    here too, with Connection: close, and the request finishes normally.
    """
    clock = Clock()
    notified: list[Any] = []

    def later(request: WebRequest) -> None:
        request.write(b"a")
        request.transport.loseConnection()
        request.write(b"b")
        request.finish()

    def render(request: WebRequest) -> object:
        request.notifyFinish().addBoth(notified.append)
        clock.callLater(1, later, request)
        return NOT_DONE_YET

    conn = serve(Leaf(render), clock)
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    clock.advance(1)
    clock.advance(0)
    [response] = conn.responses()
    assert response.body == b"ab"
    assert response.header(b"connection") == b"close"
    assert conn.closing and not conn.transport.aborted
    assert notified == [None]
    gone(conn)


@pytest.mark.parametrize("how", HANGUPS)
def test_protocolHangUpAfterTheResponseIsComplete(how: str) -> None:
    """
    Once the response is complete (handed to connserver whole), the call
    changes nothing: the connection stays under connserver's persistence
    rules and serves the next request.  (Under Site it would close: this
    is the one difference left after a complete response.)
    """
    clock = Clock()
    requests: list[WebRequest] = []

    def render(request: WebRequest) -> object:
        request.write(b"streamed")
        requests.append(request)
        clock.callLater(1, request.finish)
        return NOT_DONE_YET

    conn = serve(Leaf(render), clock)
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    clock.advance(1)
    getattr(requests[0].transport, how)()
    clock.advance(0)
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    clock.advance(1)
    assert [r.body for r in conn.responses()] == [b"streamed", b"streamed"]
    assert not conn.closing and not conn.transport.aborted
    gone(conn)


# -- real sockets (127.0.0.1, port 0, bounded; tests/_sockets.py) ----------------


@pytest_twisted.ensureDeferred
async def test_realSocketHttp10KeepAlive() -> None:
    """Two HTTP/1.0 keep-alive requests on one real connection, then close."""
    from twisted.internet import reactor

    server = await sockets.serve(WebResourceHandler(Counted(), reactor=reactor))
    try:
        client = await sockets.connect(server)
        request = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        client.write(request)
        await client.waitResponses(1)
        client.write(request)
        responses = await client.waitResponses(2)
        assert [r.body for r in responses] == [b"counted", b"counted"]
        assert [r.header(b"connection") for r in responses] == [b"keep-alive"] * 2
        client.close()
        await client.waitClosed()
    finally:
        await sockets.finish(server)


@pytest_twisted.ensureDeferred
async def test_realSocketDisconnectMidRender() -> None:
    """
    A real client vanishing mid-body: the resource's notifyFinish fails,
    and its later writes are dropped (as under Site).
    """
    from twisted.internet import reactor

    finished: Deferred[None] = Deferred()
    requests: list[WebRequest] = []

    def render(request: WebRequest) -> object:
        request.notifyFinish().chainDeferred(finished)
        request.write(b"partial")
        requests.append(request)
        return NOT_DONE_YET

    server = await sockets.serve(WebResourceHandler(Leaf(render), reactor=reactor))
    try:
        client = await sockets.connect(server)
        client.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await client.waitFor(b"partial")
        client.transport.abortConnection()  # type: ignore[union-attr]
        with pytest.raises(ConnectionLost):
            await sockets.bounded(finished)
        requests[0].write(b"more")  # dropped: the client is gone
        with pytest.raises(RuntimeError):
            requests[0].finish()
    finally:
        await sockets.finish(server)


#: A resource ending the connection itself, as a client sees it, under Site
#: and under connserver: the statuses of the complete responses received,
#: how the connection ended (FIN or RST), and what the request's
#: notifyFinish gave ("ok" or the failure's type).
HANGUP_OUTCOMES: dict[str, dict[str, tuple[list[int], str, object]]] = {
    "site": {
        "lose-mid-body": ([], "FIN", ConnectionDone),
        "abort-mid-body": ([], "RST", ConnectionAborted),
        "lose-before-write": ([], "FIN", ConnectionDone),
        "abort-before-write": ([], "RST", ConnectionAborted),
        "lose-then-finish": ([200], "FIN", "ok"),
    },
    "connserver": {
        # A body cut short is aborted, never ended as if complete.
        "lose-mid-body": ([], "RST", ConnectionDone),
        "abort-mid-body": ([], "RST", ConnectionAborted),
        # A handler cannot close without an answer: 500, Connection: close.
        "lose-before-write": ([500], "FIN", ConnectionDone),
        "abort-before-write": ([], "RST", ConnectionAborted),
        "lose-then-finish": ([200], "FIN", "ok"),
    },
}


@pytest.mark.parametrize("scenario", sorted(HANGUP_OUTCOMES["site"]))
@pytest.mark.parametrize("server", sorted(HANGUP_OUTCOMES))
@pytest_twisted.ensureDeferred
async def test_realSocketHangUpAsUnderSite(server: str, scenario: str) -> None:
    """
    ``request.transport.loseConnection()`` / ``abortConnection()`` from a
    later reactor turn, after part of a body or before any byte, on a real
    socket: twisted.web's own Site and the adapter, side by side.  Both end
    the connection, with a FIN or a reset as Site does, and the request
    sees the same failure; the differences left are in HANGUP_OUTCOMES.
    """
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ServerEndpoint

    how, _, when = scenario.partition("-")
    requests: Deferred[WebRequest] = Deferred()
    notified: Deferred[None] = Deferred()

    def render(request: WebRequest) -> object:
        request.notifyFinish().chainDeferred(notified)
        if when == "mid-body":
            request.write(b"partial")
        requests.callback(request)
        return NOT_DONE_YET

    resource = Leaf(render)
    site: Any = None
    served: Any = None
    if server == "site":
        # Site's own timers (its log clock, the channel's timeout) on a Clock.
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        site = await endpoint.listen(Site(resource, reactor=Clock()))
        port = site.getHost().port
    else:
        served = await sockets.serve(WebResourceHandler(resource, reactor=reactor))
        port = served.portNumber
    try:
        client = await sockets.connect(port)
        client.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        request = await sockets.bounded(requests)
        if when == "mid-body":
            await client.waitFor(b"partial")
        if how == "lose":
            request.transport.loseConnection()
        else:
            request.transport.abortConnection()
        if when == "then-finish":
            request.write(b"done")
            request.finish()
        received = await client.waitClosed()
        assert client.reason is not None
        ending = "FIN" if client.reason.check(ConnectionDone) else "RST"
        responses = parseResponses(received, eof=ending == "FIN", partial=True)
        try:
            await sockets.bounded(notified)
            finish: object = "ok"
        except ConnectionLost as e:  # ConnectionAborted is one
            finish = type(e)
        except ConnectionDone:
            finish = ConnectionDone
        outcome = ([r.status for r in responses], ending, finish)
        assert outcome == HANGUP_OUTCOMES[server][scenario]
    finally:
        if site is not None:
            await site.stopListening()
        if served is not None:
            await sockets.finish(served)


# -- the lean request: fast path and lazily built state ---------------------------


def _general(request: WebRequest, body: bytes) -> None:
    """What server.Request.render does with bytes, step by step."""
    request.setHeader(b"Content-Length", b"%d" % (len(body),))
    request.write(body)
    request.finish()


def _renderers() -> dict[str, Any]:
    def plain(request: WebRequest) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain")
        return b"hello"

    def defaultType(request: WebRequest) -> bytes:
        return b"<p>no content type set</p>"

    def empty(request: WebRequest) -> bytes:
        return b""

    def cookiesRedirect(request: WebRequest) -> bytes:
        request.addCookie(b"k", b"v", path=b"/")
        request.addCookie(b"k2", b"v2", httpOnly=True)
        request.redirect(b"/there")
        request.setResponseCode(303, b"Look Elsewhere")
        return b"moved"

    def validators(request: WebRequest) -> bytes:
        request.setETag(b'"v1"')
        request.setLastModified(1_000_000_000)
        request.setHeader("X-Str", "value")
        return b"cached"

    def hopFields(request: WebRequest) -> bytes:
        request.setHeader(b"Connection", b"close, X-Foo")
        request.setHeader(b"Keep-Alive", b"timeout=5")
        request.setHeader(b"Server", b"myapp/1")
        request.setHeader(b"Content-Length", b"999")  # replaced, as under Site
        return b"bye"

    def losing(request: WebRequest) -> bytes:
        request.loseConnection()
        return b"closing"

    def view(request: WebRequest) -> bytes:
        request.setHeader(b"X-Sanitized", b"a\r\nb")
        return repr(
            (
                request.args,
                request.getHeader(b"x-thing"),
                request.getHeader("X-Thing"),
                request.getCookie(b"c"),
                request.content.read(),
                request.prepath,
                request.postpath,
                request.prePathURL(),
            )
        ).encode()

    def status(request: WebRequest) -> bytes:
        request.setResponseCode(418)
        return b"teapot"

    return {
        "plain": plain,
        "default-content-type": defaultType,
        "empty": empty,
        "cookies-redirect-reason": cookiesRedirect,
        "etag-last-modified": validators,
        "hop-fields": hopFields,
        "loseConnection": losing,
        "request-view": view,
        "unregistered-status": status,
    }


@pytest.mark.parametrize("name", sorted(_renderers()))
@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(
            b"GET /a/b%20c?x=1&x=2 HTTP/1.1\r\nHost: example.com\r\n"
            b"X-Thing: yes\r\nCookie: c=3; d=4\r\n\r\n",
            id="get-1.1",
        ),
        pytest.param(
            b"GET /p HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", id="get-1.0"
        ),
        pytest.param(
            b"POST /form HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n\r\nq=1&r=2",
            id="post-form",
        ),
    ],
)
def test_fastPathSameBytes(
    name: str, request_: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A render returning bytes is finished in one step; on the wire the result
    is the same as twisted.web's own setHeader / write / finish steps.
    """
    render = _renderers()[name]
    outputs = []
    for fast in (True, False):
        if not fast:
            monkeypatch.setattr(
                "connserver._handlers.web._WebRequest._finishWith",
                _general,
                raising=True,
            )
        clock = Clock()
        conn = serve(Leaf(render), clock)
        conn.send(request_)
        outputs.append(conn.output())
    assert outputs[0] == outputs[1]
    assert outputs[0].startswith(b"HTTP/1.")


def test_sessionSameBytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A session cookie set in the fast path is what the general path sets."""
    monkeypatch.setattr(Site, "_mkuid", lambda self: b"fixed-uid")

    def render(request: WebRequest) -> bytes:
        return request.getSession().uid

    outputs = []
    for fast in (True, False):
        if not fast:
            monkeypatch.setattr(
                "connserver._handlers.web._WebRequest._finishWith", _general
            )
        clock = Clock()
        handler = WebResourceHandler(Leaf(render), reactor=clock)
        conn = connect(handler, clock=clock)
        conn.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        outputs.append(conn.output())
        for session in list(handler.site.sessions.values()):
            session.expire()
    assert outputs[0] == outputs[1]
    assert b"Set-Cookie: TWISTED_SESSION=fixed-uid; Path=/\r\n" in outputs[0]


def test_answeredAtOnce() -> None:
    """
    A resource that finishes before the call returns (bytes from render_*,
    or write and finish inside render) is answered with the Response itself,
    so that the protocol writes it at once; a later answer is a Deferred.
    """
    fast, _ = respond(Leaf(lambda request: b"now"))
    assert isinstance(fast, Response) and fast.body == b"now"

    def inRender(request: WebRequest) -> object:
        request.write(b"written")
        request.finish()
        return NOT_DONE_YET

    written, _ = respond(Leaf(inRender))
    assert isinstance(written, Response) and written.body == b"written"

    clock = Clock()
    later: list[WebRequest] = []

    def deferred(request: WebRequest) -> object:
        later.append(request)
        return NOT_DONE_YET

    d, _ = respond(Leaf(deferred), clock)
    assert isinstance(d, Deferred) and not d.called
    later[0].write(b"late")
    later[0].finish()
    assert result(d).body == b"late"


def test_fastPathFinishes() -> None:
    """
    After a bytes render the request is finished as under Site:
    notifyFinish has fired, later write() raises, the body file is closed
    and gone (None), and the channel is detached.
    """
    seen: list[WebRequest] = []
    notified: list[object] = []

    def render(request: WebRequest) -> bytes:
        seen.append(request)
        request.notifyFinish().addBoth(notified.append)
        return b"done"

    response = result(respond(Leaf(render), method=b"POST", body=b"abc")[0])
    assert response.body == b"done"
    request = seen[0]
    assert notified == [None]
    assert request.finished
    assert request.content is None
    assert not hasattr(request, "channel")
    assert request.isSecure() is False  # as under Site once finished
    assert request.responseHeaders.getRawHeaders(b"content-length") == [b"4"]
    with pytest.raises(RuntimeError):
        request.write(b"more")


def test_requestHeadersBuiltOnUse() -> None:
    """
    ``requestHeaders`` and ``received_cookies`` are built from connserver's
    fields the first time a resource reads them, as twisted.web would have
    built them (canonical names, repeated fields in order, CR/LF sanitised);
    ``getHeader`` answers before that from the fields themselves, and
    assigning replaces them as on any Request.
    """
    seen: dict[str, Any] = {}

    def render(request: WebRequest) -> bytes:
        seen["lazy"] = "requestHeaders" not in vars(request)
        seen["getHeader"] = (
            request.getHeader(b"x-multi"),
            request.getHeader("X-Multi"),
            request.getHeader(b"x-odd"),
            request.getHeader(b"absent"),
        )
        seen["cookies"] = dict(request.received_cookies)
        seen["headers"] = request.requestHeaders.copy()
        seen["allHeaders"] = request.getAllHeaders()
        request.requestHeaders.setRawHeaders(b"X-Multi", [b"changed"])
        seen["afterChange"] = request.getHeader(b"X-Multi")
        return b"ok"

    fields = [
        (b"x-multi", b"one"),
        (b"X-MULTI", b"two"),
        (b"X-Odd", b"line\r\nbreak"),
        (b"Cookie", b"a=1; b=2=3; junk"),
        (b"cookie", b"c=4"),
        (b"Etag", b"e"),
    ]
    result(respond(Leaf(render), headers=fields)[0])
    expected = http_headers.Headers()
    for name, value in [(b"Host", b"example.com"), *fields]:
        expected.addRawHeader(name, value)
    assert seen["lazy"]
    assert seen["getHeader"] == (b"two", "two", b"line break", None)
    assert seen["cookies"] == {b"a": b"1", b"b": b"2=3", b"c": b"4"}
    assert seen["headers"] == expected
    assert list(seen["headers"].getAllRawHeaders()) == list(expected.getAllRawHeaders())
    assert seen["allHeaders"][b"etag"] == b"e"
    assert seen["afterChange"] == b"changed"


def test_noDateOrServerWhileRendering() -> None:
    """
    connserver writes Date and Server itself, so the request does not put
    twisted.web's in ``responseHeaders`` (Site's process() does).
    """
    seen: list[object] = []

    def render(request: WebRequest) -> bytes:
        seen.append(list(request.responseHeaders.getAllRawHeaders()))
        return b"x"

    result(respond(Leaf(render))[0])
    assert seen == [[]]


def test_renderNotBytesGeneralPath() -> None:
    """A render returning neither bytes nor NOT_DONE_YET: Site's 500 page."""
    response = result(respond(Leaf(lambda request: "text, not bytes"))[0])
    assert response.code == 500
    assert b"Request did not return bytes" in response.body


def test_unsupportedMethodReplayed() -> None:
    """
    405 with Allow, and HEAD answered through render_GET, as under Site: the
    first render's exception is handed to twisted.web's own render.
    """
    calls: list[bytes] = []

    class GetOnly(Resource):
        """Only GET: no render_HEAD (Resource has one), so HEAD is faked."""

        isLeaf = True

        def render(self, request: WebRequest) -> bytes:  # type: ignore[override]
            calls.append(request.method)
            if request.method != b"GET":
                raise UnsupportedMethod([b"GET"])
            return b"twelve bytes"

    response = result(respond(GetOnly(), method=b"POST")[0])
    assert response.code == 405
    assert fields(response)[b"allow"] == [b"GET"]
    assert b"Method Not Allowed" in response.body
    unknown = result(respond(GetOnly(), method=b"BREW")[0])
    assert unknown.code == 501
    head = result(respond(GetOnly(), method=b"HEAD")[0])
    assert head.code == 200
    assert fields(head)[b"content-length"] == [b"12"]
    assert calls == [b"POST", b"BREW", b"HEAD", b"GET"]
