"""
The server, put together from :class:`~connserver._running.settings.ServeSettings`.

One process: a ``ConnectionFactory`` around the handler (static files or
the application, with the status page, the metrics and the reverse proxies
mounted in front), one listening service per listener, and the companions
that start and stop with it: status sampling, the proxies' idle
connections, the access log, and the SIGHUP and SIGUSR1 handlers.  With
``--workers`` 2 or more it is the supervisor instead
(:mod:`connserver._running.supervisor`); each worker builds this same
server around the sockets its parent opened.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from connserver._twisted.reactor import defaultReactor

if TYPE_CHECKING:
    from twisted.application.service import MultiService
    from twisted.internet.interfaces import IStreamServerEndpoint

    from connserver._connection.factory import ConnectionFactory
    from connserver._connection.message import Handler
    from connserver._running.cluster import Cluster
    from connserver._running.service import ConnectionServerService
    from connserver._running.settings import ServeSettings

__all__ = ["makeServerService"]

_log = Logger(namespace="connserver")


def makeServerService(
    settings: ServeSettings,
    endpoints: list[IStreamServerEndpoint] | None = None,
    cluster: Cluster | None = None,
) -> MultiService:
    """
    The server ``settings`` describe: one listening service per listener
    around one ``ConnectionFactory``, draining on stop.

    With ``workers`` 2 or more it is the supervisor instead; a worker
    passes ``endpoints``, one per listener (``listen`` ones, then the TLS
    ones), adopting the sockets its parent opened, and its ``cluster``,
    whose figures (summed over every worker) the status page and the
    metrics show.
    """
    if endpoints is None and settings.workers > 1:
        from connserver._running.supervisor import SupervisorService

        return SupervisorService(settings, defaultReactor())
    return _assemble(settings, endpoints, cluster)


def _assemble(
    settings: ServeSettings,
    endpoints: list[IStreamServerEndpoint] | None,
    cluster: Cluster | None,
) -> ConnectionServerService:
    from connserver._connection.factory import ConnectionFactory
    from connserver._running.listeners import serverEndpoints
    from connserver._running.service import ConnectionServerService

    reactor = defaultReactor()
    _checkDescriptors(settings)
    handler = settings.application
    if handler is None:
        handler = _staticFiles(settings, reactor)
    factory = ConnectionFactory(handler, config=settings.config, reactor=reactor)
    if endpoints is None:
        endpoints = serverEndpoints(reactor, settings.listen, settings.tls)
    service = ConnectionServerService(factory, endpoints)
    # A port in use, a bad address, permission denied: one line, exit 1.
    service.oneLineStartupErrors = True
    if settings.asgiSpec is not None:
        _startLifespan(settings, handler, service)
    if settings.inWorker:
        # The parent logs one "serving" line per listener, not each worker.
        for listener in service.listeners:
            listener.serving = None
    else:
        service.serving = settings.serving()
        _warnHSTS(settings)
    for index, (listener, description) in enumerate(
        zip(
            service.listeners,
            [*settings.listen, *(t.description for t in settings.tls)],
            strict=True,
        )
    ):
        listener.description = description
        listener.scheme = "https" if index >= len(settings.listen) else "http"
    mounts = _mounts(settings, factory, service, cluster, reactor)
    if mounts:
        from connserver._handlers.routing import PrefixMount

        factory.handler = PrefixMount(handler, mounts)
    if settings.wsgiSpec is not None:
        _wsgiThreads(handler, service)
    if settings.redirectToHTTPS:
        _redirectToHTTPS(settings, factory, service, list(mounts))
    _addSignals(settings, factory, service, reactor)
    return service


def _warnHSTS(settings: ServeSettings) -> None:
    """--hsts without a TLS listener would send nothing: say so, once."""
    if settings.config.hstsMaxAge is not None and not settings.tls:
        Logger(namespace="connserver.tap").warn(
            "--hsts-max-age {seconds}: no TLS listener (--https or --listen "
            "ssl:...), and Strict-Transport-Security is sent over TLS only "
            "(RFC 6797 §7.2), so no response will carry it; behind a proxy that "
            "terminates TLS, have the proxy send it",
            seconds=settings.config.hstsMaxAge,
        )


def _startLifespan(
    settings: ServeSettings, handler: Handler, service: ConnectionServerService
) -> None:
    """
    ``--asgi``: the app's lifespan startup before the reactor runs (now in
    a worker; once twistd has daemonized otherwise), its shutdown after the
    drain.
    """
    from connserver._handlers.asgilifespan import LifespanService

    service.addCompanion(
        LifespanService(
            handler, settings.config.drainTimeout, startNow=settings.inWorker
        ),
        first=True,
    )


def _checkDescriptors(settings: ServeSettings) -> None:
    """
    The soft limit on descriptors is often 1024 under a far higher hard
    limit: raise it (no privilege needed) so that ``maxConnections`` can be
    reached before EMFILE, and say so when it still does not fit.
    """
    from connserver._http.limits import maxConnectionsWarning, raiseOpenFileLimit

    raiseOpenFileLimit()
    warning = maxConnectionsWarning(
        settings.config.maxConnections,
        descriptorsPerConnection=1 if settings.application is not None else 2,
    )
    if warning is not None:
        _log.warn("{warning}", warning=warning)


def _staticFiles(settings: ServeSettings, reactor: Any) -> Handler:
    from connserver._handlers.static import StaticFiles

    assert settings.path is not None
    handler = StaticFiles(
        settings.path,
        listing=settings.listing,
        followSymlinks=settings.followSymlinks,
        showHidden=settings.showHidden,
        cacheControl=settings.cacheControl,
        precompressed=settings.precompressed,
        reactor=reactor,
        compress=settings.compress,
        errorPages=dict(settings.errorPages),
        fallback=settings.fallback,
    )
    if not settings.inWorker:
        _warnMissingPages(settings)
    return handler


def _warnMissingPages(settings: ServeSettings) -> None:
    """
    One warning line per --error-page or --fallback file missing at start:
    the server still starts (the file may appear later; meanwhile an error
    page falls back to the built-in text, and the fallback is a 404), but a
    typo should not go unnoticed.
    """
    root = settings.path
    assert root is not None
    pages = [
        (f"--error-page {status}={page}", page)
        for status, page in settings.errorPages.items()
    ]
    if settings.fallback:
        pages.append((f"--fallback {settings.fallback}", settings.fallback))
    for flag, page in pages:
        if not os.path.isfile(os.path.join(root, page.lstrip("/"))):
            # The namespace these warnings have always had (a log filter
            # may match it).
            Logger(namespace="connserver.tap").warn(
                "{flag}: no such file under {root} (yet)", flag=flag, root=root
            )


def _mounts(
    settings: ServeSettings,
    factory: ConnectionFactory,
    service: ConnectionServerService,
    cluster: Cluster | None,
    reactor: Any,
) -> dict[str | bytes, Handler]:
    """The status page, the metrics and the proxies, by path prefix."""
    from connserver._running.service import CallbackService

    mounts: dict[str | bytes, Handler] = {}
    if settings.statusPath is not None:
        from connserver._handlers.status import StatusHandler, StatusSamplingService

        status = StatusHandler(cluster or factory, reactor=reactor)
        mounts[settings.statusPath] = status
        if cluster is not None:
            status.workers = cluster.workerRows
            # Never less than an earlier page showed (see Cluster.fresh).
            mounts[settings.statusPath] = cluster.fresh(status)
        service.addCompanion(StatusSamplingService(status))
    if settings.metricsPath is not None:
        from connserver._handlers.metrics import MetricsHandler

        # Also adds its request observer to the factory.
        metrics = MetricsHandler(factory)
        mounts[settings.metricsPath] = metrics
        if cluster is not None:
            cluster.instrument(metrics)
            mounts[settings.metricsPath] = cluster.fresh(metrics)
    for prefix, url in settings.proxies:
        from connserver._handlers.proxy import ReverseProxy

        proxy = ReverseProxy(
            url,
            reactor=reactor,
            prefix=prefix,
            upstreamIdleTimeout=settings.proxyIdleTimeout,
            responseTimeout=settings.proxyTimeout,
            allowEncodedSlashes=settings.proxyEncodedSlashes,
            forwardUnderscores=settings.proxyUnderscores,
            allowUpgrade=settings.proxyUpgrade,
            tunnelIdleTimeout=settings.proxyTunnelTimeout,
        )
        mounts[prefix] = proxy
        # After the drain, close the idle upstream connections.
        service.addCompanion(CallbackService(f"proxy {prefix}", onStop=proxy.close))
    return mounts


def _wsgiThreads(handler: Handler, service: ConnectionServerService) -> None:
    """``--wsgi``: the thread pool starts with the server, stops after the drain."""
    from connserver._handlers.wsgi import WSGIHandler
    from connserver._running.service import CallbackService

    assert isinstance(handler, WSGIHandler)
    service.addCompanion(
        CallbackService(
            "wsgi-threads", onStart=handler.startThreads, onStop=handler.stopThreads
        )
    )


def _redirectToHTTPS(
    settings: ServeSettings,
    factory: ConnectionFactory,
    service: ConnectionServerService,
    exempt: list[str | bytes],
) -> None:
    """``--redirect-to-https``: plain HTTP answered with 308 to the TLS port."""
    from connserver._handlers.routing import HTTPSRedirect

    httpsPort: int | Callable[[], int] = settings.tls[0].port
    if httpsPort == 0:
        # Port 0: the number the kernel chose, once listening (the TLS
        # listeners come after the --listen ones).
        listener = service.listeners[len(settings.listen)]

        def httpsPort() -> int:
            port = listener.port
            return int(getattr(port.getHost(), "port", 0)) if port else 0

    factory.handler = HTTPSRedirect(factory.handler, httpsPort, exempt=exempt)


def _addSignals(
    settings: ServeSettings,
    factory: ConnectionFactory,
    service: ConnectionServerService,
    reactor: Any,
) -> None:
    """
    SIGHUP re-reads the certificates; SIGUSR1 reopens the access log; a
    second SIGTERM or SIGINT is one line, not a traceback.
    """
    from connserver._running.service import (
        RepeatedStopSignalService,
        SignalService,
    )

    if not settings.inWorker:  # A worker takes SIGTERM and SIGINT itself.
        service.addCompanion(
            RepeatedStopSignalService(reactor, lambda: service.drainTimeout)
        )

    tls = settings.tls
    # SIGHUP re-reads every certificate (certbot's renewal hook sends it);
    # one set of options may serve several listeners.  Without TLS it only
    # says so: SIGHUP never ends the server.
    certificateSets = list({id(t.options): t.options for t in tls}.values())
    service.addCompanion(
        SignalService(
            "tls-reload" if tls else "reload",
            signal.SIGHUP,
            (lambda: [certificates.reload() for certificates in certificateSets])
            if tls
            else (lambda: _log.info("SIGHUP: nothing to reload (no TLS listener).")),
            reactor,
        )
    )
    if settings.accessLog is not None:
        # Created at start (after twistd drops privileges, so the server's
        # user owns it), with --access-log-mode whatever the umask; SIGUSR1
        # reopens it after logrotate renamed it (nginx's USR1), and a
        # handler twistd installed for its own --logfile runs too.
        service.addAccessLog(
            settings.accessLog,
            settings.accessLogFormat,
            closes=settings.logCloses,
            mode=settings.accessLogMode,
        )
    else:
        service.addCompanion(
            SignalService(
                "access-log-reopen",
                signal.SIGUSR1,
                lambda: _log.info("SIGUSR1: no access log file to reopen."),
                reactor,
            )
        )
