"""
The request path (issue 11, "lean request path"): connserver's handler path
side by side with twisted.web, aiohttp, uvicorn and two calibrations, in one
run.  Every server answers ``GET /`` with 130 bytes from memory
(``Content-Type: text/plain``), runs in its own process pinned to core 0,
and is loaded by wrk pinned to core 1; the servers alternate within each
round and the tables give the median of the rounds.

Servers (``--only`` takes these names):

* ``connserver``: ``ConnectionFactory`` + a handler returning
  ``Response(200, [(b"Content-Type", b"text/plain")], b"x" * 130)``,
  ``ServerConfig(maxRequestsPerConnection=None)``, from the working tree;
  with ``BENCH_PROFILE=FILE`` in the environment it runs under cProfile and
  writes its stats to FILE when stopped (the figures of that run do not
  count: ``BENCH_PROFILE=/tmp/cs.prof ... --only connserver --rounds 1``);
* ``twisted.web``: ``Site`` + a leaf ``Resource`` (``render_GET``);
* ``aiohttp``: ``aiohttp.web`` on its default asyncio loop, one process,
  ``access_log=None``;
* ``uvicorn``: a raw ASGI app (no framework), ``uvicorn --http httptools
  --loop uvloop --no-access-log --log-level warning --workers 1
  --lifespan off``;
* ``httptools-ceiling`` (calibration): a bare Twisted protocol that feeds
  httptools' parser and writes a fixed response per message, one
  ``transport.write`` per ``dataReceived``;
* ``probe`` (calibration): the pure-Python probe on Twisted: ~80 lines that
  do, per ``dataReceived``, one pass over each complete head (find
  ``\\r\\n\\r\\n``, split lines, partition each field line, lowercase the
  name, check the Connection tokens for close), a Date line cached per
  second, a prebuilt header block with Content-Length, every pipelined
  answer of the buffer joined into one write sent straight to the socket
  when Twisted's buffer is empty (else ``transport.write``), and
  TCP_NODELAY.  No validation and no timers: the cost, in plain Python on
  Twisted's reactor, of the work an HTTP/1.1 server cannot skip.

Modes (``--modes``):

* ``keepalive``: ``wrk -t1 -c50 -d{seconds}s URL``, one request in flight
  per connection;
* ``pipelined``: ``wrk -t1 -c20 -d{seconds}s -s bench/pipeline.lua URL --
  16``: every write carries 16 GETs (wrk counts responses, so the figure is
  responses/s).

Printed: per round figures; per mode a table of medians (requests per
second, and requests per CPU-second of the server process, which holds
steadier when other work shares core 0) with every server as a ratio to
uvicorn and to twisted.web; connserver's pipelined/keep-alive ratio
(target >= 2x) and connserver / probe (aim >= 0.7x), both on req/s.

    bench/.venv-peers/bin/python bench/bench_request_path.py \\
        [--seconds 10] [--rounds 3] [--only connserver,uvicorn,...] \\
        [--modes keepalive,pipelined]
    .venv/bin/python bench/bench_request_path.py   # peers not installed
                                                   # there are skipped

``sh bench/setup-peers.sh`` creates bench/.venv-peers (connserver +
twisted.web + aiohttp + uvicorn/httptools/uvloop).  Bounded: about
rounds x servers x (2 + 2 x seconds) seconds (6 servers, 3 rounds, 10 s:
~7.5 minutes).

The other figures of the issue come from the existing scripts, not this one:

* memory per idle keep-alive connection (connserver, twisted.web and nginx,
  10,000 idle connections): ``python bench/bench_hardening.py --only idle
  [--idle 10000]``;
* static files (130-byte file keep-alive req/s, 1 and 10 MiB MB/s, against
  twisted.web's static.File and nginx): ``python bench/bench_static.py
  [--seconds 10] [--rounds 3]``;
* TLS (keep-alive and a handshake per request, against twistd web and
  nginx): ``python bench/bench_tls.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _servers import (
    chosen,
    freePort,
    measurable,
    measureModes,
    python,
    server,
    wrk,
)

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PIPELINE_LUA = BENCH / "pipeline.lua"
PIPELINE_DEPTH = 16

CONNSERVER = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {repo!r})
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ServerEndpoint
    from connserver import ConnectionFactory, Response, ServerConfig

    BODY = b"x" * 130
    HEADERS = [(b"Content-Type", b"text/plain")]

    def handler(request):
        return Response(200, HEADERS, BODY)

    factory = ConnectionFactory(
        handler, config=ServerConfig(maxRequestsPerConnection=None)
    )
    TCP4ServerEndpoint(
        reactor, int(sys.argv[1]), backlog=1024, interface="127.0.0.1"
    ).listen(factory)
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

TWISTED_WEB = textwrap.dedent(
    """
    import sys
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ServerEndpoint
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    BODY = b"x" * 130

    class Hello(Resource):
        isLeaf = True
        def render_GET(self, request):
            request.setHeader(b"Content-Type", b"text/plain")
            return BODY

    site = Site(Hello())
    site.displayTracebacks = False
    TCP4ServerEndpoint(
        reactor, int(sys.argv[1]), backlog=1024, interface="127.0.0.1"
    ).listen(site)
    reactor.run()
    """
)

AIOHTTP = textwrap.dedent(
    """
    import sys
    from aiohttp import web

    BODY = b"x" * 130

    async def hello(request):
        return web.Response(body=BODY, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/", hello)
    web.run_app(
        app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None,
        print=None, backlog=1024,
    )
    """
)

# Imported by uvicorn as bench_asgi:app from the temporary directory.
ASGI_APP = textwrap.dedent(
    """
    BODY = b"x" * 130
    START = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain"), (b"content-length", b"130")],
    }
    END = {"type": "http.response.body", "body": BODY}

    async def app(scope, receive, send):
        await send(START)
        await send(END)
    """
)

HTTPTOOLS_CEILING = textwrap.dedent(
    """
    import sys
    import httptools
    from twisted.internet import protocol, reactor
    from twisted.internet.endpoints import TCP4ServerEndpoint

    RESPONSE = (
        b"HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\n"
        b"Content-Length: 130\\r\\n\\r\\n" + b"x" * 130
    )

    class Fixed(protocol.Protocol):
        def connectionMade(self):
            self.count = 0
            self.parser = httptools.HttpRequestParser(self)

        def on_message_complete(self):
            self.count += 1

        def dataReceived(self, data):
            self.parser.feed_data(data)
            if self.count:
                self.transport.write(RESPONSE * self.count)
                self.count = 0

    factory = protocol.Factory.forProtocol(Fixed)
    TCP4ServerEndpoint(
        reactor, int(sys.argv[1]), backlog=1024, interface="127.0.0.1"
    ).listen(factory)
    reactor.run()
    """
)

PROBE = textwrap.dedent(
    """
    import socket, sys, time
    from email.utils import formatdate
    from twisted.internet import protocol, reactor
    from twisted.internet.endpoints import TCP4ServerEndpoint

    BODY = b"x" * 130
    STATUS = b"HTTP/1.1 200 OK\\r\\nServer: probe\\r\\n"
    KEEP = b"Content-Type: text/plain\\r\\nContent-Length: 130\\r\\n\\r\\n"
    KEEP10 = b"Connection: keep-alive\\r\\n" + KEEP
    CLOSE = b"Connection: close\\r\\n" + KEEP
    dateCache = [0, b""]

    def dateLine():
        now = int(time.time())
        if now != dateCache[0]:
            dateCache[0] = now
            dateCache[1] = b"Date: " + formatdate(now, usegmt=True).encode() + b"\\r\\n"
        return dateCache[1]

    class Probe(protocol.Protocol):
        def connectionMade(self):
            self.buffer = b""
            self.sock = self.transport.getHandle()
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def dataReceived(self, data):
            buffer = self.buffer + data if self.buffer else data
            answers = []
            start = 0
            close = False
            while True:
                end = buffer.find(b"\\r\\n\\r\\n", start)
                if end < 0:
                    break
                lines = buffer[start:end].split(b"\\r\\n")
                start = end + 4
                http11 = lines[0].endswith(b"HTTP/1.1")
                keepAlive = http11
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    if name.lower() == b"connection":
                        tokens = [t.strip().lower() for t in value.split(b",")]
                        if b"close" in tokens:
                            keepAlive = False
                        elif b"keep-alive" in tokens:
                            keepAlive = True
                if not keepAlive:
                    answers.append(STATUS + dateLine() + CLOSE + BODY)
                    close = True
                    break
                answers.append(STATUS + dateLine() + (KEEP if http11 else KEEP10) + BODY)
            self.buffer = buffer[start:]
            if answers:
                self.send(b"".join(answers))
            if close:
                self.transport.loseConnection()

        def send(self, payload):
            transport = self.transport
            if not transport._tempDataBuffer and (
                len(transport.dataBuffer) <= transport.offset
            ):
                try:
                    payload = payload[self.sock.send(payload):]
                except BlockingIOError:
                    pass
                except OSError:
                    transport.abortConnection()
                    return
            if payload:
                transport.write(payload)

    factory = protocol.Factory.forProtocol(Probe)
    TCP4ServerEndpoint(
        reactor, int(sys.argv[1]), backlog=1024, interface="127.0.0.1"
    ).listen(factory)
    reactor.run()
    """
)


def scriptArgv(tmp: Path, name: str, source: str, port: int, *extra: str) -> list[str]:
    script = tmp / f"{name}.py"
    script.write_text(source)
    return [python(), str(script), str(port), *extra]


def uvicornArgv(tmp: Path, port: int) -> list[str]:
    (tmp / "bench_asgi.py").write_text(ASGI_APP)
    return [
        python(),
        "-m",
        "uvicorn",
        "--app-dir",
        str(tmp),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--http",
        "httptools",
        "--loop",
        "uvloop",
        "--no-access-log",
        "--log-level",
        "warning",
        "--workers",
        "1",
        "--lifespan",
        "off",
        "--backlog",
        "1024",
        "bench_asgi:app",
    ]


#: name -> (modules it needs, argv for a temporary directory and a port)
SERVERS: dict[str, tuple[tuple[str, ...], Callable[[Path, int], list[str]]]] = {
    "connserver": (
        ("twisted",),
        lambda tmp, port: scriptArgv(
            tmp, "connserver_app", CONNSERVER.format(repo=str(REPO)), port
        ),
    ),
    "twisted.web": (
        ("twisted.web",),
        lambda tmp, port: scriptArgv(tmp, "twisted_web", TWISTED_WEB, port),
    ),
    "aiohttp": (
        ("aiohttp",),
        lambda tmp, port: scriptArgv(tmp, "aiohttp_app", AIOHTTP, port),
    ),
    "uvicorn": (("uvicorn", "httptools", "uvloop"), uvicornArgv),
    "httptools-ceiling": (
        ("httptools", "twisted"),
        lambda tmp, port: scriptArgv(tmp, "httptools_ceiling", HTTPTOOLS_CEILING, port),
    ),
    "probe": (
        ("twisted",),
        lambda tmp, port: scriptArgv(tmp, "probe", PROBE, port),
    ),
}

DEFAULT_SERVERS = list(SERVERS)
CALIBRATIONS = ("httptools-ceiling", "probe")
MODES = ("keepalive", "pipelined")
LABELS = {
    "keepalive": "keep-alive, wrk -t1 -c50",
    "pipelined": f"pipelined x{PIPELINE_DEPTH}, wrk -t1 -c20 -s pipeline.lua",
}


def load(mode: str, url: str, seconds: int) -> dict[str, float]:
    if mode == "pipelined":
        return wrk(
            url,
            connections=20,
            seconds=seconds,
            script=str(PIPELINE_LUA),
            scriptArgs=[str(PIPELINE_DEPTH)],
        )
    return wrk(url, connections=50, seconds=seconds)


def measure(
    name: str, tmp: Path, modes: list[str], seconds: int
) -> dict[str, tuple[float, float]]:
    """
    Start one server, warm it up, and measure every mode against it: requests
    per second and requests per CPU-second of the server process.
    """
    port = freePort()
    url = f"http://127.0.0.1:{port}/"
    with server(SERVERS[name][1](tmp, port), port) as process:
        return measureModes(
            name,
            process.pid,
            url,
            modes,
            seconds,
            lambda mode: load(mode, url, seconds),
        )


def ratio(value: float, base: float | None) -> str:
    return f"{value / base:.2f}x" if base else "-"


def report(mode: str, rps: dict[str, float], perCpu: dict[str, float]) -> None:
    print()
    print(f"## {LABELS[mode]}: medians")
    print()
    print(
        "| server | req/s | vs uvicorn | vs twisted.web "
        "| req per server CPU-s | vs uvicorn | vs twisted.web |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, value in rps.items():
        label = f"{name} (calibration)" if name in CALIBRATIONS else name
        cpu = perCpu[name]
        print(
            f"| {label} | {value:.0f} | {ratio(value, rps.get('uvicorn'))} | "
            f"{ratio(value, rps.get('twisted.web'))} | {cpu:.0f} | "
            f"{ratio(cpu, perCpu.get('uvicorn'))} | "
            f"{ratio(cpu, perCpu.get('twisted.web'))} |"
        )


def verdict(label: str, value: float, target: float, word: str = "target") -> str:
    return f"{label}: {value:.2f}x ({word} >= {target}x: " + (
        "PASS)" if value >= target else "MISS)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--only",
        default=",".join(DEFAULT_SERVERS),
        help=f"comma-separated, among {', '.join(SERVERS)}",
    )
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args()
    wanted = chosen(parser, "--only", args.only, SERVERS)
    modes = chosen(parser, "--modes", args.modes, MODES)
    names = measurable(wanted, lambda name: SERVERS[name][0])

    print(
        f"# request path, 130 bytes from memory, {args.seconds}s per run, "
        f"{args.rounds} round(s), servers on core 0, wrk on core 1"
    )
    # results[mode][name] = [(req/s, req per CPU-s), ...], one per round
    results: dict[str, dict[str, list[tuple[float, float]]]] = {
        mode: {name: [] for name in names} for mode in modes
    }
    with tempfile.TemporaryDirectory(prefix="bench-request-path-") as tmpName:
        tmp = Path(tmpName)
        for round_ in range(args.rounds):
            for name in names:
                try:
                    figures = measure(name, tmp, modes, args.seconds)
                except RuntimeError as error:
                    print(f"  ! round {round_ + 1}: {name}: {error}")
                    continue
                for mode, (perSecond, perCpuSecond) in figures.items():
                    results[mode][name].append((perSecond, perCpuSecond))
                    print(
                        f"round {round_ + 1}: {mode:9} {name:18} "
                        f"{perSecond:10.0f} req/s {perCpuSecond:10.0f} req/CPU-s"
                    )

    def medians(mode: str, index: int) -> dict[str, float]:
        return {
            name: statistics.median(figure[index] for figure in figures)
            for name, figures in results[mode].items()
            if figures
        }

    rps = {mode: medians(mode, 0) for mode in modes}
    perCpu = {mode: medians(mode, 1) for mode in modes}
    for mode in modes:
        report(mode, rps[mode], perCpu[mode])

    print()
    cs = {mode: rps[mode].get("connserver") for mode in modes}
    keep, pipe = cs.get("keepalive"), cs.get("pipelined")
    if keep and pipe:
        print(
            verdict(
                f"connserver pipelined x{PIPELINE_DEPTH} / keep-alive", pipe / keep, 2
            )
        )
    for mode in modes:
        probe = rps[mode].get("probe")
        value = cs[mode]
        if value and probe:
            print(verdict(f"connserver / probe, {mode}", value / probe, 0.7, "aim"))
    print(
        "(req/s ratios; the req per server CPU-s columns hold steadier when "
        "other work shares core 0, but flatter a server that waits, e.g. on "
        "Nagle's algorithm)"
    )


if __name__ == "__main__":
    main()
