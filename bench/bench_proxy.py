#!/usr/bin/env python3
# twisted.web is untyped; this script is not library code.
# mypy: disable-error-code="no-untyped-call"
"""
Reverse proxies in front of one upstream answering 130 bytes, measured in
one run: connserver's ``ReverseProxy`` (``--proxy /=URL``), nginx
``proxy_pass`` with an upstream ``keepalive`` pool, and twisted.web's
``ReverseProxyResource``.

The upstream is nginx (one worker, ``return 200`` of 130 bytes), so that it
is never what limits a Python proxy.  Each proxy is a subprocess pinned to
CPU 0; wrk (``-t1 -c50``, keep-alive) and the upstream share CPU 1, the
same for every proxy.  It prints requests per second and requests per
CPU-second of the proxy's processes (steadier on a shared machine), the
CPU per proxied request, and the ratios to ``ReverseProxyResource`` and
nginx (issue 21's targets: connserver >= 5x the first, >= 0.25x the second).

    python bench/bench_proxy.py                   # 10 s per proxy
    python bench/bench_proxy.py --duration 3      # a short sanity run
    python bench/bench_proxy.py --calls --duration 4

``--calls`` measures no speed: it runs connserver's proxy alone under
cProfile (``twistd --profile``) with the same load and prints the Python
calls per proxied request (every function call cProfile counts, builtins
included, over the requests ``ReverseProxy`` received), by where they are
made: the proxy and its upstream client, the parser, the rest of
connserver, Twisted, builtins.  The figures of that run are slower (the
profiler), the call counts are not.

Needs wrk and nginx; about a minute.  Not a test.
"""

from __future__ import annotations

import argparse
import pstats
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _servers
from _servers import (
    LOAD_CPU,
    freePort,
    pinned,
    python,
    server,
    treeCpuSeconds,
    wrk,
)

BODY = "x" * 130

UPSTREAM = """
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ default_type text/plain; return 200 "{text}"; }}
    }}
"""

NGINX_PROXY = """
    upstream up {{ server 127.0.0.1:{upstream}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
"""

REVERSE_PROXY_RESOURCE = textwrap.dedent(
    """
    import sys, warnings
    warnings.simplefilter("ignore", DeprecationWarning)
    from twisted.internet import reactor
    from twisted.web.proxy import ReverseProxyResource
    from twisted.web.server import Site
    site = Site(ReverseProxyResource("127.0.0.1", int(sys.argv[2]), b""))
    site.log = lambda request: None  # no access log, as for the others
    reactor.listenTCP(int(sys.argv[1]), site, interface="127.0.0.1", backlog=4096)
    reactor.run()
    """
)


def nginxArgv(work: Path, name: str, body: str) -> list[str]:
    """An nginx of its own directory in ``work``, kept-alive connections long."""
    directory = work / name
    directory.mkdir()
    http = f"keepalive_timeout 300s;\nkeepalive_requests 1000000;\n{body}"
    return _servers.nginxArgv(directory, "nginx", http)


def measure(
    name: str, argv: list[str], port: int, seconds: int, log: Path
) -> tuple[float, float]:
    url = f"http://127.0.0.1:{port}/api/x"
    with server(argv, port, log=log) as process:
        wrk(url, connections=50, seconds=1)  # warm up (and fill the pools)
        before = treeCpuSeconds(process.pid)
        result = wrk(url, connections=50, seconds=seconds)
        cpu = treeCpuSeconds(process.pid) - before
    if result["non2xx"] or result["socketErrors"]:
        print(f"  ! {name}: non-2xx or socket errors: {result}")
    perCpu = result["rps"] * seconds / cpu if cpu > 0 else 0.0
    perRequest = 1e6 / perCpu if perCpu else 0.0
    print(
        f"  {name:34s} {result['rps']:9.0f} req/s {perCpu:9.0f} req/CPU-s "
        f"{perRequest:7.0f} us CPU/req",
        flush=True,
    )
    return result["rps"], perCpu


def connserverArgv(twistd: str, port: int, upstreamPort: int) -> list[str]:
    return [
        twistd,
        "-n",
        "--pidfile=",
        "connserver",
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--proxy",
        f"/=http://127.0.0.1:{upstreamPort}",
    ]


