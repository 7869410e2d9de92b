"""
``--wsgi``: ``WSGIHandler`` running Flask, Django and raw PEP 3333 apps
(``tests/wsgiapps.py``) behind a ``ConnectionFactory`` on 127.0.0.1, port 0,
with the real reactor and the handler's own thread pool.

Every response iterable's ``close()`` is recorded by the apps
(``wsgiapps.CLOSED``); the pool runs the ``close()`` it owes before it stops,
so a test checks them after ``stopThreads``.  Tests that wait for the
kernel's buffers to fill, or for a stuck thread, are marked ``slow``.
"""

from __future__ import annotations

import hashlib
import json
import queue
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, threads
from twisted.logger import LogEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone

from connserver._handlers import wsgi as wsgimodule
from connserver._handlers.wsgi import WSGIHandler

from . import wsgiapps
from ._harness import ParsedResponse, parseResponses
from ._helpers import eventuallyDeferred, realReactor
from ._sockets import Server, bounded, connect, finish, serve

FORM = b"name=bob&tag=a&tag=b"


@pytest.fixture(scope="module")
def flaskApp() -> Any:
    return wsgiapps.makeFlask()


@pytest.fixture(scope="module")
def djangoApp() -> Any:
    return wsgiapps.makeDjango()


@pytest.fixture(params=["flask", "django"])
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def app(framework: str, request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(f"{framework}App")


@pytest.fixture(autouse=True)
def closed() -> Iterator[list[str]]:
    wsgiapps.CLOSED.clear()
    wsgiapps.PRODUCED.clear()
    yield wsgiapps.CLOSED


def closeName(framework: str, path: str) -> str:
    """What the app records in CLOSED for a request to ``path``."""
    return "django" if framework == "django" else path


async def start(app: Any, **config: Any) -> tuple[WSGIHandler, Server]:
    handler = WSGIHandler(app, reactor=realReactor())
    handler.startThreads()
    server = await serve(handler, **config)
    return handler, server


async def stop(handler: WSGIHandler, server: Server) -> None:
    """Drain, stop the pool (the close() owed run first); no thread left."""
    await finish(server)
    await bounded(handler.stopThreads())
    assert not [t for t in handler.pool.threads if t.is_alive()]


async def exchange(
    server: Server, data: bytes, methods: list[bytes] | None = None
) -> list[ParsedResponse]:
    """Send ``data`` (its last request says close); the responses."""
    client = await connect(server)
    client.write(data)
    received = await client.waitClosed()
    return parseResponses(received, methods, eof=True)


def get(path: bytes, *fields: bytes) -> bytes:
    lines = b"".join(field + b"\r\n" for field in fields)
    return b"GET %s HTTP/1.1\r\nHost: x\r\n%sConnection: close\r\n\r\n" % (
        path,
        lines,
    )


def post(path: bytes, body: bytes, contentType: bytes) -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
        % (path, contentType, len(body), body)
    )


def failuresOf(events: list[LogEvent], text: str) -> list[LogEvent]:
    return [e for e in events if text in str(e["log_failure"].value)]


# -- the frameworks ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_formPost(app: Any, framework: str, closed: list[str]) -> None:
    handler, server = await start(app)
    try:
        [response] = await exchange(
            server,
            post(b"/form", FORM, b"application/x-www-form-urlencoded"),
            [b"POST"],
        )
    finally:
        await stop(handler, server)
    assert response.status == 200
    assert json.loads(response.body) == {"name": "bob", "tags": ["a", "b"]}
    assert closed == [closeName(framework, "/form")]


@pytest_twisted.ensureDeferred
async def test_streamedResponse(app: Any, framework: str, closed: list[str]) -> None:
    handler, server = await start(app)
    try:
        [response] = await exchange(server, get(b"/stream"))
    finally:
        await stop(handler, server)
    assert response.status == 200
    assert response.header(b"transfer-encoding") == b"chunked"
    assert response.body == b"".join(b"chunk %d\n" % i for i in range(5))
    assert closed == [closeName(framework, "/stream")]


