"""
Soak (issue 13): mixed good and hostile traffic against one connserver
server, then checks that nothing leaked and that good clients kept their
throughput.

    python bench/soak.py                 # 10 minutes of traffic
    python bench/soak.py --short         # 2 minutes
    python bench/soak.py --short --no-speed-check   # the CI form (.ci/run)
    python bench/soak.py --minutes 5

The server is a subprocess pinned to core 0 (``python bench/soak.py --serve
ROOT PORT DEBUG_PORT``): ``StaticFiles`` over a temporary directory with a
small file and a 64 MiB sparse file, ``/boom`` (a handler that raises: 500)
and ``/echo`` (reads the request body) mounted with ``PrefixMount``, short
timeouts (head, body and send 2 s, idle 5 s) so that hostile clients are cut
during the run.  On a second port, outside connserver, it answers the line
``stats`` with its ``StatusHandler`` JSON (factory counters and close
reasons), the reactor's delayed calls owned by connserver, and its log
counts; resident memory and descriptors are read from ``/proc/PID``.

The load runs in two processes pinned to core 1, every socket with a
timeout: good clients (HTTP/1.1 keep-alive, HTTP/1.0 with and without
keep-alive, pipelining; closed loop) and hostile ones (slowloris heads, a
byte a second, through bench_hardening's trickle clients; trickled bodies,
completed and stalled; resets mid-download of the large file; never-reading
downloads; malformed request lines, bad Content-Length, 404s and 500s).
Within ``--minutes``: the good clients run alone first (their throughput
alone), then everything runs together (the first quarter, at least 30 s, is
the warm-up), then the good clients run alone again for a few seconds (shown
only, to tell the attack's cost from other work on the machine), then every
client stops and the server must come back to its baseline.

Checks, each printed with PASS or FAIL and its figures (exit status 1 on
any FAIL):

* resident memory at the end within 5% of the end of the warm-up;
* open descriptors back to the baseline once the clients stopped;
* no connection registered and no connserver timer pending then;
* every connection's close reason counted (the close counts sum to the
  accepted count, none ``unknown``, each a known reason);
* good clients' throughput during the attack >= 85% of it alone (with
  ``--no-speed-check``, as ``.ci/run`` runs it, the figure is printed but
  not enforced: on a shared machine other work moves it);
* good clients saw no failed request, and the hostile ones the answers
  they should get (400, 408, 500, ...).

The whole run is bounded by a global timeout (SIGALRM).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, MutableSequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _servers import LOAD_CPU, freePort, python, server, treeCpuSeconds
from bench_hardening import readJson, rssKiB, startClients

if TYPE_CHECKING:
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Event

    from twisted.internet.defer import Deferred

    from connserver import Request, Response

# The server's timeouts: short, so that hostile clients are cut during the run.
HEAD_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
SEND_TIMEOUT = 2.0
IDLE_TIMEOUT = 5.0
LINGER_TIMEOUT = 2.0
ABORT_TIMEOUT = 5.0

SMALL = "small.txt"
SMALL_SIZE = 2048
BIG = "big.bin"
BIG_SIZE = 64 * 1024 * 1024

#: Every client socket operation gives up after this long.
CLIENT_TIMEOUT = 10.0
#: Requests sent at once by a pipelining client.
PIPELINE_DEPTH = 8
#: The good clients: (kind, how many).
GOOD_CLIENTS = (
    ("keepalive", 4),
    ("http10-keepalive", 2),
    ("http10", 2),
    ("pipeline", 2),
)
#: Slowloris connections per round (each round lasts about HEAD_TIMEOUT).
SLOWLORIS = 40
#: A never-reading download holds its connection this long, then resets.
NEVER_READ_HOLD = 2 * SEND_TIMEOUT + 3
#: A reset client reads this much of the large file, then resets.
RESET_AFTER = 512 * 1024
#: Log lines (warn and above) the server copies to its log file at most.
LOG_LINES = 200
#: Resident memory may grow this much from the end of the warm-up to the end.
RSS_TOLERANCE = 0.05
#: Good clients' throughput during the attack, at least this share of alone.
THROUGHPUT_FLOOR = 0.85


class DeliberateError(Exception):
    """Raised by ``/boom``: the soak's 500 (its log events are expected)."""


# -- the server (a subprocess: ``soak.py --serve ROOT PORT DEBUG_PORT``) --------


