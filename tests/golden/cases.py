"""
The in-process golden cases, by group.

Hand-written groups cover RFC 9112/9110 connection behaviour (persistence,
framing, malformed requests, handlers, timers, the connection's life);
``splits`` re-sends the single-send cases byte by byte and at fixed cut
points; the ``random-*`` groups are generated from fixed seeds with
``random.Random.random`` only (its sequence is the one the ``random`` module
promises to keep across Python versions).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from .runner import (
    Case,
    Step,
    advance,
    appAbort,
    case,
    clientClose,
    drain,
    halfClose,
    openConnection,
    pauseWriting,
    reset,
    resumeWriting,
    send,
    sendBytewise,
    sendCuts,
)

HOST = b"Host: example.test"


def http(
    target: bytes = b"/hello",
    version: bytes = b"1.1",
    fields: list[bytes] | tuple[bytes, ...] = (),
    body: bytes = b"",
    method: bytes = b"GET",
    host: bool = True,
) -> bytes:
    """A request: the request line, Host (for 1.1), ``fields``, then ``body``."""
    lines = [b"%s %s HTTP/%s" % (method, target, version)]
    if host and version == b"1.1":
        lines.append(HOST)
    lines += fields
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def post(
    target: bytes, body: bytes, version: bytes = b"1.1", fields: tuple[bytes, ...] = ()
) -> bytes:
    """A POST with a Content-Length body."""
    return http(
        target,
        version,
        [*fields, b"Content-Length: %d" % len(body)],
        body,
        method=b"POST",
    )


def chunked(
    target: bytes,
    chunks: list[bytes],
    trailers: tuple[bytes, ...] = (),
    fields: tuple[bytes, ...] = (),
) -> bytes:
    """A POST with a chunked body."""
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c)
    body += b"0\r\n" + b"".join(t + b"\r\n" for t in trailers) + b"\r\n"
    return http(
        target, b"1.1", [*fields, b"Transfer-Encoding: chunked"], body, method=b"POST"
    )


# -- persistence -----------------------------------------------------------------

SPELLINGS: dict[str, list[bytes]] = {
    "none": [],
    "close": [b"Connection: close"],
    "close-upper": [b"Connection: CLOSE"],
    "close-capitalised": [b"connection: Close"],
    "close-ows": [b"Connection:   close   "],
    "close-tabs": [b"Connection:\tclose\t"],
    "close-in-list": [b"Connection: keep-alive, close"],
    "close-in-list-nospace": [b"Connection: x-foo,close"],
    "close-empty-elements": [b"Connection: , ,close,"],
    "close-on-second-line": [b"Connection: keep-alive", b"Connection: close"],
    "close-on-first-line": [b"Connection: close", b"Connection: keep-alive"],
    "close-lines-apart": [b"Connection: x-a", b"X-Other: 1", b"Connection: close"],
    "keep-alive": [b"Connection: keep-alive"],
    "keep-alive-capitalised": [b"Connection: Keep-Alive"],
    "keep-alive-upper": [b"CONNECTION: KEEP-ALIVE"],
    "keep-alive-in-list": [b"Connection: Upgrade, Keep-Alive"],
    "keep-alive-on-second-line": [b"Connection: x-foo", b"Connection: keep-alive"],
    "closed-is-not-close": [b"Connection: closed"],
    "close-quoted": [b'Connection: "close"'],
    "close-with-parameter": [b"Connection: close;q=1"],
    "keepalive-without-dash": [b"Connection: keepalive"],
    "empty-value": [b"Connection:"],
    "only-commas": [b"Connection: ,,,"],
    "proxy-connection-close": [b"Proxy-Connection: close"],
    "proxy-connection-keep-alive": [b"Proxy-Connection: keep-alive"],
    "keep-alive-field-only": [b"Keep-Alive: timeout=5, max=10"],
    "te-option": [b"Connection: TE", b"TE: trailers"],
}


def persistenceCases() -> Iterator[Case]:
    group = "persistence"
    for version in (b"1.0", b"1.1"):
        v = version.decode()
        for name, fields in SPELLINGS.items():
            for target in (b"/hello", b"/unknown-now"):
                t = target.decode()[1:]
                first = http(target, version, fields)
                second = http(b"/hello", version)
                yield case(
                    f"{group}/{v}/{name}{'' if t == 'hello' else '/' + t}",
                    send(first + second),
                )
        for name in ("none", "close", "keep-alive", "close-in-list"):
            for target in (b"/close", b"/close-mixed", b"/keep", b"/hop"):
                t = target.decode()[1:]
                first = http(target, version, SPELLINGS[name])
                yield case(
                    f"{group}/{v}/handler-{t}/{name}",
                    send(first + http(b"/hello", version)),
                )
        keepAlive = [b"Connection: keep-alive"] if version == b"1.0" else []
        for target in (b"/stream", b"/unknown", b"/file", b"/trailers", b"/big"):
            t = target.decode()[1:]
            yield case(
                f"{group}/{v}/body-{t}/keep-alive-asked",
                send(http(target, version, keepAlive) + http(b"/hello", version)),
            )
        # Configuration.
        for name in ("none", "keep-alive", "close"):
            yield case(
                f"{group}/{v}/keepalive-disabled/{name}",
                send(http(b"/hello", version, SPELLINGS[name]) * 2),
                keepAlive=False,
            )
        yield case(
            f"{group}/{v}/no-keepalive-hint",
            send(http(b"/hello", version, keepAlive) * 2),
            keepAliveHint=False,
        )
        yield case(
            f"{group}/{v}/idle-timeout-none",
            send(http(b"/hello", version, keepAlive)),
            idleTimeout=None,
        )
        yield case(
            f"{group}/{v}/idle-timeout-under-a-second",
            send(http(b"/hello", version, keepAlive)),
            idleTimeout=0.5,
        )
        yield case(
            f"{group}/{v}/idle-timeout-fractional",
            send(http(b"/hello", version, keepAlive)),
            idleTimeout=12.75,
        )
        yield case(
            f"{group}/{v}/server-header-none",
            send(http(b"/hello", version, keepAlive)),
            serverHeader=None,
        )
        for limit in (1, 2, 3):
            yield case(
                f"{group}/{v}/max-requests-{limit}",
                send(http(b"/hello", version, keepAlive) * 3),
                maxRequestsPerConnection=limit,
            )
        yield case(
            f"{group}/{v}/max-age",
            send(http(b"/hello", version, keepAlive)),
            advance(4.0),
            send(http(b"/hello", version, keepAlive)),
            advance(2.0),
            send(http(b"/hello", version, keepAlive)),
            maxConnectionAge=5.0,
        )
    # Pipelining.
    hello = http(b"/hello")
    yield case(f"{group}/pipeline/five", send(hello * 5))
    yield case(
        f"{group}/pipeline/slow-in-the-middle",
        send(hello + http(b"/slow") + hello + http(b"/")),
        advance(1.0),
        advance(1.0),
    )
    yield case(
        f"{group}/pipeline/close-in-the-middle",
        send(hello + http(b"/hello", fields=[b"Connection: close"]) + hello),
    )
    yield case(
        f"{group}/pipeline/handler-close-in-the-middle",
        send(hello + http(b"/close") + hello),
    )
    yield case(
        f"{group}/pipeline/bodies",
        send(
            post(b"/echo", b"first")
            + post(b"/hello", b"unread")
            + post(b"/echo", b"")
            + chunked(b"/echo", [b"chunk", b"ed"])
            + hello
        ),
    )
    yield case(
        f"{group}/pipeline/head-and-get",
        send(
            http(b"/hello", method=b"HEAD")
            + hello
            + http(b"/unknown-now", method=b"HEAD")
            + http(b"/unknown-now")
        ),
    )
    yield case(
        f"{group}/pipeline/max-pipelined-2",
        send(hello * 2 + http(b"/slow") + hello * 4),
        maxPipelinedRequests=2,
    )
    yield case(
        f"{group}/pipeline/max-pipelined-1-slow",
        send(http(b"/slow") * 3),
        maxPipelinedRequests=1,
    )
    yield case(
        f"{group}/pipeline/http10-keep-alive",
        send(
            http(b"/hello", b"1.0", [b"Connection: keep-alive"]) * 2
            + http(b"/hello", b"1.0")
        ),
    )
    yield case(
        f"{group}/pipeline/mixed-versions",
        send(
            hello
            + http(b"/hello", b"1.0", [b"Connection: keep-alive"])
            + http(b"/unknown-now", b"1.0", [b"Connection: keep-alive"])
            + hello
        ),
    )
    yield case(
        f"{group}/pipeline/after-an-error",
        send(hello + b"BAD REQUEST LINE\r\n\r\n" + hello),
    )
    yield case(
        f"{group}/pipeline/leading-empty-lines",
        send(b"\r\n\r\n" + hello + b"\r\n" + hello),
    )
    yield case(f"{group}/pipeline/twenty", send(hello * 20))


# -- framing -----------------------------------------------------------------------

PRODUCERS = (
    b"/stream",
    b"/unknown",
    b"/unknown-now",
    b"/known-now",
    b"/short",
    b"/long",
    b"/fail-body",
    b"/trailers",
    b"/file",
    b"/big",
    b"/cl-right",
    b"/te",
)


def framingCases() -> Iterator[Case]:
    group = "framing"
    for target in (
        b"/",
        b"/hello",
        b"/unknown",
        b"/unknown-now",
        b"/file",
        b"/big",
        b"/status/204",
        b"/status/304",
        b"/close",
        b"/stream",
        b"/trailers",
        b"/boom",
        b"/cl-right",
    ):
        t = target.decode()[1:].replace("/", "-") or "root"
        for version in (b"1.0", b"1.1"):
            yield case(
                f"{group}/head/{version.decode()}/{t}",
                send(http(target, version, method=b"HEAD") + http(b"/hello", version)),
            )
    for status in (101, 103, 200, 204, 205, 304, 400, 404, 500, 503, 599):
        for version in (b"1.0", b"1.1"):
            yield case(
                f"{group}/status/{version.decode()}/{status}",
                send(http(b"/status/%d" % status, version) + http(b"/hello", version)),
            )
    for target in PRODUCERS:
        t = target.decode()[1:]
        for version, fields in (
            (b"1.1", []),
            (b"1.0", []),
            (b"1.0", [b"Connection: keep-alive"]),
        ):
            label = version.decode() + ("-keep-alive" if fields else "")
            yield case(
                f"{group}/body/{label}/{t}",
                send(http(target, version, fields) + http(b"/hello", version, fields)),
            )
    # Request bodies.
    hello = http(b"/hello")
    yield case(f"{group}/request/echo-length", send(post(b"/echo", b"hello") + hello))
    yield case(f"{group}/request/echo-empty", send(post(b"/echo", b"") + hello))
    yield case(
        f"{group}/request/echo-chunked",
        send(chunked(b"/echo", [b"hel", b"lo", b" world"]) + hello),
    )
    yield case(
        f"{group}/request/echo-chunked-extensions-trailers",
        send(
            http(
                b"/echo",
                fields=[b"Transfer-Encoding: chunked"],
                method=b"POST",
                body=b'3;a=1\r\nabc\r\n2;b="x y"\r\nde\r\n0;last\r\nX-T: 1\r\nX-U: 2\r\n\r\n',
            )
            + hello
        ),
    )
    yield case(
        f"{group}/request/echo-chunked-uppercase-hex",
        send(
            http(
                b"/echo",
                fields=[b"Transfer-Encoding: chunked"],
                method=b"POST",
                body=b"A\r\n0123456789\r\n00\r\n\r\n",
            )
            + hello
        ),
    )
    yield case(
        f"{group}/request/count-chunked",
        send(chunked(b"/count", [b"a" * 10, b"b" * 300, b"c"]) + hello),
    )
    yield case(
        f"{group}/request/unread-length-drained",
        send(post(b"/hello", b"unread body") + hello),
    )
    yield case(
        f"{group}/request/unread-chunked",
        send(chunked(b"/hello", [b"unread", b"chunks"]) + hello),
    )
    yield case(
        f"{group}/request/unread-over-max-body",
        send(post(b"/hello", b"x" * 20)[:-10]),
        advance(1.0),
        send(b"x" * 10 + hello),
        maxBodyBytes=10,
    )
    yield case(
        f"{group}/request/unread-body-arrives-later",
        send(post(b"/hello", b"0123456789")[:-10]),
        advance(1.0),
        send(b"01234"),
        advance(1.0),
        send(b"56789" + hello),
    )
    yield case(
        f"{group}/request/echo-too-large-length",
        send(post(b"/echo", b"x" * 20) + hello),
        maxBodyBytes=10,
    )
    yield case(
        f"{group}/request/echo-too-large-chunked",
        send(chunked(b"/echo", [b"x" * 6, b"y" * 6]) + hello),
        maxBodyBytes=10,
    )
    yield case(
        f"{group}/request/echo-body-later",
        send(post(b"/echo", b"later")[:-5]),
        advance(1.0),
        send(b"lat"),
        advance(1.0),
        send(b"er" + hello),
    )
    yield case(
        f"{group}/request/pause",
        send(post(b"/pause", b"0123456789")[:-5]),
        send(b"56789" + hello),
        advance(1.0),
    )
    yield case(
        f"{group}/request/stop-length",
        send(post(b"/stop", b"0123456789") + hello),
    )
    yield case(
        f"{group}/request/stop-chunked",
        send(chunked(b"/stop", [b"01234", b"56789"]) + hello),
    )
    yield case(
        f"{group}/request/get-with-body",
        send(http(b"/", fields=[b"Content-Length: 4"], body=b"abcd") + hello),
    )
    yield case(
        f"{group}/request/http10-post",
        send(post(b"/echo", b"ten bytes!", b"1.0") + http(b"/hello", b"1.0")),
    )
    yield case(
        f"{group}/request/http10-post-keep-alive",
        send(
            post(b"/echo", b"ten bytes!", b"1.0", (b"Connection: keep-alive",))
            + http(b"/hello", b"1.0")
        ),
    )
    yield case(
        f"{group}/request/content-length-leading-zeros",
        send(
            http(
                b"/echo", fields=[b"Content-Length: 0003"], body=b"abc", method=b"POST"
            )
            + hello
        ),
    )
    yield case(
        f"{group}/request/two-equal-content-lengths",
        send(
            http(
                b"/echo",
                fields=[b"Content-Length: 3", b"Content-Length: 3"],
                body=b"abc",
                method=b"POST",
            )
            + hello
        ),
    )
    # Expect: 100-continue.
    expect = (b"Expect: 100-continue",)
    yield case(
        f"{group}/expect/echo",
        send(post(b"/echo", b"hello", fields=expect)[:-5]),
        send(b"hello" + hello),
    )
    yield case(
        f"{group}/expect/echo-chunked",
        send(chunked(b"/echo", [b"abc"], fields=expect)[:-13]),
        send(chunked(b"/echo", [b"abc"])[-13:] + hello),
    )
    yield case(
        f"{group}/expect/unread",
        send(post(b"/hello", b"hello", fields=expect)[:-5]),
        send(b"hello" + hello),
    )
    yield case(
        f"{group}/expect/unread-body-sent-anyway",
        send(post(b"/hello", b"hello", fields=expect) + hello),
    )
    yield case(
        f"{group}/expect/slow",
        send(post(b"/slow", b"hello", fields=expect)[:-5]),
        advance(2.0),
        send(b"hello" + hello),
    )
    yield case(
        f"{group}/expect/too-large",
        send(post(b"/echo", b"x" * 20, fields=expect)[:-20]),
        maxBodyBytes=10,
    )
    yield case(
        f"{group}/expect/empty-body",
        send(post(b"/echo", b"", fields=expect) + hello),
    )
    yield case(
        f"{group}/expect/capitalised",
        send(post(b"/echo", b"abc", fields=(b"Expect: 100-Continue",))[:-3]),
        send(b"abc"),
    )
    yield case(
        f"{group}/expect/unknown-expectation",
        send(post(b"/echo", b"abc", fields=(b"Expect: the-unexpected",)) + hello),
    )
    yield case(
        f"{group}/expect/two-lines",
        send(
            post(
                b"/echo",
                b"abc",
                fields=(b"Expect: 100-continue", b"Expect: 100-continue"),
            )[:-3]
        ),
        send(b"abc"),
    )
    yield case(
        f"{group}/expect/http10-ignored",
        send(post(b"/echo", b"abc", b"1.0", fields=expect)),
    )
    yield case(
        f"{group}/expect/get-without-body",
        send(http(b"/hello", fields=list(expect)) + hello),
    )
    yield case(
        f"{group}/expect/count",
        send(post(b"/count", b"counted", fields=expect)[:-7]),
        send(b"counted"),
    )


# -- malformed -------------------------------------------------------------------

MALFORMED: dict[str, bytes] = {
    # Request lines.
    "http09": b"GET /\r\n\r\n",
    "extra-word": b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n",
    "double-space": b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
    "tab-separators": b"GET\t/\tHTTP/1.1\r\nHost: x\r\n\r\n",
    "leading-space": b" GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "trailing-space": b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n",
    "lowercase-version": b"GET / http/1.1\r\nHost: x\r\n\r\n",
    "version-2.0": b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
    "version-3.0": b"GET / HTTP/3.0\r\nHost: x\r\n\r\n",
    "version-1.2": b"GET / HTTP/1.2\r\nHost: x\r\n\r\n",
    "version-0.9": b"GET / HTTP/0.9\r\n\r\n",
    "version-1.10": b"GET / HTTP/1.10\r\nHost: x\r\n\r\n",
    "version-letters": b"GET / HTTP/a.b\r\nHost: x\r\n\r\n",
    "no-version": b"GET /\r\nHost: x\r\n\r\n",
    "no-target": b"GET HTTP/1.1\r\nHost: x\r\n\r\n",
    "invalid-method": b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n",
    "method-with-colon": b"GET: / HTTP/1.1\r\nHost: x\r\n\r\n",
    "lowercase-method": b"get / HTTP/1.1\r\nHost: x\r\n\r\n",
    "long-method": b"ABCDEFGHIJKLMNOPQRSTUVWXYZ / HTTP/1.1\r\nHost: x\r\n\r\n",
    "space-in-target": b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
    "nul-in-target": b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    "high-byte-in-target": b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n",
    "fragment-in-target": b"GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n",
    "absolute-form": b"GET http://example.test/p?q HTTP/1.1\r\nHost: example.test\r\n\r\n",
    "asterisk-options": b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    "asterisk-get": b"GET * HTTP/1.1\r\nHost: x\r\n\r\n",
    "authority-connect": b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test\r\n\r\n",
    "authority-get": b"GET example.test:443 HTTP/1.1\r\nHost: x\r\n\r\n",
    "bare-cr-request-line": b"GET / HTTP/1.1\rHost: x\r\n\r\n",
    "bare-lf-request-line": b"GET / HTTP/1.1\nHost: x\r\n\r\n",
    "bare-lf-everywhere": b"GET / HTTP/1.1\nHost: x\n\n",
    "bare-lf-field-line": b"GET / HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n",
    "bare-lf-head-end": b"GET / HTTP/1.1\r\nHost: x\r\n\n",
    "response-line": b"HTTP/1.1 200 OK\r\n\r\n",
    "http2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "tls-client-hello": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"
    + bytes(range(32)),
    "binary-noise": bytes(range(256)),
    "only-crlfs": b"\r\n" * 10,
    "leading-lf-then-request": b"\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n",
    # Field lines.
    "obs-fold": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n",
    "obs-fold-tab": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\t2\r\n\r\n",
    "space-before-first-field": b"GET / HTTP/1.1\r\n Host: x\r\n\r\n",
    "space-before-colon": b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
    "tab-before-colon": b"GET / HTTP/1.1\r\nHost\t: x\r\n\r\n",
    "no-colon": b"GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n",
    "empty-name": b"GET / HTTP/1.1\r\nHost: x\r\n: value\r\n\r\n",
    "nul-in-name": b"GET / HTTP/1.1\r\nHost: x\r\nX\x00A: 1\r\n\r\n",
    "high-byte-in-name": b"GET / HTTP/1.1\r\nHost: x\r\nX-\xff: 1\r\n\r\n",
    "nul-in-value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "bare-cr-in-value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
    "del-in-value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n",
    "obs-text-in-value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: caf\xc3\xa9\r\n\r\n",
    "tab-in-value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\tb\r\n\r\n",
    "empty-value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A:\r\n\r\n",
    "whitespace-value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: \t \r\n\r\n",
    "many-same-field": b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: 1\r\n" * 5 + b"\r\n",
    # Host.
    "missing-host": b"GET / HTTP/1.1\r\n\r\n",
    "http10-no-host": b"GET / HTTP/1.0\r\n\r\n",
    "two-hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "two-equal-hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
    "host-with-space": b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
    "host-empty": b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
    "host-with-port": b"GET / HTTP/1.1\r\nHost: example.test:8080\r\n\r\n",
    "host-ipv6": b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
    "host-userinfo": b"GET / HTTP/1.1\r\nHost: user@example.test\r\n\r\n",
    "host-list": b"GET / HTTP/1.1\r\nHost: a, b\r\n\r\n",
    # Content-Length.
    "content-length-list": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc",
    "content-length-negative": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "content-length-plus": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
    "content-length-hex": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x3\r\n\r\nabc",
    "content-length-empty": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n",
    "content-length-space-inside": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1 2\r\n\r\n",
    "content-length-huge": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    "content-length-two-different": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "content-length-and-chunked": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "chunked-and-content-length": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    # Transfer-Encoding.
    "te-gzip": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
    "te-gzip-chunked": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "te-chunked-gzip": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
    "te-chunked-twice": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
    "te-chunked-two-lines": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
    "te-empty": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n\r\n",
    "te-identity": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n",
    "te-capitalised": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "te-quoted": b'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "chunked"\r\n\r\n',
    "te-comma-only": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ,\r\n\r\n",
    "te-http10": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    # Chunked bodies.
    "chunk-size-letters": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "chunk-size-negative": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
    "chunk-size-0x": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n",
    "chunk-size-leading-space": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n 3\r\nabc\r\n0\r\n\r\n",
    "chunk-size-trailing-space": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n",
    "chunk-size-empty": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\r\nabc\r\n0\r\n\r\n",
    "chunk-size-overflow": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
    "chunk-size-many-zeros": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"0" * 70
    + b"3\r\nabc\r\n0\r\n\r\n",
    "chunk-extension-empty": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;\r\nabc\r\n0\r\n\r\n",
    "chunk-extension-unterminated-quote": b'POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;a="b\r\nabc\r\n0\r\n\r\n',
    "chunk-extension-bare-lf": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;a\nabc\r\n0\r\n\r\n",
    "chunk-size-bare-lf": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
    "chunk-data-too-long": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n",
    "chunk-data-bare-lf": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\n0\r\n\r\n",
    "chunk-size-line-too-long": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;"
    + b"a" * 5000
    + b"\r\nabc\r\n0\r\n\r\n",
    "chunk-size-line-long-but-allowed": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;"
    + b"a" * 4000
    + b"\r\nabc\r\n0\r\n\r\n",
    "last-chunk-no-final-crlf-then-request": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "trailer-content-length": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nContent-Length: 3\r\n\r\n",
    "trailer-host": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nHost: y\r\n\r\n",
    "trailer-obs-fold": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n 2\r\n\r\n",
    "trailer-no-colon": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nNoColon\r\n\r\n",
    "trailer-bare-lf": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\n\r\n",
    "trailer-ok": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
    # Limits (defaults).
    "request-line-too-long": b"GET /" + b"a" * 8200 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "request-line-at-limit": b"GET /"
    + b"a" * (8192 - 16)
    + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "head-too-large": b"GET / HTTP/1.1\r\nHost: x\r\n"
    + b"X-Big: "
    + b"b" * 17000
    + b"\r\n\r\n",
    "head-too-large-many-fields": b"GET / HTTP/1.1\r\nHost: x\r\n"
    + b"X-F: "
    + b"f" * 100
    + b"\r\n" * 1
    + (b"X-F: " + b"f" * 190 + b"\r\n") * 90
    + b"\r\n",
    "too-many-fields": b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: 1\r\n" * 100 + b"\r\n",
    "fields-at-limit": b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: 1\r\n" * 99 + b"\r\n",
    "too-many-trailers": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n"
    + b"X-T: 1\r\n" * 101
    + b"\r\n",
}

SMALL_LIMITS: dict[str, Any] = {
    "maxRequestLineBytes": 40,
    "maxHeadBytes": 120,
    "maxHeaderCount": 3,
}

MALFORMED_SMALL: dict[str, bytes] = {
    "request-line-41": b"GET /" + b"a" * 26 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "request-line-40": b"GET /" + b"a" * 25 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "head-121": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 79 + b"\r\n\r\n",
    "head-120": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 78 + b"\r\n\r\n",
    "four-fields": b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
    "three-fields": b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\n\r\n",
    "four-trailers": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n",
    "second-request-too-long": b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /"
    + b"b" * 40
    + b" HTTP/1.1\r\nHost: x\r\n\r\n",
}

BARE_LF: dict[str, bytes] = {
    name: MALFORMED[name]
    for name in (
        "bare-lf-request-line",
        "bare-lf-everywhere",
        "bare-lf-field-line",
        "bare-lf-head-end",
        "chunk-size-bare-lf",
        "chunk-data-bare-lf",
        "chunk-extension-bare-lf",
        "trailer-bare-lf",
        "leading-lf-then-request",
    )
}


def malformedCases() -> Iterator[Case]:
    group = "malformed"
    hello = http(b"/hello")
    for name, data in MALFORMED.items():
        yield case(f"{group}/{name}", send(data))
    for name, data in MALFORMED_SMALL.items():
        yield case(f"{group}/small-limits/{name}", send(data), **SMALL_LIMITS)
    for name, data in BARE_LF.items():
        yield case(
            f"{group}/allow-bare-lf/{name}", send(data + hello), allowBareLf=True
        )
    # An error after a good request on the same connection.
    for name in (
        "obs-fold",
        "content-length-and-chunked",
        "chunk-size-letters",
        "invalid-method",
        "too-many-fields",
    ):
        yield case(f"{group}/after-a-request/{name}", send(hello + MALFORMED[name]))
    # A bad chunk while the handler reads, and after it answered.
    bad = b"3\r\nabc\r\nzz\r\n"
    head = http(b"/echo", fields=[b"Transfer-Encoding: chunked"], method=b"POST")
    yield case(f"{group}/bad-chunk-while-echo-reads", send(head), send(bad))
    head = http(b"/hello", fields=[b"Transfer-Encoding: chunked"], method=b"POST")
    yield case(f"{group}/bad-chunk-after-answer", send(head), send(bad))
    head = http(b"/slow", fields=[b"Transfer-Encoding: chunked"], method=b"POST")
    yield case(f"{group}/bad-chunk-before-slow-answer", send(head), send(bad))
    head = http(b"/count", fields=[b"Transfer-Encoding: chunked"], method=b"POST")
    yield case(f"{group}/bad-chunk-while-count-reads", send(head + bad))


# -- handlers -----------------------------------------------------------------------


def handlerCases() -> Iterator[Case]:
    group = "handlers"
    hello = http(b"/hello")
    for target in (
        b"/boom",
        b"/boom-later",
        b"/bad-return",
        b"/coro",
        b"/cl-right",
        b"/cl-wrong",
        b"/bad-header",
        b"/te",
        b"/hop",
        b"/reason",
        b"/note",
        b"/slow",
        b"/slow-close",
        b"/keep",
        b"/short",
        b"/long",
        b"/fail-body",
    ):
        t = target.decode()[1:]
        for version in (b"1.1", b"1.0"):
            yield case(
                f"{group}/{version.decode()}/{t}",
                send(http(target, version) + http(b"/hello", version)),
            )
        yield case(f"{group}/head/{t}", send(http(target, method=b"HEAD") + hello))
    yield case(
        f"{group}/describe-fields",
        send(
            http(
                b"/a/b?c=d&e",
                fields=[
                    b"User-Agent: golden/1.0",
                    b"Referer: http://example.test/from",
                    b"Accept: */*",
                    b"X-Dup: 1",
                    b"x-dup: 2",
                    b"X-Spaces:   padded value   ",
                    b"Connection: X-Dup, keep-alive",
                ],
            )
        ),
    )
    yield case(
        f"{group}/describe-odd-bytes-in-log",
        send(http(b'/q?%22%5C"x', fields=[b'User-Agent: a"b\\c\x80', b"Referer: -"])),
    )
    yield case(
        f"{group}/never/handler-timeout", send(http(b"/never")), handlerTimeout=2.0
    )
    yield case(
        f"{group}/slow/handler-timeout-shorter",
        send(http(b"/slow")),
        handlerTimeout=1.0,
    )
    yield case(
        f"{group}/slow/handler-timeout-longer",
        send(http(b"/slow") + hello),
        handlerTimeout=3.0,
    )
    yield case(
        f"{group}/stream/handler-timeout",
        send(http(b"/stream") + hello),
        handlerTimeout=0.25,
    )
    yield case(
        f"{group}/echo/handler-timeout-body-first",
        send(post(b"/echo", b"0123456789")[:-5]),
        advance(3.0),
        send(b"56789"),
        handlerTimeout=2.0,
    )
    yield case(f"{group}/never/reset", send(http(b"/never")), advance(1.0), reset())
    yield case(f"{group}/never/client-close", send(http(b"/never")), clientClose())
    yield case(f"{group}/never/half-close", send(http(b"/never")), halfClose())
    yield case(f"{group}/never/left-waiting", send(http(b"/never")))
    yield case(f"{group}/slow/reset", send(http(b"/slow")), advance(1.0), reset())
    yield case(f"{group}/slow/half-close", send(http(b"/slow") + hello), halfClose())
    yield case(f"{group}/coro/reset", send(http(b"/coro")), reset())
    yield case(
        f"{group}/boom-later/half-close", send(http(b"/boom-later")), halfClose()
    )
    yield case(
        f"{group}/stream/reset-mid-body", send(http(b"/stream")), advance(0.5), reset()
    )
    yield case(
        f"{group}/unknown/client-close-mid-body",
        send(http(b"/unknown")),
        advance(0.5),
        clientClose(),
    )
    yield case(
        f"{group}/echo/reset-mid-body",
        send(post(b"/echo", b"0123456789")[:-5]),
        reset(),
    )
    yield case(
        f"{group}/echo/half-close-mid-body",
        send(post(b"/echo", b"0123456789")[:-5]),
        halfClose(),
    )
    yield case(
        f"{group}/count/half-close-mid-chunked",
        send(chunked(b"/count", [b"abc", b"def"])[:-10]),
        halfClose(),
    )
    yield case(
        f"{group}/hello/half-close-mid-body",
        send(post(b"/hello", b"0123456789")[:-5]),
        halfClose(),
    )
    yield case(
        f"{group}/slow/half-close-mid-body",
        send(post(b"/slow", b"0123456789")[:-5]),
        halfClose(),
    )


# -- timers --------------------------------------------------------------------------


def timerCases() -> Iterator[Case]:
    group = "timers"
    hello = http(b"/hello")
    yield case(f"{group}/head/no-bytes", advance(19.5), advance(0.5))
    yield case(f"{group}/head/partial", send(b"GET /hel"), advance(20.0))
    yield case(
        f"{group}/head/trickle-does-not-reset",
        send(b"GET"),
        advance(5.0),
        send(b" /hello"),
        advance(5.0),
        send(b" HTTP/1.1\r\n"),
        advance(5.0),
        send(HOST),
        advance(4.75),
        send(b"\r\n"),
        advance(0.25),
    )
    yield case(
        f"{group}/head/just-in-time",
        send(b"GET /hello HTTP/1.1\r\n"),
        advance(19.75),
        send(HOST + b"\r\n\r\n"),
    )
    yield case(
        f"{group}/head/second-request-from-first-byte",
        send(hello),
        advance(30.0),
        send(b"GET /hel"),
        advance(19.75),
        send(b"lo HTTP/1.1\r\n" + HOST + b"\r\n\r\n"),
        advance(1.0),
        send(b"GET"),
        advance(20.0),
    )
    yield case(f"{group}/head/after-empty-lines", send(b"\r\n\r\n"), advance(20.0))
    yield case(
        f"{group}/head/timeout-none",
        send(b"GET /hel"),
        advance(100.0),
        requestHeadTimeout=None,
    )
    yield case(
        f"{group}/head/short", send(b"GET /hel"), advance(1.0), requestHeadTimeout=1.0
    )
    yield case(
        f"{group}/idle/timeout", send(hello), advance(74.0), advance(1.0), advance(5.0)
    )
    yield case(
        f"{group}/idle/request-just-before",
        send(hello),
        advance(74.75),
        send(hello),
        advance(74.75),
        send(hello),
    )
    yield case(
        f"{group}/idle/after-slow", send(http(b"/slow")), advance(2.0), advance(75.0)
    )
    yield case(f"{group}/idle/short", send(hello), advance(3.0), idleTimeout=3.0)
    yield case(f"{group}/idle/none", send(hello), advance(1000.0), idleTimeout=None)
    yield case(
        f"{group}/body/stalled-echo",
        send(post(b"/echo", b"0123456789")[:-5]),
        advance(29.75),
        advance(0.25),
    )
    yield case(
        f"{group}/body/progress-resets",
        send(post(b"/echo", b"0123456789")[:-5]),
        advance(20.0),
        send(b"5"),
        advance(20.0),
        send(b"67"),
        advance(20.0),
        send(b"89"),
    )
    yield case(
        f"{group}/body/stalled-chunked",
        send(chunked(b"/count", [b"abc"])[:-5]),
        advance(30.0),
    )
    yield case(
        f"{group}/body/unread-discard-stalls",
        send(post(b"/hello", b"0123456789")[:-5]),
        advance(30.0),
    )
    yield case(
        f"{group}/body/unread-not-timed-while-not-wanted",
        send(post(b"/slow", b"0123456789")[:-5]),
        advance(1.0),
        advance(1.0),
        advance(30.0),
    )
    yield case(
        f"{group}/body/timeout-none",
        send(post(b"/echo", b"0123456789")[:-5]),
        advance(100.0),
        send(b"56789"),
        bodyTimeout=None,
    )
    yield case(
        f"{group}/body/min-rate-too-slow",
        send(post(b"/echo", b"x" * 40)[:-40]),
        *[s for i in range(8) for s in (advance(1.0), send(b"xxxxx"))],
        bodyTimeout=3.0,
        minBodyRate=4,
    )
    yield case(
        f"{group}/body/min-rate-fast-enough",
        send(post(b"/echo", b"x" * 40)[:-40]),
        *[s for i in range(4) for s in (advance(1.0), send(b"x" * 10))],
        bodyTimeout=3.0,
        minBodyRate=4,
    )
    yield case(
        f"{group}/body/min-rate-stall",
        send(post(b"/echo", b"x" * 40)[:-40]),
        advance(1.0),
        send(b"x" * 20),
        advance(10.0),
        bodyTimeout=3.0,
        minBodyRate=4,
    )
    yield case(
        f"{group}/body/pause-does-not-time-out",
        send(post(b"/pause", b"0123456789")[:-5]),
        advance(1.0),
        advance(29.0),
        send(b"56789"),
        bodyTimeout=2.0,
    )
    yield case(
        f"{group}/send/stalled-stream",
        send(http(b"/stream")),
        pauseWriting(),
        advance(30.0),
        advance(30.0),
        advance(1.0),
    )
    yield case(
        f"{group}/send/resumed-in-time",
        send(http(b"/stream")),
        pauseWriting(),
        advance(59.0),
        resumeWriting(),
        advance(2.0),
    )
    yield case(
        f"{group}/send/stalled-after-close",
        send(http(b"/slow-close")),
        pauseWriting(),
        advance(2.0),
        advance(59.0),
        advance(1.0),
    )
    yield case(
        f"{group}/send/flushed-after-close",
        send(http(b"/slow-close")),
        pauseWriting(),
        advance(10.0),
        resumeWriting(),
    )
    yield case(
        f"{group}/send/while-idle",
        send(hello),
        pauseWriting(),
        advance(61.0),
    )
    yield case(
        f"{group}/send/timeout-none",
        send(http(b"/stream")),
        pauseWriting(),
        advance(500.0),
        resumeWriting(),
        sendTimeout=None,
    )
    yield case(
        f"{group}/linger/client-keeps-sending",
        send(http(b"/close")),
        send(hello),
        advance(2.0),
        send(hello),
        advance(3.0),
    )
    yield case(
        f"{group}/linger/client-half-closes",
        send(http(b"/close")),
        advance(1.0),
        halfClose(),
    )
    yield case(
        f"{group}/linger/none",
        send(http(b"/close")),
        lingerTimeout=None,
    )
    yield case(
        f"{group}/abort/transport-never-goes",
        send(http(b"/close")),
        advance(5.0),
        advance(15.0),
        reactorCloses=False,
    )
    yield case(
        f"{group}/abort/none",
        send(http(b"/close")),
        advance(5.0),
        advance(100.0),
        reactorCloses=False,
        abortTimeout=None,
    )
    yield case(
        f"{group}/max-age/idle-connection",
        send(hello),
        advance(6.0),
        send(hello),
        maxConnectionAge=5.0,
    )


# -- lifecycle ------------------------------------------------------------------------


def lifecycleCases() -> Iterator[Case]:
    group = "lifecycle"
    hello = http(b"/hello")
    yield case(f"{group}/half-close/after-request", send(hello), halfClose())
    yield case(
        f"{group}/half-close/with-request", send(hello), halfClose(), advance(1.0)
    )
    yield case(
        f"{group}/half-close/pipelined",
        send(hello * 2 + http(b"/slow") + hello),
        halfClose(),
    )
    yield case(
        f"{group}/half-close/mid-head", send(b"GET /hello HTTP/1.1\r\n"), halfClose()
    )
    yield case(f"{group}/half-close/idle", halfClose())
    yield case(f"{group}/half-close/stream", send(http(b"/stream")), halfClose())
    yield case(
        f"{group}/half-close/http10", send(http(b"/unknown", b"1.0")), halfClose()
    )
    yield case(f"{group}/client-close/after-response", send(hello), clientClose())
    yield case(f"{group}/client-close/idle", clientClose())
    yield case(f"{group}/reset/after-response", send(hello), reset())
    yield case(f"{group}/reset/mid-head", send(b"GET /"), reset())
    yield case(f"{group}/app-abort/idle", send(hello), appAbort())
    yield case(
        f"{group}/app-abort/mid-stream",
        send(http(b"/stream")),
        advance(0.5),
        appAbort(),
    )
    yield case(f"{group}/app-abort/while-lingering", send(http(b"/close")), appAbort())
    # Draining.
    yield case(f"{group}/drain/idle", send(hello), drain(), advance(1.0))
    yield case(f"{group}/drain/fresh-connection", drain(), advance(1.0))
    yield case(
        f"{group}/drain/request-in-grace",
        send(hello),
        drain(),
        advance(0.5),
        send(hello + hello),
    )
    yield case(
        f"{group}/drain/slow-in-flight",
        send(http(b"/slow") + hello),
        drain(),
        advance(2.0),
    )
    yield case(
        f"{group}/drain/stream-in-flight",
        send(http(b"/unknown")),
        drain(),
        advance(2.0),
    )
    yield case(
        f"{group}/drain/deadline", send(http(b"/never")), drain(5.0), advance(5.0)
    )
    yield case(
        f"{group}/drain/config-deadline",
        send(http(b"/never")),
        drain(),
        advance(3.0),
        drainTimeout=3.0,
    )
    yield case(
        f"{group}/drain/no-deadline", send(http(b"/slow")), drain(None), advance(2.0)
    )
    yield case(
        f"{group}/drain/mid-head",
        send(b"GET /hello HTTP/1.1\r\n"),
        drain(),
        advance(1.0),
        send(HOST + b"\r\n\r\n"),
    )
    yield case(
        f"{group}/drain/refuses-new",
        send(hello),
        drain(),
        openConnection(),
        advance(1.0),
    )
    yield case(
        f"{group}/drain/twice", send(http(b"/slow")), drain(), drain(1.0), advance(2.0)
    )
    yield case(f"{group}/drain/after-close", send(hello), clientClose(), drain())
    yield case(f"{group}/drain/zero-grace", send(hello), drain(), drainGraceTimeout=0.0)
    # maxConnections.
    yield case(
        f"{group}/max-connections/sheds-idle",
        send(hello),
        openConnection(),
        send(hello, conn=2),
        maxConnections=1,
    )
    yield case(
        f"{group}/max-connections/refuses-when-busy",
        send(http(b"/never")),
        openConnection(),
        advance(1.0),
        maxConnections=1,
    )
    yield case(
        f"{group}/max-connections/busy-then-idle",
        send(http(b"/slow")),
        openConnection(),
        openConnection(),
        advance(2.0),
        maxConnections=2,
    )
    yield case(
        f"{group}/max-connections/three-of-two",
        send(hello),
        openConnection(),
        send(hello, conn=2),
        openConnection(),
        send(hello, conn=3),
        maxConnections=2,
    )
    yield case(
        f"{group}/max-connections/partial-head-not-shed",
        send(b"GET /"),
        openConnection(),
        advance(1.0),
        maxConnections=1,
    )
    yield case(
        f"{group}/two-connections/interleaved",
        openConnection(),
        send(b"GET /hello HTTP/1.1\r\n"),
        send(hello, conn=2),
        send(HOST + b"\r\n\r\n"),
        halfClose(conn=2),
    )
    # Write backpressure.
    yield case(
        f"{group}/backpressure/pipeline-waits",
        pauseWriting(),
        send(hello * 3),
        advance(1.0),
        resumeWriting(),
    )
    yield case(
        f"{group}/backpressure/stream",
        send(http(b"/stream")),
        advance(0.5),
        pauseWriting(),
        advance(1.0),
        resumeWriting(),
        advance(1.0),
    )
    yield case(
        f"{group}/backpressure/file",
        pauseWriting(),
        send(http(b"/file")),
        resumeWriting(),
    )
    yield case(
        f"{group}/backpressure/paused-during-slow",
        send(http(b"/slow")),
        pauseWriting(),
        advance(2.0),
        resumeWriting(),
    )
    # Read-ahead limits.
    yield case(
        f"{group}/read-ahead/pipeline-flood",
        send(http(b"/never") + hello * 3000),
    )
    for kib in (60, 70):
        flood = hello * (kib * 1024 // len(hello))
        yield case(
            f"{group}/read-ahead/pipeline-{kib}-kib", send(http(b"/never") + flood)
        )
        yield case(
            f"{group}/read-ahead/unread-body-{kib}-kib",
            send(post(b"/slow", b"x" * kib * 1024)),
            advance(2.0),
            maxBodyBytes=200_000,
        )
    yield case(
        f"{group}/read-ahead/unread-body",
        send(post(b"/slow", b"x" * 100_000)),
        advance(2.0),
        maxBodyBytes=200_000,
    )
    yield case(
        f"{group}/read-ahead/paused-writes-flood",
        send(hello),
        pauseWriting(),
        send(hello * 3000),
        resumeWriting(),
    )


# -- split feeding ------------------------------------------------------------------

CUTS = (1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233)


def splitCases(sources: list[Case]) -> Iterator[Case]:
    """Each single-send case again, byte by byte and cut at ``CUTS``."""
    for source in sources:
        if len(source.steps) != 1 or source.steps[0].kind != "send":
            continue
        data = source.steps[0].data
        if len(data) > 2000:
            continue
        for name, step in (
            ("bytewise", sendBytewise(data)),
            ("cuts", sendCuts(data, CUTS)),
        ):
            yield Case(
                f"splits/{name}/{source.id}",
                (step,),
                source.config,
                source.reactorCloses,
            )


# -- pseudo-random cases ------------------------------------------------------------


T = TypeVar("T")


class Dice:
    """Choices made with ``random()`` only (stable across Python versions)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def below(self, n: int) -> int:
        return min(int(self.rng.random() * n), n - 1)

    def between(self, low: int, high: int) -> int:
        return low + self.below(high - low + 1)

    def pick(self, items: Sequence[T]) -> T:
        return items[self.below(len(items))]

    def chance(self, p: float) -> bool:
        return self.rng.random() < p


