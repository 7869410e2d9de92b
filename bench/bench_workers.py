"""
``--workers`` (issue 14): what a second worker process buys on this machine,
how evenly the workers share the load, a reload under load, and memory.

The server (``twistd -n connserver --path ROOT``, a 130-byte file, the
status page at ``/st``) and wrk share both cores: neither is pinned, since
the point is to let the workers use every core.  For each configuration:

* ``--workers 1`` (one process, no supervisor), ``--workers 2`` (one shared
  listening socket) and ``--workers 2 --reuse-port`` (a ``SO_REUSEPORT``
  socket per worker): ``wrk -t1 -c50 -d{seconds}s``, requests per second;
  with 2 workers, the requests each one served (from the status page's
  per-worker rows) and the share of the busier one (50 % is even);
* resident memory (``VmRSS``) of the parent and of each worker, idle, after
  start-up;
* a reload, with the shared socket and with ``--reuse-port``: wrk for
  ``{seconds}`` s (keep-alive, then ``-H "Connection: close"``: a new
  connection per request, which is where a closing socket's accept queue
  matters) and a SIGHUP after a second; wrk's
  requests, non-2xx responses and socket errors (the target is none), and
  the overlap of each old/new pair: from the new worker's ``ready`` to the
  old one's exit, timed from the parent's log lines as they arrive.

    python bench/bench_workers.py [--seconds 10] [--only 1,2,2rp] [--no-reload]

Run it on a quiet machine: the figures move with whatever else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

CONFIGS = {
    "1": ["--workers", "1"],
    "2": ["--workers", "2"],
    "2rp": ["--workers", "2", "--reuse-port"],
}


class Server:
    """A twistd connserver whose log lines arrive, timed, on a queue."""

    def __init__(self, root: Path, extra: list[str]) -> None:
        twistd = Path(sys.executable).parent / "twistd"
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(twistd),
                "-n",
                "--pidfile=",
                "connserver",
                "--path",
                str(root),
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--status-path",
                "/st",
                "--max-requests-per-connection",
                "none",
                *extra,
            ],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.port = int(
            self.waitFor(r"listening on ipv4 127\.0\.0\.1:(\d+)")[1].group(1)
        )
        self.workers = 0 if extra[1] == "1" else int(extra[1])
        for _ in range(self.workers):
            self.waitFor(r"worker \d+ \(pid \d+\) ready")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put((time.monotonic(), line))

    def waitFor(self, pattern: str, timeout: float = 30) -> tuple[float, re.Match[str]]:
        deadline = time.monotonic() + timeout
        while True:
            at, line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            match = re.search(pattern, line)
            if match:
                return at, match

    def status(self) -> dict[str, object]:
        url = f"http://127.0.0.1:{self.port}/st?format=json"
        with urllib.request.urlopen(url, timeout=10) as response:
            data: dict[str, object] = json.load(response)
            return data

    def rss(self) -> dict[str, int]:
        """KiB resident: the parent, then each worker by pid."""
        out = {"parent": _rss(self.process.pid)}
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        for pid in children.read_text().split():
            out[f"worker {pid}"] = _rss(int(pid))
        return out

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def wrk(port: int, seconds: int, close: bool = False) -> dict[str, float]:
    headers = ["-H", "Connection: close"] if close else []
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            "-c50",
            f"-d{seconds}s",
            *headers,
            f"http://127.0.0.1:{port}/130B.txt",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    requests = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    return {
        "requests": float(requests.group(1)) if requests else 0.0,
        "rps": float(rps.group(1)) if rps else 0.0,
        "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
        "socketErrors": float(sum(int(g) for g in errors.groups())) if errors else 0.0,
    }


def perWorker(server: Server) -> list[int]:
    time.sleep(1.5)  # a report interval: every worker has told the parent
    rows = server.status().get("workers", [])
    return [int(row["requests"]) for row in rows]  # type: ignore[attr-defined, index]


def measure(root: Path, name: str, seconds: int) -> None:
    server = Server(root, CONFIGS[name])
    try:
        time.sleep(1)
        memory = server.rss()
        wrk(server.port, 1)  # warm up
        before = perWorker(server) if server.workers else []
        result = wrk(server.port, seconds)
        line = f"{name:>4}: {result['rps']:9.0f} req/s"
        if server.workers:
            after = perWorker(server)
            served = [a - b for a, b in zip(after, before, strict=False)]
            share = max(served) / max(1, sum(served))
            line += f"  per worker {served}  busiest {share:.0%}"
        if result["non2xx"] or result["socketErrors"]:
            line += f"  ! errors {result}"
        print(line)
        print(
            "      idle RSS (KiB): "
            + ", ".join(f"{who} {kib}" for who, kib in memory.items())
        )
    finally:
        server.stop()


def reload(root: Path, seconds: int, reusePort: bool, close: bool) -> None:
    server = Server(root, ["--workers", "2", *(["--reuse-port"] if reusePort else [])])
    try:
        timeline: list[tuple[float, str]] = []
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                try:
                    timeline.append(server.lines.get(timeout=0.2))
                except queue.Empty:
                    continue

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        results: list[dict[str, float]] = []
        load = threading.Thread(
            target=lambda: results.append(wrk(server.port, seconds, close))
        )
        load.start()
        time.sleep(1)
        hup = time.monotonic()
        server.process.send_signal(signal.SIGHUP)
        load.join(seconds + 40)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(
            "reload done" in line for _, line in timeline
        ):
            time.sleep(0.1)
        done.set()
        watcher.join()
        ready: dict[str, float] = {}
        exited: dict[str, float] = {}
        pairs: list[tuple[str, str]] = []
        finished = None
        for at, line in timeline:
            if m := re.search(
                r"started worker \d+ \(pid (\d+)\), to replace worker \d+ \(pid (\d+)\)",
                line,
            ):
                pairs.append((m.group(1), m.group(2)))
            elif m := re.search(r"worker \d+ \(pid (\d+)\) ready", line):
                ready[m.group(1)] = at
            elif m := re.search(r"worker \d+ \(pid (\d+)\) exited", line):
                exited[m.group(1)] = at
            elif "reload done" in line:
                finished = at
            elif "reload abandoned" in line:
                print("      ! " + line.strip())
        result = results[0] if results else {}
        print(
            f"reload under load ({'reuse-port' if reusePort else 'shared socket'}, "
            f"{'a connection per request' if close else 'keep-alive'}): "
            f"{result.get('requests', 0):.0f} requests in {seconds} s, "
            f"non-2xx {result.get('non2xx', 0):.0f}, socket errors "
            f"{result.get('socketErrors', 0):.0f}; reload took "
            + (f"{finished - hup:.2f} s" if finished else "(not finished)")
        )
        for new, old in pairs:
            if new in ready and old in exited:
                print(
                    f"      new pid {new} ready -> old pid {old} exited: "
                    f"{exited[old] - ready[new]:.2f} s overlap"
                )
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--only", default="1,2,2rp")
    parser.add_argument("--no-reload", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench_workers needs wrk")
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        (root / "130B.txt").write_bytes(b"x" * 129 + b"\n")
        print(f"{os.cpu_count()} CPUs; wrk -t1 -c50 -d{args.seconds}s, unpinned")
        for name in args.only.split(","):
            measure(root, name, args.seconds)
        if not args.no_reload:
            for close in (False, True):
                reload(root, args.seconds, reusePort=False, close=close)
                reload(root, args.seconds, reusePort=True, close=close)


if __name__ == "__main__":
    main()
