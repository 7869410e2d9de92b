"""
``--workers N``: the parent process that opens the sockets and supervises
the worker processes that serve them.

The parent listens on every endpoint once (in ``privilegedStartService``,
before ``--uid`` drops root) and never accepts: it stops reading each port
at once and hands its descriptor to every worker through ``spawnProcess``'s
``childFDs``; each worker (``python -m connserver._running.worker``) adopts it with
``reactor.adoptStreamPort`` and wraps TLS itself, so a worker started by a
SIGHUP reads the certificates again.  With ``--reuse-port`` the parent only
binds each TCP address (``SO_REUSEPORT``, not listening, which holds the
port) and every worker opens its own listening socket on it.

Each worker talks to the parent over AMP (``twisted.protocols.amp``) on two
pipes, the parent's end of its fd 0 and fd 3: :class:`Ready` once it accepts,
:class:`Report` every second with its counters (answered with the figures of
every other worker, for the status page and the metrics).  Its fd 1 (an
access log on ``-``) and fd 2 (its log, one event per line) come back to
the parent, which writes whole lines only, so that workers never interleave.

:class:`Supervisor` holds the policy, with a clock, and is tested with
``twisted.internet.task.Clock``: a dead worker is restarted after a backoff
that doubles with each recent death; five deaths within ten seconds, or a
worker that dies before any worker was ever ready, end the server with one
line and exit status 1.  SIGHUP replaces the workers one at a time (a new
one is ready before the old one drains); ``--worker-max-requests`` replaces
one worker the same way; SIGTERM drains them all.
"""

from __future__ import annotations

import atexit
import json
import os
import random
import signal
import socket
import sys
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol, connectionDone
from twisted.logger import Logger, LogLevel
from twisted.protocols import amp
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from twisted.internet.interfaces import (
        IDelayedCall,
        IListeningPort,
        IProcessTransport,
        IReactorTime,
    )

    from connserver.tap import Options

__all__ = [
    "COUNTERS",
    "Ready",
    "Report",
    "Supervisor",
    "SupervisorService",
    "WorkerHandle",
    "addCounters",
    "describeExit",
    "makeSupervisorService",
]

_log = Logger(namespace="connserver")

#: The child's descriptors: the parent writes AMP to the worker's fd 0 and
#: reads it from fd 3; fd 1 and 2 are the worker's output and log; the
#: listening sockets follow from fd 4 on.
AMP_IN, AMP_OUT, FIRST_SOCKET = 0, 3, 4

#: The fields of a report that are counters (summed over every worker that
#: ever ran); the others (``active``, ``states``) are gauges of live ones.
COUNTERS = (
    "accepted",
    "handled",
    "requests",
    "refused",
    "closes",
    "requestsPerConnection",
    "byClass",
    "durationCounts",
    "durationSum",
    "bodyBytes",
)
_GAUGES = ("active", "states")


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


def addCounters(total: dict[str, Any], part: Mapping[str, Any]) -> dict[str, Any]:
    """Add ``part``'s numbers, dicts (per key) and lists (per index) to ``total``."""
    for key, value in part.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, dict):
            into = total.setdefault(key, {})
            for k, v in value.items():
                into[k] = into.get(k, 0) + v
        elif isinstance(value, list):
            into = total.setdefault(key, [0] * len(value))
            into.extend([0] * (len(value) - len(into)))
            for i, v in enumerate(value):
                into[i] += v
        elif isinstance(value, int | float):
            total[key] = total.get(key, 0) + value
    return total


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


@dataclass(eq=False)
class WorkerHandle:
    """One worker process, as the supervisor sees it."""

    #: Which of the N workers (1..N) it is; a replacement takes the slot.
    slot: int
    #: Counts every worker started, for log lines.
    number: int
    started: float
    requestLimit: int | None = None
    process: IProcessTransport | None = None
    pid: int = 0
    ready: bool = False
    #: Asked to drain (replaced, or the server stops).
    retiring: bool = False
    replaces: WorkerHandle | None = None
    replacedBy: WorkerHandle | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    #: Its last log line, for the message when it dies before it is ready.
    lastLine: str = ""
    watchdog: IDelayedCall | None = None

    def signal(self, signum: int) -> None:
        """Send ``signum`` unless the process has gone."""
        if self.process is not None and self.process.pid is not None:
            try:
                self.process.signalProcess(signum)
            except Exception:  # ProcessExitedAlready, OSError
                pass

    def row(self, now: float) -> dict[str, Any]:
        """The status page's row."""
        return {
            "worker": self.slot,
            "pid": self.pid,
            "uptime": now - self.started,
            "connections": self.stats.get("active", 0),
            "requests": self.stats.get("requests", 0),
        }

    def __str__(self) -> str:
        return f"worker {self.slot} (pid {self.pid})"


