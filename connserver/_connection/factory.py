"""
``ConnectionFactory``: configuration, the clock, the registry of live
connections, the connection limit and graceful drain.

Embedding connserver is one line::

    endpoint.listen(ConnectionFactory(handler, config=ServerConfig(...)))
"""

from __future__ import annotations

from collections.abc import Callable
from email.utils import formatdate
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IProtocolNegotiationFactory,
    IReactorFDSet,
    IReactorTime,
    IReadDescriptor,
    ISSLTransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from connserver._connection.closer import Closer, CloseStage
from connserver._connection.message import Handler
from connserver._connection.protocol import HTTPServerProtocol
from connserver._connection.timer import Phase, PhaseTimer, TimerQueue
from connserver._http.config import ServerConfig
from connserver._http.headers import optionsFromValues
from connserver._http.persistence import PersistencePolicy
from connserver._http.records import ConnectionRecord, RequestRecord
from connserver._http.responsehead import HeadBuilder
from connserver._http.state import ConnectionState, ExchangeState
from connserver._http.stats import ALPN_PROTOCOLS, ConnectionStats
from connserver._twisted.reactor import cancelCall, defaultReactor

__all__ = ["ALPN_PROTOCOLS", "ConnectionFactory", "ConnectionStats"]


_log = Logger(namespace="connserver")
_WAITING = ConnectionState.WAITING
#: Distinct Connection field values whose options are kept.
_OPTIONS_CACHE_SIZE = 256


def _idleSince(protocol: HTTPServerProtocol) -> int:
    return protocol.idleSince


def _hostOf(address: IAddress) -> str:
    """An address as the logs show it (``"-"`` when it has no host)."""
    return getattr(address, "host", None) or "-"


#: The answer to a connection over maxConnections when nothing idle can be
#: shed: 503 with Retry-After and Connection: close (RFC 9110 §15.6.4,
#: §10.2.3), prebuilt, written without reading the request.  (No Date: a 5xx
#: MAY go without one, RFC 9110 §6.6.1.)
_OVER_CAPACITY_BODY = b"503 Service Unavailable: too many connections\n"
OVER_CAPACITY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Retry-After: 1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\n"
    b"Connection: close\r\n\r\n" % len(_OVER_CAPACITY_BODY)
) + _OVER_CAPACITY_BODY
#: Over-capacity answers in progress at once; past it, refused connections
#: are closed unanswered, so that a flood cannot hold more descriptors.
_MAX_REFUSING = 64
#: How long an over-capacity answer may linger (reading and discarding what
#: the client sent, so that the close does not turn into a reset that
#: destroys the answer), at most.
_REFUSAL_LINGER = 1.0
#: While a client waits and no connection can give up its slot yet: seconds
#: between two looks (a connection may begin to linger meanwhile).
_ROOM_RECHECK = 0.1


@implementer(IReadDescriptor)
class _BacklogWatch:
    """
    A paused listening port's socket, watched for readability: a listening
    socket is readable when a client waits in its accept backlog.  Accepting
    stays paused; the factory makes room for that client.
    """

    def __init__(self, port: Any, factory: ConnectionFactory) -> None:
        self.port = port
        self.factory = factory

    def fileno(self) -> int:
        return int(self.port.fileno())

    def doRead(self) -> None:
        self.factory.clientWaiting()

    def connectionLost(self, reason: object) -> None:
        pass

    def logPrefix(self) -> str:
        return "connserver-backlog"