def uploadInThread(port: int, size: int, chunked: bool) -> tuple[int, bytes, str]:
    """
    POST ``size`` bytes to /upload from a blocking socket (so that the
    client never holds more than one 64 KiB block): status, body, digest.
    """
    block = bytes(range(256)) * 256
    digest = hashlib.sha256()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        framing = (
            b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % size
        )
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/octet-stream\r\n%s\r\n"
            b"Connection: close\r\n\r\n" % framing
        )
        sent = 0
        while sent < size:
            piece = block[: size - sent]
            digest.update(piece)
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            sent += len(piece)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
        received = bytearray()
        while data := sock.recv(65536):
            received += data
    [response] = parseResponses(bytes(received), [b"POST"], eof=True)
    return response.status, response.body, digest.hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("reader", ["flask", "django", "slow-raw"])
@pytest_twisted.ensureDeferred
async def test_largeUploadInBoundedMemory(
    reader: str, chunked: bool, closed: list[str], request: pytest.FixtureRequest
) -> None:
    """
    20 MB through ``wsgi.input``: the app reads it in 64 KiB pieces while it
    arrives, and the server's memory stays far below the body's size, also
    when the app stops reading for a while (reading from the socket pauses).
    """
    if chunked and reader == "django":
        pytest.skip("Django reads CONTENT_LENGTH bytes: no chunked uploads")
    app = (
        wsgiapps.raw
        if reader == "slow-raw"
        else request.getfixturevalue(f"{reader}App")
    )
    size = 20 * 1024 * 1024
    handler, server = await start(app, maxBodyBytes=64 * 1024 * 1024)
    tracemalloc.start()
    try:
        status, body, digest = await bounded(
            threads.deferToThread(uploadInThread, server.portNumber, size, chunked),
            60,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await stop(handler, server)
    assert status == 200, body
    assert json.loads(body) == {"size": size, "sha256": digest}
    assert peak < 4 * 1024 * 1024, peak
    if reader != "slow-raw":
        assert closed == [closeName(reader, "/upload")]


@pytest_twisted.ensureDeferred
async def test_exceptionBeforeStartResponse(
    app: Any, logFailures: list[LogEvent]
) -> None:
    """500 and one log line; the connection stays usable until its close."""
    handler, server = await start(app)
    try:
        responses = await exchange(
            server,
            b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n" + get(b"/stream"),
            [b"GET", b"GET"],
        )
    finally:
        await stop(handler, server)
    assert responses[0].status == 500
    assert len(failuresOf(logFailures, "boom before start_response")) == 1
    assert len(logFailures) == 1


@pytest_twisted.ensureDeferred
async def test_exceptionAfterTheHeaders(
    app: Any, framework: str, closed: list[str], logFailures: list[LogEvent]
) -> None:
    """The response is aborted, never padded; one log line; close() called."""
    handler, server = await start(app)
    try:
        client = await connect(server)
        client.write(get(b"/late"))
        received = await client.waitClosed()
    finally:
        await stop(handler, server)
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"first part\n" in received
    assert not received.endswith(b"0\r\n\r\n")
    assert len(failuresOf(logFailures, "boom after the headers")) == 1
    assert len(logFailures) == 1
    assert closed == [closeName(framework, "/late")]


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_clientGoneMidStreamStopsTheIterationAndCloses(
    app: Any, framework: str, closed: list[str]
) -> None:
    """
    An endless stream to a client that stops reading: the iterable is pulled
    only while the connection wants more (its count stops growing), and when
    the client goes the iteration stops and close() is called.
    """
    handler, server = await start(app)
    try:
        client = await connect(server)
        client.write(get(b"/endless"))
        await client.waitUntil(lambda received: len(received) > 256 * 1024)
        assert client.transport is not None
        client.transport.pauseProducing()  # type: ignore[attr-defined]
        counts: list[int] = []

        def settled() -> bool:
            counts.append(wsgiapps.PRODUCED.get(framework, 0))
            return len(counts) > 3 and counts[-1] == counts[-4]

        await eventuallyDeferred(settled, timeout=20, interval=0.2)
        # A few MiB of socket buffers at most, not an endless pile.
        assert counts[-1] < 1000, counts
        client.transport.abortConnection()  # type: ignore[attr-defined]
        await client.waitClosed()
    finally:
        await stop(handler, server)
    assert closed == [closeName(framework, "/endless")]
    produced = wsgiapps.PRODUCED[framework]
    assert produced <= counts[-1] + 1


@pytest_twisted.ensureDeferred
async def test_environ(djangoApp: Any) -> None:
    """
    PEP 3333 environ: REMOTE_ADDR and wsgi.url_scheme from --trusted-proxies,
    PATH_INFO percent-decoded as latin-1, fields combined, underscore names
    left out, SERVER_NAME/PORT from Host.
    """
    handler, server = await start(wsgiapps.raw, trustedProxies=("127.0.0.0/8",))
    try:
        [response] = await exchange(
            server,
            b"POST /a%20b/%C3%A9%2Fc?q=1&r=%20 HTTP/1.1\r\n"
            b"Host: example.com:8443\r\n"
            b"X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n"
            b"X_Forwarded_Proto: http\r\n"
            b"X-Multi: a\r\nX-Multi: b\r\nCookie: a=1\r\nCookie: b=2\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 3\r\n"
            b"Connection: close\r\n\r\nabc",
            [b"POST"],
        )
    finally:
        await stop(handler, server)
    environ = json.loads(response.body)
    expected = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/a b/\xc3\xa9/c",
        "QUERY_STRING": "q=1&r=%20",
        "SERVER_NAME": "example.com",
        "SERVER_PORT": "8443",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "203.0.113.9",
        "CONTENT_TYPE": "text/plain",
        "CONTENT_LENGTH": "3",
        "HTTP_HOST": "example.com:8443",
        "HTTP_X_FORWARDED_PROTO": "https",
        "HTTP_X_MULTI": "a, b",
        "HTTP_COOKIE": "a=1; b=2",
        "wsgi.url_scheme": "https",
        "wsgi.version": [1, 0],
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
    }
    assert {k: environ.get(k) for k in expected} == expected
    assert "HTTP_CONTENT_TYPE" not in environ
    assert "HTTP_CONTENT_LENGTH" not in environ
    assert [k for k in environ if "FORWARDED_PROTO" in k] == ["HTTP_X_FORWARDED_PROTO"]