class Supervisor:
    """
    Starts ``count`` workers with ``spawn`` and keeps them running.

    ``spawn(handle)`` starts a process and sets ``handle.process`` and
    ``handle.pid``; the process side calls :meth:`workerReady`,
    :meth:`workerReported` and :meth:`workerExited`.  ``fatal(message)``
    ends the server (exit status 1).
    """

    #: A crash loop: this many deaths within ``crashWindow`` seconds.
    crashDeaths = 5
    crashWindow = 10.0
    #: Restart delay: ``backoffBase`` doubled per recent death, at most ``backoffMax``.
    backoffBase = 0.1
    backoffMax = 10.0
    #: A worker not ready after this long is killed (and counts as a death).
    readyTimeout = 60.0
    #: A ready worker that has not reported for this long is hung (a handler
    #: blocking its reactor, say): killed, and restarted as a death.
    #: gunicorn's --timeout is 30 s too.
    reportTimeout = 30.0

    def __init__(
        self,
        count: int,
        spawn: Callable[[WorkerHandle], None],
        clock: IReactorTime,
        fatal: Callable[[str], None],
        *,
        maxRequests: int | None = None,
        maxRequestsJitter: int = 0,
        drainTimeout: float | None = 30.0,
        randint: Callable[[int, int], int] = random.randint,
    ) -> None:
        self.count = count
        self._spawn = spawn
        self._clock = clock
        self._fatal = fatal
        self.maxRequests = maxRequests
        self.maxRequestsJitter = maxRequestsJitter
        self.drainTimeout = drainTimeout
        self._randint = randint
        #: Live workers, oldest first.
        self.workers: list[WorkerHandle] = []
        #: The counters of the workers that have exited.
        self.retired: dict[str, Any] = {}
        self._numbers = 0
        self._deaths: deque[float] = deque()
        self._restarts: dict[int, IDelayedCall] = {}
        self._everReady = False
        self._reloadQueue: list[WorkerHandle] | None = None
        self.stopping = False
        self.failed = False
        self._stopped: list[Deferred[None]] = []
        self._killCall: IDelayedCall | None = None

    # -- starting ---------------------------------------------------------

    def start(self) -> None:
        """Start every worker."""
        for slot in range(1, self.count + 1):
            self._start(slot)

    def _start(self, slot: int, replaces: WorkerHandle | None = None) -> WorkerHandle:
        self._numbers += 1
        limit = None
        if self.maxRequests is not None:
            limit = self.maxRequests + self._randint(0, self.maxRequestsJitter)
        handle = WorkerHandle(slot, self._numbers, self._clock.seconds(), limit)
        handle.replaces = replaces
        if replaces is not None:
            replaces.replacedBy = handle
        self.workers.append(handle)
        handle.watchdog = self._clock.callLater(
            self.readyTimeout, self._notReady, handle
        )
        self._spawn(handle)
        return handle

    def _notReady(self, handle: WorkerHandle) -> None:
        handle.watchdog = None
        handle.lastLine = (
            f"not ready after {self.readyTimeout:g} s; killed. {handle.lastLine}"
        )
        handle.signal(signal.SIGKILL)

    def workerReady(self, handle: WorkerHandle) -> None:
        """``handle`` accepts connections now."""
        if handle.ready or handle not in self.workers:
            return
        handle.ready = True
        self._everReady = True
        call, handle.watchdog = handle.watchdog, None
        if call is not None and call.active():
            call.cancel()
        handle.watchdog = self._clock.callLater(
            self.reportTimeout, self._silent, handle
        )
        _log.info("connserver: {worker} ready", worker=str(handle))
        old = handle.replaces
        handle.replaces = None
        if old is not None and old in self.workers and not old.retiring:
            self._retire(old)
        if self.stopping:
            self._retire(handle)

    def _silent(self, handle: WorkerHandle) -> None:
        handle.watchdog = None
        handle.lastLine = (
            f"no report for {self.reportTimeout:g} s (hung?); killed. {handle.lastLine}"
        )
        _log.error(
            "connserver: {worker} has not reported for {timeout:g} s: killing it",
            worker=str(handle),
            timeout=self.reportTimeout,
        )
        handle.signal(signal.SIGKILL)

    def _retire(self, handle: WorkerHandle) -> None:
        # A draining worker stops reporting; its deadline is drainTimeout's.
        call, handle.watchdog = handle.watchdog, None
        if call is not None and call.active():
            call.cancel()
        handle.retiring = True
        _log.info("connserver: draining {worker}", worker=str(handle))
        handle.signal(signal.SIGTERM)

    # -- reports ----------------------------------------------------------

    def workerReported(self, handle: WorkerHandle, stats: dict[str, Any]) -> str:
        """Store ``handle``'s figures; the cluster view it gets back (JSON)."""
        handle.stats = stats
        if handle.ready and handle.watchdog is not None and handle.watchdog.active():
            handle.watchdog.reset(self.reportTimeout)
        limit = handle.requestLimit
        if (
            limit is not None
            and stats.get("requests", 0) >= limit
            and handle.ready
            and not handle.retiring
            and handle.replacedBy is None
            and not self.stopping
        ):
            _log.info(
                "connserver: {worker} served {requests} requests "
                "(--worker-max-requests): replacing it",
                worker=str(handle),
                requests=stats.get("requests", 0),
            )
            self._start(handle.slot, replaces=handle)
        return json.dumps(self.clusterFor(handle))

    def clusterFor(self, handle: WorkerHandle | None) -> dict[str, Any]:
        """The sum of every worker's figures but ``handle``'s, and the rows."""
        others: dict[str, Any] = addCounters({}, self.retired)
        for worker in self.workers:
            if worker is handle:
                continue
            addCounters(
                others, {k: worker.stats[k] for k in COUNTERS if k in worker.stats}
            )
            addCounters(
                others, {k: worker.stats[k] for k in _GAUGES if k in worker.stats}
            )
        now = self._clock.seconds()
        return {"others": others, "workers": [w.row(now) for w in self.workers]}

    def totals(self) -> dict[str, Any]:
        """Every worker's figures summed."""
        others: dict[str, Any] = self.clusterFor(None)["others"]
        return others

    # -- exits ------------------------------------------------------------

    def workerExited(self, handle: WorkerHandle, status: str) -> None:
        """``handle``'s process has ended (``status``: :func:`describeExit`)."""
        if handle not in self.workers:
            return
        self.workers.remove(handle)
        call, handle.watchdog = handle.watchdog, None
        if call is not None and call.active():
            call.cancel()
        addCounters(
            self.retired, {k: handle.stats[k] for k in COUNTERS if k in handle.stats}
        )
        if self.stopping:
            _log.info(
                "connserver: {worker} exited ({status})",
                worker=str(handle),
                status=status,
            )
            self._checkStopped()
            return
        if handle.retiring:
            _log.info(
                "connserver: {worker} exited ({status})",
                worker=str(handle),
                status=status,
            )
            if handle.replacedBy is not None and handle.replacedBy in self.workers:
                handle.replacedBy.replaces = None
            self._reloadNext()
            return
        # An unexpected death.
        _log.error(
            "connserver: {worker} died ({status}){last}",
            worker=str(handle),
            status=status,
            last=f"; its last log line: {handle.lastLine}" if handle.lastLine else "",
        )
        if not handle.ready and not self._everReady:
            self._fail(
                f"connserver: worker {handle.slot} could not start ({status})"
                + (f": {handle.lastLine}" if handle.lastLine else "")
            )
            return
        now = self._clock.seconds()
        self._deaths.append(now)
        while self._deaths and self._deaths[0] < now - self.crashWindow:
            self._deaths.popleft()
        if len(self._deaths) >= self.crashDeaths:
            self._fail(
                f"connserver: workers are crash-looping ({len(self._deaths)} deaths "
                f"within {self.crashWindow:g} s; the last: {handle} {status}"
                + (f", its last log line: {handle.lastLine}" if handle.lastLine else "")
                + "); stopping"
            )
            return
        old = handle.replaces
        if old is not None and old in self.workers:
            # A replacement died before it was ready: the old worker stays,
            # and a reload in progress stops here.
            old.replacedBy = None
            if self._reloadQueue is not None:
                _log.error("connserver: reload abandoned; the current workers stay.")
                self._reloadQueue = None
            return
        if handle.replacedBy is not None and handle.replacedBy in self.workers:
            return  # Its replacement is already starting.
        delay = min(self.backoffBase * 2 ** (len(self._deaths) - 1), self.backoffMax)
        _log.info(
            "connserver: restarting worker {slot} in {delay:.1f} s",
            slot=handle.slot,
            delay=delay,
        )
        self._restarts[handle.slot] = self._clock.callLater(
            delay, self._restart, handle.slot
        )

    def _restart(self, slot: int) -> None:
        self._restarts.pop(slot, None)
        if not self.stopping:
            self._start(slot)

    def _fail(self, message: str) -> None:
        if self.failed:
            return
        self.failed = True
        _log.critical("{message}", message=message)
        self._fatal(message)

    # -- reload -----------------------------------------------------------

    def reload(self) -> None:
        """Replace every worker, one at a time, each once its successor is ready."""
        if self.stopping:
            return
        if self._reloadQueue is not None:
            _log.info("connserver: SIGHUP: a reload is in progress already.")
            return
        self._reloadQueue = [
            w for w in self.workers if not w.retiring and w.replacedBy is None
        ]
        _log.info(
            "connserver: SIGHUP: replacing {count} workers one at a time",
            count=len(self._reloadQueue),
        )
        self._reloadNext()

    @property
    def reloading(self) -> bool:
        """True while a SIGHUP reload is replacing workers."""
        return self._reloadQueue is not None

    def _reloadNext(self) -> None:
        queue = self._reloadQueue
        if queue is None or self.stopping:
            return
        if any(w.replaces is not None or w.retiring for w in self.workers):
            return  # One at a time: wait for the current one.
        while queue:
            old = queue.pop(0)
            if old in self.workers and not old.retiring and old.replacedBy is None:
                self._start(old.slot, replaces=old)
                return
        self._reloadQueue = None
        _log.info("connserver: reload done: every worker replaced.")

    # -- stopping ---------------------------------------------------------

    def stop(self) -> Deferred[None]:
        """Drain every worker; fires once the last one has exited."""
        self.stopping = True
        self._reloadQueue = None
        for restart in self._restarts.values():
            if restart.active():
                restart.cancel()
        self._restarts.clear()
        for handle in self.workers:
            call, handle.watchdog = handle.watchdog, None
            if call is not None and call.active():
                call.cancel()
            if not handle.retiring:
                self._retire(handle)
        done: Deferred[None] = Deferred()
        self._stopped.append(done)
        if self.drainTimeout is not None and self.workers and self._killCall is None:
            # A margin over the workers' own deadline, for their shutdown.
            self._killCall = self._clock.callLater(
                self.drainTimeout + 5, self._killRemaining
            )
        self._checkStopped()
        return done

    def _killRemaining(self) -> None:
        self._killCall = None
        for handle in self.workers:
            _log.warn("connserver: {worker} did not exit: killed", worker=str(handle))
            handle.signal(signal.SIGKILL)

    def _checkStopped(self) -> None:
        if self.workers:
            return
        call, self._killCall = self._killCall, None
        if call is not None and call.active():
            call.cancel()
        waiting, self._stopped = self._stopped, []
        for done in waiting:
            done.callback(None)

    def forward(self, signum: int) -> None:
        """Send ``signum`` to every live worker (SIGUSR1: reopen the access log)."""
        for handle in self.workers:
            handle.signal(signum)


