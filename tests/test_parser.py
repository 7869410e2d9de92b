"""
Table-driven tests of the RFC 9112 request parser.

Every case goes through :func:`parseBoth`, which parses the bytes fed whole
and fed one byte at a time and asserts that both give the same events (after
merging adjacent ``BodyData``) and the same error.
"""

from __future__ import annotations

from typing import Any

import pytest

from connserver._http.config import ServerConfig
from connserver._http.errors import ProtocolError
from connserver._http.headers import Headers
from connserver._http.parser import (
    NEED_DATA,
    BodyData,
    EndOfMessage,
    Event,
    RequestHead,
    RequestParser,
)

Summary = list[tuple[Any, ...]]

H = b"Host: example.com\r\n"


def feedPieces(
    pieces: list[bytes], config: ServerConfig | None = None
) -> tuple[list[Event], ProtocolError | None]:
    """Feed ``pieces`` one by one, collecting events until the first error."""
    parser = RequestParser(config or ServerConfig())
    events: list[Event] = []
    try:
        for piece in pieces:
            parser.receiveData(piece)
            while (event := parser.nextEvent()) is not NEED_DATA:
                events.append(event)
    except ProtocolError as e:
        return events, e
    return events, None


def merged(events: list[Event]) -> list[Event]:
    """``events`` with adjacent BodyData merged."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, BodyData) and out and isinstance(out[-1], BodyData):
            out[-1] = BodyData(out[-1].data + event.data)
        else:
            out.append(event)
    return out


def summarize(events: list[Event]) -> Summary:
    """Events as plain tuples (header spelling included) for comparisons."""
    out: Summary = []
    for event in merged(events):
        if isinstance(event, RequestHead):
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
        elif isinstance(event, BodyData):
            out.append(("body", event.data))
        else:
            out.append(("end", list(event.trailers)))
    return out


def parseBoth(
    data: bytes, config: ServerConfig | None = None
) -> tuple[Summary, ProtocolError | None]:
    """Parse ``data`` whole and byte by byte; both must agree exactly."""
    whole = feedPieces([data], config)
    byByte = feedPieces([data[i : i + 1] for i in range(len(data))], config)
    assert summarize(whole[0]) == summarize(byByte[0])
    assert whole[1] == byByte[1]
    return summarize(whole[0]), whole[1]


def head(
    method: bytes = b"GET",
    target: bytes = b"/",
    version: tuple[int, int] = (1, 1),
    headers: list[tuple[bytes, bytes]] | None = None,
    contentLength: int | None = 0,
    chunked: bool = False,
) -> tuple[Any, ...]:
    if headers is None:
        headers = [(b"Host", b"example.com")]
    return ("head", method, target, version, headers, contentLength, chunked)


def end(trailers: list[tuple[bytes, bytes]] | None = None) -> tuple[Any, ...]:
    return ("end", trailers or [])


def body(data: bytes) -> tuple[Any, ...]:
    return ("body", data)


HOST = [(b"Host", b"example.com")]

VALID = [
    pytest.param(
        b"GET /f HTTP/1.1\r\n" + H + b"\r\n",
        [head(target=b"/f"), end()],
        id="rfc9112-3-simple-get",
    ),
    pytest.param(
        b"\r\nGET /f HTTP/1.1\r\n" + H + b"\r\n",
        [head(target=b"/f"), end()],
        id="rfc9112-2.2-A3-leading-empty-line",
    ),
    pytest.param(
        b"\r\n\n\r\n\n" * 50 + b"GET / HTTP/1.1\r\n" + H + b"\r\n",
        [head(), end()],
        id="rfc9112-2.2-many-leading-empty-lines",
    ),
    pytest.param(
        b"GET / HTTP/1.2\r\n" + H + b"\r\n",
        [head(), end()],
        id="rfc9110-2.5-A7-higher-minor-is-1.1",
    ),
    pytest.param(
        b"GET / HTTP/1.9\r\n" + H + b"\r\n",
        [head(), end()],
        id="rfc9110-2.5-minor-9",
    ),
    pytest.param(
        b"GET / HTTP/1.0\r\n\r\n",
        [head(version=(1, 0), headers=[]), end()],
        id="rfc9112-3.2-http10-may-omit-host",
    ),
    pytest.param(
        b"get /x HTTP/1.1\r\n" + H + b"\r\n",
        [head(method=b"get", target=b"/x"), end()],
        id="rfc9110-9.1-method-case-sensitive-kept",
    ),
    pytest.param(
        b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n",
        [head(method=b"OPTIONS", target=b"*"), end()],
        id="rfc9112-3.2.4-asterisk-form",
    ),
    pytest.param(
        b"GET http://example.com/a?b=%20 HTTP/1.1\r\n" + H + b"\r\n",
        [head(target=b"http://example.com/a?b=%20"), end()],
        id="rfc9112-3.2.2-absolute-form",
    ),
    pytest.param(
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        [
            head(
                method=b"CONNECT",
                target=b"example.com:443",
                headers=[(b"Host", b"example.com:443")],
            ),
            end(),
        ],
        id="rfc9112-3.2.3-authority-form",
    ),
    pytest.param(
        b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
        [head(headers=[(b"Host", b"")]), end()],
        id="rfc9112-3.2-empty-host",
    ),
    pytest.param(
        b"GET / HTTP/1.1\r\nHost: 192.0.2.1:8080\r\n\r\n",
        [head(headers=[(b"Host", b"192.0.2.1:8080")]), end()],
        id="rfc9112-3.2-host-ipv4-port",
    ),
    pytest.param(
        b"GET / HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n",
        [head(headers=[(b"Host", b"[2001:db8::1]:443")]), end()],
        id="rfc9112-3.2-host-ipv6-literal",
    ),
    pytest.param(
        b"GET / HTTP/1.1\r\nHost: [v1.fe80::a+b]\r\n\r\n",
        [head(headers=[(b"Host", b"[v1.fe80::a+b]")]), end()],
        id="rfc9112-3.2-host-ipvfuture",
    ),
    pytest.param(
        b"GET / HTTP/1.1\r\nHost: ex%41mple.com:\r\n\r\n",
        [head(headers=[(b"Host", b"ex%41mple.com:")]), end()],
        id="rfc9112-3.2-host-pct-encoded-empty-port",
    ),
    pytest.param(
        b"GET / HTTP/1.1\r\nHost: a_b-c~d!$&'()*+,;=e\r\n\r\n",
        [head(headers=[(b"Host", b"a_b-c~d!$&'()*+,;=e")]), end()],
        id="rfc3986-3.2.2-host-sub-delims",
    ),
    pytest.param(
        b"GET / HTTP/1.0\r\nHost: example.com\r\n\r\n",
        [head(version=(1, 0)), end()],
        id="rfc9112-3.2-http10-single-host",
    ),
    pytest.param(
        b"GET / HTTP/1.1\r\n" + H + b"X-A:  a b \t\r\nX-B:\t\r\nX-C:c\r\n\r\n",
        [
            head(headers=[*HOST, (b"X-A", b"a b"), (b"X-B", b""), (b"X-C", b"c")]),
            end(),
        ],
        id="rfc9112-5-ows-around-value-dropped",
    ),
    pytest.param(
        b"GET / HTTP/1.1\r\n" + H + b"X-Name: caf\xc3\xa9 \x80\xff\r\n\r\n",
        [head(headers=[*HOST, (b"X-Name", b"caf\xc3\xa9 \x80\xff")]), end()],
        id="rfc9110-5.5-obs-text-allowed",
    ),
    pytest.param(
        b"GET / HTTP/1.1\r\nhOsT: example.com\r\nX-MiXeD: 1\r\nx-mixed: 2\r\n\r\n",
        [
            head(
                headers=[
                    (b"hOsT", b"example.com"),
                    (b"X-MiXeD", b"1"),
                    (b"x-mixed", b"2"),
                ]
            ),
            end(),
        ],
        id="rfc9110-5.1-name-spelling-and-order-kept",
    ),
    pytest.param(
        b"GET / HTTP/1.1\r\n" + H + b"X-Q: a\tb\x7e\r\n\r\n",
        [head(headers=[*HOST, (b"X-Q", b"a\tb~")]), end()],
        id="rfc9110-5.5-htab-inside-value",
    ),
    pytest.param(
        b"POST /p HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhello",
        [
            head(
                method=b"POST",
                target=b"/p",
                headers=[*HOST, (b"Content-Length", b"5")],
                contentLength=5,
            ),
            body(b"hello"),
            end(),
        ],
        id="rfc9112-6.2-content-length-body",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n",
        [
            head(method=b"POST", headers=[*HOST, (b"Content-Length", b"0")]),
            end(),
        ],
        id="rfc9112-6.2-content-length-zero",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 003\r\n\r\nabc",
        [
            head(
                method=b"POST",
                headers=[*HOST, (b"Content-Length", b"003")],
                contentLength=3,
            ),
            body(b"abc"),
            end(),
        ],
        id="rfc9110-8.6-content-length-leading-zeros",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 999999999999999999\r\n\r\nab",
        [
            head(
                method=b"POST",
                headers=[*HOST, (b"Content-Length", b"999999999999999999")],
                contentLength=999999999999999999,
            ),
            body(b"ab"),
        ],
        id="rfc9110-8.6-B11-18-digit-length-no-allocation",
    ),
    pytest.param(
        b"POST /x HTTP/1.1\r\n" + H + b"\r\nGET /f HTTP/1.1\r\n" + H + b"\r\n",
        [head(method=b"POST", target=b"/x"), end(), head(target=b"/f"), end()],
        id="rfc9112-6.3-B16-no-length-means-empty-body",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + b"5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
        [
            head(
                method=b"POST",
                headers=[*HOST, (b"Transfer-Encoding", b"chunked")],
                contentLength=None,
                chunked=True,
            ),
            body(b"hello"),
            end([(b"X-T", b"1")]),
        ],
        id="rfc9112-7.1-B1-chunk-ext-and-trailers",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: Chunked\r\n\r\n"
        + b'00A ; a = b ;c;d="q\\"x ;"\r\nabcdefghij\r\n'
        + b"000\r\n\r\n",
        [
            head(
                method=b"POST",
                headers=[*HOST, (b"Transfer-Encoding", b"Chunked")],
                contentLength=None,
                chunked=True,
            ),
            body(b"abcdefghij"),
            end(),
        ],
        id="rfc9112-7.1.1-extensions-bws-quoted-hex-case",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: , chunked\r\n\r\n"
        + b"1\r\na\r\n1\r\nb\r\n0\r\nX-A: 1\r\nx-b:  2 \r\n\r\n",
        [
            head(
                method=b"POST",
                headers=[*HOST, (b"Transfer-Encoding", b", chunked")],
                contentLength=None,
                chunked=True,
            ),
            body(b"ab"),
            end([(b"X-A", b"1"), (b"x-b", b"2")]),
        ],
        id="rfc9112-7.1.2-trailers-empty-list-element",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + b"0000000000000000000000000000000000000000000000000001\r\nz\r\n0\r\n\r\n",
        [
            head(
                method=b"POST",
                headers=[*HOST, (b"Transfer-Encoding", b"chunked")],
                contentLength=None,
                chunked=True,
            ),
            body(b"z"),
            end(),
        ],
        id="rfc9112-7.1-leading-zeros-chunk-size",
    ),
    pytest.param(
        b"GET /a HTTP/1.1\r\n"
        + H
        + b"\r\nGET /b HTTP/1.1\r\n"
        + H
        + b"\r\nGET /c HTTP/1.0\r\n\r\n",
        [
            head(target=b"/a"),
            end(),
            head(target=b"/b"),
            end(),
            head(target=b"/c", version=(1, 0), headers=[]),
            end(),
        ],
        id="rfc9112-9.2-C2-three-pipelined",
    ),
    pytest.param(
        b"POST /a HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + b"3\r\nabc\r\n0\r\n\r\n"
        + b"\r\n"
        + b"POST /b HTTP/1.1\r\n"
        + H
        + b"Content-Length: 2\r\n\r\nxy"
        + b"GET /c HTTP/1.1\r\n"
        + H
        + b"\r\n",
        [
            head(
                method=b"POST",
                target=b"/a",
                headers=[*HOST, (b"Transfer-Encoding", b"chunked")],
                contentLength=None,
                chunked=True,
            ),
            body(b"abc"),
            end(),
            head(
                method=b"POST",
                target=b"/b",
                headers=[*HOST, (b"Content-Length", b"2")],
                contentLength=2,
            ),
            body(b"xy"),
            end(),
            head(target=b"/c"),
            end(),
        ],
        id="rfc9112-9.3.2-C16-pipelined-after-chunked-and-cl",
    ),
]


@pytest.mark.parametrize(("data", "expected"), VALID)
def test_valid(data: bytes, expected: Summary) -> None:
    events, error = parseBoth(data)
    assert error is None
    assert events == expected


SMALL = ServerConfig(maxRequestLineBytes=32, maxHeadBytes=128, maxHeaderCount=4)
LENIENT = ServerConfig(allowBareLf=True)


def bad(
    data: bytes,
    status: int,
    message: str,
    id: str,
    config: ServerConfig | None = None,
) -> Any:
    return pytest.param(data, status, message, config, id=id)


INVALID = [
    # -- RFC 9112 §2.2 line endings
    bad(
        b"GET / HTTP/1.1\r\n" + H + b"X: a\rb\r\n\r\n",
        400,
        "bare CR",
        id="rfc9112-2.2-A1-bare-cr-in-value",
    ),
    bad(
        b"GET /\r HTTP/1.1\r\n" + H + b"\r\n",
        400,
        "bare CR",
        id="rfc9112-2.2-bare-cr-in-request-line",
    ),
    bad(
        b"GET / HTTP/1.1\r\n" + b"Host: x\r\r\n\r\n",
        400,
        "bare CR",
        id="rfc9112-2.2-cr-cr-lf",
    ),
    bad(
        b"\r\rGET / HTTP/1.1\r\n" + H + b"\r\n",
        400,
        "bare CR",
        id="rfc9112-2.2-bare-cr-before-request-line",
    ),
    # -- RFC 9112 §3 request line
    bad(
        b"GET / HTTP/2.0\r\n" + H + b"\r\n",
        505,
        "major version",
        id="rfc9110-15.6.6-A8-http2-is-505",
    ),
    bad(
        b"GET / HTTP/3.0\r\n" + H + b"\r\n",
        505,
        "major version",
        id="rfc9110-15.6.6-A8-http3-is-505",
    ),
    bad(
        b"GET / HTTP/0.9\r\n\r\n",
        505,
        "major version",
        id="rfc9110-15.6.6-http09-is-505",
    ),
    bad(
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        505,
        "major version",
        id="rfc9113-3.4-h2-preface-is-505",
    ),
    bad(
        b"GET / http/1.1\r\n" + H + b"\r\n",
        400,
        "HTTP-version",
        id="rfc9112-2.3-lowercase-http",
    ),
    bad(
        b"GET / HTTP/1.10\r\n" + H + b"\r\n",
        400,
        "HTTP-version",
        id="rfc9112-2.3-two-digit-minor",
    ),
    bad(
        b"GET / HTTP/11.1\r\n" + H + b"\r\n",
        400,
        "HTTP-version",
        id="rfc9112-2.3-two-digit-major",
    ),
    bad(
        b"GET / HTTP/1\r\n" + H + b"\r\n",
        400,
        "HTTP-version",
        id="rfc9112-2.3-no-minor",
    ),
    bad(
        b"GET / HTTP/1.1 \r\n" + H + b"\r\n",
        400,
        "malformed request line",
        id="rfc9112-3-trailing-space",
    ),
    bad(
        b"GET  / HTTP/1.1\r\n" + H + b"\r\n",
        400,
        "malformed request line",
        id="rfc9112-3-double-space",
    ),
    bad(
        b"GET\t/ HTTP/1.1\r\n" + H + b"\r\n",
        400,
        "malformed request line",
        id="rfc9112-3-tab-separator",
    ),
    bad(
        b"GET HTTP/1.1\r\n" + H + b"\r\n",
        400,
        "malformed request line",
        id="rfc9112-3-missing-target",
    ),
    bad(
        b"GET /\r\n" + H + b"\r\n",
        400,
        "malformed request line",
        id="rfc9112-3-http09-style-line",
    ),
    bad(
        b"G(T / HTTP/1.1\r\n" + H + b"\r\n",
        400,
        "invalid method",
        id="rfc9110-9.1-method-not-token",
    ),
    bad(
        b"GET /caf\xc3\xa9 HTTP/1.1\r\n" + H + b"\r\n",
        400,
        "request-target",
        id="rfc9112-3.2-target-non-ascii",
    ),
    bad(
        b"GET /a\x7fb HTTP/1.1\r\n" + H + b"\r\n",
        400,
        "request-target",
        id="rfc9112-3.2-target-del",
    ),
    bad(
        b"GET /a\x00b HTTP/1.1\r\n" + H + b"\r\n",
        400,
        "request-target",
        id="rfc9112-3.2-target-nul",
    ),
    # -- RFC 9112 §3.2 Host
    bad(
        b"GET / HTTP/1.1\r\n\r\n",
        400,
        "missing Host",
        id="rfc9112-3.2-A4-missing-host",
    ),
    bad(
        b"GET http://example.com/ HTTP/1.1\r\n\r\n",
        400,
        "missing Host",
        id="rfc9112-3.2-A4-missing-host-absolute-form",
    ),
    bad(
        b"GET / HTTP/1.1\r\n" + H + H + b"\r\n",
        400,
        "more than one Host",
        id="rfc9112-3.2-A4-two-hosts",
    ),
    bad(
        b"GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n",
        400,
        "more than one Host",
        id="rfc9112-3.2-two-hosts-http10",
    ),
    bad(
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        400,
        "invalid Host",
        id="rfc9112-3.2-A4-host-with-space",
    ),
    bad(
        b"GET / HTTP/1.1\r\nHost: a:b:c\r\n\r\n",
        400,
        "invalid Host",
        id="rfc9112-3.2-host-bad-port",
    ),
    bad(
        b"GET / HTTP/1.1\r\nHost: user@example.com\r\n\r\n",
        400,
        "invalid Host",
        id="rfc9112-3.2-host-userinfo",
    ),
    bad(
        b"GET / HTTP/1.1\r\nHost: ex%zzample\r\n\r\n",
        400,
        "invalid Host",
        id="rfc9112-3.2-host-bad-pct",
    ),
    bad(
        b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
        400,
        "invalid Host",
        id="rfc9112-3.2-host-unclosed-literal",
    ),
    bad(
        b"GET / HTTP/1.1\r\nHost: [::g]\r\n\r\n",
        400,
        "invalid Host",
        id="rfc9112-3.2-host-bad-ipv6",
    ),
    bad(
        b"GET / HTTP/1.1\r\nHost: [fe80::1%25eth0]\r\n\r\n",
        400,
        "invalid Host",
        id="rfc9112-3.2-host-zone-id",
    ),
    bad(
        b"GET / HTTP/1.0\r\nHost: a/b\r\n\r\n",
        400,
        "invalid Host",
        id="rfc9112-3.2-host-invalid-http10",
    ),
    # -- RFC 9112 §5 fields
    bad(
        b"GET / HTTP/1.1\r\nHost : example.com\r\n\r\n",
        400,
        "between a field name and the colon",
        id="rfc9112-5.1-A5-space-before-colon",
    ),
    bad(
        b"GET / HTTP/1.1\r\n" + H + b"X\t: 1\r\n\r\n",
        400,
        "between a field name and the colon",
        id="rfc9112-5.1-tab-before-colon",
    ),
    bad(
        b"GET / HTTP/1.1\r\n" + H + b"X: a\r\n b\r\n\r\n",
        400,
        "obsolete line folding",
        id="rfc9112-5.2-A6-obs-fold",
    ),
    bad(
        b"GET / HTTP/1.1\r\n" + H + b"X: a\n\tb\n\n",
        400,
        "obsolete line folding",
        id="rfc9112-5.2-obs-fold-htab-bare-lf-lenient",
        config=LENIENT,
    ),
    bad(
        b"GET / HTTP/1.1\r\n" + H + b"X: a\n\tb\n\n",
        400,
        "bare LF",
        id="rfc9112-5.2-obs-fold-htab-bare-lf-strict",
    ),
    bad(
        b"GET / HTTP/1.1\r\n " + H + b"\r\n",
        400,
        "whitespace before the first field line",
        id="rfc9112-2.2-whitespace-after-start-line",
    ),
    bad(
        b"GET / HTTP/1.1\r\n" + H + b"NoColon\r\n\r\n",
        400,
        "without a colon",
        id="rfc9112-5-no-colon",
    ),
    bad(
        b"GET / HTTP/1.1\r\n" + H + b": x\r\n\r\n",
        400,
        "invalid field name",
        id="rfc9110-5.1-empty-name",
    ),
    bad(
        b"GET / HTTP/1.1\r\n" + H + b"X(y): 1\r\n\r\n",
        400,
        "invalid field name",
        id="rfc9110-5.1-name-not-token",
    ),
    bad(
        b"GET / HTTP/1.1\r\n" + H + b"X: a\x00b\r\n\r\n",
        400,
        "invalid character",
        id="rfc9110-5.5-nul-in-value",
    ),
    bad(
        b"GET / HTTP/1.1\r\n" + H + b"X: a\x01b\r\n\r\n",
        400,
        "invalid character",
        id="rfc9110-5.5-ctl-in-value",
    ),
    bad(
        b"GET / HTTP/1.1\r\n" + H + b"X: a\x7f\r\n\r\n",
        400,
        "invalid character",
        id="rfc9110-5.5-del-in-value",
    ),
    # -- limits
    bad(
        b"GET /" + b"a" * 40 + b" HTTP/1.1\r\n" + H + b"\r\n",
        414,
        "request line too long",
        id="rfc9112-3-414-long-request-line",
        config=SMALL,
    ),
    bad(
        b"GET /" + b"a" * 40,
        414,
        "request line too long",
        id="rfc9112-3-414-decided-without-newline",
        config=SMALL,
    ),
    bad(
        b"GET / HTTP/1.1\r\n" + H + b"X: " + b"v" * 100 + b"\r\n\r\n",
        431,
        "request head too large",
        id="rfc6585-5-431-head-too-large",
        config=SMALL,
    ),
    bad(
        b"GET / HTTP/1.1\r\n" + H + b"X: " + b"v" * 200,
        431,
        "request head too large",
        id="rfc6585-5-431-decided-without-terminator",
        config=SMALL,
    ),
    bad(
        b"GET / HTTP/1.1\r\n" + H + b"A: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\n\r\n",
        431,
        "too many header fields",
        id="rfc6585-5-431-too-many-fields",
        config=SMALL,
    ),
    # -- RFC 9112 §6 framing
    bad(
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3, 3\r\n\r\nabc",
        400,
        "a list in Content-Length",
        id="rfc9112-6.3-B14-identical-list-refused",
    ),
    bad(
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3, 4\r\n\r\nabc",
        400,
        "a list in Content-Length",
        id="rfc9112-6.3-B14-different-list",
    ),
    bad(
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        400,
        "more than one Content-Length",
        id="rfc9112-6.3-B14-two-identical-lines",
    ),
    bad(
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Content-Length: 3\r\ncontent-length: 4\r\n\r\nabc",
        400,
        "more than one Content-Length",
        id="rfc9112-6.3-B14-two-different-lines",
    ),
    bad(
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +3\r\n\r\nabc",
        400,
        "invalid Content-Length",
        id="rfc9112-6.3-B14-plus-sign",
    ),
    bad(
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n",
        400,
        "invalid Content-Length",
        id="rfc9112-6.3-negative",
    ),
    bad(
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0x3\r\n\r\nabc",
        400,
        "invalid Content-Length",
        id="rfc9112-6.3-B14-hex",
    ),
    bad(
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length:  3 3\r\n\r\nabc",
        400,
        "invalid Content-Length",
        id="rfc9112-6.3-B14-space-inside",
    ),
    bad(
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: \r\n\r\n",
        400,
        "invalid Content-Length",
        id="rfc9112-6.3-empty-content-length",
    ),
    bad(
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 99999999999999999999999\r\n\r\n",
        400,
        "Content-Length too large",
        id="rfc9110-8.6-B11-huge-content-length",
    ),
    bad(
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1000000000000000000\r\n\r\n",
        400,
        "Content-Length too large",
        id="rfc9110-8.6-19-digits",
    ),
    bad(
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n",
        400,
        "Content-Length too large",
        id="rfc9110-8.6-beyond-int-digit-limit",
        config=ServerConfig(maxHeadBytes=64 * 1024),
    ),
    bad(
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n",
        400,
        "final transfer coding is not chunked",
        id="rfc9112-6.3-B13-chunked-not-final",
    ),
    bad(
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n",
        400,
        "final transfer coding is not chunked",
        id="rfc9112-6.3-B13-no-chunked",
    ),
    bad(
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n",
        400,
        "final transfer coding is not chunked",
        id="rfc9112-6.3-B13-two-lines-identity-last",
    ),
    bad(
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n",
        501,
        "unsupported transfer coding",
        id="rfc9112-6.1-B4-gzip-chunked-501",
    ),
    bad(
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity, chunked\r\n\r\n",
        501,
        "unsupported transfer coding",
        id="rfc9112-6.1-identity-chunked-501",
    ),
    bad(
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
        501,
        "unsupported transfer coding",
        id="rfc9110-5.3-te-list-across-lines-501",
    ),
    bad(
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: g zip, chunked\r\n\r\n",
        400,
        "malformed transfer coding",
        id="rfc9112-6.1-malformed-coding",
    ),
    bad(
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, chunked\r\n\r\n",
        400,
        "more than once",
        id="rfc9112-6.1-chunked-twice",
    ),
    bad(
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding:\r\n\r\n",
        400,
        "empty Transfer-Encoding",
        id="rfc9112-6.1-empty-transfer-encoding",
    ),
    bad(
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: , ,\r\n\r\n",
        400,
        "empty Transfer-Encoding",
        id="rfc9110-5.6.1-only-empty-elements",
    ),
    bad(
        b"POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "HTTP/1.0",
        id="rfc9112-6.1-B6-te-in-http10",
    ),
    bad(
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"0\r\n\r\nGET / HTTP/1.1\r\n"
        + H
        + b"\r\n",
        400,
        "connection must close",
        id="rfc9112-6.1-B5-cl-and-te",
    ),
    # -- RFC 9112 §7.1 chunked
    bad(
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + b"10000000000000000\r\n",
        400,
        "chunk size too large",
        id="rfc9112-7.1-17-hex-digits",
    ),
    bad(
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + b"0" * 65
        + b"1\r\nx\r\n",
        400,
        "chunk size too large",
        id="rfc9112-7.1-size-token-over-64-chars",
    ),
    bad(
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        400,
        "malformed chunk-size line",
        id="rfc9112-7.1-non-hex-size",
    ),
    bad(
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n\r\n",
        400,
        "malformed chunk-size line",
        id="rfc9112-7.1-missing-size",
    ),
    bad(
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n-5\r\n",
        400,
        "malformed chunk-size line",
        id="rfc9112-7.1-negative-size",
    ),
    bad(
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5 \r\n",
        400,
        "malformed chunk-size line",
        id="rfc9112-7.1-space-after-size",
    ),
    bad(
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5;=x\r\n",
        400,
        "malformed chunk-size line",
        id="rfc9112-7.1.1-extension-without-name",
    ),
    bad(
        b"POST / HTTP/1.1\r\n" + H + b'Transfer-Encoding: chunked\r\n\r\n5;a="x\r\n',
        400,
        "malformed chunk-size line",
        id="rfc9112-7.1.1-unterminated-quoted-string",
    ),
    bad(
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
        400,
        "not ended by CRLF",
        id="rfc9112-7.1-bare-lf-chunk-size-line",
    ),
    bad(
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        400,
        "not followed by CRLF",
        id="rfc9112-7.1-chunk-data-not-followed-by-crlf",
    ),
    bad(
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n",
        400,
        "not followed by CRLF",
        id="rfc9112-7.1-chunk-data-then-bare-lf",
    ),
    bad(
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\rX",
        400,
        "not followed by CRLF",
        id="rfc9112-7.1-chunk-data-then-cr-x",
    ),
    bad(
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\n\r\n5;"
        + b"a" * 5000,
        400,
        "chunk-size line too long",
        id="rfc9112-7.1.1-extension-line-bounded",
    ),
    bad(
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 5\r\n\r\n",
        400,
        "framing field in the trailer section",
        id="rfc9110-6.5.1-content-length-in-trailers",
    ),
    bad(
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\n\r\n0\r\nHost: evil\r\n\r\n",
        400,
        "framing field in the trailer section",
        id="rfc9110-6.5.1-host-in-trailers",
    ),
    bad(
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\n\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
        "framing field in the trailer section",
        id="rfc9110-6.5.1-te-in-trailers",
    ),
    bad(
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\n\r\n0\r\nX: a\r\n b\r\n\r\n",
        400,
        "obsolete line folding",
        id="rfc9112-7.1.2-obs-fold-in-trailers",
    ),
    bad(
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\n\r\n0\r\nX: a\rb\r\n\r\n",
        400,
        "bare CR",
        id="rfc9112-7.1.2-bare-cr-in-trailers",
    ),
    bad(
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\rX",
        400,
        "bare CR",
        id="rfc9112-7.1.2-bare-cr-ending-trailers",
    ),
    bad(
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\n\r\n0\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\n\r\n",
        431,
        "too many header fields",
        id="rfc9112-7.1.2-too-many-trailers",
        config=ServerConfig(maxHeaderCount=4),
    ),
    bad(
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\n\r\n0\r\nX: "
        + b"v" * 200,
        431,
        "trailer section too large",
        id="rfc9112-7.1.2-trailers-too-large",
        config=ServerConfig(maxHeadBytes=128),
    ),
]


@pytest.mark.parametrize(("data", "status", "message", "config"), INVALID)
def test_invalid(
    data: bytes, status: int, message: str, config: ServerConfig | None
) -> None:
    _, error = parseBoth(data, config)
    assert error is not None
    assert error.statusCode == status
    assert message in error.message
    assert error.closeConnection is True


# -- limits at their exact edges ------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param(b"GET /" + b"a" * 17 + b" HTTP/1.1", None, id="at-limit"),
        pytest.param(b"GET /" + b"a" * 18 + b" HTTP/1.1", 414, id="one-over"),
    ],
)
def test_requestLineLimitEdge(line: bytes, expected: int | None) -> None:
    """maxRequestLineBytes counts the line without its CRLF (RFC 9112 §3)."""
    assert len(line) in (31, 32)
    config = ServerConfig(maxRequestLineBytes=31)
    _, error = parseBoth(line + b"\r\n" + H + b"\r\n", config)
    assert (error and error.statusCode) == expected
    # A bare LF ends the line for the limit's purpose in both modes: the
    # lenient parser accepts it, the strict one refuses it (once it is
    # within the limit, else the 414 came first).
    _, error = parseBoth(line + b"\n" + H + b"\r\n", config.replace(allowBareLf=True))
    assert (error and error.statusCode) == expected
    _, error = parseBoth(line + b"\n" + H + b"\r\n", config)
    assert error is not None
    assert error.statusCode == (expected or 400)


@pytest.mark.parametrize(
    ("padding", "expected"),
    [pytest.param(0, None, id="at-limit"), pytest.param(1, 431, id="one-over")],
)
def test_headLimitEdge(padding: int, expected: int | None) -> None:
    """maxHeadBytes counts the whole head, terminator included."""
    data = b"GET / HTTP/1.1\r\n" + H + b"X: " + b"v" * (10 + padding) + b"\r\n\r\n"
    config = ServerConfig(maxHeadBytes=len(data) - padding)
    _, error = parseBoth(data, config)
    assert (error and error.statusCode) == expected


def test_headerCountEdge() -> None:
    fields = b"".join(b"X-%d: 1\r\n" % i for i in range(3))
    config = ServerConfig(maxHeaderCount=4)
    events, error = parseBoth(b"GET / HTTP/1.1\r\n" + H + fields + b"\r\n", config)
    assert error is None
    assert len(events[0][4]) == 4


def test_limitOrderDoesNotDependOnSplit() -> None:
    """
    With a head limit below the line limit, an over-long line is reported
    as whichever limit the byte stream crosses first, fed whole or not.
    """
    config = ServerConfig(maxRequestLineBytes=100, maxHeadBytes=60)
    _, error = parseBoth(b"GET /" + b"a" * 200 + b" HTTP/1.1\r\n\r\n", config)
    assert error is not None and error.statusCode == 431
    config = ServerConfig(maxRequestLineBytes=40, maxHeadBytes=60)
    _, error = parseBoth(b"GET /" + b"a" * 200 + b" HTTP/1.1\r\n\r\n", config)
    assert error is not None and error.statusCode == 414


# -- incremental behaviour ------------------------------------------------


def test_neverWaitsOnDecidablyInvalidInput() -> None:
    """A limit crossed without a line end is reported at once (no hang)."""
    parser = RequestParser(ServerConfig(maxRequestLineBytes=16))
    parser.receiveData(b"GET /" + b"a" * 20)
    with pytest.raises(ProtocolError) as info:
        parser.nextEvent()
    assert info.value.statusCode == 414

    parser = RequestParser(ServerConfig(maxHeadBytes=64))
    parser.receiveData(b"GET / HTTP/1.1\r\nX: " + b"a" * 64)
    with pytest.raises(ProtocolError) as info:
        parser.nextEvent()
    assert info.value.statusCode == 431

    parser = RequestParser()
    parser.receiveData(b"GET / HTTP/2.0\r\n")  # no end of head yet
    with pytest.raises(ProtocolError) as info:
        parser.nextEvent()
    assert info.value.statusCode == 505


def test_bareLFHeadDoesNotHang() -> None:
    """
    A bare-LF head (RFC 9112 §2.2): twisted.web hangs on it; we answer 400 by
    default, the request with allowBareLf.
    """
    parser = RequestParser()
    with pytest.raises(ProtocolError) as info:
        parser.feed(b"GET /f HTTP/1.1\nHost: x\n\n")
    assert info.value.statusCode == 400
    parser = RequestParser(LENIENT)
    events = parser.feed(b"GET /f HTTP/1.1\nHost: x\n\n")
    assert [type(e) for e in events] == [RequestHead, EndOfMessage]


# -- bare LF: refused by default, read as a line end with allowBareLf -------

CHUNKED_POST = b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
CHUNKED_HEAD = head(
    method=b"POST",
    headers=[*HOST, (b"Transfer-Encoding", b"chunked")],
    contentLength=None,
    chunked=True,
)

#: (data, what allowBareLf=True reads).  By default each is a 400.
BARE_LF = [
    pytest.param(
        b"GET /f HTTP/1.1\nHost: example.com\n\n",
        [head(target=b"/f"), end()],
        id="rfc9112-2.2-A2-bare-lf-everywhere",
    ),
    pytest.param(
        b"GET / HTTP/1.1\n" + H + b"\r\n",
        [head(), end()],
        id="request-line",
    ),
    pytest.param(
        b"GET / HTTP/1.1\r\nHost: example.com\n\r\n",
        [head(), end()],
        id="field-line",
    ),
    pytest.param(
        b"GET / HTTP/1.1\r\n" + H + b"\n",
        [head(), end()],
        id="empty-line-ending-the-head",
    ),
    pytest.param(
        b"GET / HTTP/1.1\r\n" + H + b"X-A: 1\r\nX-B: 2\nX-C: 3\r\n\r\n",
        [head(headers=[*HOST, (b"X-A", b"1"), (b"X-B", b"2"), (b"X-C", b"3")]), end()],
        id="middle-field-line",
    ),
    pytest.param(
        # HTTP Garden: a front end forwarding the bare LF inside a value sees
        # one request; a lenient parser sees two (the second without Host).
        b"GET / HTTP/1.1\r\nHost: a\r\nUseless:\n\nGET / HTTP/1.1\r\n" + H + b"\r\n",
        [head(headers=[(b"Host", b"a"), (b"Useless", b"")]), end(), head(), end()],
        id="http-garden-empty-value-then-empty-line",
    ),
    pytest.param(
        CHUNKED_POST + b"1\r\na\r\n0\r\nX-A: 1\nx-b:  2 \n\n",
        [CHUNKED_HEAD, body(b"a"), end([(b"X-A", b"1"), (b"x-b", b"2")])],
        id="rfc9112-7.1.2-trailers",
    ),
    pytest.param(
        CHUNKED_POST + b"1\r\nz\r\n0\r\n\n",
        [CHUNKED_HEAD, body(b"z"), end()],
        id="empty-trailer-section",
    ),
    pytest.param(
        CHUNKED_POST + b"0\r\nX-A: 1\r\n\n",
        [CHUNKED_HEAD, end([(b"X-A", b"1")])],
        id="empty-line-ending-the-trailers",
    ),
]


@pytest.mark.parametrize(("data", "lenient"), BARE_LF)
def test_bareLFIsRefusedByDefault(data: bytes, lenient: Summary) -> None:
    """
    RFC 9112 §2.2 lets a recipient read a bare LF as a line end; connserver
    does not by default (a smuggling pair with front ends that forward it).
    """
    events, error = parseBoth(data)
    assert error is not None
    assert (error.statusCode, error.closeConnection) == (400, True)
    assert "bare LF" in error.message
    # Only the events of what came before the bad line.
    assert events == lenient[: len(events)]
    assert len(events) < len(lenient)


@pytest.mark.parametrize(("data", "lenient"), BARE_LF)
def test_bareLFIsALineEndWithAllowBareLF(data: bytes, lenient: Summary) -> None:
    events, error = parseBoth(data, LENIENT)
    assert error is None
    assert events == lenient


def test_bareLFIsRefusedWithoutWaitingForTheHeadEnd() -> None:
    """The byte that brings the bare LF decides: no wait for an empty line."""
    for data in (
        b"GET / HTTP/1.1\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\nY",
        CHUNKED_POST + b"0\r\nX: 1\n",
    ):
        for pieces in ([data], [data[:-1], data[-1:]]):
            _, error = feedPieces(pieces)
            assert error is not None and "bare LF" in error.message, data
        _, error = feedPieces([data], LENIENT)
        assert error is None


def test_bareLFComesBeforeLaterLimitsAndErrors() -> None:
    """
    A bare LF is decided by its own byte: before a 431 decided later, and
    before errors of other field lines, whole or byte by byte.
    """
    config = ServerConfig(maxHeadBytes=64, maxHeaderCount=2)
    start = b"GET / HTTP/1.1\r\nHost: a\r\n"
    _, error = parseBoth(start + b"X: 1\n" + b"Y" * 100, config)
    assert error is not None and (error.statusCode, "bare LF" in error.message) == (
        400,
        True,
    )
    _, error = parseBoth(start + b"X: 1\nA: 1\r\nB: 2\r\n\r\n", config)
    assert error is not None and "bare LF" in error.message
    _, error = parseBoth(start + b"X\x00: 1\r\nY: 1\n\r\n")
    assert error is not None and "bare LF" in error.message
    # With allowBareLf the same bytes give the other outcomes.
    lenient = config.replace(allowBareLf=True)
    _, error = parseBoth(start + b"X: 1\n" + b"Y" * 100, lenient)
    assert error is not None and error.statusCode == 431
    _, error = parseBoth(start + b"X: 1\nA: 1\r\nB: 2\r\n\r\n", lenient)
    assert error is not None and error.message == "too many header fields"


def test_leadingEmptyLinesMayBeBareLF() -> None:
    """Empty lines before a request line are skipped in either form."""
    events, error = parseBoth(b"\n\r\n\nGET / HTTP/1.1\r\n" + H + b"\r\n")
    assert error is None and events == [head(), end()]


def test_bareLFSearchIsLinearByteByByte() -> None:
    """Fed one byte at a time, the strict search resumes where it stopped."""
    parser = RequestParser(ServerConfig(maxHeadBytes=200_000, maxHeaderCount=20_000))
    parser.receiveData(b"GET / HTTP/1.1\r\nHost: a\r\n")
    assert parser.nextEvent() is NEED_DATA
    data = b"X-A: 1\r\n" * 10_000
    for i in range(len(data)):
        parser.receiveData(data[i : i + 1])
        assert parser.nextEvent() is NEED_DATA
    assert parser._bareFrom == parser.bufferedByteCount


def test_bodyInPieces() -> None:
    parser = RequestParser()
    events = parser.feed(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 10\r\n\r\nab")
    assert isinstance(events[0], RequestHead)
    assert events[1:] == [BodyData(b"ab")]
    assert parser.inMessage
    assert parser.feed(b"") == []
    assert parser.feed(b"cdefg") == [BodyData(b"cdefg")]
    # Never more than the remaining length; the rest is the next request.
    events = parser.feed(b"hijGET / HTTP/1.0\r\n\r\n")
    assert events[:2] == [BodyData(b"hij"), EndOfMessage(Headers())]
    assert isinstance(events[2], RequestHead)
    assert events[2].target == b"/"


def test_chunkDataIsNotHeldBack() -> None:
    """Chunk data is emitted as it arrives, without waiting for the chunk."""
    parser = RequestParser()
    parser.feed(b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n")
    assert parser.feed(b"10\r\nabc") == [BodyData(b"abc")]
    assert parser.feed(b"defghijklmnop\r") == [BodyData(b"defghijklmnop")]
    assert parser.feed(b"\n0\r\n") == []
    assert parser.feed(b"\r\n") == [EndOfMessage(Headers())]


def test_largeBodyInSmallPieces() -> None:
    """A 64 KiB body in 7-byte pieces comes out intact."""
    payload = bytes(range(256)) * 256
    parser = RequestParser()
    parser.feed(b"PUT / HTTP/1.1\r\n" + H + b"Content-Length: 65536\r\n\r\n")
    received = bytearray()
    events: list[Event] = []
    for i in range(0, len(payload), 7):
        events = parser.feed(payload[i : i + 7])
        for event in events:
            if isinstance(event, BodyData):
                received += event.data
    assert bytes(received) == payload
    assert isinstance(events[-1], EndOfMessage)
    assert parser.bufferedByteCount == 0


def test_manyEmptyLinesAreDropped() -> None:
    """Empty lines before a request are consumed, not accumulated."""
    parser = RequestParser()
    parser.receiveData(b"\r\n" * 100_000)
    assert parser.nextEvent() is NEED_DATA
    assert parser.bufferedByteCount == 0
    assert not parser.inMessage


def test_inMessageAndBufferedByteCount() -> None:
    parser = RequestParser()
    assert (parser.inMessage, parser.bufferedByteCount) == (False, 0)
    parser.receiveData(b"\r\n\n")
    assert (parser.inMessage, parser.bufferedByteCount) == (False, 0)
    parser.receiveData(b"\r")  # maybe the start of another empty line
    assert (parser.inMessage, parser.bufferedByteCount) == (False, 1)
    parser.receiveData(b"\nG")
    assert (parser.inMessage, parser.bufferedByteCount) == (True, 1)
    assert parser.nextEvent() is NEED_DATA
    parser.receiveData(b"ET / HTTP/1.1\r\n" + H + b"Content-Length: 2\r\n\r\na")
    event = parser.nextEvent()
    assert isinstance(event, RequestHead)
    assert (parser.inMessage, parser.bufferedByteCount) == (True, 1)
    assert parser.nextEvent() == BodyData(b"a")
    assert (parser.inMessage, parser.bufferedByteCount) == (True, 0)
    assert parser.nextEvent() is NEED_DATA
    parser.receiveData(b"bGET")
    assert parser.nextEvent() == BodyData(b"b")
    assert parser.inMessage  # until EndOfMessage is returned
    assert parser.nextEvent() == EndOfMessage(Headers())
    # The pipelined bytes already started the next request.
    assert (parser.inMessage, parser.bufferedByteCount) == (True, 3)
    assert parser.nextEvent() is NEED_DATA
    parser.receiveData(b" / HTTP/1.0\r\n\r\n")
    assert [type(e) for e in parser.feed(b"")] == [RequestHead, EndOfMessage]
    assert (parser.inMessage, parser.bufferedByteCount) == (False, 0)


def test_deadParserRepeatsItsError() -> None:
    parser = RequestParser()
    parser.receiveData(b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n" + H + b"\r\n")
    with pytest.raises(ProtocolError) as first:
        parser.nextEvent()
    with pytest.raises(ProtocolError) as second:
        parser.nextEvent()
    assert second.value is first.value
    # Bytes received afterwards are dropped (a lingering close keeps reading).
    before = parser.bufferedByteCount
    parser.receiveData(b"x" * 1000)
    assert parser.bufferedByteCount == before
    with pytest.raises(ProtocolError) as third:
        parser.feed(b"more")
    assert third.value is first.value


def test_feedReturnsEveryEventUpToNeedData() -> None:
    parser = RequestParser()
    data = b"GET /a HTTP/1.1\r\n" + H + b"\r\nGET /b HTTP/1.1\r\n" + H + b"\r\nGE"
    events = parser.feed(data)
    assert [type(e) for e in events] == [
        RequestHead,
        EndOfMessage,
        RequestHead,
        EndOfMessage,
    ]
    assert parser.bufferedByteCount == 2
    assert parser.inMessage


def test_headersObject() -> None:
    """Headers carry lowered names for lookups and the sent spelling."""
    parser = RequestParser()
    event = parser.feed(b"GET / HTTP/1.1\r\nHOST: a\r\nX-Two: 1\r\nx-two: 2\r\n\r\n")[0]
    assert isinstance(event, RequestHead)
    assert event.headers.get(b"host") == b"a"
    assert event.headers.getAll(b"X-TWO") == [b"1", b"2"]
    assert event.headers.names() == [b"host", b"x-two", b"x-two"]
    assert list(event.headers) == [(b"HOST", b"a"), (b"X-Two", b"1"), (b"x-two", b"2")]


@pytest.mark.parametrize("config", [LENIENT, ServerConfig()], ids=["lenient", "strict"])
def test_splitsAtEveryPosition(config: ServerConfig) -> None:
    """Two-piece splits at every offset agree with the whole parse."""
    data = (
        b"\r\nPOST /a HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + b'3;x="y"\r\nabc\r\n0\r\nT: 1\r\n\r\n'
        + b"GET /b HTTP/1.1\nHost: b\n\n"
    )
    expected, expectedError = feedPieces([data], config)
    assert len(expected) == (5 if config.allowBareLf else 3)
    assert (expectedError is None) == config.allowBareLf
    for i in range(len(data) + 1):
        events, error = feedPieces([data[:i], data[i:]], config)
        assert error == expectedError
        assert summarize(events) == summarize(expected)


def test_pipelinedAfterHeadThatArrivedInPieces() -> None:
    """Regression: search offsets of a head fed in pieces are not reused."""
    pieces = [
        b"GET /%20x HTTP/1.",
        b"0\r\n\r\nGET / HTTP/1.1\r\nHost: example.com\r\n",
        b"X-A: 1\r\n\r\n",
    ]
    events, error = feedPieces(pieces)
    assert error is None
    assert summarize(events) == [
        head(target=b"/%20x", version=(1, 0), headers=[]),
        end(),
        head(headers=[*HOST, (b"X-A", b"1")]),
        end(),
    ]
