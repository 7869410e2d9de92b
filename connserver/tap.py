"""
The ``twistd connserver`` command line: :class:`Options` and :func:`makeService`.

This is the only module that knows about the command line.  Every
``ServerConfig`` field gets a kebab-case flag generated from its dataclass
field and documentation, so a new limit is on the command line as soon as it
is in the config.  ``postOptions`` checks everything it can before the
reactor runs, so that a bad value is a one-line usage error (and a non-zero
exit), never a traceback.  The options become one
:class:`~connserver._running.settings.ServeSettings`, from which
``connserver._running.assembly`` builds the server.  The reactor is imported
inside functions only.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
from typing import TYPE_CHECKING, Any

from twisted.python import usage

from connserver._http.config import ServerConfig, configFieldDocs
from connserver._running.listeners import (
    DEFAULT_LISTEN,
    ListenerError,
    TLSListener,
    checkEndpoint,
    endpointType,
    parseSSLListener,
    splitEndpointDescription,
)
from connserver._running.settings import ServeSettings

if TYPE_CHECKING:
    from twisted.application.service import MultiService

    from connserver._running.tls import TLSServerOptions

__all__ = [
    "CONFIG_FLAGS",
    "Options",
    "flagName",
    "makeService",
    "parseConfigValue",
]
_OFF_WORDS = frozenset({"none", "off", "unlimited"})
_TRUE_WORDS = frozenset({"on", "yes", "true", "1"})
_FALSE_WORDS = frozenset({"off", "no", "false", "0"})
_SIZE_SUFFIXES = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$")


def flagName(fieldName: str) -> str:
    """``maxRequestsPerConnection`` -> ``max-requests-per-connection``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", fieldName).lower()


@dataclasses.dataclass(frozen=True)
class _ConfigFlag:
    """How one ``ServerConfig`` field appears on the command line."""

    field: str
    flag: str
    kind: str  # "seconds", "count", "bytes", "bool" or "text"
    optional: bool
    default: Any
    doc: str

    def defaultText(self) -> str:
        return formatConfigValue(self, self.default)


def _configFlags() -> tuple[_ConfigFlag, ...]:
    docs = configFieldDocs()
    defaults = ServerConfig()
    flags = []
    for f in dataclasses.fields(ServerConfig):
        typeText = str(f.type)
        optional = "None" in typeText
        if "bool" in typeText:
            kind = "bool"
        elif "float" in typeText:
            kind = "seconds"
        elif "int" in typeText:
            kind = "bytes" if f.name.endswith("Bytes") else "count"
        else:
            kind = "text"
        flags.append(
            _ConfigFlag(
                f.name,
                flagName(f.name),
                kind,
                optional,
                getattr(defaults, f.name),
                docs[f.name],
            )
        )
    return tuple(flags)


#: One entry per ``ServerConfig`` field, in declaration order.
CONFIG_FLAGS: tuple[_ConfigFlag, ...] = _configFlags()
_FLAGS_BY_NAME = {flag.flag: flag for flag in CONFIG_FLAGS}


def formatConfigValue(flag: _ConfigFlag, value: Any) -> str:
    """A config value as it would be written on the command line."""
    if value is None:
        return "none"
    if isinstance(value, tuple):  # trustedProxies: networks
        return ",".join(map(str, value)) or "none"
    if flag.kind == "bool":
        return "on" if value else "off"
    if flag.kind == "seconds":
        return f"{value:g}"
    return str(value)


def parseConfigValue(flag: _ConfigFlag, text: str) -> Any:
    """
    The value of ``--<flag> <text>``, or ``ValueError`` with a short reason.

    Seconds are decimal numbers; sizes are whole numbers with an optional
    ``k``/``M``/``G`` (powers of 1024) suffix; ``on``/``off`` for switches;
    ``none`` or ``off`` turns an optional limit off.
    """
    word = text.strip().lower()
    if flag.optional and flag.kind != "bool" and word in _OFF_WORDS | {""}:
        return None
    if flag.kind == "bool":
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
        raise ValueError("expected on or off")
    if flag.kind == "seconds":
        try:
            return float(word)
        except ValueError:
            raise ValueError(
                "expected a number of seconds" + (" or none" if flag.optional else "")
            ) from None
    if flag.kind in ("count", "bytes"):
        match = _SIZE_RE.match(word)
        suffix = match.group(2).lower() if match else ""
        if flag.kind == "bytes" and match and suffix in _SIZE_SUFFIXES:
            return int(match.group(1)) * _SIZE_SUFFIXES[suffix]
        if match and not suffix:
            return int(match.group(1))
        what = "a size in bytes (k, M, G suffixes allowed)"
        if flag.kind == "count":
            what = "a whole number"
        raise ValueError(f"expected {what}" + (" or none" if flag.optional else ""))
    return text


