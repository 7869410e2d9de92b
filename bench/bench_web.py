#!/usr/bin/env python3
# twisted.web and the endpoint APIs are untyped; this script is not library code.
# mypy: disable-error-code="no-untyped-call"
"""
The same twisted.web ``Resource`` (130 bytes, ``render_GET``) served by
twisted.web's ``Site`` and by connserver's ``WebResourceHandler``, measured
in one run.

Each server is a subprocess pinned to CPU 0 (``taskset -c 0``); wrk runs on
CPU 1 (``taskset -c 1 wrk -t1 -c50 -d10s``, keep-alive), and the servers
alternate for a few rounds so that drift on the machine hits both alike.
It prints requests per second (and requests per CPU-second of the server
process, which holds steadier on a shared machine) for every round, the
medians and their ratios (the target, issue 11, is connserver >= 1.2x).  Bounded:
rounds x duration, plus a short warm-up per round.

    python bench/bench_web.py                 # 3 rounds of 10 s each
    python bench/bench_web.py --rounds 2 --duration 5
    python bench/bench_web.py --profile /tmp/web.prof   # also cProfile connserver
    python bench/bench_web.py --inprocess     # CPU per request, no sockets
    python bench/bench_web.py --inprocess --profile /tmp/web.prof

Not a test: it needs wrk and taskset, and takes about a minute.
``--inprocess`` needs neither: it feeds keep-alive GETs to twisted.web's
``HTTPChannel`` and to connserver's protocol (each on an in-memory
transport that discards writes), and calls the adapter directly, then
prints microseconds of CPU per request, which holds steady on a shared
machine.  Site is measured twice: as built, and started as it is when
listening, when it also writes an access-log line per request (the wrk
runs measure that one).  With ``--profile`` it cProfiles the connserver
path instead.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BODY = b"x" * 130
SERVERS = ("twisted.web Site", "connserver adapter")


def makeResource() -> Any:
    from twisted.web.resource import Resource

    class Hello(Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> bytes:
            request.setHeader(b"Content-Type", b"text/plain")
            return BODY

    return Hello()


def makeKleinApp() -> Any:
    """The same answer as a Klein route (``--app klein``)."""
    from klein import Klein

    app = Klein()

    @app.route("/")
    def hello(request: Any) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain")
        return BODY

    return app


def serve(kind: str, profile: str | None, app: str = "resource") -> None:
    """Run one server on 127.0.0.1, print its port, serve until SIGTERM."""
    sys.path.insert(0, str(ROOT))
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ServerEndpoint

    klein = makeKleinApp() if app == "klein" else None
    resource = klein.resource() if klein is not None else makeResource()
    if kind == "twisted":
        from twisted.web.server import Site

        factory: Any = Site(resource)
    else:
        from connserver._connection.factory import ConnectionFactory
        from connserver._handlers.web import WebResourceHandler, asHandler
        from connserver._http.config import ServerConfig

        factory = ConnectionFactory(
            asHandler(klein) if klein is not None else WebResourceHandler(resource),
            config=ServerConfig(),
        )

    def listening(port: Any) -> None:
        print(f"PORT {port.getHost().port}", flush=True)

    endpoint = TCP4ServerEndpoint(reactor, 0, backlog=1024, interface="127.0.0.1")
    endpoint.listen(factory).addCallback(listening)
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.runcall(reactor.run)
        profiler.dump_stats(profile)
    else:
        reactor.run()


def startServer(
    kind: str, profile: str | None = None, app: str = "resource"
) -> tuple[subprocess.Popen[str], int]:
    command = ["taskset", "-c", "0", sys.executable, __file__, "--serve", kind]
    command += ["--app", app]
    if profile:
        command += ["--profile", profile]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("PORT "):
            return process, int(line.split()[1])
        if not line and process.poll() is not None:
            break
    stopServer(process)
    raise RuntimeError(f"{kind} server did not start")


def stopServer(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def cpuSeconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(port: int, duration: float, connections: int) -> tuple[float, int]:
    """Requests per second, and the number of requests, from one wrk run."""
    command = [
        "taskset", "-c", "1", "wrk", "-t1", f"-c{connections}",
        f"-d{duration:g}s", f"http://127.0.0.1:{port}/",
    ]  # fmt: skip
    out = subprocess.run(
        command, capture_output=True, text=True, timeout=duration + 30, check=True
    ).stdout
    if re.search(r"Non-2xx or 3xx responses|Socket errors", out):
        raise RuntimeError(f"wrk saw errors:\n{out}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rate is None or total is None:
        raise RuntimeError(f"no Requests/sec in wrk output:\n{out}")
    return float(rate.group(1)), int(total.group(1))


def checkResponse(port: int) -> None:
    """One request first: both servers must answer the same 130 bytes."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/")
    response = connection.getresponse()
    body = response.read()
    connection.close()
    if response.status != 200 or body != BODY:
        raise RuntimeError(f"unexpected response {response.status} {body[:40]!r}")


