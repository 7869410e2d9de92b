"""
Every example in ``examples/`` and every Python snippet the docs mark
runnable (an HTML comment ``<!-- runnable -->`` on the line before its
fence) runs as written, and none of them imports a private
``connserver._`` name.

A snippet that names port 8080 is a server: it runs with 8080 replaced by
a free port on 127.0.0.1, must answer a GET there, and must stop on
SIGTERM.  Any other runnable snippet must exit with status 0.  Every wait
is bounded.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._helpers import eventually
from .test_twistd import environment

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 20
MARKER = "<!-- runnable -->"
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
_FENCE_RE = re.compile(
    r"^" + re.escape(MARKER) + r"\n```python\n(.*?)^```", re.MULTILINE | re.DOTALL
)
_PRIVATE_IMPORT_RE = re.compile(r"\b(?:from|import)\s+connserver\._")
_PRIVATE_NAME_RE = re.compile(r"\bconnserver\._\w")


def runnableSnippets() -> list[tuple[str, str]]:
    """(``file:line``, code) of every snippet marked runnable."""
    snippets = []
    for path in DOCS:
        text = path.read_text()
        for match in _FENCE_RE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            snippets.append((f"{path.relative_to(ROOT)}:{line}", match.group(1)))
    return snippets


def freePort() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Process:
    """A subprocess whose output is collected by a thread."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            args,
            cwd=cwd,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def servingPort(self) -> int:
        """The port of the ``serving http://127.0.0.1:PORT/`` line."""

        def found() -> re.Match[str] | None:
            assert self.process.poll() is None, self.output
            return re.search(r"serving http://127\.0\.0\.1:(\d+)/", self.output)

        match = eventually(found, timeout=TIMEOUT, message="no serving line")
        return int(match.group(1))

    def stop(self) -> None:
        """SIGTERM: the reactor stops, the process exits cleanly."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(timeout=TIMEOUT)
        assert status in (0, -signal.SIGTERM), self.output
        assert "Traceback" not in self.output, self.output

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=TIMEOUT)
        self.reader.join(timeout=TIMEOUT)
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.kill()


def get(port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def getWhenListening(process: Process, port: int, path: str) -> tuple[int, bytes]:
    def attempt() -> tuple[int, bytes] | None:
        assert process.process.poll() is None, f"exited:\n{process.output}"
        try:
            return get(port, path)
        except ConnectionRefusedError:
            return None

    result: tuple[int, bytes] = eventually(
        attempt, timeout=TIMEOUT, interval=0.05, message=f"nothing on port {port}"
    )
    return result


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``PYTHONPATH`` entry with the plugin and the package (as test_twistd's)."""
    site = tmp_path_factory.mktemp("site")
    plugins = site / "twisted" / "plugins"
    plugins.mkdir(parents=True)
    shutil.copy(ROOT / "twisted" / "plugins" / "connserver_plugin.py", plugins)
    (site / "connserver").symlink_to(ROOT / "connserver")
    return site


def twistd() -> list[str]:
    """
    twistd, run with the ``site`` fixture's ``PYTHONPATH`` (see
    test_twistd.py), so that its plugin cache is never written into the
    source tree.
    """
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


# -- examples/ -----------------------------------------------------------------


EXAMPLES = {"embed.py", "klein_app.py", "site.tac", "websocket_echo.py"}


def test_everyExampleIsRunHere() -> None:
    shown = {p.name for p in (ROOT / "examples").iterdir() if p.is_file()}
    assert shown == EXAMPLES, "a new example needs its test in this module"


def test_embedExample(tmp_path: Path, processes: list[Process]) -> None:
    script = str(ROOT / "examples" / "embed.py")
    processes.append(Process([sys.executable, script, "0"], tmp_path, {}))
    port = processes[-1].servingPort()
    assert get(port, "/") == (200, b"hello\n")
    processes[-1].stop()


def test_kleinExample(tmp_path: Path, processes: list[Process]) -> None:
    pytest.importorskip("klein")
    script = str(ROOT / "examples" / "klein_app.py")
    processes.append(Process([sys.executable, script, "0"], tmp_path, {}))
    port = processes[-1].servingPort()
    assert get(port, "/hello/ada") == (200, b"hello, ada\n")
    processes[-1].stop()


def test_websocketEchoExample(
    tmp_path: Path, processes: list[Process], site: Path
) -> None:
    """The README's WebSocket line: its page, and an echo through ``/ws``."""
    pytest.importorskip("klein")
    pytest.importorskip("autobahn")
    from websockets.sync.client import connect

    (site / "examples").symlink_to(ROOT / "examples")
    args = [*twistd(), "-n", "--pidfile=", "connserver"]
    args += ["--listen", "tcp:0:interface=127.0.0.1"]
    args += ["--handler", "examples.websocket_echo:app"]
    processes.append(Process(args, tmp_path, environment(site)))
    port = processes[-1].servingPort()
    status, body = get(port, "/")
    assert status == 200 and b"/ws" in body
    with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=TIMEOUT) as ws:
        ws.send("hello")
        assert ws.recv(timeout=TIMEOUT) == "hello"
    processes[-1].stop()


