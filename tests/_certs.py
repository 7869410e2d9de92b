"""
Throwaway self-signed certificates for the TLS tests (made with
``cryptography``); the real-socket client is in ``tests._sockets``.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class CertificateFiles:
    """A self-signed certificate for ``localhost`` and 127.0.0.1."""

    certificate: Path
    privateKey: Path
    certificatePEM: bytes


def makeCertificate(
    directory: Path,
    hostname: str = "localhost",
    *,
    names: Sequence[str] = (),
    stem: str = "",
    passphrase: bytes | None = None,
) -> CertificateFiles:
    """
    Write ``cert.pem`` and ``key.pem`` (``STEM.crt`` and ``STEM.key`` with
    ``stem``) into ``directory``: EC P-256, valid one day, for ``hostname``
    (also its common name) and 127.0.0.1, plus ``names`` (DNS names, such as
    ``*.example.test``); the key encrypted with ``passphrase`` if given.
    """
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
                    *(x509.DNSName(extra) for extra in names),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certificatePEM = certificate.public_bytes(serialization.Encoding.PEM)
    certificatePath = directory / (f"{stem}.crt" if stem else "cert.pem")
    keyPath = directory / (f"{stem}.key" if stem else "key.pem")
    certificatePath.write_bytes(certificatePEM)
    keyPath.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption(),
        )
    )
    return CertificateFiles(certificatePath, keyPath, certificatePEM)
