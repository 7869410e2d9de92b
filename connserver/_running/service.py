"""
``ConnectionServerService``: listening ports plus a graceful drain on stop.

``twistd`` calls ``stopService`` on SIGTERM (and SIGINT) and waits for the
Deferred it returns before it stops the reactor.  This service uses that
wait: it first stops accepting on every port, then asks the factory to
drain (idle connections close, in-flight responses finish with
``Connection: close``, what remains at ``drainTimeout`` is aborted), and
only then stops its companion services (access log, status sampler), so
that the last requests are logged and no timer is left running.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from enum import Enum
from types import EllipsisType
from typing import IO, TYPE_CHECKING, Any, Protocol

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import (
    Deferred,
    DeferredList,
    ensureDeferred,
    maybeDeferred,
    succeed,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from twisted.internet.interfaces import (
        IListeningPort,
        IReactorFromThreads,
        IStreamServerEndpoint,
    )
    from twisted.internet.protocol import Factory

    from connserver._handlers.metrics import MetricsHandler
    from connserver._handlers.status import StatusHandler
    from connserver._http.config import ServerConfig
    from connserver._running.accesslog import AccessLog

__all__ = [
    "CallbackService",
    "ConnectionServerService",
    "ListeningService",
    "RepeatedStopSignalService",
    "SignalService",
    "StartupError",
    "describeHandler",
    "describePort",
    "installQuietStartupErrors",
    "isTLSEndpoint",
    "serviceURL",
    "servingLine",
    "startupErrorMessage",
]


class _DrainableFactory(Protocol):
    """What the service needs of ``ConnectionFactory``."""

    config: ServerConfig

    def addListeningPort(self, port: IListeningPort) -> None: ...

    # ``drain()`` applies config.drainTimeout, ``drain(None)`` has no deadline.
    def drain(self, timeout: float | EllipsisType | None = ...) -> Deferred[None]: ...


def describePort(port: IListeningPort) -> str:
    """``tcp 127.0.0.1:8080``-style text for a log line."""
    address = port.getHost()
    kind = type(address).__name__.replace("Address", "").lower() or "port"
    host = getattr(address, "host", None)
    portNumber = getattr(address, "port", None)
    if host is not None and portNumber is not None:
        if ":" in host:
            return f"{kind} [{host}]:{portNumber}"
        return f"{kind} {host}:{portNumber}"
    name = getattr(address, "name", None)
    if name is not None:
        return f"{kind} {name.decode() if isinstance(name, bytes) else name}"
    return str(address)


def serviceURL(address: object, scheme: str) -> str | None:
    """
    A URL a person can open for a listening ``address`` (a port's
    ``getHost()``): ``http://127.0.0.1:8080/``; a port on every interface
    is given as the loopback address.  None for an address without an IP
    address and port (a Unix socket).
    """
    host = getattr(address, "host", None)
    number = getattr(address, "port", None)
    if not isinstance(host, str) or not isinstance(number, int):
        return None
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host.partition('%')[0]}]"
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{host}{'' if number == default else f':{number}'}/"


def servingLine(port: IListeningPort, scheme: str, serving: str | None) -> str:
    """
    ``serving http://127.0.0.1:8080/ (static: /srv/www)``: the line a
    person can click, one per listener.
    """
    url = serviceURL(port.getHost(), scheme)
    where = url if url is not None else f"{scheme} on {describePort(port)}"
    return f"serving {where}" + ("" if serving is None else f" ({serving})")


def describeHandler(handler: object) -> str:
    """
    What a handler serves, in a few words: ``static: /srv/www``,
    ``twisted.web: Resource``, ``handler: module.name``.
    """
    from connserver._handlers.routing import PrefixMount
    from connserver._handlers.static import StaticFiles

    if isinstance(handler, PrefixMount):
        handler = handler.default
    if isinstance(handler, StaticFiles):
        return f"static: {handler.root}"
    site = getattr(handler, "site", None)  # a WebResourceHandler
    resource = getattr(site, "resource", None)
    if resource is not None:
        return f"twisted.web: {type(resource).__qualname__}"
    name = getattr(handler, "__qualname__", None) or type(handler).__qualname__
    module = getattr(handler, "__module__", None)
    return f"handler: {name}" if not module else f"handler: {module}.{name}"


def _reactorOf(factory: object) -> Any:
    reactor = getattr(factory, "reactor", None)
    if reactor is None:
        from connserver._twisted.reactor import defaultReactor

        reactor = defaultReactor()
    return reactor


def isTLSEndpoint(endpoint: object) -> bool:
    """True for an endpoint whose connections are TLS (``ssl:``, ``--https``)."""
    from twisted.internet.endpoints import SSL4ServerEndpoint

    return isinstance(endpoint, SSL4ServerEndpoint) or (
        getattr(endpoint, "tls", None) is not None  # a worker's AdoptedEndpoint
    )


class StartupError(Exception):
    """
    The server cannot start (a port in use, a bad address, permission
    denied); the message is one line, and it has been logged.

    ``twistd`` lets an exception from ``privilegedStartService`` reach the
    interpreter after it has removed its pid file (and, daemonized, told the
    waiting parent, which prints the message): the exit status is 1.  The
    hook :func:`installQuietStartupErrors` puts on ``sys.excepthook`` prints
    no traceback for this one, since the log already holds its line.
    """


# A hint for the errors a newcomer meets at startup, after the system's text.
_HINTS = {
    errno.EADDRINUSE: "another process is listening there",
    errno.EACCES: (
        "a port below 1024 needs root or CAP_NET_BIND_SERVICE: start as root "
        "with --uid/--gid, which drop privileges once listening; a unix: "
        "socket needs write permission on its directory"
    ),
    errno.EADDRNOTAVAIL: "no local interface has that address",
    errno.ENOENT: "the socket's directory does not exist",
}


def startupErrorMessage(where: str, error: BaseException) -> str:
    """``connserver cannot listen on WHERE: REASON (HINT)``, one line."""
    cause = getattr(error, "socketError", None)  # CannotListenError's
    if not isinstance(cause, BaseException):
        cause = error
    number = getattr(cause, "errno", None)
    if isinstance(number, int) and number:
        reason = os.strerror(number)
        hint = _HINTS.get(number)
        if hint is not None:
            reason = f"{reason} ({hint})"
    else:
        text = str(cause).strip()
        reason = text.splitlines()[0] if text else type(cause).__name__
    return f"connserver cannot listen on {where}: {reason}"


def _startupFailure(child: IService, error: Exception) -> str:
    """The one line for ``child``'s failure to start."""
    from connserver._handlers.asgilifespan import LifespanError

    if isinstance(error, LifespanError):
        return f"connserver: the ASGI app's startup failed: {error}"
    if isinstance(child, ListeningService):
        where = child.description or _describeError(error)
    else:
        where = child.name or type(child).__name__
    return startupErrorMessage(where, error)


