"""
Compression on the fly: connserver's ``StaticFiles`` against nginx (one
worker, ``gzip on``) on a 100 KB HTML page, with and without
``Accept-Encoding: gzip``, keep-alive, ``wrk -t1 -c50`` (issue 15).

Both compress with gzip at the same level: connserver's ``GZIP_LEVEL`` (6,
``gzip -6``), given to nginx as ``gzip_comp_level`` (``--nginx-level``
changes nginx's alone; nginx's own default is 1).  connserver compresses a
file of this size once per file version and serves the cached bytes; nginx
compresses on every request.  Figures are taken with the cache warm (a
warm-up run first): requests per second, and bytes on the wire per second
and per response (wrk's Transfer/sec, headers included).  Target:
connserver within 0.5x of nginx's requests per second, with gzip.

Also printed: the compressed size of the page from each server and from
``gzip -6`` (and br from connserver when the brotli extra is installed).

    python bench/bench_compress.py [--seconds 10] [--rounds 3] [--nginx-level 6]

Servers run pinned to core 0 and wrk to core 1, as in bench_static.py.
A third server, nginx with ``gzip_static on`` and a ``page.html.gz`` made
once by ``gzip -6``, is the reference for what a compress-once cache can
reach (nginx itself compresses on every request).

Bounded: about 3 * 2 * rounds * (seconds + 1) seconds.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _servers
from _servers import freePort, server, wrk
from bench_static import connserverArgv

from connserver._handlers.compress import GZIP_LEVEL, SUPPORTED_CODINGS

PAGE = "page.html"
PAGE_BYTES = 100 * 1024

# nginx always compresses text/html once gzip is on (listing it in
# gzip_types only warns about a duplicate); the others are what a site
# usually adds.
NGINX_HTTP = """
    sendfile on;
    keepalive_requests 1000000;
    types {{ text/html html; text/css css; application/javascript js; }}
    gzip on;
    gzip_comp_level {level};
    gzip_min_length 1024;
    gzip_vary on;
    gzip_types text/css application/javascript application/json image/svg+xml;
    gzip_static {static};
    server {{
        listen 127.0.0.1:{port};
        root {root};
        etag on;
    }}
