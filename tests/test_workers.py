"""
``twistd connserver --workers N`` in a subprocess: a killed worker comes
back, SIGHUP replaces every worker under load with no failed request,
SIGTERM lets an in-flight response finish, the status page and the metrics
sum every worker, and a worker that cannot start stops the server with one
line.  Every wait is bounded (``TIMEOUT`` per step).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ._certs import CertificateFiles, makeCertificate
from ._helpers import eventually
from .test_twistd import (
    TIMEOUT,
    Server,
    environment,
    finishSlowResponse,
    readResponse,
    requestAndCloseLines,
    server,
    site,
    tlsClient,
    twistd,
)

pytestmark = pytest.mark.slow

__all__ = ["server", "site"]  # fixtures, used by name

READY = r"connserver: worker (\d+) \(pid (\d+)\) ready"


def waitReady(s: Server, count: int) -> dict[int, int]:
    """Wait for ``count`` workers to report ready; slot -> pid."""
    pids: dict[int, int] = {}
    while len(pids) < count:
        match = s.waitFor(READY)
        pids[int(match.group(1))] = int(match.group(2))
    return pids


def get(port: int, path: str, timeout: float = TIMEOUT) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def statusJSON(port: int) -> dict[str, object]:
    status, body = get(port, "/st?format=json")
    assert status == 200
    data: dict[str, object] = json.loads(body)
    return data


def pidsServing(port: int, wanted: set[int]) -> set[int]:
    """Ask /pid until every pid of ``wanted`` answered (bounded)."""
    seen: set[int] = set()

    def askOnce() -> bool:
        if wanted <= seen:
            return True
        status, body = get(port, "/pid")
        assert status == 200
        seen.add(int(body))
        return False

    eventually(askOnce, timeout=TIMEOUT, interval=0, message=lambda: (seen, wanted))
    return seen


def test_aKilledWorkerIsRestarted(server: Callable[..., Server]) -> None:
    s = server("--handler", "cs_slowapp:app", "--workers", "2")
    pids = waitReady(s, 2)
    pidsServing(s.port, set(pids.values()))
    os.kill(pids[1], signal.SIGKILL)
    s.waitFor(rf"worker 1 \(pid {pids[1]}\) died \(killed by SIGKILL\)")
    s.waitFor(r"restarting worker 1 in 0\.1 s")
    replacement = waitReady(s, 1)
    assert list(replacement) == [1] and replacement[1] != pids[1]
    assert pidsServing(s.port, {replacement[1], pids[2]}) == {
        replacement[1],
        pids[2],
    }
    s.stop()


class Load:
    """Clients in threads, each request on a new connection, until stopped."""

    def __init__(self, port: int, threads: int = 4) -> None:
        self.port = port
        self.ok = 0
        self.failures: list[str] = []
        self.pids: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, daemon=True) for _ in range(threads)
        ]
        for thread in self._threads:
            thread.start()
        self._keepAlive = threading.Thread(target=self._runKeepAlive, daemon=True)
        self._keepAlive.start()

    def _record(self, status: int, body: bytes) -> None:
        with self._lock:
            if status == 200:
                self.ok += 1
                self.pids.append((time.monotonic(), int(body)))
            else:
                self.failures.append(f"status {status}")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._record(*get(self.port, "/pid", timeout=10))
            except Exception as error:
                with self._lock:
                    self.failures.append(repr(error))

    def _runKeepAlive(self) -> None:
        """One persistent connection, reopened when the server says close."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self._stop.is_set():
            try:
                connection.request("GET", "/pid")
                response = connection.getresponse()
                self._record(response.status, response.read())
                if response.will_close:
                    connection.close()
            except Exception as error:
                with self._lock:
                    self.failures.append("keep-alive: " + repr(error))
                connection.close()
        connection.close()

    def stop(self) -> None:
        self._stop.set()
        for thread in [*self._threads, self._keepAlive]:
            thread.join(TIMEOUT)


def test_sighupUnderLoadReplacesEveryWorkerWithoutAFailure(
    server: Callable[..., Server],
) -> None:
    s = server(
        "--handler",
        "cs_slowapp:app",
        "--workers",
        "2",
        "--status-path",
        "/st",
    )
    old = set(waitReady(s, 2).values())
    load = Load(s.port)
    try:
        eventually(lambda: load.ok >= 50, timeout=TIMEOUT, interval=0.01)
        s.process.send_signal(signal.SIGHUP)
        s.waitFor("reload done: every worker replaced")
        reloaded = time.monotonic()
        eventually(
            lambda: any(t > reloaded for t, _ in load.pids),
            timeout=TIMEOUT,
            interval=0.01,
        )
    finally:
        load.stop()
    assert load.failures == [], load.failures[:5]
    # The rows of the other workers are at most a report interval old.
    new: set[int] = set()

    def bothReport() -> bool:
        nonlocal new
        workers = statusJSON(s.port)["workers"]
        new = {row["pid"] for row in workers}  # type: ignore[attr-defined]
        return len(new) == 2

    eventually(bothReport, timeout=TIMEOUT, interval=0.1, message=lambda: (new, old))
    assert len(new) == 2 and not new & old, (new, old)
    after = {pid for t, pid in load.pids if t > reloaded}
    assert after <= new, "only new workers serve once the reload is done"
    assert load.ok > 50
    s.stop()


