"""
One raw client and one server helper for the real-socket tests (127.0.0.1,
port 0), over plain TCP or over TLS with the same calls.

* ``serve(handler, tls=False, **config)`` listens with a ``ConnectionFactory``
  (over TLS: ``connserver._running.tls.TLSServerOptions`` with a throwaway
  certificate, through ``SSL4ServerEndpoint``, as ``twistd connserver``
  builds it) and records every protocol it builds.
* ``connect(server)`` returns a ``RawClient``; over TLS it is Twisted's
  client TLS offering ALPN ``h2, http/1.1`` as a browser does, and the
  connection is returned once the handshake is done and ``http/1.1`` was
  negotiated.
* ``finish(server)`` stops listening, drains, and checks that no
  connserver timer is left.

Every wait is bounded (``bounded``; ``_helpers.eventuallyDeferred`` for a
poll).  The client's waits (``waitFor``, ``waitUntil``, ``waitResponses``,
``waitClosed``) wake on what arrives, never on the clock; a poll is a
wall-clock wait, so only tests marked ``slow`` use it.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.endpoints import (
    SSL4ServerEndpoint,
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import IHalfCloseableProtocol, IHandshakeListener
from twisted.python.failure import Failure
from zope.interface import implementer

from connserver import ConnectionFactory, ServerConfig
from connserver._running.tls import CertificateSource, TLSServerOptions

from ._certs import CertificateFiles, makeCertificate
from ._harness import ParsedResponse, parseResponses
from ._helpers import realReactor as _reactor

__all__ = [
    "BROWSER_ALPN",
    "TIMEOUT",
    "TRANSPORTS",
    "RawClient",
    "Server",
    "bounded",
    "clientTLSOptions",
    "connect",
    "defaultCertificate",
    "finish",
    "serve",
]

#: The longest any single wait of a real-socket test may take.
TIMEOUT = 10
#: What browsers and curl offer.
BROWSER_ALPN = (b"h2", b"http/1.1")
#: Parameter ids of the TCP/TLS parity tests.
TRANSPORTS = ["tcp", "tls"]

_certificates: dict[str, CertificateFiles] = {}


def bounded(d: defer.Deferred[Any], timeout: float = TIMEOUT) -> defer.Deferred[Any]:
    """``d``, failing with ``TimeoutError`` if it has not fired in ``timeout``."""
    return d.addTimeout(timeout, _reactor())


def defaultCertificate() -> CertificateFiles:
    """A self-signed certificate for ``localhost``, made once per process."""
    if "localhost" not in _certificates:
        directory = tempfile.mkdtemp(prefix="connserver-tls-")
        atexit.register(shutil.rmtree, directory, True)
        _certificates["localhost"] = makeCertificate(Path(directory))
    return _certificates["localhost"]


def clientTLSOptions(
    certificate: CertificateFiles | None = None,
    hostname: str = "localhost",
    alpn: Sequence[bytes] | None = BROWSER_ALPN,
) -> Any:
    """Twisted's client TLS, trusting ``certificate``, offering ``alpn``."""
    from twisted.internet.ssl import Certificate, optionsForClientTLS

    certificate = certificate or defaultCertificate()
    return optionsForClientTLS(
        hostname,
        trustRoot=Certificate.loadPEM(certificate.certificatePEM),
        acceptableProtocols=list(alpn) if alpn is not None else None,
    )


@dataclass
class Server:
    """A listening ``ConnectionFactory`` and what it built."""

    port: Any
    factory: ConnectionFactory
    tls: TLSServerOptions | None
    protocols: list[Any] = field(default_factory=list)

    @property
    def portNumber(self) -> int:
        return int(self.port.getHost().port)


async def serve(
    handler: Any,
    *,
    tls: bool | str = False,
    certificates: Sequence[CertificateFiles] = (),
    tlsOptions: TLSServerOptions | None = None,
    **config: Any,
) -> Server:
    """
    ``handler`` behind a ``ConnectionFactory`` on 127.0.0.1, port 0.

    ``tls`` is a bool or a parameter id (``"tcp"``/``"tls"``); over TLS the
    listener uses ``tlsOptions`` if given, else ``certificates`` (the first
    one is the default), else the process's throwaway ``localhost``
    certificate.
    """
    reactor = _reactor()
    secure = tls is True or tls == "tls" or tlsOptions is not None
    factory = ConnectionFactory(handler, config=ServerConfig(**config), reactor=reactor)
    protocols: list[Any] = []
    build = factory.buildProtocol

    def recordingBuild(addr: Any) -> Any:
        built = build(addr)
        protocols.append(built)
        return built

    factory.buildProtocol = recordingBuild  # type: ignore[method-assign]
    options: TLSServerOptions | None = None
    endpoint: Any
    if tlsOptions is not None:
        options = tlsOptions
        endpoint = SSL4ServerEndpoint(reactor, 0, options, interface="127.0.0.1")
    elif secure:
        options = TLSServerOptions(
            [
                CertificateSource.fromFiles(
                    str(files.certificate), str(files.privateKey)
                )
                for files in (certificates or [defaultCertificate()])
            ]
        )
        endpoint = SSL4ServerEndpoint(reactor, 0, options, interface="127.0.0.1")
    else:
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
    port = await bounded(endpoint.listen(factory))
    return Server(port, factory, options, protocols)