"""

WORDS = (
    "the quick brown fox jumps over lazy dog server request response header "
    "connection static file cache index page article section nav footer item "
    "twisted python reactor protocol transport compression gzip content"
).split()


def makePage(size: int) -> bytes:
    """Realistic, repetitive HTML: a page of article cards with random text."""
    rng = random.Random(15)
    parts = [
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        "<title>connserver bench</title>"
        '<link rel=stylesheet href="/style.css"></head><body>\n'
        '<nav class="top"><ul>'
        + "".join(f'<li><a href="/section/{i}">Section {i}</a></li>' for i in range(12))
        + "</ul></nav>\n<main>\n"
    ]
    total = len(parts[0])
    index = 0
    while total < size:
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60)))
        card = (
            f'<article class="card" id="post-{index}">'
            f'<h2><a href="/posts/{index}">Post {index}: {words[:40]}</a></h2>'
            f'<p class="meta">By author{rng.randint(1, 9)} on 2026-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}</p>'
            f"<p>{words}</p></article>\n"
        )
        parts.append(card)
        total += len(card)
        index += 1
    parts.append("</main><footer>connserver</footer></body></html>\n")
    return "".join(parts).encode()[:size]


def nginxArgv(
    tmp: Path, root: Path, port: int, level: int, static: bool = False
) -> list[str]:
    http = NGINX_HTTP.format(
        port=port, root=root, level=level, static="on" if static else "off"
    )
    return _servers.nginxArgv(tmp, f"nginx-{port}", http)


def fetchSize(port: int, coding: str | None) -> tuple[int, str]:
    """The body size of one GET of the page, and its Content-Encoding."""
    headers = {"Accept-Encoding": coding} if coding else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/{PAGE}", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
        return len(body), response.headers.get("Content-Encoding", "identity")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--nginx-level", type=int, default=GZIP_LEVEL)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-compress-") as tmpName:
        tmp = Path(tmpName)
        tmp.chmod(0o755)
        root = tmp / "www"
        root.mkdir(mode=0o755)
        page = makePage(PAGE_BYTES)
        (root / PAGE).write_bytes(page)
        (root / PAGE).chmod(0o644)
        # nginx compresses on every request; with gzip_static it sends a
        # page.html.gz made once (by gzip -6), which is what connserver's
        # cache amounts to: the fair reference for the cached case.
        staticRoot = tmp / "www-static"
        staticRoot.mkdir(mode=0o755)
        (staticRoot / PAGE).write_bytes(page)
        (staticRoot / (PAGE + ".gz")).write_bytes(
            subprocess.run(
                ["gzip", "-6", "-n", "-c", str(root / PAGE)],
                capture_output=True,
                check=True,
            ).stdout
        )
        for path in staticRoot.iterdir():
            path.chmod(0o644)
        servers = {
            "connserver": lambda port: connserverArgv(tmp, root, port),
            "nginx": lambda port: nginxArgv(tmp, root, port, args.nginx_level),
            "nginx-gzip_static": lambda port: nginxArgv(
                tmp, staticRoot, port, args.nginx_level, static=True
            ),
        }
        modes = {"identity": [], "gzip": ["Accept-Encoding: gzip"]}

        print(
            f"# {len(page)}-byte HTML page, wrk -t1 -c50 -d{args.seconds}s keep-alive; "
            f"gzip level: connserver {GZIP_LEVEL}, nginx {args.nginx_level}"
        )
        sizes: dict[str, dict[str, tuple[int, str]]] = {}
        table: dict[tuple[str, str], list[dict[str, float]]] = {}
        for round in range(args.rounds):
            for name, argv in servers.items():
                port = freePort()
                with server(argv(port), port):
                    url = f"http://127.0.0.1:{port}/{PAGE}"
                    if round == 0:
                        sizes[name] = {
                            coding or "none": fetchSize(port, coding)
                            for coding in (None, "gzip", "br")
                        }
                    for mode, headers in modes.items():
                        wrk(url, connections=50, seconds=1, headers=headers)  # warm
                        result = wrk(
                            url, connections=50, seconds=args.seconds, headers=headers
                        )
                        if result["non2xx"] or result["socketErrors"]:
                            print(f"  ! {name} {mode}: errors: {result}")
                        table.setdefault((name, mode), []).append(result)
                        print(
                            f"  round {round + 1} {name:17} {mode:8} "
                            f"{result['rps']:9.0f} req/s "
                            f"{result['bps'] / 1e6:8.1f} MB/s on the wire "
                            f"{result['bps'] / max(result['rps'], 1):8.0f} B/response"
                        )

        gzip6 = len(
            subprocess.run(
                ["gzip", "-6", "-c", str(root / PAGE)],
                capture_output=True,
                check=True,
            ).stdout
        )
        print()
        print(
            "| mode | connserver req/s | nginx req/s | ratio | "
            "nginx gzip_static req/s | ratio | connserver B/resp | nginx B/resp | "
            "target |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for mode in modes:
            rps = {
                name: statistics.median(r["rps"] for r in table[(name, mode)])
                for name in servers
            }
            perResponse = {
                name: statistics.median(
                    r["bps"] / max(r["rps"], 1) for r in table[(name, mode)]
                )
                for name in servers
            }
            target = ">= 0.5x nginx" if mode == "gzip" else "-"
            static = rps["nginx-gzip_static"]
            print(
                f"| {mode} | {rps['connserver']:.0f} | {rps['nginx']:.0f} | "
                f"{rps['connserver'] / rps['nginx']:.2f}x | {static:.0f} | "
                f"{rps['connserver'] / static:.2f}x | "
                f"{perResponse['connserver']:.0f} | {perResponse['nginx']:.0f} | "
                f"{target} |"
            )
        print()
        print(f"page: {len(page)} bytes; gzip -6: {gzip6} bytes")
        for name, byCoding in sizes.items():
            shown = ", ".join(
                f"Accept-Encoding {coding}: {size} bytes ({encoding})"
                for coding, (size, encoding) in byCoding.items()
            )
            print(f"  {name}: {shown}")
        if b"br" not in SUPPORTED_CODINGS:
            print("  (br: the brotli extra is not installed)")


if __name__ == "__main__":
    main()
