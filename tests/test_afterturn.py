"""
``connserver._twisted.afterturn``: the calls queued for the end of a
reactor's turn, and when a sender should not wait for it (``atOnce``).
"""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest
from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from connserver._twisted.afterturn import PROBE_EVERY, AfterTurn, afterTurnOf


def test_callsOfATurnRunTogetherAtItsEndInOrder() -> None:
    clock = Clock()
    turn = AfterTurn(clock)
    ran: list[int] = []
    for i in range(3):
        turn.add(ran.append, i)
    # One delayed call for the whole turn.
    assert len(clock.getDelayedCalls()) == 1
    assert ran == []
    clock.advance(0)
    assert ran == [0, 1, 2]
    assert clock.getDelayedCalls() == []
    # The next turn schedules afresh.
    turn.add(ran.append, 3)
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(0)
    assert ran == [0, 1, 2, 3]


def test_aCallQueuedWhileTheQueueRunsRunsInThatRun() -> None:
    """A relayed answer that its connection gathers for the turn's end."""
    clock = Clock()
    turn = AfterTurn(clock)
    ran: list[str] = []

    def first(_: object) -> None:
        ran.append("first")
        turn.add(ran.append, "queued by first")

    turn.add(first, None)
    turn.add(ran.append, "second")
    clock.advance(0)
    assert ran == ["first", "second", "queued by first"]
    assert clock.getDelayedCalls() == []


def test_aFailingCallIsLoggedAndTheOthersRun() -> None:
    clock = Clock()
    turn = AfterTurn(clock)
    ran: list[int] = []

    def broken(_: object) -> None:
        raise RuntimeError("broken")

    turn.add(broken, None)
    turn.add(ran.append, 1)
    with capturedLogs() as events:
        clock.advance(0)
    assert ran == [1]
    assert [e["log_failure"].check(RuntimeError) for e in events] == [RuntimeError]
    # Not stuck in the running state: the next call schedules a turn.
    turn.add(ran.append, 2)
    assert len(clock.getDelayedCalls()) == 1


def test_aBaseExceptionLeavesTheRestForTheNextTurn() -> None:
    """
    KeyboardInterrupt or SystemExit in one call goes on up; the calls not
    run yet are not lost (their answers would wait for another event).
    """
    clock = Clock()
    turn = AfterTurn(clock)
    ran: list[int] = []

    def interrupted(_: object) -> None:
        raise KeyboardInterrupt

    turn.add(ran.append, 1)
    turn.add(interrupted, None)
    turn.add(ran.append, 2)
    turn.add(ran.append, 3)
    with pytest.raises(KeyboardInterrupt):
        clock.advance(0)
    assert ran == [1]
    turn.add(ran.append, 4)
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(0)
    assert ran == [1, 2, 3, 4]


def test_atOnceAfterALightTurnThenProbeAgain() -> None:
    """
    A turn with a single call queued (one client, one request at a time)
    had nothing to send together: the next ``PROBE_EVERY`` sends go at once,
    then one waits again, to see whether the load is still light.
    """
    clock = Clock()
    turn = AfterTurn(clock)
    assert not turn.atOnce()
    turn.add(lambda _: None, None)
    clock.advance(0)
    assert [turn.atOnce() for _ in range(PROBE_EVERY)] == [True] * PROBE_EVERY
    assert not turn.atOnce()


def test_aBusyTurnKeepsSendersWaiting() -> None:
    clock = Clock()
    turn = AfterTurn(clock)
    turn.add(lambda _: None, None)
    clock.advance(0)
    assert turn.atOnce()
    turn.add(lambda _: None, None)
    turn.add(lambda _: None, None)
    clock.advance(0)
    # The light turn's allowance is not renewed by a busy one.
    assert sum(turn.atOnce() for _ in range(PROBE_EVERY)) == PROBE_EVERY - 1
    assert not turn.atOnce()


def test_oneAfterTurnPerClock() -> None:
    first, second = Clock(), Clock()
    assert afterTurnOf(first) is afterTurnOf(first)
    assert afterTurnOf(first) is not afterTurnOf(second)


def test_theTableDoesNotKeepAClockAlive() -> None:
    clock = Clock()
    afterTurnOf(clock).add(lambda _: None, None)
    clock.advance(0)
    collected: list[bool] = []
    weakref.finalize(clock, collected.append, True)
    del clock
    gc.collect()
    assert collected == [True]


def test_onTheAsyncioReactorTheRunningLoopsCallSoon() -> None:
    """
    Under Twisted's asyncio reactor (``--asgi``), the turn's end is the
    loop's next pass: ``call_soon``, not a DelayedCall; before the loop
    runs, the reactor's ``callLater``.
    """
    loop = asyncio.new_event_loop()
    reactor = AsyncioSelectorReactor(loop)
    delayed: list[object] = []
    reactor.callLater = lambda *args: delayed.append(args)  # type: ignore[method-assign]
    try:
        turn = AfterTurn(reactor)
        ran: list[int] = []

        async def inTheLoop() -> None:
            turn.add(ran.append, 1)
            turn.add(ran.append, 2)
            assert ran == []
            await asyncio.sleep(0)
            assert ran == [1, 2]

        loop.run_until_complete(inTheLoop())
        assert delayed == []
        turn.add(ran.append, 3)
        assert [args[0] for args in delayed] == [0]
    finally:
        for reader in list(reactor.getReaders()):
            reactor.removeReader(reader)
        loop.close()
        reactor.waker.connectionLost(None)  # type: ignore[attr-defined]


@pytest.mark.parametrize("count", [1, 2])
def test_theQueueIsEmptyAfterARun(count: int) -> None:
    clock = Clock()
    turn = AfterTurn(clock)
    for _ in range(count):
        turn.add(lambda _: None, None)
    clock.advance(0)
    assert turn._queue == []
