"""
Two builds of connserver side by side in one run: an OLD build (a git ref)
against a NEW build (a working tree, by default this one), for accepting a
restructuring that must not cost speed or memory.

The old build is ``git archive REF | tar -x`` into a temporary directory
(removed at the end); each build's code runs with ``PYTHONPATH=<its tree>``,
which comes before the editable install's path, so ``import connserver``
picks that tree.  Every program run here imports connserver's public API
only (``from connserver import ConnectionFactory, Response, ServerConfig``),
since the private module paths differ between builds, and checks at start
that ``connserver.__file__`` lies under the tree it was given (else it
exits and the figure is not taken); the script prints where each build
imported from.  Both builds run on this script's interpreter and Twisted.

Figures (``--only`` takes these names):

* ``keepalive``: requests/s of the hello handler of
  bench_request_path.py's connserver (the same server program: a 130-byte
  ``text/plain`` body from memory, ``ServerConfig(maxRequestsPerConnection=
  None)``) loaded by ``wrk -t1 -c50 -d{seconds}s``, the server pinned to core
  0 and wrk to core 1, after a 1 s warm-up; also requests per CPU-second of
  the server process (steadier when other work shares core 0);
* ``pipelined``: the same server under ``wrk -t1 -c20 -s bench/pipeline.lua
  -- 16`` (16 GETs per write; wrk counts responses);
* ``idle``: KiB of RSS per idle keep-alive connection with ``--idle`` of them
  held (default 10,000), measured as ``bench_hardening.py --only idle`` does
  and with its server program and client (its helpers are imported): 50
  warm-up requests, RSS, then every connection sends one GET, reads its
  answer and stays open, RSS again 1 s after the last answer;
  (after - before) / count;
* ``callgrind``: instructions per bodiless GET, without sockets: a driver
  (as bench_inprocess.py) builds a protocol with ``ConnectionFactory(...,
  reactor=Clock()).buildProtocol`` on an in-memory transport that drops
  writes, and feeds it keep-alive ``GET / HTTP/1.1`` + ``Host`` requests one
  ``dataReceived`` each; it runs under ``valgrind --tool=callgrind`` with N1
  and N2 requests (``--callgrind-requests``, default 2000,12000) and the
  figure is (Ir(N2) - Ir(N1)) / (N2 - N1), so start-up (interpreter, Twisted
  import, first-request work) cancels out.  ``PYTHONHASHSEED=0``; the
  counts repeat to within ~0.1 %, so this runs once per build (after the
  rounds), not every round.  ``--callgrind-request browser`` feeds
  bench_inprocess.py's 7-line browser-like head instead of the minimal one
  (at 54f8f63: ~121k instructions per minimal GET, ~151k per browser-like
  one; each run of the driver takes 15-25 s under callgrind).

Old and new alternate within each round, and the order flips every round
(old, new; new, old; ...) so a drift of the machine does not favour one
build.  The table gives the median over rounds per build and new/old
(above 1 is better for req/s, below 1 is better for KiB and instructions).
Two runs of the same build (``--old HEAD`` with a clean tree) give the
method's noise; on a shared 2-core machine, 3 rounds of 5 s gave 1.05-1.06
for req/s, 1.02 for req per CPU-s and 1.000 for KiB and instructions.

    python bench/bench_builds.py --old REF [--new PATH] [--rounds 3]
        [--seconds 5] [--only keepalive,pipelined,idle,callgrind]
        [--idle 10000] [--callgrind-requests 2000,12000]
        [--callgrind-request minimal|browser] [--json FILE]

Bounded: about rounds x 2 x (3 + 2 x seconds + an idle run) + 2 x a
callgrind pair, where an idle run with 10,000 connections takes ~10 s and
a callgrind pair ~40 s (the defaults took 165 s here, on 2 cores).
Run it on a quiet machine; the req/s figures move with whatever else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_hardening
import bench_request_path
from _servers import (
    SERVER_CPU,
    chosen,
    freePort,
    measureModes,
    pinned,
    python,
    server,
)

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
FIGURES = ("keepalive", "pipelined", "idle", "callgrind")

#: Prepended to every program run for a build: import connserver (from
#: PYTHONPATH), print where from, and refuse to run from another tree.
CHECK_TREE = textwrap.dedent(
    """
    import os as _os, sys as _sys
    import connserver as _connserver
    _root = _os.path.realpath(_os.environ["BENCH_BUILD_ROOT"])
    _file = _os.path.realpath(_connserver.__file__)
    print("connserver-file: " + _file, flush=True)
    if not _file.startswith(_root + _os.sep):
        _sys.exit(f"connserver imported from {_file}, expected under {_root}")
    del _os, _sys, _connserver, _root, _file
    """
)

MINIMAL_REQUEST = "GET / HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n"
BROWSER_REQUEST = (
    "GET /index.html HTTP/1.1\\r\\n"
    "Host: 127.0.0.1:8080\\r\\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101"
    " Firefox/120.0\\r\\n"
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\\r\\n"
    "Accept-Language: en-US,en;q=0.5\\r\\n"
    "Accept-Encoding: gzip, deflate, br\\r\\n"
    "Connection: keep-alive\\r\\n"
    "\\r\\n"
)

#: The in-process driver run under callgrind: argv[1] requests, then the
#: count of responses the factory saw (a check that every GET was answered).
DRIVER = CHECK_TREE + textwrap.dedent(
    """
    import sys
    from twisted.internet.address import IPv4Address
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport
    from connserver import ConnectionFactory, Response, ServerConfig

    BODY = b"x" * 130
    HEADERS = [(b"Content-Type", b"text/plain")]
    REQUEST = b"{request}"
    PEER = IPv4Address("TCP", "127.0.0.1", 40000)

    class NullTransport(StringTransport):
        def write(self, data):
            pass

        def writeSequence(self, data):
            pass

    def handler(request):
        return Response(200, HEADERS, BODY)

    factory = ConnectionFactory(
        handler, ServerConfig(maxRequestsPerConnection=None), reactor=Clock()
    )
    protocol = factory.buildProtocol(PEER)
    protocol.makeConnection(NullTransport(peerAddress=PEER))
    data = protocol.dataReceived
    for _ in range(int(sys.argv[1])):
        data(REQUEST)
    stats = getattr(factory, "stats", None)
    print("responses:", getattr(stats, "responses", -1), flush=True)
    """
)


@dataclass
class Build:
    name: str  # "old" or "new"
    root: Path
    label: str
    commit: str | None = None
    figures: dict[str, list[float]] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {
            "PYTHONPATH": str(self.root),
            "BENCH_BUILD_ROOT": str(self.root),
            "BENCH_PROFILE": "",
        }

    def add(self, figure: str, value: float) -> None:
        self.figures.setdefault(figure, []).append(value)


def git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(
        ["git", "-C", str(cwd), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.strip()


@contextmanager
def oldTree(ref: str, work: Path) -> Iterator[Build]:
    """Materialise ``ref`` of this repository under ``work`` (with ``git archive``)."""
    try:
        commit = git("rev-parse", "--verify", f"{ref}^{{commit}}")
    except subprocess.CalledProcessError as error:
        sys.exit(f"--old {ref!r}: not a commit here: {error.stderr.strip()}")
    root = work / f"old-{commit[:12]}"
    root.mkdir()
    archive = subprocess.Popen(
        ["git", "-C", str(REPO), "archive", "--format=tar", commit],
        stdout=subprocess.PIPE,
    )
    subprocess.run(
        ["tar", "-x", "-C", str(root)], stdin=archive.stdout, check=True, timeout=120
    )
    assert archive.stdout is not None
    archive.stdout.close()
    if archive.wait(timeout=60) != 0:
        sys.exit(f"git archive {commit} failed")
    try:
        yield Build("old", root, f"{ref} ({commit[:12]})", commit)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def newTree(path: Path) -> Build:
    root = path.resolve()
    if not (root / "connserver" / "__init__.py").is_file():
        sys.exit(f"--new {path}: no connserver/__init__.py there")
    label = str(root)
    commit = None
    try:
        commit = git("rev-parse", "HEAD", cwd=root)
        dirty = git("status", "--porcelain", "--untracked-files=no", cwd=root)
        label += f" (HEAD {commit[:12]}{' + changes' if dirty else ''})"
    except (subprocess.CalledProcessError, OSError):
        pass
    return Build("new", root, label, commit)


def importedFrom(output: str, build: Build) -> str:
    """The ``connserver-file:`` line of some output, checked against ``build``."""
    match = re.search(r"^connserver-file: (.+)$", output, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"{build.name}: no connserver-file line: {output[-500:]}")
    path = match.group(1)
    if not path.startswith(str(build.root.resolve()) + os.sep):
        raise RuntimeError(f"{build.name}: imported {path}, not under {build.root}")
    return path


def checkImport(build: Build, work: Path) -> str:
    """Import the build once (compiling its bytecode) and return where from."""
    result = subprocess.run(
        [python(), "-c", CHECK_TREE],
        cwd=work,  # not the caller's directory: ``-c`` puts it first on sys.path
        env={**os.environ, **build.env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode:
        sys.exit(f"{build.name}: {result.stdout}{result.stderr[-2000:]}")
    return importedFrom(result.stdout, build)


def waitForLine(log: Path, build: Build, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return importedFrom(log.read_text(), build)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def measureWrk(
    build: Build, work: Path, modes: list[str], seconds: int
) -> dict[str, tuple[float, float]]:
    """The hello server of bench_request_path.py: req/s and req per CPU-s per mode."""
    script = work / f"hello_{build.name}.py"
    script.write_text(
        CHECK_TREE + bench_request_path.CONNSERVER.format(repo=str(build.root))
    )
    port = freePort()
    url = f"http://127.0.0.1:{port}/"
    log = work / f"hello_{build.name}.log"
    with server(
        [python(), str(script), str(port)], port, env=build.env, log=log
    ) as process:
        waitForLine(log, build)
        return measureModes(
            build.name,
            process.pid,
            url,
            modes,
            seconds,
            lambda mode: bench_request_path.load(mode, url, seconds),
        )


def measureIdle(build: Build, work: Path, count: int, source: str) -> float:
    """KiB of RSS per idle keep-alive connection, as bench_hardening.py's idle."""
    script = work / f"idle_{build.name}.py"
    script.write_text(CHECK_TREE + bench_hardening.CONNSERVER)
    port = freePort()
    log = work / f"idle_{build.name}.log"
    argv = bench_hardening.connserverArgv(script, port, 60.0, 60.0, "-")
    with server(argv, port, env=build.env, log=log) as process:
        waitForLine(log, build)
        for _ in range(50):
            bench_hardening.newClientLatency(port)
        time.sleep(0.5)
        before = bench_hardening.treeRssKiB(process.pid)
        clients = bench_hardening.startClients("idle", port, count, source, 120)
        try:
            bench_hardening.readJson(clients, "idle", 90)
            time.sleep(1.0)
            after = bench_hardening.treeRssKiB(process.pid)
        finally:
            clients.kill()
            clients.wait(timeout=10)
    return (after - before) / count


