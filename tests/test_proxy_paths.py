"""
Paths, fields, Max-Forwards and body limits of ``ReverseProxy``.

The path cases run against Python's ``http.server`` as the upstream: it
decodes the path and removes dot-segments before it opens a file, so any
spelling of ``..`` or ``/`` that slipped through would serve
``private.txt``, outside the ``/api`` mount.  The other cases read the
request head the proxy would send, without sockets.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock

from connserver import Headers, PrefixMount, Request, Response, ReverseProxy

from ._helpers import ensureDeferred, eventually
from ._helpers import realReactor as _reactor
from ._sockets import bounded, connect, finish, serve


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def httpServer(tmp_path: Path) -> Iterator[int]:
    """``python -m http.server`` over a tree with /api/static.txt and /private.txt."""
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "static.txt").write_text("static\n")
    (tmp_path / "private.txt").write_text("PRIVATE\n")
    port = freePort()
    process = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                return False
            return True

        eventually(listening, timeout=10, message="http.server did not start")
        yield port
    finally:
        process.terminate()
        process.wait(10)


def fallback(request: Request) -> Response:
    return Response(404, [], b"front 404\n")


async def mounted(port: int, **options: Any) -> tuple[Any, ReverseProxy]:
    proxy = ReverseProxy(
        f"http://127.0.0.1:{port}", reactor=_reactor(), prefix="/api", **options
    )
    front = await serve(PrefixMount(fallback, {"/api": proxy}))
    return front, proxy


PATHS = [
    # (target, status, body) through PrefixMount + the proxy at /api.
    (b"/api/static.txt", 200, b"static\n"),
    (b"http://x/api/static.txt", 200, b"static\n"),
    (b"HTTP://x/api/./static.txt", 200, b"static\n"),
    (b"/api/x/../static.txt", 200, b"static\n"),
    (b"/api/x/%2e%2e/static.txt", 200, b"static\n"),
    (b"/api/../private.txt", 400, None),
    (b"/api/%2e%2e/private.txt", 400, None),
    (b"/api/%2E%2E/private.txt", 400, None),
    (b"/api/.%2e/private.txt", 400, None),
    (b"http://x/api/../private.txt", 400, None),
    (b"/api/..%2fprivate.txt", 400, None),
    (b"/api/%2e%2e%2fprivate.txt", 400, None),
    (b"/api/%2E%2E%2Fprivate.txt", 400, None),
    (b"/api/..%5cprivate.txt", 400, None),
    (b"/api/..\\private.txt", 400, None),
    (b"/../private.txt", 400, None),
    (b"/private.txt", 404, b"front 404\n"),
    (b"http://x/private.txt", 404, b"front 404\n"),
]


@pytest.mark.slow
@ensureDeferred
async def test_pathsAgainstAnUpstreamThatRemovesDotSegments(httpServer: int) -> None:
    front, proxy = await mounted(httpServer)
    try:
        client = await connect(front)
        for i, (target, status, body) in enumerate(PATHS):
            client.write(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            responses = await client.waitResponses(i + 1)
            got = responses[i]
            assert got.status == status, (target, got)
            if body is not None:
                assert got.body == body, target
        assert b"PRIVATE" not in client.data
        client.close()
    finally:
        await bounded(proxy.close())
        await finish(front)


@pytest.mark.slow
@ensureDeferred
async def test_encodedSlashesForwardedWhenAllowed(httpServer: int) -> None:
    """
    With the option the path goes as it came, and an upstream that decodes
    before it resolves dot-segments serves what lies outside the mount: why
    the option is off by default (and for upstreams that need it only).
    """
    front, proxy = await mounted(httpServer, allowEncodedSlashes=True)
    try:
        client = await connect(
            front, request=b"GET /api/..%2fprivate.txt HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        [response] = await client.waitResponses(1)
        assert (response.status, response.body) == (200, b"PRIVATE\n")
        client.close()
    finally:
        await bounded(proxy.close())
        await finish(front)


@pytest.mark.slow
@ensureDeferred
async def test_upstreamURLWithAPathStripsThePrefix(httpServer: int) -> None:
    """``--proxy /pub/=http://up/api/``: /pub/static.txt is /api/static.txt there."""
    proxy = ReverseProxy(
        f"http://127.0.0.1:{httpServer}/api/", reactor=_reactor(), prefix="/pub/"
    )
    front = await serve(PrefixMount(fallback, {"/pub/": proxy}))
    try:
        client = await connect(
            front, request=b"GET /pub/static.txt HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        [response] = await client.waitResponses(1)
        assert (response.status, response.body) == (200, b"static\n")
        client.close()
    finally:
        await bounded(proxy.close())
        await finish(front)


def target(url: str, prefix: str | None, path: bytes) -> bytes:
    proxy = ReverseProxy(url, reactor=MemoryReactorClock(), prefix=prefix)
    head = proxy._requestHead(Request(b"GET", path, headers=Headers([(b"Host", b"h")])))
    assert isinstance(head, bytes), head
    return head.split(b" ")[1]


def test_prefixStripping() -> None:
    # No path in the URL: the target goes unchanged.
    assert target("http://u:1", "/api", b"/api/x?q=1") == b"/api/x?q=1"
    # A path replaces the prefix, as proxy_pass http://u/;
    assert target("http://u:1/", "/api/", b"/api/x?q=1") == b"/x?q=1"
    assert target("http://u:1/", "/api", b"/api") == b"/"
    assert target("http://u:1/v2/", "/api", b"/api/x") == b"/v2/x"
    assert target("http://u:1/v2", "/api", b"/api/x") == b"/v2/x"
    # Without a prefix (not mounted), a path goes in front.
    assert target("http://u:1/v2", None, b"/x") == b"/v2/x"
    # Absolute-form goes upstream in origin-form.
    assert target("http://u:1", "/api", b"http://h/api/x?y") == b"/api/x?y"


def headFor(request: Request, **options: Any) -> bytes | Response:
    proxy = ReverseProxy(
        "http://10.1.2.3:9000", reactor=MemoryReactorClock(), **options
    )
    return proxy._requestHead(request)


def fields(head: bytes | Response) -> list[tuple[bytes, bytes]]:
    assert isinstance(head, bytes), head
    out = []
    for line in head.split(b"\r\n")[1:-2]:
        name, _, value = line.partition(b": ")
        out.append((name.lower(), value))
    return out


PEER = IPv4Address("TCP", "192.0.2.7", 5000)


def test_connectionNamedForwardingFieldsAreRemovedFirst() -> None:
    request = Request(
        b"GET",
        b"/",
        headers=Headers(
            [
                (b"Host", b"h"),
                (b"Connection", b"x-forwarded-for, forwarded"),
                (b"X-Forwarded-For", b"6.6.6.6"),
                (b"Forwarded", b"for=6.6.6.6"),
            ]
        ),
        peer=PEER,
    )
    sent = fields(headFor(request))
    assert (b"x-forwarded-for", b"192.0.2.7") in sent
    assert (b"forwarded", b"for=192.0.2.7;proto=http;host=h") in sent
    assert b"6.6.6.6" not in b"".join(v for _, v in sent)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b"Forwarded", b'for="1.2.3.4'),
        (b"Forwarded", b"for=1.2.3.4;;=x"),
        (b"X-Forwarded-For", b"1.2.3.4, evil"),
        (b"X-Forwarded-For", b"1.2.3.4,"),
        (b"X-Forwarded-For", b"999.1.1.1"),
    ],
)
def test_unparsableForwardingFieldsAreReplaced(name: bytes, value: bytes) -> None:
    request = Request(
        b"GET", b"/", headers=Headers([(b"Host", b"h"), (name, value)]), peer=PEER
    )
    sent = fields(headFor(request))
    assert (b"x-forwarded-for", b"192.0.2.7") in sent
    assert [v for n, v in sent if n == b"forwarded"] == [
        b"for=192.0.2.7;proto=http;host=h"
    ]


