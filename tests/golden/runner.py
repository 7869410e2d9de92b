"""
Run one in-process golden case and describe what happened, as plain data.

A case is a list of steps (bytes from the client, time passing, a half-close,
write backpressure, a drain, another connection).  Each connection is a
``ConnectionFactory.buildProtocol`` protocol on a ``StringTransport`` that
can half-close, with a ``Clock`` set to a fixed time (so ``Date`` is fixed).
After every step the transcript says what the server wrote, which request
and close records it gave its observers, what the handlers noted, what it
logged, and the state of each connection and its transport.

Like a reactor, the runner delivers ``connectionLost`` once the server has
closed or aborted a transport (unless a case says not to).  After the steps,
``settle`` lets the clock run from one delayed call to the next until every
connection is gone (so every connection ends with its close reason), and a
connection left with nothing to wait for is closed by the client.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from .api import (
    ConnectionFactory,
    ConnectionRecord,
    RequestRecord,
    ServerConfig,
    stateOf,
    statsOf,
)
from .handlers import App

#: The clock's time when a case starts: Tue, 14 Nov 2023 22:13:20 GMT.
T0 = 1_700_000_000.0
HOST = IPv4Address("TCP", "127.0.0.1", 8080)
#: Bytes shown whole in a transcript; longer ones by length, hash and ends.
SHOW_BYTES = 2048
#: settle's bounds: delayed calls run, and seconds of clock.
SETTLE_CALLS = 400
SETTLE_SECONDS = 10_000.0


def peerOf(index: int) -> IPv4Address:
    return IPv4Address("TCP", "127.0.0.1", 40000 + index)


class GoldenTransport(StringTransport):
    """A StringTransport that can half-close, as a TCP transport can."""

    def __init__(self, peer: IPv4Address) -> None:
        super().__init__(hostAddress=HOST, peerAddress=peer)
        self.writeClosed = False
        self.aborted = False

    def loseWriteConnection(self) -> None:
        self.writeClosed = True

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


class FakePort:
    """A listening port: the factory pauses and resumes accepting on it."""

    def __init__(self) -> None:
        self.reading = True

    def stopReading(self) -> None:
        self.reading = False

    def startReading(self) -> None:
        self.reading = True


# -- steps and cases ---------------------------------------------------------


@dataclass(frozen=True)
class Step:
    kind: str
    data: bytes = b""
    arg: Any = None
    conn: int = 1


def send(data: bytes, conn: int = 1) -> Step:
    """The client sends ``data`` in one piece."""
    return Step("send", data, conn=conn)


def sendBytewise(data: bytes, conn: int = 1) -> Step:
    """The client sends ``data`` one byte at a time."""
    return Step("send bytewise", data, conn=conn)


def sendCuts(data: bytes, cuts: list[int] | tuple[int, ...], conn: int = 1) -> Step:
    """The client sends ``data`` in pieces cut at these offsets."""
    points = tuple(sorted({c for c in cuts if 0 < c < len(data)}))
    return Step("send cuts", data, points, conn=conn)


def advance(seconds: float) -> Step:
    """Time passes."""
    return Step("advance", arg=seconds)


def halfClose(conn: int = 1) -> Step:
    """The client shuts its write side (``readConnectionLost``)."""
    return Step("half-close", conn=conn)


def clientClose(conn: int = 1) -> Step:
    """The connection is gone cleanly (``connectionLost(ConnectionDone)``)."""
    return Step("client-close", conn=conn)


def reset(conn: int = 1) -> Step:
    """The connection is reset (``connectionLost(ConnectionLost)``)."""
    return Step("reset", conn=conn)


def appAbort(conn: int = 1) -> Step:
    """An embedding application aborts the transport (``abortConnection``)."""
    return Step("app-abort", conn=conn)


def pauseWriting(conn: int = 1) -> Step:
    """The transport's buffer is full: it pauses its producer."""
    return Step("pause-writing", conn=conn)


def resumeWriting(conn: int = 1) -> Step:
    """The transport drained: it resumes its producer."""
    return Step("resume-writing", conn=conn)


def drain(timeout: float | str | None = "default") -> Step:
    """``factory.drain()`` (with ``timeout`` unless "default")."""
    return Step("drain", arg=timeout)


def openConnection() -> Step:
    """Another client connects (connections are numbered from 1)."""
    return Step("open")


@dataclass(frozen=True)
class Case:
    id: str
    steps: tuple[Step, ...]
    config: dict[str, Any] = field(default_factory=dict)
    #: Deliver connectionLost once the server closes a transport.
    reactorCloses: bool = True

    @property
    def group(self) -> str:
        return self.id.split("/", 1)[0]


def case(id: str, *steps: Step, reactorCloses: bool = True, **config: Any) -> Case:
    return Case(id, tuple(steps), dict(config), reactorCloses)


# -- describing --------------------------------------------------------------