def callgrindInstructions(build: Build, work: Path, requests: int, head: str) -> int:
    """Total Ir of the in-process driver feeding ``requests`` GETs."""
    driver = work / f"driver_{build.name}.py"
    driver.write_text(DRIVER.replace("{request}", head))
    out = work / f"callgrind.{build.name}.{requests}.out"
    argv = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        "-q",
        python(),
        str(driver),
        str(requests),
    ]
    result = subprocess.run(
        pinned(SERVER_CPU, argv),
        env={**os.environ, **build.env, "PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode:
        raise RuntimeError(
            f"callgrind {build.name} {requests}: exit {result.returncode}: "
            f"{(result.stdout + result.stderr)[-2000:]}"
        )
    importedFrom(result.stdout, build)
    responses = re.search(r"^responses: (-?\d+)$", result.stdout, re.MULTILINE)
    if responses is None or int(responses.group(1)) not in (requests, -1):
        raise RuntimeError(
            f"callgrind {build.name}: expected {requests} responses: {result.stdout}"
        )
    text = out.read_text(errors="replace")
    out.unlink()
    match = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no summary/totals line in {out}")
    return int(match.group(1))


def measureCallgrind(
    build: Build, work: Path, counts: tuple[int, int], head: str
) -> float:
    started = time.monotonic()
    low, high = (callgrindInstructions(build, work, n, head) for n in counts)
    perRequest = (high - low) / (counts[1] - counts[0])
    print(
        f"callgrind: {build.name}: Ir({counts[0]}) = {low}, Ir({counts[1]}) = "
        f"{high}: {perRequest:.0f} per GET ({time.monotonic() - started:.0f} s)"
    )
    return perRequest


ROWS = (
    # (figure key, its --only name, label: str.format'ed with the arguments)
    ("keepalive", "keepalive", "keep-alive req/s, wrk -t1 -c50 (higher is better)"),
    ("keepaliveCpu", "keepalive", "keep-alive req per server CPU-s (higher)"),
    (
        "pipelined",
        "pipelined",
        f"pipelined x{bench_request_path.PIPELINE_DEPTH} req/s, wrk -t1 -c20 (higher)",
    ),
    ("pipelinedCpu", "pipelined", "pipelined req per server CPU-s (higher)"),
    ("idle", "idle", "KiB RSS per idle keep-alive conn, {idle} held (lower)"),
    (
        "callgrind",
        "callgrind",
        "instructions per bodiless GET, N = {low} and {high}, {head} head (lower)",
    ),
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--old", required=True, help="git ref of the old build")
    parser.add_argument(
        "--new", type=Path, default=REPO, help="tree of the new build (this one)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--only", default=",".join(FIGURES))
    parser.add_argument("--idle", type=int, default=10_000)
    parser.add_argument("--callgrind-requests", default="2000,12000")
    parser.add_argument(
        "--callgrind-request", choices=["minimal", "browser"], default="minimal"
    )
    parser.add_argument("--json", type=Path, help="write the figures there")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    wanted = chosen(parser, "--only", args.only, FIGURES)
    try:
        low, high = (int(n) for n in args.callgrind_requests.split(","))
    except ValueError:
        parser.error("--callgrind-requests takes N1,N2")
    if not 0 < low < high:
        parser.error("--callgrind-requests: need 0 < N1 < N2")
    modes = [mode for mode in ("keepalive", "pipelined") if mode in wanted]
    if modes and not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install -y wrk)")
    if "callgrind" in wanted and not shutil.which("valgrind"):
        sys.exit("valgrind is not installed (apt-get install -y valgrind)")
    if "idle" in wanted:
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        if hard < args.idle + 512:
            sys.exit(f"the hard open-file limit {hard} is below {args.idle + 512}")
    head = MINIMAL_REQUEST if args.callgrind_request == "minimal" else BROWSER_REQUEST

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-builds-") as tmpName:
        work = Path(tmpName)
        os.chmod(work, 0o755)
        with oldTree(args.old, work) as old:
            new = newTree(args.new)
            builds = [old, new]
            print(
                f"# builds: {args.rounds} round(s), {args.seconds}s per wrk run, "
                f"servers on core 0, load on core 1"
            )
            for build in builds:
                print(f"{build.name}: {build.label}")
                print(f"  imports {checkImport(build, work)}")
            idleRun = 0
            for round_ in range(args.rounds):
                order = builds if round_ % 2 == 0 else builds[::-1]
                if modes:
                    for build in order:
                        try:
                            figures = measureWrk(build, work, modes, args.seconds)
                        except (RuntimeError, subprocess.SubprocessError) as error:
                            print(f"  ! round {round_ + 1}: {build.name}: {error}")
                            continue
                        for mode, (perSecond, perCpu) in figures.items():
                            build.add(mode, perSecond)
                            build.add(mode + "Cpu", perCpu)
                            print(
                                f"round {round_ + 1}: {mode:9} {build.name} "
                                f"{perSecond:10.0f} req/s {perCpu:10.0f} req/CPU-s"
                            )
                if "idle" in wanted:
                    for build in order:
                        # A fresh source address each time: the last run's
                        # client ports may still be in TIME_WAIT.
                        source = f"127.0.0.{40 + idleRun % 200}"
                        idleRun += 1
                        try:
                            kib = measureIdle(build, work, args.idle, source)
                        except (RuntimeError, subprocess.SubprocessError) as error:
                            print(f"  ! round {round_ + 1}: idle {build.name}: {error}")
                            continue
                        build.add("idle", kib)
                        print(
                            f"round {round_ + 1}: idle      {build.name} "
                            f"{kib:10.2f} KiB per connection ({args.idle} held)"
                        )
            if "callgrind" in wanted:
                for build in builds:
                    try:
                        build.add(
                            "callgrind",
                            measureCallgrind(build, work, (low, high), head),
                        )
                    except (RuntimeError, subprocess.SubprocessError) as error:
                        print(f"  ! callgrind {build.name}: {error}")
    elapsed = time.monotonic() - started

    def median(build: Build, key: str) -> float | None:
        values = build.figures.get(key)
        return statistics.median(values) if values else None

    def show(value: float | None, key: str) -> str:
        if value is None:
            return "-"
        return f"{value:.2f}" if key == "idle" else f"{value:.0f}"

    print()
    print(f"old: {old.label}")
    print(f"new: {new.label}")
    print()
    print("| figure | old | new | new/old |")
    print("| --- | --- | --- | --- |")
    report: dict[str, Any] = {}
    for key, name, label in ROWS:
        if name not in wanted:
            continue
        before, after = median(old, key), median(new, key)
        ratio = after / before if before and after is not None else None
        label = label.format(
            idle=args.idle, low=low, high=high, head=args.callgrind_request
        )
        print(
            f"| {label} | {show(before, key)} | {show(after, key)} | "
            f"{'-' if ratio is None else f'{ratio:.3f}'} |"
        )
        report[key] = {
            "old": before,
            "new": after,
            "ratio": ratio,
            "oldRounds": old.figures.get(key, []),
            "newRounds": new.figures.get(key, []),
        }
    print()
    notes = []
    if set(wanted) - {"callgrind"}:
        notes.append(f"medians of {args.rounds} round(s)")
    if "callgrind" in wanted:
        notes.append("callgrind: one run per build")
    print("; ".join([*notes, f"took {elapsed:.0f} s"]))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "old": {"ref": args.old, "commit": old.commit, "label": old.label},
                    "new": {
                        "path": str(new.root),
                        "commit": new.commit,
                        "label": new.label,
                    },
                    "settings": {
                        "rounds": args.rounds,
                        "seconds": args.seconds,
                        "idle": args.idle,
                        "callgrindRequests": [low, high],
                        "callgrindRequest": args.callgrind_request,
                        "only": wanted,
                    },
                    "elapsedSeconds": elapsed,
                    "figures": report,
                },
                indent=2,
            )
            + "\n"
        )
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
