"""Test-wide settings."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from zope.interface import implementer

# CI runs the property tests on a fixed sequence of examples, so that a run
# is repeatable; a developer's run explores new examples every time (and
# bench/fuzz_long.py explores many more).
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


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