RANDOM_TARGETS = (
    b"/",
    b"/hello",
    b"/hello",
    b"/echo",
    b"/echo",
    b"/count",
    b"/stream",
    b"/unknown",
    b"/unknown-now",
    b"/slow",
    b"/close",
    b"/file",
    b"/status/204",
    b"/status/304",
    b"/boom",
    b"/trailers",
    b"/pause",
    b"/stop",
    b"/q?a=1&b=2",
    b"*",
    b"http://example.test/abs",
)
RANDOM_METHODS = (
    b"GET",
    b"GET",
    b"GET",
    b"HEAD",
    b"POST",
    b"POST",
    b"PUT",
    b"OPTIONS",
    b"DELETE",
)
RANDOM_FIELDS = (
    b"User-Agent: golden-random/1",
    b"Accept: */*",
    b"Referer: http://example.test/",
    b"X-Custom: value",
    b"Cookie: a=b; c=d",
    b"Connection: close",
    b"Connection: keep-alive",
    b"Connection: Keep-Alive, x-thing",
    b"Expect: 100-continue",
    b"X-Empty:",
    b"Accept-Encoding: gzip",
)
RANDOM_CONFIGS: list[dict[str, Any]] = [
    {},
    {},
    {},
    {"maxRequestLineBytes": 40, "maxHeadBytes": 160, "maxHeaderCount": 4},
    {"maxBodyBytes": 8},
    {"maxPipelinedRequests": 1},
    {"maxRequestsPerConnection": 2},
    {"keepAlive": False},
    {"allowBareLf": True},
    {"idleTimeout": 2.0, "requestHeadTimeout": 3.0, "bodyTimeout": 1.0},
]
MUTATION_BYTES = (b"\r", b"\n", b" ", b":", b"\x00", b"0", b"x", b"\t", b";", b"\xff")
FRAGMENTS = (
    b"GET / HTTP/1.1\r\n",
    b"GET /slow HTTP/1.1\r\n",
    b"POST /echo HTTP/1.1\r\n",
    b"POST /count HTTP/1.1\r\n",
    b"HEAD /unknown HTTP/1.1\r\n",
    b"GET /hello HTTP/1.0\r\n",
    b"GET /file HTTP/1.1\r\n",
    b"OPTIONS * HTTP/1.1\r\n",
    b"Host: x\r\n",
    b"Host: x\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: 0\r\n",
    b"Content-Length: 100\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Connection: close\r\n",
    b"Connection: keep-alive\r\n",
    b"Expect: 100-continue\r\n",
    b"\r\n",
    b"\r\n",
    b"\n",
    b"hello",
    b"5\r\nhello\r\n",
    b"0\r\n\r\n",
    b"0\r\nX-T: 1\r\n\r\n",
    b"5;e=1\r\n",
    b"\r",
    b" ",
    b":",
    b"\x00",
    b"\xff",
    b"HTTP/2.0",
)


