#!/usr/bin/env python3
"""
WSGI hello (issue 24): the same minimal PEP 3333 application (130 bytes,
with its Content-Length) served by ``twistd connserver --wsgi``, by
``twistd web --wsgi`` and by gunicorn with one sync worker, in one run.

Each server is a subprocess pinned to CPU 0 (``taskset -c 0``); wrk runs on
CPU 1 (``wrk -t1 -c50 -d10s``, keep-alive; gunicorn's sync worker closes
every connection, so wrk reconnects for each of its requests), and the
servers take turns for a few rounds so that drift on the machine hits all
of them alike.  It prints requests per second and requests per CPU-second
of the server process (which holds steadier on a shared machine) for every
round, the medians and the ratios to ``twistd web --wsgi`` (the target:
connserver >= 2x).  Both twistd servers log to /dev/null (``-l``), so
twisted.web still formats its access-log line per request, as it does by
default.  Bounded: rounds x (warm-up + duration) per server.

    python bench/bench_wsgi.py                     # 3 rounds of 10 s
    python bench/bench_wsgi.py --rounds 1 --duration 5
    python bench/bench_wsgi.py --threads 4         # --wsgi-threads for connserver

Not a test: it needs wrk, taskset and gunicorn (``sh bench/setup-peers.sh``,
then ``bench/.venv-peers/bin/python bench/bench_wsgi.py``); a server whose
program is missing is skipped with a note.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from _servers import freePort, server, treeCpuSeconds, wrk  # noqa: E402

BODY = b"x" * 130
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", "130")]


def hello(environ: dict[str, Any], startResponse: Any) -> list[bytes]:
    """The application every server runs (``bench_wsgi:hello``)."""
    startResponse("200 OK", HEADERS)
    return [BODY]


def twistd() -> list[str]:
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def commands(port: int, threads: int | None) -> dict[str, list[str] | None]:
    """Each server's argv, or None when it is not installed here."""
    listen = f"tcp:{port}:interface=127.0.0.1"
    connserver = [*twistd(), "-n", "-l", os.devnull, "connserver"]
    connserver += ["--wsgi", "bench_wsgi:hello", "--listen", listen]
    if threads is not None:
        connserver += ["--wsgi-threads", str(threads)]
    web = [*twistd(), "-n", "-l", os.devnull, "web", "--wsgi", "bench_wsgi.hello"]
    web += ["--listen", listen]
    gunicorn: list[str] | None = None
    if shutil.which("gunicorn", path=str(Path(sys.executable).parent)) or _has(
        "gunicorn"
    ):
        gunicorn = [sys.executable, "-m", "gunicorn", "-w", "1", "-k", "sync"]
        gunicorn += ["-b", f"127.0.0.1:{port}", "--log-level", "warning"]
        gunicorn += ["bench_wsgi:hello"]
    return {
        "connserver --wsgi": connserver,
        "twistd web --wsgi": web,
        "gunicorn (1 sync worker)": gunicorn,
    }


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def check(port: int) -> None:
    """One request first: every server must answer the same 130 bytes."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as reply:
        body = reply.read()
        if reply.status != 200 or body != BODY:
            raise RuntimeError(f"unexpected answer {reply.status} {body[:40]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None, help="--wsgi-threads")
    args = parser.parse_args()
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is required")
    if not 1 <= args.rounds <= 5 or not 1 <= args.duration <= 30:
        sys.exit("keep it bounded: 1-5 rounds of 1-30 s")
    names = list(commands(0, args.threads))
    rates: dict[str, list[float]] = {name: [] for name in names}
    perCpu: dict[str, list[float]] = {name: [] for name in names}
    print(
        f"wrk -t1 -c{args.connections} -d{args.duration}s, keep-alive; servers on "
        f"CPU 0, wrk on CPU 1; {args.rounds} rounds; load average "
        f"{os.getloadavg()[0]:.2f} at the start",
        flush=True,
    )
    env = {"PYTHONPATH": str(BENCH), "PYTHONHASHSEED": "0"}
    for number in range(1, args.rounds + 1):
        for name in names:
            port = freePort()
            argv = commands(port, args.threads)[name]
            if argv is None:
                if number == 1:
                    print(f"{name}: not installed (sh bench/setup-peers.sh); skipped")
                continue
            with server(argv, port, env=env) as process:
                check(port)
                url = f"http://127.0.0.1:{port}/"
                wrk(url, connections=args.connections, seconds=args.warmup)
                before = treeCpuSeconds(process.pid)
                started = time.monotonic()
                result = wrk(url, connections=args.connections, seconds=args.duration)
                used = treeCpuSeconds(process.pid) - before
                elapsed = time.monotonic() - started
            if result["non2xx"] or result["socketErrors"]:
                print(f"  ({name}: wrk saw errors: {result})")
            rate = result["rps"]
            rates[name].append(rate)
            perCpu[name].append(rate * elapsed / used if used else 0.0)
            print(
                f"round {number}: {name:<26} {rate:>8.0f} req/s "
                f"{perCpu[name][-1]:>8.0f} req/CPU-s",
                flush=True,
            )
    medians = {n: statistics.median(v) for n, v in rates.items() if v}
    cpuMedians = {n: statistics.median(v) for n, v in perCpu.items() if v}
    for name in medians:
        print(
            f"median: {name:<26} {medians[name]:>8.0f} req/s "
            f"{cpuMedians[name]:>8.0f} req/CPU-s"
        )
    ours, base = "connserver --wsgi", "twistd web --wsgi"
    if ours in medians and base in medians:
        print(
            f"ratio connserver / twistd web --wsgi: {medians[ours] / medians[base]:.2f}x "
            f"req/s, {cpuMedians[ours] / cpuMedians[base]:.2f}x req/CPU-s "
            "(target >= 2x)"
        )
    peer = "gunicorn (1 sync worker)"
    if ours in medians and peer in medians:
        print(
            f"ratio connserver / gunicorn: {medians[ours] / medians[peer]:.2f}x req/s, "
            f"{cpuMedians[ours] / cpuMedians[peer]:.2f}x req/CPU-s"
        )


if __name__ == "__main__":
    main()
