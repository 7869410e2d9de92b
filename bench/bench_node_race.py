"""
The client side of the idle-close race (issue 12), measured with Node's
fetch (undici): requests lost with and without connserver's
``Keep-Alive: timeout=N`` hint.

A server, ``twistd -n --pidfile= connserver --path ROOT --idle-timeout 3``
(and ``--no-keep-alive-hint`` for the "off" mode), listens on five ports of
127.0.0.1; ``tests/node/fetch_race.mjs`` runs five chains of fetches at
once, one per port (one undici pool and one kept-alive connection each),
with idle gaps of 0.3 s and of 2.997 to 3.000 s, 35 requests a round.
undici keeps an idle connection 4 s by default, so without the hint a
request sent as the server's FIN arrives fails (``UND_ERR_SOCKET``); with
``Keep-Alive: timeout=3`` it retires the connection after 1 s (the
advertised timeout minus its 2 s threshold) and never sends into a close.

Printed: the failures of each round and their total per mode.  About 13 s
a round.

    python bench/bench_node_race.py [--rounds 3] [--modes on,off]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _servers import freePort, python, server

SCRIPT = Path(__file__).parent.parent / "tests" / "node" / "fetch_race.mjs"
CHAINS = 5
IDLE_TIMEOUT = "3"
GAPS_MS = [300, 2997, 2998, 300, 2999, 3000]


def runRound(node: str, root: Path, hint: bool, log: Path) -> dict[str, object]:
    ports = [freePort() for _ in range(CHAINS)]
    argv = [
        python(),
        "-m",
        "twisted",
        "connserver",
        "--path",
        str(root),
        "--idle-timeout",
        IDLE_TIMEOUT,
    ]
    if not hint:
        argv.append("--no-keep-alive-hint")
    for port in ports:
        argv += ["--listen", f"tcp:{port}:interface=127.0.0.1"]
    with server(argv, ports[0], log=log):
        urls = [f"http://127.0.0.1:{port}/hello.txt" for port in ports]
        done = subprocess.run(
            [node, str(SCRIPT), json.dumps({"urls": urls, "gapsMs": GAPS_MS})],
            capture_output=True,
            timeout=120,
            check=True,
        )
    report: dict[str, object] = json.loads(done.stdout)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default="on,off")
    args = parser.parse_args()
    node = shutil.which("node")
    if node is None:
        sys.exit("bench_node_race.py needs node (Node.js 18+) on PATH")
    version = subprocess.run(
        [node, "-p", "process.version + ' undici ' + process.versions.undici"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(f"node {version}; idleTimeout {IDLE_TIMEOUT} s; gaps {GAPS_MS} ms")
    with tempfile.TemporaryDirectory(prefix="connserver-race-") as directory:
        root = Path(directory)
        (root / "hello.txt").write_bytes(b"hello\n")
        for mode in args.modes.split(","):
            hint = mode == "on"
            failures = requests = 0
            for round_ in range(args.rounds):
                report = runRound(node, root, hint, root / "server.log")
                lost = int(str(report["failures"]))
                failures += lost
                requests += int(str(report["requests"]))
                print(
                    f"keep-alive hint {mode}: round {round_ + 1}: "
                    f"{lost} of {report['requests']} failed {report['errors']}"
                )
            print(f"keep-alive hint {mode}: {failures} of {requests} requests failed")


if __name__ == "__main__":
    main()
