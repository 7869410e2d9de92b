"""
``ResponseDeferred`` (``_connection.message``): a Deferred whose outcome
one consumer (the exchange) takes directly, without a callback chain, and
which is an ordinary Deferred to everyone else.  Then the exchange with handlers that return
one: answered, failed, cancelled when the client leaves, and chained by a
wrapper before the exchange sees it.
"""

from __future__ import annotations

import pytest
from twisted.internet.defer import AlreadyCalledError, CancelledError, Deferred
from twisted.logger import capturedLogs
from twisted.python.failure import Failure

from connserver._connection.message import Request, Response, ResponseDeferred

from ._harness import connect


class Consumer:
    def __init__(self, raises: bool = False) -> None:
        self.answers: list[object] = []
        self.failures: list[Failure] = []
        self.raises = raises

    def handlerAnswered(self, response: object) -> None:
        self.answers.append(response)
        if self.raises:
            raise RuntimeError("consumer bug")

    def handlerFailedAsync(self, failure: Failure) -> None:
        self.failures.append(failure)


def test_directCallbackReachesTheConsumerAndLeavesNone() -> None:
    d: ResponseDeferred = ResponseDeferred()
    consumer = Consumer()
    assert d.consumeDirectly(consumer)
    d.callback("answer")
    assert consumer.answers == ["answer"]
    assert d.called and d.result is None
    # Added afterwards: runs at once with what the consumer's callback left.
    later: list[object] = []
    d.addCallback(later.append)
    assert later == [None]


def test_directErrbackAndFailureCallback() -> None:
    d: ResponseDeferred = ResponseDeferred()
    consumer = Consumer()
    assert d.consumeDirectly(consumer)
    d.errback(ValueError("no"))
    assert [f.check(ValueError) for f in consumer.failures] == [ValueError]
    assert d.called and d.result is None

    d2: ResponseDeferred = ResponseDeferred()
    consumer2 = Consumer()
    d2.consumeDirectly(consumer2)
    d2.callback(Failure(KeyError("k")))  # a Failure given to callback: errback
    assert consumer2.answers == []
    assert consumer2.failures[0].check(KeyError)


def test_firingTwiceIsAlreadyCalled() -> None:
    d: ResponseDeferred = ResponseDeferred()
    d.consumeDirectly(Consumer())
    d.callback(1)
    with pytest.raises(AlreadyCalledError):
        d.callback(2)
    with pytest.raises(AlreadyCalledError):
        d.errback(ValueError())


def test_cancelCallsTheCancellerAndTellsTheConsumer() -> None:
    cancelled: list[Deferred[object]] = []
    d: ResponseDeferred = ResponseDeferred(cancelled.append)
    consumer = Consumer()
    d.consumeDirectly(consumer)
    d.cancel()
    assert cancelled == [d]
    assert consumer.failures[0].check(CancelledError)
    assert d.called


@pytest.mark.parametrize(
    "how", ["addCallbacks", "addCallback", "addErrback", "addBoth"]
)
def test_chainedFirstStaysOrdinary(how: str) -> None:
    d: ResponseDeferred = ResponseDeferred()
    seen: list[object] = []
    if how == "addCallbacks":
        d.addCallbacks(seen.append, seen.append)
    else:
        getattr(d, how)(seen.append)
    consumer = Consumer()
    assert not d.consumeDirectly(consumer)
    d.callback("x")
    assert seen == (["x"] if how != "addErrback" else [])
    assert consumer.answers == []


def test_noSecondConsumerAndNoneAfterFiring() -> None:
    d: ResponseDeferred = ResponseDeferred()
    assert d.consumeDirectly(Consumer())
    assert not d.consumeDirectly(Consumer())
    fired: ResponseDeferred = ResponseDeferred()
    fired.callback(1)
    assert not fired.consumeDirectly(Consumer())


def test_chainedAfterTheConsumerRunsAfterIt() -> None:
    d: ResponseDeferred = ResponseDeferred()
    consumer = Consumer()
    d.consumeDirectly(consumer)
    order: list[object] = []
    d.addCallback(lambda result: order.append(("later", result)))
    d.callback("answer")
    assert consumer.answers == ["answer"]
    assert order == [("later", None)]


def test_aConsumerThatRaisesIsLoggedAndTheDeferredFires() -> None:
    d: ResponseDeferred = ResponseDeferred()
    d.consumeDirectly(Consumer(raises=True))
    with capturedLogs() as events:
        d.callback("answer")  # does not raise into the caller
    assert d.called and d.result is None
    (event,) = events
    assert event["log_failure"].check(RuntimeError)


# -- the exchange -----------------------------------------------------------


def test_exchangeConsumesItDirectly() -> None:
    pending: list[ResponseDeferred] = []

    def handler(request: Request) -> Deferred[Response]:
        d = ResponseDeferred()
        pending.append(d)
        return d

    conn = connect(handler)
    conn.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    (d,) = pending
    # The exchange took it without a chain.
    assert d._consumer is not None
    d.callback(Response(200, body=b"late"))
    conn.send(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    pending[1].callback(Response(200, body=b"again"))
    assert [r.body for r in conn.responses()] == [b"late", b"again"]


def test_exchangeGetsTheHandlersFailure() -> None:
    def handler(request: Request) -> Deferred[Response]:
        d = ResponseDeferred()
        d.errback(RuntimeError("handler broke"))
        return d

    conn = connect(handler)
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    (response,) = conn.responses()
    assert response.status == 500


def test_aWrapperThatChainsFirstKeepsItsResult() -> None:
    def handler(request: Request) -> Deferred[Response]:
        d = ResponseDeferred()
        # A wrapper's callback, chained before connserver sees it.
        d.addCallback(lambda response: Response(201, body=b"wrapped"))
        d.callback(Response(200, body=b"inner"))
        return d

    conn = connect(handler)
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    (response,) = conn.responses()
    assert (response.status, response.body) == (201, b"wrapped")


def test_clientLeavingCancelsIt() -> None:
    cancelled: list[object] = []

    def handler(request: Request) -> Deferred[Response]:
        return ResponseDeferred(cancelled.append)

    conn = connect(handler)
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.lose(Failure(ConnectionError("gone")))
    assert len(cancelled) == 1