def test_parsableForwardingFieldsAreExtended() -> None:
    request = Request(
        b"GET",
        b"/",
        headers=Headers(
            [
                (b"Host", b"h"),
                (b"Forwarded", b'for="[2001:db8::1]:80";proto=https'),
                (b"X-Forwarded-For", b"2001:db8::1, 10.0.0.1:8080, unknown"),
            ]
        ),
        peer=PEER,
    )
    sent = fields(headFor(request))
    assert (
        b"x-forwarded-for",
        b"2001:db8::1, 10.0.0.1:8080, unknown, 192.0.2.7",
    ) in sent
    assert [v for n, v in sent if n == b"forwarded"] == [
        b'for="[2001:db8::1]:80";proto=https',
        b"for=192.0.2.7;proto=http;host=h",
    ]


def test_underscoreFieldsAreDroppedUnlessKept() -> None:
    request = Request(
        b"GET",
        b"/",
        headers=Headers(
            [(b"Host", b"h"), (b"X_Forwarded_Proto", b"https"), (b"X-Ok", b"1")]
        ),
        peer=PEER,
    )
    sent = fields(headFor(request))
    assert (b"x-ok", b"1") in sent
    assert b"x_forwarded_proto" not in [n for n, _ in sent]
    kept = fields(headFor(request, forwardUnderscores=True))
    assert (b"x_forwarded_proto", b"https") in kept