REQUEST = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
)


def inProcessLoops(requests: int) -> dict[str, Any]:
    """Functions running ``requests`` requests each, in memory."""
    sys.path.insert(0, str(ROOT))
    from twisted.internet.address import IPv4Address
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport
    from twisted.web.server import Site

    from connserver._connection.factory import ConnectionFactory
    from connserver._connection.message import Request
    from connserver._handlers.web import WebResourceHandler
    from connserver._http.config import ServerConfig
    from connserver._http.headers import Headers

    peer = IPv4Address("TCP", "127.0.0.1", 40000)

    class NullTransport(StringTransport):
        def write(self, data: bytes) -> None:
            pass

        def writeSequence(self, data: object) -> None:
            pass

    def site(started: bool = False) -> None:
        factory = Site(makeResource(), reactor=Clock())
        if started:
            # As when listening (as in the wrk runs): Site then writes its
            # access-log line for every request, to the Twisted log.
            factory.doStart()
        channel = factory.buildProtocol(peer)
        channel.makeConnection(NullTransport(peerAddress=peer))
        data = channel.dataReceived
        for _ in range(requests):
            data(REQUEST)

    def protocol() -> None:
        clock = Clock()
        handler = WebResourceHandler(makeResource(), reactor=clock)
        config = ServerConfig(maxRequestsPerConnection=None)
        factory = ConnectionFactory(handler, config, reactor=clock)
        connection = factory.buildProtocol(peer)
        connection.makeConnection(NullTransport(peerAddress=peer))
        data = connection.dataReceived
        for _ in range(requests):
            data(REQUEST)

    def trivial() -> None:
        from connserver._connection.message import Response

        def handler(request: object) -> Response:
            return Response(200, [(b"Content-Type", b"text/plain")], BODY)

        config = ServerConfig(maxRequestsPerConnection=None)
        factory = ConnectionFactory(handler, config, reactor=Clock())
        connection = factory.buildProtocol(peer)
        connection.makeConnection(NullTransport(peerAddress=peer))
        data = connection.dataReceived
        for _ in range(requests):
            data(REQUEST)

    def adapter() -> None:
        handler = WebResourceHandler(makeResource(), reactor=Clock())
        fields = Headers([(b"Host", b"127.0.0.1:8080"), (b"Accept", b"*/*")])
        for _ in range(requests):
            handler(Request(b"GET", b"/", (1, 1), fields, peer=peer, host=peer))

    return {
        "twisted.web Site (HTTPChannel)": site,
        "twisted.web Site, listening": lambda: site(started=True),
        "connserver protocol + adapter": protocol,
        "adapter called directly": adapter,
        "connserver, a trivial handler": trivial,
    }