def randomRequest(dice: Dice) -> bytes:
    method = dice.pick(RANDOM_METHODS)
    target = dice.pick(RANDOM_TARGETS)
    version = b"1.0" if dice.chance(0.25) else b"1.1"
    fields = [dice.pick(RANDOM_FIELDS) for _ in range(dice.below(4))]
    kind = dice.below(3) if method in (b"POST", b"PUT") else 0
    payload = bytes(97 + dice.below(26) for _ in range(dice.below(30)))
    body = b""
    if kind == 1 or (kind == 2 and version == b"1.0"):
        fields.append(b"Content-Length: %d" % len(payload))
        body = payload
    elif kind == 2:
        fields.append(b"Transfer-Encoding: chunked")
        rest = payload
        while rest:
            size = dice.between(1, 9)
            body += b"%x\r\n%s\r\n" % (len(rest[:size]), rest[:size])
            rest = rest[size:]
        body += b"0\r\n\r\n"
    return http(target, version, fields, body, method=method)


def randomCuts(dice: Dice, length: int) -> list[int]:
    return [dice.below(length + 1) for _ in range(dice.below(7))]


def randomSteps(dice: Dice, data: bytes) -> list[Step]:
    steps = [sendCuts(data, randomCuts(dice, len(data)))]
    if dice.chance(0.2):
        steps.append(advance(float(dice.between(1, 4)) / 2))
    if dice.chance(0.3):
        steps.append(halfClose())
    return steps


