"""
HTTPS (issue 10): a 130-byte file served over TLS by connserver's CLI,
``twistd web`` and nginx, side by side, in one run.

A throwaway self-signed EC certificate (P-256) is made with ``openssl req``
in a temporary directory, next to the served file.  Servers, each pinned to
core 0 and listening on 127.0.0.1 only:

* ``connserver``: ``twistd -n --pidfile= connserver --path ROOT
  --max-requests-per-connection none --listen
  ssl:PORT:privateKey=key.pem:certKey=cert.pem:interface=127.0.0.1``.
  This is the listener ``--https PORT --certificate cert.pem --privkey
  key.pem`` builds (connserver/tap.py appends exactly
  ``ssl:PORT:privateKey=...:certKey=...``), plus ``interface=127.0.0.1``,
  which ``--https`` has no option for (it listens on all interfaces);
  ``--https-flag`` uses the ``--https`` form instead (then with a
  ``--listen tcp:0:interface=127.0.0.1`` beside it);
* ``twisted.web``: ``twistd -n --pidfile= web --path ROOT --listen
  ssl:PORT:...:interface=127.0.0.1`` (``twistd web --https`` is deprecated
  in favour of ``--listen ssl:``, and would also listen on tcp:8080);
* ``nginx``: one worker, ``listen 127.0.0.1:PORT ssl``, ``ssl_certificate``,
  ``sendfile on``, ``keepalive_requests 1000000``, ``access_log off``.

Modes (``--modes``), wrk pinned to core 1:

* ``keepalive``: ``wrk -t1 -c50 -d{seconds}s https://127.0.0.1:PORT/130B.txt``;
* ``handshake``: the same with ``-H "Connection: close"``: every response
  closes its connection and wrk opens a new one, so req/s is full TLS
  handshakes per second (wrk does not resume sessions, and offers no ALPN).

Printed: per round figures, the medians (requests per second, and requests
per CPU-second of the server's processes, nginx's master and worker
together, which holds steadier when other work shares core 0),
connserver / twisted.web (target >= 2x for keep-alive) and connserver /
nginx for both modes.

    python bench/bench_tls.py [--seconds 10] [--rounds 3]
        [--only connserver,twisted.web,nginx] [--modes keepalive,handshake]
        [--https-flag]

Runs with .venv/bin/python or bench/.venv-peers/bin/python (twistd is taken
next to the interpreter; connserver comes from the working tree through
PYTHONPATH).  Bounded: about rounds x 3 x (3 + 2 x seconds) seconds.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _servers
from _servers import chosen, freePort, measureModes, python, server, wrk

REPO = Path(__file__).resolve().parent.parent
FILE = "130B.txt"

NGINX_HTTP = """
    sendfile on;
    keepalive_requests 1000000;
    types {{ text/plain txt; }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {tmp}/cert.pem;
        ssl_certificate_key {tmp}/key.pem;
        root {root};
    }}