def inProcess(requests: int, rounds: int, profile: str | None) -> None:
    """Print CPU microseconds per request for each in-memory loop."""
    loops = inProcessLoops(requests)
    if profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(loops["connserver protocol + adapter"])
        profiler.dump_stats(profile)
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)
        return
    # The loops take turns, and each keeps its best round, so that a busy
    # spell on the machine does not land on one of them only.
    best = dict.fromkeys(loops, float("inf"))
    for _ in range(rounds):
        for name, loop in loops.items():
            start = time.process_time()
            loop()
            best[name] = min(best[name], time.process_time() - start)
    costs = {name: seconds / requests * 1e6 for name, seconds in best.items()}
    for name, cost in costs.items():
        print(f"{name:<32} {cost:6.1f} us CPU per request")
    ours = costs["connserver protocol + adapter"]
    for name in ("twisted.web Site (HTTPChannel)", "twisted.web Site, listening"):
        print(f"ratio {name} / connserver adapter: {costs[name] / ours:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--app",
        choices=["resource", "klein"],
        default="resource",
        help="a twisted.web Resource (default) or the same answer as a Klein route",
    )
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument(
        "--profile", help="cProfile the connserver server into this file"
    )
    parser.add_argument(
        "--inprocess", action="store_true", help="CPU per request, no sockets"
    )
    parser.add_argument(
        "--requests", type=int, default=10000, help="per --inprocess round"
    )
    parser.add_argument(
        "--serve", choices=["twisted", "connserver"], help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.profile, args.app)
        return
    if args.inprocess:
        inProcess(args.requests, args.rounds, args.profile)
        return
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is required")
    if not 1 <= args.rounds <= 5 or not 1 <= args.duration <= 30:
        sys.exit("keep it bounded: 1-5 rounds of 1-30 s")
    results: dict[str, list[float]] = {name: [] for name in SERVERS}
    perCpu: dict[str, list[float]] = {name: [] for name in SERVERS}
    print(
        f"wrk -t1 -c{args.connections} -d{args.duration:g}s, keep-alive; "
        f"servers on CPU 0, wrk on CPU 1; {args.rounds} rounds",
        flush=True,
    )
    for number in range(1, args.rounds + 1):
        for name, kind in zip(SERVERS, ("twisted", "connserver"), strict=True):
            process, port = startServer(kind, app=args.app)
            try:
                checkResponse(port)
                wrk(port, args.warmup, args.connections)
                before = cpuSeconds(process.pid)
                rate, count = wrk(port, args.duration, args.connections)
                used = cpuSeconds(process.pid) - before
            finally:
                stopServer(process)
            results[name].append(rate)
            perCpu[name].append(count / used if used else 0.0)
            print(
                f"round {number}: {name:<20} {rate:>8.0f} req/s "
                f"{perCpu[name][-1]:>8.0f} req/CPU-s",
                flush=True,
            )
    medians = {name: statistics.median(rates) for name, rates in results.items()}
    cpuMedians = {name: statistics.median(v) for name, v in perCpu.items()}
    for name in SERVERS:
        print(
            f"median: {name:<20} {medians[name]:>8.0f} req/s "
            f"{cpuMedians[name]:>8.0f} req/CPU-s"
        )
    ratio = medians[SERVERS[1]] / medians[SERVERS[0]]
    cpuRatio = cpuMedians[SERVERS[1]] / cpuMedians[SERVERS[0]]
    print(f"ratio connserver / twisted.web: {ratio:.2f}x req/s (target >= 1.2x)")
    print(
        f"ratio connserver / twisted.web: {cpuRatio:.2f}x requests per server "
        "CPU-second (steadier when the machine is shared)"
    )
    if args.profile:
        process, port = startServer("connserver", args.profile, args.app)
        try:
            wrk(port, args.duration, args.connections)
        finally:
            stopServer(process)
        import pstats

        print(f"\ncProfile of the connserver server ({args.profile}):")
        pstats.Stats(args.profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
