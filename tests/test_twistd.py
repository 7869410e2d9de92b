"""
``twistd connserver`` in a subprocess: help, usage errors, serving a
directory, and a graceful SIGTERM during a slow response.

The subprocess sees the plugin and the package through a private
``PYTHONPATH`` directory (a copy of the plugin file and a link to the
package), so that Twisted writes its ``dropin.cache`` there and never into
the source tree.  The server listens on ``tcp:0`` and the test reads the
port from the ``connserver listening on ...`` log line.  Every wait is
bounded.
"""

from __future__ import annotations

import http.client
import os
import queue
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from ._certs import CertificateFiles, makeCertificate
from ._helpers import eventually

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 20


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``PYTHONPATH`` entry holding the plugin, the package and the test app."""
    site = tmp_path_factory.mktemp("site")
    plugins = site / "twisted" / "plugins"
    plugins.mkdir(parents=True)
    shutil.copy(ROOT / "twisted" / "plugins" / "connserver_plugin.py", plugins)
    (site / "connserver").symlink_to(ROOT / "connserver")
    shutil.copy(ROOT / "tests" / "_slowapp.py", site / "cs_slowapp.py")
    return site


def twistd(site: Path, *args: str) -> list[str]:
    """The ``twistd`` of the running interpreter's environment."""
    script = Path(sys.executable).parent / "twistd"
    if script.exists():
        return [sys.executable, str(script), *args]
    return [
        sys.executable,
        "-c",
        "from twisted.scripts.twistd import run; run()",
        *args,
    ]


