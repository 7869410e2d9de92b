"""
TLS through ``--listen ssl:...`` (pyOpenSSL), with a throwaway self-signed
certificate and Twisted's own TLS client trusting it: persistence and
pipelining work as over TCP (RFC 9112 §9.7), a close is preceded by
close_notify (RFC 9112 §9.8), and a handshake that never starts is bounded
by requestHeadTimeout.  Real sockets on 127.0.0.1, every wait bounded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.error import ConnectionDone, ConnectionLost

from tests._certs import CertificateFiles, makeCertificate
from tests._sockets import RawClient, connect

pytestmark = [
    pytest.mark.slow,
    # Twisted 26.10's CertificateOptions hands pyOpenSSL 26 X509 and PKey
    # objects, which pyOpenSSL deprecates; not ours to fix, and harmless.
    pytest.mark.filterwarnings(
        "ignore:Passing pyOpenSSL (X509|PKey) objects is deprecated:DeprecationWarning"
    ),
]

WAIT = 5


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> CertificateFiles:
    return makeCertificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tlsServer(certificate: CertificateFiles, tmp_path: Path) -> Iterator[Any]:
    """
    ``twistd connserver``'s own path: ``Options`` parses ``--listen ssl:...``
    and ``makeService`` builds the service, which is started here.
    """
    from connserver import tap

    (tmp_path / "index.html").write_bytes(b"<p>hello over TLS</p>\n")
    options = tap.Options()
    options.parseOptions(
        [
            "--path",
            str(tmp_path),
            "--request-head-timeout",
            "0.5",
            "--drain-timeout",
            "2",
            "--listen",
            f"ssl:0:interface=127.0.0.1:privateKey={certificate.privateKey}"
            f":certKey={certificate.certificate}",
        ]
    )
    service = tap.makeService(options)
    service.startService()
    yield service
    # Stopping drains: the test waits for it in its own body where it
    # matters; here it only must not leave a port open.
    service.stopService()


def portOf(service: Any) -> int:
    return int(service.ports[0].getHost().port)


def splitResponses(data: bytes) -> list[tuple[bytes, bytes]]:
    """(head, body) pairs from Content-Length-framed responses."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        out.append((head, rest[:length]))
        data = rest[length:]
    return out


@pytest_twisted.inlineCallbacks
def test_keepAliveAndCloseNotify(tlsServer: Any, certificate: CertificateFiles) -> Any:
    """Two requests on one TLS connection; the close sends close_notify."""
    from twisted.internet import reactor

    client: RawClient = yield ensureDeferred(
        connect(portOf(tlsServer), tls=True, certificate=certificate)
    )
    client.transport.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")  # type: ignore[union-attr]
    first: bytes = yield _untilResponses(client, 1)
    assert not client.closed.called, "the connection persists after the first response"
    client.transport.write(  # type: ignore[union-attr]
        b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    yield client.closed.addTimeout(WAIT, reactor)
    responses = splitResponses(client.data)
    assert len(responses) == 2 and first
    for head, body in responses:
        assert head.startswith(b"HTTP/1.1 200 ")
        assert body == b"<p>hello over TLS</p>\n"
    assert b"connection: close" in responses[1][0].lower()
    assert b"connection: close" not in responses[0][0].lower()
    # Twisted reports ConnectionDone only when close_notify arrived before
    # the TCP FIN; a bare FIN (a truncation attack's signature) would be
    # ConnectionLost (RFC 9112 §9.8).
    assert client.reason is not None
    assert client.reason.check(ConnectionDone) and not client.reason.check(
        ConnectionLost
    )
    stats = tlsServer.factory.stats
    assert (stats.accepted, stats.handled, stats.responses) == (1, 1, 2)


@pytest_twisted.inlineCallbacks
def test_pipelining(tlsServer: Any, certificate: CertificateFiles) -> Any:
    from twisted.internet import reactor

    client: RawClient = yield ensureDeferred(
        connect(portOf(tlsServer), tls=True, certificate=certificate)
    )
    client.transport.write(  # type: ignore[union-attr]
        b"GET /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n"
        b"GET /missing HTTP/1.1\r\nHost: localhost\r\n\r\n"
        b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    yield client.closed.addTimeout(WAIT, reactor)
    statuses = [head.split(b" ")[1] for head, _ in splitResponses(client.data)]
    assert statuses == [b"200", b"404", b"200"]


@pytest_twisted.inlineCallbacks
def test_stalledHandshakeIsBounded(tlsServer: Any) -> Any:
    """A client that connects and never says hello is closed at requestHeadTimeout."""
    from twisted.internet import reactor

    client: RawClient = yield ensureDeferred(connect(portOf(tlsServer), tls=False))
    started = reactor.seconds()
    yield client.closed.addTimeout(WAIT, reactor)
    elapsed = reactor.seconds() - started
    assert 0.3 < elapsed < 3
    assert client.data == b""


@pytest_twisted.inlineCallbacks
def test_drainOverTLS(tlsServer: Any, certificate: CertificateFiles) -> Any:
    """Stopping the service closes an idle TLS connection cleanly and fires."""
    from twisted.internet import reactor

    client: RawClient = yield ensureDeferred(
        connect(portOf(tlsServer), tls=True, certificate=certificate)
    )
    client.transport.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")  # type: ignore[union-attr]
    yield _untilResponses(client, 1)
    stopped: Deferred[None] = tlsServer.stopService()
    yield client.closed.addTimeout(WAIT, reactor)
    yield stopped.addTimeout(WAIT, reactor)
    assert client.reason is not None and client.reason.check(ConnectionDone)


def _untilResponses(client: RawClient, count: int) -> Deferred[bytes]:
    """Fires once ``count`` complete Content-Length responses have arrived."""
    from twisted.internet import reactor

    done: Deferred[bytes] = Deferred()
    original = client.dataReceived

    def check() -> None:
        data = client.data
        complete = 0
        while True:
            head, sep, rest = data.partition(b"\r\n\r\n")
            if not sep:
                break
            lengths = [
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")[1:]
                if line.lower().startswith(b"content-length:")
            ]
            length = lengths[0] if lengths else 0
            if len(rest) < length:
                break
            complete += 1
            data = rest[length:]
        if complete >= count and not done.called:
            client.dataReceived = original  # type: ignore[method-assign]
            done.callback(client.data)

    def dataReceived(data: bytes) -> None:
        original(data)
        check()

    client.dataReceived = dataReceived  # type: ignore[method-assign]
    check()
    return done.addTimeout(WAIT, reactor)