def ownedByConnserver(call: Any) -> bool:
    """Whether a reactor delayed call was scheduled by connserver's code."""
    func = getattr(call, "func", None)
    owner = getattr(func, "__self__", None)
    modules = (getattr(func, "__module__", None) or "", type(owner).__module__)
    markers = ("HTTPServerProtocol", "PhaseTimer", "ConnectionFactory")
    return any(m.startswith("connserver") for m in modules) or any(
        marker in str(call) for marker in markers
    )


def serve(root: str, port: int, debugPort: int) -> None:
    """Run the soak server until SIGTERM (logs to standard output)."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ServerEndpoint
    from twisted.internet.protocol import Factory
    from twisted.logger import LogLevel, formatEventAsClassicLogText, globalLogBeginner
    from twisted.protocols.basic import LineOnlyReceiver

    from connserver import (
        ConnectionFactory,
        ConnectionServerService,
        PrefixMount,
        Response,
        ServerConfig,
        StaticFiles,
        StatusHandler,
    )

    logCounts: Counter[str] = Counter()
    written = [0]

    def observe(event: dict[str, Any]) -> None:
        # Never buffered: before logging begins Twisted keeps up to 65536
        # events (tracebacks included), which would look like a leak.
        failure = event.get("log_failure")
        if failure is not None and isinstance(failure.value, DeliberateError):
            logCounts["deliberate"] += 1
            return
        level = event.get("log_level")
        logCounts[level.name if level is not None else "none"] += 1
        if level is not None and level >= LogLevel.warn and written[0] < LOG_LINES:
            written[0] += 1
            sys.stdout.write(formatEventAsClassicLogText(event) or "")
            sys.stdout.flush()

    globalLogBeginner.beginLoggingTo(
        [observe],  # type: ignore[list-item]
        redirectStandardIO=False,
    )

    def boom(request: Request) -> Response:
        raise DeliberateError("soak: the /boom handler fails on purpose")

    def echo(request: Request) -> Deferred[Response]:
        def answer(body: bytes) -> Response:
            return Response(
                200, [(b"Content-Type", b"text/plain")], b"%d\n" % len(body)
            )

        return request.readBody().addCallback(answer)

    config = ServerConfig(
        requestHeadTimeout=HEAD_TIMEOUT,
        bodyTimeout=BODY_TIMEOUT,
        sendTimeout=SEND_TIMEOUT,
        idleTimeout=IDLE_TIMEOUT,
        lingerTimeout=LINGER_TIMEOUT,
        abortTimeout=ABORT_TIMEOUT,
        drainTimeout=2.0,
    )
    handler = PrefixMount(
        StaticFiles(root, reactor=reactor), {"/boom": boom, "/echo": echo}
    )
    factory = ConnectionFactory(handler, config=config, reactor=reactor)
    status = StatusHandler(factory, reactor=reactor)
    service = ConnectionServerService(
        factory,
        [
            TCP4ServerEndpoint(  # type: ignore[no-untyped-call]
                reactor, port, interface="127.0.0.1", backlog=1024
            )
        ],
    )

    class Debug(LineOnlyReceiver):
        delimiter = b"\n"

        def lineReceived(self, line: bytes) -> None:
            data = status.snapshot()
            data.pop("history", None)
            calls = reactor.getDelayedCalls()
            ours = [call for call in calls if ownedByConnserver(call)]
            data["timerCount"] = len(ours)
            data["timers"] = [str(call) for call in ours[:10]]
            data["delayedCalls"] = len(calls)
            data["refused"] = factory.stats.refused
            data["log"] = dict(logCounts)
            self.sendLine(json.dumps(data).encode())  # type: ignore[no-untyped-call]

    debugEndpoint = TCP4ServerEndpoint(  # type: ignore[no-untyped-call]
        reactor, debugPort, interface="127.0.0.1"
    )
    debugEndpoint.listen(Factory.forProtocol(Debug))  # type: ignore[no-untyped-call]
    service.startService()  # type: ignore[no-untyped-call]
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


class DebugChannel:
    """The soak server's ``stats`` line protocol, one connection for the run."""

    def __init__(self, port: int) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                self._sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._buffer = b""

    def stats(self) -> dict[str, Any]:
        self._sock.sendall(b"stats\n")
        while b"\n" not in self._buffer:
            data = self._sock.recv(65536)
            if not data:
                raise RuntimeError("the soak server closed its debug channel")
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        result: dict[str, Any] = json.loads(line)
        return result

    def close(self) -> None:
        self._sock.close()


