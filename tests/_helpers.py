"""
Helpers shared by the test modules (issue 20), so that each exists once:

* ``makeClock`` and ``TurnClock``: the ``clock`` fixture of conftest.py;
* ``ensureDeferred``: pytest-twisted's decorator, typed;
* ``realReactor``: the global reactor, imported late;
* ``FakeConsumer``: an ``IConsumer`` that records what a producer writes;
* ``recordOsCalls``: a spy on ``os`` functions;
* ``eventually`` and ``eventuallyDeferred``: the one bounded poll, for
  subprocess tests and for real-reactor tests (both wait on the wall clock,
  so only tests marked ``slow`` use them).
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest
from twisted.internet import task
from twisted.internet.interfaces import IConsumer
from twisted.internet.task import Clock
from zope.interface import implementer

# Imported by name so that mypy treats it as untyped (it ships no stubs).
pytest_twisted: Any = importlib.import_module("pytest_twisted")

T = TypeVar("T")

#: The default bound of ``eventually``: what one step of a subprocess or
#: real-socket test may take.
TIMEOUT = 10.0


# -- time ---------------------------------------------------------------------


class TurnClock(Clock):
    """A Clock whose ``turn`` runs only the calls already due (one turn)."""

    def turn(self) -> None:
        due = [c for c in self.calls if c.getTime() <= self.seconds()]
        for call in due:
            if call in self.calls:
                self.calls.remove(call)
                call.called = 1
                call.func(*call.args, **call.kw)


def makeClock(start: float = 0.0) -> TurnClock:
    """
    A fresh clock at ``start``: 0 for timers, the wall-clock time for code
    that compares the clock with files' modification times.
    """
    clock = TurnClock()
    if start:
        clock.advance(start)
    return clock


# -- the real reactor ---------------------------------------------------------


def ensureDeferred(
    test: Callable[..., Coroutine[Any, Any, None]],
) -> Callable[..., Any]:
    """pytest-twisted's decorator, typed."""
    wrapped: Callable[..., Any] = pytest_twisted.ensureDeferred(test)
    return wrapped


def realReactor() -> Any:
    """
    The global reactor, imported when called so that pytest-twisted has
    installed it first.
    """
    from twisted.internet import reactor

    return reactor


# -- producers and consumers ----------------------------------------------------


@implementer(IConsumer)
class FakeConsumer:
    """
    Collects what a body producer writes (``data``, a list of the writes);
    can pause its registered producer on every write, as a full transport
    would.
    """

    def __init__(self, pauseEveryWrite: bool = False) -> None:
        self.data: list[bytes] = []
        self.pauseEveryWrite = pauseEveryWrite
        self.producer: Any = None

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.data.append(data)
        if self.pauseEveryWrite and self.producer is not None:
            self.producer.pauseProducing()

    def received(self) -> bytes:
        """Everything written, joined."""
        return b"".join(self.data)


def callName(name: str, args: tuple[Any, ...]) -> object:
    """What ``recordOsCalls`` records by default: the function's name."""
    return name


def recordOsCalls(
    monkeypatch: pytest.MonkeyPatch,
    *names: str,
    record: Callable[[str, tuple[Any, ...]], object] = callName,
) -> list[Any]:
    """
    Wrap the ``os`` functions ``names`` so that each call appends
    ``record(name, args)`` to the returned list, then does the real call:
    a test counts the system calls a code path makes.
    """
    calls: list[Any] = []
    for name in names:
        real = getattr(os, name)

        def spy(*args: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
            calls.append(record(_name, args))
            return _real(*args, **kw)

        monkeypatch.setattr(os, name, spy)
    return calls


# -- bounded polls ----------------------------------------------------------------


class _Poll:
    """One bounded poll's state, shared by both ``eventually`` variants."""

    def __init__(
        self,
        predicate: Callable[[], T],
        timeout: float,
        message: str | Callable[[], object],
        ignoring: tuple[type[BaseException], ...],
    ) -> None:
        self.predicate: Callable[[], Any] = predicate
        self.timeout = timeout
        self.message = message
        self.ignoring = ignoring
        self.deadline = time.monotonic() + timeout
        self.last: object = None

    def check(self) -> tuple[bool, Any]:
        """(done, value); raises AssertionError once the deadline has passed."""
        try:
            value = self.predicate()
        except self.ignoring as e:
            value = e
        else:
            if value:
                return True, value
        self.last = value
        if time.monotonic() >= self.deadline:
            message = self.message() if callable(self.message) else self.message
            raise AssertionError(
                f"{message}: not within {self.timeout} s "
                f"(the last value was {self.last!r})"
            )
        return False, None


def eventually(
    predicate: Callable[[], T],
    timeout: float = TIMEOUT,
    interval: float = 0.05,
    message: str | Callable[[], object] = "the condition",
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """
    Call ``predicate`` every ``interval`` seconds until it returns a true
    value, and return that value; raise AssertionError with ``message``
    (or what it returns, if callable) and the last value if ``timeout``
    seconds pass first.  An exception of ``ignoring`` counts as a false
    value.  For subprocess tests, which have no event to wait on.
    """
    poll = _Poll(predicate, timeout, message, ignoring)
    while True:
        done, value = poll.check()
        if done:
            return value  # type: ignore[no-any-return]
        time.sleep(interval)


async def eventuallyDeferred(
    predicate: Callable[[], T],
    timeout: float = TIMEOUT,
    interval: float = 0.01,
    message: str | Callable[[], object] = "the condition",
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """
    ``eventually`` on the real reactor: between calls, let the reactor run
    for ``interval`` seconds (``deferLater``), for real-socket tests that
    wait on the kernel's state rather than on an event.
    """
    poll = _Poll(predicate, timeout, message, ignoring)
    while True:
        done, value = poll.check()
        if done:
            return value  # type: ignore[no-any-return]
        await task.deferLater(realReactor(), interval, lambda: None)