def _firstSentence(doc: str) -> str:
    sentence = re.split(r"(?<=\.)\s", doc.strip(), maxsplit=1)[0]
    return " ".join(sentence.split())


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    import twisted

    try:
        ours = version("connserver")
    except PackageNotFoundError:
        from connserver import __version__ as ours
    return f"connserver {ours} (Twisted {twisted.__version__}, Python {sys.version.split()[0]})"


def _proxySeconds(flag: str, text: str, optional: bool) -> float | None:
    """
    ``--proxy-idle-timeout``, ``--proxy-timeout``, ``--proxy-tunnel-timeout``:
    seconds, or none (``optional``).
    """
    value = text.strip().lower()
    if optional and value in ("none", "off"):
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        expected = "a positive number of seconds" + (" or none" if optional else "")
        raise usage.UsageError(f"--{flag} {text!r}: expected {expected}")
    return seconds


def _wholeNumber(text: str) -> bool:
    """
    ASCII digits only: ``str.isdigit`` also accepts characters such as
    "²" that ``int()`` refuses, which would end a flag's check in a
    traceback instead of its one-line error.
    """
    return text.isascii() and text.isdigit()


def _usableCPUs() -> int:
    """The CPUs this process may run on (``--workers auto``), where known."""
    affinity = getattr(os, "sched_getaffinity", None)  # Linux only
    if affinity is not None:
        return len(affinity(0)) or 1
    return os.cpu_count() or 1


#: The flags of ``twistd connserver`` (on/off options), as usage.Options
#: takes them.
OPTION_FLAGS: list[list[Any]] = [
    ["listing", None, "List directories that have no index.html (else 403)."],
    ["follow-symlinks", None, "Follow symbolic links that lead outside --path."],
    ["show-hidden", None, "Serve and list names that start with a dot."],
    [
        "precompressed",
        None,
        "Serve FILE.gz in place of FILE to clients that accept gzip.",
    ],
    ["no-keep-alive", None, "Shorthand for --keep-alive off."],
    ["no-keep-alive-hint", None, "Shorthand for --keep-alive-hint off."],
    [
        "compress",
        None,
        "Compress text, JSON, JavaScript, SVG, XML and WASM files of 1 KiB "
        "or more on the fly (gzip; br with the brotli extra). [default: on]",
    ],
    ["no-compress", None, "Turn --compress off."],
    [
        "reuse-port",
        None,
        "With --workers: give each worker its own SO_REUSEPORT socket for "
        "TCP listeners (the kernel spreads connections) instead of one "
        "shared socket.",
    ],
    [
        "proxy-encoded-slashes",
        None,
        "With --proxy: forward paths holding an encoded / or \\ (%2F, %5C) "
        "as they came, for upstreams that need them (else 400).",
    ],
    [
        "proxy-underscores",
        None,
        "With --proxy: forward request fields whose names hold '_' (else "
        "dropped, as X_Forwarded_Proto is X-Forwarded-Proto to CGI/WSGI).",
    ],
    [
        "proxy-no-upgrade",
        None,
        "With --proxy: never offer a client's Upgrade (WebSocket) upstream; "
        "the request goes without it, and an upstream 101 is a 502.",
    ],
    [
        "redirect-to-https",
        None,
        "Answer every plain-HTTP request with 308 to the same path on the "
        "HTTPS port (the status page excepted).",
    ],
]