def fdCount(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fdKinds(pid: int) -> dict[str, int]:
    """Open descriptors by kind (socket, pipe, a file's path, ...)."""
    kinds: Counter[str] = Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            kinds[target.split(":[")[0] if ":[" in target else target] += 1
    return dict(kinds)


# -- clients -------------------------------------------------------------------


class BadResponse(Exception):
    """A response that is not what the client expected."""


def connect(port: int, *, receiveBuffer: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(CLIENT_TIMEOUT)
    if receiveBuffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receiveBuffer)
    try:
        sock.connect(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    return sock


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a reset."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@dataclass
class Reply:
    status: int
    fields: dict[bytes, bytes]
    bodyLength: int

    def closes(self) -> bool:
        return b"close" in self.fields.get(b"connection", b"").lower()


class Reader:
    """Reads responses off one socket (pipelined ones included)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("the server closed the connection")
        self.buffer += data

    def reply(self) -> Reply:
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if len(self.buffer) > 65536:
                raise BadResponse("a response head over 64 KiB")
            self._fill()
        lines = bytes(self.buffer[:end]).split(b"\r\n")
        del self.buffer[: end + 4]
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise BadResponse(f"bad status line {lines[0][:80]!r}")
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
        if b"content-length" in fields:
            length = int(fields[b"content-length"])
            while len(self.buffer) < length:
                self._fill()
            del self.buffer[:length]
        else:
            # No length (an HTTP/1.0 close-delimited body): read to the end.
            with contextlib.suppress(EOFError):
                while True:
                    self._fill()
            length = len(self.buffer)
            self.buffer.clear()
        return Reply(int(parts[1]), fields, length)

    def untilClosed(self) -> None:
        """Read and drop until the server closes (or resets) the connection."""
        with contextlib.suppress(EOFError, ConnectionError):
            while True:
                self._fill()
                self.buffer.clear()


GOOD_REQUESTS = {
    "keepalive": b"GET /small.txt HTTP/1.1\r\nHost: soak\r\n\r\n",
    "http10-keepalive": b"GET /small.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "http10": b"GET /small.txt HTTP/1.0\r\n\r\n",
    "pipeline": b"GET /small.txt HTTP/1.1\r\nHost: soak\r\n\r\n" * PIPELINE_DEPTH,
}


def goodClient(
    kind: str,
    port: int,
    slot: int,
    counts: MutableSequence[int],
    errors: MutableSequence[int],
    stop: Event,
    messages: list[str],
) -> None:
    """Request the small file in a closed loop; count responses and errors."""
    request = GOOD_REQUESTS[kind]
    expected = PIPELINE_DEPTH if kind == "pipeline" else 1
    sock: socket.socket | None = None
    reader: Reader | None = None
    while not stop.is_set():
        try:
            if sock is None or reader is None:
                sock = connect(port)
                reader = Reader(sock)
            sock.sendall(request)
            keep = True
            for _ in range(expected):
                reply = reader.reply()
                if reply.status != 200 or reply.bodyLength != SMALL_SIZE:
                    raise BadResponse(f"{reply.status}, {reply.bodyLength} bytes")
                counts[slot] += 1
                if reply.closes() or (
                    kind.startswith("http10")
                    and b"keep-alive"
                    not in reply.fields.get(b"connection", b"").lower()
                ):
                    keep = False
                    break
            if not keep:
                if kind == "http10":
                    # Let the server close first (its http10-default close).
                    reader.untilClosed()
                sock.close()
                sock = reader = None
        except (OSError, EOFError, ValueError, BadResponse) as error:
            errors[slot] += 1
            if len(messages) < 10:
                messages.append(f"{kind}: {type(error).__name__}: {error}")
            if sock is not None:
                sock.close()
            sock = reader = None
            stop.wait(0.1)
    if sock is not None:
        sock.close()


def joinAll(threads: list[threading.Thread], timeout: float) -> None:
    """Join every thread within ``timeout`` seconds in all."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


def goodProcess(
    port: int,
    counts: MutableSequence[int],
    errors: MutableSequence[int],
    stop: Event,
    results: Queue[dict[str, Any]],
) -> None:
    messages: list[str] = []
    threads = []
    slot = 0
    for kind, number in GOOD_CLIENTS:
        for _ in range(number):
            threads.append(
                threading.Thread(
                    target=goodClient,
                    args=(kind, port, slot, counts, errors, stop, messages),
                    daemon=True,
                )
            )
            slot += 1
    for thread in threads:
        thread.start()
    stop.wait()
    joinAll(threads, CLIENT_TIMEOUT + 5)
    results.put({"stuck": sum(t.is_alive() for t in threads), "messages": messages})


@dataclass
class Tally:
    """What the hostile clients saw, by kind: outcomes and surprises."""

    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, outcome: str, expected: tuple[str, ...]) -> None:
        with self.lock:
            self.outcomes.setdefault(kind, Counter())[outcome] += 1
            if outcome not in expected:
                self.outcomes[kind]["unexpected"] += 1
                if len(self.unexpected) < 20:
                    self.unexpected.append(f"{kind}: {outcome}")


def hostileLoop(
    kind: str,
    stop: Event,
    tally: Tally,
    expected: tuple[str, ...],
    once: Callable[[], str],
    pause: float,
) -> None:
    while not stop.is_set():
        try:
            outcome = once()
        except (OSError, EOFError, ValueError, BadResponse) as error:
            outcome = type(error).__name__
        tally.add(kind, outcome, expected)
        stop.wait(pause)


def askOnce(port: int, request: bytes, closeFirst: bool = False) -> str:
    """Send ``request`` on a new connection; the reply's status code."""
    with connect(port) as sock:
        sock.sendall(request)
        reader = Reader(sock)
        status = str(reader.reply().status)
        if not closeFirst:
            reader.untilClosed()
        return status


def trickledBody(port: int, stop: Event, complete: bool) -> str:
    """A 6-byte body a byte a second (200), or 2 bytes then nothing (408)."""
    with connect(port) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: soak\r\nContent-Length: 6\r\n"
            b"Connection: close\r\n\r\n"
        )
        for _ in range(6 if complete else 2):
            if stop.wait(1.0):
                return "stopped"
            sock.sendall(b"x")
        reader = Reader(sock)
        status = str(reader.reply().status)
        reader.untilClosed()
        return status


