"""
Every listener of the server: endpoint strings parsed and checked, TLS
listeners, and the sockets of ``--workers``.

One process listens on Twisted endpoints (``serverFromString``) and on
``SSL4ServerEndpoint`` for connserver's own TLS (``ssl:`` and ``--https``).
With ``--workers`` the parent opens each listener once
(:class:`ParentSockets`, before privileges drop) and every worker adopts the
descriptor (:class:`AdoptedEndpoint`); with ``--reuse-port`` the parent only
binds each TCP address and every worker opens its own ``SO_REUSEPORT``
socket on it (both through :func:`reusePortSocket`).  A listener is
described to a worker by a :class:`ListenerSpec`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IProtocolFactory, IStreamServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from connserver._twisted.privates import keepSharedSocketOnStop, tcpEndpointAddress

if TYPE_CHECKING:
    from twisted.internet.interfaces import IListeningPort

    from connserver._running.tls import TLSServerOptions

__all__ = [
    "DEFAULT_LISTEN",
    "AdoptedEndpoint",
    "ListenerError",
    "ListenerSpec",
    "ParentSockets",
    "TLSListener",
    "checkEndpoint",
    "endpointFromString",
    "endpointType",
    "parseSSLListener",
    "reusePortSocket",
    "serverEndpoints",
    "splitEndpointDescription",
    "systemdEndpoint",
    "tcpAddress",
    "workerEndpoints",
]

_log = Logger(namespace="connserver")

#: Where the server listens when given no listener.
DEFAULT_LISTEN = "tcp:8080"


class ListenerError(ValueError):
    """A listener that cannot be used; the message is the one-line reason."""


@dataclass(frozen=True)
class TLSListener:
    """A TLS listener with connserver's own TLS: ``ssl:`` or ``--https``."""

    port: int
    interface: str
    backlog: int
    options: TLSServerOptions
    #: As given on the command line (for messages).
    description: str


