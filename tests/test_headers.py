"""Headers, the RFC 9110 §5.6.1 list rule, connection options, hop-by-hop removal."""

from __future__ import annotations

import pytest

from connserver._http.headers import (
    HOP_BY_HOP,
    Headers,
    connectionOptions,
    isToken,
    removeHopByHop,
    splitList,
)


def test_namesAreCaseInsensitiveAndKeepSpelling() -> None:
    headers = Headers([(b"Content-Type", b"text/plain"), (b"X-A", b"1")])
    assert headers.get(b"content-type") == b"text/plain"
    assert b"CONTENT-TYPE" in headers
    assert list(headers) == [(b"Content-Type", b"text/plain"), (b"X-A", b"1")]


def test_repeatedFieldsStayInOrder() -> None:
    headers = Headers([(b"A", b"1"), (b"B", b"x"), (b"a", b"2")])
    assert headers.getAll(b"A") == [b"1", b"2"]
    headers.set(b"a", b"3")
    assert headers.getAll(b"a") == [b"3"]
    assert headers.names() == [b"b", b"a"]
    headers.remove(b"B")
    assert len(headers) == 1


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param([b"a, b"], [b"a", b"b"], id="rfc9110-5.6.1-comma"),
        pytest.param(
            [b", , a ,, b ,"], [b"a", b"b"], id="rfc9110-5.6.1-empty-elements"
        ),
        pytest.param(
            [b"a", b"b, c"], [b"a", b"b", b"c"], id="rfc9110-5.3-several-lines"
        ),
        pytest.param([b"\ta\t,  b "], [b"a", b"b"], id="rfc9110-5.6.3-ows"),
        pytest.param([b""], [], id="rfc9110-5.6.1-empty"),
    ],
)
def test_splitList(values: list[bytes], expected: list[bytes]) -> None:
    assert splitList(values) == expected


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param(
            [b"keep-alive, close"],
            {b"keep-alive", b"close"},
            id="rfc9112-9.3-close-in-list",
        ),
        pytest.param([b"close,foo"], {b"close", b"foo"}, id="rfc9110-7.6.1-no-space"),
        pytest.param([b"CLOSE"], {b"close"}, id="rfc9110-7.6.1-case-insensitive"),
        pytest.param(
            [b"foo", b"close"], {b"foo", b"close"}, id="rfc9110-5.3-second-line"
        ),
        pytest.param([b", close ,"], {b"close"}, id="rfc9110-5.6.1-empty-elements"),
        pytest.param(
            [b"enclosed"], {b"enclosed"}, id="rfc9110-7.6.1-enclosed-is-not-close"
        ),
        pytest.param(
            [b"Keep-Alive, X-Foo"],
            {b"keep-alive", b"x-foo"},
            id="rfc9112-9.3-keep-alive-in-list",
        ),
        pytest.param([b"close x"], set(), id="rfc9110-5.6.2-not-a-token"),
    ],
)
def test_connectionOptions(lines: list[bytes], expected: set[bytes]) -> None:
    headers = Headers([(b"Connection", line) for line in lines])
    assert connectionOptions(headers) == expected


def test_removeHopByHop() -> None:
    headers = Headers(
        [
            (b"Connection", b"X-Foo, close"),
            (b"X-Foo", b"1"),
            (b"Keep-Alive", b"timeout=5"),
            (b"TE", b"trailers"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Upgrade", b"h2c"),
            (b"Proxy-Authorization", b"x"),
            (b"Cache-Control", b"no-cache"),
            (b"X-Bar", b"2"),
        ]
    )
    kept = removeHopByHop(headers)
    assert list(kept) == [(b"Cache-Control", b"no-cache"), (b"X-Bar", b"2")]
    # The original is untouched.
    assert len(headers) == 9


def test_hopByHopSet() -> None:
    for name in [
        b"keep-alive",
        b"transfer-encoding",
        b"te",
        b"connection",
        b"trailer",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
    ]:
        assert name in HOP_BY_HOP
    assert b"cache-control" not in HOP_BY_HOP


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (b"close", True),
        (b"x-foo", True),
        (b"a b", False),
        (b"", False),
        (b"a,b", False),
        (b"\xff", False),
    ],
)
def test_isToken(value: bytes, ok: bool) -> None:
    assert isToken(value) is ok