#: The options that take a value: connserver's own, then one per
#: ServerConfig field (generated, kebab-case).
OPTION_PARAMETERS: list[list[Any]] = [
    [
        "path",
        "p",
        None,
        "The directory to serve (static files). [default: the current directory]",
    ],
    [
        "cache-control",
        None,
        None,
        "A Cache-Control value for static files (e.g. 'max-age=3600').",
    ],
    [
        "fallback",
        None,
        None,
        "A file (such as /index.html) that answers GET and HEAD for a "
        "missing path without a dot in its last segment (single-page apps).",
    ],
    [
        "handler",
        None,
        None,
        "Serve MODULE:ATTRIBUTE at / instead of --path: a connserver "
        "handler, a twisted.web IResource or a Klein app.",
    ],
    [
        "wsgi",
        None,
        None,
        "Serve the WSGI (PEP 3333) application MODULE:ATTRIBUTE at / instead "
        "of --path, e.g. myproject.wsgi:application (Django) or app:app (Flask).",
    ],
    [
        "wsgi-threads",
        None,
        None,
        "With --wsgi: run the application in at most N threads (per worker). "
        "[default: 10, as twistd web --wsgi]",
    ],
    [
        "asgi",
        None,
        None,
        "Serve the ASGI 3 application MODULE:ATTRIBUTE at / instead of --path "
        "(HTTP and WebSocket; on Twisted's asyncio reactor, installed for it).",
    ],
    [
        "root-path",
        None,
        "",
        "With --asgi: the path prefix the application is mounted at behind a "
        "proxy (ASGI's root_path).",
    ],
    [
        "access-log",
        None,
        None,
        "Write an access log line per request to PATH, or '-' for standard output.",
    ],
    [
        "access-log-format",
        None,
        "combined",
        "combined (Combined Log Format plus connection fields) or json.",
    ],
    [
        "log-closes",
        None,
        None,
        "Which connection close lines the access log writes: all, abnormal "
        "(not a client's close, an idle timeout or the graceful stop of an "
        "idle connection) or none. [default: abnormal]",
    ],
    [
        "access-log-mode",
        None,
        None,
        "The permissions (octal) of an access log file connserver creates, "
        "whatever the umask; an existing file keeps its own. [default: 0640]",
    ],
    [
        "status-path",
        None,
        None,
        "Serve the status page at this path (for example /status).",
    ],
    [
        "metrics-path",
        None,
        None,
        "Serve Prometheus metrics at this path (for example /metrics; "
        "needs the metrics extra: pip install 'connserver[metrics]').",
    ],
    [
        "https",
        None,
        None,
        "Also listen with TLS on this port, all interfaces (needs "
        "--certificate or --certificate-dir).",
    ],
]

OPTION_PARAMETERS += [
    [
        "workers",
        None,
        "1",
        "Serve from N worker processes (or 'auto': one per CPU) that share "
        "the listening sockets; the parent supervises them. 1 = one process.",
    ],
    [
        "worker-max-requests",
        None,
        None,
        "With --workers: replace a worker gracefully after it served about "
        "this many requests. [default: never]",
    ],
    [
        "worker-max-requests-jitter",
        None,
        "0",
        "Add a random 0..J to --worker-max-requests per worker, so that "
        "workers are not all replaced at once.",
    ],
    [
        "proxy-idle-timeout",
        None,
        None,
        "With --proxy: close an idle upstream connection after this many "
        "seconds; keep it shorter than the upstream's own idle timeout. "
        "[default: 4]",
    ],
    [
        "proxy-timeout",
        None,
        None,
        "With --proxy: answer 504 when the upstream sends no response (or no "
        "next body byte) for this many seconds; 'none' waits forever. "
        "[default: 60]",
    ],
    [
        "proxy-tunnel-timeout",
        None,
        None,
        "With --proxy: close a proxied WebSocket (any upgraded) tunnel that "
        "passes no byte either way for this many seconds; 'none': no bound. "
        "[default: 300]",
    ],
]

# The flags of ServerConfig, generated: one per field, kebab-case.
for _flag in CONFIG_FLAGS:
    OPTION_PARAMETERS.append(
        [
            _flag.flag,
            None,
            None,
            f"{_firstSentence(_flag.doc)} [default: {_flag.defaultText()}]",
        ]
    )


