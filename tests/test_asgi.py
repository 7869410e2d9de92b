"""
``ASGIHandler`` and ``Lifespan`` driven on a plain asyncio loop, without a
reactor (the test process runs Twisted's default one, never started here):
requests built by hand, the Deferred awaited as a future, a streamed body
started with a consumer that records what it gets.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone

from connserver._connection.message import Request, Response
from connserver._handlers.asgi import ASGIAppError, ASGIHandler, ClientDisconnected
from connserver._handlers.asgilifespan import Lifespan, LifespanError
from connserver._http.headers import Headers


class Recorder:
    """The consumer of a streamed body."""

    def __init__(self) -> None:
        self.data: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.data.append(data)


class PartsBody:
    """A request body source the test feeds by hand."""

    def __init__(self) -> None:
        self.request: Request | None = None
        self.paused = False

    def bodyWanted(self, request: Request) -> None:
        self.request = request

    def pauseBody(self) -> None:
        self.paused = True

    def resumeBody(self) -> None:
        self.paused = False

    def stopBody(self) -> None:
        pass


def makeRequest(target: bytes = b"/", **kwargs: Any) -> Request:
    kwargs.setdefault("peer", IPv4Address("TCP", "10.0.0.1", 5000))
    kwargs.setdefault("host", IPv4Address("TCP", "127.0.0.1", 8080))
    return Request(kwargs.pop("method", b"GET"), target, **kwargs)


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, 10))


async def answer(handler: ASGIHandler, request: Request) -> Response:
    """The handler's answer: at once (sent before the app waited) or later."""
    result = handler(request)
    if isinstance(result, Response):
        return result
    assert isinstance(result, Deferred)
    return await result.asFuture(asyncio.get_running_loop())  # type: ignore[no-any-return]


def test_scope() -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})

    async def main() -> Response:
        request = makeRequest(
            b"/a%20b/%C3%A9?x=1&y=%20",
            headers=Headers([(b"Host", b"example.com"), (b"X-Thing", b"Value")]),
            version=(1, 0),
        )
        request.scheme = "https"
        return await answer(ASGIHandler(app, rootPath="/api/"), request)

    response = run(main())
    assert response.code == 204
    scope = seen[0]
    assert scope["type"] == "http"
    assert scope["asgi"]["version"] == "3.0"
    assert scope["http_version"] == "1.0"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "https"
    assert scope["path"] == "/api/a b/é"
    assert scope["raw_path"] == b"/api/a%20b/%C3%A9"
    assert scope["root_path"] == "/api"
    assert scope["query_string"] == b"x=1&y=%20"
    assert scope["headers"] == [(b"host", b"example.com"), (b"x-thing", b"Value")]
    assert scope["client"] == ("10.0.0.1", 5000)
    assert scope["server"] == ("127.0.0.1", 8080)


def test_absoluteFormTarget() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["path"])
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"ok"})

    run(answer(ASGIHandler(app), makeRequest(b"http://example.com/p?q")))
    assert seen == ["/p"]


def test_emptyBodyThenDisconnectAfterResponse() -> None:
    messages: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        messages.append(await receive())
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"done"})
        messages.append(await receive())

    async def main() -> Response:
        handler = ASGIHandler(app)
        response = await answer(handler, makeRequest())
        await asyncio.sleep(0)
        return response

    response = run(main())
    assert response.body == b"done"
    assert messages == [
        {"type": "http.request", "body": b"", "more_body": False},
        {"type": "http.disconnect"},
    ]


def test_bodyInPartsWithBackpressure() -> None:
    messages: list[dict[str, Any]] = []
    source = PartsBody()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            messages.append(message)
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"ok"})

    async def main() -> Response:
        request = makeRequest(method=b"POST", bodySource=source, contentLength=None)
        request.chunked = True
        deferred = ASGIHandler(app)(request)
        assert isinstance(deferred, Deferred)
        await asyncio.sleep(0)
        assert source.request is request
        request.receiveBodyData(b"a" * 70000)
        # More than the high-water mark waits for the app: reading pauses.
        assert source.paused
        await asyncio.sleep(0)
        assert not source.paused
        request.receiveBodyData(b"b")
        await asyncio.sleep(0)
        request.receiveBodyEnd()
        return await deferred.asFuture(asyncio.get_running_loop())  # type: ignore[no-any-return]

    response = run(main())
    assert response.code == 200
    assert [len(m["body"]) for m in messages] == [70000, 1, 0]
    assert [m["more_body"] for m in messages] == [True, True, False]


def test_clientGoneWhileReadingBody() -> None:
    seen: list[dict[str, Any]] = []
    source = PartsBody()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(await receive())
        seen.append(await receive())

    async def main() -> None:
        request = makeRequest(method=b"POST", bodySource=source, contentLength=10)
        deferred = ASGIHandler(app)(request)
        assert isinstance(deferred, Deferred)
        await asyncio.sleep(0)
        request.receiveBodyData(b"12345")
        await asyncio.sleep(0)
        deferred.addErrback(lambda _: None)
        request.receiveBodyEnd(Failure(ConnectionError("gone")))
        deferred.cancel()
        await asyncio.sleep(0.01)

    run(main())
    assert seen == [
        {"type": "http.request", "body": b"12345", "more_body": True},
        {"type": "http.disconnect"},
    ]