def environment(site: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(site)
    env.pop("PYTHONSTARTUP", None)
    return env


def run(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        twistd(site, *args),
        cwd=cwd,
        env=environment(site),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


class Server:
    """A running ``twistd -n connserver``; its log lines arrive on a queue."""

    def __init__(
        self,
        site: Path,
        cwd: Path,
        *args: str,
        plain: bool = True,
        prefix: Sequence[str] = (),
        **popen: Any,
    ) -> None:
        self.process = subprocess.Popen(
            [
                *prefix,
                *twistd(
                    site,
                    "-n",
                    "--pidfile=",
                    "connserver",
                    *(["--listen", "tcp:0:interface=127.0.0.1"] if plain else []),
                    *args,
                ),
            ],
            cwd=cwd,
            env=environment(site),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            **popen,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.log: list[str] = []
        self.port = 0
        #: Every listening port, in the order of the log lines.
        self.ports: list[int] = []
        self.finished = False
        threading.Thread(target=self._read, daemon=True).start()

    def waitUntilListening(self, count: int = 1) -> Server:
        """Wait for ``count`` listening ports (TCP first, then TLS)."""
        while len(self.ports) < count:
            match = self.waitFor(
                r"connserver listening on ipv4 (?:127\.0\.0\.1|0\.0\.0\.0):(\d+)"
            )
            self.ports.append(int(match.group(1)))
        self.port = self.ports[0]
        return self

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def waitFor(self, pattern: str) -> re.Match[str]:
        while True:
            try:
                line = self.lines.get(timeout=TIMEOUT)
            except queue.Empty:
                raise AssertionError(
                    f"no log line matching {pattern!r}:\n{''.join(self.log)}"
                ) from None
            if line is None:
                raise AssertionError(
                    f"twistd exited before {pattern!r}:\n{''.join(self.log)}"
                )
            self.log.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def stop(self) -> None:
        """SIGTERM, then check that twistd shut down cleanly."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.checkExited()

    def checkExited(self) -> None:
        # twistd re-raises the signal that stopped the reactor, so that its
        # exit status says SIGTERM: -15 here is the clean outcome.
        assert self.process.wait(timeout=TIMEOUT) in (0, -signal.SIGTERM)
        output = self.output()
        assert "Server Shut Down." in output
        assert "Traceback" not in output

    def output(self) -> str:
        """Every log line, once the process has exited."""
        if not self.finished:
            while (line := self.lines.get(timeout=TIMEOUT)) is not None:
                self.log.append(line)
            self.finished = True
        return "".join(self.log)


@pytest.fixture
def server(site: Path, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Starts servers (in ``tmp_path``) and kills any left running."""
    servers: list[Server] = []

    def start(*args: str, plain: bool = True, ports: int = 1, **popen: Any) -> Server:
        servers.append(Server(site, tmp_path, *args, plain=plain, **popen))
        return servers[-1].waitUntilListening(ports)

    yield start
    for s in servers:
        if s.process.poll() is None:
            s.process.kill()
            s.process.wait(timeout=TIMEOUT)
        if s.process.stdout is not None:
            s.process.stdout.close()


def test_help(site: Path, tmp_path: Path) -> None:
    result = run(site, tmp_path, "connserver", "--help")
    assert result.returncode == 0, result.stderr
    for flag in ("--listen", "--idle-timeout", "--max-requests-per-connection"):
        assert flag in result.stdout
    listing = run(site, tmp_path, "--help")
    assert "connserver" in listing.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--bogus"], "option --bogus not recognized", id="unknown-flag"),
        pytest.param(["--idle-timeout", "-1"], "--idle-timeout", id="negative-timeout"),
        pytest.param(["--path", "missing"], "--path 'missing'", id="unreadable-path"),
        pytest.param(["--listen", "nope:1"], "Unknown endpoint type", id="endpoint"),
        pytest.param(
            ["--handler", "no_such_module:app"], "cannot import", id="handler"
        ),
        pytest.param(
            ["--listen", "tcp:99999"], "port 99999 is out of range", id="port-range"
        ),
        pytest.param(
            ["--listen", "tcp:0:interface=nosuchhost.invalid"],
            "the interface name 'nosuchhost.invalid' does not resolve",
            id="unresolvable-interface",
        ),
        pytest.param(
            ["--status-path", "/"],
            "--status-path '/': the status page cannot take the whole site",
            id="status-path-root",
        ),
        pytest.param(
            ["--metrics-path", "/"],
            "--metrics-path '/': the metrics cannot take the whole site",
            id="metrics-path-root",
        ),
    ],
)
def test_usageErrors(site: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = run(site, tmp_path, "-n", "connserver", *args)
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    # twistd prints the usage, then one line: "twistd ...: <the error>".
    # The usage is a pointer to --help, not the 200 lines of it.
    output = result.stdout + result.stderr
    assert message in output.rstrip().splitlines()[-1], output
    assert "Run 'twistd connserver --help' for every flag." in output
    assert len(output.splitlines()) <= 5, output


def test_servesADirectory(tmp_path: Path, server: Callable[..., Server]) -> None:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "hello.txt").write_bytes(b"hello, world\n")
    s = server("--path", "www", "--access-log", "-", "--status-path", "/st")
    connection = http.client.HTTPConnection("127.0.0.1", s.port, timeout=TIMEOUT)
    connection.request("GET", "/hello.txt")
    response = connection.getresponse()
    assert (response.status, response.read()) == (200, b"hello, world\n")
    connection.request("GET", "/st?format=json")  # same connection: keep-alive
    response = connection.getresponse()
    assert response.status == 200 and b'"accepted": 1' in response.read()
    connection.close()
    s.stop()
    output = s.output()
    assert re.search(r'"GET /hello.txt HTTP/1.1" 200 13 .* conn=1 req=1 ', output)
    # One line a person can click, naming what is served.
    assert f"serving http://127.0.0.1:{s.port}/ (static: {tmp_path / 'www'})" in output
    # The keep-alive connection's ordinary end (the client closing) writes
    # no close line by default (--log-closes abnormal).
    assert '"-" - 0 ' not in output


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> CertificateFiles:
    return makeCertificate(tmp_path_factory.mktemp("tls"))


def sslListen(files: CertificateFiles) -> str:
    """The README's first TLS spelling, on 127.0.0.1 port 0."""
    return (
        f"ssl:0:interface=127.0.0.1:privateKey={files.privateKey}"
        f":certKey={files.certificate}"
    )


def tlsClient(
    certificate: CertificateFiles | None,
    port: int,
    alpn: Sequence[str] | None = ("h2", "http/1.1"),
) -> ssl.SSLSocket:
    """Python's ssl, offering ALPN as browsers do; verifying if given a certificate."""
    if certificate is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=str(certificate.certificate))
    if alpn is not None:
        context.set_alpn_protocols(list(alpn))
    raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    return context.wrap_socket(raw, server_hostname="localhost")


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_sigtermDrainsASlowResponse(
    tmp_path: Path,
    server: Callable[..., Server],
    certificate: CertificateFiles,
    transport: str,
) -> None:
    """
    SIGTERM while a response is pending: new connections are refused, the
    response still completes, with Connection: close, and twistd exits.
    Over TLS the end of the response is a close_notify (a bare FIN would
    raise SSLEOFError in recv).
    """
    release = tmp_path / "release"
    args = ["--handler", "cs_slowapp:app", "--drain-timeout", "15"]
    if transport == "tls":
        s = server(*args, "--listen", sslListen(certificate), plain=False)
        client: socket.socket = tlsClient(certificate, s.port)
        assert client.selected_alpn_protocol() == "http/1.1"  # type: ignore[attr-defined]
    else:
        s = server(*args)
        client = socket.create_connection(("127.0.0.1", s.port), timeout=TIMEOUT)
    client.sendall(
        b"GET /slow?release=" + str(release).encode() + b" HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    s.waitFor("slow request waiting")
    s.process.send_signal(signal.SIGTERM)
    s.waitFor("stopped accepting; draining")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", s.port), timeout=TIMEOUT).close()
    assert s.process.poll() is None, "twistd waits for the in-flight response"
    finishSlowResponse(client, release)
    s.checkExited()


def test_secondSigtermDuringTheDrainIsOneLine(
    tmp_path: Path, server: Callable[..., Server]
) -> None:
    """
    A second SIGTERM (or SIGINT) while a response drains: one line, no
    ReactorNotRunning traceback, and the response still completes.
    """
    release = tmp_path / "release"
    s = server("--handler", "cs_slowapp:app", "--drain-timeout", "15")
    client = socket.create_connection(("127.0.0.1", s.port), timeout=TIMEOUT)
    client.sendall(
        b"GET /slow?release=" + str(release).encode() + b" HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    s.waitFor("slow request waiting")
    s.process.send_signal(signal.SIGTERM)
    s.waitFor("stopped accepting; draining")
    s.process.send_signal(signal.SIGTERM)
    s.waitFor(r"SIGTERM again: already stopping \(the drain ends within 15 s\)")
    s.process.send_signal(signal.SIGINT)
    s.waitFor("SIGINT again: already stopping")
    finishSlowResponse(client, release)
    s.checkExited()
    assert "ReactorNotRunning" not in s.output()


# -- TLS through twistd ------------------------------------------------------------


def readResponse(client: socket.socket) -> bytes:
    """One Content-Length response from a persistent connection."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = client.recv(65536)
        assert chunk, received
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    assert match is not None, head
    while len(body) < int(match.group(1)):
        chunk = client.recv(65536)
        assert chunk, received
        body += chunk
    return head + b"\r\n\r\n" + body


def requestAndCloseLines(log: str) -> tuple[list[str], list[str]]:
    """
    An access log's request lines, and its close lines (a connection that
    ended without a final response carrying its reason: ``"-" - 0``).
    """
    lines = log.splitlines()
    closes = [line for line in lines if '] "-" - 0 ' in line]
    return [line for line in lines if line not in closes], closes


def finishSlowResponse(client: socket.socket, release: Path) -> None:
    """
    Let tests/_slowapp.py's waiting slow response finish (touch ``release``)
    and check that it completed, whole, with ``Connection: close``: what a
    drain owes an in-flight response.
    """
    release.touch()
    received = b""
    while chunk := client.recv(65536):
        received += chunk
    client.close()
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nconnection: close" in head.lower()
    assert body == b"slow done\n"


@pytest.mark.parametrize("spelling", ["listen-ssl", "https"])
def test_tlsSpellingsWorkWithRealClients(
    tmp_path: Path,
    server: Callable[..., Server],
    certificate: CertificateFiles,
    spelling: str,
) -> None:
    """
    Both TLS spellings of the README, with Python's ssl (ALPN h2, http/1.1
    and none), curl with its defaults and openssl s_client: http/1.1 is
    negotiated; an h2-only offer gets the no_application_protocol alert.
    """
    (tmp_path / "index.html").write_bytes(b"hello over TLS\n")
    if spelling == "https":
        s = server(
            "--https",
            "0",
            "--certificate",
            str(certificate.certificate),
            "--privkey",
            str(certificate.privateKey),
            ports=2,
        )
        port = s.ports[1]
    else:
        s = server("--listen", sslListen(certificate), plain=False)
        port = s.port
    with tlsClient(certificate, port) as client:
        assert client.selected_alpn_protocol() == "http/1.1"
        for _ in range(2):  # keep-alive
            client.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            response = readResponse(client)
            assert response.startswith(b"HTTP/1.1 200 ")
            assert response.endswith(b"\r\n\r\nhello over TLS\n")
    with tlsClient(certificate, port, alpn=None) as client:
        assert client.selected_alpn_protocol() is None
        client.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert readResponse(client).startswith(b"HTTP/1.1 200 ")
    with pytest.raises(ssl.SSLError, match=r"(?i)no.application.protocol"):
        tlsClient(certificate, port, alpn=["h2"]).close()
    curl = shutil.which("curl")
    if curl is not None:
        result = subprocess.run(
            [
                curl,
                "-sS",
                "--cacert",
                str(certificate.certificate),
                "--resolve",
                f"localhost:{port}:127.0.0.1",
                "-w",
                "\n%{http_code} %{http_version}",
                f"https://localhost:{port}/",
            ],
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"hello over TLS\n\n200 1.1"
    openssl = shutil.which("openssl")
    if openssl is not None:
        result = subprocess.run(
            [
                openssl,
                "s_client",
                "-connect",
                f"127.0.0.1:{port}",
                "-servername",
                "localhost",
                "-alpn",
                "h2,http/1.1",
            ],
            input=b"",
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert b"ALPN protocol: http/1.1" in result.stdout, result.stdout
    s.stop()
    # The TLS listener says so, and gives its https:// URL.
    output = s.output()
    assert re.search(rf"connserver listening on ipv4 [\d.]+:{port} \(https\)\n", output)
    assert f"serving https://127.0.0.1:{port}/ (static: {tmp_path})\n" in output


def installCertificate(files: CertificateFiles, live: Path) -> None:
    """Overwrite ``live``'s files as certbot's renewal does."""
    shutil.copy(files.certificate, live / "cert.pem")
    shutil.copy(files.privateKey, live / "key.pem")


def servedCertificate(port: int) -> bytes:
    with tlsClient(None, port) as client:
        assert client.selected_alpn_protocol() == "http/1.1"
        der = client.getpeercert(binary_form=True)
        assert der is not None
        return der


def derOf(files: CertificateFiles) -> bytes:
    return ssl.PEM_cert_to_DER_cert(files.certificatePEM.decode("ascii"))


def test_sighupReloadsTheCertificate(
    tmp_path: Path, server: Callable[..., Server]
) -> None:
    """
    A certbot renewal: the files are overwritten, SIGHUP; new handshakes
    get the new certificate, a connection opened before keeps working; a
    broken file then is one log line and the last good certificate stays.
    """
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    live = tmp_path / "live"
    live.mkdir()
    first = makeCertificate(tmp_path / "a")
    second = makeCertificate(tmp_path / "b")
    installCertificate(first, live)
    s = server(
        "--https",
        "0",
        "-c",
        str(live / "cert.pem"),
        "-k",
        str(live / "key.pem"),
        ports=2,
    )
    port = s.ports[1]
    assert servedCertificate(port) == derOf(first)
    before = tlsClient(first, port)
    before.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert readResponse(before).startswith(b"HTTP/1.1 ")
    installCertificate(second, live)
    s.process.send_signal(signal.SIGHUP)
    s.waitFor("TLS certificates reloaded")
    assert servedCertificate(port) == derOf(second)
    # Existing connections are untouched.
    before.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert readResponse(before).startswith(b"HTTP/1.1 ")
    before.close()
    (live / "cert.pem").write_text("-----BEGIN CERTIFICATE-----\ngarbage\n")
    s.process.send_signal(signal.SIGHUP)
    s.waitFor("TLS reload failed")
    assert servedCertificate(port) == derOf(second)
    assert s.process.poll() is None, "SIGHUP does not end the process"
    s.stop()
    output = s.output()
    failures = [line for line in output.splitlines() if "TLS reload failed" in line]
    assert len(failures) == 1
    assert str(live / "cert.pem") in failures[0]


def test_certificateErrorsAreOneLineAndExitOne(
    site: Path, tmp_path: Path, certificate: CertificateFiles
) -> None:
    """Each problem: one line naming the file, exit status 1, no traceback."""
    other = makeCertificate(tmp_path)  # cert.pem, key.pem of another key
    encrypted = tmp_path / "enc"
    encrypted.mkdir()
    locked = makeCertificate(encrypted, passphrase=b"secret")
    cases = [
        (["-c", str(tmp_path / "missing.pem")], str(tmp_path / "missing.pem")),
        (
            ["-c", str(certificate.certificate), "-k", str(tmp_path / "nokey.pem")],
            str(tmp_path / "nokey.pem"),
        ),
        (
            ["-c", str(certificate.certificate), "-k", str(other.privateKey)],
            "does not match",
        ),
        (
            ["-c", str(locked.certificate), "-k", str(locked.privateKey)],
            "passphrase",
        ),
    ]
    # Unreadable: a directory stands in for a file without read permission
    # (the tests may run as root, who reads everything).
    cases.append((["-c", str(encrypted)], str(encrypted)))
    processes = [
        subprocess.Popen(
            twistd(site, "-n", "--pidfile=", "connserver", "--https", "0", *args),
            cwd=tmp_path,
            env=environment(site),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for args, _ in cases
    ]
    for process, (args, message) in zip(processes, cases, strict=True):
        output, _ = process.communicate(timeout=TIMEOUT)
        assert process.returncode == 1, output
        assert "Traceback" not in output
        last = output.rstrip().splitlines()[-1]
        assert message in last, last
        assert args[-1] in last, last


# -- Signals and startup errors --------------------------------------------------


def get(port: int, path: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_sigusr1ReopensTheAccessLog(
    tmp_path: Path, server: Callable[..., Server]
) -> None:
    """
    logrotate's way: rename the file, SIGUSR1; new lines go to a new file at
    the path, none is lost, and the server keeps running.
    """
    (tmp_path / "index.html").write_bytes(b"hi\n")
    log = tmp_path / "access.log"
    rotated = tmp_path / "access.log.1"
    s = server("--access-log", str(log), "--log-closes", "all")
    assert get(s.port, "/?before=0") == 200
    eventually(  # written within a second
        lambda: log.exists() and log.read_text(),
        timeout=TIMEOUT,
        message="no access log line",
    )
    for n in (1, 2):
        assert get(s.port, f"/?before={n}") == 200
    log.rename(rotated)  # the last lines are most likely still buffered
    s.process.send_signal(signal.SIGUSR1)
    s.waitFor("Access log .* reopened")
    assert log.exists(), "the new file is created on reopen"
    for n in range(2):
        assert get(s.port, f"/?after={n}") == 200
    s.process.send_signal(signal.SIGUSR1)  # a second rotation without a rename
    s.waitFor("Access log .* reopened")
    assert get(s.port, "/?after=2") == 200
    assert s.process.poll() is None, "SIGUSR1 does not end the process"
    s.stop()
    old, new = rotated.read_text(), log.read_text()
    # Six requests, and one close line for each of their six connections
    # (each client closed after its request): none lost either.
    requests, closes = requestAndCloseLines(old + new)
    assert len(requests) == 6, old + new
    connections = {line.split(" conn=")[1].split()[0] for line in closes}
    assert len(closes) == len(connections) == 6, old + new
    for n in range(3):
        assert f"GET /?before={n} " in old + new
    for n in range(3):
        assert f"GET /?after={n} " in new
        assert f"after={n}" not in old


def test_sigusr1AndSighupWithoutAnythingToDo(server: Callable[..., Server]) -> None:
    """No TLS and the access log on stdout: each signal is one log line."""
    s = server("--access-log", "-")
    # An answer means the services have started (the handlers are in place).
    assert get(s.port, "/") in (200, 403, 404)
    s.process.send_signal(signal.SIGHUP)
    s.waitFor("SIGHUP: nothing to reload")
    s.process.send_signal(signal.SIGUSR1)
    s.waitFor("nothing to reopen")
    assert get(s.port, "/") in (200, 403, 404)
    assert s.process.poll() is None, "neither signal ends the process"
    s.stop()


def test_sigusr1WithoutAccessLog(server: Callable[..., Server]) -> None:
    s = server()
    assert get(s.port, "/") in (200, 403, 404)  # the services have started
    s.process.send_signal(signal.SIGUSR1)
    s.waitFor("no access log file to reopen")
    assert s.process.poll() is None
    s.stop()


def _withoutBindService() -> list[str]:
    """A command prefix that takes CAP_NET_BIND_SERVICE away (even from root)."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0:
        return []
    if setpriv is None:
        pytest.skip("needs setpriv (util-linux) to bind without the capability")
    return [
        setpriv,
        "--bounding-set=-net_bind_service",
        "--inh-caps=-net_bind_service",
    ]