def _wholeNumber(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` accepts "²", which ``int()`` refuses)."""
    return text.isascii() and text.isdigit()


def endpointType(description: str) -> str:
    """``tcp``, ``ssl``, ``unix``...: the first field of an endpoint string."""
    return description.split(":", 1)[0].strip().lower()


def splitEndpointDescription(description: str) -> tuple[list[str], dict[str, str]]:
    """
    The positional and keyword arguments of a Twisted endpoint string, with
    Twisted's quoting (``\\:`` is a colon, ``\\=`` an equals sign; see
    ``quoteStringArgument``); the endpoint type is the first positional.
    """
    args: list[str] = []
    kwargs: dict[str, str] = {}
    key: str | None = None
    current: list[str] = []
    escaped = False
    for char in description + ":":
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "=" and key is None:
            key = "".join(current)
            current = []
        elif char == ":":
            if key is None:
                args.append("".join(current))
            else:
                kwargs[key] = "".join(current)
            key, current = None, []
        else:
            current.append(char)
    return args, kwargs


_SSL_KEYWORDS = frozenset(
    {"port", "privateKey", "certKey", "extraCertChain", "interface", "backlog"}
)


def _sslPort(description: str, args: list[str], kwargs: dict[str, str]) -> int:
    """The port of an ``ssl:`` description, or ``ListenerError``."""
    positional = args[1:]
    if "port" in kwargs:
        positional = [kwargs["port"], *positional]
    if len(positional) != 1 or not _wholeNumber(positional[0]):
        raise ListenerError(
            f"--listen {description!r}: expected ssl:PORT with a port number"
        )
    port = int(positional[0])
    if port > 65535:
        raise ListenerError(
            f"--listen {description!r}: expected ssl:PORT with a port number"
        )
    return port


def _sslOptions(
    description: str, kwargs: dict[str, str], shared: TLSServerOptions | None
) -> TLSServerOptions:
    """The certificates of an ``ssl:`` listener: its own, else the shared ones."""
    from connserver._running.tls import (
        CertificateSource,
        TLSConfigError,
        TLSServerOptions,
    )

    def fail(reason: str) -> ListenerError:
        return ListenerError(f"--listen {description!r}: {reason}")

    if "privateKey" in kwargs:
        try:
            return TLSServerOptions(
                [
                    CertificateSource.fromFiles(
                        kwargs.get("certKey", kwargs["privateKey"]),
                        kwargs["privateKey"],
                        kwargs.get("extraCertChain"),
                    )
                ]
            )
        except TLSConfigError as error:
            raise fail(str(error)) from None
    if "certKey" in kwargs or "extraCertChain" in kwargs:
        raise fail("certKey= and extraCertChain= need privateKey=")
    if shared is None:
        raise fail("needs privateKey=KEY (and certKey=CERT), or --certificate")
    return shared


def parseSSLListener(description: str, shared: TLSServerOptions | None) -> TLSListener:
    """
    ``ssl:PORT[:privateKey=KEY][:certKey=CERT][:extraCertChain=CHAIN]
    [:interface=IP][:backlog=N]``, Twisted's syntax, served with connserver's
    TLS.  Without ``privateKey`` it uses ``shared`` (the --certificate set).
    """
    args, kwargs = splitEndpointDescription(description)
    unknown = sorted(set(kwargs) - _SSL_KEYWORDS)
    if unknown:
        raise ListenerError(
            f"--listen {description!r}: connserver's TLS listener does not take "
            f"{', '.join(unknown)} (it takes {', '.join(sorted(_SSL_KEYWORDS))})"
        )
    port = _sslPort(description, args, kwargs)
    backlog = kwargs.get("backlog", "50")
    if not _wholeNumber(backlog):
        raise ListenerError(
            f"--listen {description!r}: backlog={backlog!r}: expected a whole number"
        )
    interface = kwargs.get("interface", "")
    options = _sslOptions(description, kwargs, shared)
    return TLSListener(port, interface, int(backlog), options, description)


class _NoReactor:
    """
    Stands in for the reactor while the command line's endpoint strings are
    checked: the endpoint constructors only store it, and the real reactor
    must not be imported (installed) while twistd is still parsing options.
    """


def endpointFromString(reactor: Any, description: str) -> IStreamServerEndpoint:
    """
    ``serverFromString``, with ``systemd:`` parsed by :func:`systemdEndpoint`
    (clear messages, and the index kept without ``LISTEN_FDNAMES``).
    """
    from twisted.internet.endpoints import serverFromString

    if endpointType(description) == "systemd":
        return systemdEndpoint(reactor, description)
    endpoint: IStreamServerEndpoint = serverFromString(reactor, description)  # type: ignore[no-untyped-call]
    return endpoint


def _systemdSockets(
    environ: Mapping[str, str], pid: int
) -> tuple[list[int], list[str] | None]:
    """
    The descriptors systemd passed this process (``LISTEN_FDS``, for
    ``LISTEN_PID``), and their names (``LISTEN_FDNAMES``), or None when
    it gave none: Twisted's ``ListenFDs`` then drops every descriptor, so
    that even ``index=0`` finds nothing (systemd before 227, or
    ``systemd-socket-activate`` without ``--fdname``).
    """
    if environ.get("LISTEN_PID") != str(pid):
        return [], None
    count = environ.get("LISTEN_FDS", "")
    if not _wholeNumber(count):
        return [], None
    descriptors = list(range(3, 3 + int(count)))
    names = environ.get("LISTEN_FDNAMES")
    return descriptors, names.split(":") if names else None


def _systemdEnvironment() -> Mapping[str, str]:
    """
    The ``LISTEN_*`` variables systemd gave this process.  Importing
    ``twisted.internet.endpoints`` removes ``LISTEN_PID`` and ``LISTEN_FDS``
    from ``os.environ`` (and, without ``LISTEN_FDNAMES``, keeps no socket);
    the process's initial environment, in ``/proc/self/environ`` (socket
    activation is Linux's), still has them.
    """
    if "LISTEN_PID" in os.environ:
        return os.environ
    try:
        with open("/proc/self/environ", "rb") as f:
            initial = f.read()
    except OSError:
        return os.environ
    found = {}
    for entry in initial.split(b"\0"):
        key, sep, value = entry.partition(b"=")
        if sep and key in (b"LISTEN_PID", b"LISTEN_FDS", b"LISTEN_FDNAMES"):
            found[key.decode()] = value.decode("utf-8", "replace")
    return found


def systemdEndpoint(
    reactor: Any,
    description: str,
    environ: Mapping[str, str] | None = None,
    pid: int | None = None,
) -> IStreamServerEndpoint:
    """
    ``systemd:domain=INET:index=N`` or ``systemd:domain=INET:name=NAME``,
    Twisted's syntax: the socket systemd passed (socket activation), or
    ``ListenerError`` saying what is missing.  Without ``LISTEN_FDNAMES``
    an ``index=`` still works, and a ``name=`` says how to name the socket.
    """
    import socket as _socket

    from twisted.internet.endpoints import AdoptedStreamServerEndpoint

    def fail(reason: str) -> ListenerError:
        return ListenerError(f"--listen {description!r}: {reason}")

    args, kwargs = splitEndpointDescription(description)
    fields = dict(zip(("domain", "index", "name"), args[1:], strict=False))
    unknown = sorted(set(kwargs) - {"domain", "index", "name"})
    if len(args) > 4 or unknown or set(fields) & set(kwargs):
        raise fail("expected systemd:domain=INET|INET6|UNIX:index=N (or name=NAME)")
    fields.update(kwargs)
    domain = fields.get("domain", "")
    families = {"INET": _socket.AF_INET, "INET6": _socket.AF_INET6}
    families["UNIX"] = _socket.AF_UNIX
    family = families.get(domain)
    if family is None:
        raise fail(f"domain={domain!r}: expected INET, INET6 or UNIX")
    index, name = fields.get("index"), fields.get("name")
    if (index is None) == (name is None):
        raise fail("give index=N or name=NAME (exactly one)")
    descriptors, names = _systemdSockets(
        _systemdEnvironment() if environ is None else environ,
        os.getpid() if pid is None else pid,
    )
    if not descriptors:
        raise fail(
            "systemd passed this process no socket (LISTEN_FDS and LISTEN_PID are "
            "not set for it); run it from a .socket unit's service, or try "
            "systemd-socket-activate -l 8080 --fdname=http twistd ..."
        )
    problem, fd = _systemdDescriptor(descriptors, names, index, name)
    if problem is not None:
        raise fail(problem)
    return AdoptedStreamServerEndpoint(reactor, fd, family)  # type: ignore[no-untyped-call]


def _systemdDescriptor(
    descriptors: list[int],
    names: list[str] | None,
    index: str | None,
    name: str | None,
) -> tuple[str | None, int]:
    """The descriptor that ``index=`` or ``name=`` picks, or what is wrong."""
    if index is not None:
        if not _wholeNumber(index) or int(index) >= len(descriptors):
            return (
                f"index={index!r}: systemd passed {len(descriptors)} socket(s), "
                f"index 0 to {len(descriptors) - 1}"
            ), -1
        return None, descriptors[int(index)]
    assert name is not None
    if names is None:
        return (
            f"name={name!r}: systemd passed no socket names (LISTEN_FDNAMES "
            f"is not set): set FileDescriptorName={name} in the .socket unit "
            f"(systemd-socket-activate --fdname={name}), or use index=N"
        ), -1
    if name not in names:
        return (
            f"name={name!r}: systemd passed the sockets {', '.join(names)} "
            "(FileDescriptorName= in the .socket unit)"
        ), -1
    return None, descriptors[names.index(name)]


def checkEndpoint(description: str) -> None:
    """Raise ``ListenerError`` unless ``description`` is a usable server endpoint."""
    from twisted.internet.endpoints import serverFromString

    if endpointType(description) == "systemd":
        systemdEndpoint(_NoReactor(), description)
        return
    try:
        endpoint = serverFromString(_NoReactor(), description)  # type: ignore[no-untyped-call]
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        reason = reason or type(error).__name__
        raise ListenerError(f"--listen {description!r}: {reason}") from None
    # A TCP endpoint (haproxy: wraps one): its port and interface, checked
    # now rather than when twistd listens.
    inner = getattr(endpoint, "_wrappedEndpoint", endpoint)
    port = getattr(inner, "_port", None)
    if isinstance(port, int) and not 0 <= port <= 65535:
        raise ListenerError(
            f"--listen {description!r}: port {port} is out of range (0-65535)"
        )
    interface = getattr(inner, "_interface", None)
    if isinstance(interface, str) and interface:
        _checkResolves(description, interface)


def _checkResolves(description: str, interface: str) -> None:
    """``interface`` (an address or a host name) must name this host's address."""
    import ipaddress
    import socket

    try:
        ipaddress.ip_address(interface)
        return
    except ValueError:
        pass
    try:
        socket.getaddrinfo(interface, None, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ListenerError(
            f"--listen {description!r}: the interface name {interface!r} does "
            f"not resolve ({error.strerror}); give an address such as 127.0.0.1"
        ) from None


def serverEndpoints(
    reactor: Any, listen: tuple[str, ...], tls: tuple[TLSListener, ...]
) -> list[IStreamServerEndpoint]:
    """One process's endpoints: the ``--listen`` ones, then the TLS ones."""
    from twisted.internet.endpoints import SSL4ServerEndpoint

    return [endpointFromString(reactor, description) for description in listen] + [
        SSL4ServerEndpoint(  # type: ignore[no-untyped-call]
            reactor,
            listener.port,
            listener.options,
            backlog=listener.backlog,
            interface=listener.interface,
        )
        for listener in tls
    ]


def tcpAddress(reactor: Any, description: str) -> tuple[str, int, int] | None:
    """(interface, port, backlog) of a ``tcp:`` description, else None."""
    from twisted.internet.endpoints import TCP4ServerEndpoint

    endpoint = endpointFromString(reactor, description)
    if not isinstance(endpoint, TCP4ServerEndpoint):  # TCP6ServerEndpoint too
        return None
    return tcpEndpointAddress(endpoint)


def reusePortSocket(
    family: int, host: str, port: int, backlog: int | None = None
) -> socket.socket:
    """
    A TCP socket bound with ``SO_REUSEPORT`` (and ``SO_REUSEADDR``): the
    parent's holds the address without listening (``backlog`` None), each
    worker's listens on it, non-blocking, and the kernel spreads the
    connections over them.
    """
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        if backlog is not None:
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass
class ListenerSpec:
    """How a worker gets one listener: a descriptor, or its address to bind."""

    kind: str  # "plain", "tls" or "haproxy"
    index: int  # TLS: which TLS listener; else which --listen
    fd: int | None = None
    family: int = socket.AF_INET
    #: --reuse-port: (host, port, backlog) for the worker's own socket.
    bind: tuple[str, int, int] | None = None


class _NoConnections(Factory):
    """The parent's ports never accept (they are paused), but need a factory."""

    noisy = False

    def logPrefix(self) -> str:
        """The name the port's "starting on" line gives (not this class's)."""
        return "connserver (the workers' shared socket)"

    def buildProtocol(self, addr: object) -> Protocol | None:  # pragma: no cover
        return None


class ListenerOpenError(Exception):
    """A listener the parent could not open: ``where`` it was, and why."""

    def __init__(self, where: str, error: BaseException) -> None:
        super().__init__(where, error)
        self.where = where
        self.error = error


class ParentSockets:
    """
    The ``--workers`` parent's listening sockets, each opened once and
    never accepting: a descriptor (or, with ``--reuse-port``, a bound
    address) per listener, for every worker.
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        #: One per listener: the ``--listen`` ones, then the TLS ones.
        self.specs: list[ListenerSpec] = []
        self._ports: list[IListeningPort] = []
        self._sockets: list[socket.socket] = []
        #: What the workers serve, for a ``serving http://...`` line per
        #: listener; None for none.
        self.serving: str | None = None

    def open(
        self, listen: tuple[str, ...], tls: tuple[TLSListener, ...], reusePort: bool
    ) -> None:
        """Open every listener, or raise ``ListenerOpenError``."""
        listeners: list[tuple[str, str, int]] = [
            (d, "plain", i) for i, d in enumerate(listen)
        ]
        listeners += [(t.description, "tls", i) for i, t in enumerate(tls)]
        for description, kind, index in listeners:
            try:
                self.specs.append(
                    self._openOne(description, kind, index, tls, reusePort)
                )
            except Exception as error:
                raise ListenerOpenError(description, error) from None

    def _openOne(
        self,
        description: str,
        kind: str,
        index: int,
        tls: tuple[TLSListener, ...],
        reusePort: bool,
    ) -> ListenerSpec:
        inner: str | None
        address: tuple[str, int, int] | None
        if kind == "tls":
            listener = tls[index]
            address = (listener.interface, listener.port, listener.backlog)
            inner = None
        else:
            inner = description
            if endpointType(description) == "haproxy":
                kind, inner = "haproxy", description.split(":", 1)[1]
            address = tcpAddress(self.reactor, inner)
        if reusePort and address is not None:
            return self._bindReusePort(kind, index, address)
        return self._listen(kind, index, inner, address)

    def _listen(
        self,
        kind: str,
        index: int,
        description: str | None,
        address: tuple[str, int, int] | None,
    ) -> ListenerSpec:
        from twisted.internet.endpoints import TCP4ServerEndpoint

        from connserver._running.service import describePort, servingLine

        endpoint: IStreamServerEndpoint
        if description is None:
            assert address is not None
            endpoint = TCP4ServerEndpoint(  # type: ignore[no-untyped-call]
                self.reactor, address[1], address[2], address[0]
            )
        else:
            endpoint = endpointFromString(self.reactor, description)
        failures: list[Failure] = []
        ports: list[IListeningPort] = []
        listening = endpoint.listen(_NoConnections())
        listening.addCallbacks(ports.append, failures.append)
        if failures:
            failures[0].raiseException()
        port = ports[0]
        # The parent never accepts: the workers do.
        port.stopReading()  # type: ignore[attr-defined]
        scheme = "https" if kind == "tls" else "http"
        _log.info(
            "connserver listening on {where}{tls}",
            where=describePort(port),
            tls=" (https)" if scheme == "https" else "",
        )
        if self.serving is not None:
            _log.info("{line}", line=servingLine(port, scheme, self.serving))
        self._ports.append(port)
        sock = port.socket  # type: ignore[attr-defined]
        return ListenerSpec(kind, index, fd=sock.fileno(), family=sock.family)

    def _bindReusePort(
        self, kind: str, index: int, address: tuple[str, int, int]
    ) -> ListenerSpec:
        host, port, backlog = address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # Bound, never listening: it holds the port (and, with port 0,
        # chooses it) while the workers' sockets come and go.
        sock = reusePortSocket(
            family, host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port
        )
        self._sockets.append(sock)
        boundHost, boundPort = sock.getsockname()[:2]
        kindName = "ipv6" if family == socket.AF_INET6 else "ipv4"
        scheme = "https" if kind == "tls" else "http"
        _log.info(
            "connserver listening on {where} (SO_REUSEPORT, a socket per worker{tls})",
            where=f"{kindName} {boundHost}:{boundPort}",
            tls=", https" if scheme == "https" else "",
        )
        if self.serving is not None:
            from twisted.internet.address import IPv4Address, IPv6Address

            from connserver._running.service import serviceURL

            bound = (IPv6Address if family == socket.AF_INET6 else IPv4Address)(
                "TCP", boundHost, boundPort
            )
            _log.info(
                "serving {url} ({serving})",
                url=serviceURL(bound, scheme),
                serving=self.serving,
            )
        return ListenerSpec(
            kind, index, family=family, bind=(boundHost, boundPort, backlog)
        )

    def close(self) -> None:
        """Stop listening (the workers' copies close as they drain)."""
        for port in self._ports:
            port.stopListening()
        self._ports = []
        for sock in self._sockets:
            sock.close()
        self._sockets = []


@implementer(IStreamServerEndpoint)
class AdoptedEndpoint:
    """
    An ``IStreamServerEndpoint`` whose ``listen`` adopts a listening socket
    (``reactor.adoptStreamPort``), with TLS (``TLSMemoryBIOFactory`` around
    the factory, with the worker's own certificates) wrapped here.
    """

    def __init__(
        self, reactor: Any, fd: int, family: int, tls: TLSServerOptions | None = None
    ) -> None:
        self.reactor = reactor
        self.fd = fd
        self.family = family
        self.tls = tls

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        """Adopt the socket, wrapping ``factory`` for TLS."""
        if self.tls is not None:
            from twisted.protocols.tls import TLSMemoryBIOFactory

            factory = TLSMemoryBIOFactory(self.tls, False, factory)
        port = self.reactor.adoptStreamPort(self.fd, self.family, factory)
        # Our copy of the descriptor is the port's now.
        os.close(self.fd)
        if self.family == socket.AF_UNIX:
            # Twisted's adopted unix: port, unlike its TCP one, would shut
            # the shared socket down (shutdown(2) stops it listening in every
            # process) and unlink its path when it stops: both are the
            # parent's to do.  Only this worker's descriptor closes.
            keepSharedSocketOnStop(port)
        return succeed(port)


def workerEndpoints(
    reactor: Any, entries: list[dict[str, Any]], tls: tuple[TLSListener, ...]
) -> list[IStreamServerEndpoint]:
    """
    A worker's endpoints from the parent's listener entries (see
    ``connserver._running.spawn``): each descriptor adopted, or with
    ``--reuse-port`` its own socket opened (``OSError`` if it cannot be).
    ``haproxy:`` ones go through Twisted's ``proxyEndpoint``.
    """
    from twisted.protocols.haproxy import proxyEndpoint

    endpoints: list[IStreamServerEndpoint] = []
    for entry in entries:
        family = entry["family"]
        if "bind" in entry:
            host, port, backlog = entry["bind"]
            fd = reusePortSocket(family, host, port, backlog).detach()
        else:
            fd = entry["fd"]
        kind = entry["kind"]
        options = tls[entry["index"]].options if kind == "tls" else None
        endpoint: IStreamServerEndpoint = AdoptedEndpoint(reactor, fd, family, options)
        if kind == "haproxy":
            endpoint = proxyEndpoint(endpoint)
        endpoints.append(endpoint)
    return endpoints
