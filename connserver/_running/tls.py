"""
TLS for connserver's listeners: ALPN that negotiates ``http/1.1``,
certificates chosen by SNI, Twisted's safe defaults, and reload without a
restart.

``TLSServerOptions`` is what ``TLSMemoryBIOFactory`` (and so
``SSL4ServerEndpoint``) asks for a connection: an
``IOpenSSLServerConnectionCreator``.  Each certificate gets its own
``SSL.Context``, built by Twisted's ``CertificateOptions`` (TLS 1.2 at
least, its cipher list with the server's preference, no compression, no
session tickets), and then given its certificate, key and chain.

Two things differ from a plain ``CertificateOptions``:

* ALPN (RFC 7301).  Twisted's own selection callback answers a client whose
  offer has nothing in common with the server's with an empty protocol name,
  which OpenSSL turns into an ``internal_error`` alert; before this module
  every browser and curl failed that way.  Here ``http/1.1`` (or
  ``http/1.0``) is chosen when offered, and an offer of neither (``h2``
  alone) gets the ``no_application_protocol`` alert that RFC 7301 §3.2
  prescribes.  A client that offers no ALPN negotiates nothing, as before.
* SNI (RFC 6066 §3).  The client's server name picks the certificate whose
  names (subjectAltName DNS entries, else the common name) match it,
  wildcards matching one label; an unknown name or none at all gets the
  default (the first certificate).

``reload()`` re-reads every file; new handshakes use the new certificates,
connections already open are untouched, and a bad file leaves the current
certificates in service (one log line says why).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.ssl import CertificateOptions, TLSVersion
from twisted.logger import Logger
from zope.interface import implementer

from connserver._http.stats import ALPN_PROTOCOLS

__all__ = [
    "CertificateSource",
    "NoApplicationProtocol",
    "TLSConfigError",
    "TLSServerOptions",
    "certificatesInDirectory",
]

_log = Logger(namespace="connserver")

_CERTIFICATE_SUFFIXES = (".crt", ".pem", ".cer")


class TLSConfigError(ValueError):
    """A certificate or key that cannot be used; the message names the file."""


class NoApplicationProtocol(SSL.Error):
    """
    The client offered only protocols this server does not speak (``h2``).

    Raised from the ALPN callback: pyOpenSSL then makes OpenSSL send the
    fatal ``no_application_protocol`` alert, and Twisted closes the
    connection as a failed handshake.
    """


@dataclass(frozen=True)
class CertificateSource:
    """
    Where one certificate comes from: a PEM file with the certificate first
    and its chain after it, and a PEM private key (which may be the same
    file).
    """

    certificate: str
    privateKey: str
    #: A PEM file of further chain certificates (intermediates), if any.
    chain: str | None = None

    @classmethod
    def fromFiles(
        cls, certificate: str, privateKey: str | None = None, chain: str | None = None
    ) -> CertificateSource:
        """A source with absolute paths; the key defaults to the certificate file."""
        return cls(
            os.path.abspath(certificate),
            os.path.abspath(privateKey or certificate),
            os.path.abspath(chain) if chain else None,
        )


@dataclass(frozen=True)
class _Loaded:
    """One certificate, read and checked."""

    source: CertificateSource
    chain: tuple[x509.Certificate, ...]
    #: A private key of ``cryptography`` (RSA, EC, Ed25519, ...).
    key: Any
    names: tuple[str, ...]


def certificatesInDirectory(directory: str) -> list[CertificateSource]:
    """
    The certificates of a directory, in name order: ``NAME.crt`` (or
    ``.pem``, ``.cer``) with ``NAME.key``, and certbot's layout,
    ``NAME/fullchain.pem`` with ``NAME/privkey.pem`` (so ``/etc/letsencrypt/live``
    works as it is).  A ``.pem`` without a ``.key`` beside it is taken as a
    combined file only if it holds a private key.
    """
    try:
        entries = sorted(os.listdir(directory))
    except OSError as error:
        raise TLSConfigError(
            f"{directory}: cannot list the directory ({error.strerror})"
        ) from None
    sources: list[CertificateSource] = []
    for entry in entries:
        path = os.path.join(directory, entry)
        if os.path.isdir(path):
            chain = os.path.join(path, "fullchain.pem")
            key = os.path.join(path, "privkey.pem")
            if os.path.isfile(chain) and os.path.isfile(key):
                sources.append(CertificateSource.fromFiles(chain, key))
            continue
        stem, suffix = os.path.splitext(entry)
        if suffix.lower() not in _CERTIFICATE_SUFFIXES:
            continue
        key = os.path.join(directory, stem + ".key")
        if os.path.isfile(key):
            sources.append(CertificateSource.fromFiles(path, key))
        elif _holdsPrivateKey(path):
            sources.append(CertificateSource.fromFiles(path))
    if not sources:
        raise TLSConfigError(
            f"{directory}: no certificate found (NAME.crt with NAME.key, or "
            "NAME/fullchain.pem with NAME/privkey.pem)"
        )
    return sources


def _holdsPrivateKey(path: str) -> bool:
    try:
        with open(path, "rb") as file:
            return b"PRIVATE KEY-----" in file.read()
    except OSError:
        return False


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise TLSConfigError(
            f"{path}: cannot read the {what} ({error.strerror})"
        ) from None


def _publicBytes(key: Any) -> bytes:
    data: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


def _names(certificate: x509.Certificate) -> tuple[str, ...]:
    """The DNS names a certificate is for (RFC 6125 §6.4.4: SAN first, else CN)."""
    try:
        san = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
    except x509.ExtensionNotFound:
        names = [
            str(attribute.value)
            for attribute in certificate.subject.get_attributes_for_oid(
                NameOID.COMMON_NAME
            )
        ]
    else:
        names = san.value.get_values_for_type(x509.DNSName)
    return tuple(name.lower().rstrip(".") for name in names)


def _load(source: CertificateSource) -> _Loaded:
    """Read and check one certificate and its key; ``TLSConfigError`` if unusable."""
    certificateData = _read(source.certificate, "certificate")
    try:
        chain = tuple(x509.load_pem_x509_certificates(certificateData))
    except ValueError:
        raise TLSConfigError(
            f"{source.certificate}: no PEM certificate in the file"
        ) from None
    if source.chain is not None:
        try:
            chain += tuple(
                x509.load_pem_x509_certificates(
                    _read(source.chain, "certificate chain")
                )
            )
        except ValueError:
            raise TLSConfigError(
                f"{source.chain}: no PEM certificate in the file"
            ) from None
    keyData = (
        certificateData
        if source.privateKey == source.certificate
        else _read(source.privateKey, "private key")
    )
    if b"ENCRYPTED" in keyData and b"PRIVATE KEY-----" in keyData:
        raise TLSConfigError(_passphraseMessage(source.privateKey))
    try:
        key: Any = serialization.load_pem_private_key(keyData, password=None)
    except TypeError:
        raise TLSConfigError(_passphraseMessage(source.privateKey)) from None
    except ValueError:
        raise TLSConfigError(
            f"{source.privateKey}: no usable PEM private key in the file"
        ) from None
    if _publicBytes(key.public_key()) != _publicBytes(chain[0].public_key()):
        raise TLSConfigError(
            f"{source.privateKey}: the private key does not match the "
            f"certificate {source.certificate}"
        )
    return _Loaded(source, chain, key, _names(chain[0]))


def _passphraseMessage(path: str) -> str:
    return (
        f"{path}: the private key is protected by a passphrase; connserver "
        f"needs it unencrypted (openssl pkey -in {os.path.basename(path)} "
        "-out key.pem), readable by the server only"
    )


def _chooseProtocol(connection: SSL.Connection, offered: list[bytes]) -> bytes:
    """The ALPN select callback (RFC 7301 §3.2)."""
    for protocol in ALPN_PROTOCOLS:
        if protocol in offered:
            return protocol
    # "In the event that the server supports no protocols that the client
    # advertises, then the server SHALL respond with a fatal
    # 'no_application_protocol' alert."
    # The argument has the shape of OpenSSL's error queue, as every SSL.Error
    # does: Twisted reads it when the handshake fails.
    raise NoApplicationProtocol(
        [("connserver", "ALPN", f"no application protocol in {offered!r}")]
    )


def _makeContext(loaded: _Loaded) -> SSL.Context:
    """
    A server context with Twisted's defaults (``CertificateOptions``: TLS
    1.2 at least, its ciphers in the server's order, no compression, no
    tickets), this certificate, and connserver's ALPN choice.
    """
    options = CertificateOptions(raiseMinimumTo=TLSVersion.TLSv1_2)
    # Built without a certificate, then given one: the context is not in use
    # yet, so it may still be changed; and pyOpenSSL takes cryptography's
    # objects directly (its own X509/PKey wrappers are deprecated).
    context = options.getContext()
    context.use_certificate(loaded.chain[0])
    for extra in loaded.chain[1:]:
        context.add_extra_chain_cert(extra)
    context.use_privatekey(loaded.key)
    context.check_privatekey()
    context.set_alpn_select_callback(_chooseProtocol)
    return context


def _matches(pattern: str, name: str) -> bool:
    """RFC 6125 §6.4.3: a wildcard stands for exactly one leftmost label."""
    if pattern == name:
        return True
    if pattern.startswith("*."):
        head, dot, rest = name.partition(".")
        return bool(head) and bool(dot) and rest == pattern[2:]
    return False


class _Contexts:
    """One consistent set: the default context and the contexts by name."""

    __slots__ = ("byName", "default", "loaded", "wildcards")

    def __init__(self, loaded: Sequence[_Loaded]) -> None:
        self.loaded = tuple(loaded)
        contexts = [_makeContext(item) for item in loaded]
        self.default = contexts[0]
        self.byName: dict[str, SSL.Context] = {}
        self.wildcards: list[tuple[str, SSL.Context]] = []
        for item, context in zip(loaded, contexts, strict=True):
            for name in item.names:
                if name.startswith("*."):
                    self.wildcards.append((name, context))
                else:
                    # The first certificate given for a name wins.
                    self.byName.setdefault(name, context)
        if len(contexts) > 1:
            # Set before the context is used (pyOpenSSL refuses changes to a
            # context in use); the callback belongs to this set, so a reload
            # during a handshake cannot mix two sets.
            self.default.set_tlsext_servername_callback(self._serverNameReceived)

    def _serverNameReceived(self, connection: SSL.Connection) -> None:
        name = connection.get_servername()
        if not name:
            return  # no SNI: the default certificate
        context = self.forName(name.decode("ascii", "replace").lower().rstrip("."))
        if context is not self.default:
            connection.set_context(context)

    def forName(self, name: str) -> SSL.Context:
        context = self.byName.get(name)
        if context is not None:
            return context
        for pattern, candidate in self.wildcards:
            if _matches(pattern, name):
                return candidate
        return self.default


@implementer(IOpenSSLServerConnectionCreator)
class TLSServerOptions:
    """
    The TLS side of a listener: pass it to ``SSL4ServerEndpoint`` (or
    ``TLSMemoryBIOFactory``) as the context factory.

    :param certificates: the certificates, the default one first (used for
        clients that send no server name, or one no certificate is for).
    :param directories: directories of certificates too (see
        :func:`certificatesInDirectory`), read again on every reload.

    Every file is read, and every key checked against its certificate, in
    the constructor: a problem raises ``TLSConfigError`` naming the file.
    """

    def __init__(
        self,
        certificates: Sequence[CertificateSource] = (),
        directories: Sequence[str] = (),
    ) -> None:
        self._sources = tuple(certificates)
        self._directories = tuple(os.path.abspath(d) for d in directories)
        self._contexts = _Contexts(self._loadAll())

    @property
    def sources(self) -> tuple[CertificateSource, ...]:
        """The certificates given (not those found in the directories)."""
        return self._sources

    @property
    def directories(self) -> tuple[str, ...]:
        """The directories of certificates, as absolute paths."""
        return self._directories

    @property
    def names(self) -> dict[str, str]:
        """Each certificate's file and the names it serves, default first."""
        return {
            item.source.certificate: ", ".join(item.names) or "(no DNS name)"
            for item in self._contexts.loaded
        }

    def _loadAll(self) -> list[_Loaded]:
        sources = list(self._sources)
        for directory in self._directories:
            sources.extend(certificatesInDirectory(directory))
        if not sources:
            raise TLSConfigError("no TLS certificate given")
        return [_load(source) for source in sources]

    def reload(self) -> bool:
        """
        Read every certificate and key again and use them for new
        handshakes.  On any problem keep the current ones, log one line, and
        return False.
        """
        try:
            contexts = _Contexts(self._loadAll())
        except (TLSConfigError, SSL.Error, ValueError) as error:
            _log.error(
                "TLS reload failed, the current certificates stay in service: {error}",
                error=str(error).splitlines()[0] if str(error) else repr(error),
            )
            return False
        self._contexts = contexts
        _log.info(
            "TLS certificates reloaded: {count} ({names})",
            count=len(contexts.loaded),
            names="; ".join(
                item.names[0] if item.names else item.source.certificate
                for item in contexts.loaded
            ),
        )
        return True

    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        """A new server-side ``SSL.Connection`` (``IOpenSSLServerConnectionCreator``)."""
        return SSL.Connection(self._contexts.default, None)