def showBytes(data: bytes) -> Any:
    """
    Bytes as latin-1 text split after each LF (a list of lines, joined they
    are the bytes); long ones as their length, hash and both ends.
    """
    if len(data) > SHOW_BYTES:
        return {
            "length": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "start": showBytes(data[:600]),
            "end": showBytes(data[-200:]),
        }
    text = data.decode("latin-1")
    lines = text.split("\n")
    out = [line + "\n" for line in lines[:-1]]
    if lines[-1]:
        out.append(lines[-1])
    return out


def _text(value: bytes | None) -> str:
    if value is None:
        return "None"
    return repr(value)[2:-1]


def _seconds(value: float) -> str:
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def describeRequest(record: RequestRecord) -> str:
    major, minor = record.version
    return (
        f"request conn={record.connectionId} req={record.requestIndex} "
        f"'{_text(record.method)} {_text(record.target)} HTTP/{major}.{minor}' "
        f"status={record.status} bytes={record.bodyBytes} "
        f"close={record.closeReason} note={record.note} "
        f"peer={record.peerHost} referer={_text(record.referer)} "
        f"ua={_text(record.userAgent)} secure={record.secure} "
        f"t={_seconds(record.timestamp - T0)} age={_seconds(record.connectionAge)} "
        f"dur={_seconds(record.duration)}"
    )


def describeClose(record: ConnectionRecord) -> str:
    return (
        f"close conn={record.connectionId} served={record.requestsServed} "
        f"close={record.closeReason} peer={record.peerHost} "
        f"secure={record.secure} t={_seconds(record.timestamp - T0)} "
        f"age={_seconds(record.connectionAge)}"
    )


def describeConfig(config: dict[str, Any]) -> dict[str, Any]:
    return {name: config[name] for name in sorted(config)}


def describeLog(event: LogEvent) -> str:
    level = event.get("log_level")
    text = f"{level.name if level is not None else '-'}: {formatEvent(event)}"
    failure = event.get("log_failure")
    if failure is not None:
        text += f" [{type(failure.value).__name__}]"
    return text


# -- running -------------------------------------------------------------------


class _Connection:
    def __init__(self, index: int, protocol: Any, transport: Any) -> None:
        self.index = index
        self.protocol = protocol
        self.transport: GoldenTransport | None = transport
        self.lost = False
        self.writesPaused = False

    def status(self) -> str:
        if self.protocol is None:
            return "refused"
        parts = [stateOf(self.protocol)]
        transport = self.transport
        assert transport is not None
        if self.lost:
            parts.append("lost")
        elif transport.aborted:
            parts.append("aborted")
        elif transport.disconnecting:
            parts.append("closing")
        elif transport.writeClosed:
            parts.append("write-closed")
        else:
            parts.append("open")
        if transport.producerState != "producing":
            parts.append(f"reading-{transport.producerState}")
        if self.writesPaused:
            parts.append("writes-paused")
        return " ".join(parts)

    @property
    def gone(self) -> bool:
        return self.protocol is None or self.lost

    @property
    def closedByServer(self) -> bool:
        transport = self.transport
        return (
            transport is not None
            and not self.lost
            and bool(transport.disconnecting or transport.aborted)
        )