@pytest_twisted.ensureDeferred
async def test_djangoSeesTheResolvedClient(djangoApp: Any) -> None:
    handler, server = await start(djangoApp, trustedProxies=("127.0.0.0/8",))
    try:
        [trusted] = await exchange(
            server,
            get(
                b"/environ",
                b"X-Forwarded-For: 198.51.100.7",
                b"X-Forwarded-Proto: https",
            ),
        )
    finally:
        await stop(handler, server)
    handler, server = await start(djangoApp)
    try:
        [direct] = await exchange(
            server,
            get(
                b"/environ",
                b"X-Forwarded-For: 198.51.100.7",
                b"X-Forwarded-Proto: https",
            ),
        )
    finally:
        await stop(handler, server)
    seen = json.loads(trusted.body)
    assert (seen["REMOTE_ADDR"], seen["scheme"], seen["is_secure"]) == (
        "198.51.100.7",
        "https",
        True,
    )
    seen = json.loads(direct.body)
    assert (seen["REMOTE_ADDR"], seen["scheme"], seen["is_secure"]) == (
        "127.0.0.1",
        "http",
        False,
    )


@pytest_twisted.ensureDeferred
async def test_serverNameFromTheListenerWithoutHost() -> None:
    handler, server = await start(wsgiapps.raw)
    port = server.portNumber
    try:
        [response] = await exchange(server, b"GET /x HTTP/1.0\r\n\r\n")
    finally:
        await stop(handler, server)
    environ = json.loads(response.body)
    assert environ["SERVER_NAME"] == "127.0.0.1"
    assert environ["SERVER_PORT"] == str(port)
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.0"


