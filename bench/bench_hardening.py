"""
The three hardening figures of issue 7, each bounded in time and connections,
servers on 127.0.0.1 pinned to core 0, load pinned to core 1:

1. ``slowloris``: keep-alive throughput (wrk) with and without 500
   connections trickling a request head one byte a second; every trickling
   connection must be closed within requestHeadTimeout + 1 s.
2. ``idle``: resident memory per idle keep-alive connection with 10,000 of
   them open (connserver, twisted.web and nginx measured the same way), and
   the latency of a new client meanwhile.
3. ``download``: a client that never reads a 64 MiB file: the server's
   resident memory over time, and when the connection is cut (sendTimeout).

    python bench/bench_hardening.py [--only slowloris|idle|download]
        [--slow 500] [--idle 10000] [--head-timeout 10] [--seconds 5]

Descriptor limits are raised to the hard limit inside the script and the
servers (``resource.setrlimit``), never above it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _servers
from _servers import LOAD_CPU, freePort, pinned, python, server, wrk

RAISE_NOFILE = (
    "import resource\n"
    "_s, _h = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
    "resource.setrlimit(resource.RLIMIT_NOFILE, (_h, _h))\n"
)

CONNSERVER = RAISE_NOFILE + textwrap.dedent(
    """
    import json, sys, time
    from twisted.internet import reactor, task
    from twisted.internet.endpoints import TCP4ServerEndpoint
    from connserver import ConnectionFactory, Response, ServerConfig

    port, headTimeout, sendTimeout, bigFile = (
        int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    )
    BODY = b"x" * 130

    def handler(request):
        if request.path == b"/big":
            return Response(200, body=open(bigFile, "rb"))
        return Response(200, [(b"Content-Type", b"text/plain")], BODY)

    factory = ConnectionFactory(handler, config=ServerConfig(
        requestHeadTimeout=headTimeout, sendTimeout=sendTimeout,
        idleTimeout=300.0, maxConnections=50000, maxRequestsPerConnection=None,
    ))

    def report():
        with open("/proc/self/status") as f:
            rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        print(json.dumps({"t": time.time(), "rssKiB": rss,
                          "closes": dict(factory.stats.closes),
                          "active": factory.stats.active}), flush=True)

    task.LoopingCall(report).start(0.1)
    TCP4ServerEndpoint(reactor, port, interface="127.0.0.1", backlog=4096).listen(factory)
    reactor.run()
    """
)

TWISTED_WEB = RAISE_NOFILE + textwrap.dedent(
    """
    import sys
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ServerEndpoint
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    class Hello(Resource):
        isLeaf = True
        def render_GET(self, request):
            return b"x" * 130

    site = Site(Hello(), timeout=300)
    TCP4ServerEndpoint(reactor, int(sys.argv[1]), interface="127.0.0.1", backlog=4096).listen(site)
    reactor.run()
    """
)

NGINX_HTTP = """
    keepalive_timeout 300s;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ return 200 "{body}"; }}
    }}