def installQuietStartupErrors() -> None:
    """Make ``sys.excepthook`` print nothing for a :class:`StartupError`."""
    previous = sys.excepthook
    if getattr(previous, "connserverQuiet", False):
        return

    def hook(kind: Any, value: Any, traceback: Any) -> None:
        if isinstance(value, StartupError):
            return  # Logged in one line already; the exit status is 1.
        previous(kind, value, traceback)

    hook.connserverQuiet = True  # type: ignore[attr-defined]
    sys.excepthook = hook


class ListeningService(Service):
    """
    Listens on one endpoint with one factory.

    It listens in ``privilegedStartService`` (before twistd drops root, so a
    port below 1024 works with ``--uid``) and raises at once if the endpoint
    fails synchronously, as ``twisted.application.strports.service`` does, so
    that a port already in use stops ``twistd`` instead of serving nothing.
    """

    _log = Logger()

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        factory: Factory,
        onListening: Callable[[IListeningPort], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.factory = factory
        self.onListening = onListening
        #: How the endpoint was given (``--listen 'tcp:8080'``), for messages.
        self.description: str | None = None
        #: ``https`` for a TLS endpoint, else ``http`` (for the log lines).
        self.scheme = "https" if isTLSEndpoint(endpoint) else "http"
        #: What is served (``static: /srv/www``), for a ``serving
        #: http://...`` line once listening; None logs no such line.
        #: ``ConnectionServerService`` sets it.
        self.serving: Callable[[], str | None] | None = None
        #: The port, once listening.
        self.port: IListeningPort | None = None
        self._waiting: Deferred[IListeningPort] | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()  # type: ignore[no-untyped-call]
        self._listen(raiseNow=True)

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        if self._waiting is None:
            self._listen(raiseNow=False)

    def _listen(self, raiseNow: bool) -> None:
        failures: list[Failure] = []
        synchronous = True
        waiting = self.endpoint.listen(self.factory)
        self._waiting = waiting

        def listening(port: IListeningPort) -> IListeningPort:
            self.port = port
            self._log.info(
                "connserver listening on {where}{tls}",
                where=describePort(port),
                tls=" (https)" if self.scheme == "https" else "",
            )
            if self.serving is not None:
                self._log.info(
                    "{line}", line=servingLine(port, self.scheme, self.serving())
                )
            if self.onListening is not None:
                self.onListening(port)
            return port

        def failed(failure: Failure) -> None:
            if synchronous and raiseNow:
                failures.append(failure)
            else:
                from twisted.internet.defer import CancelledError

                if not failure.check(CancelledError):
                    self._log.failure("connserver could not listen", failure)

        waiting.addCallbacks(listening, failed)
        synchronous = False
        if failures:
            self._waiting = None
            failures[0].raiseException()

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        waiting, self._waiting = self._waiting, None
        if waiting is None:
            return succeed(None)
        waiting.cancel()

        def stop(port: IListeningPort | None) -> Deferred[Any]:
            self.port = None
            if port is not None:
                return maybeDeferred(port.stopListening)
            return succeed(None)

        result: Deferred[None] = waiting.addCallback(stop)
        return result


class CallbackService(Service):
    """A service that calls ``onStart`` and ``onStop`` (for companions)."""

    def __init__(
        self,
        name: str,
        onStart: Callable[[], object] | None = None,
        onStop: Callable[[], object] | None = None,
    ) -> None:
        self.setName(name)  # type: ignore[no-untyped-call]
        self._onStart = onStart
        self._onStop = onStop

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        if self._onStart is not None:
            self._onStart()

    def stopService(self) -> Deferred[Any]:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._onStop is None:
            return succeed(None)
        return maybeDeferred(self._onStop)


class SignalService(Service):
    """
    Runs ``action`` in the reactor each time the process gets ``signum``
    (SIGHUP for a certificate reload, SIGUSR1 to reopen the access log, as
    nginx uses them), while the service runs; the previous handler is put
    back on stop.  Without it SIGHUP or SIGUSR1 would end the process.

    A previous Python handler is chained: it runs too, after ``action`` is
    scheduled.  ``twistd --logfile FILE`` (and a daemonized ``twistd``)
    installs one for SIGUSR1 before the services start, to rotate its own
    log; both happen.  The default and ignore dispositions are not called.
    """

    def __init__(
        self,
        name: str,
        signum: int,
        action: Callable[[], object],
        reactor: IReactorFromThreads,
    ) -> None:
        self.setName(name)  # type: ignore[no-untyped-call]
        self._signum = signum
        self._action = action
        self._reactor = reactor
        self._previous: Any = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._previous = signal.signal(self._signum, self._received)

    def _received(self, signum: int, frame: object) -> None:
        # A Python signal handler runs between two bytecodes of whatever the
        # main thread was doing: hand the work to the reactor.
        self._reactor.callFromThread(self._run)
        previous = self._previous
        if callable(previous):
            previous(signum, frame)

    def _run(self) -> None:
        try:
            self._action()
        except Exception:
            self._log.failure("connserver: {name} failed", name=self.name)

    _log = Logger()

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._previous is not None:
            signal.signal(self._signum, self._previous)
            self._previous = None
        return succeed(None)


class RepeatedStopSignalService(Service):
    """
    A second SIGTERM (or SIGINT) while the server stops is one log line.

    Twisted's handler calls ``reactor.stop()`` on every one, and a second
    call, during the drain, raises ``ReactorNotRunning``: a traceback in the
    log.  This service puts its own handler in front: the first signal goes
    to the previous handler (Twisted's, which begins the stop); once the
    reactor is stopping, by a signal or otherwise, a signal is only logged,
    until the process exits.  Stopped while the reactor runs on, it puts the
    previous handlers back.
    """

    _log = Logger()

    def __init__(self, reactor: Any, drainTimeout: Callable[[], float | None]) -> None:
        self.setName("repeated-stop-signals")  # type: ignore[no-untyped-call]
        self._reactor = reactor
        self._drainTimeout = drainTimeout
        self._previous: dict[int, Any] = {}
        self.stopping = False

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._reactor.addSystemEventTrigger("before", "shutdown", self._stopping)
        # twistd starts the services before the reactor runs, and the
        # reactor installs its own handlers as it starts: ours go in front
        # of those, once it runs.
        self._reactor.callWhenRunning(self._install)

    def _install(self) -> None:
        if not self.running or self.stopping:
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            # Only in front of a Python handler (the reactor's): a default
            # or ignore disposition is left alone.
            if callable(signal.getsignal(signum)):
                self._previous[signum] = signal.signal(signum, self._received)

    def _stopping(self) -> None:
        self.stopping = True

    def _received(self, signum: int, frame: object) -> None:
        previous = self._previous[signum]
        if not self.stopping:
            self.stopping = True
            previous(signum, frame)
            return
        # In a signal handler: the line is written by the reactor.
        self._reactor.callFromThread(self._logAgain, signal.Signals(signum).name)

    def _logAgain(self, name: str) -> None:
        timeout = self._drainTimeout()
        self._log.info(
            "connserver: {name} again: already stopping (the drain ends {when}); "
            "SIGKILL stops at once",
            name=name,
            when="when the last connection closes"
            if timeout is None
            else f"within {timeout:g} s",
        )

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        if not self.stopping:
            for signum, previous in self._previous.items():
                if previous is not None:
                    signal.signal(signum, previous)
            self._previous = {}
        return succeed(None)


def _describeError(error: BaseException) -> str:
    interface = getattr(error, "interface", None)
    port = getattr(error, "port", None)
    if port is None:
        return "its endpoint"
    return f"{interface or '*'}:{port}"


class _FromConfig(Enum):
    """The default of ``drainTimeout``: read it from the factory's config."""

    TOKEN = "from-config"


class ConnectionServerService(MultiService):
    """
    One :class:`ListeningService` per endpoint around one factory, and a
    graceful stop: stop accepting, drain, then stop the companions.

    ``drainTimeout`` defaults to the factory's ``config.drainTimeout``
    (``None`` waits for the last connection, however long it takes).
    Companion services (the access log, the status sampler) are added with
    :meth:`addCompanion`; they start after the ports and stop after the drain.

    What ``twistd connserver`` adds to its server is public here, for an
    embedded server (``factory`` a :class:`~connserver.ConnectionFactory`):
    :meth:`addAccessLog`, :meth:`addStatusPage`, :meth:`addMetrics`, and
    :meth:`mount` for any handler at a path prefix.  Once listening, each
    listener logs ``connserver listening on ...`` and ``serving
    http://127.0.0.1:8080/ (WHAT)``, ``WHAT`` being :attr:`serving`.
    """

    _log = Logger()

    def __init__(
        self,
        factory: _DrainableFactory,
        endpoints: Iterable[IStreamServerEndpoint] = (),
        *,
        drainTimeout: float | _FromConfig | None = _FromConfig.TOKEN,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.factory = factory
        self._drainTimeout = drainTimeout
        self.listeners: list[ListeningService] = []
        self.companions: list[IService] = []
        self._serving: str | None = None
        self._mounted: Any = None
        for endpoint in endpoints:
            self.addEndpoint(endpoint)

    @property
    def serving(self) -> str:
        """
        What the server serves, for the ``serving http://...`` line: the
        text assigned, else a description of the factory's handler
        (``static: /srv/www``, ``handler: app.hello``).
        """
        if self._serving is not None:
            return self._serving
        return describeHandler(getattr(self.factory, "handler", None))

    @serving.setter
    def serving(self, text: str) -> None:
        self._serving = text

    def mount(self, prefix: str | bytes, handler: Any) -> None:
        """
        Serve ``handler`` for the requests at or under the path ``prefix``
        (``/status`` takes ``/status`` and ``/status/...``), in front of
        the factory's handler, through a :class:`~connserver.PrefixMount`.
        """
        from connserver._handlers.routing import PrefixMount

        factory: Any = self.factory
        if self._mounted is None or factory.handler is not self._mounted:
            self._mounted = PrefixMount(factory.handler)
            factory.handler = self._mounted
        self._mounted.mount(prefix, handler)

    def addAccessLog(
        self,
        target: str | os.PathLike[str] | IO[bytes] | IO[str],
        format: str = "combined",
        *,
        closes: str = "abnormal",
        mode: int = 0o640,
        reopenSignal: int | None = signal.SIGUSR1,
    ) -> AccessLog:
        """
        Write an access log line for every request, and (``closes``) one
        for each connection that closed without a response saying why, to
        ``target``: a path (created when the service starts, with ``mode``
        whatever the umask), ``"-"`` for standard output, or an open file.
        ``format`` is ``combined`` or ``json``; ``closes`` is ``all``,
        ``abnormal`` (as ``twistd connserver``: not the client's close nor
        the idle timeout) or ``none`` (see :class:`~connserver.AccessLog`).
        The buffered lines are written after the drain; ``reopenSignal``
        (SIGUSR1, as nginx; None for none) reopens the file after logrotate
        renamed it.  Raises ``ValueError`` for a bad format, ``closes`` or
        ``mode``.
        """
        from connserver._running.accesslog import AccessLog

        factory: Any = self.factory
        accessLog = AccessLog(
            target,
            format,
            reactor=getattr(factory, "reactor", None),
            closes=closes,
            mode=mode,
        )
        factory.requestObservers.append(accessLog)
        # Every close is in the log once: the closes no response carried.
        factory.closeObservers.append(accessLog)
        self.addCompanion(
            CallbackService(
                "access-log", onStart=accessLog.open, onStop=accessLog.close
            )
        )
        if reopenSignal is not None:
            self.addCompanion(
                SignalService(
                    "access-log-reopen",
                    reopenSignal,
                    accessLog.reopen,
                    _reactorOf(factory),
                )
            )
        return accessLog

    def addStatusPage(self, path: str = "/status", **options: Any) -> StatusHandler:
        """
        Serve the status page (:class:`~connserver.StatusHandler`, built
        with ``options``) at ``path``, sampled while the service runs.
        """
        from connserver._handlers.status import StatusHandler, StatusSamplingService

        factory: Any = self.factory
        options.setdefault("reactor", getattr(factory, "reactor", None))
        status = StatusHandler(factory, **options)
        self.mount(path, status)
        self.addCompanion(StatusSamplingService(status))
        return status

    def addMetrics(self, path: str = "/metrics", **options: Any) -> MetricsHandler:
        """
        Serve Prometheus metrics (``MetricsHandler``, built with
        ``options``; needs ``pip install 'connserver[metrics]'``) at
        ``path``.
        """
        from connserver._handlers.metrics import MetricsHandler

        metrics = MetricsHandler(self.factory, **options)  # type: ignore[arg-type]
        self.mount(path, metrics)
        return metrics

    #: Turn a failure to listen in ``privilegedStartService`` into one
    #: logged line and a :class:`StartupError` (``twistd connserver`` sets
    #: it); otherwise the endpoint's own exception is raised.
    oneLineStartupErrors = False

    @property
    def drainTimeout(self) -> float | None:
        """Seconds the drain may take before what remains is aborted."""
        if isinstance(self._drainTimeout, _FromConfig):
            return self.factory.config.drainTimeout
        return self._drainTimeout

    def addEndpoint(self, endpoint: IStreamServerEndpoint) -> ListeningService:
        """Listen on ``endpoint`` too (registering the port with the factory)."""
        listener = ListeningService(
            endpoint,
            self.factory,  # type: ignore[arg-type]
            self.factory.addListeningPort,
        )
        listener.serving = lambda: self.serving
        self.listeners.append(listener)
        listener.setServiceParent(self)  # type: ignore[no-untyped-call]
        return listener

    def addCompanion(self, service: IService, first: bool = False) -> None:
        """
        Run ``service`` alongside; it is stopped only after the drain.  A
        ``first`` companion starts before the listeners bind (an ASGI app's
        lifespan startup): if a listener then fails, its
        ``startupAbandoned()`` (if it has one) undoes what it started.
        """
        self.companions.append(service)
        service.setServiceParent(self)  # type: ignore[no-untyped-call]
        if first:
            self.services.remove(service)
            self.services.insert(0, service)

    @property
    def ports(self) -> Sequence[IListeningPort]:
        """The ports listening now."""
        return [listener.port for listener in self.listeners if listener.port]

    def privilegedStartService(self) -> None:
        """Listen on every endpoint (see :attr:`oneLineStartupErrors`)."""
        if not self.oneLineStartupErrors:
            super().privilegedStartService()  # type: ignore[no-untyped-call]
            return
        Service.privilegedStartService(self)  # type: ignore[no-untyped-call]
        started: list[IService] = []
        for child in self:
            try:
                child.privilegedStartService()
            except Exception as error:
                message = _startupFailure(child, error)
                self._log.critical("{message}", message=message)
                for done in reversed(started):
                    abandon = getattr(done, "startupAbandoned", None)
                    if abandon is not None:
                        abandon()
                installQuietStartupErrors()
                raise StartupError(message) from None
            started.append(child)

    def stopService(self) -> Deferred[None]:
        """Stop accepting, drain, then stop the companions; fires when done."""
        Service.stopService(self)  # type: ignore[no-untyped-call]
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        self._logFailures(
            await DeferredList(
                [
                    maybeDeferred(listener.stopService)
                    for listener in reversed(self.listeners)
                    if listener.running
                ],
                consumeErrors=True,
            ),
            "stopping a listening port",
        )
        timeout = self.drainTimeout
        self._log.info(
            "connserver: stopped accepting; draining connections (deadline {timeout})",
            timeout="none" if timeout is None else f"{timeout:g} s",
        )
        self._logFailures(
            await DeferredList(
                [maybeDeferred(self.factory.drain, timeout)], consumeErrors=True
            ),
            "draining",
        )
        self._logFailures(
            await DeferredList(
                [
                    maybeDeferred(companion.stopService)
                    for companion in reversed(self.companions)
                    if companion.running
                ],
                consumeErrors=True,
            ),
            "stopping a companion service",
        )

    def _logFailures(
        self, results: list[tuple[bool, Any]], what: str
    ) -> list[tuple[bool, Any]]:
        for ok, result in results:
            if not ok:
                self._log.failure("connserver: error while {what}", result, what=what)
        return results