def randomValidCases(count: int) -> Iterator[Case]:
    for seed in range(count):
        dice = Dice(seed)
        data = b"".join(randomRequest(dice) for _ in range(dice.between(1, 4)))
        config = dice.pick(RANDOM_CONFIGS)
        yield case(f"random-valid/seed-{seed}", *randomSteps(dice, data), **config)


def mutate(dice: Dice, data: bytes) -> bytes:
    for _ in range(dice.between(1, 3)):
        action = dice.below(6)
        at = dice.below(len(data)) if data else 0
        byte = dice.pick(MUTATION_BYTES)
        if action == 0:
            data = data[:at] + byte + data[at:]
        elif action == 1:
            data = data[:at] + data[at + 1 :]
        elif action == 2:
            data = data[:at] + byte + data[at + 1 :]
        elif action == 3:
            # A CRLF becomes a bare LF.
            crlf = data.find(b"\r\n", at)
            if crlf >= 0:
                data = data[:crlf] + data[crlf + 1 :]
        elif action == 4:
            # A field line is repeated.
            start = data.find(b"\r\n", at)
            end = data.find(b"\r\n", start + 2)
            if 0 <= start < end:
                data = data[:end] + data[start:end] + data[end:]
        else:
            data = data[:at]
    return data


def randomMutatedCases(count: int) -> Iterator[Case]:
    for seed in range(count):
        dice = Dice(10_000 + seed)
        data = b"".join(randomRequest(dice) for _ in range(dice.between(1, 3)))
        data = mutate(dice, data)
        config = dice.pick(RANDOM_CONFIGS)
        yield case(f"random-mutated/seed-{seed}", *randomSteps(dice, data), **config)


