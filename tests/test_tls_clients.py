"""
Real TLS clients against connserver's own TLS (``TLSServerOptions`` behind
``SSL4ServerEndpoint``, as ``twistd connserver`` builds it), on 127.0.0.1
port 0: Python's ``ssl`` offering ALPN ``h2, http/1.1`` (run in a thread),
``curl`` with its defaults and ``openssl s_client`` (subprocesses, in a
thread, skipped where not installed).  Also SNI across several
certificates, the safe defaults (TLS 1.2 minimum, no compression), HSTS
over TLS only, and the redirect to HTTPS.  Every wait is bounded.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_twisted
from cryptography import x509
from twisted.internet import threads

from connserver import Request, Response
from connserver._handlers.routing import HTTPSRedirect
from connserver._running.tls import CertificateSource, TLSServerOptions

from ._certs import CertificateFiles, makeCertificate
from ._harness import hello, parseResponses
from ._sockets import (
    TIMEOUT,
    bounded,
    connect,
    defaultCertificate,
    finish,
    serve,
)

T = TypeVar("T")

CURL = shutil.which("curl")
OPENSSL = shutil.which("openssl")
needsCurl = pytest.mark.skipif(CURL is None, reason="curl is not installed")
needsOpenSSL = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")

GET = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


async def inThread(function: Callable[..., T], *args: Any) -> T:
    """Run blocking client code in a thread; the reactor keeps serving."""
    result: T = await bounded(threads.deferToThread(function, *args), TIMEOUT + 5)
    return result


def clientContext(
    alpn: Sequence[str] | None = ("h2", "http/1.1"),
    certificate: CertificateFiles | None = None,
) -> ssl.SSLContext:
    context = ssl.create_default_context(
        cafile=str((certificate or defaultCertificate()).certificate)
    )
    if alpn is not None:
        context.set_alpn_protocols(list(alpn))
    return context


def exchange(
    port: int,
    context: ssl.SSLContext,
    serverHostname: str | None = "localhost",
    request: bytes = GET,
) -> dict[str, Any]:
    """Handshake, send ``request``, read to the end; what the client saw."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
        with context.wrap_socket(raw, server_hostname=serverHostname) as tls:
            info = {
                "alpn": tls.selected_alpn_protocol(),
                "compression": tls.compression(),
                "version": tls.version(),
                "certificate": tls.getpeercert(binary_form=True),
            }
            tls.sendall(request)
            received = b""
            while chunk := tls.recv(65536):
                received += chunk
            info["received"] = received
            return info


def der(files: CertificateFiles) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return x509.load_pem_x509_certificate(files.certificatePEM).public_bytes(
        Encoding.DER
    )


def run(*command: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        command, input=stdin, capture_output=True, timeout=TIMEOUT, check=False
    )


# -- ALPN with real clients ----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_pythonSSLOfferingH2AndHTTP11GetsHTTP11() -> None:
    server = await serve(hello, tls=True)
    try:
        info = await inThread(exchange, server.portNumber, clientContext())
        assert info["alpn"] == "http/1.1"
        [response] = parseResponses(info["received"], [b"GET"], eof=True)
        assert (response.status, response.body) == (200, b"x" * 130)
        # Safe defaults: TLS 1.2 at least, no TLS compression (CRIME).
        assert info["version"] in ("TLSv1.2", "TLSv1.3")
        assert info["compression"] is None
    finally:
        await finish(server)


@pytest_twisted.ensureDeferred
async def test_pythonSSLWithoutALPNWorks() -> None:
    server = await serve(hello, tls=True)
    try:
        info = await inThread(exchange, server.portNumber, clientContext(alpn=None))
        assert info["alpn"] is None
        assert info["received"].startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        await finish(server)


