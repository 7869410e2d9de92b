"""
Benchmark of connserver's request parser.

Run: ``/work/venv/bin/python bench/bench_parser.py``.  Prints the median time
per request head for a typical ~300-byte browser GET (receiveData, then
nextEvent until NEED_DATA), a pipelined buffer of such heads, and a 64 KiB
chunked body, and PASS/MISS against the 10 us per-head target.  Timing is a
report, not a test: the test suite has no timing assertions.
"""

from __future__ import annotations

import os
import statistics
import sys
import timeit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from connserver._http.parser import NEED_DATA, RequestParser

TARGET_US = 10.0

BROWSER_HEAD = (
    b"GET /docs/index.html?lang=en HTTP/1.1\r\n"
    b"Host: www.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Firefox/128.0\r\n"
    b"Accept: text/html,application/xhtml+xml,*/*;q=0.8\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Connection: keep-alive\r\n"
    b"Referer: https://www.example.com/\r\n"
    b"Cookie: sid=abc123\r\n"
    b"\r\n"
)


def chunkedRequest(size: int, chunkSize: int) -> bytes:
    body = bytes(range(256)) * (size // 256)
    out = [
        b"POST /upload HTTP/1.1\r\nHost: www.example.com\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    ]
    for i in range(0, len(body), chunkSize):
        chunk = body[i : i + chunkSize]
        out.append(b"%x\r\n%b\r\n" % (len(chunk), chunk))
    out.append(b"0\r\n\r\n")
    return b"".join(out)


def measure(label: str, run: object, number: int, perItem: int = 1) -> float:
    """Median over repeats of the time per item, in microseconds."""
    times = timeit.repeat(run, number=number, repeat=15)  # type: ignore[arg-type]
    perCall = [t / number / perItem * 1e6 for t in times]
    median = statistics.median(perCall)
    print(f"{label:48s} median {median:9.2f} us   best {min(perCall):9.2f} us")
    return median


def main() -> int:
    print(f"Python {sys.version.split()[0]}, browser head {len(BROWSER_HEAD)} bytes")
    parser = RequestParser()

    def oneHead() -> None:
        parser.receiveData(BROWSER_HEAD)
        while parser.nextEvent() is not NEED_DATA:
            pass

    headMedian = measure("one browser head (per head)", oneHead, 20_000)

    pipelined = BROWSER_HEAD * 10

    def tenPipelined() -> None:
        parser.receiveData(pipelined)
        while parser.nextEvent() is not NEED_DATA:
            pass

    measure("10 pipelined heads in one buffer (per head)", tenPipelined, 2_000, 10)

    upload = chunkedRequest(64 * 1024, 4096)

    def chunked64k() -> None:
        parser.receiveData(upload)
        while parser.nextEvent() is not NEED_DATA:
            pass

    measure("64 KiB chunked body, 4 KiB chunks (per request)", chunked64k, 500)

    pieces = [upload[i : i + 1460] for i in range(0, len(upload), 1460)]

    def chunked64kSegments() -> None:
        for piece in pieces:
            parser.receiveData(piece)
            while parser.nextEvent() is not NEED_DATA:
                pass

    measure("64 KiB chunked body in 1460-byte reads (per req)", chunked64kSegments, 200)

    verdict = "PASS" if headMedian <= TARGET_US else "MISS"
    print(f"{verdict}: {headMedian:.2f} us per browser head (target {TARGET_US} us)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
