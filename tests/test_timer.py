"""``PhaseTimer`` alone, on ``Clock``: one lazy timer per connection."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from connserver._connection.timer import Phase, PhaseTimer, TimerQueue, choosePhase
from connserver._http.state import ConnectionState


class Owner:
    def __init__(self) -> None:
        self.expired: list[Phase] = []

    def phaseExpired(self, phase: Phase) -> None:
        self.expired.append(phase)


def make() -> tuple[Clock, PhaseTimer, list[Phase]]:
    clock = Clock()
    owner = Owner()
    return clock, PhaseTimer(TimerQueue(clock), owner), owner.expired


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


# choosePhase: which phase applies to an open connection, as a table.
# Columns: state, writePaused, hasFront, frontReadingBody,
# frontAwaitingHandler, discardingBody -> phase.
_ST = ConnectionState
CHOOSE_PHASE_TABLE = [
    pytest.param(
        _ST.ACCEPTED, False, False, False, False, False, Phase.HEAD, id="accepted-head"
    ),
    pytest.param(
        _ST.READING_HEAD,
        False,
        False,
        False,
        False,
        False,
        Phase.HEAD,
        id="reading-head",
    ),
    pytest.param(
        _ST.WAITING, False, False, False, False, False, Phase.IDLE, id="waiting-idle"
    ),
    pytest.param(
        _ST.WAITING,
        True,
        False,
        False,
        False,
        False,
        Phase.SEND,
        id="waiting-unread-response-send",
    ),
    pytest.param(
        _ST.WRITING,
        True,
        True,
        False,
        False,
        False,
        Phase.SEND,
        id="writing-paused-send",
    ),
    pytest.param(
        _ST.WRITING, True, True, True, False, False, Phase.SEND, id="send-beats-body"
    ),
    pytest.param(
        _ST.READING_HEAD,
        True,
        False,
        False,
        False,
        False,
        Phase.HEAD,
        id="paused-no-front-head",
    ),
    pytest.param(
        _ST.READING_BODY, False, True, True, False, False, Phase.BODY, id="front-body"
    ),
    pytest.param(
        _ST.READING_BODY,
        False,
        True,
        True,
        True,
        False,
        Phase.BODY,
        id="body-beats-handler",
    ),
    pytest.param(
        _ST.HANDLING, False, True, False, True, False, Phase.HANDLER, id="handler"
    ),
    pytest.param(
        _ST.HANDLING, False, True, False, False, False, None, id="handling-no-limit"
    ),
    pytest.param(
        _ST.WRITING, False, True, False, False, False, None, id="writing-none"
    ),
    pytest.param(
        _ST.WRITING, False, True, False, False, True, None, id="front-beats-discard"
    ),
    pytest.param(
        _ST.WAITING, False, False, False, False, True, Phase.BODY, id="discarding-body"
    ),
    pytest.param(
        _ST.READING_HEAD,
        False,
        False,
        False,
        False,
        True,
        Phase.BODY,
        id="discard-beats-head",
    ),
    pytest.param(
        _ST.WRITING, False, False, False, False, False, None, id="writing-empty-none"
    ),
]


@pytest.mark.parametrize(
    "state,writePaused,hasFront,reading,awaiting,discarding,expected",
    CHOOSE_PHASE_TABLE,
)
def test_choosePhase(
    state: ConnectionState,
    writePaused: bool,
    hasFront: bool,
    reading: bool,
    awaiting: bool,
    discarding: bool,
    expected: Phase | None,
) -> None:
    assert (
        choosePhase(state, writePaused, hasFront, reading, awaiting, discarding)
        is expected
    )