def test_tacExample(tmp_path: Path, processes: list[Process], site: Path) -> None:
    """
    The .tac serves static files, a handler and a twisted.web resource,
    with the status page and an access log (created at start).
    """
    log = tmp_path / "access.log"
    tac = str(ROOT / "examples" / "site.tac")
    env = {**environment(site), "PORT": "0", "ACCESS_LOG": str(log)}
    processes.append(Process([*twistd(), "-ny", tac, "--pidfile="], tmp_path, env))
    port = processes[-1].servingPort()
    assert log.exists()
    status, body = get(port, "/")
    assert status == 200 and b"Static files from examples/www" in body
    assert get(port, "/hello") == (200, b"hello\n")
    status, body = get(port, "/web")
    assert status == 200 and b"twisted.web, served by connserver" in body
    assert get(port, "/status")[0] == 200
    processes[-1].stop()
    for path in ("/", "/hello", "/web", "/status"):
        assert f'"GET {path} HTTP/1.1" 200 ' in log.read_text()


def test_tacPortInUseIsOneLine(tmp_path: Path, site: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*twistd(), "-ny", str(ROOT / "examples" / "site.tac"), "--pidfile="],
            cwd=tmp_path,
            env={**environment(site), "PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert (
        f"connserver cannot listen on 127.0.0.1:{port}: Address already in use"
        in output
    )


# -- runnable snippets in the docs ------------------------------------------------


def test_snippetsAreMarked() -> None:
    """The marker is found (a typo in it would skip every snippet)."""
    places = [place for place, _ in runnableSnippets()]
    for page in ("README.md", "docs/cli.md", "docs/static.md", "docs/web.md"):
        assert any(place.startswith(page + ":") for place in places), page


@pytest.mark.parametrize(
    "place, code", runnableSnippets(), ids=[place for place, _ in runnableSnippets()]
)
def test_runnableSnippet(
    tmp_path: Path, processes: list[Process], place: str, code: str
) -> None:
    if "klein" in code:
        pytest.importorskip("klein")
    (tmp_path / "index.html").write_text("<p>snippet</p>\n")
    script = tmp_path / "snippet.py"
    if "8080" not in code:
        script.write_text(code)
        result = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert result.returncode == 0, f"{place}:\n{result.stdout}{result.stderr}"
        return
    port = freePort()
    script.write_text(code.replace("8080", str(port)))
    processes.append(Process([sys.executable, str(script)], tmp_path, {}))
    status, _ = getWhenListening(processes[-1], port, "/")
    assert status == 200, f"{place}:\n{processes[-1].output}"
    processes[-1].stop()


# -- no private names ----------------------------------------------------------------


def test_noPrivateImportsInDocsOrExamples() -> None:
    """
    Users copy what docs/ and examples/ show: they must use the public
    names (``connserver.X``), never ``connserver._...`` modules.
    """
    found = []
    for path in DOCS:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if _PRIVATE_IMPORT_RE.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
        for place, code in runnableSnippets():
            if _PRIVATE_NAME_RE.search(code):
                found.append(f"{place}: a private name in a runnable snippet")
    for path in sorted((ROOT / "examples").iterdir()):
        if path.is_file() and path.suffix in (".py", ".tac"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if _PRIVATE_NAME_RE.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


# -- the README's quick start -------------------------------------------------------


def quickStartCommands() -> list[str]:
    """The commands of the README's quick start: its ``sh`` fences."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```sh\n(.*?)\n```", section, re.MULTILINE | re.DOTALL)


def test_quickStartDoesNotListItsOwnPidFile(
    tmp_path: Path, processes: list[Process], site: Path
) -> None:
    """
    The quick start's server, run as written (on a free port of
    127.0.0.1), lists the directory it serves without a twistd.pid of its
    own in it.
    """
    commands = quickStartCommands()
    assert len(commands) == 2, "the serve command, then the test command"
    serve = commands[0].split("&&")[-1].split()
    assert serve[0] == ".venv/bin/twistd", serve
    (tmp_path / "hello.txt").write_text("hello\n")
    port = freePort()
    args = [*twistd(), *serve[1:], "--listen", f"tcp:{port}:interface=127.0.0.1"]
    processes.append(Process(args, tmp_path, environment(site)))
    status, body = getWhenListening(processes[-1], port, "/")
    assert status == 200 and b"hello.txt" in body
    assert b"twistd.pid" not in body
    assert not (tmp_path / "twistd.pid").exists()
    processes[-1].stop()