def resetMidResponse(port: int) -> str:
    """Read part of the large file, then reset the connection."""
    sock = connect(port)
    try:
        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: soak\r\n\r\n")
        received = 0
        while received < RESET_AFTER:
            data = sock.recv(65536)
            if not data:
                return "closed early"
            received += len(data)
        return "reset"
    finally:
        reset(sock)


def neverRead(port: int, stop: Event) -> str:
    """Ask for the large file and never read; reset after the hold."""
    sock = connect(port, receiveBuffer=4096)
    try:
        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: soak\r\n\r\n")
        return "stopped" if stop.wait(NEVER_READ_HOLD) else "held"
    finally:
        reset(sock)


def slowlorisRounds(port: int, stop: Event, tally: Tally) -> None:
    """Rounds of SLOWLORIS heads trickled a byte a second (bench_hardening)."""
    while not stop.is_set():
        clients = startClients(
            "trickle", port, SLOWLORIS, "127.0.0.2", HEAD_TIMEOUT + 10
        )
        try:
            readJson(clients, "connected", 30)
            result = readJson(clients, "closed", HEAD_TIMEOUT + 20)
        except RuntimeError as error:
            tally.add("slowloris", f"no result: {error}"[:200], ())
            continue
        finally:
            with contextlib.suppress(Exception):
                clients.kill()
            clients.wait(10)
            for stream in (clients.stdout, clients.stderr):
                if stream is not None:
                    stream.close()
        closed, got408 = result["closed"], result["got408"]
        longest = result["maxLifetime"] or 0.0
        with tally.lock:
            counter = tally.outcomes.setdefault("slowloris", Counter())
            counter["rounds"] += 1
            counter["connections"] += SLOWLORIS
            counter["closed"] += closed
            counter["408"] += got408
            counter["longest ms"] = max(counter["longest ms"], int(longest * 1000))
        if closed != SLOWLORIS:
            tally.add("slowloris", f"{SLOWLORIS - closed} not closed", ())


