"""``PhaseTimer`` alone, on ``Clock``: one lazy timer per connection."""

from __future__ import annotations

from twisted.internet.task import Clock

from connserver._connection.timer import Phase, PhaseTimer


class Owner:
    def __init__(self) -> None:
        self.expired: list[Phase] = []

    def phaseExpired(self, phase: Phase) -> None:
        self.expired.append(phase)


def make() -> tuple[Clock, PhaseTimer, list[Phase]]:
    clock = Clock()
    owner = Owner()
    return clock, PhaseTimer(clock, owner), owner.expired


def test_expiresAtTheDeadline() -> None:
    clock, timer, expired = make()
    timer.start(Phase.IDLE, 5)
    clock.advance(4.9)
    assert expired == []
    clock.advance(0.1)
    assert expired == [Phase.IDLE] and timer.phase is None
    assert clock.getDelayedCalls() == []


def test_bumpMovesTheDeadlineWithoutANewCall() -> None:
    clock, timer, expired = make()
    timer.start(Phase.BODY, 5)
    [call] = clock.getDelayedCalls()
    clock.advance(4)
    timer.bump(5)  # progress: due at 9
    assert clock.getDelayedCalls() == [call]
    clock.advance(1)  # the call fires early and re-arms for what is left
    assert expired == []
    clock.advance(4)
    assert expired == [Phase.BODY]


def test_aSoonerPhaseMakesANewCallALaterOneReusesIt() -> None:
    clock, timer, expired = make()
    timer.start(Phase.IDLE, 60)
    timer.start(Phase.HEAD, 10)  # sooner: a new call, the old one cancelled
    assert len(clock.getDelayedCalls()) == 1
    timer.start(Phase.IDLE, 60)  # later: the pending call re-arms when it fires
    clock.advance(10)
    assert expired == []
    clock.advance(50)
    assert expired == [Phase.IDLE]


def test_clearAndCancel() -> None:
    clock, timer, expired = make()
    timer.start(Phase.SEND, 1)
    timer.clear()
    clock.advance(2)
    assert expired == [] and clock.getDelayedCalls() == []
    timer.start(Phase.ABORT, 1)
    timer.cancel()
    assert clock.getDelayedCalls() == []


def test_noTimeoutMeansNoPhase() -> None:
    clock, timer, _ = make()
    timer.start(Phase.IDLE, None)
    assert timer.phase is None and clock.getDelayedCalls() == []
