"""
A ``--workers`` worker process: ``python -m connserver._running.worker CONFIG``.

``CONFIG`` (JSON, from ``connserver._running.spawn``) holds the settings the
parent was given (rebuilt here, so that a worker started by a SIGHUP imports
the handler and reads the certificates afresh), the worker's slot and
number, and its listeners: a descriptor to adopt, or (``--reuse-port``) an
address to open its own ``SO_REUSEPORT`` socket on.  Everything else is
``connserver._running.assembly``, as in one process.

The worker's fd 0 and fd 3 carry AMP to and from the parent; fd 1 is its
standard output (an access log on ``-``) and fd 2 its log, one event per
line as ``LEVEL|text``, both relayed by the parent.  SIGTERM drains it (the
same ``ConnectionServerService`` stop as ``twistd``); so does the parent
going away (its AMP pipe closes).  After the drain it sends a final
:class:`~connserver._running.spawn.Report`, so the parent's totals miss none
of its requests.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from twisted.internet.defer import Deferred
from twisted.internet.protocol import connectionDone
from twisted.logger import formatEvent, globalLogBeginner
from twisted.python.failure import Failure

from connserver._running.spawn import AMP_IN, AMP_OUT, QuietAMP, Ready, Report

if TYPE_CHECKING:
    from twisted.internet.task import LoopingCall

    from connserver._running.cluster import Cluster
    from connserver._running.service import ConnectionServerService

__all__ = ["WorkerChannel", "WorkerRuntime", "main"]

#: Seconds between two reports to the parent.
REPORT_INTERVAL = 1.0
#: The range of connection ids each worker numbers from (see WorkerRuntime).
CONNECTION_IDS_PER_WORKER = 10**9


class WorkerChannel(QuietAMP):
    """The worker's end of the AMP channel; ``lost`` is called when it closes."""

    def __init__(self, lost: Callable[[], object]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._lost = lost

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self._lost()


def _logObserver(stream: Any) -> Any:
    def observe(event: dict[str, Any]) -> None:
        text = formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            text += "\n" + failure.getTraceback()
        level = event.get("log_level")
        name = getattr(level, "name", "info")
        stream.write("".join(f"{name}|{line}\n" for line in text.splitlines() or [""]))
        stream.flush()

    return observe


def _installReactor(moduleName: str | None) -> Any:
    """Install the reactor the parent runs (``twistd --reactor``), and return it."""
    from twisted.application.reactors import getReactorTypes

    for installer in getReactorTypes():
        if getattr(installer, "moduleName", None) == moduleName:
            installer.install()
            break
    from connserver._twisted.reactor import defaultReactor

    return defaultReactor()


def die(message: str) -> NoReturn:
    """One critical line for the parent to relay, and exit status 3."""
    sys.stderr.write(f"critical|{message}\n")
    sys.stderr.flush()
    os._exit(3)


class WorkerRuntime:
    """
    One worker: its server built from the parent's ``CONFIG``, its AMP
    channel, its reports, and its drain on SIGTERM or when the parent goes.
    """

    def __init__(self, spec: dict[str, Any], reactor: Any) -> None:
        self.spec = spec
        # Typed as what it is here (posix: adoptStreamPort, callFromThread, ...).
        self.reactor = reactor
        self.stopping = False
        self.cluster: Cluster
        self.service: ConnectionServerService
        self.channel: WorkerChannel
        self.reporter: LoopingCall

    def build(self) -> None:
        """The server, around the parent's sockets; ``die`` if it cannot be built."""
        from connserver._running.assembly import makeServerService
        from connserver._running.cluster import Cluster
        from connserver._running.listeners import workerEndpoints
        from connserver._running.settings import SettingsError, settingsFromJSON

        spec = self.spec
        try:
            settings = settingsFromJSON(spec["settings"])
        except SettingsError as error:
            die(str(error))
        try:
            endpoints = workerEndpoints(self.reactor, spec["listeners"], settings.tls)
        except OSError as error:
            die(f"cannot open a listening socket: {error}")
        assert len(endpoints) == len(settings.listen) + len(settings.tls)
        self.cluster = Cluster(spec["slot"])
        self.cluster.exchange = self.exchange
        self.cluster.clock = self.reactor
        try:
            service: Any = makeServerService(settings, endpoints, self.cluster)
        except Exception as error:
            die(f"{type(error).__name__}: {error}".splitlines()[0])
        self.service = service
        self.cluster.factory = service.factory
        # Connection ids unique over the whole server, as the access log's
        # conn= promises: worker number W (counting every worker started)
        # numbers its connections from W * 10**9 + 1.
        service.factory.numberConnectionsFrom(
            spec["number"] * CONNECTION_IDS_PER_WORKER + 1
        )

    def connect(self) -> None:
        """Start AMP on fd 0 and fd 3, and the reports' loop (not yet running)."""
        from twisted.internet.stdio import StandardIO
        from twisted.internet.task import LoopingCall

        self.reporter = LoopingCall(self.report)
        self.channel = WorkerChannel(self.parentGone)
        StandardIO(self.channel, stdin=AMP_IN, stdout=AMP_OUT, reactor=self.reactor)  # type: ignore[call-arg,no-untyped-call]

    def exchange(
        self, figures: dict[str, Any], final: bool = False
    ) -> Deferred[dict[str, Any]]:
        """Send ``figures`` to the parent; fire with its answer (the cluster view)."""
        d: Deferred[dict[str, Any]] = self.channel.callRemote(  # type: ignore[no-untyped-call]
            Report, stats=json.dumps(figures), final=final
        )
        return d.addCallback(lambda answer: json.loads(answer["cluster"]))

    def report(self, final: bool = False) -> Deferred[None]:
        """Send this worker's figures; keep the others' that come back."""
        d = self.exchange(self.cluster.own(), final)
        return d.addCallbacks(self.cluster.update, lambda failure: None)

    def start(self) -> None:
        """
        The other workers' figures first, so that the first status page or
        scrape this worker answers already has them; then listen.
        """
        self.report().addCallback(lambda _: self.begin())

    def begin(self) -> None:
        """Listen, take SIGTERM and SIGINT, and tell the parent it is ready."""
        try:
            self.service.privilegedStartService()
            self.service.startService()  # type: ignore[no-untyped-call]
        except Exception as error:
            die(str(error).splitlines()[0] if str(error) else repr(error))
        self.reactor.addSystemEventTrigger("before", "shutdown", self.stop)
        signal.signal(signal.SIGTERM, self.stopSignal)
        signal.signal(signal.SIGINT, self.stopSignal)
        d = self.channel.callRemote(Ready, pid=os.getpid())  # type: ignore[no-untyped-call]
        d.addCallback(lambda _: self.reporter.start(REPORT_INTERVAL, now=False))

    def stop(self) -> Deferred[None]:
        """Drain (at reactor shutdown), then send the last figures."""
        if self.reporter.running:
            self.reporter.stop()
        d: Deferred[Any] = self.service.stopService()
        # After the drain: the last figures, so the parent's totals are whole.
        d.addBoth(lambda _: self.report(final=True))
        return d

    def stopOnce(self) -> None:
        """
        Stop the reactor (hence drain) once: a second SIGTERM (a process
        group's, say) must not raise ReactorNotRunning.
        """
        if not self.stopping and self.reactor.running:
            self.stopping = True
            self.reactor.stop()

    def parentGone(self) -> None:
        """No parent: drain and exit, nobody else would stop this worker."""
        self.stopOnce()

    def stopSignal(self, signum: int, frame: object) -> None:
        """SIGTERM, SIGINT: drain, from the reactor's thread."""
        self.reactor.callFromThread(self.stopOnce)

    def run(self) -> None:
        """Build, connect, and run the reactor until the drain is over."""
        self.build()
        self.connect()
        self.reactor.callWhenRunning(self.start)
        self.reactor.run()  # SIGTERM and SIGINT stop it (and drain, above).


def main(argv: list[str]) -> None:
    """Run a worker (see the module's documentation)."""
    spec = json.loads(argv[1])
    globalLogBeginner.beginLoggingTo(
        [_logObserver(sys.stderr)], redirectStandardIO=False, discardBuffer=True
    )
    # The parent reloads on SIGHUP by replacing workers; a worker ignores it
    # (sent to the whole process group, it must not end the worker).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    reactor = _installReactor(spec.get("reactor"))
    WorkerRuntime(spec, reactor).run()


if __name__ == "__main__":
    main(sys.argv)