def test_streamedResponseAndDisconnect() -> None:
    events: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": b"one", "more_body": True})
        await send({"type": "http.response.body", "body": b"two", "more_body": True})
        events.append((await receive())["type"])  # the (empty) request
        events.append((await receive())["type"])  # waits for the client to go
        try:
            await send({"type": "http.response.body", "body": b"3", "more_body": True})
        except ClientDisconnected:
            events.append("send raised")

    async def main() -> Recorder:
        response = await answer(ASGIHandler(app), makeRequest())
        body: Any = response.body
        recorder = Recorder()
        done = body.startProducing(recorder)
        for _ in range(10):
            if len(recorder.data) == 2:
                break
            await asyncio.sleep(0)
        body.stopProducing()  # the client went away
        await asyncio.sleep(0.01)
        # The app returned mid-body: the body failed (connserver ignores it,
        # its exchange being over).
        failures: list[Failure] = []
        done.addErrback(failures.append)
        assert failures
        return recorder

    recorder = run(main())
    assert recorder.data == [b"one", b"two"]
    assert events == ["http.request", "http.disconnect", "send raised"]


def test_streamedBodyWaitsWhilePaused() -> None:
    sent: list[int] = []
    gate: list[asyncio.Event] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        gate.append(asyncio.Event())
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
        await gate[0].wait()
        for i in range(3):
            await send({"type": "http.response.body", "body": b"y", "more_body": True})
            sent.append(i)
        await send({"type": "http.response.body"})

    async def main() -> list[bytes]:
        response = await answer(ASGIHandler(app), makeRequest())
        body: Any = response.body
        recorder = Recorder()
        done = body.startProducing(recorder)
        body.pauseProducing()
        gate[0].set()
        await asyncio.sleep(0.01)
        assert sent == []  # the send after a pause waits for the resume
        body.resumeProducing()
        await asyncio.sleep(0.01)
        assert done.called
        return recorder.data

    assert run(main()) == [b"x", b"y", b"y", b"y"]
    assert sent == [0, 1, 2]


def test_aBodyStreamedBeforeTheAppWaitsIsHeldBackToo() -> None:
    """
    Started eagerly, an app can stream on in the step it began its response
    in, before connserver has taken the response: its sends wait for the
    body to start, then for the client as ever, rather than pile up.
    """
    sent: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        for i in range(100):
            await send(
                {"type": "http.response.body", "body": b"more", "more_body": True}
            )
            sent.append(i)
        await send({"type": "http.response.body"})

    async def main() -> None:
        response = await answer(ASGIHandler(app), makeRequest())
        body: Any = response.body
        assert sent == [] and body.pending == [b"first"]

        class Pausing(Recorder):
            """A client that takes one write at a time."""

            def write(self, data: bytes) -> None:
                super().write(data)
                body.pauseProducing()

        recorder = Pausing()
        done = body.startProducing(recorder)
        for _ in range(10):
            await asyncio.sleep(0)
        assert recorder.data == [b"first", b"more"] and sent == []
        for _ in range(1000):
            if done.called:
                break
            body.resumeProducing()
            await asyncio.sleep(0)
        assert done.called
        assert sent == list(range(100))
        assert recorder.data == [b"first"] + [b"more"] * 100

    run(main())


async def failure(handler: ASGIHandler, request: Request) -> Failure:
    result = handler(request)
    assert isinstance(result, Deferred)
    failures: list[Failure] = []
    result.addErrback(failures.append)
    for _ in range(10):
        await asyncio.sleep(0)
    return failures[0]


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([], "returned without sending http.response.start"),
        (
            [{"type": "http.response.start", "status": 200}],
            "without sending its response body",
        ),
        (
            [
                {"type": "http.response.start", "status": 200},
                {"type": "http.response.start", "status": 200},
            ],
            "a second http.response.start",
        ),
        ([{"type": "http.response.body"}], "body before http.response.start"),
        ([{"type": "http.response.start", "status": 99}], "status 99"),
        ([{"type": "nonsense"}], "unexpected message 'nonsense'"),
    ],
)
def test_badApps(messages: list[dict[str, Any]], expected: str) -> None:
    raised: list[BaseException] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            for message in messages:
                await send(message)
        except ASGIAppError as error:
            raised.append(error)
            raise

    f = run(failure(ASGIHandler(app), makeRequest()))
    assert f.check(ASGIAppError)
    assert expected in f.getErrorMessage()
    # The app got the error from the send that broke the protocol.
    assert all(isinstance(error, ASGIAppError) for error in raised)


def test_appException() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("boom")

    f = run(failure(ASGIHandler(app), makeRequest()))
    assert f.check(ValueError)
    assert "test_asgi.py" in f.getTraceback()


def test_noAsyncioLoop() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("never called")

    response = ASGIHandler(app)(makeRequest())
    assert isinstance(response, Response) and response.code == 500


def test_lifespan() -> None:
    events: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        scope["state"]["db"] = "ready"
        while True:
            message = await receive()
            events.append(message["type"])
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def main() -> Lifespan:
        lifespan = Lifespan(app)
        await lifespan.startup()
        await lifespan.shutdown(5)
        return lifespan

    lifespan = run(main())
    assert events == ["lifespan.startup", "lifespan.shutdown"]
    assert lifespan.supported and lifespan.state == {"db": "ready"}


def test_lifespanFailedAndUnsupported() -> None:
    async def failing(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no db"})

    async def unsupported(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("Django can only handle ASGI/HTTP connections")

    with pytest.raises(LifespanError, match="no db"):
        run(Lifespan(failing).startup())

    async def main() -> Lifespan:
        lifespan = Lifespan(unsupported)
        await lifespan.startup()
        await lifespan.shutdown(5)
        return lifespan

    assert not run(main()).supported


def test_lifespanShutdownBounded() -> None:
    async def stuck(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await asyncio.sleep(100)

    async def main() -> None:
        lifespan = Lifespan(stuck)
        await lifespan.startup()
        await lifespan.shutdown(0.05)
        await asyncio.sleep(0)

    run(main())


def test_responseDoneIsTheBodyEnd() -> None:
    assert Failure(ResponseDone()).check(ResponseDone)