def test_sigtermLetsAnInFlightResponseFinish(
    tmp_path: Path, server: Callable[..., Server]
) -> None:
    release = tmp_path / "release"
    s = server("--handler", "cs_slowapp:app", "--workers", "2", "--drain-timeout", "15")
    waitReady(s, 2)
    client = socket.create_connection(("127.0.0.1", s.port), timeout=TIMEOUT)
    client.sendall(
        b"GET /slow?release=" + str(release).encode() + b" HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    s.waitFor("slow request waiting")
    s.process.send_signal(signal.SIGTERM)
    s.waitFor(r"stopped accepting; draining 2 worker\(s\)")
    s.waitFor(r"worker \d+ \(pid \d+\) exited")  # the idle one
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", s.port), timeout=TIMEOUT).close()
    assert s.process.poll() is None, "the parent waits for the last worker"
    finishSlowResponse(client, release)
    s.checkExited()


def test_statusAndMetricsSumEveryWorker(server: Callable[..., Server]) -> None:
    s = server(
        "--handler",
        "cs_slowapp:app",
        "--workers",
        "2",
        "--status-path",
        "/st",
        "--metrics-path",
        "/metrics",
    )
    pids = waitReady(s, 2)
    pidsServing(s.port, set(pids.values()))  # both have served requests
    for _ in range(10):
        assert get(s.port, "/")[0] == 200
    # The other worker's figures arrive within two report intervals (its
    # report to the parent, then the parent's answer to this one's report).
    deadline = time.monotonic() + TIMEOUT
    data: dict[str, object] = {}

    def everyWorkerCounted() -> bool:
        nonlocal data
        data = statusJSON(s.port)
        rows = data["workers"]
        return all(row["requests"] > 0 for row in rows) and int(data["requests"]) >= 13  # type: ignore[attr-defined, call-overload]

    eventually(everyWorkerCounted, timeout=TIMEOUT, interval=0.2, message=lambda: data)
    rows = data["workers"]
    assert {row["pid"] for row in rows} == set(pids.values())  # type: ignore[attr-defined]
    perWorker = sum(row["requests"] for row in rows)  # type: ignore[attr-defined]
    # Every request so far, whichever worker served it (this one included).
    assert data["requests"] == perWorker >= 13
    _status, text = get(s.port, "/st")
    assert b"Workers (worker pid uptime connections requests):" in text
    metrics = b""

    def everyRequestCounted() -> bool:
        nonlocal metrics
        status, metrics = get(s.port, "/metrics")
        assert status == 200
        match = re.search(rb'connserver_requests_total\{code="2xx"\} ([\d.]+)', metrics)
        assert match is not None
        return float(match.group(1)) >= 13

    eventually(  # the same staleness as above, on whichever worker answers
        everyRequestCounted,
        timeout=deadline - time.monotonic(),  # the bound is shared with the rows'
        interval=0.2,
        message=lambda: metrics,
    )
    assert b"connserver_workers 2.0" in metrics
    for pid in pids.values():
        assert f'pid="{pid}"'.encode() in metrics
    # An exited worker's requests stay counted: it reports them once more
    # after its drain.  (Killed with SIGKILL, it cannot: what it served
    # since its last report, at most a second's worth, is lost.)
    before = int(data["requests"])  # type: ignore[call-overload]
    os.kill(pids[1], signal.SIGTERM)
    waitReady(s, 1)
    for _ in range(10):  # reports come and go: the total never drops
        assert int(statusJSON(s.port)["requests"]) >= before  # type: ignore[call-overload]
        time.sleep(0.2)  # not a poll: the check must hold for two seconds
    s.stop()
    assert "_NoConnections" not in s.output()  # no internal class name


def test_aHandlerThatFailsInTheWorkersStopsTheServerWithOneLine(
    site: Path, tmp_path: Path
) -> None:
    (site / "cs_workerfail.py").write_text(
        "import os\n"
        "if os.environ.get('CONNSERVER_WORKER'):\n"
        "    raise RuntimeError('no database here')\n"
        "def app(request):\n"
        "    raise AssertionError\n"
    )
    started = time.monotonic()
    result = subprocess.run(
        twistd(
            site,
            "-n",
            "--pidfile=",
            "connserver",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--handler",
            "cs_workerfail:app",
            "--workers",
            "2",
        ),
        cwd=tmp_path,
        env=environment(site),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert time.monotonic() - started < 10
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if "could not start" in line]
    assert len(lines) == 1, output
    assert re.search(
        r"worker \d could not start \(exit status 3\): --handler 'cs_workerfail:app': "
        r"cannot import cs_workerfail: RuntimeError: no database here",
        lines[0],
    ), lines[0]
    assert "restarting" not in output


def test_aBadHandlerIsAUsageErrorBeforeAnyWorker(site: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        twistd(
            site,
            "-n",
            "connserver",
            "--handler",
            "no_such_module:app",
            "--workers",
            "2",
        ),
        cwd=tmp_path,
        env=environment(site),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "cannot import no_such_module" in output.rstrip().splitlines()[-1]
    assert "started worker" not in output


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> CertificateFiles:
    return makeCertificate(tmp_path_factory.mktemp("tls"))


def test_tlsUnixAndAccessLogWithWorkers(
    tmp_path: Path, server: Callable[..., Server], certificate: CertificateFiles
) -> None:
    """
    TLS wrapped in the workers, the PROXY protocol read by them, a unix:
    socket shared too (and still there after a reload), and one access log
    file that both workers append to.
    """
    (tmp_path / "index.html").write_bytes(b"hello\n")
    sock = tmp_path / "cs.sock"
    log = tmp_path / "access.log"
    s = server(
        "--workers",
        "2",
        "--https",
        "0",
        "--certificate",
        str(certificate.certificate),
        "--privkey",
        str(certificate.privateKey),
        "--listen",
        f"unix:{sock}",
        "--listen",
        "haproxy:tcp:0:interface=127.0.0.1",
        "--access-log",
        str(log),
        ports=3,  # tcp, haproxy, then TLS (the unix: one is not ipv4)
    )
    waitReady(s, 2)
    with socket.create_connection(("127.0.0.1", s.ports[1]), timeout=TIMEOUT) as raw:
        raw.sendall(
            b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\n"
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        assert readResponse(raw).endswith(b"\r\n\r\nhello\n")
    with tlsClient(certificate, s.ports[2]) as client:
        assert client.selected_alpn_protocol() == "http/1.1"
        client.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert readResponse(client).endswith(b"\r\n\r\nhello\n")

    def overUnix() -> bytes:
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(TIMEOUT)
            client.connect(str(sock))
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return readResponse(client)

    assert overUnix().startswith(b"HTTP/1.1 200 ")
    s.process.send_signal(signal.SIGHUP)
    s.waitFor("reload done")
    assert sock.exists(), "a worker's exit does not remove the parent's socket"
    assert overUnix().startswith(b"HTTP/1.1 200 ")
    for n in range(20):
        assert get(s.port, f"/?n={n}")[0] == 200
    s.stop()
    assert not sock.exists()
    lines, closes = requestAndCloseLines(log.read_text())
    assert len(lines) == 24, lines
    # One connection per request here: 24 ids, unique across the workers
    # and their replacements (each worker numbers from its own range).
    ids = [int(re.search(r" conn=(\d+) ", line).group(1)) for line in lines]  # type: ignore[union-attr]
    assert len(set(ids)) == 24 and min(ids) > 10**9, ids
    assert sum(line.startswith("203.0.113.7 ") for line in lines) == 1, lines
    assert all(re.match(r'^\S+ - - \[[^]]+\] "GET /', line) for line in lines), lines
    # The connections that ended with no response carrying the reason (the
    # client's own close after its response) have their one close line each.
    assert all(re.search(r" close=[a-z-]+$", line) for line in closes), closes


def test_reusePortServesAndReloads(server: Callable[..., Server]) -> None:
    s = server("--handler", "cs_slowapp:app", "--workers", "2", "--reuse-port")
    assert "SO_REUSEPORT" in s.log[-1]
    pids = waitReady(s, 2)
    pidsServing(s.port, set(pids.values()))
    s.process.send_signal(signal.SIGHUP)
    s.waitFor("reload done")
    assert get(s.port, "/")[0] == 200
    s.stop()


def test_workerFlagErrors(site: Path, tmp_path: Path) -> None:
    for args, message in [
        (["--workers", "0"], "--workers '0': expected a number from 1 to 1024 or auto"),
        (["--reuse-port"], "--reuse-port needs --workers 2 or more"),
        (
            ["--workers", "2", "--worker-max-requests", "x"],
            "--worker-max-requests 'x': expected a whole number",
        ),
    ]:
        result = subprocess.run(
            twistd(site, "-n", "connserver", *args),
            cwd=tmp_path,
            env=environment(site),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert result.returncode != 0
        assert message in (result.stdout + result.stderr).rstrip().splitlines()[-1]


def test_maxRequestsReplacesAWorker(server: Callable[..., Server]) -> None:
    s = server(
        "--handler",
        "cs_slowapp:app",
        "--workers",
        "2",
        "--worker-max-requests",
        "20",
    )
    old = set(waitReady(s, 2).values())
    for _ in range(60):
        assert get(s.port, "/")[0] == 200
    s.waitFor(r"served \d+ requests \(--worker-max-requests\): replacing it")
    new = waitReady(s, 1)
    assert not set(new.values()) & old
    assert get(s.port, "/")[0] == 200
    s.stop()


def test_systemdSocketShared(server: Callable[..., Server]) -> None:
    """
    Socket activation: the parent adopts systemd's socket (fd 3,
    LISTEN_FDS=1, LISTEN_FDNAMES, LISTEN_PID its own pid) and the workers accept on it.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        s = server(
            "--handler",
            "cs_slowapp:app",
            "--workers",
            "2",
            "--listen",
            "systemd:domain=INET:index=0",
            "--access-log",
            "-",
            plain=False,
            # sh's $$ is the pid twistd will have after exec.
            prefix=[
                "sh",
                "-c",
                'LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=http exec "$@"',
                "sh",
            ],
            preexec_fn=lambda: os.dup2(listener.fileno(), 3),
            pass_fds=(3,),
        )
        assert s.port == port
        pids = waitReady(s, 2)
        served = pidsServing(port, set(pids.values()))
        s.stop()
        # The workers' access log lines on standard output, relayed whole.
        lines = [line for line in s.output().splitlines() if '"GET /pid ' in line]
        assert len(lines) >= len(served)
        assert all(
            re.match(r'^127\.0\.0\.1 - - \[[^]]+\] "GET /pid HTTP/1\.1" 200 ', line)
            for line in lines
        ), lines
    finally:
        listener.close()


def test_optionsChooseTheSupervisor() -> None:
    from connserver._running.supervisor import SupervisorService
    from connserver.tap import Options, makeService

    options = Options()
    options.parseOptions(["--workers", "auto", "--listen", "tcp:0"])
    assert options["workers"] == len(os.sched_getaffinity(0))
    options = Options()
    options.parseOptions(["--workers", "2", "--worker-max-requests", "5"])
    service = makeService(options)
    assert isinstance(service, SupervisorService)
    assert (service.supervisor.count, service.supervisor.maxRequests) == (2, 5)


def test_aPortInUseIsOneLineAndExitOne(site: Path, tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    where = f"tcp:{busy.getsockname()[1]}:interface=127.0.0.1"
    try:
        result = subprocess.run(
            twistd(
                site,
                "-n",
                "--pidfile=",
                "connserver",
                "--workers",
                "2",
                "--listen",
                where,
            ),
            cwd=tmp_path,
            env=environment(site),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    finally:
        busy.close()
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    assert "started worker" not in output
    last = output.rstrip().splitlines()[-1]
    assert f"connserver cannot listen on {where}: Address already in use" in last


def test_sigusr1ReopensEveryWorkersAccessLog(
    tmp_path: Path, server: Callable[..., Server]
) -> None:
    """logrotate under --workers: the parent passes SIGUSR1 to every worker."""
    log = tmp_path / "access.log"
    s = server(
        "--handler", "cs_slowapp:app", "--workers", "2", "--access-log", str(log)
    )
    pids = waitReady(s, 2)
    pidsServing(s.port, set(pids.values()))  # both have the file open now
    eventually(  # flushed within a second
        lambda: log.exists() and log.read_text(),
        timeout=TIMEOUT,
        message="no access log line",
    )
    log.rename(tmp_path / "access.log.1")
    s.process.send_signal(signal.SIGUSR1)
    reopened = {s.waitFor(r"\[worker \d+ pid (\d+)\] Access log .* reopened").group(1)}
    reopened.add(s.waitFor(r"\[worker \d+ pid (\d+)\] Access log .* reopened").group(1))
    assert reopened == {str(pid) for pid in pids.values()}
    pidsServing(s.port, set(pids.values()))
    s.stop()
    lines, closes = requestAndCloseLines(log.read_text())
    assert lines and all('"GET /pid HTTP/1.1" 200 ' in line for line in lines)
    assert all(re.search(r" close=[a-z-]+$", line) for line in closes), closes
