"""
``ServeSettings``: what the command line asked for, checked and typed.

``connserver.tap`` turns its options into one :class:`ServeSettings`, and
:mod:`connserver._running.assembly` builds the server from it, so neither
reads the other's dictionary.  A ``--workers`` worker receives the settings
as JSON (:func:`settingsToJSON`, :func:`settingsFromJSON`): the plain values
as they are, the application as its ``MODULE:ATTRIBUTE`` and the TLS
listeners as their certificate files, both loaded again in the worker, so
that a worker started by a SIGHUP runs the current code with the current
certificates.  :func:`workerSettings` leaves out what only the parent does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from connserver._http.config import ServerConfig
from connserver._running.listeners import DEFAULT_LISTEN, TLSListener

if TYPE_CHECKING:
    from connserver._connection.message import Handler
    from connserver._running.tls import TLSServerOptions

__all__ = [
    "ServeSettings",
    "SettingsError",
    "asgiApplication",
    "settingsFromJSON",
    "settingsToJSON",
    "workerSettings",
]


class SettingsError(ValueError):
    """Settings a worker cannot rebuild (a handler or certificate gone)."""


@dataclass(frozen=True)
class ServeSettings:
    """
    One server, as ``twistd connserver``'s options describe it.  The
    defaults are the command line's.
    """

    config: ServerConfig = field(default_factory=ServerConfig)
    #: Twisted endpoint strings (``ssl:`` ones are in ``tls``).
    listen: tuple[str, ...] = (DEFAULT_LISTEN,)
    #: connserver's TLS listeners (``ssl:`` and ``--https``), after ``listen``.
    tls: tuple[TLSListener, ...] = ()
    #: ``--handler``: its ``MODULE:ATTRIBUTE`` and the handler it named;
    #: with None, static files under ``path``.
    handlerSpec: str | None = None
    application: Handler | None = None
    #: ``--wsgi``: its ``MODULE:ATTRIBUTE`` (``application`` is then its
    #: ``WSGIHandler``) and ``--wsgi-threads``.
    wsgiSpec: str | None = None
    wsgiThreads: int = 10
    #: ``--asgi``: the ASGI app's ``MODULE:ATTRIBUTE`` (``application`` is
    #: then its ``ASGIHandler``), and ``--root-path``.
    asgiSpec: str | None = None
    rootPath: str = ""
    path: str | None = None
    listing: bool = False
    followSymlinks: bool = False
    showHidden: bool = False
    precompressed: bool = False
    compress: bool = True
    cacheControl: str | None = None
    errorPages: Mapping[int, str] = field(default_factory=dict)
    fallback: str | None = None
    accessLog: str | None = None
    accessLogFormat: str = "combined"
    #: ``--log-closes``: all, abnormal or none.
    logCloses: str = "abnormal"
    #: ``--access-log-mode``: the permissions of a log file created.
    accessLogMode: int = 0o640
    statusPath: str | None = None
    metricsPath: str | None = None
    #: ``--proxy``: (PREFIX, URL) pairs.
    proxies: tuple[tuple[str, str], ...] = ()
    proxyIdleTimeout: float = 4.0
    proxyTimeout: float | None = 60.0
    #: ``--proxy-encoded-slashes``, ``--proxy-underscores``.
    proxyEncodedSlashes: bool = False
    proxyUnderscores: bool = False
    #: ``--proxy-no-upgrade`` (False), ``--proxy-tunnel-timeout`` (None:
    #: no bound): ``ReverseProxy(allowUpgrade=, tunnelIdleTimeout=)``.
    proxyUpgrade: bool = True
    proxyTunnelTimeout: float | None = 300.0
    redirectToHTTPS: bool = False
    workers: int = 1
    workerMaxRequests: int | None = None
    workerMaxRequestsJitter: int = 0
    reusePort: bool = False
    #: The directory relative paths were given in (the workers start there).
    cwd: str = "."
    #: True in a worker process: the parent warned and checked already.
    inWorker: bool = False

    def serving(self) -> str:
        """What is served, for the ``serving http://...`` lines."""
        if self.handlerSpec is not None:
            return f"handler: {self.handlerSpec}"
        if self.wsgiSpec is not None:
            return f"WSGI app: {self.wsgiSpec}"
        if self.asgiSpec is not None:
            return f"ASGI app: {self.asgiSpec}"
        return f"static: {self.path}"


def workerSettings(settings: ServeSettings) -> ServeSettings:
    """``settings`` as a worker runs them: one process, its sockets given."""
    return dataclasses.replace(
        settings,
        workers=1,
        workerMaxRequests=None,
        workerMaxRequestsJitter=0,
        reusePort=False,
        inWorker=True,
    )


