"""
Static files: connserver's ``StaticFiles`` against twisted.web's static.File
(``twistd web --path``) and nginx (one worker, sendfile on), side by side.

Every server runs pinned to core 0 and wrk / ab run pinned to core 1; the
servers alternate within each round so that all see the same machine.
Figures (issue 5):

* 130-byte file, keep-alive, ``wrk -t1 -c50``: connserver >= 5x twisted.web
  and >= 0.5x nginx;
* HTTP/1.0 keep-alive, ``ab -k -c50 -n 20000``: "Keep-Alive requests" equals
  "Complete requests";
* 1 MiB and 10 MiB files, ``wrk -t1 -c4``: connserver >= 0.8x and >= 1.0x
  nginx's throughput.

    python bench/bench_static.py [--seconds 10] [--rounds 3] [--profile]

``--profile`` adds one extra connserver run of the 130-byte case under
cProfile and prints its top entries (the profiled figures are not counted).
Bounded: about (3 * rounds * 3 + 2) * seconds plus ab.
"""

from __future__ import annotations

import argparse
import os
import pstats
import statistics
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _servers
from _servers import ab, freePort, python, server, wrk

REPO = Path(__file__).resolve().parent.parent

CONNSERVER = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {repo!r})
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ServerEndpoint
    from connserver._http.config import ServerConfig
    from connserver._connection.factory import ConnectionFactory
    from connserver._handlers.static import StaticFiles

    root, port = sys.argv[1], int(sys.argv[2])
    factory = ConnectionFactory(
        StaticFiles(root, reactor=reactor),
        config=ServerConfig(maxRequestsPerConnection=None),
        reactor=reactor,
    )
    TCP4ServerEndpoint(reactor, port, backlog=1024, interface="127.0.0.1").listen(
        factory
    )
    profile = os.environ.get("BENCH_PROFILE")
    if profile:
        import cProfile
        profiler = cProfile.Profile()
        profiler.enable()
        reactor.run()
        profiler.disable()
        profiler.dump_stats(profile)
    else:
        reactor.run()
    """
)

NGINX_HTTP = """
    sendfile on;
    keepalive_requests 1000000;
    types {{ text/plain txt; application/octet-stream bin; }}
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
"""

FILES = {"130B.txt": 130, "1MiB.bin": 1024 * 1024, "10MiB.bin": 10 * 1024 * 1024}


def connserverArgv(tmp: Path, root: Path, port: int) -> list[str]:
    script = tmp / "connserver_static.py"
    script.write_text(CONNSERVER.format(repo=str(REPO)))
    return [python(), str(script), str(root), str(port)]


def twistedArgv(tmp: Path, root: Path, port: int) -> list[str]:
    twistd = str(Path(python()).with_name("twistd"))
    return [
        twistd,
        "-n",
        "--pidfile=",
        "web",
        "--path",
        str(root),
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
    ]


def nginxArgv(tmp: Path, root: Path, port: int) -> list[str]:
    return _servers.nginxArgv(
        tmp, f"nginx-{port}", NGINX_HTTP.format(port=port, root=root)
    )


SERVERS: dict[str, Callable[[Path, Path, int], list[str]]] = {
    "connserver": connserverArgv,
    "twisted.web": twistedArgv,
    "nginx": nginxArgv,
}


def run(
    name: str,
    tmp: Path,
    root: Path,
    path: str,
    connections: int,
    seconds: int,
    env: dict[str, str] | None = None,
) -> dict[str, float]:
    port = freePort()
    argv = SERVERS[name](tmp, root, port)
    url = f"http://127.0.0.1:{port}/{path}"
    with server(argv, port, env=env):
        wrk(url, connections=connections, seconds=1)  # warm-up
        result = wrk(url, connections=connections, seconds=seconds)
    if result["non2xx"] or result["socketErrors"]:
        print(f"  ! {name} {path}: non-2xx or socket errors: {result}")
    return result


def makeTree(tmp: Path) -> None:
    """The served files; readable by all, since nginx run as root serves as nobody."""
    tmp.chmod(0o755)
    root = tmp / "www"
    root.mkdir(mode=0o755)
    for name, size in FILES.items():
        (root / name).write_bytes(os.urandom(size) if size > 130 else b"x" * size)
        (root / name).chmod(0o644)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--large-rounds", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-static-") as tmpName:
        tmp = Path(tmpName)
        makeTree(tmp)
        root = tmp / "www"

        print(f"# static files, {args.seconds}s per run, server on core 0, load on 1")
        table: dict[tuple[str, str], list[dict[str, float]]] = {}
        plan = [("130B.txt", 50, args.rounds)] + [
            (path, 4, args.large_rounds) for path in ("1MiB.bin", "10MiB.bin")
        ]
        for path, connections, rounds in plan:
            for round in range(rounds):
                for name in SERVERS:
                    result = run(name, tmp, root, path, connections, args.seconds)
                    table.setdefault((path, name), []).append(result)
                    print(
                        f"  round {round + 1} {path:10} {name:12} "
                        f"{result['rps']:10.0f} req/s "
                        f"{result['rps'] * FILES[path] / 1e6:9.1f} MB/s"
                    )

        port = freePort()
        with server(connserverArgv(tmp, root, port), port):
            abResult = ab(f"http://127.0.0.1:{port}/130B.txt")

        print()
        print(
            "| file | connections | connserver | twisted.web | nginx | "
            "vs twisted.web | vs nginx | target |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        targets = {
            "130B.txt": ("req/s", ">= 5x twisted.web, >= 0.5x nginx"),
            "1MiB.bin": ("MB/s", ">= 0.8x nginx"),
            "10MiB.bin": ("MB/s", ">= 1.0x nginx"),
        }
        for path, connections, _ in plan:
            unit, target = targets[path]
            scale = 1.0 if unit == "req/s" else FILES[path] / 1e6
            medians = {
                name: statistics.median(r["rps"] for r in table[(path, name)]) * scale
                for name in SERVERS
            }
            cs = medians["connserver"]
            print(
                f"| {path} | {connections} | {cs:.0f} {unit} | "
                f"{medians['twisted.web']:.0f} | {medians['nginx']:.0f} | "
                f"{cs / medians['twisted.web']:.2f}x | {cs / medians['nginx']:.2f}x "
                f"| {target} |"
            )
        print()
        print(
            f"ab -k -c50 -n 20000 (HTTP/1.0) on connserver: "
            f"complete {abResult['complete']:.0f}, keep-alive {abResult['keepAlive']:.0f}, "
            f"failed {abResult['failed']:.0f}, {abResult['rps']:.0f} req/s "
            f"({'OK' if abResult['keepAlive'] == abResult['complete'] else 'MISMATCH'})"
        )

        if args.profile:
            stats = tmp / "connserver.prof"
            run(
                "connserver",
                tmp,
                root,
                "130B.txt",
                50,
                args.seconds,
                env={"BENCH_PROFILE": str(stats)},
            )
            print()
            print("# cProfile of connserver, 130-byte file, wrk -c50 (by tottime)")
            pstats.Stats(str(stats)).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
