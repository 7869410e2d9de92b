"""
The ``--workers`` parent's side of one worker process: spawning it, its
pipes, and the AMP commands the two exchange.

A worker (``python -m connserver._running.worker CONFIG``) gets ``CONFIG``,
JSON: its settings (:func:`~connserver._running.settings.settingsToJSON`,
the parent's own flags left out), its slot and number, its listeners (a
descriptor from fd 4 on, or an address to bind) and the reactor to install.
Its fd 0 and fd 3 carry AMP to and from the parent: :class:`Ready` once it
accepts, :class:`Report` every second with its counters.  Its fd 1 (an
access log on ``-``) and fd 2 (its log, one event per line as
``LEVEL|text``) come back to the parent, which writes whole lines only, so
that workers never interleave.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.protocol import ProcessProtocol, connectionDone
from twisted.logger import Logger, LogLevel
from twisted.protocols import amp
from twisted.python.failure import Failure

from connserver._running.settings import settingsToJSON, workerSettings

if TYPE_CHECKING:
    from twisted.internet.interfaces import IProcessTransport

    from connserver._running.listeners import ListenerSpec
    from connserver._running.settings import ServeSettings

__all__ = [
    "AMP_IN",
    "AMP_OUT",
    "FIRST_SOCKET",
    "QuietAMP",
    "Ready",
    "Report",
    "SpawnedWorker",
    "WorkerEvents",
    "WorkerProcess",
    "describeExit",
    "spawnWorker",
]

_log = Logger(namespace="connserver")

#: The child's descriptors: the parent writes AMP to the worker's fd 0 and
#: reads it from fd 3; fd 1 and 2 are the worker's output and log; the
#: listening sockets follow from fd 4 on.
AMP_IN, AMP_OUT, FIRST_SOCKET = 0, 3, 4


class Ready(amp.Command):
    """Worker to parent: every socket is adopted; the worker accepts."""

    arguments = [(b"pid", amp.Integer())]  # type: ignore[no-untyped-call]
    response: list[tuple[bytes, amp.Argument]] = []  # type: ignore[misc]


class Report(amp.Command):
    """
    Worker to parent, every second and once more after its drain: its
    figures (JSON, see :data:`COUNTERS`).  The answer is the sum of every
    other worker's (retired ones included) and the list of live workers.
    """

    arguments = [(b"stats", amp.Unicode()), (b"final", amp.Boolean())]  # type: ignore[no-untyped-call]
    response = [(b"cluster", amp.Unicode())]  # type: ignore[no-untyped-call]


def describeExit(reason: Failure | None) -> str:
    """``exit status 1`` or ``killed by SIGKILL`` for a ``processEnded`` reason."""
    value = getattr(reason, "value", None)
    number = getattr(value, "signal", None)
    if number:
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"killed by {name}"
    return f"exit status {getattr(value, 'exitCode', None)}"


class SpawnedWorker(Protocol):
    """What the process side reads and writes of a worker's handle."""

    slot: int
    number: int
    pid: int
    lastLine: str


class WorkerEvents(Protocol):
    """What the process side tells (the supervisor): ready, reports, exit."""

    def workerReady(self, handle: Any) -> None:
        """``handle`` accepts connections now."""

    def workerReported(self, handle: Any, stats: dict[str, Any]) -> str:
        """``handle``'s figures; the answer is the cluster view (JSON)."""

    def workerExited(self, handle: Any, status: str) -> None:
        """``handle``'s process has ended."""


class _ChildTransport:
    """AMP's transport: writes go to the worker's fd 0."""

    def __init__(self, process: IProcessTransport) -> None:
        self._process = process
        self.disconnecting = False

    def write(self, data: bytes) -> None:
        self._process.writeToChild(AMP_IN, data)

    def writeSequence(self, data: list[bytes]) -> None:
        self._process.writeToChild(AMP_IN, b"".join(data))

    def loseConnection(self) -> None:
        self.disconnecting = True
        self._process.closeChildFD(AMP_IN)

    def getPeer(self) -> object:
        return self._process

    def getHost(self) -> object:
        return self._process


class QuietAMP(amp.AMP):
    """AMP without its two log lines per connection (one per worker start)."""

    def makeConnection(self, transport: Any) -> None:
        """Connect without AMP's log line."""
        amp.BinaryBoxProtocol.makeConnection(self, transport)  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Disconnect without AMP's log line."""
        amp.BinaryBoxProtocol.connectionLost(self, reason)  # type: ignore[no-untyped-call]
        self.transport = None


