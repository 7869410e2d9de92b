"""
WebSockets (issue 22): the same autobahn echo protocol served by connserver's
takeover, by twisted.web and by autobahn alone, in one run.

Every host serves one ``WebSocketServerFactory`` whose protocol answers
``onMessage`` with ``sendMessage(payload, isBinary)``, on ``ws://
127.0.0.1:PORT/``, default protocol options, in its own process pinned to
core 0 (``--only`` takes these names):

* ``connserver``: the takeover, ``ConnectionFactory(WebSocketHandler(
  factory))`` (default ``ServerConfig``), from the working tree; with
  ``BENCH_PROFILE=FILE`` in the environment it runs under cProfile and writes
  its stats to FILE when stopped (the figures of that run do not count:
  ``BENCH_PROFILE=/tmp/ws.prof ... --only connserver --figures echo
  --rounds 1``);
* ``twisted.web``: ``Site(WebSocketResource(factory))``;
* ``listenWS``: the factory itself on ``reactor.listenTCP`` (what autobahn's
  ``listenWS`` does, with the backlog and interface of the others);
* ``connserver.resource`` (not run unless named): the twisted.web path on
  connserver, ``ConnectionFactory(asHandler(WebSocketResource(factory)))``.

Every listener has a backlog of 1024.  The load is bench/_wsload.py, a
raw-socket client on one epoll loop pinned to core 1, with frames built
beforehand (its docstring has the details); it prints the share of its core
it used, and the script warns above 90 % (then the client may set the
figure).  Figures (``--figures``):

* ``echo``: messages per second.  ``--connections`` (50) WebSockets, each
  keeping ``--inflight`` (1) binary messages of 64 bytes in flight: every
  echo read sends the next message.  Every echo is checked byte for byte
  (frame header and payload, per connection and in order); a wrong one ends
  the run with an error.  1 s of warm-up on the same connections, then
  ``--seconds`` counted.  Also messages per CPU-second of the server process
  (its user + system time over the counted window, from /proc), which holds
  steadier when other work shares core 0.
* ``handshake``: handshakes per second.  ``--connections`` concurrent
  clients, each in a loop: connect, write a fixed handshake request
  (``Upgrade: websocket``, ``Sec-WebSocket-Key``, version 13), read the
  ``101`` to the end of its head and check its ``Sec-WebSocket-Accept``,
  then close the TCP connection (no close frame).  1 s of warm-up, then
  ``--seconds`` counted; also handshakes per server CPU-second.  Every
  connection binds its own source address out of 127.x.y.0/24 (fresh per
  run), so ephemeral ports and TIME_WAIT never run short.
* ``idle``: KiB of server RSS per open WebSocket, measured as
  bench_hardening.py's idle figure does, on a fresh server: 50 handshakes
  and closes and 50 messages to warm it up, RSS after 0.5 s, then
  ``--idle`` (500) WebSockets opened one after the other, one message
  echoed on each, RSS 1 s after the last echo; (after - before) / count.

``--skip-autobahn-pformat`` is a diagnostic, not the issue's figure: every
host replaces ``autobahn.websocket.protocol.pformat`` with a stub, since
autobahn's ``_connectionMade`` pretty-prints its 29 protocol options for a
debug log on every connection whether or not anything logs (with autobahn
26.11 that is most of a handshake's CPU time under every host), so the
handshake figures show the hosts' own cost.

Hosts alternate within each round and their order rotates every round; each
figure has a fresh server process.  The tables give the median over rounds,
every host as a ratio to ``listenWS`` and to ``twisted.web``, and the
verdicts of issue 22: connserver / listenWS messages per second (target >=
1.0x: hosting must cost nothing once the socket is open) and connserver /
twisted.web handshakes per second (target >= 2x).

    python bench/bench_websocket.py [--rounds 3] [--seconds 5]
        [--only connserver,twisted.web,listenWS[,connserver.resource]]
        [--figures echo,handshake,idle] [--connections 50] [--inflight 1]
        [--idle 500] [--skip-autobahn-pformat] [--json FILE]

The per-run lines give the share of a core the server and the load used: on
a machine shared with other work the server gets well under 100 % of core 0,
and its per-second figures move with that (on a busy 2-core machine they
moved by up to 2x between rounds while the per CPU-s figures held within
~5 %; read those then, and run twice).

Needs autobahn (the ``test`` extra has it).  Loopback only.  Bounded: about
rounds x hosts x (2 x (3 + seconds) + 4) seconds (3 hosts, 3 rounds, 5 s:
~3 minutes).
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
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _servers import (
    LOAD_CPU,
    chosen,
    freePort,
    importable,
    pinned,
    python,
    server,
    treeCpuSeconds,
)
from bench_hardening import RAISE_NOFILE, treeRssKiB

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
LOAD = BENCH / "_wsload.py"
WARMUP = 1.0

#: argv: host, port.
SERVER = RAISE_NOFILE + textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {repo!r})
    from twisted.internet import reactor
    from autobahn.twisted.websocket import (
        WebSocketServerFactory, WebSocketServerProtocol,
    )

    host, port = sys.argv[1], int(sys.argv[2])

    if os.environ.get("BENCH_SKIP_PFORMAT"):
        # --skip-autobahn-pformat: autobahn formats its configuration for a
        # debug log on every connection, logged or not.
        import autobahn.websocket.protocol
        autobahn.websocket.protocol.pformat = lambda obj: "(skipped)"

    class Echo(WebSocketServerProtocol):
        def onMessage(self, payload, isBinary):
            self.sendMessage(payload, isBinary)

    factory = WebSocketServerFactory(f"ws://127.0.0.1:{{port}}")
    factory.protocol = Echo

    if host == "connserver":
        from connserver import ConnectionFactory, WebSocketHandler
        listening = ConnectionFactory(WebSocketHandler(factory))
    elif host == "connserver.resource":
        from autobahn.twisted.resource import WebSocketResource
        from connserver import ConnectionFactory, asHandler
        listening = ConnectionFactory(asHandler(WebSocketResource(factory)))
    elif host == "twisted.web":
        from autobahn.twisted.resource import WebSocketResource
        from twisted.web.server import Site
        listening = Site(WebSocketResource(factory))
    elif host == "listenWS":
        listening = factory
    else:
        sys.exit(f"unknown host {{host!r}}")
    reactor.listenTCP(port, listening, backlog=1024, interface="127.0.0.1")
    profile = os.environ.get("BENCH_PROFILE")
    if profile:
        import cProfile, signal
        profiler = cProfile.Profile()
        signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(reactor.stop))
        profiler.runcall(reactor.run)
        profiler.dump_stats(profile)
    else:
        reactor.run()
    """
)

