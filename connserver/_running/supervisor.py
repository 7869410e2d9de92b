"""
``--workers N``: the parent process that opens the sockets and supervises
the worker processes that serve them.

The parent opens every listener once (in ``privilegedStartService``,
before ``--uid`` drops root; see ``connserver._running.listeners``) and
never accepts; each worker adopts the sockets and wraps TLS itself, so a
worker started by a SIGHUP reads the certificates again.  Spawning a worker,
its pipes and the AMP commands it sends are ``connserver._running.spawn``'s.

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
import sys
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from connserver._running.listeners import ListenerOpenError, ParentSockets
from connserver._running.spawn import spawnWorker
from connserver._twisted.reactor import cancelCall

if TYPE_CHECKING:
    from twisted.internet.interfaces import (
        IDelayedCall,
        IProcessTransport,
        IReactorTime,
    )

    from connserver._running.settings import ServeSettings

__all__ = [
    "COUNTERS",
    "Supervisor",
    "SupervisorService",
    "WorkerHandle",
    "addCounters",
]

_log = Logger(namespace="connserver")

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
        cancelCall(call)
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
        cancelCall(call)
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
        """
        ``handle``'s process has ended (``status``: ``describeExit`` of
        ``connserver._running.spawn``).
        """
        if handle not in self.workers:
            return
        self.workers.remove(handle)
        call, handle.watchdog = handle.watchdog, None
        cancelCall(call)
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
        self._died(handle, status)

    def _died(self, handle: WorkerHandle, status: str) -> None:
        """An unexpected death: fail, or restart after the backoff."""
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
            cancelCall(call)
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
        cancelCall(call)
        waiting, self._stopped = self._stopped, []
        for done in waiting:
            done.callback(None)

    def forward(self, signum: int) -> None:
        """Send ``signum`` to every live worker (SIGUSR1: reopen the access log)."""
        for handle in self.workers:
            handle.signal(signum)


class SupervisorService(MultiService):
    """
    The parent: the listening sockets (opened before privileges drop), the
    supervisor, and the signals (SIGHUP: rolling reload; SIGUSR1: forwarded).
    """

    def __init__(self, settings: ServeSettings, reactor: Any) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.settings = settings
        self.reactor = reactor
        self.supervisor = Supervisor(
            settings.workers,
            self._spawn,
            reactor,
            self._fatal,
            maxRequests=settings.workerMaxRequests,
            maxRequestsJitter=settings.workerMaxRequestsJitter,
            drainTimeout=settings.config.drainTimeout,
        )
        self.sockets = ParentSockets(reactor)
        self.sockets.serving = settings.serving()

    def privilegedStartService(self) -> None:
        """Open every listener once (before twistd drops privileges)."""
        from connserver._running.service import (
            StartupError,
            installQuietStartupErrors,
            startupErrorMessage,
        )

        super().privilegedStartService()  # type: ignore[no-untyped-call]
        settings = self.settings
        try:
            self.sockets.open(settings.listen, settings.tls, settings.reusePort)
        except ListenerOpenError as failed:
            message = startupErrorMessage(failed.where, failed.error)
            _log.critical("{message}", message=message)
            installQuietStartupErrors()
            raise StartupError(message) from None

    def _spawn(self, handle: WorkerHandle) -> None:
        process = spawnWorker(
            self.reactor, self.supervisor, handle, self.sockets.specs, self.settings
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
        self.sockets.close()
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