# -- the edge cases, with the raw app ----------------------------------------------


@pytest_twisted.ensureDeferred
async def test_raisedInTheFirstIterationIs500AndClosed(
    closed: list[str], logFailures: list[LogEvent]
) -> None:
    handler, server = await start(wsgiapps.raw)
    try:
        [response] = await exchange(server, get(b"/raise-first"))
    finally:
        await stop(handler, server)
    assert response.status == 500
    assert len(failuresOf(logFailures, "raised in the first iteration")) == 1
    assert len(logFailures) == 1
    assert closed == ["raise-first"]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (b"/bad-status", "WSGI status 'OK'"),
        (b"/bad-header", "CR, LF or NUL"),
        (b"/bytes-header", "must be str"),
        (b"/twice", "start_response() called twice"),
        (b"/not-bytes", "not bytes"),
        (b"/no-start", "did not call start_response()"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_badApplicationsGet500AndOneLine(
    path: bytes, message: str, logFailures: list[LogEvent]
) -> None:
    handler, server = await start(wsgiapps.raw)
    try:
        [response] = await exchange(server, get(path))
    finally:
        await stop(handler, server)
    assert response.status == 500
    assert len(failuresOf(logFailures, message)) == 1, logFailures
    assert len(logFailures) == 1


@pytest_twisted.ensureDeferred
async def test_excInfoReplacesTheResponseBeforeItStarted() -> None:
    handler, server = await start(wsgiapps.raw)
    try:
        [response] = await exchange(server, get(b"/exc-info"))
    finally:
        await stop(handler, server)
    assert response.status == 503
    assert response.header(b"x-after") == b"1"
    assert response.header(b"x-before") is None
    assert response.body == b"replaced"


@pytest_twisted.ensureDeferred
async def test_writeThenTheIterable(closed: list[str]) -> None:
    handler, server = await start(wsgiapps.raw)
    try:
        [response] = await exchange(server, get(b"/write"))
    finally:
        await stop(handler, server)
    assert response.status == 200
    assert response.body == b"written then iterated"
    assert closed == ["write"]


@pytest_twisted.ensureDeferred
async def test_contentLengthBoundsTheIteration(closed: list[str]) -> None:
    """Never more than Content-Length (the rest is not iterated); fewer aborts."""
    handler, server = await start(wsgiapps.raw)
    try:
        client = await connect(server)
        client.write(b"GET /too-long HTTP/1.1\r\nHost: x\r\n\r\n")
        [long] = await client.waitResponses(1)
        client.write(get(b"/too-short"))
        received = await client.waitClosed()
    finally:
        await stop(handler, server)
    assert (long.status, long.body) == (200, b"abcde")
    assert received.endswith(b"abcdef")
    assert sorted(closed) == ["too-long", "too-short"]


@pytest_twisted.ensureDeferred
async def test_connectionCloseFromTheAppIsHonoured() -> None:
    handler, server = await start(wsgiapps.raw)
    try:
        client = await connect(server)
        client.write(
            b"GET /close HTTP/1.1\r\nHost: x\r\n\r\nGET /x HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        received = await client.waitClosed()
    finally:
        await stop(handler, server)
    [response] = parseResponses(received, [b"GET"], eof=True)
    assert response.header(b"connection") == b"close"
    assert response.body == b"bye"


@pytest_twisted.ensureDeferred
async def test_inputLinesFromAChunkedBody() -> None:
    handler, server = await start(wsgiapps.raw)
    try:
        [response] = await exchange(
            server,
            b"POST /lines HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n"
            b"4\r\none\n\r\n6\r\ntwo\nth\r\n4\r\nree\n\r\n1\r\nx\r\n0\r\n\r\n",
            [b"POST"],
        )
    finally:
        await stop(handler, server)
    assert json.loads(response.body) == ["one\n", "two\n", "three\n", "x"]


@pytest_twisted.ensureDeferred
async def test_maxBodyBytesIs413() -> None:
    """Known too large: 413 without calling the app; chunked: 413 once over."""
    calls: list[str] = []

    def counting(environ: dict[str, Any], startResponse: Any) -> Any:
        calls.append(environ["PATH_INFO"])
        return wsgiapps.raw(environ, startResponse)

    handler, server = await start(counting, maxBodyBytes=1000)
    try:
        [known] = await exchange(
            server, post(b"/read-all", b"y" * 1001, b"text/plain"), [b"POST"]
        )
        [chunked] = await exchange(
            server,
            b"POST /read-all HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"\r\n" + b"200\r\n" + b"z" * 512 + b"\r\n" + b"200\r\n" + b"z" * 512,
            [b"POST"],
        )
        [fits] = await exchange(
            server, post(b"/read-all", b"y" * 1000, b"text/plain"), [b"POST"]
        )
    finally:
        await stop(handler, server)
    assert known.status == 413
    assert chunked.status == 413
    assert (fits.status, fits.body) == (200, b"1000")
    assert calls == ["/read-all", "/read-all"]


@pytest_twisted.ensureDeferred
async def test_headOfAStreamStillCloses(closed: list[str]) -> None:
    handler, server = await start(wsgiapps.raw)
    try:
        [response] = await exchange(
            server,
            b"HEAD /late-start HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            [b"HEAD"],
        )
    finally:
        await stop(handler, server)
    assert response.status == 200
    assert response.body == b""
    assert closed == ["late-start"]


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_clientGoneBeforeTheAnswerStillCloses(closed: list[str]) -> None:
    handler, server = await start(wsgiapps.raw)
    try:
        client = await connect(server)
        client.write(get(b"/slow", b"X: 1").replace(b"/slow", b"/slow?0.3"))
        await eventuallyDeferred(lambda: len(handler.pool.working) == 1, timeout=5)
        client.transport.abortConnection()  # type: ignore[union-attr]
        await client.waitClosed()
    finally:
        await stop(handler, server)
    assert closed == ["slow"]


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_stopDoesNotWaitForeverForAStuckApp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """stopThreads waits STOP_WAIT, warns, and leaves no timer behind."""
    monkeypatch.setattr(wsgimodule, "STOP_WAIT", 0.2)
    release = threading.Event()

    def stuck(environ: dict[str, Any], startResponse: Any) -> list[bytes]:
        release.wait(10)
        startResponse("200 OK", [])
        return [b""]

    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    handler, server = await start(stuck)
    try:
        client = await connect(server)
        client.write(get(b"/"))
        await eventuallyDeferred(lambda: len(handler.pool.working) == 1, timeout=5)
        client.transport.abortConnection()  # type: ignore[union-attr]
        await finish(server)
        started = time.monotonic()
        await bounded(handler.stopThreads())
        assert time.monotonic() - started < 5
    finally:
        release.set()
        globalLogPublisher.removeObserver(events.append)
    assert any("still running" in str(e.get("log_format")) for e in events)
    # No timer of the handler is left (other tests' LoopingCalls may be).
    assert not [
        c
        for c in realReactor().getDelayedCalls()
        if getattr(c.func, "__module__", "") == wsgimodule.__name__
    ]


def test_handlerArguments() -> None:
    with pytest.raises(TypeError, match="not a WSGI application"):
        WSGIHandler("not callable")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 1"):
        WSGIHandler(wsgiapps.hello, threads=0)


# -- wsgi.input as a file ---------------------------------------------------------


class _QueuedCalls:
    """A reactor whose callFromThread queues the call for the test to run."""

    def __init__(self) -> None:
        self.calls: queue.Queue[tuple[Any, tuple[Any, ...]]] = queue.Queue()

    def callFromThread(self, f: Any, *args: Any) -> None:
        self.calls.put((f, args))

    def runQueued(self) -> None:
        while True:
            try:
                f, args = self.calls.get_nowait()
            except queue.Empty:
                return
            f(*args)


class _Producer:
    """The connection's side of Request.deliverBody: its pauses, counted."""

    paused = False
    resumes = 0

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.resumes += 1

    def stopProducing(self) -> None:
        raise AssertionError("not stopped in these tests")


class _BodyRequest:
    def deliverBody(self, protocol: Any) -> None:
        pass  # The test feeds the input itself.


def readInThread(read: Any) -> tuple[threading.Thread, list[bytes]]:
    result: list[bytes] = []
    thread = threading.Thread(target=lambda: result.append(read()), daemon=True)
    thread.start()
    return thread, result


def feedUntilDone(
    reactor: _QueuedCalls,
    body: wsgimodule._Input,
    producer: _Producer,
    data: bytes,
    thread: threading.Thread,
) -> None:
    """Deliver ``data`` as the connection would: only while not paused."""
    sent = 0
    while sent < len(data):
        reactor.runQueued()
        if producer.paused:
            # Only the reader's thread can resume the connection.
            try:
                f, args = reactor.calls.get(timeout=10)
            except queue.Empty:
                raise AssertionError(f"stuck, paused at {sent} bytes") from None
            f(*args)
            continue
        body.dataReceived(data[sent : sent + 16384])
        sent += 16384
    body.connectionLost(Failure(ResponseDone()))
    thread.join(10)
    assert not thread.is_alive(), "the reader never returned"


def makeInput() -> tuple[_QueuedCalls, wsgimodule._Input, _Producer]:
    reactor = _QueuedCalls()
    body = wsgimodule._Input(reactor, _BodyRequest(), None)  # type: ignore[arg-type]
    producer = _Producer()
    body.makeConnection(producer)  # type: ignore[arg-type]
    return reactor, body, producer


def test_inputReadOfASizeWaitsForAllOfIt() -> None:
    """
    ``read(n)`` is a file's: n bytes unless the body ends first (apps read
    CONTENT_LENGTH bytes in one call), even when part of them is buffered.
    """
    reactor, body, producer = makeInput()
    body.dataReceived(b"12345")
    thread, result = readInThread(lambda: body.read(10))
    feedUntilDone(reactor, body, producer, b"67890", thread)
    assert result == [b"1234567890"]
    assert body.read(1) == b""


@pytest.mark.parametrize("how", ["read", "read-size", "readline"])
def test_inputReadsLargerThanItsBuffer(how: str) -> None:
    """
    A read or a line longer than the input's buffer: the reader takes what
    is there and reading from the connection resumes, where waiting for
    all of it at once would wait forever on a paused connection.
    """
    size = 4 * wsgimodule._INPUT_HIGH
    data = b"0123456789abcdef" * (size // 16) + b"\nafter"
    reactor, body, producer = makeInput()
    read = {
        "read": lambda: body.read(),
        "read-size": lambda: body.read(size + 1),
        "readline": lambda: body.readline(),
    }[how]
    thread, result = readInThread(read)
    feedUntilDone(reactor, body, producer, data, thread)
    assert producer.resumes >= 3
    expected = data if how == "read" else data[: size + 1]
    assert result == [expected]
    if how != "read":
        assert body.read() == b"after"


def test_inputReadlineStopsAtTheLimitOrTheNewline() -> None:
    _, body, _ = makeInput()
    body.dataReceived(b"abc\ndefgh")
    body.connectionLost(Failure(ResponseDone()))
    assert body.readline(2) == b"ab"
    assert body.readline() == b"c\n"
    assert body.readline(10) == b"defgh"
    assert body.readline() == b""


@pytest_twisted.ensureDeferred
async def test_readAllOfABodyLargerThanTheInputBuffer() -> None:
    """``wsgi.input.read()`` of 1 MiB, four times the buffer, over a socket."""
    handler, server = await start(wsgiapps.raw, maxBodyBytes=2 * 1024 * 1024)
    try:
        [response] = await bounded(
            defer.ensureDeferred(
                exchange(
                    server,
                    post(b"/read-all", b"r" * (1024 * 1024), b"text/plain"),
                    [b"POST"],
                )
            )
        )
    finally:
        await stop(handler, server)
    assert (response.status, response.body) == (200, b"1048576")