def randomFragmentCases(count: int) -> Iterator[Case]:
    for seed in range(count):
        dice = Dice(20_000 + seed)
        pieces = []
        for _ in range(dice.below(30)):
            if dice.chance(0.75):
                pieces.append(dice.pick(FRAGMENTS))
            else:
                pieces.append(bytes(dice.below(256) for _ in range(dice.between(1, 8))))
        data = b"".join(pieces)
        config = dice.pick(RANDOM_CONFIGS)
        yield case(f"random-fragments/seed-{seed}", *randomSteps(dice, data), **config)


# -- all of them -------------------------------------------------------------------

HAND_WRITTEN: dict[str, Callable[[], Iterator[Case]]] = {
    "persistence": persistenceCases,
    "framing": framingCases,
    "malformed": malformedCases,
    "handlers": handlerCases,
    "timers": timerCases,
    "lifecycle": lifecycleCases,
}


def allCases() -> dict[str, list[Case]]:
    """Every in-process case, by group (the name of its golden file)."""
    groups = {name: list(make()) for name, make in HAND_WRITTEN.items()}
    groups["splits"] = list(
        splitCases(groups["persistence"] + groups["framing"] + groups["malformed"])
    )
    groups["random-valid"] = list(randomValidCases(150))
    groups["random-mutated"] = list(randomMutatedCases(150))
    groups["random-fragments"] = list(randomFragmentCases(100))
    for name, cases in groups.items():
        ids = [c.id for c in cases]
        assert len(set(ids)) == len(ids), f"duplicate case ids in {name}"
    return groups
