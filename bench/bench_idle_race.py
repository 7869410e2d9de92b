"""
The idle-close race behind nginx, counted (issue 12).  connserver runs
in-process; nginx (``/usr/sbin/nginx``) in front keeps one pooled
connection per client loop, with ``keepalive_timeout`` in the upstream
block as its idle timeout; each loop sends requests at random gaps.  Two
settings are compared:

* the rule kept: connserver's ``idleTimeout`` longer than nginx's upstream
  idle timeout (nginx closes first: no request can meet a closing
  connection);
* the rule broken: connserver's shorter (connserver closes first, and a
  request nginx sends on that connection just then fails).

Failures are counted as nginx's 502s with ``proxy_next_upstream off`` and
POST (nginx never retries a non-idempotent request); with ``--retry`` and
``--method GET``, nginx retries on a new connection and hides them.
``--proxy haproxy`` puts HAProxy 2.6 in front instead (its own defaults for
retries).  ``--latency MS`` delays every byte and close between the proxy
and connserver, as a network between two hosts does: on loopback the window
is a fraction of a millisecond.

    python bench/bench_idle_race.py [--requests 200] [--loops 8]
        [--short 1.0] [--long 2.0] [--gap-low 0.9] [--gap-high 2.1]
        [--method POST] [--retry] [--latency MS] [--only kept|broken]
        [--proxy nginx|haproxy]

Each run is bounded: about requests x mean gap seconds (the loops run
concurrently).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests._proxies import NGINX  # noqa: E402
from tests._race import describe, runRace  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="per loop")
    parser.add_argument("--loops", type=int, default=8)
    parser.add_argument(
        "--short", type=float, default=1.0, help="the shorter idle timeout"
    )
    parser.add_argument(
        "--long", type=float, default=2.0, help="the longer idle timeout"
    )
    parser.add_argument("--gap-low", type=float, default=0.9)
    parser.add_argument("--gap-high", type=float, default=2.1)
    parser.add_argument("--method", default="POST")
    parser.add_argument(
        "--retry", action="store_true", help="leave proxy_next_upstream on"
    )
    parser.add_argument("--only", choices=["kept", "broken"])
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        help="one-way ms between the proxy and connserver",
    )
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument(
        "--proxy",
        choices=["nginx", "haproxy"],
        default="nginx",
        help="haproxy: pool-purge-delay a third of the proxy idle time",
    )
    args = parser.parse_args(argv)
    if NGINX is None:
        print("nginx is not installed", file=sys.stderr)
        return 1

    from twisted.internet import defer, task

    settings = [
        ("kept", args.long, args.short),
        ("broken", args.short, args.long),
    ]

    async def run(reactor: object) -> None:
        print(
            f"{args.proxy}: {args.loops} loops x {args.requests} {args.method} requests, gaps "
            f"{args.gap_low}-{args.gap_high} s, proxy_next_upstream "
            f"{'on' if args.retry else 'off'} (nginx), {args.latency:g} ms one way "
            "between the proxy and connserver"
        )
        for name, serverIdle, proxyIdle in settings:
            if args.only and name != args.only:
                continue
            with tempfile.TemporaryDirectory(prefix="cs-race-") as directory:
                result = await runRace(
                    Path(directory),
                    serverIdle=serverIdle,
                    proxyIdle=proxyIdle,
                    loops=args.loops,
                    requests=args.requests,
                    gaps=(args.gap_low, args.gap_high),
                    method=args.method.encode("ascii"),
                    retry=args.retry,
                    latency=args.latency / 1000,
                    seed=args.seed,
                    kind=args.proxy,
                )
            total = sum(result.outcomes.values())
            print(
                describe(
                    result,
                    [
                        f"rule {name:6}: connserver idle {serverIdle:g} s,",
                        f"{args.proxy} upstream idle {proxyIdle:g} s:",
                        f"{result.failures}/{total} failed",
                    ],
                )
            )

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