# Serialised as plain values; these are rebuilt from their own keys.
_REBUILT = frozenset({"config", "tls", "application"})


def _configToJSON(config: ServerConfig) -> dict[str, Any]:
    values = {}
    for f in dataclasses.fields(ServerConfig):
        value = getattr(config, f.name)
        if isinstance(value, tuple):  # trustedProxies: networks
            value = [str(item) for item in value]
        values[f.name] = value
    return values


def _tlsSetToJSON(options: TLSServerOptions) -> dict[str, Any]:
    return {
        "certificates": [
            [source.certificate, source.privateKey, source.chain]
            for source in options.sources
        ],
        "directories": list(options.directories),
    }


def settingsToJSON(settings: ServeSettings) -> dict[str, Any]:
    """``settings`` as JSON-ready values, for :func:`settingsFromJSON`."""
    data = {
        f.name: getattr(settings, f.name)
        for f in dataclasses.fields(ServeSettings)
        if f.name not in _REBUILT
    }
    data["errorPages"] = {str(k): v for k, v in settings.errorPages.items()}
    data["config"] = _configToJSON(settings.config)
    # One entry per set of certificates: listeners sharing one keep sharing
    # it (one reload for all).
    sets: dict[int, int] = {}
    tlsSets: list[dict[str, Any]] = []
    listeners = []
    for listener in settings.tls:
        if id(listener.options) not in sets:
            sets[id(listener.options)] = len(tlsSets)
            tlsSets.append(_tlsSetToJSON(listener.options))
        listeners.append(
            [
                listener.port,
                listener.interface,
                listener.backlog,
                listener.description,
                sets[id(listener.options)],
            ]
        )
    data["tls"] = {"sets": tlsSets, "listeners": listeners}
    return data


def _tlsFromJSON(data: dict[str, Any]) -> tuple[TLSListener, ...]:
    from connserver._running.tls import (
        CertificateSource,
        TLSConfigError,
        TLSServerOptions,
    )

    sets: list[TLSServerOptions] = []
    for entry in data["sets"]:
        try:
            sets.append(
                TLSServerOptions(
                    [CertificateSource(*files) for files in entry["certificates"]],
                    entry["directories"],
                )
            )
        except TLSConfigError as error:
            raise SettingsError(f"TLS: {error}") from None
    return tuple(
        TLSListener(port, interface, backlog, sets[index], description)
        for port, interface, backlog, description, index in data["listeners"]
    )


def settingsFromJSON(data: dict[str, Any]) -> ServeSettings:
    """
    The settings :func:`settingsToJSON` gave, the application imported and
    the certificates read again (``SettingsError`` if they cannot be).
    """
    from connserver._running.apploading import HandlerLoadError, loadHandler

    values = {k: v for k, v in data.items() if k not in _REBUILT}
    values["listen"] = tuple(values["listen"])
    values["proxies"] = tuple((prefix, url) for prefix, url in values["proxies"])
    values["errorPages"] = {int(k): v for k, v in values["errorPages"].items()}
    application = None
    if values["handlerSpec"] is not None:
        try:
            application = loadHandler(values["handlerSpec"])
        except HandlerLoadError as error:
            raise SettingsError(str(error)) from None
    if values.get("wsgiSpec") is not None:
        from connserver._running.apploading import loadWSGIHandler

        try:
            # A worker: wsgi.multiprocess is true.
            application = loadWSGIHandler(
                values["wsgiSpec"], values["wsgiThreads"], multiprocess=True
            )
        except HandlerLoadError as error:
            raise SettingsError(str(error)) from None
    if values.get("asgiSpec") is not None:
        application = asgiApplication(values["asgiSpec"], values["rootPath"])
    return ServeSettings(
        config=ServerConfig(**data["config"]),
        tls=_tlsFromJSON(data["tls"]),
        application=application,
        **values,
    )


def asgiApplication(spec: str, rootPath: str) -> Handler:
    """
    ``--asgi``'s handler: the app imported (``SettingsError`` if it cannot
    be) and served by ``ASGIHandler``.  The asyncio reactor must be
    installed (``twistd connserver --asgi`` and its workers install it).
    """
    from connserver._handlers.asgi import ASGIHandler
    from connserver._running.apploading import HandlerLoadError, loadASGIApp

    try:
        return ASGIHandler(loadASGIApp(spec), rootPath=rootPath)
    except HandlerLoadError as error:
        raise SettingsError(str(error)) from None
