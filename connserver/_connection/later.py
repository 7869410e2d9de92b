"""
``ResponseDeferred``: the Deferred of a handler inside connserver that
answers later (the reverse proxy), which the connection's exchange can
consume without Twisted's callback chain.

Every asynchronous answer through a plain ``Deferred`` builds a chain
(``addCallbacks``) and runs it (``callback``: ``_startRunCallbacks``,
``_runCallbacks``) for one consumer, the exchange: about 17,000 CPU
instructions per proxied request, more than any other single step of the
proxy's own.  A ``ResponseDeferred`` that nothing was chained to when the
handler returned it takes the exchange as its direct consumer
(``consumeDirectly``): ``callback`` and ``errback`` hand the outcome to it
and leave the Deferred fired with ``None``, as the chain would have (the
exchange's callbacks return ``None``).  To anyone else, and whenever
something was chained to it first, it is an ordinary ``Deferred``.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["DirectConsumer", "ResponseDeferred"]

_log = Logger(namespace="connserver")


class DirectConsumer(Protocol):
    """What consumes a ``ResponseDeferred`` directly (``Exchange``)."""

    def handlerAnswered(self, response: object) -> None:
        """The handler's answer."""

    def handlerFailedAsync(self, failure: Failure) -> None:
        """The handler failed (or was cancelled)."""


class ResponseDeferred(Deferred[Any]):
    """
    A ``Deferred`` that one consumer may take its outcome from directly.

    Once ``consumeDirectly`` accepted a consumer, the first ``callback`` or
    ``errback`` goes to it, then the Deferred is fired with ``None``;
    callbacks added after that see ``None``, as they would have after the
    consumer's own callbacks in the chain.  ``cancel`` works as for any
    Deferred (its ``CancelledError`` reaches the consumer).
    """

    _consumer: DirectConsumer | None = None
    #: Something was chained to it (then it stays an ordinary Deferred).
    _chained = False

    # Each public way to add to the chain marks it chained: a consumer
    # registered after that would come first, out of turn.
    def addCallbacks(self, *args: Any, **kwargs: Any) -> Any:
        self._chained = True
        return super().addCallbacks(*args, **kwargs)

    def addCallback(self, *args: Any, **kwargs: Any) -> Any:
        self._chained = True
        return super().addCallback(*args, **kwargs)

    def addErrback(self, *args: Any, **kwargs: Any) -> Any:
        self._chained = True
        return super().addErrback(*args, **kwargs)

    def addBoth(self, *args: Any, **kwargs: Any) -> Any:
        self._chained = True
        return super().addBoth(*args, **kwargs)

    def consumeDirectly(self, consumer: DirectConsumer) -> bool:
        """
        Make ``consumer`` the first to learn the outcome, without a chain;
        False (nothing changes) when something is chained already, it has
        fired, or it has a consumer: then chain as usual.
        """
        if self._chained or self.called or self._consumer is not None:
            return False
        self._consumer = consumer
        return True

    def callback(self, result: Any) -> None:
        consumer = self._consumer
        if consumer is None or self.called:
            super().callback(result)  # (AlreadyCalledError when fired)
            return
        if isinstance(result, Failure):
            self.errback(result)
            return
        self._consumer = None
        try:
            consumer.handlerAnswered(result)
        except Exception:
            # Where the chain would have kept it as an unhandled error.
            _log.failure("the consumer of a handler's answer failed")
        self._fired()

    def errback(self, fail: Failure | BaseException | None = None) -> None:
        consumer = self._consumer
        if consumer is None or self.called:
            super().errback(fail)
            return
        failure = fail if isinstance(fail, Failure) else Failure(fail)
        self._consumer = None
        try:
            consumer.handlerFailedAsync(failure)
        except Exception:
            _log.failure("the consumer of a handler's failure failed")
        self._fired()

    def _fired(self) -> None:
        """Fired with ``None``, the consumer's result, as the chain leaves it."""
        if self._chained:
            # Chained after the consumer: those callbacks run now, on None.
            super().callback(None)
        else:
            # What twisted.internet.defer.succeed does for a fired Deferred
            # (called and result are Deferred's documented attributes).
            self.result = None
            self.called = True
