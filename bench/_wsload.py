"""
The load side of bench_websocket.py: a raw-socket WebSocket client on one
epoll loop, so that one core of it outruns a Python WebSocket server.

    python bench/_wsload.py echo PORT SECONDS WARMUP CONNECTIONS INFLIGHT SOURCES
    python bench/_wsload.py handshake PORT SECONDS WARMUP CONNECTIONS 0 SOURCES
    python bench/_wsload.py idle PORT SECONDS 0 CONNECTIONS 0 SOURCES

``SOURCES`` is a prefix of three octets (``127.31.5``): connection ``i``
binds ``SOURCES.(i % 250 + 1)`` with ``IP_BIND_ADDRESS_NO_PORT``, so that
many short connections never run out of ephemeral ports (a fresh prefix per
run also keeps the last run's TIME_WAIT out of the way).

* ``echo``: opens CONNECTIONS WebSockets (the handshake is checked:
  ``101`` and the ``Sec-WebSocket-Accept`` of the fixed key), then keeps
  INFLIGHT binary messages of 64 bytes in flight on each: every echoed
  frame read sends the next one.  Frames are built beforehand: per
  connection a cycle of 16 distinct payloads (connection and sequence
  number in them), each masked with its own key; the server's echoes must
  be exactly the unmasked frames in order (``0x82 0x40`` + payload), which
  is checked byte for byte for every message.  WARMUP seconds are run
  first and not counted.
* ``handshake``: CONNECTIONS concurrent clients, each in a loop: connect,
  write a fixed handshake request, read until the end of the head, check
  the ``101`` and its accept value, close (FIN, no close frame).
* ``idle``: opens CONNECTIONS WebSockets one after the other, sends one
  message on each and reads its echo, prints ``{"idle": CONNECTIONS}`` and
  holds them open for SECONDS (or until killed).

Prints JSON lines: ``{"start": ...}`` when the counted window begins (the
caller reads the server's CPU time then), and a last line with the counts,
the elapsed time of the window, and ``loadCpu``, the share of a core this
process used in the window (near 1.0, the client may set the figure).
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import resource
import select
import socket
import sys
import time

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = base64.b64encode(
    hashlib.sha1(KEY + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
)
PAYLOAD = 64
CYCLE = 16
SENT = 6 + PAYLOAD  # masked client frame: 2 header bytes, 4 mask bytes
ECHOED = 2 + PAYLOAD  # unmasked server frame
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def handshakeRequest(port: int) -> bytes:
    return (
        b"GET / HTTP/1.1\r\n"
        b"Host: 127.0.0.1:%d\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + KEY + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n"
        b"\r\n"
    ) % port


def checkHead(head: bytes) -> None:
    if not head.startswith(b"HTTP/1.1 101 ") or ACCEPT not in head:
        raise RuntimeError(f"not the expected 101: {head[:300]!r}")


def newSocket(sources: str, index: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    sock.bind((f"{sources}.{index % 250 + 1}", 0))
    return sock


def openWebSocket(port: int, sources: str, index: int) -> socket.socket:
    """A blocking connect and handshake; the socket it returns is open."""
    sock = newSocket(sources, index)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.sendall(handshakeRequest(port))
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError(f"closed during the handshake: {received[:300]!r}")
        received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    checkHead(head)
    if rest:
        raise RuntimeError(f"bytes after the 101: {rest[:100]!r}")
    return sock


def frames(index: int) -> tuple[bytes, bytes]:
    """Connection ``index``'s cycle: (masked frames to send, echoes expected)."""
    sent, echoed = [], []
    for sequence in range(CYCLE):
        payload = (b"%05d:%02d:" % (index, sequence)).ljust(PAYLOAD, b"x")
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        sent.append(bytes([0x82, 0x80 | PAYLOAD]) + mask + masked)
        echoed.append(bytes([0x82, PAYLOAD]) + payload)
    # Twice over, so that a slice of up to CYCLE frames never wraps.
    return b"".join(sent) * 2, b"".join(echoed) * 2


def cpuSeconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def echo(
    port: int, seconds: float, warmup: float, count: int, inflight: int, sources: str
) -> None:
    if not 1 <= inflight <= CYCLE:
        raise SystemExit(f"INFLIGHT must be 1 to {CYCLE}")
    poller = select.epoll()
    # fd -> [socket, frames to send, echoes expected, next echo, next send, rest]
    state: dict[int, list] = {}
    for index in range(count):
        sock = openWebSocket(port, sources, index)
        sock.setblocking(False)
        toSend, expected = frames(index)
        state[sock.fileno()] = [sock, toSend, expected, 0, inflight % CYCLE, b""]
        poller.register(sock.fileno(), select.EPOLLIN)
        sock.send(toSend[: inflight * SENT])
    messages = 0
    counted = None
    started = time.monotonic()
    countFrom = started + warmup
    end = countFrom + seconds
    poll = poller.poll
    while True:
        now = time.monotonic()
        if counted is None and now >= countFrom:
            counted = (messages, now, cpuSeconds())
            emit(start=time.time())
        if now >= end:
            break
        for fd, _ in poll(0.2):
            entry = state[fd]
            data = entry[0].recv(65536)
            if not data:
                raise RuntimeError(f"connection {fd} closed by the server")
            if entry[5]:
                data = entry[5] + data
            n = len(data) // ECHOED
            if n:
                if n > inflight:
                    raise RuntimeError(f"{n} echoes for {inflight} messages sent")
                size = n * ECHOED
                at = entry[3]
                if data[:size] != entry[2][at * ECHOED : at * ECHOED + size]:
                    raise RuntimeError(f"wrong echo on {fd}: {data[:size][:200]!r}")
                entry[3] = (at + n) % CYCLE
                at = entry[4]
                chunk = entry[1][at * SENT : (at + n) * SENT]
                if entry[0].send(chunk) != len(chunk):
                    raise RuntimeError("a short send: the socket buffer is full")
                entry[4] = (at + n) % CYCLE
                messages += n
                entry[5] = data[size:]
            else:
                entry[5] = data
    assert counted is not None
    elapsed = time.monotonic() - counted[1]
    emit(
        messages=messages - counted[0],
        elapsed=elapsed,
        perSecond=(messages - counted[0]) / elapsed,
        loadCpu=(cpuSeconds() - counted[2]) / elapsed,
    )
    for entry in state.values():
        entry[0].close()


def handshake(
    port: int, seconds: float, warmup: float, count: int, sources: str
) -> None:
    poller = select.epoll()
    request = handshakeRequest(port)
    address = ("127.0.0.1", port)
    # fd -> [socket, head so far, slot]
    state: dict[int, list] = {}
    made = 0

    def start(slot: int) -> None:
        nonlocal made
        sock = newSocket(sources, made)
        made += 1
        sock.setblocking(False)
        code = sock.connect_ex(address)
        if code not in (0, errno.EINPROGRESS):
            raise RuntimeError(f"connect: {os.strerror(code)}")
        state[sock.fileno()] = [sock, b"", slot]
        poller.register(sock.fileno(), select.EPOLLOUT)

    for slot in range(count):
        start(slot)
    done = failed = 0
    counted = None
    started = time.monotonic()
    countFrom = started + warmup
    end = countFrom + seconds
    while True:
        now = time.monotonic()
        if counted is None and now >= countFrom:
            counted = (done, failed, now, cpuSeconds())
            emit(start=time.time())
        if now >= end:
            break
        for fd, events in poller.poll(0.2):
            entry = state[fd]
            sock = entry[0]
            if events & select.EPOLLOUT:
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    raise RuntimeError(f"connect: {os.strerror(code)}")
                sock.send(request)
                poller.modify(fd, select.EPOLLIN)
                continue
            try:
                data = sock.recv(4096)
            except ConnectionError:
                data = b""
            if data:
                head = entry[1] + data
                if b"\r\n\r\n" not in head:
                    entry[1] = head
                    continue
                checkHead(head)
                done += 1
            else:
                failed += 1
            poller.unregister(fd)
            del state[fd]
            sock.close()
            start(entry[2])
    assert counted is not None
    elapsed = time.monotonic() - counted[2]
    emit(
        handshakes=done - counted[0],
        failed=failed - counted[1],
        elapsed=elapsed,
        perSecond=(done - counted[0]) / elapsed,
        loadCpu=(cpuSeconds() - counted[3]) / elapsed,
    )
    for entry in state.values():
        entry[0].close()


def idle(port: int, seconds: float, count: int, sources: str) -> None:
    socks = []
    for index in range(count):
        sock = openWebSocket(port, sources, index)
        toSend, expected = frames(index)
        sock.sendall(toSend[:SENT])
        received = b""
        while len(received) < ECHOED:
            chunk = sock.recv(4096)
            if not chunk:
                raise RuntimeError("closed before the echo")
            received += chunk
        if received != expected[:ECHOED]:
            raise RuntimeError(f"wrong echo: {received!r}")
        socks.append(sock)
    emit(idle=count)
    time.sleep(seconds)
    for sock in socks:
        sock.close()


def main() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    mode, port, seconds, warmup, count, inflight, sources = sys.argv[1:8]
    if mode == "echo":
        echo(
            int(port), float(seconds), float(warmup), int(count), int(inflight), sources
        )
    elif mode == "handshake":
        handshake(int(port), float(seconds), float(warmup), int(count), sources)
    elif mode == "idle":
        idle(int(port), float(seconds), int(count), sources)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
