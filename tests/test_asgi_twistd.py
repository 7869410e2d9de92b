"""
``twistd connserver --asgi`` in a subprocess (the asyncio reactor cannot
be installed in the test process, which runs the default one): Starlette
served end to end (lifespan, streaming, a disconnect, a WebSocket echo),
uvicorn's conformance expectations as black-box cases, and the bad apps.
Every wait is bounded; servers listen on 127.0.0.1, port 0.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ._helpers import eventually
from .test_twistd import ROOT, TIMEOUT, Server, run

pytest.importorskip("starlette")
pytest.importorskip("wsproto")

pytestmark = pytest.mark.slow

Start = Callable[..., Server]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin, the package and the test apps, on a private path."""
    site = tmp_path_factory.mktemp("asgisite")
    plugins = site / "twisted" / "plugins"
    plugins.mkdir(parents=True)
    shutil.copy(ROOT / "twisted" / "plugins" / "connserver_plugin.py", plugins)
    (site / "connserver").symlink_to(ROOT / "connserver")
    shutil.copy(ROOT / "tests" / "_asgiapp.py", site / "cs_asgiapp.py")
    return site


@pytest.fixture
def server(site: Path, tmp_path: Path) -> Iterator[Start]:
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


def get(port: int, path: str, **kwargs: object) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        connection.request(kwargs.pop("method", "GET"), path, **kwargs)  # type: ignore[arg-type]
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes; everything the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        s.sendall(data)
        parts = []
        try:
            while chunk := s.recv(65536):
                parts.append(chunk)
        except ConnectionResetError:
            parts.append(b"<reset>")
        return b"".join(parts)


def waitForFile(path: Path) -> str:
    deadline = time.monotonic() + TIMEOUT
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)
    return path.read_text()


def test_starlette(server: Start, tmp_path: Path) -> None:
    """Lifespan startup (with state) and shutdown, root_path, streaming."""
    s = server("--asgi", "cs_asgiapp:app", "--root-path", "/api")
    assert "asyncioreactor.AsyncioSelectorReactor" in "".join(s.log)
    assert (tmp_path / "startup").exists()
    # The proxy in front took /api off; the app sees it again (uvicorn does).
    status, _, body = get(s.port, "/hello")
    assert (status, body) == (200, b"hello from lifespan /api/hello /api")
    status, headers, body = get(s.port, "/stream")
    assert status == 200 and headers["Transfer-Encoding"] == "chunked"
    assert body == b"".join(f"part {i}\n".encode() for i in range(5))
    assert not (tmp_path / "shutdown").exists()
    s.stop()
    assert (tmp_path / "shutdown").exists()


def test_disconnectDuringLongResponse(server: Start, tmp_path: Path) -> None:
    s = server("--asgi", "cs_asgiapp:app")
    with socket.create_connection(("127.0.0.1", s.port), timeout=TIMEOUT) as c:
        c.sendall(b"GET /long HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.recv(100).startswith(b"HTTP/1.1 200 OK")
    assert int(waitForFile(tmp_path / "saw-disconnect")) < 2000
    s.stop()


def test_requestBodyInParts(server: Start) -> None:
    """A chunked body arriving in parts; more_body until the last."""
    s = server("--asgi", "cs_asgiapp:app")
    with socket.create_connection(("127.0.0.1", s.port), timeout=TIMEOUT) as c:
        c.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n5\r\nhello\r\n"
        )
        time.sleep(0.2)
        c.sendall(b"6\r\n world\r\n")
        time.sleep(0.2)
        c.sendall(b"0\r\n\r\n")
        answer = b"".join(iter(lambda: c.recv(65536), b""))
    assert answer.endswith(b"11 bytes in 3 parts") or answer.endswith(
        b"11 bytes in 2 parts"
    ), answer
    status, _, body = get(s.port, "/echo", method="POST", body=b"")
    assert (status, body) == (200, b"0 bytes in 0 parts")
    big = b"y" * 1_000_000
    status, _, body = get(s.port, "/echo", method="POST", body=big)
    assert status == 200 and body.startswith(b"1000000 bytes in ")
    s.stop()


