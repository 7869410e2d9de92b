"""
Property tests of the request parser (hypothesis).

1. On any bytes, split anyhow, the parser raises nothing but ProtocolError.
2. The events (adjacent BodyData merged) and the error do not depend on how
   the bytes are split, for generated valid and near-valid requests.
3. What ChunkedWriter writes, the parser reads back identically.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connserver._http.config import ServerConfig
from connserver._http.errors import ProtocolError
from connserver._http.framing import ChunkedWriter
from connserver._http.headers import Headers
from connserver._http.parser import (
    _BARE_LF_RE,
    NEED_DATA,
    BodyData,
    Event,
    RequestHead,
    RequestParser,
)

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

CONFIGS = [
    ServerConfig(),
    ServerConfig(maxRequestLineBytes=40, maxHeadBytes=120, maxHeaderCount=3),
    ServerConfig(maxRequestLineBytes=200, maxHeadBytes=60, maxHeaderCount=50),
    # The lenient reading of bare LF (RFC 9112 §2.2 MAY), off by default.
    ServerConfig(allowBareLf=True),
    ServerConfig(
        maxRequestLineBytes=40, maxHeadBytes=120, maxHeaderCount=3, allowBareLf=True
    ),
]


def run(
    pieces: list[bytes], config: ServerConfig
) -> tuple[list[tuple[Any, ...]], ProtocolError | None]:
    """Feed ``pieces``; return merged, comparable events and the error."""
    parser = RequestParser(config)
    events: list[Event] = []
    error: ProtocolError | None = None
    try:
        for piece in pieces:
            parser.receiveData(piece)
            while (event := parser.nextEvent()) is not NEED_DATA:
                events.append(event)
    except ProtocolError as e:
        error = e
    out: list[tuple[Any, ...]] = []
    for event in events:
        if isinstance(event, BodyData):
            if out and out[-1][0] == "body":
                out[-1] = ("body", out[-1][1] + event.data)
            else:
                out.append(("body", event.data))
        elif isinstance(event, RequestHead):
            out.append(
                (
                    "head",
                    event.method,
                    event.target,
                    event.version,
                    list(event.headers),
                    event.contentLength,
                    event.chunked,
                )
            )
        else:
            out.append(("end", list(event.trailers)))
    return out, error


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = []
    previous = 0
    for point in points:
        pieces.append(data[previous:point])
        previous = point
    pieces.append(data[previous:])
    return pieces


# -- 1. arbitrary bytes ----------------------------------------------------

PREFIXES = st.sampled_from(
    [
        b"",
        b"GET / HTTP/1.1\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n",
    ]
)
ALPHABET = st.sampled_from(
    [b"\r", b"\n", b"\r\n", b" ", b"\t", b":", b";", b"0", b"a", b"\x00", b"\xff"]
)
NOISE = st.one_of(
    st.binary(max_size=300),
    st.lists(ALPHABET, max_size=60).map(b"".join),
)


@SETTINGS
@given(
    prefix=PREFIXES,
    noise=NOISE,
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=8),
    config=st.sampled_from(CONFIGS),
)
def test_onlyProtocolErrors(
    prefix: bytes, noise: bytes, cuts: list[int], config: ServerConfig
) -> None:
    data = prefix + noise
    run(split(data, cuts), config)  # anything but ProtocolError fails the test


# -- 2. split-feed equivalence -------------------------------------------

TOKENS = st.sampled_from([b"GET", b"POST", b"PUT", b"OPTIONS", b"get", b"X-M"])
TARGETS = st.sampled_from([b"/", b"/a?b=c", b"*", b"http://h/p", b"/%20x"])
VERSIONS = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0"])
EOLS = st.sampled_from([b"\r\n", b"\n"])
FIELDS = st.sampled_from(
    [
        b"Host: example.com",
        b"host:[::1]:8080",
        b"X-A: 1",
        b"X-B:  spaced  ",
        b"Accept: */*",
        b"Cookie: a=b; c=d",
        b"Connection: keep-alive",
        b"X-Empty:",
        b"X-Obs: caf\xc3\xa9",
    ]
)
EXTENSIONS = st.sampled_from([b"", b";a", b";a=b", b' ; q="x y"', b"\t;n=1"])
TRAILERS = st.lists(st.sampled_from([b"X-T: 1", b"Checksum: abc", b"x-e:"]), max_size=3)


@st.composite
def request(draw: st.DrawFn) -> bytes:
    eol = draw(EOLS)
    lines = [draw(TOKENS) + b" " + draw(TARGETS) + b" " + draw(VERSIONS)]
    lines += draw(st.lists(FIELDS, max_size=5))
    kind = draw(st.sampled_from(["none", "length", "chunked"]))
    payload = draw(st.binary(max_size=40))
    content = b""
    if kind == "length":
        lines.append(b"Content-Length: %d" % len(payload))
        content = payload
    elif kind == "chunked":
        lines.append(b"Transfer-Encoding: chunked")
        sizes = draw(st.lists(st.integers(min_value=1, max_value=9), max_size=4))
        rest = payload
        for size in sizes:
            chunk, rest = rest[:size], rest[size:]
            if chunk:
                content += b"%x%s\r\n%s\r\n" % (len(chunk), draw(EXTENSIONS), chunk)
        content += b"0" + draw(EXTENSIONS) + b"\r\n"
        for trailer in draw(TRAILERS):
            content += trailer + eol
        content += eol
    leading = draw(st.sampled_from([b"", b"\r\n", b"\n\r\n"]))
    return leading + eol.join(lines) + eol + eol + content


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """One to three requests, maybe with one byte inserted, dropped or changed."""
    data = b"".join(draw(st.lists(request(), min_size=1, max_size=3)))
    action = draw(st.sampled_from(["keep", "insert", "delete", "replace"]))
    if action == "keep" or not data:
        return data
    at = draw(st.integers(min_value=0, max_value=len(data) - 1))
    byte = draw(st.sampled_from([b"\r", b"\n", b" ", b":", b"\x00", b"0", b"x"]))
    if action == "insert":
        return data[:at] + byte + data[at:]
    if action == "delete":
        return data[:at] + data[at + 1 :]
    return data[:at] + byte + data[at + 1 :]


@SETTINGS
@given(
    data=mutated(),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=6),
    config=st.sampled_from(CONFIGS),
)
def test_splitEquivalence(data: bytes, cuts: list[int], config: ServerConfig) -> None:
    whole = run([data], config)
    assert run(split(data, cuts), config) == whole
    assert run([data[i : i + 1] for i in range(len(data))], config) == whole


@SETTINGS
@given(
    data=mutated(),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=6),
    limits=st.sampled_from(CONFIGS[:3]),
)
def test_bareLFIsTheOnlyDifferenceOfAllowBareLF(
    data: bytes, cuts: list[int], limits: ServerConfig
) -> None:
    """
    Without a bare LF in the input, allowBareLf changes nothing; with one,
    the strict parser gives the lenient events up to a point, then a 400
    (or fails the same way the lenient one does).
    """
    strict = run(split(data, cuts), limits)
    lenient = run(split(data, cuts), limits.replace(allowBareLf=True))
    if _BARE_LF_RE.search(data) is None:
        assert strict == lenient
        return
    events, error = strict
    if error is None:  # the bare LFs were in content or leading empty lines
        assert strict == lenient
        return
    assert events == lenient[0][: len(events)]
    if error != lenient[1]:
        assert error.statusCode == 400 and "bare LF" in error.message


# -- 3. ChunkedWriter round trip --------------------------------------------

TRAILER_FIELDS = st.lists(
    st.tuples(
        st.sampled_from([b"X-Checksum", b"x-t", b"Server-Timing", b"X-A"]),
        st.binary(max_size=12).map(
            lambda v: bytes(b for b in v if b == 9 or 0x21 <= b <= 0x7E or b >= 0x80)
        ),
    ),
    max_size=4,
)


@SETTINGS
@given(
    chunks=st.lists(st.binary(max_size=300), max_size=8),
    trailers=TRAILER_FIELDS,
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=6),
)
def test_chunkedWriterRoundTrip(
    chunks: list[bytes], trailers: list[tuple[bytes, bytes]], cuts: list[int]
) -> None:
    writer = ChunkedWriter()
    wire = b"".join(writer.write(chunk) for chunk in chunks)
    wire += writer.finish(Headers(trailers) if trailers else None)
    head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    events, error = run(
        split(head + wire + b"GET / HTTP/1.0\r\n\r\n", cuts), CONFIGS[0]
    )
    assert error is None
    body = b"".join(chunks)
    expected: list[tuple[Any, ...]] = [
        (
            "head",
            b"POST",
            b"/",
            (1, 1),
            [(b"Host", b"x"), (b"Transfer-Encoding", b"chunked")],
            None,
            True,
        )
    ]
    if body:
        expected.append(("body", body))
    # Values are read back without trailing whitespace (RFC 9112 §5: OWS).
    expected.append(("end", [(n, v.strip(b" \t")) for n, v in trailers]))
    expected.append(("head", b"GET", b"/", (1, 0), [], 0, False))
    expected.append(("end", []))
    assert events == expected