def hostileProcess(port: int, stop: Event, results: Queue[dict[str, Any]]) -> None:
    tally = Tally()
    request400 = b"GARBAGE\r\n\r\n"
    badLength = (
        b"POST /echo HTTP/1.1\r\nHost: soak\r\nContent-Length: 12abc\r\n\r\nhello"
    )
    boom = b"GET /boom HTTP/1.1\r\nHost: soak\r\n\r\n"
    boomClose = b"GET /boom HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n"
    missing = b"GET /missing HTTP/1.1\r\nHost: soak\r\n\r\n"
    # (kind, outcomes expected, one attempt, pause after it, threads)
    loops: list[tuple[str, tuple[str, ...], Callable[[], str], float, int]] = [
        (
            "trickled body",
            ("200", "stopped"),
            partial(trickledBody, port, stop, True),
            0,
            2,
        ),
        (
            "stalled body",
            ("408", "stopped"),
            partial(trickledBody, port, stop, False),
            0,
            2,
        ),
        ("reset mid-response", ("reset",), partial(resetMidResponse, port), 0.25, 2),
        (
            "never-reading download",
            ("held", "stopped"),
            partial(neverRead, port, stop),
            0,
            2,
        ),
        (
            "malformed request line",
            ("400",),
            partial(askOnce, port, request400),
            0.2,
            1,
        ),
        ("bad Content-Length", ("400",), partial(askOnce, port, badLength), 0.2, 1),
        ("500 from /boom", ("500",), partial(askOnce, port, boom, True), 0.2, 1),
        ("500 from /boom, close", ("500",), partial(askOnce, port, boomClose), 0.2, 1),
        ("404", ("404",), partial(askOnce, port, missing, True), 0.2, 1),
    ]
    threads = [
        threading.Thread(
            target=hostileLoop,
            args=(kind, stop, tally, expected, once, pause),
            daemon=True,
        )
        for kind, expected, once, pause, copies in loops
        for _ in range(copies)
    ]
    threads.append(
        threading.Thread(target=slowlorisRounds, args=(port, stop, tally), daemon=True)
    )
    for thread in threads:
        thread.start()
    stop.wait()
    joinAll(threads, HEAD_TIMEOUT + 30)
    results.put(
        {
            "outcomes": {kind: dict(c) for kind, c in tally.outcomes.items()},
            "unexpected": tally.unexpected,
            "stuck": sum(t.is_alive() for t in threads),
        }
    )


def warmUp(port: int) -> None:
    """One request of each sort, so that lazily made state exists at the baseline."""
    with connect(port) as sock:
        sock.sendall(
            b"GET /big.bin HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n"
        )
        reply = Reader(sock).reply()
        if reply.status != 200 or reply.bodyLength != BIG_SIZE:
            raise RuntimeError(f"the large file: {reply}")
    for request, status in (
        (b"GET /small.txt HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n", "200"),
        (b"GET /boom HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n", "500"),
        (
            b"POST /echo HTTP/1.1\r\nHost: soak\r\nContent-Length: 2\r\n"
            b"Connection: close\r\n\r\nhi",
            "200",
        ),
        (b"GARBAGE\r\n\r\n", "400"),
    ):
        got = askOnce(port, request)
        if got != status:
            raise RuntimeError(f"warm-up {request[:20]!r}: {got}, not {status}")


# -- the run -------------------------------------------------------------------


class GlobalTimeout(Exception):
    pass


def onAlarm(signum: int, frame: FrameType | None) -> None:
    raise GlobalTimeout


@dataclass
class Sample:
    t: float
    rssKiB: int
    fds: int
    good: int
    #: CPU seconds used so far by the server, and by the load (this process
    #: and its children).
    serverCpu: float
    loadCpu: float
    #: CPU seconds used so far by the whole machine.
    machineCpu: float


@dataclass
class Checks:
    failed: list[str] = field(default_factory=list)

    def report(self, name: str, ok: bool, detail: str) -> None:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}", flush=True)
        if not ok:
            self.failed.append(name)


def makeFiles(root: Path) -> None:
    (root / SMALL).write_bytes(b"s" * SMALL_SIZE)
    with (root / BIG).open("wb") as f:
        f.truncate(BIG_SIZE)


@contextlib.contextmanager
def processes(
    context: Any, targets: list[tuple[Callable[..., None], tuple[Any, ...]]]
) -> Iterator[list[Any]]:
    started = [context.Process(target=t, args=a, daemon=True) for t, a in targets]
    for process in started:
        process.start()
    try:
        yield started
    finally:
        for process in started:
            if process.is_alive():
                process.terminate()
            process.join(5)