class _ParentChannel(QuietAMP):
    """The parent's end of one worker's AMP channel."""

    def __init__(self, supervisor: WorkerEvents, handle: SpawnedWorker) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._supervisor = supervisor
        self._handle = handle

    @Ready.responder
    def ready(self, pid: int) -> dict[str, Any]:
        self._supervisor.workerReady(self._handle)
        return {}

    @Report.responder
    def report(self, stats: str, final: bool) -> dict[str, Any]:
        return {
            "cluster": self._supervisor.workerReported(self._handle, json.loads(stats))
        }


_LEVELS = {level.name: level for level in LogLevel.iterconstants()}


class WorkerProcess(ProcessProtocol):
    """One worker's pipes: AMP, its output relayed by line, its log."""

    def __init__(self, supervisor: WorkerEvents, handle: SpawnedWorker) -> None:
        self.supervisor = supervisor
        self.handle = handle
        self.channel = _ParentChannel(supervisor, handle)
        self._partial = {1: b"", 2: b""}

    def connectionMade(self) -> None:
        """Start AMP on the worker's pipes."""
        assert self.transport is not None
        self.channel.makeConnection(_ChildTransport(self.transport))

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        """AMP bytes, or output to relay by whole lines."""
        if childFD == AMP_OUT:
            self.channel.dataReceived(data)  # type: ignore[no-untyped-call]
            return
        buffered = self._partial.get(childFD, b"") + data
        lines, _, rest = buffered.rpartition(b"\n")
        self._partial[childFD] = rest
        if lines:
            self._emit(childFD, lines + b"\n")

    def _emit(self, childFD: int, lines: bytes) -> None:
        if childFD == 1:
            # Access log lines on '-': whole lines, in one write.
            out = sys.__stdout__ or sys.stdout
            buffer = getattr(out, "buffer", None)
            if buffer is not None:
                buffer.write(lines)
                buffer.flush()
            else:
                out.write(lines.decode("utf-8", "replace"))
                out.flush()
            return
        for raw in lines.decode("utf-8", "replace").splitlines():
            levelName, sep, text = raw.partition("|")
            level = _LEVELS.get(levelName) if sep else None
            if level is None:
                level, text = LogLevel.info, raw
            if text.strip():
                self.handle.lastLine = text.strip()
            _log.emit(
                level,
                "[worker {slot} pid {pid}] {line}",
                slot=self.handle.slot,
                pid=self.handle.pid,
                line=text,
            )

    def processEnded(self, reason: Failure) -> None:
        """Relay what is left, then tell the supervisor."""
        for fd, rest in self._partial.items():
            if rest:
                self._emit(fd, rest + b"\n")
        self._partial = {1: b"", 2: b""}
        self.channel.connectionLost(reason)
        self.supervisor.workerExited(self.handle, describeExit(reason))


def _listenerEntries(
    specs: list[ListenerSpec], childFDs: dict[int, int | str]
) -> list[dict[str, Any]]:
    """The worker's listener entries; each descriptor is added to ``childFDs``."""
    listeners = []
    fd = FIRST_SOCKET
    for spec in specs:
        entry: dict[str, Any] = {
            "kind": spec.kind,
            "index": spec.index,
            "family": int(spec.family),
        }
        if spec.bind is not None:
            entry["bind"] = list(spec.bind)
        else:
            assert spec.fd is not None
            childFDs[fd] = spec.fd
            entry["fd"] = fd
            fd += 1
        listeners.append(entry)
    return listeners


def spawnWorker(
    reactor: Any,
    events: WorkerEvents,
    handle: SpawnedWorker,
    specs: list[ListenerSpec],
    settings: ServeSettings,
) -> IProcessTransport:
    """
    Start ``handle``'s process with the listeners of ``specs``: a
    ``WorkerProcess`` relays its pipes and tells ``events``.
    """
    childFDs: dict[int, int | str] = {AMP_IN: "w", 1: "r", 2: "r", AMP_OUT: "r"}
    config = json.dumps(
        {
            "settings": settingsToJSON(workerSettings(settings)),
            "slot": handle.slot,
            # Every worker started has its own number, hence its own
            # range of connection ids.
            "number": handle.number,
            "listeners": _listenerEntries(specs, childFDs),
            # twistd --reactor: the workers run the same one.
            "reactor": type(reactor).__module__,
        }
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")
    }
    env["CONNSERVER_WORKER"] = str(handle.slot)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    process: IProcessTransport = reactor.spawnProcess(
        WorkerProcess(events, handle),
        sys.executable,
        [sys.executable, "-m", "connserver._running.worker", config],
        env=env,
        path=settings.cwd,
        childFDs=childFDs,
    )
    return process
