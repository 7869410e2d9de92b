"""The connection state table."""

from __future__ import annotations

import pytest

from connserver._http.errors import InvalidTransition
from connserver._http.state import (
    STATUS_GROUP,
    TRANSITIONS,
    ConnectionState,
    checkTransition,
)

S = ConnectionState


def test_everyStateHasRowAndGroup() -> None:
    assert set(TRANSITIONS) == set(S)
    assert set(STATUS_GROUP) == set(S)


@pytest.mark.parametrize("state", list(S))
def test_closedFollowsEveryLiveState(state: ConnectionState) -> None:
    if state is not S.CLOSED:
        assert checkTransition(state, S.CLOSED) is S.CLOSED


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (S.CLOSED, S.WAITING),
        (S.CLOSING, S.WRITING),
        (S.READING_HEAD, S.WAITING),
        (S.HANDLING, S.WAITING),
        (S.ACCEPTED, S.WAITING),
    ],
)
def test_forbidden(current: ConnectionState, new: ConnectionState) -> None:
    with pytest.raises(InvalidTransition):
        checkTransition(current, new)


def test_keepAliveCycle() -> None:
    state = S.ACCEPTED
    for new in [
        S.READING_HEAD,
        S.HANDLING,
        S.WRITING,
        S.WAITING,
        S.READING_HEAD,
        S.READING_BODY,
        S.HANDLING,
        S.WRITING,
        S.CLOSING,
        S.CLOSED,
    ]:
        state = checkTransition(state, new)
    assert state is S.CLOSED