#: Where a profiled call is made, by the file of its function (the first
#: that matches).
CALL_GROUPS = (
    (
        "proxy.py, upstream.py",
        ("connserver/_handlers/proxy.py", "_handlers/upstream.py"),
    ),
    ("parser", ("connserver/_http/parser.py",)),
    ("rest of connserver", ("connserver/",)),
    ("Twisted", ("twisted/",)),
    ("builtins", ("~",)),
)


def countCalls(twistd: str, upstreamPort: int, seconds: int, work: Path) -> None:
    """Python calls per proxied request, from a cProfile run under load."""
    profile = work / "connserver.prof"
    port = freePort()
    argv = connserverArgv(twistd, port, upstreamPort)
    argv[1:1] = [f"--profile={profile}", "--profiler=cprofile", "--savestats"]
    with server(argv, port, log=work / "profiled.log"):
        wrk(f"http://127.0.0.1:{port}/api/x", connections=50, seconds=seconds)
    # (Stopped with SIGTERM: twistd writes the stats as its reactor stops.)
    stats: dict[tuple[str, int, str], Any] = pstats.Stats(str(profile)).stats  # type: ignore[attr-defined]
    requests = sum(
        value[1]
        for (path, _, name), value in stats.items()
        if name == "__call__" and path.endswith("connserver/_handlers/proxy.py")
    )
    if not requests:
        sys.exit("no proxied request in the profile")
    groups = dict.fromkeys([name for name, _ in CALL_GROUPS] + ["other"], 0)
    for (path, _, _), value in stats.items():
        group = next(
            (name for name, marks in CALL_GROUPS if any(m in path for m in marks)),
            "other",
        )
        groups[group] += value[1]
    total = sum(groups.values())
    print(
        f"{requests} proxied requests under cProfile: "
        f"{total / requests:.0f} Python calls per request"
    )
    for name, calls in groups.items():
        print(f"  {name:24s} {calls / requests:6.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per proxy")
    parser.add_argument(
        "--calls",
        action="store_true",
        help="count Python calls per proxied request (cProfile) instead",
    )
    args = parser.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not shutil.which("wrk") or not Path(nginx).exists():
        sys.exit("bench_proxy needs wrk and nginx")
    twistd = str(Path(python()).with_name("twistd"))
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
        work = Path(tmp)
        upstreamPort = freePort()
        # The upstream shares the load core with wrk, for every proxy alike.
        upstreamArgv = pinned(
            LOAD_CPU,
            nginxArgv(work, "upstream", UPSTREAM.format(port=upstreamPort, text=BODY)),
        )
        with server(upstreamArgv, upstreamPort):
            if args.calls:
                countCalls(twistd, upstreamPort, args.duration, work)
                return
            proxies: list[tuple[str, list[str], int]] = []
            port = freePort()
            proxies.append(
                (
                    "connserver ReverseProxy",
                    connserverArgv(twistd, port, upstreamPort),
                    port,
                )
            )
            port = freePort()
            proxies.append(
                (
                    "nginx proxy_pass (keepalive 32)",
                    nginxArgv(
                        work,
                        "proxy",
                        NGINX_PROXY.format(port=port, upstream=upstreamPort),
                    ),
                    port,
                )
            )
            port = freePort()
            proxies.append(
                (
                    "twisted.web ReverseProxyResource",
                    [
                        python(),
                        "-c",
                        REVERSE_PROXY_RESOURCE,
                        str(port),
                        str(upstreamPort),
                    ],
                    port,
                )
            )
            print(
                f"130-byte upstream answer (nginx), wrk -t1 -c50 -d{args.duration}s "
                "keep-alive; proxy on CPU 0, wrk and upstream on CPU 1"
            )
            figures = {
                name: measure(name, argv, p, args.duration, work / f"{p}.log")
                for name, argv, p in proxies
            }
    base = figures["twisted.web ReverseProxyResource"]
    ours = figures["connserver ReverseProxy"]
    theirs = figures["nginx proxy_pass (keepalive 32)"]
    print(
        f"connserver / ReverseProxyResource: {ours[0] / base[0]:.1f}x req/s, "
        f"{ours[1] / base[1]:.1f}x req/CPU-s (target >= 5x)"
    )
    print(
        f"connserver / nginx: {ours[0] / theirs[0]:.2f}x req/s, "
        f"{ours[1] / theirs[1]:.2f}x req/CPU-s (target >= 0.25x)"
    )


if __name__ == "__main__":
    main()