HOSTS = ("connserver", "twisted.web", "listenWS", "connserver.resource")
DEFAULT_HOSTS = ("connserver", "twisted.web", "listenWS")
FIGURES = ("echo", "handshake", "idle")


class Sources:
    """A fresh 127.x.y prefix for every load run (see _wsload.py)."""

    def __init__(self) -> None:
        self.run = os.getpid() % 50 * 1000

    def next(self) -> str:
        self.run += 1
        return f"127.{100 + self.run // 250 % 150}.{self.run % 250 + 1}"


def serverArgv(tmp: Path, host: str, port: int) -> list[str]:
    script = tmp / "ws_server.py"
    if not script.exists():
        script.write_text(SERVER.format(repo=str(REPO)))
    return [python(), str(script), host, str(port)]


def serverEnv(args: argparse.Namespace) -> dict[str, str]:
    return {"BENCH_SKIP_PFORMAT": "1"} if args.skip_autobahn_pformat else {}


def startLoad(
    mode: str,
    port: int,
    seconds: float,
    warmup: float,
    connections: int,
    inflight: int,
    sources: str,
) -> subprocess.Popen[str]:
    argv = [
        python(),
        str(LOAD),
        mode,
        str(port),
        str(seconds),
        str(warmup),
        str(connections),
        str(inflight),
        sources,
    ]
    return subprocess.Popen(
        pinned(LOAD_CPU, argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def readLine(load: subprocess.Popen[str], key: str) -> dict[str, Any]:
    """The next JSON line of the load; a RuntimeError if it ends first."""
    assert load.stdout is not None
    line = load.stdout.readline()
    if line:
        data: dict[str, Any] = json.loads(line)
        if key in data:
            return data
    load.kill()
    err = load.stderr.read() if load.stderr else ""
    raise RuntimeError(f"no {key!r} from the load ({line.strip()!r}): {err[-1500:]}")


def measureLoad(
    mode: str,
    host: str,
    tmp: Path,
    args: argparse.Namespace,
    sources: Sources,
) -> dict[str, float]:
    """
    One fresh server, one load run: per second, per server CPU-second, and
    the load's share of its core.
    """
    port = freePort()
    with server(serverArgv(tmp, host, port), port, env=serverEnv(args)) as process:
        load = startLoad(
            mode,
            port,
            args.seconds,
            WARMUP,
            args.connections,
            args.inflight if mode == "echo" else 0,
            sources.next(),
        )
        try:
            readLine(load, "start")
            cpuBefore = treeCpuSeconds(process.pid)
            result = readLine(load, "perSecond")
            cpu = treeCpuSeconds(process.pid) - cpuBefore
        finally:
            try:
                load.wait(timeout=args.seconds + 30)
            except subprocess.TimeoutExpired:
                load.kill()
                load.wait(timeout=5)
    count = result["messages" if mode == "echo" else "handshakes"]
    if result.get("failed"):
        print(f"  ! {host} {mode}: {result['failed']} connection(s) closed early")
    if result["loadCpu"] > 0.9:
        print(
            f"  ! {host} {mode}: the load used {result['loadCpu']:.0%} of its "
            "core: the client may have set this figure"
        )
    return {
        "perSecond": result["perSecond"],
        "perCpu": count / cpu if cpu > 0 else 0.0,
        "serverCpu": cpu / result["elapsed"],
        "loadCpu": result["loadCpu"],
    }


def measureIdle(
    host: str, tmp: Path, args: argparse.Namespace, sources: Sources
) -> float:
    """KiB of server RSS per open WebSocket (one message echoed on each)."""
    port = freePort()
    with server(serverArgv(tmp, host, port), port, env=serverEnv(args)) as process:
        warm = startLoad("handshake", port, 0.3, 0, 50, 0, sources.next())
        readLine(warm, "start")
        readLine(warm, "perSecond")
        warm.wait(timeout=30)
        warm = startLoad("idle", port, 0, 0, 50, 0, sources.next())
        readLine(warm, "idle")
        warm.wait(timeout=30)
        time.sleep(0.5)
        before = treeRssKiB(process.pid)
        clients = startLoad("idle", port, 120, 0, args.idle, 0, sources.next())
        try:
            readLine(clients, "idle")
            time.sleep(1.0)
            after = treeRssKiB(process.pid)
        finally:
            clients.kill()
            clients.wait(timeout=10)
    return (after - before) / args.idle


def ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}x" if value and base else "-"


def verdict(label: str, value: float, target: float) -> str:
    return f"{label}: {value:.2f}x (target >= {target}x: " + (
        "PASS)" if value >= target else "MISS)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument(
        "--only",
        default=",".join(DEFAULT_HOSTS),
        help=f"comma-separated, among {', '.join(HOSTS)}",
    )
    parser.add_argument("--figures", default=",".join(FIGURES))
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--inflight", type=int, default=1)
    parser.add_argument("--idle", type=int, default=500)
    parser.add_argument(
        "--skip-autobahn-pformat",
        action="store_true",
        help="a diagnostic: every host without autobahn's per-connection pformat",
    )
    parser.add_argument("--json", type=Path, help="write the figures there")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    hosts = chosen(parser, "--only", args.only, HOSTS)
    figures = chosen(parser, "--figures", args.figures, FIGURES)
    if not 1 <= args.inflight <= 16:
        parser.error("--inflight: 1 to 16")
    if not importable("autobahn", "twisted.web"):
        sys.exit("autobahn is not installed here: pip install -e '.[test]'")

    print(
        f"# WebSockets, autobahn echo: {args.rounds} round(s), {args.seconds:g}s "
        f"per run, {args.connections} connections, {args.inflight} message(s) "
        f"of 64 bytes in flight each, {args.idle} idle; servers on core 0, "
        f"load on core 1; {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.2f} at start"
        + ("; autobahn's pformat skipped" if args.skip_autobahn_pformat else "")
    )
    started = time.monotonic()
    sources = Sources()
    # results[figure][host] = [figures of one round, ...]
    results: dict[str, dict[str, list[dict[str, float]]]] = {
        figure: {host: [] for host in hosts} for figure in figures
    }
    with tempfile.TemporaryDirectory(prefix="bench-websocket-") as tmpName:
        tmp = Path(tmpName)
        for round_ in range(args.rounds):
            shift = round_ % len(hosts)
            order = hosts[shift:] + hosts[:shift]
            for figure in figures:
                for host in order:
                    try:
                        if figure == "idle":
                            kib = measureIdle(host, tmp, args, sources)
                            results[figure][host].append({"kib": kib})
                            print(
                                f"round {round_ + 1}: idle      {host:19} "
                                f"{kib:8.2f} KiB per WebSocket"
                            )
                            continue
                        got = measureLoad(figure, host, tmp, args, sources)
                    except (RuntimeError, subprocess.SubprocessError) as error:
                        print(f"  ! round {round_ + 1}: {figure} {host}: {error}")
                        continue
                    results[figure][host].append(got)
                    unit = "msg" if figure == "echo" else "hs"
                    print(
                        f"round {round_ + 1}: {figure:9} {host:19} "
                        f"{got['perSecond']:8.0f} {unit}/s {got['perCpu']:8.0f} "
                        f"{unit}/CPU-s (server {got['serverCpu']:.0%}, load "
                        f"{got['loadCpu']:.0%} of a core)"
                    )
    elapsed = time.monotonic() - started

    def median(figure: str, host: str, key: str) -> float | None:
        values = [entry[key] for entry in results[figure][host]]
        return statistics.median(values) if values else None

    report: dict[str, Any] = {}
    titles = {
        "echo": (
            f"echo, 64-byte binary messages, {args.connections} connections x "
            f"{args.inflight} in flight",
            "msg/s",
            "msg per server CPU-s",
        ),
        "handshake": (
            f"handshakes (connect, 101, close), {args.connections} concurrent",
            "handshakes/s",
            "per server CPU-s",
        ),
    }
    for figure in figures:
        report[figure] = {
            host: {
                "rounds": results[figure][host],
                "median": {
                    key: median(figure, host, key)
                    for key in (
                        results[figure][host][0] if results[figure][host] else {}
                    )
                },
            }
            for host in hosts
        }
        print()
        if figure == "idle":
            print(f"## idle: {args.idle} open WebSockets, medians")
            print()
            print("| host | KiB RSS per WebSocket | vs listenWS | vs twisted.web |")
            print("| --- | --- | --- | --- |")
            base = {name: median(figure, name, "kib") for name in hosts}
            for host in hosts:
                value = base[host]
                print(
                    f"| {host} | {'-' if value is None else f'{value:.2f}'} | "
                    f"{ratio(value, base.get('listenWS'))} | "
                    f"{ratio(value, base.get('twisted.web'))} |"
                )
            continue
        title, unit, perCpuUnit = titles[figure]
        print(f"## {title}: medians")
        print()
        print(
            f"| host | {unit} | vs listenWS | vs twisted.web | {perCpuUnit} "
            "| vs listenWS | vs twisted.web |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- |")
        rate = {name: median(figure, name, "perSecond") for name in hosts}
        perCpu = {name: median(figure, name, "perCpu") for name in hosts}
        for host in hosts:
            value, cpu = rate[host], perCpu[host]
            print(
                f"| {host} | {'-' if value is None else f'{value:.0f}'} | "
                f"{ratio(value, rate.get('listenWS'))} | "
                f"{ratio(value, rate.get('twisted.web'))} | "
                f"{'-' if cpu is None else f'{cpu:.0f}'} | "
                f"{ratio(cpu, perCpu.get('listenWS'))} | "
                f"{ratio(cpu, perCpu.get('twisted.web'))} |"
            )

    print()
    verdicts = {}
    for figure, peer, target in (
        ("echo", "listenWS", 1.0),
        ("handshake", "twisted.web", 2.0),
    ):
        if figure not in figures or "connserver" not in hosts or peer not in hosts:
            continue
        for key, label in (("perSecond", "per second"), ("perCpu", "per CPU-s")):
            ours, theirs = median(figure, "connserver", key), median(figure, peer, key)
            if ours and theirs:
                verdicts[f"{figure}/{peer} {key}"] = ours / theirs
                print(
                    verdict(
                        f"connserver / {peer}, {figure} {label}", ours / theirs, target
                    )
                )
    print(f"medians of {args.rounds} round(s); took {elapsed:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "settings": {
                        "rounds": args.rounds,
                        "seconds": args.seconds,
                        "connections": args.connections,
                        "inflight": args.inflight,
                        "idle": args.idle,
                        "skipAutobahnPformat": args.skip_autobahn_pformat,
                        "hosts": hosts,
                        "figures": figures,
                    },
                    "elapsedSeconds": elapsed,
                    "figures": report,
                    "verdicts": verdicts,
                },
                indent=2,
            )
            + "\n"
        )
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
