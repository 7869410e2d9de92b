"""Test-wide settings."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import settings
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from zope.interface import implementer

from ._helpers import TurnClock, makeClock

# CI runs the property tests on a fixed sequence of examples, so that a run
# is repeatable; a developer's run explores new examples every time (and
# bench/fuzz_long.py explores many more).
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture
def clockStart() -> float:
    """
    Where the ``clock`` fixture starts: 0, unless a module overrides this
    fixture (its code compares the clock with files' wall-clock mtimes).
    """
    return 0.0


@pytest.fixture
def clock(clockStart: float) -> TurnClock:
    """A fresh ``Clock`` (one that can also run a single turn) per test."""
    return makeClock(clockStart)


@pytest.fixture
def logFailures() -> Iterator[list[LogEvent]]:
    """Collect log events that carry a failure (a swallowed exception)."""
    failures: list[LogEvent] = []

    @implementer(ILogObserver)
    def observe(event: LogEvent) -> None:
        if "log_failure" in event:
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        yield failures
    finally:
        globalLogPublisher.removeObserver(observe)


class WallClockWaits:
    """
    Records the delayed calls given a positive delay on ``clock`` (the real
    reactor, in the guard below): each one that runs is a wait on the wall
    clock (``deferLater``, a ``LoopingCall``, a real timeout firing).
    """

    def __init__(self, clock: Any) -> None:
        self._callLater: Callable[..., Any] = clock.callLater
        self._scheduled: list[tuple[float, Any, Any]] = []

    def callLater(
        self, delay: float, f: Callable[..., object], *a: Any, **k: Any
    ) -> Any:
        call = self._callLater(delay, f, *a, **k)
        if delay > 0:
            self._scheduled.append((delay, f, call))
        return call

    def ran(self) -> list[str]:
        """The positive-delay calls that have run, described."""
        return [
            f"callLater({delay}, {getattr(f, '__qualname__', f)!s})"
            for delay, f, call in self._scheduled
            if call.called
        ]


@pytest.fixture(autouse=True)
def _noWallClockWaits(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """
    Issue 13: outside tests marked ``slow`` (a module's ``pytestmark``
    counts), no test waits on the wall clock: no ``time.sleep`` on the main
    thread, and no delayed call with a positive delay run by the real
    reactor.  Time is a ``Clock`` there; a real-socket test that must wait
    on the kernel (or on a real timer) is marked ``slow``.
    """
    if request.node.get_closest_marker("slow") is not None:
        yield
        return
    from twisted.internet import reactor

    waits = WallClockWaits(reactor)
    monkeypatch.setattr(reactor, "callLater", waits.callLater)
    sleeps: list[str] = []
    realSleep = time.sleep

    def sleep(seconds: float) -> None:
        # subprocess polls a child with short sleeps while it waits for it
        # with a timeout: an event with a bound, not a wait on the clock.
        caller = sys._getframe(1).f_globals.get("__name__")
        if (
            seconds > 0
            and caller != "subprocess"
            and threading.current_thread() is threading.main_thread()
        ):
            sleeps.append(f"time.sleep({seconds})")
        realSleep(seconds)

    monkeypatch.setattr(time, "sleep", sleep)
    yield
    found = sleeps + waits.ran()
    if found:
        pytest.fail(
            "wall-clock waits in a test not marked slow (use a Clock, or mark "
            f"it @pytest.mark.slow if it must wait on the kernel): {found}",
            pytrace=False,
        )
