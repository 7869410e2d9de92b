"""
Shared pieces of the benchmark scripts: start a server in a pinned
subprocess, wait for its port, run wrk or ab pinned to the other core, and
parse their output.  Every run is bounded in time; servers listen on
127.0.0.1 only and are stopped when the script ends.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

SERVER_CPU = "0"
LOAD_CPU = "1"


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def nginxArgv(
    directory: Path,
    name: str,
    http: str,
    *,
    connections: int = 1024,
    main: str = "",
) -> list[str]:
    """
    Write ``directory/name.conf`` and return the argv that runs it in the
    foreground: one worker process, no access log, temporary files in
    ``directory``; ``http`` holds the ``http`` block's own directives (its
    ``server`` blocks, ``sendfile``, ``gzip`` ...), ``main`` extra
    main-context directives.
    """
    conf = directory / f"{name}.conf"
    conf.write_text(
        f"""worker_processes 1;
pid {directory}/{name}.pid;
error_log {directory}/{name}-error.log;
{main}
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
{http}
}}
"""
    )
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    return [nginx, "-p", str(directory), "-c", str(conf), "-g", "daemon off;"]


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
    argv: Sequence[str],
    port: int,
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """
    Run ``argv`` pinned to the server core until the block ends.

    Its standard output is discarded unless ``log`` names a file to write it
    to (twistd logs there); the tail of that file and of standard error go
    into the error raised when nothing listens on ``port``.
    """
    with contextlib.ExitStack() as files:
        stdout = (
            files.enter_context(log.open("wb"))
            if log is not None
            else subprocess.DEVNULL
        )
        process = subprocess.Popen(
            pinned(SERVER_CPU, argv),
            stdout=stdout,
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
            output = log.read_bytes()[-2000:] if log is not None else b""
            raise RuntimeError(
                f"{argv[0]} did not start (exit {process.returncode}): "
                f"{(output + err[-2000:]).decode(errors='replace')}"
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
    url: str,
    *,
    connections: int = 50,
    seconds: int = 10,
    threads: int = 1,
    headers: Sequence[str] = (),
    script: str | None = None,
    scriptArgs: Sequence[str] = (),
) -> dict[str, float]:
    """
    Run wrk pinned to the load core; return requests/s and bytes/s.

    ``headers`` are ``-H`` values (``"Connection: close"``); ``script`` is a
    wrk Lua script (``-s``) and ``scriptArgs`` the arguments after ``--``.
    wrk counts responses, so a pipelining script still gives responses/s.
    ``loadCpu`` is the share of its core that wrk used: near 1.0, the client
    (not the server) set the figure.
    """
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for header in headers:
        command += ["-H", header]
    if script is not None:
        command += ["-s", script]
    command.append(url)
    if scriptArgs:
        command += ["--", *scriptArgs]
    argv = pinned(LOAD_CPU, command)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + 30, check=True
    ).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    loadCpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / (
        seconds
    )
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
        "loadCpu": loadCpu,
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


def treeCpuSeconds(pid: int) -> float:
    """
    User + system CPU seconds used so far by a process and its live children
    (nginx's worker, say), from /proc.  Dividing requests by the CPU seconds a
    run cost the server gives a figure that holds steadier than requests per
    wall second when other work shares the server's core.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            stat = Path(f"/proc/{current}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                pending.extend(int(child) for child in children)
        except (OSError, ValueError):
            continue
    return total


def importable(*modules: str) -> bool:
    """Whether every module can be imported by this interpreter (the servers' one)."""
    return all(importlib.util.find_spec(module) is not None for module in modules)


PEERS_NOTE = (
    "run `sh bench/setup-peers.sh` and use bench/.venv-peers/bin/python to measure it"
)


def chosen(
    parser: argparse.ArgumentParser, flag: str, text: str, known: Iterable[str]
) -> list[str]:
    """
    The comma-separated names ``flag`` was given (``--only``, ``--modes``),
    each among ``known``; ``parser.error`` names the first that is not.
    """
    names = [name.strip() for name in text.split(",") if name.strip()]
    known = list(known)
    for name in names:
        if name not in known:
            parser.error(f"{flag} {name!r}: expected some of {', '.join(known)}")
    return names


def measurable(
    names: Sequence[str], modulesOf: Callable[[str], Sequence[str]]
) -> list[str]:
    """
    The servers of ``names`` whose modules (``modulesOf(name)``) this
    interpreter imports; a line for each one skipped, and exit if none is left.
    """
    kept = []
    for name in names:
        missing = [module for module in modulesOf(name) if not importable(module)]
        if missing:
            print(f"skipped {name}: no {', '.join(missing)} here; {PEERS_NOTE}")
        else:
            kept.append(name)
    if not kept:
        sys.exit("no server left to measure")
    return kept


def measureModes(
    name: str,
    pid: int,
    url: str,
    modes: Sequence[str],
    seconds: int,
    load: Callable[[str], dict[str, float]],
) -> dict[str, tuple[float, float]]:
    """
    Warm a running server up, then run ``load(mode)`` for every mode: per
    mode, requests per second and requests per CPU-second of the server's
    processes (``pid`` and its children).  Warns when the load saw errors or
    when wrk used nearly all of its core (then the client may set the figure).
    """
    wrk(url, connections=50, seconds=1)  # warm up
    figures: dict[str, tuple[float, float]] = {}
    for mode in modes:
        cpuBefore = treeCpuSeconds(pid)
        result = load(mode)
        cpu = treeCpuSeconds(pid) - cpuBefore
        if result["non2xx"] or result["socketErrors"]:
            print(f"  ! {name} {mode}: non-2xx or socket errors: {result}")
        if result["loadCpu"] > 0.9:
            print(
                f"  ! {name} {mode}: wrk used {result['loadCpu']:.0%} of its "
                "core: the client may have set this figure"
            )
        perCpu = result["rps"] * seconds / cpu if cpu > 0 else 0.0
        figures[mode] = (result["rps"], perCpu)
    return figures
