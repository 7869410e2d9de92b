"""
``ReverseProxy``'s pure parts, without sockets: the upstream URL, and the
fields it would send upstream for a request built by hand.  (The exchanges
with real upstreams are in ``test_proxy.py``.)
"""

from __future__ import annotations

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.testing import MemoryReactorClock
from twisted.internet.testing import MemoryReactorClock as Clock

from connserver import Headers, Request, Response, ReverseProxy
from connserver._handlers.proxy import parseUpstreamURL


def test_parseUpstreamURL() -> None:
    assert parseUpstreamURL("http://127.0.0.1:9000") == (
        b"http://127.0.0.1:9000",
        b"",
        b"127.0.0.1:9000",
    )
    assert parseUpstreamURL("https://app.internal/v2/") == (
        b"https://app.internal",
        b"/v2/",
        b"app.internal",
    )


@pytest.mark.parametrize(
    "url",
    [
        "ftp://h",
        "http://",
        "127.0.0.1:9000",
        "http://h:99999",
        "http://h/?q=1",
        "http://h/#f",
        "http://user:pw@h",
        "http://h /x",
        "http://caf\u00e9",
    ],
)
def test_badUpstreamURLs(url: str) -> None:
    with pytest.raises(ValueError):
        ReverseProxy(url, reactor=Clock())


def headFor(
    request: Request, url: str = "http://10.1.2.3:9000", **options: object
) -> bytes:
    proxy = ReverseProxy(url, reactor=Clock(), **options)  # type: ignore[arg-type]
    head = proxy._requestHead(request)
    assert isinstance(head, bytes), head
    return head


def fieldsFor(request: Request, **options: object) -> dict[bytes, list[bytes]]:
    """The fields of the request head ``ReverseProxy`` would send."""
    lines = headFor(request, **options).split(b"\r\n")
    assert lines[-2:] == [b"", b""]
    fields: dict[bytes, list[bytes]] = {}
    for line in lines[1:-2]:
        name, _, value = line.partition(b": ")
        fields.setdefault(name.lower(), []).append(value)
    return fields


def test_fieldsSentUpstream() -> None:
    request = Request(
        b"GET",
        b"/api/x",
        headers=Headers(
            [
                (b"Host", b"example.com:8080"),
                (b"Connection", b"X-A, close"),
                (b"X-A", b"1"),
                (b"Proxy-Connection", b"keep-alive"),
                (b"Upgrade", b"websocket"),
                (b"Content-Length", b"0"),
                (b"Expect", b"100-continue"),
                (b"Cookie", b"a=1"),
                (b"Cookie", b"b=2"),
            ]
        ),
        peer=IPv6Address("TCP", "2001:db8::1", 5000),
        isSecure=True,
    )
    fields = fieldsFor(request)
    assert set(fields) == {
        b"host",
        b"cookie",
        b"via",
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-proto",
    }
    assert fields[b"cookie"] == [b"a=1", b"b=2"]
    assert fields[b"host"] == [b"example.com:8080"]
    assert fields[b"forwarded"] == [
        b'for="[2001:db8::1]";proto=https;host="example.com:8080"'
    ]
    assert fields[b"x-forwarded-for"] == [b"2001:db8::1"]
    assert fields[b"x-forwarded-proto"] == [b"https"]
    assert fields[b"via"] == [b"1.1 connserver"]


def test_rewriteHostAndHTTP10() -> None:
    request = Request(
        b"GET",
        b"/",
        (1, 0),
        Headers([(b"Host", b"example.com")]),
        peer=IPv4Address("TCP", "192.0.2.7", 5000),
    )
    fields = fieldsFor(request, rewriteHost=True)
    assert fields[b"host"] == [b"10.1.2.3:9000"]
    assert fields[b"via"] == [b"1.0 connserver"]
    assert fields[b"forwarded"] == [b"for=192.0.2.7;proto=http;host=example.com"]


def test_schemeForwardedByATrustedProxyIsPassedOn() -> None:
    """
    Behind a TLS-terminating proxy in --trusted-proxies (Request.scheme is
    "https" on a plain connection), X-Forwarded-Proto says https; this hop's
    own element of Forwarded says what this hop received (http), and the peer
    (the proxy) is appended after the hops already listed.
    """
    request = Request(
        b"GET",
        b"/",
        headers=Headers(
            [
                (b"Host", b"example.com"),
                (b"X-Forwarded-For", b"203.0.113.9"),
                (b"X-Forwarded-Proto", b"https"),
            ]
        ),
        peer=IPv4Address("TCP", "10.0.0.2", 5000),
        clientAddress=IPv4Address("TCP", "203.0.113.9", 0),
        scheme="https",
    )
    fields = fieldsFor(request)
    assert fields[b"x-forwarded-proto"] == [b"https"]
    assert fields[b"x-forwarded-for"] == [b"203.0.113.9, 10.0.0.2"]
    assert fields[b"forwarded"] == [b"for=10.0.0.2;proto=http;host=example.com"]
    untrusted = Request(
        b"GET",
        b"/",
        headers=Headers([(b"Host", b"example.com"), (b"X-Forwarded-Proto", b"https")]),
        peer=IPv4Address("TCP", "198.51.100.1", 5000),
    )
    assert fieldsFor(untrusted)[b"x-forwarded-proto"] == [b"http"]


