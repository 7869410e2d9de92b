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
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

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

    def __init__(self, site: Path, cwd: Path, *args: str) -> None:
        self.process = subprocess.Popen(
            twistd(
                site,
                "-n",
                "--pidfile=",
                "connserver",
                "--listen",
                "tcp:0:interface=127.0.0.1",
                *args,
            ),
            cwd=cwd,
            env=environment(site),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.log: list[str] = []
        self.port = 0
        self.finished = False
        threading.Thread(target=self._read, daemon=True).start()

    def waitUntilListening(self) -> Server:
        match = self.waitFor(r"connserver listening on ipv4 127\.0\.0\.1:(\d+)")
        self.port = int(match.group(1))
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

    def start(*args: str) -> Server:
        servers.append(Server(site, tmp_path, *args))
        return servers[-1].waitUntilListening()

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
    ],
)
def test_usageErrors(site: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = run(site, tmp_path, "-n", "connserver", *args)
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    # twistd prints the usage, then one line: "twistd ...: <the error>".
    output = result.stdout + result.stderr
    assert message in output.rstrip().splitlines()[-1], output


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
    assert re.search(r'"GET /hello.txt HTTP/1.1" 200 13 .* conn=1 req=1 ', s.output())


def test_sigtermDrainsASlowResponse(
    tmp_path: Path, server: Callable[..., Server]
) -> None:
    """
    SIGTERM while a response is pending: new connections are refused, the
    response still completes, with Connection: close, and twistd exits.
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
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", s.port), timeout=TIMEOUT).close()
    assert s.process.poll() is None, "twistd waits for the in-flight response"
    release.touch()
    received = b""
    while chunk := client.recv(65536):
        received += chunk
    client.close()
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nconnection: close" in head.lower()
    assert body == b"slow done\n"
    s.checkExited()