"""


def makeTree(tmp: Path) -> Path:
    """The certificate, its key and the served file (readable by nginx's worker)."""
    tmp.chmod(0o755)
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(tmp / "key.pem"),
            "-out",
            str(tmp / "cert.pem"),
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    for name in ("key.pem", "cert.pem"):
        (tmp / name).chmod(0o644)
    root = tmp / "www"
    root.mkdir(mode=0o755)
    (root / FILE).write_bytes(b"x" * 130)
    (root / FILE).chmod(0o644)
    return root


def sslEndpoint(tmp: Path, port: int) -> str:
    return (
        f"ssl:{port}:privateKey={tmp / 'key.pem'}:certKey={tmp / 'cert.pem'}"
        ":interface=127.0.0.1"
    )


def twistd() -> str:
    return str(Path(python()).with_name("twistd"))


def connserverArgv(tmp: Path, root: Path, port: int, httpsFlag: bool) -> list[str]:
    argv = [
        twistd(),
        "-n",
        "--pidfile=",
        "connserver",
        "--path",
        str(root),
        "--max-requests-per-connection",
        "none",
    ]
    if httpsFlag:
        return [
            *argv,
            "--https",
            str(port),
            "--certificate",
            str(tmp / "cert.pem"),
            "--privkey",
            str(tmp / "key.pem"),
            "--listen",
            "tcp:0:interface=127.0.0.1",
        ]
    return [*argv, "--listen", sslEndpoint(tmp, port)]


def twistedArgv(tmp: Path, root: Path, port: int, httpsFlag: bool) -> list[str]:
    return [
        twistd(),
        "-n",
        "--pidfile=",
        "web",
        "--path",
        str(root),
        "--listen",
        sslEndpoint(tmp, port),
    ]


def nginxArgv(tmp: Path, root: Path, port: int, httpsFlag: bool) -> list[str]:
    return _servers.nginxArgv(
        tmp, f"nginx-{port}", NGINX_HTTP.format(tmp=tmp, port=port, root=root)
    )


SERVERS: dict[str, Callable[[Path, Path, int, bool], list[str]]] = {
    "connserver": connserverArgv,
    "twisted.web": twistedArgv,
    "nginx": nginxArgv,
}
MODES = {
    "keepalive": (),
    "handshake": ("Connection: close",),
}


def checkAnswer(url: str) -> str | None:
    """One request with curl; None when it gets the 130 bytes, else the error."""
    done = subprocess.run(
        ["curl", "-sk", "--no-alpn", "--http1.1", "-o", "-", "-w", "%{http_code}", url],
        capture_output=True,
        timeout=10,
    )
    if done.returncode == 0 and done.stdout == b"x" * 130 + b"200":
        return None
    return (
        f"curl exit {done.returncode}, stdout {done.stdout[-200:]!r}, "
        f"stderr {done.stderr.decode(errors='replace')[-500:]!r}"
    )


def measure(
    name: str,
    tmp: Path,
    root: Path,
    modes: list[str],
    seconds: int,
    httpsFlag: bool,
) -> dict[str, tuple[float, float]]:
    """Per mode: requests per second and per CPU-second of the server's processes."""
    port = freePort()
    url = f"https://127.0.0.1:{port}/{FILE}"
    env = {"PYTHONPATH": str(REPO)}
    log = tmp / f"{name}-{port}.log"
    argv = SERVERS[name](tmp, root, port, httpsFlag)
    with server(argv, port, env=env, log=log) as process:
        error = checkAnswer(url)
        if error:
            tail = log.read_text(errors="replace")[-1500:]
            raise RuntimeError(f"no answer over HTTPS: {error}; its log: {tail}")
        return measureModes(
            name,
            process.pid,
            url,
            modes,
            seconds,
            lambda mode: wrk(url, connections=50, seconds=seconds, headers=MODES[mode]),
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default=",".join(SERVERS))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument(
        "--https-flag",
        action="store_true",
        help="start connserver with --https/--certificate/--privkey "
        "(all interfaces) instead of --listen ssl:...:interface=127.0.0.1",
    )
    args = parser.parse_args()
    names = chosen(parser, "--only", args.only, SERVERS)
    modes = chosen(parser, "--modes", args.modes, MODES)

    print(
        f"# HTTPS, 130-byte file, P-256 certificate, {args.seconds}s per run, "
        f"{args.rounds} round(s), servers on core 0, wrk -t1 -c50 on core 1"
    )
    # results[mode][name] = [(req/s, req per CPU-s), ...], one per round
    results: dict[str, dict[str, list[tuple[float, float]]]] = {
        mode: {name: [] for name in names} for mode in modes
    }
    failures: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmpName:
        tmp = Path(tmpName)
        root = makeTree(tmp)
        for round_ in range(args.rounds):
            for name in names:
                try:
                    figures = measure(
                        name, tmp, root, modes, args.seconds, args.https_flag
                    )
                except (RuntimeError, subprocess.CalledProcessError) as error:
                    failures.setdefault(name, []).append(round_ + 1)
                    print(f"  ! round {round_ + 1}: {name} failed: {error}")
                    continue
                for mode, (perSecond, perCpuSecond) in figures.items():
                    results[mode][name].append((perSecond, perCpuSecond))
                    print(
                        f"round {round_ + 1}: {mode:9} {name:12} "
                        f"{perSecond:10.0f} req/s {perCpuSecond:10.0f} req/CPU-s"
                    )

    print()
    print(
        "| mode | figure | " + " | ".join(names) + " | connserver / twisted.web | "
        "connserver / nginx |"
    )
    print("| --- " * (len(names) + 4) + "|")
    for mode in modes:
        unit = "req/s" if mode == "keepalive" else "handshakes/s"
        for index, figure in ((0, unit), (1, "per server CPU-s")):
            medians = {
                name: statistics.median(f[index] for f in values)
                for name, values in results[mode].items()
                if values
            }
            cs = medians.get("connserver")
            tw = medians.get("twisted.web")
            ng = medians.get("nginx")
            cells = [f"{medians[n]:.0f}" if n in medians else "-" for n in names]
            vsTw = f"{cs / tw:.2f}x" if cs and tw else "-"
            if mode == "keepalive" and index == 0 and cs and tw:
                vsTw += f" ({'PASS' if cs / tw >= 2 else 'MISS'}: >= 2x)"
            vsNg = f"{cs / ng:.2f}x" if cs and ng else "-"
            print(
                f"| {mode} | {figure} | " + " | ".join(cells) + f" | {vsTw} | {vsNg} |"
            )
    for name, rounds in failures.items():
        print(f"{name}: failed in round(s) {rounds}, left out of them (error above)")


if __name__ == "__main__":
    main()
