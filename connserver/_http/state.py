"""
The states of a connection, of each request on it (an exchange, and its
body), and the tables of transitions between them.

Everything that says which state may follow which lives here (as h11's
``_state.py`` does); ``HTTPServerProtocol`` only asks :func:`checkTransition`.
Pure module: nothing here imports ``twisted.internet``.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

from connserver._http.errors import InvalidTransition

__all__ = [
    "EXCHANGE_TRANSITIONS",
    "STATUS_GROUP",
    "TRANSITIONS",
    "BodyState",
    "ConnectionState",
    "ExchangeState",
    "InputState",
    "checkTransition",
    "refuseTransition",
]


class InputState(Enum):
    """What the client's side of the connection still brings."""

    #: Bytes may still arrive.
    OPEN = "open"
    #: The client half-closed; what it sent before is still being parsed.
    HALF_CLOSED = "half-closed"
    #: Half-closed, and the parser asked for more: the end of the input is
    #: reached (acted on at the end of the round).
    EXHAUSTED = "exhausted"


class ConnectionState(Enum):
    """Where a connection is in its life (docs/architecture.md, "The life of a connection")."""

    #: Accepted; no request byte yet (TLS handshake, if any, happens here).
    ACCEPTED = "accepted"
    #: Idle between requests on a persistent connection.
    WAITING = "waiting"
    #: Some bytes of a request head have arrived.
    READING_HEAD = "reading-head"
    #: The head is complete; the body is being received.
    READING_BODY = "reading-body"
    #: The request is with the handler; no response byte is written yet.
    HANDLING = "handling"
    #: Response bytes are being written.
    WRITING = "writing"
    #: The server decided to close: write side half-closed, lingering read.
    CLOSING = "closing"
    #: The connection left HTTP after a ``101 Switching Protocols``: another
    #: protocol owns it (RFC 9110 §7.8).
    UPGRADED = "upgraded"
    #: The transport is gone.
    CLOSED = "closed"

    # Set below from the table: a position, a bit, and the bits of the
    # states that may follow (annotations only, so not members).
    index: int
    bit: int
    allowed: int


_S = ConnectionState

#: The transition table: for each state, the states that may follow it.
#: ``CLOSED`` may follow any state because the peer can vanish at any time.
TRANSITIONS: dict[ConnectionState, frozenset[ConnectionState]] = {
    # A request that arrives whole skips READING_HEAD; one that is malformed
    # from its first bytes is answered (WRITING) at once.
    _S.ACCEPTED: frozenset(
        {
            _S.READING_HEAD,
            _S.READING_BODY,
            _S.HANDLING,
            _S.WRITING,
            _S.CLOSING,
            _S.CLOSED,
        }
    ),
    _S.WAITING: frozenset(
        {
            _S.READING_HEAD,
            _S.READING_BODY,
            _S.HANDLING,
            _S.WRITING,
            _S.CLOSING,
            _S.CLOSED,
        }
    ),
    _S.READING_HEAD: frozenset(
        # WRITING: an error response (400, 408, 414, 431, ...) for a bad head.
        {_S.READING_BODY, _S.HANDLING, _S.WRITING, _S.CLOSING, _S.CLOSED}
    ),
    _S.READING_BODY: frozenset(
        # WRITING: the handler answered before the body ended (or 408/413).
        {_S.HANDLING, _S.WRITING, _S.CLOSING, _S.CLOSED}
    ),
    # UPGRADED: the handler switched protocols (a 101, or a twisted.web
    # resource that took the transport over).
    _S.HANDLING: frozenset({_S.WRITING, _S.UPGRADED, _S.CLOSING, _S.CLOSED}),
    _S.WRITING: frozenset(
        # After a keep-alive response the next request may already be
        # buffered (pipelining), so any request phase may follow directly.
        {
            _S.WAITING,
            _S.READING_HEAD,
            _S.READING_BODY,
            _S.HANDLING,
            _S.CLOSING,
            _S.CLOSED,
        }
    ),
    _S.UPGRADED: frozenset({_S.CLOSED}),
    _S.CLOSING: frozenset({_S.CLOSED}),
    _S.CLOSED: frozenset(),
}

