"""
ASGI (issue 24): ``twistd connserver --asgi`` side by side with Daphne,
uvicorn (httptools + uvloop) and hypercorn, one process each pinned to
core 0, the load pinned to core 1; the servers alternate within each round
and the tables give the median of the rounds.

* ``hello``: a raw ASGI app answering ``GET /`` with 130 bytes
  (``Content-Length`` given), ``wrk -t1 -c50 -d{seconds}s``, keep-alive
  (``--connections N`` for another ``-c``: 1 is one client waiting for
  each answer, where answers cannot share a reactor turn).
  Targets: connserver >= 3x Daphne and >= 0.6x uvicorn.
* ``ws-echo``: a raw ASGI WebSocket app echoing every message; 50
  connections each keep one 64-byte message in flight, for ``seconds``.
  Target: connserver >= 2x Daphne.  The load (its own process on core 1)
  is ``--load raw`` (the default): bench/_wsload.py, bench_websocket.py's
  raw-socket client on one epoll loop (binary messages, every echo checked
  byte for byte, one second of warm-up not counted), or ``--load
  websockets``: the ``websockets`` client on asyncio (text messages), which
  saturates its core before connserver does.  The load's share of its core
  is printed with each run ("load N%"): near 100%, the client sets the
  figure, and the messages per server CPU-second column is the one to read.

With ``BENCH_PROFILE=FILE`` in the environment connserver runs under
cProfile (twistd's ``--profile FILE --profiler cprofile --savestats``) and
the stats are written to FILE when it stops; the figures of that run do
not count:

    BENCH_PROFILE=/tmp/asgi-ws.prof bench/.venv-peers/bin/python \
        bench/bench_asgi.py --only connserver --modes ws-echo --rounds 1

Both figures per server: per second of wall time, and per CPU-second of the
server process (steadier when other work shares the machine).

    bench/.venv-peers/bin/python bench/bench_asgi.py \\
        [--seconds 10] [--rounds 3] [--only connserver,daphne,uvicorn,hypercorn] \\
        [--modes hello,ws-echo]

``sh bench/setup-peers.sh`` creates bench/.venv-peers (connserver[asgi],
Daphne, uvicorn, httptools, uvloop, hypercorn).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _servers import (
    LOAD_CPU,
    chosen,
    freePort,
    measurable,
    pinned,
    python,
    server,
    treeCpuSeconds,
    wrk,
)

APP = textwrap.dedent(
    """
    BODY = b"x" * 130
    START = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain"), (b"content-length", b"130")],
    }
    END = {"type": "http.response.body", "body": BODY}
    ACCEPT = {"type": "websocket.accept"}

    async def app(scope, receive, send):
        kind = scope["type"]
        if kind == "http":
            await send(START)
            await send(END)
        elif kind == "websocket":
            await receive()
            await send(ACCEPT)
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    return
                await send({"type": "websocket.send", "text": message.get("text"),
                            "bytes": message.get("bytes")})
        elif kind == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
    """
)

# The WebSocket load: N connections, one 64-byte message in flight each.
CLIENT = textwrap.dedent(
    """
    import asyncio, json, sys, time
    import websockets

    async def one(url, stop, counts):
        async with websockets.connect(url, compression=None, max_queue=None) as ws:
            message = "m" * 64
            while time.monotonic() < stop:
                await ws.send(message)
                await ws.recv()
                counts[0] += 1

    async def main(url, connections, seconds):
        counts = [0]
        stop = time.monotonic() + seconds
        await asyncio.gather(*(one(url, stop, counts) for _ in range(connections)))
        return counts[0]

    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    url, connections, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    start = time.monotonic()
    count = asyncio.run(main(url, connections, seconds))
    import resource
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"messages": count, "seconds": time.monotonic() - start,
                      "cpu": usage.ru_utime + usage.ru_stime}))
    """
)


def twistdPath() -> str:
    return str(Path(python()).parent / "twistd")


#: bench_websocket.py's raw-socket WebSocket load.
RAW_LOAD = Path(__file__).resolve().parent / "_wsload.py"
RAW_WARMUP = 1.0


def connserverArgv(tmp: Path, port: int) -> list[str]:
    profile = os.environ.get("BENCH_PROFILE")
    return [
        twistdPath(),
        "-n",
        "--pidfile=",
        "--logfile=/dev/null",
        *(
            [f"--profile={profile}", "--profiler=cprofile", "--savestats"]
            if profile
            else []
        ),
        "connserver",
        "--asgi",
        "bench_asgi_app:app",
        "--listen",
        f"tcp:{port}:interface=127.0.0.1:backlog=1024",
        "--max-requests",
        "none",
    ]


def daphneArgv(tmp: Path, port: int) -> list[str]:
    return [
        str(Path(python()).parent / "daphne"),
        "-b",
        "127.0.0.1",
        "-p",
        str(port),
        "-v",
        "0",
        "bench_asgi_app:app",
    ]


def uvicornArgv(tmp: Path, port: int) -> list[str]:
    return [
        python(),
        "-m",
        "uvicorn",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--http",
        "httptools",
        "--loop",
        "uvloop",
        "--ws",
        "wsproto",
        "--ws-per-message-deflate",
        "false",
        "--no-access-log",
        "--log-level",
        "warning",
        "--backlog",
        "1024",
        "bench_asgi_app:app",
    ]


def hypercornArgv(tmp: Path, port: int) -> list[str]:
    return [
        python(),
        "-m",
        "hypercorn",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--log-level",
        "warning",
        "bench_asgi_app:app",
    ]


#: name -> (modules it needs, argv for a temporary directory and a port)
SERVERS: dict[str, tuple[tuple[str, ...], Callable[[Path, int], list[str]]]] = {
    "connserver": (("twisted", "wsproto"), connserverArgv),
    "daphne": (("daphne",), daphneArgv),
    "uvicorn": (("uvicorn", "httptools", "uvloop", "wsproto"), uvicornArgv),
    "hypercorn": (("hypercorn",), hypercornArgv),
}
MODES = ("hello", "ws-echo")


def websocketsLoad(
    port: int, seconds: int, tmp: Path, pid: int
) -> tuple[float, float, float]:
    """The ``websockets`` client: (messages/s, server CPU-s, load's core share)."""
    script = tmp / "ws_client.py"
    script.write_text(CLIENT)
    before = treeCpuSeconds(pid)
    out = subprocess.run(
        pinned(
            LOAD_CPU,
            [python(), str(script), f"ws://127.0.0.1:{port}/", "50", str(seconds)],
        ),
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    cpu = treeCpuSeconds(pid) - before
    result = json.loads(out.strip().splitlines()[-1])
    elapsed = float(result["seconds"])
    return float(result["messages"]) / elapsed, cpu, float(result["cpu"]) / elapsed


_sourceRun = os.getpid() % 50 * 1000


def rawLoad(port: int, seconds: int, pid: int) -> tuple[float, float, float]:
    """bench/_wsload.py: (messages/s, server CPU-s, load's core share)."""
    global _sourceRun
    _sourceRun += 1
    sources = f"127.{100 + _sourceRun // 250 % 150}.{_sourceRun % 250 + 1}"
    argv = [python(), str(RAW_LOAD), "echo", str(port), str(seconds)]
    argv += [str(RAW_WARMUP), "50", "1", sources]
    load = subprocess.Popen(
        pinned(LOAD_CPU, argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        assert load.stdout is not None
        for line in load.stdout:
            data = json.loads(line)
            lines.append(data)
            if "start" in data:
                before = treeCpuSeconds(pid)
            if "perSecond" in data:
                cpu = treeCpuSeconds(pid) - before
                return float(data["perSecond"]), cpu, float(data["loadCpu"])
        err = load.stderr.read() if load.stderr else ""
        raise RuntimeError(f"the load ended early: {lines} {err[-1500:]}")
    finally:
        if load.poll() is None:
            load.kill()
        load.wait(timeout=10)
        for stream in (load.stdout, load.stderr):
            if stream is not None:
                stream.close()


def measure(
    name: str,
    tmp: Path,
    modes: list[str],
    seconds: int,
    loadKind: str,
    connections: int = 50,
) -> dict[str, tuple[float, float, float]]:
    """Per mode: (per second, per server CPU-second, the load's core share)."""
    port = freePort()
    url = f"http://127.0.0.1:{port}/"
    figures: dict[str, tuple[float, float, float]] = {}
    env = {"PYTHONPATH": str(tmp)}
    with server(SERVERS[name][1](tmp, port), port, env=env) as process:
        if "hello" in modes:
            wrk(url, connections=50, seconds=1)  # warm up
        for mode in modes:
            if mode == "hello":
                before = treeCpuSeconds(process.pid)
                result = wrk(url, connections=connections, seconds=seconds)
                if result["non2xx"] or result["socketErrors"]:
                    print(f"  ! {name} hello: errors: {result}")
                rate = result["rps"]
                cpu = treeCpuSeconds(process.pid) - before
                loadShare = float("nan")
                elapsed = float(seconds)
            elif loadKind == "raw":
                rate, cpu, loadShare = rawLoad(port, seconds, process.pid)
                elapsed = float(seconds)
            else:
                rate, cpu, loadShare = websocketsLoad(port, seconds, tmp, process.pid)
                elapsed = float(seconds)
            figures[mode] = (rate, rate * elapsed / cpu if cpu > 0 else 0.0, loadShare)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default=",".join(SERVERS))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument(
        "--connections",
        type=int,
        default=50,
        help="hello's wrk -c (1: one client, one request at a time)",
    )
    parser.add_argument(
        "--load",
        choices=("raw", "websockets"),
        default="raw",
        help="ws-echo's client: bench/_wsload.py (raw) or the websockets library",
    )
    args = parser.parse_args()
    wanted = chosen(parser, "--only", args.only, SERVERS)
    modes = chosen(parser, "--modes", args.modes, MODES)
    names = measurable(wanted, lambda name: SERVERS[name][0])
    print(
        f"# ASGI, {args.seconds}s per run, {args.rounds} round(s), "
        f"servers on core 0, load on core 1 (ws-echo: --load {args.load})"
    )
    results: dict[str, dict[str, list[tuple[float, float]]]] = {
        mode: {name: [] for name in names} for mode in modes
    }
    with tempfile.TemporaryDirectory(prefix="bench-asgi-") as tmpName:
        tmp = Path(tmpName)
        (tmp / "bench_asgi_app.py").write_text(APP)
        for round_ in range(args.rounds):
            for name in names:
                try:
                    figures = measure(
                        name, tmp, modes, args.seconds, args.load, args.connections
                    )
                except (RuntimeError, subprocess.SubprocessError) as error:
                    print(f"  ! round {round_ + 1}: {name}: {error}")
                    continue
                for mode, (rate, perCpu, loadShare) in figures.items():
                    results[mode][name].append((rate, perCpu))
                    load = "" if mode == "hello" else f"  load {loadShare:.0%}"
                    print(
                        f"round {round_ + 1}: {mode:8} {name:11} "
                        f"{rate:10.0f} /s {perCpu:10.0f} /CPU-s{load}"
                    )
    for mode in modes:
        rows = {
            name: (
                statistics.median(f[0] for f in figures),
                statistics.median(f[1] for f in figures),
            )
            for name, figures in results[mode].items()
            if figures
        }
        unit = "req" if mode == "hello" else "messages"
        print(f"\n## {mode}: medians\n")
        print(
            f"| server | {unit}/s | vs daphne | vs uvicorn | {unit} per server CPU-s | vs daphne | vs uvicorn |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for name, (rate, perCpu) in rows.items():

            def ratio(
                value: float,
                base: str,
                index: int,
                rows: dict[str, tuple[float, float]] = rows,
            ) -> str:
                other = rows.get(base)
                return f"{value / other[index]:.2f}x" if other and other[index] else "-"

            print(
                f"| {name} | {rate:.0f} | {ratio(rate, 'daphne', 0)} | "
                f"{ratio(rate, 'uvicorn', 0)} | {perCpu:.0f} | "
                f"{ratio(perCpu, 'daphne', 1)} | {ratio(perCpu, 'uvicorn', 1)} |"
            )
        cs = rows.get("connserver")
        for base, target in (
            [("daphne", 3.0), ("uvicorn", 0.6)]
            if mode == "hello"
            else [("daphne", 2.0)]
        ):
            other = rows.get(base)
            if cs and other and other[0]:
                value = cs[0] / other[0]
                verdict = "PASS" if value >= target else "MISS"
                print(
                    f"connserver / {base}, {mode}: {value:.2f}x (target >= {target}x: {verdict})"
                )


if __name__ == "__main__":
    main()