def test_maxForwards() -> None:
    def options(value: bytes | None, method: bytes = b"OPTIONS") -> bytes | Response:
        extra = [] if value is None else [(b"Max-Forwards", value)]
        return headFor(
            Request(method, b"/x", headers=Headers([(b"Host", b"h"), *extra])),
            allowTrace=True,
        )

    # RFC 9110 §7.6.2: 0 is answered here, any other goes on one less.
    answered = options(b"0")
    assert isinstance(answered, Response) and answered.code == 200
    assert (b"max-forwards", b"4") in fields(options(b"5"))
    assert b"max-forwards" not in [n for n, _ in fields(options(None))]
    bad = options(b"x")
    assert isinstance(bad, Response) and bad.code == 400
    trace = options(b"0", b"TRACE")
    assert isinstance(trace, Response) and trace.code == 200
    assert isinstance(trace.body, bytes) and trace.body.startswith(b"TRACE /x HTTP/1.1")
    # Other methods forward Max-Forwards untouched... it is not theirs.
    get = headFor(
        Request(
            b"GET", b"/", headers=Headers([(b"Host", b"h"), (b"Max-Forwards", b"0")])
        )
    )
    assert isinstance(get, bytes)


def test_traceIs405ByDefault() -> None:
    response = headFor(Request(b"TRACE", b"/", headers=Headers([(b"Host", b"h")])))
    assert isinstance(response, Response) and response.code == 405
    assert (b"Allow", b"GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH") in list(
        response.fieldPairs()
    )


def test_asteriskFormIs400() -> None:
    response = headFor(Request(b"OPTIONS", b"*"))
    assert isinstance(response, Response) and response.code == 400


@pytest.mark.slow
@ensureDeferred
async def test_bodyLimits() -> None:
    """--max-body-bytes: 413 before anything is sent, or once chunks cross it."""
    seen: list[bytes] = []

    async def upstreamHandler(request: Request) -> Response:
        body = await request.readBody()
        seen.append(body)
        return Response(200, [], b"got %d" % len(body))

    upstream = await serve(upstreamHandler, maxBodyBytes=None)
    proxy = ReverseProxy(f"http://127.0.0.1:{upstream.portNumber}", reactor=_reactor())
    front = await serve(proxy, maxBodyBytes=10)
    try:
        client = await connect(
            front,
            request=b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n",
        )
        data = await client.waitClosed()
        assert data.startswith(b"HTTP/1.1 413 ")
        client = await connect(
            front,
            request=b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"6\r\nabcdef\r\n6\r\nghijkl\r\n0\r\n\r\n",
        )
        data = await client.waitClosed()
        assert data.startswith(b"HTTP/1.1 413 ")
        # A malformed chunked body is the client's fault: 400.
        client = await connect(
            front,
            request=b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\nzz\r\n",
        )
        data = await client.waitClosed()
        assert data.startswith(b"HTTP/1.1 400 ")
        # Within the limit, it goes through.
        client = await connect(
            front,
            request=b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nabcde\r\n0\r\n\r\n",
        )
        [response] = await client.waitResponses(1, [b"POST"])
        assert response.body == b"got 5"
        client.close()
    finally:
        await bounded(proxy.close())
        await finish(front, upstream)
    assert seen == [b"abcde"]