def test_startupErrorsAreOneLineAndExitOne(site: Path, tmp_path: Path) -> None:
    """
    A port in use, an address no interface has, a unix socket in a missing
    directory, a port below 1024 without the privilege: one line naming the
    listener and the reason, exit status 1, no traceback.
    """
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    unprivileged = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")
    if unprivileged.exists() and int(unprivileged.read_text()) <= 81:
        lowPort = None
    else:
        lowPort = 81
    cases: list[tuple[list[str], str, str]] = [
        ([], f"tcp:{port}:interface=127.0.0.1", "Address already in use"),
        ([], "tcp:0:interface=192.0.2.1", "Cannot assign requested address"),
        ([], f"unix:{tmp_path / 'missing' / 'sock'}", "No such file or directory"),
    ]
    if lowPort is not None:
        cases.append(
            (
                _withoutBindService(),
                f"tcp:{lowPort}:interface=127.0.0.1",
                "Permission denied",
            )
        )
    try:
        processes = [
            subprocess.Popen(
                [
                    *prefix,
                    *twistd(site, "-n", "--pidfile=", "connserver", "--listen", where),
                ],
                cwd=tmp_path,
                env=environment(site),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for prefix, where, _ in cases
        ]
        for process, (_, where, reason) in zip(processes, cases, strict=True):
            output, _ = process.communicate(timeout=TIMEOUT)
            assert process.returncode == 1, output
            assert "Traceback" not in output
            lines = [line for line in output.splitlines() if "cannot listen" in line]
            assert len(lines) == 1, output
            assert f"cannot listen on {where}: {reason}" in lines[0], output
            assert lines[0] == output.rstrip().splitlines()[-1]
    finally:
        busy.close()


def test_systemdSocketWithoutNames(
    tmp_path: Path, server: Callable[..., Server]
) -> None:
    """
    Socket activation without LISTEN_FDNAMES (systemd before 227,
    systemd-socket-activate without --fdname): index=0 still adopts fd 3,
    where Twisted's parser found no socket ("list index out of range").
    """
    (tmp_path / "hello.txt").write_text("hello\n")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        s = server(
            "--listen",
            "systemd:domain=INET:index=0",
            plain=False,
            # sh's $$ is the pid twistd will have after exec.
            prefix=["sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"', "sh"],
            preexec_fn=lambda: os.dup2(listener.fileno(), 3),
            pass_fds=(3,),
        )
        assert s.port == port
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
        connection.request("GET", "/hello.txt")
        assert connection.getresponse().read() == b"hello\n"
        connection.close()
        s.stop()
    finally:
        listener.close()