class _OverCapacity(Protocol):
    """
    Answers 503 at once and closes through a ``Closer``: the write side
    first, then the whole connection after at most ``_REFUSAL_LINGER``
    seconds of discarding whatever the client sends (its request is never
    read).  Its close is recorded as ``refused`` when it is gone.
    """

    def __init__(
        self, factory: ConnectionFactory, connectionId: int, peerHost: str
    ) -> None:
        self._owner = factory
        self._timer = PhaseTimer(factory.timers, self)
        self._closer: Closer | None = None
        self._connectionId = connectionId
        self._peerHost = peerHost
        self._acceptedAt = factory.reactor.seconds()
        self._secure = False

    def connectionMade(self) -> None:
        owner = self._owner
        owner._refusing += 1
        transport: Any = self.transport
        self._secure = ISSLTransport.providedBy(transport)
        transport.write(OVER_CAPACITY_RESPONSE)
        self._closer = Closer(transport, self._timer, owner.config.abortTimeout)
        self._closer.close(_REFUSAL_LINGER)

    def dataReceived(self, data: bytes) -> None:
        """The request is not read: discarded."""

    def phaseExpired(self, phase: Phase) -> None:
        """The linger is over (lose the connection), or the loss took too long."""
        assert self._closer is not None
        if phase is _PH_LINGER:
            self._closer.lose()
        else:
            self._closer.abort()

    def connectionLost(self, reason: object = None) -> None:
        owner = self._owner
        owner._refusing -= 1
        self._timer.cancel()
        if self._closer is not None:
            self._closer.gone()
        owner._refusedClosed(
            self._connectionId, self._peerHost, self._acceptedAt, self._secure
        )


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
            reactor = defaultReactor()
        assert reactor is not None
        self.handler = handler
        self.config = config if config is not None else ServerConfig()
        self.reactor: IReactorTime = reactor
        #: Every connection's deadlines, behind one DelayedCall.
        self.timers = TimerQueue(reactor)
        self.policy = policy if policy is not None else PersistencePolicy(self.config)
        #: Called with each response's record (the access log, metrics).
        self.requestObservers: list[Callable[[RequestRecord], None]] = []
        #: Called once for each connection that ends without a final
        #: response carrying its close reason (the access log).
        self.closeObservers: list[Callable[[ConnectionRecord], None]] = []
        self._connections: dict[HTTPServerProtocol, None] = {}
        self.stats = ConnectionStats(self._connections)
        # Stamped on a connection each time it becomes idle, so that shedding
        # closes the longest-idle one first (a count, not a clock reading).
        self._idleCount = 0
        # The lowercased Connection options of the field values seen before
        # (most clients send the same one or two): bounded, per factory.
        self._connectionOptions: dict[tuple[bytes, ...], frozenset[bytes]] = {}
        self._addresses: dict[IAddress, IAddress] = {}
        # Connections closed to make room, until they are gone.
        self._shed: dict[HTTPServerProtocol, None] = {}
        self._ports: list[IListeningPort] = []
        self._acceptPaused = False
        # While accepting is paused: the ports' sockets, watched for a
        # client waiting in the backlog (see clientWaiting).
        self._watches: list[_BacklogWatch] = []
        self._watching = False
        self._recheck: Any = None
        self._nextId = 0
        # Over-capacity answers still being sent (bounded: _MAX_REFUSING).
        self._refusing = 0
        self._drainDone: list[Deferred[None]] = []
        self._drainCall: Any = None
        server = self.config.serverHeader
        hsts = self.config.hstsMaxAge
        #: Builds response heads (the protocol asks it once per response).
        self.heads = HeadBuilder(
            serverLine=(
                b"Server: " + server.encode("ascii") + b"\r\n" if server else b""
            ),
            # RFC 6797 §7.2: sent over a secure transport only.
            hstsLine=(
                b"Strict-Transport-Security: max-age=%d\r\n" % hsts
                if hsts is not None
                else b""
            ),
        )
        self._dateSecond = -1
        self._dateBytes = b""

    def acceptableProtocols(self) -> list[bytes]:
        """The ALPN protocol names served, preferred first (RFC 7301)."""
        return list(ALPN_PROTOCOLS)

    # -- per-request helpers ---------------------------------------------------

    def dateLine(self, now: float) -> bytes:
        """The Date field for ``now``, formatted once a second (RFC 9110 §6.6.1)."""
        second = int(now)
        if second != self._dateSecond:
            self._dateSecond = second
            self._dateBytes = (
                b"Date: " + formatdate(second, usegmt=True).encode("ascii") + b"\r\n"
            )
        return self._dateBytes

    # -- the registry ------------------------------------------------------------

    def buildProtocol(self, addr: IAddress) -> Protocol | None:  # type: ignore[override]
        # Every accepted connection gets an id and counts as accepted,
        # refused ones too (nginx's stub_status counts them the same way).
        stats = self.stats
        stats.accepted += 1
        self._nextId += 1
        limit = self.config.maxConnections
        if stats.draining:
            stats.refused += 1
            self._refusedClosed(self._nextId, _hostOf(addr), self.reactor.seconds())
            return None
        if limit is not None and self._counted() >= limit:
            # Over the limit despite the paused ports (connections accepted
            # in the same reactor turn).  A connection that only lingers for
            # its peer's FIN, then an idle keep-alive connection, are the
            # cheapest to drop (its client retries, RFC 9112 §9.3.1): close
            # one and serve this client; with neither, refuse it.
            if not self._makeRoom():
                stats.refused += 1
                _log.info(
                    "refused a connection: maxConnections ({limit}) reached",
                    limit=limit,
                )
                if self._refusing >= _MAX_REFUSING:
                    # Closed at once: the cost stays bounded.
                    self._refusedClosed(
                        self._nextId, _hostOf(addr), self.reactor.seconds()
                    )
                    return None
                return _OverCapacity(self, self._nextId, _hostOf(addr))
        protocol = HTTPServerProtocol(self, self._nextId)
        return protocol

    def _refusedClosed(
        self, connectionId: int, peerHost: str, acceptedAt: float, secure: bool = False
    ) -> None:
        """A refused connection is gone: count and record its close."""
        self.stats.closes["refused"] += 1
        if self.closeObservers:
            now = self.reactor.seconds()
            record = ConnectionRecord(
                timestamp=now,
                peerHost=peerHost,
                connectionId=connectionId,
                requestsServed=0,
                connectionAge=now - acceptedAt,
                closeReason="refused",
                secure=secure,
            )
            for observer in self.closeObservers:
                try:
                    observer(record)
                except Exception:
                    _log.failure("a close observer failed")

    def registerConnection(self, protocol: HTTPServerProtocol) -> None:
        """A connection was made (the protocol tells, from connectionMade)."""
        self._connections[protocol] = None
        limit = self.config.maxConnections
        if limit is not None and self._counted() >= limit:
            # At the limit: accept no more.  Nobody is closed yet: only a
            # client that actually waits gets a slot made for it.
            self._pauseAccepting()

    def connectionIdle(self, protocol: HTTPServerProtocol) -> None:
        """
        ``protocol`` waits for its next request now.  It is stamped, so that
        shedding closes the longest-idle first; and while accepting is
        paused, the backlog is looked at again: a client waiting there gets
        this slot (closed from the reactor, never from inside the
        protocol's state change).
        """
        self._idleCount += 1
        protocol.idleSince = self._idleCount
        if self._acceptPaused:
            self._watchBacklog()

    def clientWaiting(self) -> None:
        """
        A client waits in the backlog while accepting is paused at
        ``maxConnections``: make room for it, by closing a connection that
        only lingers for its peer's FIN, else the longest-idle keep-alive
        connection; accepting resumes when it is gone.  With neither, look
        again shortly (a connection may begin to linger) or when one
        becomes idle.
        """
        self._unwatchBacklog()
        if not self._acceptPaused or self.stats.draining:
            return
        if self._makeRoom():
            return
        if self._recheck is None:
            self._recheck = self.reactor.callLater(_ROOM_RECHECK, self._lookAgain)

    def _lookAgain(self) -> None:
        self._recheck = None
        self._watchBacklog()

    def unregisterConnection(self, protocol: HTTPServerProtocol) -> None:
        """A connection is gone (the protocol tells, from connectionLost)."""
        if protocol not in self._connections:
            return
        del self._connections[protocol]
        self._shed.pop(protocol, None)
        self.stats.closes[protocol.closeReason or "unknown"] += 1
        self.stats.requestsPerConnection[protocol.requestsServed] += 1
        limit = self.config.maxConnections
        if self._acceptPaused and (limit is None or self._counted() < limit):
            self._resumeAccepting()
        if not self._connections and self._drainDone:
            self._finishDrain()

    def sharedAddress(self, address: IAddress) -> IAddress:
        """
        One object for equal addresses: every connection to a listener has
        the same local address, and keeping one copy instead of one per
        connection saves memory on thousands of idle ones.  Bounded.
        """
        try:
            shared = self._addresses.get(address)
        except TypeError:  # an unhashable address type
            return address
        if shared is not None:
            return shared
        if len(self._addresses) < _OPTIONS_CACHE_SIZE:
            self._addresses[address] = address
        return address

    def connectionOptionsOf(self, values: tuple[bytes, ...]) -> frozenset[bytes]:
        """The Connection options of these field values (RFC 9110 §7.6.1), cached."""
        options = self._connectionOptions.get(values)
        if options is None:
            options = optionsFromValues(values)
            if len(self._connectionOptions) < _OPTIONS_CACHE_SIZE:
                self._connectionOptions[values] = options
        return options

    def connections(self) -> list[HTTPServerProtocol]:
        """The live connections (a copy)."""
        return list(self._connections)

    # -- the connection limit ---------------------------------------------------

    def addListeningPort(self, port: IListeningPort) -> None:
        """Let the connection limit pause and resume accepting on ``port``."""
        self._ports.append(port)
        if IReactorFDSet.providedBy(self.reactor) and hasattr(port, "fileno"):
            self._watches.append(_BacklogWatch(port, self))
        if self._acceptPaused:
            port.stopReading()  # type: ignore[attr-defined]
            if self._watching and self._watches:
                self._watching = False
                self._watchBacklog()

    def _watchBacklog(self) -> None:
        """Look (through the reactor) for a client waiting in the backlog."""
        if self._watching or not self._acceptPaused or self.stats.draining:
            return
        self._watching = True
        reactor: Any = self.reactor
        for watch in self._watches:
            if watch.port.fileno() >= 0:
                reactor.addReader(watch)

    def _unwatchBacklog(self) -> None:
        if not self._watching:
            return
        self._watching = False
        reactor: Any = self.reactor
        for watch in self._watches:
            reactor.removeReader(watch)

    def _pauseAccepting(self) -> None:
        if not self._acceptPaused:
            self._acceptPaused = True
            _log.info(
                "maxConnections reached ({count}): pausing accept",
                count=len(self._connections),
            )
            for port in self._ports:
                port.stopReading()  # type: ignore[attr-defined]
            self._watchBacklog()

    def _resumeAccepting(self) -> None:
        self._acceptPaused = False
        self._unwatchBacklog()
        call, self._recheck = self._recheck, None
        cancelCall(call)
        if self.stats.draining:
            return
        for port in self._ports:
            port.startReading()  # type: ignore[attr-defined]

    def _idleOldestFirst(self) -> list[HTTPServerProtocol]:
        """Idle (WAITING) connections, longest idle first."""
        idle = [
            protocol
            for protocol in self._connections
            if protocol.state is _WAITING and protocol not in self._shed
        ]
        idle.sort(key=_idleSince)
        return idle

    def _makeRoom(self) -> bool:
        """
        Close a connection to make room for a client that waits: one that
        only lingers for its peer's FIN first (its response is sent), else
        the longest-idle keep-alive connection.  True if one was closed.
        """
        for protocol in self._connections:
            # (The Closer's stage: HALF_CLOSED is the lingering read.)
            closer = protocol.closing
            if (
                closer is not None
                and closer.stage is CloseStage.HALF_CLOSED
                and protocol not in self._shed
            ):
                self._shed[protocol] = None
                closer.lose()
                return True
        return self._shedIdle()

    def _shedIdle(self) -> bool:
        """Close the longest-idle keep-alive connection to make room."""
        for protocol in self._idleOldestFirst():
            if protocol.closeIdle("max-connections"):
                self._shed[protocol] = None
                return True
        return False

    def _counted(self) -> int:
        """Connections that hold a slot: shed ones are on their way out."""
        return len(self._connections) - len(self._shed)

    # -- graceful drain --------------------------------------------------------

    def numberConnectionsFrom(self, first: int) -> None:
        """
        Give the next accepted connection the id ``first`` (then
        ``first + 1``, ...): under ``--workers`` each worker numbers from its
        own range, so that ids stay unique across workers and replacements.
        """
        self._nextId = first - 1

    def drain(
        self,
        # ``...`` (typeshed's ``ellipsis``, types.EllipsisType) is the "not
        # given" sentinel, so that None can mean "no deadline".
        timeout: float | ellipsis | None = ...,  # noqa: F821
    ) -> Deferred[None]:
        """
        Shut down gracefully: stop accepting (close the listening ports
        first), close idle connections after ``drainGraceTimeout``, let
        in-flight responses finish with ``Connection: close``, and abort what
        remains at ``timeout`` seconds: ``config.drainTimeout`` when not
        given, never when ``None`` (wait for the last connection, however
        long it takes).  Fires when no connection is left.
        """
        done: Deferred[None] = Deferred()
        self._drainDone.append(done)
        if not self.stats.draining:
            self.stats.draining = True
            self._unwatchBacklog()
            call, self._recheck = self._recheck, None
            cancelCall(call)
            for protocol in list(self._connections):
                protocol.startDrain()
            if timeout is ...:
                timeout = self.config.drainTimeout
            if timeout is not None and self._connections:
                self._drainCall = self.reactor.callLater(timeout, self._drainDeadline)
        if not self._connections:
            self._finishDrain()
        return done

    def _drainDeadline(self) -> None:
        self._drainCall = None
        remaining = list(self._connections)
        # Said in the server's log too, not only in the access log: the
        # responses cut short here are the ones a deploy lost.
        _log.warn(
            "drain deadline reached: aborting {count} connection(s)",
            count=len(remaining),
        )
        for protocol in remaining:
            self._recordCutShort(protocol, "drain-timeout")
            protocol.abortNow("drain-timeout")

    def _recordCutShort(self, protocol: HTTPServerProtocol, reason: str) -> None:
        """
        The request ``protocol`` is answering (its handler running, or its
        response part-written) is aborted: one request record for it, with
        ``reason`` as the close reason and the status and body bytes sent so
        far (status 0 when no response byte was), as for a request the
        other aborts cut.  It is the connection's record: no close record
        follows.
        """
        exchange = protocol.pipeline.front()
        if (
            exchange is None
            or exchange.head is None
            or exchange.state not in (ExchangeState.HANDLING, ExchangeState.RESPONDING)
            or protocol.closeLogged
            or not self.requestObservers
        ):
            return
        head = exchange.head
        now = self.reactor.seconds()
        protocol.closeLogged = True
        record = RequestRecord(
            timestamp=exchange.startedAt,
            peerHost=exchange.clientHost or protocol.peerHost,
            method=head.method,
            target=head.target,
            version=head.version,
            status=exchange.status,
            bodyBytes=exchange.bodyBytes,
            referer=head.headers.get(b"referer"),
            userAgent=head.headers.get(b"user-agent"),
            connectionId=protocol.connectionId,
            requestIndex=protocol.served + 1,
            connectionAge=now - protocol.acceptedAt,
            duration=now - exchange.startedAt,
            closeReason=reason,
            secure=protocol.isSecure,
            note=exchange.note,
        )
        for observer in self.requestObservers:
            try:
                observer(record)
            except Exception:
                _log.failure("a request observer failed")

    def _finishDrain(self) -> None:
        call, self._drainCall = self._drainCall, None
        cancelCall(call)
        waiting, self._drainDone = self._drainDone, []
        for done in waiting:
            done.callback(None)


# Enum members as module globals: looking a member up on its Enum class
# costs a descriptor call (about 70 ns), and the request path reads these
# several times per request.
_PH_LINGER = Phase.LINGER