@implementer(IHalfCloseableProtocol, IHandshakeListener)
class RawClient(protocol.Protocol):
    """
    Records every byte the server sends.  ``closed`` fires with them when
    the connection ends (``reason`` says how: over TLS, ``ConnectionDone``
    means close_notify came before the FIN).  A half-close by the server is
    answered with a close, as a browser does.
    """

    def __init__(self, request: bytes = b"") -> None:
        self.request = request
        #: A bytearray: appending is cheap for downloads of many MiB.
        self.received = bytearray()
        self.closed: defer.Deferred[bytes] = defer.Deferred()
        self.handshake: defer.Deferred[None] = defer.Deferred()
        self.reason: Failure | None = None
        self._waiting: defer.Deferred[None] | None = None

    @property
    def data(self) -> bytes:
        return bytes(self.received)

    def connectionMade(self) -> None:
        if self.request:
            self.write(self.request)

    def handshakeCompleted(self) -> None:
        self.handshake.callback(None)

    @property
    def negotiatedProtocol(self) -> bytes | None:
        value: bytes | None = getattr(self.transport, "negotiatedProtocol", None)
        return value

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self._wake()

    def readConnectionLost(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        # Not closed.errback: the reason is kept aside for the assertions.
        self.reason = reason
        if not self.handshake.called:
            self.handshake.errback(reason)
            self.handshake.addErrback(lambda _: None)
        self.closed.callback(bytes(self.received))
        self._wake()

    def _wake(self) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.callback(None)

    async def waitFor(self, marker: bytes, count: int = 1) -> bytes:
        """Wait (bounded) until ``marker`` has arrived ``count`` times."""
        return await self.waitUntil(
            lambda received: received.count(marker) >= count,
            f"{count} x {marker!r}",
        )

    async def waitUntil(
        self, condition: Callable[[bytearray], object], what: str = "the condition"
    ) -> bytes:
        """
        Wait (bounded) until ``condition(received)`` holds (``received`` is
        the client's own bytearray, not a copy), checking it each time bytes
        arrive; fail if the connection closes first.
        """
        while not condition(self.received):
            if self.closed.called:
                raise AssertionError(f"closed before {what}: {self.received!r}")
            self._waiting = defer.Deferred()
            await bounded(self._waiting)
        return bytes(self.received)

    async def waitResponses(
        self, count: int, methods: list[bytes] | None = None
    ) -> list[ParsedResponse]:
        """
        Wait (bounded) until ``count`` complete responses (to ``methods``,
        GETs by default) have arrived; all those received so far.
        """

        def enough(received: bytearray) -> bool:
            return len(parseResponses(received, methods, partial=True)) >= count

        received = await self.waitUntil(enough, f"{count} complete responses")
        return parseResponses(received, methods, partial=True)

    async def waitClosed(self) -> bytes:
        received: bytes = await bounded(self.closed)
        return received

    def close(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()


async def connect(
    server: Server | int,
    *,
    tls: bool | str | None = None,
    alpn: Sequence[bytes] | None = BROWSER_ALPN,
    certificate: CertificateFiles | None = None,
    hostname: str = "localhost",
    request: bytes = b"",
    handshake: bool = True,
) -> RawClient:
    """
    A ``RawClient`` connected to ``server`` (a ``Server`` or a port number).

    Over TLS (the server's own kind unless ``tls`` says) the client offers
    ``alpn`` and, when ``handshake``, this waits for the handshake and
    checks that ``http/1.1`` was negotiated (or nothing, without ALPN).
    """
    reactor = _reactor()
    if isinstance(server, Server):
        portNumber = server.portNumber
        secure = server.tls is not None if tls is None else tls in (True, "tls")
    else:
        portNumber = server
        secure = tls in (True, "tls")
    client = RawClient(request)
    endpoint: Any = TCP4ClientEndpoint(reactor, "127.0.0.1", portNumber, timeout=5)
    if secure:
        endpoint = wrapClientTLS(
            clientTLSOptions(certificate, hostname, alpn), endpoint
        )
    await bounded(endpoint.connect(protocol.Factory.forProtocol(lambda: client)))
    if secure and handshake:
        await bounded(client.handshake)
        expected = b"http/1.1" if alpn else None
        assert client.negotiatedProtocol == expected, client.negotiatedProtocol
    return client


def connserverTimers() -> list[Any]:
    """
    Delayed calls still pending whose function belongs to connserver: a
    protocol's ``PhaseTimer``, a factory, a file producer.
    """

    def module(call: Any) -> str:
        owner = getattr(call.func, "__self__", None)
        if owner is not None:
            return type(owner).__module__
        return str(getattr(call.func, "__module__", ""))

    return [
        call
        for call in _reactor().getDelayedCalls()
        if module(call).startswith("connserver")
    ]


async def finish(*servers: Server, drainTimeout: float = 2.0) -> None:
    """
    Stop listening, wait for every connection to go; no timer may remain
    (of any connserver protocol: finish every server of a test at once).
    """
    for server in servers:
        await bounded(defer.maybeDeferred(server.port.stopListening))
    for server in servers:
        await bounded(server.factory.drain(drainTimeout))
        assert server.factory.stats.active == 0
    timers = connserverTimers()
    assert timers == [], [str(t) for t in timers]
