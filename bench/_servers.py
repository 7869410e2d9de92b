"""
Shared pieces of the benchmark scripts: start a server in a pinned
subprocess, wait for its port, run wrk or ab pinned to the other core, and
parse their output.  Every run is bounded in time; servers listen on
127.0.0.1 only and are stopped when the script ends.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence

SERVER_CPU = "0"
LOAD_CPU = "1"


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def waitForPort(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.5),
        ):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def pinned(cpu: str, argv: Sequence[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", cpu, *argv]
    return list(argv)


@contextlib.contextmanager
def server(
    argv: Sequence[str], port: int, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        pinned(SERVER_CPU, argv),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    try:
        try:
            waitForPort(port)
        except RuntimeError:
            process.kill()
            _, err = process.communicate(timeout=5)
            raise RuntimeError(
                f"{argv[0]} did not start: {err.decode(errors='replace')[-2000:]}"
            ) from None
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def wrk(
    url: str, *, connections: int = 50, seconds: int = 10, threads: int = 1
) -> dict[str, float]:
    """Run wrk pinned to the load core; return requests/s and bytes/s."""
    argv = pinned(
        LOAD_CPU,
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url],
    )
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + 30, check=True
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)([KMG]?B)", out)
    scale = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}
    bps = float(transfer.group(1)) * scale[transfer.group(2)] if transfer else 0.0
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socketErrors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "bps": bps,
        "non2xx": float(errors.group(1)) if errors else 0.0,
        "socketErrors": 1.0 if socketErrors else 0.0,
    }


def ab(
    url: str, *, requests: int = 20000, concurrency: int = 50, keepAlive: bool = True
) -> dict[str, float]:
    """ApacheBench (HTTP/1.0); returns complete, keep-alive and failed counts and rps."""
    argv = ["ab", "-q", "-n", str(requests), "-c", str(concurrency)]
    if keepAlive:
        argv.append("-k")
    out = subprocess.run(
        pinned(LOAD_CPU, [*argv, url]),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout

    def number(label: str) -> float:
        match = re.search(label + r":\s+([\d.]+)", out)
        return float(match.group(1)) if match else 0.0

    return {
        "complete": number("Complete requests"),
        "keepAlive": number("Keep-Alive requests"),
        "failed": number("Failed requests"),
        "rps": number(r"Requests per second"),
    }


def python() -> str:
    return sys.executable