class Options(usage.Options):
    """The options of ``twistd connserver``."""

    synopsis = "[options]"
    longdesc = (
        "Serve a directory (--path, the current directory by default) or an "
        "application (--handler) over HTTP/1.0 and HTTP/1.1 with every "
        "connection timeout and limit under control. --listen takes Twisted "
        "endpoint strings and repeats (tcp:, ssl:, unix:, systemd:, haproxy:). "
        "Optional limits take 'none' to turn them off. SIGTERM drains: "
        "in-flight responses finish (with Connection: close) before the "
        "process exits, within --drain-timeout."
    )

    optFlags = OPTION_FLAGS
    optParameters = OPTION_PARAMETERS

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        #: The directory relative paths are relative to (see parseOptions).
        self.cwd = os.getcwd()
        # The opt_ methods' docstrings are the help text: one line each, so
        # that their indentation does not end up inside --help's sentences.
        for name, doc in self.docs.items():
            if doc:
                self.docs[name] = " ".join(doc.split())
        self["listen"] = []
        # [certificate, key or None] pairs, in the order given.
        self["certificates"] = []
        self["certificate-dirs"] = []
        self["error-pages"] = {}
        self["proxies"] = []

    def opt_certificate(self, path: str) -> None:
        """
        TLS certificate (PEM, chain after it; may also hold the key) for
        --https and for ssl: listeners without privateKey=; repeat it for
        several certificates chosen by SNI, the first being the default.
        """
        self["certificates"].append([path, None])

    opt_c = opt_certificate

    def opt_privkey(self, path: str) -> None:
        """
        TLS private key (PEM, unencrypted) of the --certificate before it.
        [default: the --certificate file]
        """
        if not self["certificates"] or self["certificates"][-1][1] is not None:
            raise usage.UsageError(
                f"--privkey {path!r}: give it after the --certificate it belongs to"
            )
        self["certificates"][-1][1] = path

    opt_k = opt_privkey

    def opt_certificate_dir(self, path: str) -> None:
        """
        A directory of TLS certificates, chosen by SNI (NAME.crt with
        NAME.key, or certbot's NAME/fullchain.pem with NAME/privkey.pem);
        repeatable, read again on SIGHUP.
        """
        self["certificate-dirs"].append(path)

    def opt_error_page(self, value: str) -> None:
        """
        STATUS=/PATH: send the file /PATH under --path as the body of every
        STATUS (4xx or 5xx) response, with that status; repeatable.
        """
        status, sep, page = value.partition("=")
        if not sep or not _wholeNumber(status) or not 400 <= int(status) <= 599:
            raise usage.UsageError(
                f"--error-page {value!r}: expected STATUS=/PATH with a 4xx or 5xx "
                "status, such as 404=/404.html"
            )
        from connserver._handlers.static import pagePath

        try:
            pagePath(page, f"--error-page {status}=")
        except ValueError as error:
            raise usage.UsageError(str(error)) from None
        if int(status) in self["error-pages"]:
            raise usage.UsageError(
                f"--error-page {value!r}: {int(status)} already has an error page"
            )
        self["error-pages"][int(status)] = page

    def opt_hsts(self, seconds: str) -> None:
        """Alias of --hsts-max-age: Strict-Transport-Security on HTTPS responses."""
        self["hsts-max-age"] = seconds

    def opt_listen(self, description: str) -> None:
        """
        Listen on this Twisted endpoint (repeatable), for example
        tcp:8080:interface=127.0.0.1, ssl:8443:privateKey=key.pem:certKey=cert.pem,
        unix:/run/connserver.sock, systemd:domain=INET:index=0,
        haproxy:tcp:8080. [default: tcp:8080]
        """
        self["listen"].append(description)

    def opt_proxy(self, value: str) -> None:
        """
        Forward requests at or under PREFIX to an upstream HTTP server,
        PREFIX=URL (repeatable), e.g. /api=http://127.0.0.1:9000; the prefix
        is kept in the forwarded path, or replaced by the URL's path when it
        has one (/api/=http://127.0.0.1:9000/ strips it; see docs/proxy.md).
        """
        self["proxies"].append(value)

    def opt_max_requests(self, value: str) -> None:
        """Alias of --max-requests-per-connection."""
        self["max-requests-per-connection"] = value

    def opt_version(self) -> None:
        """Print the versions of connserver, Twisted and Python, and exit."""
        print(_version())
        sys.exit(0)

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Parse ``options`` (``sys.argv[1:]`` by default)."""
        # Relative paths in them are relative to this directory, whatever
        # directory twistd moves to (--rundir) before the workers start.
        self.cwd = os.getcwd()
        try:
            super().parseOptions(options)  # type: ignore[no-untyped-call]
        except usage.UsageError:
            # twistd prints this object's usage before the error: a pointer
            # to --help then, not the 200 lines of it (as git and curl do).
            self.failed = True
            raise

    failed = False

    def getUsage(self, width: int | None = None) -> str:
        """Every flag (``--help``); after a usage error, a pointer to them."""
        if self.failed:
            return "Run 'twistd connserver --help' for every flag.\n"
        usageText: str = super().getUsage(width)
        return usageText

    def postOptions(self) -> None:
        """Check every value and build the config, handler and endpoints."""
        self._checkWorkers()
        self["config"] = self._buildConfig()
        if self["asgi"] is not None:
            self._checkASGI()
        elif self["root-path"]:
            raise usage.UsageError("--root-path applies to --asgi")
        else:
            self._checkApplication()
        self._checkAccessLog()
        self._checkStatusPath()
        self._checkMetricsPath()
        self._checkProxies()
        self._buildEndpoints()

    def settings(self) -> ServeSettings:
        """What these options, once parsed, ask for: typed, for the assembly."""
        return ServeSettings(
            config=self["config"],
            listen=tuple(self["listen"]),
            tls=tuple(self["tls"]),
            handlerSpec=self["handler"],
            application=self["application"],
            wsgiSpec=self["wsgi"],
            wsgiThreads=self["wsgi-threads"] or 10,
            asgiSpec=self["asgi"],
            rootPath=self["root-path"],
            path=self["path"],
            listing=bool(self["listing"]),
            followSymlinks=bool(self["follow-symlinks"]),
            showHidden=bool(self["show-hidden"]),
            precompressed=bool(self["precompressed"]),
            compress=not self["no-compress"],
            cacheControl=self["cache-control"],
            errorPages=dict(self["error-pages"]),
            fallback=self["fallback"],
            accessLog=self["access-log"],
            accessLogFormat=self["access-log-format"],
            logCloses=self["log-closes"],
            accessLogMode=self["access-log-mode"],
            statusPath=self["status-path"],
            metricsPath=self["metrics-path"],
            proxies=tuple(self["proxies"]),
            proxyIdleTimeout=self["proxy-idle-timeout"],
            proxyTimeout=self["proxy-timeout"],
            proxyEncodedSlashes=bool(self["proxy-encoded-slashes"]),
            proxyUnderscores=bool(self["proxy-underscores"]),
            proxyUpgrade=not self["proxy-no-upgrade"],
            proxyTunnelTimeout=self["proxy-tunnel-timeout"],
            redirectToHTTPS=bool(self["redirect-to-https"]),
            workers=self["workers"],
            workerMaxRequests=self["worker-max-requests"],
            workerMaxRequestsJitter=self["worker-max-requests-jitter"] or 0,
            reusePort=bool(self["reuse-port"]),
            cwd=self.cwd,
        )

    def _checkWorkers(self) -> None:
        text = str(self["workers"]).strip().lower()
        if text == "auto":
            workers = _usableCPUs()
        elif _wholeNumber(text) and 1 <= int(text) <= 1024:
            workers = int(text)
        else:
            raise usage.UsageError(
                f"--workers {self['workers']!r}: expected a number from 1 to 1024 or auto"
            )
        self["workers"] = workers
        for flag in ("worker-max-requests", "worker-max-requests-jitter"):
            value = self[flag]
            if value is None:
                continue
            if not _wholeNumber(str(value)) or (
                flag == "worker-max-requests" and int(value) < 1
            ):
                raise usage.UsageError(
                    f"--{flag} {value!r}: expected a whole number"
                    + (" of at least 1" if flag == "worker-max-requests" else "")
                )
            self[flag] = int(value)
        if workers == 1:
            for flag in ("reuse-port", "worker-max-requests"):
                if self[flag]:
                    raise usage.UsageError(f"--{flag} needs --workers 2 or more")
        if self["worker-max-requests-jitter"] and self["worker-max-requests"] is None:
            raise usage.UsageError(
                "--worker-max-requests-jitter needs --worker-max-requests"
            )

    def _buildConfig(self) -> ServerConfig:
        values: dict[str, Any] = {}
        for flag in CONFIG_FLAGS:
            text = self[flag.flag]
            if text is None:
                continue
            try:
                value = parseConfigValue(flag, text)
                # Validate this field alone, to name the flag in the error.
                ServerConfig(**{flag.field: value})
            except ValueError as error:
                message = str(error).replace(f"ServerConfig.{flag.field} ", "")
                message = message.replace("or None", "or none")
                raise usage.UsageError(f"--{flag.flag} {text!r}: {message}") from None
            values[flag.field] = value
        if self["no-keep-alive"]:
            if values.get("keepAlive", False):
                raise usage.UsageError("--no-keep-alive contradicts --keep-alive on")
            values["keepAlive"] = False
        if self["no-keep-alive-hint"]:
            if values.get("keepAliveHint", False):
                raise usage.UsageError(
                    "--no-keep-alive-hint contradicts --keep-alive-hint on"
                )
            values["keepAliveHint"] = False
        try:
            return ServerConfig(**values)
        except ValueError as error:  # pragma: no cover - checked field by field
            raise usage.UsageError(str(error)) from None

    def _checkApplication(self) -> None:
        if self["wsgi"] is not None or self["wsgi-threads"] is not None:
            self._checkWSGI()
            return
        if self["handler"] is not None:
            if self["path"] is not None:
                raise usage.UsageError("use --path or --handler, not both")
            self._refuseStaticFlags("--handler")
            from connserver._running.apploading import HandlerLoadError, loadHandler

            try:
                self["application"] = loadHandler(self["handler"])
            except HandlerLoadError as error:
                raise usage.UsageError(str(error)) from None
            return
        path = self["path"] if self["path"] is not None else "."
        if not os.path.isdir(path):
            raise usage.UsageError(f"--path {path!r}: not a directory")
        if not os.access(path, os.R_OK | os.X_OK):
            raise usage.UsageError(f"--path {path!r}: not readable")
        self["path"] = os.path.abspath(path)
        cacheControl = self["cache-control"]
        if cacheControl is not None and (
            not cacheControl.isascii()
            or not cacheControl.isprintable()
            or not cacheControl.strip()
        ):
            raise usage.UsageError(
                f"--cache-control {cacheControl!r}: must be printable ASCII text"
            )
        if self["compress"] and self["no-compress"]:
            raise usage.UsageError("--no-compress contradicts --compress")
        fallback = self["fallback"]
        if fallback is not None:
            from connserver._handlers.static import pagePath

            try:
                pagePath(fallback, "--fallback")
            except ValueError as error:
                raise usage.UsageError(str(error)) from None
        self["application"] = None

    def _refuseStaticFlags(self, instead: str) -> None:
        """The static-file flags mean nothing with ``instead`` (an application)."""
        for flag in (
            "listing",
            "follow-symlinks",
            "show-hidden",
            "precompressed",
            "cache-control",
            "no-compress",
            "fallback",
            "error-page",
        ):
            if self["error-pages" if flag == "error-page" else flag]:
                raise usage.UsageError(
                    f"--{flag} applies to --path (static files), not to {instead}"
                )

    def _checkWSGI(self) -> None:
        """``--wsgi MODULE:ATTRIBUTE`` and ``--wsgi-threads N``."""
        spec = self["wsgi"]
        if spec is None:
            raise usage.UsageError("--wsgi-threads applies to --wsgi")
        for flag in ("handler", "path"):
            if self[flag] is not None:
                raise usage.UsageError(f"use --{flag} or --wsgi, not both")
        self._refuseStaticFlags("--wsgi")
        threads = self["wsgi-threads"]
        if threads is None:
            threads = "10"
        if not _wholeNumber(str(threads).strip()) or not 1 <= int(threads) <= 1024:
            raise usage.UsageError(
                f"--wsgi-threads {threads!r}: expected a number from 1 to 1024"
            )
        self["wsgi-threads"] = int(threads)
        from connserver._running.apploading import HandlerLoadError, loadWSGIHandler

        try:
            self["application"] = loadWSGIHandler(
                spec, int(threads), multiprocess=self["workers"] > 1
            )
        except HandlerLoadError as error:
            raise usage.UsageError(str(error)) from None

    def _checkASGI(self) -> None:
        """
        ``--asgi``: the app, on the asyncio reactor, installed here (twistd
        has installed none yet unless ``--reactor`` named one).
        """
        for flag in ("handler", "path", "wsgi"):
            if self[flag] is not None:
                raise usage.UsageError(f"use --asgi or --{flag}, not both")
        if self["wsgi-threads"] is not None:
            raise usage.UsageError("--wsgi-threads applies to --wsgi, not to --asgi")
        self._refuseStaticFlags("--asgi")
        rootPath = self["root-path"]
        if rootPath and (not _isMountPath(rootPath) or rootPath.endswith("/")):
            raise usage.UsageError(
                f"--root-path {rootPath!r}: expected a path such as /api"
            )
        try:
            import websockets  # noqa: F401
            import wsproto  # noqa: F401
        except ImportError as error:
            raise usage.UsageError(
                f"--asgi needs the {error.name} library (WebSockets): "
                "pip install 'connserver[asgi]'"
            ) from None
        from connserver._running.settings import SettingsError, asgiApplication
        from connserver._twisted.reactor import installAsyncioReactor

        try:
            installAsyncioReactor()
        except RuntimeError as error:
            raise usage.UsageError(
                f"--asgi runs on Twisted's asyncio reactor, but {error}: "
                "drop twistd's --reactor or give --reactor asyncio"
            ) from None
        try:
            self["application"] = asgiApplication(self["asgi"], self["root-path"])
        except SettingsError as error:
            raise usage.UsageError(str(error)) from None

    def _checkAccessLog(self) -> None:
        fmt = self["access-log-format"]
        if fmt not in ("combined", "json"):
            raise usage.UsageError(
                f"--access-log-format {fmt!r}: expected combined or json"
            )
        target = self["access-log"]
        for flag in ("log-closes", "access-log-mode"):
            if self[flag] is not None and target is None:
                raise usage.UsageError(f"--{flag} applies to --access-log")
        closes = self["log-closes"] or "abnormal"
        if closes not in ("all", "abnormal", "none"):
            raise usage.UsageError(
                f"--log-closes {closes!r}: expected all, abnormal or none"
            )
        self["log-closes"] = closes
        mode = str(self["access-log-mode"] or "0640").strip()
        if not re.fullmatch(r"0?[0-7]{3}", mode):
            raise usage.UsageError(
                f"--access-log-mode {mode!r}: expected octal permissions such as 0640"
            )
        if target == "-" and self["access-log-mode"] is not None:
            raise usage.UsageError("--access-log-mode applies to an access log file")
        self["access-log-mode"] = int(mode, 8)
        if target is None or target == "-":
            return
        directory = os.path.dirname(os.path.abspath(target))
        if os.path.isdir(target):
            raise usage.UsageError(f"--access-log {target!r}: is a directory")
        if os.path.exists(target):
            if not os.access(target, os.W_OK):
                raise usage.UsageError(f"--access-log {target!r}: not writable")
        elif not os.path.isdir(directory) or not os.access(
            directory, os.W_OK | os.X_OK
        ):
            raise usage.UsageError(
                f"--access-log {target!r}: cannot create a file in {directory!r}"
            )

    def _checkStatusPath(self) -> None:
        statusPath = self["status-path"]
        if statusPath is None:
            return
        if statusPath.rstrip("/") == "" and statusPath:
            raise usage.UsageError(
                f"--status-path {statusPath!r}: the status page cannot take the "
                "whole site (every request would get it); use a path such as /status"
            )
        if not _isMountPath(statusPath):
            raise usage.UsageError(
                f"--status-path {statusPath!r}: expected an absolute path such as /status"
            )

    def _checkMetricsPath(self) -> None:
        metricsPath = self["metrics-path"]
        if metricsPath is None:
            return
        if metricsPath.rstrip("/") == "" and metricsPath:
            raise usage.UsageError(
                f"--metrics-path {metricsPath!r}: the metrics cannot take the "
                "whole site (every request would get them); use a path such as "
                "/metrics"
            )
        if not _isMountPath(metricsPath):
            raise usage.UsageError(
                f"--metrics-path {metricsPath!r}: expected an absolute path such as "
                "/metrics"
            )
        statusPath = self["status-path"]
        if statusPath is not None and (
            metricsPath.rstrip("/") == statusPath.rstrip("/")
        ):
            raise usage.UsageError(
                f"--metrics-path {metricsPath!r}: the same path as --status-path"
            )
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            raise usage.UsageError(
                "--metrics-path needs the prometheus_client library: "
                "pip install 'connserver[metrics]'"
            ) from None

    def _checkProxies(self) -> None:
        """``--proxy PREFIX=URL``: a mount path and an http(s) URL each."""
        from connserver._handlers.proxy import parseUpstreamURL

        taken = {
            p.rstrip("/")
            for p in (self["status-path"], self["metrics-path"])
            if p is not None
        }
        proxies: list[tuple[str, str]] = []
        for value in self["proxies"]:
            prefix, sep, url = value.partition("=")
            if not sep or not (prefix == "/" or _isMountPath(prefix)):
                raise usage.UsageError(
                    f"--proxy {value!r}: expected PREFIX=URL, such as "
                    "/api=http://127.0.0.1:9000"
                )
            try:
                parseUpstreamURL(url)
            except ValueError as error:
                raise usage.UsageError(f"--proxy {value!r}: {error}") from None
            key = prefix.rstrip("/") or "/"
            if key in taken:
                raise usage.UsageError(
                    f"--proxy {value!r}: {prefix} is already mounted"
                )
            taken.add(key)
            proxies.append((prefix, url))
        self["proxies"] = proxies
        for flag, default, optional in (
            ("proxy-idle-timeout", "4", False),
            ("proxy-timeout", "60", True),
            ("proxy-tunnel-timeout", "300", True),
        ):
            if self[flag] is not None and not proxies:
                raise usage.UsageError(f"--{flag} applies to --proxy")
            # An empty value is an error, not the default.
            text = default if self[flag] is None else self[flag]
            self[flag] = _proxySeconds(flag, text, optional)
        for flag in (
            "proxy-encoded-slashes",
            "proxy-underscores",
            "proxy-no-upgrade",
        ):
            if self[flag] and not proxies:
                raise usage.UsageError(f"--{flag} applies to --proxy")

    def _buildEndpoints(self) -> None:
        """
        Split the listeners: ``ssl:`` ones and ``--https`` get connserver's
        own TLS (ALPN, SNI, reload; see ``_tls``), the rest go to Twisted's
        endpoint parser as they are.
        """
        listen: list[str] = []
        tls: list[TLSListener] = []
        sslDescriptions = [d for d in self["listen"] if endpointType(d) == "ssl"]
        wantShared = self["https"] is not None or any(
            "privateKey" not in splitEndpointDescription(d)[1] for d in sslDescriptions
        )
        if not wantShared and (self["certificates"] or self["certificate-dirs"]):
            raise usage.UsageError(
                "--certificate, --privkey and --certificate-dir go with --https "
                "or a --listen ssl:PORT without privateKey="
            )
        shared = self._sharedCertificates() if wantShared else None
        try:
            for description in self["listen"]:
                if endpointType(description) == "ssl":
                    tls.append(parseSSLListener(description, shared))
                else:
                    listen.append(description)
        except ListenerError as error:
            raise usage.UsageError(str(error)) from None
        if self["https"] is not None:
            port = self["https"]
            if not _wholeNumber(port) or not 0 <= int(port) <= 65535:
                raise usage.UsageError(f"--https {port!r}: expected a port number")
            if shared is None:
                raise usage.UsageError(
                    "--https needs --certificate (and --privkey) or --certificate-dir"
                )
            tls.append(TLSListener(int(port), "", 50, shared, f"--https {port}"))
        if not listen and not tls:
            listen = [DEFAULT_LISTEN]
        for description in listen:
            try:
                checkEndpoint(description)
            except ListenerError as error:
                raise usage.UsageError(str(error)) from None
        if (
            self["reuse-port"]
            and not tls
            and not {endpointType(d) for d in listen} & {"tcp", "tcp6", "haproxy"}
        ):
            raise usage.UsageError(
                "--reuse-port applies to tcp: (and ssl:, haproxy:tcp:) listeners; "
                "none is given"
            )
        if self["redirect-to-https"] and not tls:
            raise usage.UsageError(
                "--redirect-to-https needs an HTTPS listener (--https or --listen ssl:...)"
            )
        self["listen"] = listen
        self["tls"] = tls

    def _sharedCertificates(self) -> TLSServerOptions | None:
        """The certificates of --certificate/--privkey/--certificate-dir, if any."""
        from connserver._running.tls import (
            CertificateSource,
            TLSConfigError,
            TLSServerOptions,
        )

        pairs = self["certificates"]
        directories = self["certificate-dirs"]
        if not pairs and not directories:
            return None
        for path in directories:
            if not os.path.isdir(path):
                raise usage.UsageError(f"--certificate-dir {path!r}: not a directory")
        try:
            return TLSServerOptions(
                [CertificateSource.fromFiles(cert, key) for cert, key in pairs],
                directories,
            )
        except TLSConfigError as error:
            raise usage.UsageError(f"TLS: {error}") from None


def _isMountPath(path: str) -> bool:
    """An absolute path (no query, fragment or space) other than ``/``."""
    return (
        path.startswith("/")
        and path.isascii()
        and not any(c in path for c in "?# ")
        and path.rstrip("/") != ""
    )


def makeService(options: Options) -> MultiService:
    """
    twistd's entry point: the server ``options`` describe, built by
    ``connserver._running.assembly`` (the supervisor with ``--workers`` 2
    or more).
    """
    from connserver._running.assembly import makeServerService

    return makeServerService(options.settings())