@pytest_twisted.ensureDeferred
async def test_pythonSSLOfferingOnlyH2GetsNoApplicationProtocol() -> None:
    """RFC 7301 §3.2: the fatal no_application_protocol alert, not internal_error."""
    server = await serve(hello, tls=True)
    try:
        with pytest.raises(ssl.SSLError) as raised:
            await inThread(exchange, server.portNumber, clientContext(alpn=["h2"]))
        reason = str(raised.value).lower().replace("_", " ")
        assert "no application protocol" in reason
        assert "internal error" not in reason
        # The server is unharmed: the next client is served.
        info = await inThread(exchange, server.portNumber, clientContext())
        assert info["received"].startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        await finish(server)
    assert server.factory.stats.closes.get("tls-error") == 1


@pytest_twisted.ensureDeferred
async def test_twistedClientOfferingOnlyH2IsRefused() -> None:
    server = await serve(hello, tls=True)
    try:
        client = await connect(server, alpn=[b"h2"], handshake=False)
        await client.waitClosed()
        assert client.received == b""
        assert not client.handshake.called or client.negotiatedProtocol is None
    finally:
        await finish(server)


@needsCurl
@pytest_twisted.ensureDeferred
async def test_curlWithItsDefaults() -> None:
    """curl offers h2 and http/1.1 by default; it gets HTTP/1.1."""
    server = await serve(hello, tls=True)
    port = server.portNumber
    try:
        result = await inThread(
            run,
            str(CURL),
            "--silent",
            "--show-error",
            "--cacert",
            str(defaultCertificate().certificate),
            "--resolve",
            f"localhost:{port}:127.0.0.1",
            "--write-out",
            "\\n%{http_code} %{http_version}",
            f"https://localhost:{port}/",
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"x" * 130 + b"\n200 1.1"
    finally:
        await finish(server)


def sClient(port: int, alpn: str | None, serverName: str = "localhost") -> str:
    command = [
        str(OPENSSL),
        "s_client",
        "-connect",
        f"127.0.0.1:{port}",
        "-servername",
        serverName,
        "-CAfile",
        str(defaultCertificate().certificate),
    ]
    if alpn is not None:
        command += ["-alpn", alpn]
    result = run(*command, stdin=b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    return (result.stdout + result.stderr).decode("utf-8", "replace")


@needsOpenSSL
@pytest_twisted.ensureDeferred
async def test_opensslSClientALPN() -> None:
    server = await serve(hello, tls=True)
    try:
        output = await inThread(sClient, server.portNumber, "h2,http/1.1")
        assert "ALPN protocol: http/1.1" in output
        assert "Verify return code: 0 (ok)" in output
        output = await inThread(sClient, server.portNumber, "h2")
        assert "no application protocol" in output.lower()
        assert "internal error" not in output.lower()
        assert "ALPN protocol" not in output
        output = await inThread(sClient, server.portNumber, None)
        assert "No ALPN negotiated" in output
    finally:
        await finish(server)


# -- safe defaults ---------------------------------------------------------------


def tls11Context() -> ssl.SSLContext:
    """A client that can offer TLS 1.1 only (OpenSSL 3 needs SECLEVEL=0 for it)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    # The deprecated TLS 1.1 is exactly what this client must offer.
    with pytest.warns(DeprecationWarning):
        context.minimum_version = ssl.TLSVersion.TLSv1_1
    with pytest.warns(DeprecationWarning):
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    return context


@pytest_twisted.ensureDeferred
async def test_tls11IsRefused() -> None:
    server = await serve(hello, tls=True)
    try:
        with pytest.raises(ssl.SSLError) as raised:
            await inThread(exchange, server.portNumber, tls11Context(), None)
        # Refused by the server (its protocol_version alert, or no version in
        # common), not by a client that could not offer TLS 1.1.
        reason = str(raised.value).upper()
        assert "NO_PROTOCOLS_AVAILABLE" not in reason
        assert "PROTOCOL_VERSION" in reason or "UNSUPPORTED_PROTOCOL" in reason
    finally:
        await finish(server)


@pytest_twisted.ensureDeferred
async def test_hstsOverTLSOnly() -> None:
    """--hsts: Strict-Transport-Security over TLS, never over plain TCP (RFC 6797 §7.2)."""
    for transport, expected in (("tls", b"max-age=600"), ("tcp", None)):
        server = await serve(hello, tls=transport, hstsMaxAge=600)
        try:
            client = await connect(server, request=GET)
            [response] = parseResponses(await client.waitClosed(), [b"GET"], eof=True)
            assert response.header(b"strict-transport-security") == expected
        finally:
            await finish(server)
    server = await serve(hello, tls=True)  # off by default
    try:
        client = await connect(server, request=GET)
        [response] = parseResponses(await client.waitClosed(), [b"GET"], eof=True)
        assert response.header(b"strict-transport-security") is None
    finally:
        await finish(server)


@pytest_twisted.ensureDeferred
async def test_redirectToHTTPS() -> None:
    """
    308 to the same target on the HTTPS port, for plain TCP only; the status
    path is exempt; the connection stays persistent.
    """

    def status(request: Request) -> Response:
        return Response(200, body=b"status")

    from connserver._handlers.routing import PrefixMount

    handler = HTTPSRedirect(PrefixMount(hello, {"/status": status}), 8443, ["/status"])
    plain = await serve(handler)
    secure = await serve(handler, tls=True)
    try:
        client = await connect(plain)
        client.write(
            b"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: example.test:8080\r\n\r\n"
            b"POST /form HTTP/1.1\r\nHost: example.test\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /status HTTP/1.1\r\nHost: example.test:8080\r\n"
            b"Connection: close\r\n\r\n"
        )
        responses = parseResponses(
            await client.waitClosed(), [b"GET", b"POST", b"GET"], eof=True
        )
        assert [r.status for r in responses] == [308, 308, 200]
        assert responses[0].header(b"location") == (
            b"https://example.test:8443/a/b?x=1&y=2"
        )
        assert responses[1].header(b"location") == b"https://example.test:8443/form"
        assert responses[2].body == b"status"
        assert plain.factory.stats.accepted == 1
        tlsClient = await connect(secure, request=GET)
        [response] = parseResponses(await tlsClient.waitClosed(), [b"GET"], eof=True)
        assert (response.status, response.body) == (200, b"x" * 130)
    finally:
        await finish(plain, secure)


# -- SNI -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sniCertificates(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, CertificateFiles]:
    """Three certificates: the default (localhost), one name, one wildcard."""
    directory = tmp_path_factory.mktemp("sni")
    return {
        "default": makeCertificate(directory, "localhost", stem="default"),
        "one": makeCertificate(directory, "one.test", stem="one"),
        "wild": makeCertificate(
            directory, "holder.test", names=["*.wild.test"], stem="wild"
        ),
    }


def unverified() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


async def certificateFor(port: int, name: str | None) -> bytes:
    info = await inThread(exchange, port, unverified(), name)
    assert info["alpn"] == "http/1.1"
    assert info["received"].startswith(b"HTTP/1.1 200 OK\r\n")
    certificate: bytes = info["certificate"]
    return certificate


async def checkSNI(
    options: TLSServerOptions, files: dict[str, CertificateFiles]
) -> None:
    server = await serve(hello, tlsOptions=options)
    port = server.portNumber
    try:
        expected = {
            "localhost": "default",
            "one.test": "one",
            "ONE.test": "one",
            "holder.test": "wild",
            "a.wild.test": "wild",
            # A wildcard does not match the bare domain.
            "wild.test": "default",
            # A wildcard stands for one label only.
            "a.b.wild.test": "default",
            "unknown.test": "default",
            None: "default",
        }
        for name, which in expected.items():
            assert await certificateFor(port, name) == der(files[which]), name
        # And with verification, as a browser does it.
        for name, which in (("one.test", "one"), ("x.wild.test", "wild")):
            info = await inThread(
                exchange, port, clientContext(certificate=files[which]), name
            )
            assert info["alpn"] == "http/1.1"
    finally:
        await finish(server)


@pytest_twisted.ensureDeferred
async def test_sniWithRepeatedCertificateAndPrivkey(
    sniCertificates: dict[str, CertificateFiles],
) -> None:
    """--https with repeated -c/-k pairs: SNI picks; the first is the default."""
    from connserver import tap

    args = ["--https", "8443"]
    for which in ("default", "one", "wild"):
        files = sniCertificates[which]
        args += ["-c", str(files.certificate), "-k", str(files.privateKey)]
    options = tap.Options()
    options.parseOptions(args)
    [listener] = options["tls"]
    await checkSNI(listener.options, sniCertificates)


@pytest_twisted.ensureDeferred
async def test_sniWithACertificateDirectory(
    sniCertificates: dict[str, CertificateFiles], tmp_path: Path
) -> None:
    """
    --certificate-dir, mixing NAME.crt/NAME.key and certbot's live/ layout
    (NAME/fullchain.pem, NAME/privkey.pem); files are taken in name order,
    so the default is the first name.
    """
    from connserver import tap

    for which, prefix in (("default", "a-"), ("one", "b-")):
        files = sniCertificates[which]
        shutil.copy(files.certificate, tmp_path / f"{prefix}{which}.crt")
        shutil.copy(files.privateKey, tmp_path / f"{prefix}{which}.key")
    live = tmp_path / "c-holder.test"
    live.mkdir()
    shutil.copy(sniCertificates["wild"].certificate, live / "fullchain.pem")
    shutil.copy(sniCertificates["wild"].privateKey, live / "privkey.pem")
    (tmp_path / "README").write_text("certbot leaves this here\n")
    options = tap.Options()
    options.parseOptions(["--https", "8443", "--certificate-dir", str(tmp_path)])
    [listener] = options["tls"]
    await checkSNI(listener.options, sniCertificates)


@pytest_twisted.ensureDeferred
async def test_reloadInProcess(tmp_path: Path) -> None:
    """
    reload(): new handshakes get the new certificate, an open connection
    stays usable; a broken file keeps the current certificate in service.
    """
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = makeCertificate(tmp_path / "a")
    second = makeCertificate(tmp_path / "b")
    live = tmp_path / "live"
    live.mkdir()
    certificate, key = live / "cert.pem", live / "key.pem"
    shutil.copy(first.certificate, certificate)
    shutil.copy(first.privateKey, key)
    options = TLSServerOptions(
        [CertificateSource.fromFiles(str(certificate), str(key))]
    )
    server = await serve(hello, tlsOptions=options)
    try:
        before = await connect(server, certificate=first)
        before.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await before.waitFor(b"x" * 130)
        assert await certificateFor(server.portNumber, "localhost") == der(first)
        shutil.copy(second.certificate, certificate)
        shutil.copy(second.privateKey, key)
        assert options.reload()
        assert await certificateFor(server.portNumber, "localhost") == der(second)
        before.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await before.waitFor(b"x" * 130, 2)
        certificate.write_text("not a certificate\n")
        assert not options.reload()
        assert await certificateFor(server.portNumber, "localhost") == der(second)
        before.close()
        await before.waitClosed()
    finally:
        await finish(server)


# -- TLS that Twisted builds ---------------------------------------------------------


@pytest.mark.filterwarnings(
    # Twisted 26.10's CertificateOptions hands pyOpenSSL 26 X509 and PKey
    # objects, which pyOpenSSL deprecates; not ours to fix, and harmless.
    "ignore:Passing pyOpenSSL (X509|PKey) objects is deprecated:DeprecationWarning"
)
@pytest_twisted.ensureDeferred
async def test_twistedBuiltTLSUsesTheFactorysALPNNames() -> None:
    """
    A TLS context that Twisted builds (an ``ssl:`` string given to
    ``serverFromString`` directly, as inside ``haproxy:ssl:``) negotiates
    ``http/1.1`` from ``ConnectionFactory.acceptableProtocols``; an h2-only
    offer then gets Twisted's internal_error alert, not
    no_application_protocol (documented in docs/deployment.md).
    """
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    from connserver import ConnectionFactory, ServerConfig

    files = defaultCertificate()
    factory = ConnectionFactory(hello, config=ServerConfig(), reactor=reactor)
    port = await serverFromString(
        reactor,
        f"ssl:0:interface=127.0.0.1:privateKey={files.privateKey}"
        f":certKey={files.certificate}",
    ).listen(factory)
    try:
        info = await inThread(exchange, port.getHost().port, clientContext())
        assert info["alpn"] == "http/1.1"
        assert info["received"].startswith(b"HTTP/1.1 200 OK\r\n")
        with pytest.raises(ssl.SSLError) as raised:
            await inThread(exchange, port.getHost().port, clientContext(alpn=["h2"]))
        assert "internal error" in str(raised.value).lower().replace("_", " ")
    finally:
        await bounded(port.stopListening())
        await bounded(factory.drain(2.0))


def test_contextOptions() -> None:
    """Twisted's safe defaults hold: no compression, no tickets, server order."""
    from OpenSSL import SSL

    files = defaultCertificate()
    options = TLSServerOptions(
        [CertificateSource.fromFiles(str(files.certificate), str(files.privateKey))]
    )
    # Before any connection is made from it (pyOpenSSL then refuses changes),
    # set_options(0) adds nothing and returns what is set.
    flags = options._contexts.default.set_options(0)
    assert flags & SSL.OP_NO_COMPRESSION
    assert flags & SSL.OP_NO_TICKET
    assert flags & SSL.OP_CIPHER_SERVER_PREFERENCE


@pytest_twisted.ensureDeferred
async def test_redirectAndHSTSFlagsThroughMakeService(tmp_path: Path) -> None:
    """
    ``--redirect-to-https`` and ``--hsts`` as ``twistd connserver`` wires them:
    the TCP listener answers 308 to the HTTPS port (the status path exempt,
    no HSTS there); the TLS listener serves, with Strict-Transport-Security.
    """
    from connserver import tap

    files = defaultCertificate()
    (tmp_path / "index.html").write_bytes(b"hi\n")
    options = tap.Options()
    options.parseOptions(
        [
            "--path",
            str(tmp_path),
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--listen",
            f"ssl:0:interface=127.0.0.1:privateKey={files.privateKey}"
            f":certKey={files.certificate}",
            "--redirect-to-https",
            "--hsts",
            "600",
            "--status-path",
            "/status",
        ]
    )
    service = tap.makeService(options)
    service.startService()
    try:
        plainPort, tlsPort = (p.getHost().port for p in service.ports)  # type: ignore[attr-defined]
        client = await connect(plainPort, tls=False)
        client.write(
            b"GET /index.html?a=1 HTTP/1.1\r\nHost: localhost\r\n\r\n"
            b"GET /status?format=json HTTP/1.1\r\nHost: localhost\r\n"
            b"Connection: close\r\n\r\n"
        )
        redirect, status = parseResponses(
            await client.waitClosed(), [b"GET", b"GET"], eof=True
        )
        assert redirect.status == 308
        # Port 0: the number the TLS listener got.
        assert redirect.header(b"location") == (
            b"https://localhost:%d/index.html?a=1" % tlsPort
        )
        assert redirect.header(b"strict-transport-security") is None
        assert status.status == 200
        secure = await connect(
            tlsPort, tls=True, request=GET.replace(b"/ ", b"/index.html ")
        )
        [response] = parseResponses(await secure.waitClosed(), [b"GET"], eof=True)
        assert (response.status, response.body) == (200, b"hi\n")
        assert response.header(b"strict-transport-security") == b"max-age=600"
    finally:
        await bounded(service.stopService())


@pytest_twisted.ensureDeferred
async def test_redirectToPort443HasNoPortAndKeepsIPv6Brackets() -> None:
    server = await serve(HTTPSRedirect(hello, 443))
    try:
        client = await connect(server)
        client.write(
            b"GET /x?y HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"
            b"GET / HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n"
        )
        responses = parseResponses(await client.waitClosed(), [b"GET"] * 2, eof=True)
        assert [r.header(b"location") for r in responses] == [
            b"https://[::1]/x?y",
            b"https://example.test/",
        ]
    finally:
        await finish(server)
