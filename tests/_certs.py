"""
Helpers for the real-socket tests: a throwaway self-signed certificate
(made with ``cryptography``) and a small recording client protocol, so that
the TLS and service tests use a real client without blocking the reactor.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure


@dataclass(frozen=True)
class CertificateFiles:
    """A self-signed certificate for ``localhost`` and 127.0.0.1."""

    certificate: Path
    privateKey: Path
    certificatePEM: bytes


def makeCertificate(directory: Path, hostname: str = "localhost") -> CertificateFiles:
    """Write ``cert.pem`` and ``key.pem`` into ``directory`` (EC P-256, 1 day)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(hostname),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certificatePEM = certificate.public_bytes(serialization.Encoding.PEM)
    certificatePath = directory / "cert.pem"
    keyPath = directory / "key.pem"
    certificatePath.write_bytes(certificatePEM)
    keyPath.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return CertificateFiles(certificatePath, keyPath, certificatePEM)


class RecordingProtocol(Protocol):
    """Records what arrives; ``lost`` fires on close (``reason`` says why)."""

    def __init__(self) -> None:
        self.data = b""
        #: Fires (with None) on connectionLost; the reason is in ``reason``.
        self.lost: Deferred[None] = Deferred()
        self.reason: Failure | None = None
        self._waiters: list[tuple[int, Deferred[bytes]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        self._check()

    def whenReceived(self, count: int) -> Deferred[bytes]:
        """Fires with everything received once ``count`` bytes have arrived."""
        waiter: Deferred[bytes] = Deferred()
        self._waiters.append((count, waiter))
        self._check()
        return waiter

    def _check(self) -> None:
        ready = [(n, d) for n, d in self._waiters if len(self.data) >= n]
        self._waiters = [(n, d) for n, d in self._waiters if len(self.data) < n]
        for _, waiter in ready:
            waiter.callback(self.data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        # Not lost.callback(reason): a Failure as a result would errback.
        self.reason = reason
        self.lost.callback(None)


def connect(
    reactor: Any, port: int, tlsOptions: Any = None
) -> Deferred[RecordingProtocol]:
    """A ``RecordingProtocol`` connected to 127.0.0.1:``port`` (TLS if given)."""
    from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS

    endpoint: Any = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)
    if tlsOptions is not None:
        endpoint = wrapClientTLS(tlsOptions, endpoint)
    connected: Deferred[RecordingProtocol] = endpoint.connect(
        Factory.forProtocol(RecordingProtocol)
    )
    return connected