def test_hundredFieldsAndLimits(server: Start) -> None:
    """100 fields reach the app; 101 are over connserver's maxHeaderCount."""
    s = server("--asgi", "cs_asgiapp:app")
    fields = "".join(f"X-Field-{i}: {i}\r\n" for i in range(98))
    head = f"GET /fields HTTP/1.1\r\nHost: x\r\n{fields}Connection: close\r\n"
    answer = exchange(s.port, f"{head}\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"100"), answer
    answer = exchange(s.port, f"{head}X-One-More: 1\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 431"), answer
    s.stop()


def test_http10CloseDelimited(server: Start) -> None:
    s = server("--asgi", "cs_asgiapp:app")
    answer = exchange(s.port, b"GET /stream HTTP/1.0\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Content-Length" not in head and b"Transfer-Encoding" not in head
    assert body == b"".join(f"part {i}\n".encode() for i in range(5))
    s.stop()


def test_webSocketEcho(server: Start, tmp_path: Path) -> None:
    from websockets.exceptions import ConnectionClosedOK, InvalidStatus
    from websockets.sync.client import connect

    s = server("--asgi", "cs_asgiapp:app")
    url = f"ws://127.0.0.1:{s.port}/ws"
    with connect(url, subprotocols=["echo"], open_timeout=TIMEOUT) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "echo"
        for text in ("hello", "x" * 70000, "é"):
            ws.send(text)
            assert ws.recv(timeout=TIMEOUT) == text
    assert waitForFile(tmp_path / "ws-disconnect") == "1000"
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{s.port}/refuse", open_timeout=TIMEOUT)
    assert refused.value.response.status_code == 403
    # What an app sends and closes right after accepting reaches the client.
    with connect(f"ws://127.0.0.1:{s.port}/welcome", open_timeout=TIMEOUT) as ws:
        assert ws.recv(timeout=TIMEOUT) == "welcome"
        with pytest.raises(ConnectionClosedOK):
            ws.recv(timeout=TIMEOUT)
        assert ws.close_code == 1000
    s.stop()


@pytest.mark.parametrize(
    ("path", "expected", "logged"),
    [
        ("/no-start", b"HTTP/1.1 500", "returned without sending http.response.start"),
        ("/raise", b"HTTP/1.1 500", "ValueError: the app failed"),
        ("/two-starts", b"HTTP/1.1 500", "a second http.response.start"),
        ("/after-end", b"HTTP/1.1 200", "http.response.body after the response ended"),
        ("/raise-streaming", b"HTTP/1.1 200", "ValueError: failed mid-body"),
    ],
)
def test_badApps(server: Start, path: str, expected: bytes, logged: str) -> None:
    s = server("--asgi", "cs_asgiapp:bad")
    answer = exchange(
        s.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    assert answer.startswith(expected), answer
    if path == "/raise-streaming":
        assert answer.endswith(b"<reset>")  # aborted, never a clean end
    s.process.terminate()
    output = s.output()
    assert output.count(logged) == 1, output
    assert "does not support lifespan" in output


def test_appConnectionClose(server: Start) -> None:
    s = server("--asgi", "cs_asgiapp:bad")
    with socket.create_connection(("127.0.0.1", s.port), timeout=TIMEOUT) as c:
        c.sendall(b"GET /close HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b"".join(iter(lambda: c.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in answer
    assert answer.endswith(b"ok")
    s.stop()


def test_aClientThatClosesItsSideHasGone(server: Start, tmp_path: Path) -> None:
    """
    A FIN (curl at its timeout, a browser's abort, a proxy's close) is the
    client going, as uvicorn and Daphne take it: the app sees
    ``http.disconnect``.  A response it still sends is written; one it never
    sends is nobody's error.  An app that began its response before it
    first waited (a synchronous answer to connserver) hears it too.
    """
    s = server("--asgi", "cs_asgiapp:hangups")
    answers = {}
    for path in ("/answer", "/silent", "/streaming"):
        with socket.create_connection(("127.0.0.1", s.port), timeout=TIMEOUT) as c:
            c.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
            c.shutdown(socket.SHUT_WR)
            answers[path] = b"".join(iter(lambda: c.recv(65536), b""))
    assert answers["/answer"].startswith(b"HTTP/1.1 200 OK\r\n")
    assert answers["/answer"].endswith(b"\r\n\r\nsaw http.disconnect")
    assert answers["/silent"] == b""
    streamed = answers["/streaming"]
    assert streamed.startswith(b"HTTP/1.1 200 OK\r\n")
    assert streamed.endswith(b"6\r\nfirst \r\n13\r\nsaw http.disconnect\r\n0\r\n\r\n")
    for name in ("hungup-answer", "hungup-silent", "hungup-streaming"):
        assert (tmp_path / name).read_text() == "http.disconnect"
    s.stop()
    assert "handler failed" not in s.output()


def test_failedStartup(site: Path, tmp_path: Path) -> None:
    result = run(
        site,
        tmp_path,
        "-n",
        "--pidfile=",
        "connserver",
        "--asgi",
        "cs_asgiapp:failingStartup",
        "--listen",
        "tcp:0:interface=127.0.0.1",
    )
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "connserver: the ASGI app's startup failed: no database" in output
    assert "Traceback" not in output


def test_failedStartupWithATracebackSaysItOnce(site: Path, tmp_path: Path) -> None:
    """Starlette sends the whole traceback: logged once, then one line."""
    result = run(
        site,
        tmp_path,
        "-n",
        "--pidfile=",
        "connserver",
        "--asgi",
        "cs_asgiapp:brokenStartup",
        "--listen",
        "tcp:0:interface=127.0.0.1",
    )
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert output.count("Traceback") == 1, output
    assert (
        "connserver: the ASGI app's startup failed: "
        "RuntimeError: database unreachable" in output
    )
    assert "listening on" not in output  # The startup comes first.
    assert "Task was destroyed" not in output


def test_aPortInUseAfterTheStartupRunsTheShutdown(site: Path, tmp_path: Path) -> None:
    """The app's startup ran, then the server could not listen: its shutdown runs."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(
            site,
            tmp_path,
            "-n",
            "--pidfile=",
            "connserver",
            "--asgi",
            "cs_asgiapp:app",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
        )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert f"connserver cannot listen on tcp:{port}" in output
    assert (tmp_path / "startup").exists() and (tmp_path / "shutdown").exists()
    assert "Traceback" not in output and "Task was destroyed" not in output


@pytest.mark.slow
def test_daemonizedStartupRunsInTheServingProcess(site: Path, tmp_path: Path) -> None:
    """
    Without ``-n`` twistd forks into the background: the lifespan startup
    (and asyncio's thread pool it starts) must be the serving process's,
    or a request's ``asyncio.to_thread`` would wait forever.
    """
    log, pidfile = tmp_path / "twistd.log", tmp_path / "twistd.pid"
    result = run(
        site,
        tmp_path,
        f"--pidfile={pidfile}",
        f"--logfile={log}",
        "connserver",
        "--asgi",
        "cs_asgiapp:threaded",
        "--listen",
        "tcp:0:interface=127.0.0.1",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    pid = int(pidfile.read_text())
    try:
        match = eventually(
            lambda: re.search(r"listening on ipv4 127\.0\.0\.1:(\d+)", log.read_text())
        )
        status, _, body = get(int(match.group(1)), "/pids")
        assert status == 200
        assert body.decode().split() == [str(pid)] * 3
    finally:
        os.kill(pid, signal.SIGTERM)
        try:
            eventually(lambda: not pidfile.exists())
        except AssertionError:
            os.kill(pid, signal.SIGKILL)  # Never leave a daemon behind.
            raise
    assert "Traceback" not in log.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--asgi", "cs_asgiapp"], "expected MODULE:ATTRIBUTE"),
        (["--asgi", "cs_asgiapp:nothing"], "has no attribute nothing"),
        (["--asgi", "cs_asgiapp:app", "--handler", "x:y"], "not both"),
        (
            ["--asgi", "cs_asgiapp:app", "--wsgi", "cs_asgiapp:wsgiHello"],
            "use --asgi or --wsgi, not both",
        ),
        (
            ["--wsgi", "cs_asgiapp:wsgiHello", "--asgi", "cs_asgiapp:app"],
            "use --asgi or --wsgi, not both",
        ),
        (
            ["--asgi", "cs_asgiapp:app", "--wsgi-threads", "4"],
            "--wsgi-threads applies to --wsgi, not to --asgi",
        ),
        (
            ["--asgi", "cs_asgiapp:app", "--follow-symlinks"],
            "--follow-symlinks applies to --path (static files), not to --asgi",
        ),
        (
            ["--asgi", "cs_asgiapp:createApp"],
            "cannot be called with 3 arguments: an application factory?",
        ),
        (
            ["--asgi", "cs_asgiapp:wsgiHello"],
            "not an ASGI 3 application, it cannot be called with 3 arguments: "
            "a WSGI application? Serve it with --wsgi",
        ),
        (["--root-path", "/api"], "--root-path applies to --asgi"),
        (["--reactor", "poll", "--asgi", "cs_asgiapp:app"], None),
    ],
)
def test_usageErrors(
    site: Path, tmp_path: Path, args: list[str], message: str | None
) -> None:
    if message is None:
        # twistd's own --reactor comes before the subcommand.
        result = run(site, tmp_path, "--reactor", "poll", "connserver", *args[2:])
        message = "--asgi runs on Twisted's asyncio reactor"
    else:
        result = run(site, tmp_path, "connserver", *args)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_workersReloadAndDrain(server: Start, tmp_path: Path) -> None:
    """Each worker runs the asyncio reactor and its own lifespan; SIGHUP replaces them."""
    s = server("--asgi", "cs_asgiapp:app", "--workers", "2")
    assert get(s.port, "/hello")[0] == 200
    s.process.send_signal(signal.SIGHUP)
    s.waitFor("reload done: every worker replaced")
    status, _, body = get(s.port, "/hello")
    assert (status, body) == (200, b"hello from lifespan /hello ")
    # Not s.stop(): at the parent's SIGTERM a worker on the asyncio reactor
    # may log accept()'s EINVAL on the shared socket the parent shut (a race
    # of the supervisor's, not of --asgi; see the ASGI report).
    s.process.send_signal(signal.SIGTERM)
    assert s.process.wait(timeout=TIMEOUT) in (0, -signal.SIGTERM)
    assert "Server Shut Down." in s.output()
    assert (tmp_path / "shutdown").exists()