@pytest.mark.parametrize(
    "target",
    [b"/api/x..y", b"/api/.well-known/x", b"/api/...", b"/api/x?path=/../y"],
)
def test_dotsThatAreNotSegmentsAreForwarded(target: bytes) -> None:
    reactor = MemoryReactorClock()
    proxy = ReverseProxy("http://10.1.2.3:9000", reactor=reactor)
    result = proxy(Request(b"GET", target))
    # Sent on: a connection to the upstream is being made (no 400).
    assert not isinstance(result, Response)
    assert [(host, port) for host, port, *_ in reactor.tcpClients] == [
        ("10.1.2.3", 9000)
    ]
    result.cancel()  # type: ignore[union-attr]


def test_forwardingLinesKeptPerHostPeerScheme(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    This hop's lines are kept per (Host, peer, scheme, version): a request
    that differs in any of them gets its own, and the store is bounded.
    """
    from connserver._handlers import proxy as proxyModule

    proxy = ReverseProxy("http://10.1.2.3:9000", reactor=Clock())

    def head(host: bytes, peer: str, secure: bool, version: tuple[int, int]) -> bytes:
        request = Request(
            b"GET",
            b"/x",
            version,
            headers=Headers([(b"Host", host)]),
            peer=IPv4Address("TCP", peer, 5000),
            isSecure=secure,
        )
        result = proxy._requestHead(request)
        assert isinstance(result, bytes)
        return result

    first = head(b"a.example", "10.0.0.1", False, (1, 1))
    assert head(b"a.example", "10.0.0.1", False, (1, 1)) == first
    assert b"Forwarded: for=10.0.0.1;proto=http;host=a.example\r\n" in first
    other = head(b"b.example", "10.0.0.2", True, (1, 0))
    assert b"Host: b.example\r\nVia: 1.0 connserver\r\n" in other
    assert b"for=10.0.0.2;proto=https;host=b.example" in other
    assert b"X-Forwarded-For: 10.0.0.2\r\nX-Forwarded-Proto: https\r\n" in other
    assert len(proxy._hopCache) == 2

    monkeypatch.setattr(proxyModule, "_HOP_CACHE_SIZE", 3)
    for n in range(5):
        head(b"h%d.example" % n, "10.0.0.1", False, (1, 1))
        assert len(proxy._hopCache) <= 3
    # Still right after the store was emptied.
    assert head(b"a.example", "10.0.0.1", False, (1, 1)) == first


def test_clientForwardingFieldsAreNotKept() -> None:
    """Lines built on a client's X-Forwarded-For or Forwarded are per request."""
    proxy = ReverseProxy("http://10.1.2.3:9000", reactor=Clock())
    request = Request(
        b"GET",
        b"/x",
        headers=Headers([(b"Host", b"h"), (b"X-Forwarded-For", b"1.2.3.4")]),
        peer=IPv4Address("TCP", "10.0.0.1", 5000),
    )
    result = proxy._requestHead(request)
    assert isinstance(result, bytes)
    assert b"X-Forwarded-For: 1.2.3.4, 10.0.0.1\r\n" in result
    assert proxy._hopCache == {}


def test_responseOptionsKeptPerValueAndBounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from connserver._handlers import upstream
    from connserver._http.parser import ResponseParser

    def head(connection: bytes) -> object:
        parser = ResponseParser()
        parser.receiveData(
            b"HTTP/1.1 200 OK\r\nConnection: " + connection + b"\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        return parser.nextEvent()

    monkeypatch.setattr(upstream, "_optionsCache", {})
    monkeypatch.setattr(upstream, "_OPTIONS_CACHE_SIZE", 2)
    assert upstream.responseOptions(head(b"Keep-Alive, X-A")) == {  # type: ignore[arg-type]
        b"keep-alive",
        b"x-a",
    }
    for n in range(4):
        value = b"x-%d" % n
        assert upstream.responseOptions(head(value)) == {value}  # type: ignore[arg-type]
        assert len(upstream._optionsCache) <= 2
