"""
The one place where the golden tests import connserver.

Everything the golden cases use of the server comes from the public
``connserver`` package and is imported here, and only here, so that when
modules move the golden tests need a change in this file at most.  The rest
of ``tests/golden`` imports these names from this module.

Besides the names below, the runner uses only this of the server's objects:
``ConnectionFactory(handler, config=, reactor=)``, its ``buildProtocol``,
``requestObservers``, ``closeObservers``, ``addListeningPort``, ``drain``;
the protocol's ``IProtocol`` / ``IHalfCloseableProtocol`` methods
(``makeConnection``, ``dataReceived``, ``readConnectionLost``,
``connectionLost``) and the producer it registers with its transport; and
the two readings below (:func:`stateOf`, :func:`statsOf`).
"""

from __future__ import annotations

from typing import Any

from connserver import (
    CLOSE_REASONS,
    ConnectionFactory,
    ConnectionRecord,
    ConnectionState,
    Headers,
    ProtocolError,
    Request,
    RequestRecord,
    Response,
    ServerConfig,
)


def stateOf(protocol: Any) -> str:
    """A connection's state as a name (``WAITING``), or "-" if it has none."""
    state = getattr(protocol, "state", None)
    return "-" if state is None else str(state.name)


def statsOf(factory: ConnectionFactory) -> dict[str, Any]:
    """The factory's counters (``ConnectionStats``), as plain data."""
    stats = factory.stats
    return {
        "accepted": stats.accepted,
        "handled": stats.handled,
        "refused": stats.refused,
        "requests": stats.requests,
        "responses": stats.responses,
        "active": stats.active,
        "draining": stats.draining,
        "closes": dict(sorted(stats.closes.items())),
        "requestsPerConnection": {
            str(k): v for k, v in sorted(stats.requestsPerConnection.items())
        },
    }


__all__ = [
    "CLOSE_REASONS",
    "ConnectionFactory",
    "ConnectionRecord",
    "ConnectionState",
    "Headers",
    "ProtocolError",
    "Request",
    "RequestRecord",
    "Response",
    "ServerConfig",
    "stateOf",
    "statsOf",
]