#: How the status page groups states (nginx stub_status: reading/writing/waiting).
STATUS_GROUP: dict[ConnectionState, str] = {
    _S.ACCEPTED: "reading",
    _S.WAITING: "waiting",
    _S.READING_HEAD: "reading",
    _S.READING_BODY: "reading",
    _S.HANDLING: "handling",
    _S.WRITING: "writing",
    _S.UPGRADED: "upgraded",
    _S.CLOSING: "closing",
    _S.CLOSED: "closed",
}


# The table again as bit masks on the members, so that the per-request
# check and the factory's per-state counters need no hashing (an Enum's
# __hash__ is a Python-level call).


def _numbered(states: Any, table: Mapping[Any, frozenset[Any]]) -> None:
    """
    Each member's position and bit, and the bits of the states that may
    follow it: a transition check is then an attribute and a bit test, with
    no hashing of Enum members on the request path.
    """
    for index, state in enumerate(states):
        state.index = index
        state.bit = 1 << index
    for state, allowed in table.items():
        state.allowed = sum(s.bit for s in allowed)


_numbered(ConnectionState, TRANSITIONS)


def checkTransition(current: ConnectionState, new: ConnectionState) -> ConnectionState:
    """
    Return ``new`` if the table allows ``current -> new``; staying in the same
    state is always allowed.  Otherwise raise :class:`InvalidTransition`.
    """
    if new is current or current.allowed & new.bit:
        return new
    raise InvalidTransition(f"{current.name} -> {new.name}")


# -- one request: an exchange and its body ---------------------------------------


class ExchangeState(Enum):
    """Where one request is in its life."""

    #: Received (or known malformed), waiting for its turn at the front.
    QUEUED = "queued"
    #: Its handler runs; no response byte is written yet.
    HANDLING = "handling"
    #: Its response is being written.
    RESPONDING = "responding"
    #: Its response is complete.
    DONE = "done"
    #: Nobody will read its response: the connection closes or is gone.
    ABANDONED = "abandoned"

    # Set below from the table (annotations only, so not members).
    index: int
    bit: int
    allowed: int


_Q = ExchangeState
#: The transitions an exchange may make.  An error is answered from QUEUED
#: (a head timeout) or HANDLING; any unfinished exchange can be abandoned.
EXCHANGE_TRANSITIONS: dict[ExchangeState, frozenset[ExchangeState]] = {
    _Q.QUEUED: frozenset({_Q.HANDLING, _Q.RESPONDING, _Q.ABANDONED}),
    _Q.HANDLING: frozenset({_Q.RESPONDING, _Q.ABANDONED}),
    _Q.RESPONDING: frozenset({_Q.DONE, _Q.ABANDONED}),
    _Q.DONE: frozenset(),
    _Q.ABANDONED: frozenset(),
}
# The table as bits on the members (as ``ConnectionState`` has them): a
# check is an attribute and a bit test, with no hashing of Enum members.
_numbered(ExchangeState, EXCHANGE_TRANSITIONS)


def refuseTransition(current: ExchangeState, new: ExchangeState) -> None:
    """An exchange's transition that ``EXCHANGE_TRANSITIONS`` does not allow."""
    raise InvalidTransition(f"exchange {current.value} -> {new.value}")


class BodyState(Enum):
    """Where a request body is, as its reader sees it."""

    #: Not asked for yet: it stays in the parser's buffer.
    UNREAD = "unread"
    #: Asked for and flowing to the reader.
    READING = "reading"
    #: The reader paused it: reading from the socket pauses.
    PAUSED = "paused"
    #: The reader wants no more: the rest is dropped as it arrives.
    STOPPED = "stopped"
    #: The response ended first: the rest is drained (RFC 9112 §9.3).
    DISCARDING = "discarding"
    #: All of it arrived, or it never will.
    COMPLETE = "complete"