def run(args: argparse.Namespace) -> int:
    total = args.minutes * 60.0
    alone = min(30.0, max(10.0, total * 0.1))
    rampUp = 3.0
    # Good clients alone again after the attack: not part of the check, it
    # shows how much the machine's other work moved the figures meanwhile.
    again = min(20.0, max(8.0, total * 0.05))
    attack = total - alone - rampUp - again
    if attack < 40:
        sys.exit("--minutes is too short: at least 1")
    warmup = max(30.0, attack * 0.25)
    every = 10.0 if total <= 180 else 30.0
    checks = Checks()
    context = multiprocessing.get_context("spawn")
    nGood = sum(n for _, n in GOOD_CLIENTS)
    counts: MutableSequence[int] = context.Array("q", nGood, lock=False)
    errors: MutableSequence[int] = context.Array("q", nGood, lock=False)
    stopGood, stopHostile = context.Event(), context.Event()
    goodResults: Queue[dict[str, Any]] = context.Queue()
    hostileResults: Queue[dict[str, Any]] = context.Queue()

    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        work = Path(tmp)
        root = work / "root"
        root.mkdir()
        makeFiles(root)
        port, debugPort = freePort(), freePort()
        argv = [python(), __file__, "--serve", str(root), str(port), str(debugPort)]
        log = work / "server.log"
        with server(argv, port, log=log) as process:
            pid = process.pid
            debug = DebugChannel(debugPort)
            warmUp(port)
            settle(debug, pid, None, 15)
            baseline = debug.stats()
            baseFds, baseRss = fdCount(pid), rssKiB(pid)
            print(
                f"soak: {args.minutes:g} min on 127.0.0.1:{port} (server pid {pid}): "
                f"good clients alone {alone:.0f} s, then the attack {attack:.0f} s "
                f"(warm-up {warmup:.0f} s); baseline {baseFds} descriptors "
                f"{fdKinds(pid)}, RSS {baseRss} KiB",
                flush=True,
            )
            samples: list[Sample] = []
            started = time.monotonic()

            def sample() -> Sample:
                serverCpu = treeCpuSeconds(pid)
                s = Sample(
                    time.monotonic() - started,
                    rssKiB(pid),
                    fdCount(pid),
                    sum(counts),
                    serverCpu,
                    # The server is a child of this process: not load.
                    treeCpuSeconds(os.getpid()) - serverCpu,
                    machineCpuSeconds(),
                )
                samples.append(s)
                return s

            def runFor(seconds: float, phase: str) -> Sample:
                end = time.monotonic() + seconds
                last = samples[-1] if samples else sample()
                nextPrint = last.t + every
                while (left := end - time.monotonic()) > 0:
                    time.sleep(min(1.0, left))
                    s = sample()
                    if s.t >= nextPrint:
                        nextPrint += every
                        stats = debug.stats()
                        first = next(x for x in samples if x.t >= s.t - every)
                        print(
                            f"  {s.t:6.0f} s {phase:6} RSS {s.rssKiB} KiB, "
                            f"{s.fds} fds, {stats['active']} connections "
                            f"{stats['states']}; good {rate(first, s)}",
                            flush=True,
                        )
                return samples[-1]

            with processes(
                context, [(goodProcess, (port, counts, errors, stopGood, goodResults))]
            ) as goodProcs:
                sample()
                begin = runFor(rampUp, "alone")
                end = runFor(alone, "alone")
                aloneRate = (end.good - begin.good) / (end.t - begin.t)
                with processes(
                    context, [(hostileProcess, (port, stopHostile, hostileResults))]
                ) as hostileProcs:
                    attackStart = runFor(5.0, "attack")
                    runFor(warmup - 5.0, "attack")
                    warmRss = windowRss(samples, samples[-1].t, 5)
                    attackEnd = runFor(attack - warmup, "attack")
                    endRss = windowRss(samples, attackEnd.t, 5)
                    attackRate = (attackEnd.good - attackStart.good) / (
                        attackEnd.t - attackStart.t
                    )
                    loaded = debug.stats()
                    stopHostile.set()
                    hostile = hostileResults.get(timeout=HEAD_TIMEOUT + 60)
                    for p in hostileProcs:
                        p.join(10)
                againBegin = sample()
                againEnd = runFor(again, "again")
                againRate = (againEnd.good - againBegin.good) / (
                    againEnd.t - againBegin.t
                )
                stopGood.set()
                good = goodResults.get(timeout=CLIENT_TIMEOUT + 20)
                for p in goodProcs:
                    p.join(10)
            stoppedAt = time.monotonic()
            final = settle(debug, pid, baseFds, 30)
            settleTime = time.monotonic() - stoppedAt
            finalFds, finalRss = fdCount(pid), rssKiB(pid)
            finalKinds = fdKinds(pid)
            debug.close()
        serverLog = log.read_text(errors="replace")

    print(
        f"soak: clients stopped; the server settled in {settleTime:.1f} s; "
        f"{final['accepted'] - baseline['accepted']} connections and "
        f"{final['requests'] - baseline['requests']} requests during the run, "
        f"{final['refused']} refused; peak RSS {max(s.rssKiB for s in samples)} KiB",
        flush=True,
    )
    print(f"      at the end of the attack: {loaded['states']}")
    print(f"      close reasons: {final['closes']}")
    neverRead = hostile["outcomes"].get("never-reading download", {})
    print(
        f"      never-reading downloads: {sum(neverRead.values())}, "
        f"send-timeout closes: {final['closes'].get('send-timeout', 0)}"
    )
    slots = [kind for kind, number in GOOD_CLIENTS for _ in range(number)]
    byKind: Counter[str] = Counter()
    for kind, count in zip(slots, counts, strict=True):
        byKind[kind] += count
    print(f"      good clients' responses: {dict(byKind)}")
    print("      hostile clients (outcomes by kind):")
    for kind, outcomes in hostile["outcomes"].items():
        print(f"        {kind}: {outcomes}")
    print(f"      server log counts: {final['log']}")
    if serverLog.strip():
        lines = serverLog.strip().splitlines()
        print(f"      server log ({len(lines)} lines, warn and above), first lines:")
        for line in lines[:8]:
            print(f"        {line[:200]}")

    growth = (endRss - warmRss) / warmRss
    checks.report(
        "RSS flat after warm-up",
        growth <= RSS_TOLERANCE,
        f"{warmRss:.0f} KiB at the end of the warm-up ({warmup:.0f} s into the "
        f"attack), {endRss:.0f} KiB at the end: {growth:+.1%} (limit "
        f"+{RSS_TOLERANCE:.0%}); baseline {baseRss} KiB, after the clients "
        f"stopped {finalRss} KiB",
    )
    checks.report(
        "descriptors back to the baseline",
        finalFds == baseFds,
        f"{finalFds} open after the clients stopped, {baseFds} at the baseline"
        + ("" if finalFds == baseFds else f"; now {finalKinds}"),
    )
    checks.report(
        "no connection left registered, no connserver timer pending",
        final["active"] == 0 and final["timerCount"] == 0,
        f"{final['active']} connections, {final['timerCount']} connserver timers "
        f"({final['delayedCalls']} delayed calls in all)"
        + (f": {final['timers']}" if final["timerCount"] else ""),
    )
    closes: dict[str, int] = final["closes"]
    from connserver._http.persistence import CONNECTION_CLOSE_REASONS

    unknown = sorted(set(closes) - set(CONNECTION_CLOSE_REASONS))
    checks.report(
        "every close reason accounted for",
        sum(closes.values()) == final["accepted"] and not unknown,
        f"{sum(closes.values())} closes counted, {final['accepted']} accepted"
        + (f"; unknown reasons {unknown}" if unknown else "; no unknown reason"),
    )
    ratio = attackRate / aloneRate if aloneRate else 0.0
    checks.report(
        "good clients' throughput under attack"
        + ("" if args.speed_check else " (figure only: --no-speed-check)"),
        ratio >= THROUGHPUT_FLOOR or not args.speed_check,
        f"{attackRate:.0f} responses/s during the attack, {aloneRate:.0f} alone: "
        f"{ratio:.1%} (floor {THROUGHPUT_FLOOR:.0%}); alone: {rate(begin, end)}; "
        f"attack: {rate(attackStart, attackEnd)}; alone again after the attack: "
        f"{rate(againBegin, againEnd)}, the attack's figure "
        f"{attackRate / againRate if againRate else 0.0:.1%} of it (CPU in % of "
        "one core; other work on the machine skews the figures)",
    )
    busier = (other(attackEnd) - other(attackStart)) / (attackEnd.t - attackStart.t) - (
        other(end) - other(begin)
    ) / (end.t - begin.t)
    if ratio < THROUGHPUT_FLOOR and busier > 0.1:
        print(
            f"      note: other work on the machine took {busier:.0%} of a core "
            "more during the attack than while the good clients ran alone; "
            "compare the server's CPU shares above, and rerun on a quiet machine"
        )
    goodErrors = sum(errors)
    checks.report(
        "good clients saw no failure",
        goodErrors == 0 and good["stuck"] == 0,
        f"{sum(counts)} responses, {goodErrors} failures"
        + (f" ({good['messages']})" if goodErrors else "")
        + (f", {good['stuck']} clients stuck" if good["stuck"] else ""),
    )
    unexpected = hostile["unexpected"]
    checks.report(
        "hostile clients got the answers they should",
        not unexpected and hostile["stuck"] == 0,
        f"{sum(c.get('unexpected', 0) for c in hostile['outcomes'].values())} "
        "unexpected"
        + (f": {unexpected}" if unexpected else "")
        + (f", {hostile['stuck']} clients stuck" if hostile["stuck"] else ""),
    )
    if checks.failed:
        print(f"soak: FAILED: {', '.join(checks.failed)}")
        return 1
    print("soak: all checks passed")
    return 0