"""

#: The load side of the slowloris and idle figures: opens connections from
#: its own source address, then trickles or idles; prints JSON results.
CLIENTS = RAISE_NOFILE + textwrap.dedent(
    """
    import json, selectors, socket, sys, time
    mode, port, count, source, duration = (
        sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
    )
    sel = selectors.DefaultSelector()
    socks, opened, closedAt, first = [], {}, {}, {}
    for i in range(count):
        s = socket.socket()
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        opened[s] = time.monotonic()
        first[s] = b""
        socks.append(s)
        sel.register(s, selectors.EVENT_READ)
        if mode == "trickle":
            s.send(b"GET / HTTP/1.1\\r\\n")
        else:
            s.send(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
    print(json.dumps({"connected": count}), flush=True)
    start = time.monotonic()
    nextByte = start + 1.0
    answered = 0
    while time.monotonic() - start < duration:
        now = time.monotonic()
        if mode == "trickle" and now >= nextByte:
            nextByte += 1.0
            for s in socks:
                if s not in closedAt:
                    try:
                        s.send(b"X" if (now - start) < 1.5 else b"a")
                    except OSError:
                        pass
        for key, _ in sel.select(timeout=0.05):
            s = key.fileobj
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if data:
                if not first[s]:
                    answered += 1
                first[s] += data[:64]
                continue
            closedAt[s] = time.monotonic()
            sel.unregister(s)
        if mode == "trickle" and len(closedAt) == count:
            break
        if mode == "idle" and answered == count and "reported" not in opened:
            opened["reported"] = 0.0
            print(json.dumps({"idle": count}), flush=True)
    lifetimes = [closedAt[s] - opened[s] for s in closedAt]
    print(json.dumps({
        "closed": len(closedAt),
        "maxLifetime": max(lifetimes) if lifetimes else None,
        "got408": sum(1 for s in socks if first[s].startswith(b"HTTP/1.1 408")),
        "answered": answered,
    }), flush=True)
    """
)


def rssKiB(pid: int) -> int:
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total = int(line.split()[1])
    return total


def treeRssKiB(pid: int) -> int:
    """RSS of a process and its children (nginx master + worker)."""
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    return sum(rssKiB(p) for p in pids)


def startClients(
    mode: str, port: int, count: int, source: str, duration: float
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        pinned(
            LOAD_CPU,
            [
                python(),
                "-c",
                CLIENTS,
                mode,
                str(port),
                str(count),
                source,
                str(duration),
            ],
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def readJson(
    process: subprocess.Popen[str], key: str, timeout: float
) -> dict[str, Any]:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        data: dict[str, Any] = json.loads(line)
        if key in data:
            return data
    err = process.stderr.read() if process.stderr else ""
    raise RuntimeError(f"no {key!r} from the client process: {err[-2000:]}")


def newClientLatency(port: int) -> float:
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while s.recv(65536):
            pass
    return time.perf_counter() - started


def connserverArgv(
    script: Path, port: int, head: float, send: float, big: str
) -> list[str]:
    return [python(), str(script), str(port), str(head), str(send), big]


def slowloris(args: argparse.Namespace, work: Path) -> None:
    script = work / "connserver_server.py"
    script.write_text(CONNSERVER)
    port = freePort()
    url = f"http://127.0.0.1:{port}/"
    with server(connserverArgv(script, port, args.head_timeout, 60.0, "-"), port):
        wrk(url, connections=32, seconds=1)  # warm up
        base = wrk(url, connections=32, seconds=args.seconds)
        clients = startClients(
            "trickle", port, args.slow, "127.0.0.2", args.head_timeout + 10
        )
        readJson(clients, "connected", 30)
        loaded = wrk(url, connections=32, seconds=args.seconds)
        result = readJson(clients, "closed", args.head_timeout + 20)
        clients.wait(timeout=10)
    ratio = loaded["rps"] / base["rps"]
    print(f"slowloris: keep-alive throughput alone    {base['rps']:10.0f} req/s")
    print(
        f"slowloris: with {args.slow} trickling conns  {loaded['rps']:10.0f} req/s"
        f"  ({ratio:.1%} of alone; target >= 90%)"
    )
    print(
        f"slowloris: trickling conns closed {result['closed']}/{args.slow}, "
        f"408 received by {result['got408']}, longest lifetime "
        f"{result['maxLifetime']:.2f} s (limit {args.head_timeout + 1:.0f} s)"
    )


def idle(args: argparse.Namespace, work: Path) -> None:
    servers: list[tuple[str, list[str], Any]] = []
    script = work / "connserver_server.py"
    script.write_text(CONNSERVER)
    servers.append(("connserver", connserverArgv(script, 0, 60.0, 60.0, "-"), None))
    web = work / "twisted_web_server.py"
    web.write_text(TWISTED_WEB)
    servers.append(("twisted.web", [python(), str(web)], None))
    if shutil.which("nginx"):
        servers.append(("nginx", ["nginx"], None))
    for index, (name, argv, _) in enumerate(servers):
        port = freePort()
        if name == "nginx":
            nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            argv = _servers.nginxArgv(
                work,
                "nginx",
                NGINX_HTTP.format(port=port, body="x" * 130),
                connections=args.idle + 512,
                main=f"worker_rlimit_nofile {nofile};",
            )
        elif name == "connserver":
            argv = connserverArgv(script, port, 60.0, 60.0, "-")
        else:
            argv = [*argv, str(port)]
        with server(argv, port) as process:
            for _ in range(50):
                newClientLatency(port)
            time.sleep(0.5)
            before = treeRssKiB(process.pid)
            clients = startClients(
                "idle", port, args.idle, f"127.0.0.{10 + index}", 120
            )
            readJson(clients, "idle", 90)
            time.sleep(1.0)
            after = treeRssKiB(process.pid)
            latencies = sorted(newClientLatency(port) for _ in range(20))
            clients.kill()
            clients.wait(timeout=10)
        perConnection = (after - before) * 1024 / args.idle
        print(
            f"idle: {name:12} {args.idle} idle keep-alive conns: RSS {before} -> "
            f"{after} KiB, {perConnection / 1024:.2f} KiB per connection; new client "
            f"served in median {latencies[10] * 1000:.1f} ms, max "
            f"{latencies[-1] * 1000:.1f} ms"
        )


def download(args: argparse.Namespace, work: Path) -> None:
    big = work / "big.bin"
    with big.open("wb") as f:
        f.truncate(64 * 1024 * 1024)
    script = work / "connserver_server.py"
    script.write_text(CONNSERVER)
    port = freePort()
    sendTimeout = args.send_timeout
    process = subprocess.Popen(
        pinned("0", connserverArgv(script, port, 60.0, sendTimeout, str(big))),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = readJson(process, "rssKiB", 15)
        time.sleep(0.5)
        baseline = readJson(process, "rssKiB", 5)["rssKiB"]
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.time()
        peak = baseline
        cutAt = None
        while time.time() - started < sendTimeout + 10:
            sample = readJson(process, "rssKiB", 5)
            peak = max(peak, sample["rssKiB"])
            if sample["closes"].get("send-timeout"):
                cutAt = sample["t"] - started
                break
        received = 0
        s.settimeout(2)
        try:
            while chunk := s.recv(1 << 20):
                received += len(chunk)
        except OSError:
            pass
        s.close()
    finally:
        process.terminate()
        process.wait(timeout=10)
    del first
    print(
        f"download: never-reading client of 64 MiB: server RSS {baseline} KiB -> peak "
        f"{peak} KiB (+{(peak - baseline) / 1024:.1f} MiB); cut by send-timeout at "
        f"{cutAt if cutAt is None else round(cutAt, 2)} s (sendTimeout "
        f"{sendTimeout} s); the client got {received / 2**20:.2f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--only", choices=["slowloris", "idle", "download"])
    parser.add_argument("--slow", type=int, default=500)
    parser.add_argument("--idle", type=int, default=10_000)
    parser.add_argument("--head-timeout", type=float, default=10.0)
    parser.add_argument("--send-timeout", type=float, default=5.0)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    need = max(args.slow, args.idle) + 512
    if hard < need:
        sys.exit(f"the hard open-file limit {hard} is below {need}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)
        for name, run in (
            ("slowloris", slowloris),
            ("idle", idle),
            ("download", download),
        ):
            if args.only in (None, name):
                run(args, work)


if __name__ == "__main__":
    main()
