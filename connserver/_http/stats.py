"""
What a server counts of its connections (``ConnectionStats``), and the
protocols it names to TLS's ALPN.  Pure: the counters are plain numbers and
the live connections are only asked for their state.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from typing import Protocol

from connserver._http.state import STATUS_GROUP, ConnectionState

__all__ = ["ALPN_PROTOCOLS", "ConnectionStats", "HasState"]

#: The protocols served, by their ALPN names (RFC 7301 §6), preferred first.
#: HTTP/2 is not among them.
ALPN_PROTOCOLS: tuple[bytes, ...] = (b"http/1.1", b"http/1.0")


class HasState(Protocol):
    """A live connection, as the counters see it."""

    @property
    def state(self) -> ConnectionState:
        """Where the connection is in its life."""


class ConnectionStats:
    """
    Counters that the status page, the logs and tests read.

    The first three are nginx's ``stub_status`` counters: ``accepted``
    (every connection accepted, refused ones included), ``handled``
    (accepted and not refused: ``accepted - refused``) and ``requests``
    (requests received, malformed ones answered with a 4xx included).

    ``closes`` counts closed connections by reason (every key of
    ``CONNECTION_CLOSE_REASONS``: the policy's reasons, ``idle-timeout``,
    ``header-timeout``, ``peer-closed``, ``refused``, ...), so that once
    every connection is gone its values add up to ``accepted``;
    ``requestsPerConnection`` is a histogram of the handled connections,
    filled as they close.
    """

    def __init__(self, connections: Collection[HasState]) -> None:
        #: Connections accepted (a refused one included).
        self.accepted = 0
        #: Requests received: every request head, a request that never
        #: parsed (400, 414, 431, ...) and one cut off by the head timeout
        #: (408); a request later cut off still counts.
        self.requests = 0
        #: Responses completed, error responses included.
        self.responses = 0
        #: Connections refused: over ``maxConnections`` with nothing idle to
        #: shed (503), or accepted while draining.
        self.refused = 0
        self.closes: Counter[str] = Counter()
        self.requestsPerConnection: Counter[int] = Counter()
        self.draining = False
        self._connections = connections

    @property
    def handled(self) -> int:
        """Connections accepted and served, not refused (nginx's handled)."""
        return self.accepted - self.refused

    @property
    def active(self) -> int:
        """Connections open now (refused ones, still being answered, aside)."""
        return len(self._connections)

    def byState(self) -> dict[str, int]:
        """
        Open connections by status group: reading, handling, writing, ...

        Counted when asked (the status page samples it once a second), so
        that serving a request costs no registry update.
        """
        groups = {
            "reading": 0,
            "handling": 0,
            "writing": 0,
            "waiting": 0,
            "upgraded": 0,
            "closing": 0,
        }
        for protocol in self._connections:
            group = STATUS_GROUP[protocol.state]
            if group in groups:
                groups[group] += 1
        return groups