def rate(first: Sample, last: Sample) -> str:
    """Good responses per second between two samples, and the CPU shares."""
    seconds = max(last.t - first.t, 1e-9)
    return (
        f"{(last.good - first.good) / seconds:.0f} responses/s, server CPU "
        f"{(last.serverCpu - first.serverCpu) / seconds:.0%}, load CPU "
        f"{(last.loadCpu - first.loadCpu) / seconds:.0%}, other work "
        f"{(other(last) - other(first)) / seconds:.0%}"
    )


def other(s: Sample) -> float:
    return s.machineCpu - s.serverCpu - s.loadCpu


def machineCpuSeconds() -> float:
    """Busy CPU seconds of the whole machine (every core), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    busy = user + nice + system + irq + softirq + steal
    return busy / os.sysconf("SC_CLK_TCK")


def windowRss(samples: list[Sample], end: float, seconds: float) -> float:
    """Mean RSS of the samples in the ``seconds`` up to ``end``."""
    window = [s.rssKiB for s in samples if end - seconds <= s.t <= end]
    return sum(window) / len(window)


def settle(
    debug: DebugChannel, pid: int, fds: int | None, timeout: float
) -> dict[str, Any]:
    """
    Wait until no connection and no connserver timer is left (and, given
    ``fds``, the descriptors are back to it); the last stats either way.
    """
    deadline = time.monotonic() + timeout
    while True:
        stats = debug.stats()
        done = stats["active"] == 0 and stats["timerCount"] == 0
        if done and (fds is None or fdCount(pid) == fds):
            return stats
        if time.monotonic() > deadline:
            return stats
        time.sleep(0.25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--short", action="store_true", help="2 minutes (CI)")
    parser.add_argument(
        "--no-speed-check",
        dest="speed_check",
        action="store_false",
        help=(
            "print the throughput figure without failing on it (CI: a speed "
            "ratio is a benchmark figure, and the CI machine may be shared)"
        ),
    )
    parser.add_argument("--serve", nargs=3, metavar=("ROOT", "PORT", "DEBUG_PORT"))
    args = parser.parse_args()
    if args.serve is not None:
        root, port, debugPort = args.serve
        serve(root, int(port), int(debugPort))
        return
    if args.short:
        args.minutes = 2.0
    allowed = os.sched_getaffinity(0)
    if len(allowed) > 1 and int(LOAD_CPU) in allowed:
        # The load (this process and its children) on one core, the server
        # (pinned by _servers.server) on the other.
        os.sched_setaffinity(0, {int(LOAD_CPU)})
    signal.signal(signal.SIGALRM, onAlarm)
    signal.alarm(int(args.minutes * 60 + 120))
    try:
        status = run(args)
    except GlobalTimeout:
        print(
            f"FAIL  global timeout: the soak took over {args.minutes * 60 + 120:.0f} s"
        )
        status = 1
    finally:
        signal.alarm(0)
    sys.exit(status)


if __name__ == "__main__":
    main()