class _Run:
    def __init__(self, theCase: Case) -> None:
        self.case = theCase
        self.clock = Clock()
        self.clock.advance(T0)
        self.notes: list[str] = []
        self.records: list[str] = []
        self.log: list[str] = []
        self.app = App(self.clock, self.notes)
        config = ServerConfig(**theCase.config)
        self.factory = ConnectionFactory(self.app, config=config, reactor=self.clock)
        self.factory.requestObservers.append(
            lambda r: self.records.append(describeRequest(r))
        )
        self.factory.closeObservers.append(
            lambda r: self.records.append(describeClose(r))
        )
        self.port = FakePort()
        self.factory.addListeningPort(self.port)  # type: ignore[arg-type]
        self.connections: list[_Connection] = []
        self.steps: list[dict[str, Any]] = []

    def observe(self, event: LogEvent) -> None:
        if str(event.get("log_namespace", "")).startswith("connserver"):
            self.log.append(describeLog(event))

    def run(self) -> dict[str, Any]:
        @implementer(ILogObserver)
        def observer(event: LogEvent) -> None:
            self.observe(event)

        globalLogPublisher.addObserver(observer)
        try:
            self.step({"do": "connect"}, self.openConnection)
            for step in self.case.steps:
                self.runStep(step)
            settling: dict[str, Any] = {"do": "settle"}
            self.step(settling, self.settle, settling)
            if any(not c.gone for c in self.connections):
                self.step({"do": "client-close (left waiting)"}, self.closeAll)
        finally:
            globalLogPublisher.removeObserver(observer)
        return {
            "id": self.case.id,
            "config": describeConfig(self.case.config),
            "steps": self.steps,
            "end": {
                "timers": len(self.clock.getDelayedCalls()),
                "accepting": self.port.reading,
                **statsOf(self.factory),
            },
        }

    # -- one step, described ------------------------------------------------------

    def step(self, entry: dict[str, Any], action: Any, *args: Any) -> None:
        notes, records, log = len(self.notes), len(self.records), len(self.log)
        try:
            action(*args)
        except Exception as error:
            entry["error"] = f"{type(error).__name__}: {error}"
        if self.case.reactorCloses:
            try:
                self.deliverCloses()
            except Exception as error:
                entry["error"] = f"{type(error).__name__}: {error}"
        for c in self.connections:
            suffix = "" if c.index == 1 else f"@{c.index}"
            if c.transport is not None:
                out = c.transport.value()
                c.transport.clear()
                if out:
                    entry["out" + suffix] = showBytes(out)
            entry["after" + suffix] = c.status()
        if self.notes[notes:]:
            entry["notes"] = self.notes[notes:]
        if self.records[records:]:
            entry["records"] = self.records[records:]
        if self.log[log:]:
            entry["log"] = self.log[log:]
        entry["timers"] = len(self.clock.getDelayedCalls())
        self.steps.append(entry)

    def runStep(self, step: Step) -> None:
        entry: dict[str, Any] = {"do": step.kind}
        if step.conn != 1:
            entry["conn"] = step.conn
        if step.kind.startswith("send"):
            entry["in"] = showBytes(step.data)
            if step.kind == "send cuts":
                entry["cuts"] = ",".join(map(str, step.arg))
        elif step.arg is not None:
            entry["arg"] = step.arg
        self.step(entry, self.perform, step, entry)

    def perform(self, step: Step, entry: dict[str, Any]) -> None:
        kind = step.kind
        if kind == "advance":
            self.clock.advance(step.arg)
            return
        if kind == "drain":
            d = (
                self.factory.drain()
                if step.arg == "default"
                else self.factory.drain(step.arg)
            )
            d.addCallback(lambda _: self.notes.append("drain: done"))
            return
        if kind == "open":
            self.openConnection()
            return
        c = self.connections[step.conn - 1]
        if c.gone or c.transport is None:
            entry["skipped"] = "the connection is gone"
            return
        protocol = c.protocol
        transport = c.transport
        if kind.startswith("send"):
            if transport.disconnecting:
                # A closed socket delivers nothing more.
                entry["skipped"] = "the server closed the connection"
                return
            data = step.data
            if kind == "send":
                pieces = [data]
            elif kind == "send bytewise":
                pieces = [data[i : i + 1] for i in range(len(data))]
            else:
                points = [0, *step.arg, len(data)]
                pieces = [data[a:b] for a, b in itertools.pairwise(points)]
            for piece in pieces:
                if c.lost or transport.disconnecting:
                    entry["skipped"] = "the server closed the connection mid-send"
                    return
                protocol.dataReceived(piece)
        elif kind == "half-close":
            if transport.disconnecting:
                entry["skipped"] = "the server closed the connection"
                return
            protocol.readConnectionLost()
        elif kind == "client-close":
            c.lost = True
            protocol.connectionLost(Failure(ConnectionDone()))
        elif kind == "reset":
            c.lost = True
            protocol.connectionLost(Failure(ConnectionLost()))
        elif kind == "app-abort":
            transport.abortConnection()
        elif kind == "pause-writing":
            producer = transport.producer
            if producer is None:
                entry["skipped"] = "no producer registered"
                return
            c.writesPaused = True
            producer.pauseProducing()
        elif kind == "resume-writing":
            producer = transport.producer
            c.writesPaused = False
            if producer is None:
                entry["skipped"] = "no producer registered"
                return
            producer.resumeProducing()
        else:
            raise ValueError(f"unknown step {kind!r}")

    # -- what the reactor and the client do ---------------------------------------

    def openConnection(self) -> None:
        index = len(self.connections) + 1
        protocol = self.factory.buildProtocol(peerOf(index))
        if protocol is None:
            self.connections.append(_Connection(index, None, None))
            return
        transport = GoldenTransport(peerOf(index))
        c = _Connection(index, protocol, transport)
        self.connections.append(c)
        protocol.makeConnection(transport)

    def deliverCloses(self) -> None:
        """connectionLost for each transport the server closed or aborted."""
        for c in self.connections:
            if c.closedByServer:
                assert c.transport is not None
                c.lost = True
                c.writesPaused = False
                error = ConnectionAborted() if c.transport.aborted else ConnectionDone()
                c.protocol.connectionLost(Failure(error))

    def settle(self, entry: dict[str, Any]) -> None:
        """Run the clock from one delayed call to the next until all are gone."""
        start = self.clock.seconds()
        for _ in range(SETTLE_CALLS):
            if self.case.reactorCloses:
                self.deliverCloses()
            if all(c.gone for c in self.connections):
                break
            calls = self.clock.getDelayedCalls()
            if not calls:
                break
            due = min(call.getTime() for call in calls)
            if due - start > SETTLE_SECONDS:
                break
            self.clock.advance(max(0.0, due - self.clock.seconds()))
        entry["elapsed"] = _seconds(self.clock.seconds() - start)

    def closeAll(self) -> None:
        for c in self.connections:
            if not c.gone:
                c.lost = True
                c.protocol.connectionLost(Failure(ConnectionDone()))


def runCase(theCase: Case) -> dict[str, Any]:
    """The transcript of one case."""
    return _Run(theCase).run()
