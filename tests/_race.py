"""
The idle-close race, driven: client loops that each send requests through
their own nginx upstream pool (one pooled connection to connserver) at
random gaps, so that each pooled connection sits idle for about the gap
before it is reused.  Used by ``tests/test_idle_race.py`` (a few hundred
requests) and ``bench/bench_idle_race.py`` (more, and more settings).

Each request is a new client connection to nginx (``Connection: close``):
the client side is not what is measured; the connection from nginx to
connserver is.

On loopback a FIN reaches nginx within a fraction of a millisecond, so the
window in which nginx can still pick a connection connserver has closed is
that small.  Between hosts it is the network's one-way latency (and more
under load); ``latency`` puts a relay between nginx and connserver that
delays every byte and every close by that much, each way, as a network
would.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import defer, protocol, task
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint

from connserver import ConnectionFactory, Request, Response, ServerConfig

from ._proxies import startProxy
from ._sockets import RawClient, bounded

__all__ = ["RaceResult", "runRace"]


@dataclass
class RaceResult:
    """What one run of the race gave."""

    #: Responses by status ("200", "502"), or "no-response".
    outcomes: Counter[str] = field(default_factory=Counter)
    #: connserver's closes by reason.
    closes: Counter[str] = field(default_factory=Counter)
    #: Requests connserver answered.
    served: int = 0
    seconds: float = 0.0

    @property
    def failures(self) -> int:
        return sum(n for outcome, n in self.outcomes.items() if outcome != "200")


class _Relay(protocol.Protocol):
    """One side of a delaying relay: what it receives reaches ``other`` later."""

    def __init__(self, reactor: Any, delay: float) -> None:
        self.reactor = reactor
        self.delay = delay
        self.other: _Relay | None = None
        self.pending: list[bytes] = []
        self.gone = False

    def dataReceived(self, data: bytes) -> None:
        self.reactor.callLater(self.delay, self._deliver, data)

    def _deliver(self, data: bytes) -> None:
        other = self.other
        if other is None:
            self.pending.append(data)
        elif not other.gone and other.transport is not None:
            other.transport.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.gone = True
        self.reactor.callLater(self.delay, self._closeOther)

    def _closeOther(self) -> None:
        other = self.other
        if other is not None and not other.gone and other.transport is not None:
            other.transport.loseConnection()


class _RelayFactory(protocol.Factory):
    """Accepts from nginx; connects each connection on to connserver."""

    def __init__(self, reactor: Any, delay: float, backendPort: int) -> None:
        self.reactor = reactor
        self.delay = delay
        self.backendPort = backendPort

    def buildProtocol(self, addr: Any) -> _Relay:
        front = _Relay(self.reactor, self.delay)
        back = _Relay(self.reactor, self.delay)
        back.other = front

        def connected(_: object) -> None:
            front.other = back
            for data in front.pending:
                back.transport.write(data)  # type: ignore[union-attr]
            front.pending.clear()
            if front.gone:
                back.transport.loseConnection()  # type: ignore[union-attr]

        def failed(_: object) -> None:
            if front.transport is not None:
                front.transport.loseConnection()

        endpoint = TCP4ClientEndpoint(self.reactor, "127.0.0.1", self.backendPort)
        endpoint.connect(protocol.Factory.forProtocol(lambda: back)).addCallbacks(
            connected, failed
        )
        return front


def _hello(request: Request) -> Response:
    return Response(200, body=b"ok\n")


async def _one(reactor: Any, port: int, request: bytes) -> str:
    client = RawClient(request)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)
    await bounded(endpoint.connect(protocol.Factory.forProtocol(lambda: client)))
    received = await client.waitClosed()
    if not received.startswith(b"HTTP/1."):
        return "no-response"
    return received[9:12].decode("ascii", "replace")


async def _loop(
    reactor: Any,
    port: int,
    count: int,
    gaps: tuple[float, float],
    rng: random.Random,
    request: bytes,
    result: RaceResult,
) -> None:
    for index in range(count):
        if index:
            await task.deferLater(reactor, rng.uniform(*gaps), lambda: None)
        result.outcomes[await _one(reactor, port, request)] += 1


async def runRace(
    directory: Path,
    *,
    serverIdle: float,
    proxyIdle: float,
    loops: int,
    requests: int,
    gaps: tuple[float, float],
    method: bytes = b"POST",
    retry: bool = False,
    latency: float = 0.0,
    seed: int = 12,
    kind: str = "nginx",
) -> RaceResult:
    """
    connserver (``idleTimeout=serverIdle``) behind nginx (upstream
    ``keepalive_timeout proxyIdle``, ``proxy_next_upstream`` on only with
    ``retry``): ``loops`` loops of ``requests`` requests each, at gaps drawn
    uniformly from ``gaps``; with ``latency`` (seconds, one way) between
    nginx and connserver.

    With ``kind="haproxy"`` HAProxy stands in front instead (``option
    forwardfor``, ``http-reuse always``, a pool per loop as well, its
    default ``retry-on conn-failure``); it has no idle timeout for its
    connections to servers but purges idle ones every ``pool-purge-delay``,
    set to a third of ``proxyIdle`` (an idle connection lasts about three).
    """
    from twisted.internet import reactor

    factory = ConnectionFactory(
        _hello, config=ServerConfig(idleTimeout=serverIdle), reactor=reactor
    )
    listening = await bounded(
        TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    )
    backendPort = listening.getHost().port
    relay = None
    if latency:
        relay = await bounded(
            TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
                _RelayFactory(reactor, latency, backendPort)
            )
        )
        backendPort = relay.getHost().port
    if kind == "haproxy":
        proxy = startProxy(
            "haproxy",
            directory,
            backendPort,
            pools=loops,
            proxyProtocol=False,
            serverIdle=f"{int(proxyIdle * 1000 / 3)}ms",
        )
    else:
        proxy = startProxy(
            "nginx",
            directory,
            backendPort,
            pools=loops,
            upstreamIdle=f"{int(proxyIdle * 1000)}ms",
            nextUpstream=retry,
            keepalive=1,
        )
    ports = proxy.ports
    result = RaceResult()
    body = b"x" * 16
    request = (
        method + b" /race HTTP/1.1\r\nHost: race\r\nConnection: close\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    started = time.monotonic()
    try:
        rng = random.Random(seed)
        await defer.gatherResults(
            [
                defer.ensureDeferred(
                    _loop(
                        reactor,
                        port,
                        requests,
                        gaps,
                        random.Random(rng.random()),
                        request,
                        result,
                    )
                )
                for port in ports
            ],
            consumeErrors=True,
        )
    finally:
        result.seconds = time.monotonic() - started
        proxy.stop()
        if relay is not None:
            await bounded(defer.maybeDeferred(relay.stopListening))
        await bounded(defer.maybeDeferred(listening.stopListening))
        await bounded(factory.drain(2.0))
    result.closes = Counter(factory.stats.closes)
    result.served = factory.stats.requests
    return result


def describe(result: RaceResult, labels: Sequence[str] = ()) -> str:
    """One line: the outcomes and connserver's closes."""
    outcomes = " ".join(f"{k}={v}" for k, v in sorted(result.outcomes.items()))
    closes = " ".join(f"{k}={v}" for k, v in sorted(result.closes.items()))
    return (
        f"{' '.join(labels)} | {outcomes} | closes: {closes} | {result.seconds:.1f} s"
    )