# -- the process side ------------------------------------------------------


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

    def __init__(self, supervisor: Supervisor, handle: WorkerHandle) -> None:
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

    def __init__(self, supervisor: Supervisor, handle: WorkerHandle) -> None:
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


class _NoConnections(Factory):
    """The parent's ports never accept (they are paused), but need a factory."""

    noisy = False

    def buildProtocol(self, addr: object) -> Protocol | None:  # pragma: no cover
        return None


@dataclass
class ListenerSpec:
    """How a worker gets one listener: a descriptor, or its address to bind."""

    kind: str  # "plain", "tls" or "haproxy"
    index: int  # TLS: which TLS listener; else which --listen
    fd: int | None = None
    family: int = socket.AF_INET
    #: --reuse-port: (host, port, backlog) for the worker's own socket.
    bind: tuple[str, int, int] | None = None


class SupervisorService(MultiService):
    """
    The parent: the listening sockets (opened before privileges drop), the
    supervisor, and the signals (SIGHUP: rolling reload; SIGUSR1: forwarded).
    """

    def __init__(self, options: Options, reactor: Any) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.options = options
        self.reactor = reactor
        config = options["config"]
        self.supervisor = Supervisor(
            options["workers"],
            self._spawn,
            reactor,
            self._fatal,
            maxRequests=options["worker-max-requests"],
            maxRequestsJitter=options["worker-max-requests-jitter"] or 0,
            drainTimeout=config.drainTimeout,
        )
        self.specs: list[ListenerSpec] = []
        self._sockets: list[socket.socket] = []
        self._ports: list[IListeningPort] = []

    # Listening, once.

    def privilegedStartService(self) -> None:
        """Open every listener once (before twistd drops privileges)."""
        from connserver._running.service import StartupError, startupErrorMessage

        super().privilegedStartService()  # type: ignore[no-untyped-call]
        reusePort = bool(self.options["reuse-port"])
        listeners: list[tuple[str, str, int]] = [
            (d, "plain", i) for i, d in enumerate(self.options["listen"])
        ]
        listeners += [
            (t.description, "tls", i) for i, t in enumerate(self.options["tls"])
        ]
        try:
            for description, kind, index in listeners:
                where = description
                if kind == "tls":
                    tls = self.options["tls"][index]
                    address: tuple[str, int, int] | None = (
                        tls.interface,
                        tls.port,
                        tls.backlog,
                    )
                    inner = None
                else:
                    inner = description
                    if description.split(":", 1)[0].strip().lower() == "haproxy":
                        kind, inner = "haproxy", description.split(":", 1)[1]
                    address = _tcpAddress(self.reactor, inner)
                if reusePort and address is not None:
                    spec = self._bindReusePort(kind, index, address)
                else:
                    spec = self._listen(kind, index, inner, address)
                self.specs.append(spec)
        except Exception as error:
            message = startupErrorMessage(where, error)
            _log.critical("{message}", message=message)
            from connserver._running.service import _installQuietStartupErrors

            _installQuietStartupErrors()
            raise StartupError(message) from None

    def _listen(
        self,
        kind: str,
        index: int,
        description: str | None,
        address: tuple[str, int, int] | None,
    ) -> ListenerSpec:
        from twisted.internet.endpoints import TCP4ServerEndpoint, serverFromString

        from connserver._running.service import describePort

        if description is None:
            assert address is not None
            endpoint = TCP4ServerEndpoint(  # type: ignore[no-untyped-call]
                self.reactor, address[1], address[2], address[0]
            )
        else:
            endpoint = serverFromString(self.reactor, description)  # type: ignore[no-untyped-call]
        failures: list[Failure] = []
        ports: list[IListeningPort] = []
        listening = endpoint.listen(_NoConnections())  # type: ignore[no-untyped-call]
        listening.addCallbacks(ports.append, failures.append)
        if failures:
            failures[0].raiseException()
        port = ports[0]
        # The parent never accepts: the workers do.
        port.stopReading()  # type: ignore[attr-defined]
        _log.info("connserver listening on {where}", where=describePort(port))
        self._ports.append(port)
        sock = port.socket  # type: ignore[attr-defined]
        return ListenerSpec(kind, index, fd=sock.fileno(), family=sock.family)

    def _bindReusePort(
        self, kind: str, index: int, address: tuple[str, int, int]
    ) -> ListenerSpec:
        host, port, backlog = address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            # Bound, never listening: it holds the port (and, with port 0,
            # chooses it) while the workers' sockets come and go.
            sock.bind(
                (host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port)
            )
        except OSError:
            sock.close()
            raise
        self._sockets.append(sock)
        boundHost, boundPort = sock.getsockname()[:2]
        kindName = "ipv6" if family == socket.AF_INET6 else "ipv4"
        _log.info(
            "connserver listening on {where} (SO_REUSEPORT, a socket per worker)",
            where=f"{kindName} {boundHost}:{boundPort}",
        )
        return ListenerSpec(
            kind, index, family=family, bind=(boundHost, boundPort, backlog)
        )

    # Workers.

    def _spawn(self, handle: WorkerHandle) -> None:
        childFDs: dict[int, int | str] = {AMP_IN: "w", 1: "r", 2: "r", AMP_OUT: "r"}
        listeners = []
        fd = FIRST_SOCKET
        for spec in self.specs:
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
        argv = _workerArgv(self.options.argv)
        config = json.dumps(
            {
                "argv": argv,
                "slot": handle.slot,
                # Every worker started has its own number, hence its own
                # range of connection ids.
                "number": handle.number,
                "listeners": listeners,
                # twistd --reactor: the workers run the same one.
                "reactor": type(self.reactor).__module__,
            }
        )
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")
        }
        env["CONNSERVER_WORKER"] = str(handle.slot)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        protocol = WorkerProcess(self.supervisor, handle)
        process = self.reactor.spawnProcess(
            protocol,
            sys.executable,
            [sys.executable, "-m", "connserver._running.worker", config],
            env=env,
            path=self.options.cwd,
            childFDs=childFDs,
        )
        handle.process = process
        handle.pid = process.pid or 0
        _log.info(
            "connserver: started {worker}{why}",
            worker=str(handle),
            why=f", to replace {handle.replaces}" if handle.replaces else "",
        )

    def _fatal(self, message: str) -> None:
        # twistd exits 0 after reactor.stop(); the supervisor's failure must
        # not look like a clean stop to systemd or a shell.
        def exitOne() -> None:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            os._exit(1)

        atexit.register(exitOne)
        if self.reactor.running:
            self.reactor.stop()
        else:
            self.reactor.callWhenRunning(self.reactor.stop)

    def startService(self) -> None:
        """Install the signal handlers and start the workers."""
        from connserver._running.service import SignalService

        super().startService()  # type: ignore[no-untyped-call]
        for name, signum, action in (
            ("reload", signal.SIGHUP, self.supervisor.reload),
            (
                "access-log-reopen",
                signal.SIGUSR1,
                lambda: self.supervisor.forward(signal.SIGUSR1),
            ),
        ):
            # Added to a running MultiService: started by addService.
            service = SignalService(name, signum, action, self.reactor)
            service.setServiceParent(self)  # type: ignore[no-untyped-call]
        self.supervisor.start()

    def stopService(self) -> Deferred[None]:
        """Stop accepting, then drain every worker; fires after the last exits."""
        Service.stopService(self)  # type: ignore[no-untyped-call]
        # Stop accepting first: the workers' copies close as they drain.
        for port in self._ports:
            port.stopListening()
        self._ports = []
        for sock in self._sockets:
            sock.close()
        self._sockets = []
        for child in list(self):
            if child.running:
                child.stopService()
        if not self.supervisor.workers:
            return succeed(None)
        _log.info(
            "connserver: stopped accepting; draining {count} worker(s)",
            count=len(self.supervisor.workers),
        )
        return self.supervisor.stop()


_WORKER_FLAGS = ("--workers", "--worker-max-requests", "--worker-max-requests-jitter")


def _workerArgv(argv: list[str]) -> list[str]:
    """``argv`` without the flags only the parent uses."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in _WORKER_FLAGS:
            skip = "=" not in arg
            continue
        if arg == "--reuse-port":
            continue
        out.append(arg)
    return out


def _tcpAddress(reactor: Any, description: str) -> tuple[str, int, int] | None:
    """(interface, port, backlog) of a ``tcp:`` description, else None."""
    from twisted.internet.endpoints import TCP4ServerEndpoint, serverFromString

    endpoint = serverFromString(reactor, description)  # type: ignore[no-untyped-call]
    if not isinstance(endpoint, TCP4ServerEndpoint):  # TCP6ServerEndpoint too
        return None
    return (
        endpoint._interface,
        endpoint._port,
        endpoint._backlog,
    )


def makeSupervisorService(options: Options) -> MultiService:
    """The ``--workers N`` parent for ``options`` (N >= 2)."""
    from twisted.internet import reactor

    return SupervisorService(options, reactor)
