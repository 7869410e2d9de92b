"""
``ConnectionFactory``: configuration, the clock, the registry of live
connections, the connection limit and graceful drain.

Embedding connserver is one line::

    endpoint.listen(ConnectionFactory(handler, config=ServerConfig(...)))
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IProtocolNegotiationFactory,
    IReactorTime,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from zope.interface import implementer

from ._config import ServerConfig
from ._message import Handler
from ._persistence import PersistencePolicy
from ._protocol import HTTPServerProtocol
from ._records import RequestRecord
from ._state import STATUS_GROUP, ConnectionState

__all__ = ["ALPN_PROTOCOLS", "ConnectionFactory", "ConnectionStats"]

#: The protocols served, by their ALPN names (RFC 7301 §6), preferred first.
#: HTTP/2 is not among them.
ALPN_PROTOCOLS: tuple[bytes, ...] = (b"http/1.1", b"http/1.0")

_log = Logger(namespace="connserver")
_CLOSED = ConnectionState.CLOSED
_WAITING = ConnectionState.WAITING
_CLOSED_INDEX: int = _CLOSED.index


class ConnectionStats:
    """
    Counters that the status page, the logs and tests read.

    ``closes`` counts closed connections by reason (the policy's reasons,
    and ``idle-timeout``, ``header-timeout``, ``body-timeout``,
    ``send-timeout``, ``peer-closed``, ``peer-reset``, ...);
    ``requestsPerConnection`` is a histogram filled as connections close.
    """

    def __init__(self, stateCounts: list[int]) -> None:
        #: Connections accepted.
        self.accepted = 0
        #: Request heads received (a request later cut off still counts).
        self.requests = 0
        #: Responses completed, error responses included.
        self.handled = 0
        self.refused = 0
        self.closes: Counter[str] = Counter()
        self.requestsPerConnection: Counter[int] = Counter()
        self.draining = False
        self._stateCounts = stateCounts

    @property
    def active(self) -> int:
        """Connections open now."""
        return sum(self._stateCounts) - self._stateCounts[_CLOSED_INDEX]

    def byState(self) -> dict[str, int]:
        """Open connections by status group: reading, handling, writing, ..."""
        groups = {"reading": 0, "handling": 0, "writing": 0, "waiting": 0, "closing": 0}
        for state in ConnectionState:
            count = self._stateCounts[state.index]
            group = STATUS_GROUP[state]
            if group in groups:
                groups[group] += count
        return groups


@implementer(IProtocolNegotiationFactory)
class ConnectionFactory(Factory):
    """
    Builds an ``HTTPServerProtocol`` per connection and keeps track of them.

    It names the protocols it speaks for TLS's ALPN
    (``IProtocolNegotiationFactory``), so that a listener whose TLS context
    Twisted built (``ssl:`` endpoints, ``CertificateOptions``) negotiates
    ``http/1.1`` with browsers and curl, which offer ``h2, http/1.1``.

    :param handler: called once per request (``Request -> Response``,
        ``Deferred[Response]`` or a coroutine).
    :param config: limits and timeouts.
    :param reactor: the clock (``IReactorTime``); tests pass ``Clock``.
    :param policy: decides persistence; ``PersistencePolicy(config)`` by default.
    """

    protocol = HTTPServerProtocol  # type: ignore[assignment]
    # The listening service logs where it listens; Twisted's own "Starting
    # factory <...>" lines add nothing.
    noisy = False

    def __init__(
        self,
        handler: Handler,
        config: ServerConfig | None = None,
        reactor: IReactorTime | None = None,
        policy: PersistencePolicy | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        assert reactor is not None
        self.handler = handler
        self.config = config if config is not None else ServerConfig()
        self.reactor: IReactorTime = reactor
        self.policy = policy if policy is not None else PersistencePolicy(self.config)
        self.requestObservers: list[Callable[[RequestRecord], None]] = []
        # Live connections per state, indexed by ConnectionState.index.
        self._stateCounts = [0] * len(ConnectionState)
        self.stats = ConnectionStats(self._stateCounts)
        self._connections: dict[HTTPServerProtocol, None] = {}
        # Idle (WAITING) connections in the order they became idle: the
        # first is the one to close when shedding load.
        self._idle: dict[HTTPServerProtocol, None] = {}
        # Connections closed to make room, until they are gone.
        self._shed: dict[HTTPServerProtocol, None] = {}
        self._ports: list[IListeningPort] = []
        self._acceptPaused = False
        self._nextId = 0
        self._drainDone: list[Deferred[None]] = []
        self._drainCall: Any = None
        server = self.config.serverHeader
        self._serverLine = (
            b"Server: " + server.encode("ascii") + b"\r\n" if server else b""
        )
        # RFC 6797 §7.2: only over a secure transport.
        hsts = self.config.hstsMaxAge
        self._hstsLine = (
            b"Strict-Transport-Security: max-age=%d\r\n" % hsts
            if hsts is not None
            else b""
        )
        self._dateSecond = -1
        self._dateBytes = b""

    def acceptableProtocols(self) -> list[bytes]:
        """The ALPN protocol names served, preferred first (RFC 7301)."""
        return list(ALPN_PROTOCOLS)

    # -- per-request helpers ---------------------------------------------------

    def _dateLine(self) -> bytes:
        """The Date field, formatted at most once a second (RFC 9110 §6.6.1)."""
        now = self.reactor.seconds()
        second = int(now)
        if second != self._dateSecond:
            self._dateSecond = second
            self._dateBytes = (
                b"Date: " + formatdate(second, usegmt=True).encode("ascii") + b"\r\n"
            )
        return self._dateBytes

    # -- the registry ------------------------------------------------------------

    def buildProtocol(self, addr: IAddress) -> HTTPServerProtocol | None:  # type: ignore[override]
        limit = self.config.maxConnections
        if self.stats.draining:
            self.stats.refused += 1
            return None
        if limit is not None and self._counted() >= limit:
            # Over the limit despite the paused ports (connections accepted
            # in the same reactor turn).  An idle keep-alive connection is
            # the cheapest to drop (its client retries, RFC 9112 §9.3.1):
            # shed one and serve this client; with none idle, refuse it.
            if not self._shedIdle():
                self.stats.refused += 1
                _log.info(
                    "refused a connection: maxConnections ({limit}) reached",
                    limit=limit,
                )
                return None
        self._nextId += 1
        protocol = HTTPServerProtocol(self, self._nextId)
        return protocol

    def _connectionMade(self, protocol: HTTPServerProtocol) -> None:
        self._connections[protocol] = None
        self._stateCounts[protocol.state.index] += 1
        self.stats.accepted += 1
        limit = self.config.maxConnections
        if limit is not None and self._counted() >= limit:
            self._pauseAccepting()
            self._shedIdle()

    def _stateChanged(
        self, protocol: HTTPServerProtocol, old: ConnectionState, new: ConnectionState
    ) -> None:
        counts = self._stateCounts
        counts[old.index] -= 1
        if new is not _CLOSED:
            counts[new.index] += 1
        if old is _WAITING:
            self._idle.pop(protocol, None)
        elif new is _WAITING:
            self._idle[protocol] = None
            self._idleAgain(protocol)

    def _idleAgain(self, protocol: HTTPServerProtocol) -> None:
        """
        ``protocol`` is idle now.  Clients wait in the backlog while
        accepting is paused: an idle connection gives its slot to one.
        """
        if self._acceptPaused and protocol.closeIdle("max-connections"):
            self._shed[protocol] = None

    def _connectionLost(self, protocol: HTTPServerProtocol) -> None:
        if protocol not in self._connections:
            return
        del self._connections[protocol]
        self._shed.pop(protocol, None)
        self._idle.pop(protocol, None)
        self.stats.closes[protocol.closeReason or "unknown"] += 1
        self.stats.requestsPerConnection[protocol._served] += 1
        limit = self.config.maxConnections
        if self._acceptPaused and (limit is None or self._counted() < limit):
            self._resumeAccepting()
        if not self._connections and self._drainDone:
            self._finishDrain()

    def connections(self) -> list[HTTPServerProtocol]:
        """The live connections (a copy)."""
        return list(self._connections)

    # -- the connection limit ---------------------------------------------------

    def addListeningPort(self, port: IListeningPort) -> None:
        """Let the connection limit pause and resume accepting on ``port``."""
        self._ports.append(port)
        if self._acceptPaused:
            port.stopReading()  # type: ignore[attr-defined]

    def _pauseAccepting(self) -> None:
        if not self._acceptPaused:
            self._acceptPaused = True
            _log.info(
                "maxConnections reached ({count}): pausing accept",
                count=len(self._connections),
            )
            for port in self._ports:
                port.stopReading()  # type: ignore[attr-defined]

    def _resumeAccepting(self) -> None:
        self._acceptPaused = False
        if self.stats.draining:
            return
        for port in self._ports:
            port.startReading()  # type: ignore[attr-defined]

    def _shedIdle(self) -> bool:
        """Close the longest-idle keep-alive connection to make room."""
        for protocol in list(self._idle):
            if protocol.closeIdle("max-connections"):
                self._shed[protocol] = None
                return True
        return False

    def _counted(self) -> int:
        """Connections that hold a slot: shed ones are on their way out."""
        return len(self._connections) - len(self._shed)

    # -- graceful drain --------------------------------------------------------

    def drain(self, timeout: float | None = None) -> Deferred[None]:
        """
        Shut down gracefully: stop accepting (close the listening ports
        first), close idle connections after ``drainGraceTimeout``, let
        in-flight responses finish with ``Connection: close``, and abort what
        remains at ``timeout`` (``config.drainTimeout`` when not given).
        Fires when no connection is left.
        """
        done: Deferred[None] = Deferred()
        self._drainDone.append(done)
        if not self.stats.draining:
            self.stats.draining = True
            for protocol in list(self._connections):
                protocol.startDrain()
            if timeout is None:
                timeout = self.config.drainTimeout
            if timeout is not None and self._connections:
                self._drainCall = self.reactor.callLater(timeout, self._drainDeadline)
        if not self._connections:
            self._finishDrain()
        return done

    def _drainDeadline(self) -> None:
        self._drainCall = None
        for protocol in list(self._connections):
            protocol.abortNow("drain-timeout")

    def _finishDrain(self) -> None:
        call, self._drainCall = self._drainCall, None
        if call is not None and call.active():
            call.cancel()
        waiting, self._drainDone = self._drainDone, []
        for done in waiting:
            done.callback(None)
