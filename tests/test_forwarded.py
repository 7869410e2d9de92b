"""
``--trusted-proxies``: ``Forwarded`` (RFC 7239), ``X-Forwarded-For`` and
``X-Forwarded-Proto`` name the client only when the peer is trusted, the
right-most untrusted hop wins, and a malformed value is ignored.  The pure
parser table first, then the protocol on the in-memory harness (the
``Request``, the access log record, twisted.web's ``getClientAddress()``).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.address import HostnameAddress, IPv4Address, IPv6Address
from twisted.web.resource import Resource
from twisted.web.server import Request as WebRequest

from connserver import Request, Response, ServerConfig, WebResourceHandler
from connserver._http.forwarded import (
    FORWARDED_HEADERS,
    ClientHop,
    isTrusted,
    parseNetworks,
    resolveClient,
)
from connserver._http.headers import Headers
from connserver._http.records import RequestRecord
from connserver.tap import Options

from ._harness import connect

# The harness's peer is 127.0.0.1; 10.0.0.0/8 stands for the proxies.
TRUSTED = parseNetworks("127.0.0.0/8, 10.0.0.0/8, 2001:db8:ffff::/48")


def fields(*lines: tuple[bytes, bytes]) -> Headers:
    return Headers(lines)


FWD = b"forwarded"
XFF = b"x-forwarded-for"
XFP = b"x-forwarded-proto"


@pytest.mark.parametrize(
    "lines, expected",
    [
        pytest.param(
            [(FWD, b"for=192.0.2.60;proto=https;by=10.0.0.1")],
            ClientHop("192.0.2.60", None, "https"),
            id="rfc7239-4-single",
        ),
        pytest.param(
            [(FWD, b'For="[2001:db8:cafe::17]:4711"')],
            ClientHop("2001:db8:cafe::17", 4711, None),
            id="rfc7239-6-ipv6-quoted-port-name-case",
        ),
        pytest.param(
            [(FWD, b'for="192.0.2.43:47011"')],
            ClientHop("192.0.2.43", 47011, None),
            id="ipv4-quoted-port",
        ),
        pytest.param(
            [(FWD, b"for=192.0.2.43, for=198.51.100.17;proto=http, for=10.1.2.3")],
            ClientHop("198.51.100.17", None, "http"),
            id="chain-rightmost-untrusted",
        ),
        pytest.param(
            [(FWD, b"for=192.0.2.43"), (FWD, b"for=198.51.100.17, for=10.0.0.9")],
            ClientHop("198.51.100.17", None, None),
            id="rfc9110-5.3-lines-combine",
        ),
        pytest.param(
            [(FWD, b"for=10.0.0.7;proto=https, for=10.0.0.8")],
            ClientHop("10.0.0.7", None, "https"),
            id="all-trusted-leftmost",
        ),
        pytest.param(
            [(FWD, b"for=unknown, for=10.0.0.8")],
            ClientHop("unknown", None, None),
            id="rfc7239-6.2-unknown",
        ),
        pytest.param(
            [(FWD, b'for="_hidden:_port";proto=HTTPS')],
            ClientHop("_hidden", None, "https"),
            id="rfc7239-6.3-obfuscated",
        ),
        pytest.param(
            [(FWD, b'for="[2001:db8:ffff::1]", for="[2001:db8::2]:80", for=10.0.0.1')],
            ClientHop("2001:db8::2", 80, None),
            id="ipv6-trusted-skipped",
        ),
        pytest.param(
            [(FWD, b",, for=192.0.2.1 ;; proto=https ,")],
            ClientHop("192.0.2.1", None, "https"),
            id="rfc9110-5.6.1.2-empty-elements",
        ),
        pytest.param(
            [(FWD, b'for=192.0.2.1;host="a \\"b\\""')],
            ClientHop("192.0.2.1", None, None),
            id="quoted-pair",
        ),
        pytest.param(
            [(XFF, b"192.0.2.43, 198.51.100.17, 10.0.0.1")],
            ClientHop("198.51.100.17", None, None),
            id="xff-chain",
        ),
        pytest.param(
            [(XFF, b"192.0.2.43"), (XFF, b"198.51.100.17,10.0.0.1"), (XFP, b"https")],
            ClientHop("198.51.100.17", None, "https"),
            id="xff-lines-combine-proto",
        ),
        pytest.param(
            [(XFF, b"2001:db8::5, [2001:db8::6]:443, 198.51.100.9:5000, 127.0.0.1")],
            ClientHop("198.51.100.9", 5000, None),
            id="xff-forms",
        ),
        pytest.param(
            [(XFF, b"[2001:db8::6]:443, 10.0.0.1")],
            ClientHop("2001:db8::6", 443, None),
            id="xff-bracketed-ipv6",
        ),
        pytest.param(
            [(XFF, b"10.0.0.3, 127.0.0.1")],
            ClientHop("10.0.0.3", None, None),
            id="xff-all-trusted-leftmost",
        ),
        pytest.param(
            [(XFF, b"192.0.2.1, 198.51.100.2"), (XFP, b"https, http")],
            ClientHop("198.51.100.2", None, "http"),
            id="xfp-list-rightmost",
        ),
        pytest.param(
            [(XFF, b"192.0.2.1"), (XFP, b"http"), (XFP, b" https ,")],
            ClientHop("192.0.2.1", None, "https"),
            id="xfp-lines-rightmost",
        ),
        pytest.param(
            [(XFF, b"192.0.2.1"), (XFP, b"ht tp")],
            ClientHop("192.0.2.1", None, None),
            id="xfp-junk-keeps-address",
        ),
        pytest.param(
            [(XFF, b"192.0.2.1"), (XFP, b"wss")],
            ClientHop("192.0.2.1", None, None),
            id="xfp-not-http-ignored",
        ),
        pytest.param(
            [(FWD, b"for=192.0.2.1;proto=ht%tp")],
            ClientHop("192.0.2.1", None, None),
            id="proto-junk-keeps-address",
        ),
        # A malformed hop left of the client's was written by the client: it
        # is never parsed (the peer must not become the client).
        pytest.param(
            [(XFF, b"garbage, 203.0.113.9")],
            ClientHop("203.0.113.9", None, None),
            id="xff-left-garbage",
        ),
        pytest.param(
            [(XFF, b"[::1%evil, 203.0.113.9, 10.0.0.1"), (XFP, b"http")],
            ClientHop("203.0.113.9", None, "http"),
            id="xff-left-garbage-trusted-right",
        ),
        pytest.param(
            [(FWD, b'for="garbage, for=203.0.113.9;proto=https')],
            ClientHop("203.0.113.9", None, "https"),
            id="fwd-left-unterminated-quote",
        ),
        pytest.param(
            [(FWD, b"junk;;=x"), (FWD, b"for=203.0.113.9, for=10.0.0.1")],
            ClientHop("203.0.113.9", None, None),
            id="fwd-left-junk-line",
        ),
        pytest.param(
            [(FWD, b'for=192.0.2.1;host="a,\\"b,", for=10.0.0.1')],
            ClientHop("192.0.2.1", None, None),
            id="fwd-quoted-comma-and-quote",
        ),
        pytest.param(
            [(FWD, b'for=192.0.2.1;host="a\\\\", for=10.0.0.1')],
            ClientHop("192.0.2.1", None, None),
            id="fwd-quoted-backslash-at-end",
        ),
        # IPv4-mapped IPv6 is the IPv4 address (as isTrusted reads it).
        pytest.param(
            [(XFF, b"198.51.100.7, ::ffff:10.0.0.1")],
            ClientHop("198.51.100.7", None, None),
            id="xff-mapped-trusted-skipped",
        ),
        pytest.param(
            [(XFF, b"::ffff:198.51.100.7")],
            ClientHop("198.51.100.7", None, None),
            id="xff-mapped-unmapped",
        ),
        pytest.param(
            [(FWD, b'for="[::ffff:198.51.100.7]:80"')],
            ClientHop("198.51.100.7", 80, None),
            id="fwd-mapped-unmapped",
        ),
        pytest.param(
            [(XFP, b"https")],
            ClientHop(None, None, "https"),
            id="xfp-alone",
        ),
        pytest.param([], None, id="none"),
        pytest.param([(XFF, b" , ")], None, id="xff-empty"),
    ],
)
def test_resolveClient(lines: list[tuple[bytes, bytes]], expected: Any) -> None:
    assert resolve(lines) == expected


def resolve(lines: list[tuple[bytes, bytes]]) -> ClientHop | None:
    """``lines`` resolved in the family they are written in."""
    family = "forwarded" if any(name == FWD for name, _ in lines) else XFF.decode()
    return resolveClient(fields(*lines), TRUSTED, family)


@pytest.mark.parametrize(
    "lines",
    [
        pytest.param([(FWD, b"for=2001:db8::1")], id="ipv6-unbracketed"),
        pytest.param([(FWD, b"for=192.0.2.1:80")], id="port-unquoted"),
        pytest.param([(FWD, b"for=192.0.2.1;for=192.0.2.2")], id="duplicate-param"),
        pytest.param([(FWD, b"for=192.0.2.1 for=192.0.2.2")], id="no-separator"),
        pytest.param([(FWD, b'for="192.0.2.1')], id="unterminated-quote"),
        pytest.param([(FWD, b"for=example.com")], id="hostname"),
        pytest.param([(FWD, b"for=999.0.2.1")], id="bad-ipv4"),
        pytest.param([(FWD, b'for="[2001:db8::1"')], id="no-closing-bracket"),
        pytest.param([(FWD, b'for="192.0.2.1:99999"')], id="port-too-large"),
        pytest.param([(FWD, b"for")], id="no-value"),
        pytest.param([(FWD, b"for=192.0.2.1"), (FWD, b"junk")], id="one-bad-line"),
        pytest.param([(XFF, b"192.0.2.1, not-an-address")], id="xff-junk"),
        pytest.param([(XFF, b"unknown")], id="xff-rfc7239-identifier"),
        # Malformed at the client's hop, or right of it: the peer stays.
        pytest.param([(XFF, b"203.0.113.9, garbage")], id="xff-right-garbage"),
        pytest.param([(XFF, b"garbage, 10.0.0.1")], id="xff-garbage-is-the-hop"),
        pytest.param(
            [(FWD, b'for="garbage, for=10.0.0.1')], id="fwd-garbage-is-the-hop"
        ),
        pytest.param([(FWD, b"for=203.0.113.9, for=10.0.0.1 x")], id="fwd-right-junk"),
        # A scope id names an interface of the proxy, and its text is
        # arbitrary (it would reach the access log).
        pytest.param([(XFF, b"[::1%evil 200 x]")], id="xff-zone-bracketed"),
        pytest.param([(XFF, b"fe80::1%eth0")], id="xff-zone"),
        pytest.param([(FWD, b'for="[fe80::1%25eth0]:80"')], id="fwd-zone"),
        pytest.param([(XFF, b"[192.0.2.1]")], id="xff-bracketed-ipv4"),
    ],
)
def test_malformedFieldsAreIgnored(lines: list[tuple[bytes, bytes]]) -> None:
    assert resolve(lines) is None


SPOOFED = fields(
    (FWD, b"for=6.6.6.6;proto=https"),
    (XFF, b"203.0.113.9"),
    (XFP, b"http"),
)


def test_onlyTheChosenFamilyCounts() -> None:
    """
    A proxy passes on the family it does not write as the client sent it
    (nginx's documented X-Forwarded-For configuration passes Forwarded),
    so only the configured family is read, as nginx's real_ip_header.
    """
    assert resolveClient(SPOOFED, TRUSTED) == ClientHop("203.0.113.9", None, "http")
    assert resolveClient(SPOOFED, TRUSTED, "x-forwarded-for") == ClientHop(
        "203.0.113.9", None, "http"
    )
    assert resolveClient(SPOOFED, TRUSTED, "forwarded") == ClientHop(
        "6.6.6.6", None, "https"
    )
    forwardedOnly = fields((FWD, b"for=6.6.6.6;proto=https"))
    assert resolveClient(forwardedOnly, TRUSTED, "x-forwarded-for") is None
    xffOnly = fields((XFF, b"203.0.113.9"), (XFP, b"https"))
    assert resolveClient(xffOnly, TRUSTED, "forwarded") is None


def test_forwardedHeaderConfigAndFlag() -> None:
    assert ServerConfig().forwardedHeader == "x-forwarded-for"
    assert ServerConfig(forwardedHeader="Forwarded").forwardedHeader == "forwarded"
    with pytest.raises(ValueError, match="x-forwarded-for or forwarded"):
        ServerConfig(forwardedHeader="x-real-ip")
    with pytest.raises(ValueError, match="forwardedHeader"):
        ServerConfig(forwardedHeader=None)  # type: ignore[arg-type]
    options = Options()
    options.parseOptions(["--forwarded-header", "forwarded"])
    assert options["config"].forwardedHeader == "forwarded"
    options = Options()
    with pytest.raises(Exception, match=r"--forwarded-header 'x-real-ip': must be"):
        options.parseOptions(["--forwarded-header", "x-real-ip"])


@pytest.mark.parametrize(
    "host, trusted",
    [
        ("127.0.0.1", True),
        ("10.255.0.1", True),
        ("192.0.2.1", False),
        ("::ffff:10.0.0.1", True),  # a dual-stack listener's IPv4 peer
        ("2001:db8:ffff:1::1", True),
        ("2001:db8::1", False),
        ("/run/proxy.sock", False),
        ("-", False),
    ],
)
def test_isTrusted(host: str, trusted: bool) -> None:
    assert isTrusted(host, TRUSTED) is trusted


def test_networksAreParsedOnceInTheConfig() -> None:
    config = ServerConfig(trustedProxies="10.1.2.3/8, ::1 ,192.0.2.7")
    assert config.trustedProxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("192.0.2.7/32"),
    )
    assert ServerConfig().trustedProxies == ()
    assert ServerConfig(trustedProxies=["10.0.0.0/8"]).trustedProxies == (
        ipaddress.ip_network("10.0.0.0/8"),
    )
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33' is not an address"):
        ServerConfig(trustedProxies="10.0.0.0/33")
    with pytest.raises(ValueError, match="trustedProxies"):
        ServerConfig(trustedProxies=8)  # type: ignore[arg-type]


def test_cliFlag() -> None:
    options = Options()
    options.parseOptions(["--trusted-proxies", "127.0.0.0/8,::1"])
    assert options["config"].trustedProxies == parseNetworks("127.0.0.0/8,::1")
    options = Options()
    with pytest.raises(Exception, match=r"--trusted-proxies 'bogus': .*'bogus'"):
        options.parseOptions(["--trusted-proxies", "bogus"])


# -- on a connection -----------------------------------------------------


def serve(
    trusted: str | None, request: bytes, **options: Any
) -> tuple[list[Request], list[RequestRecord], bytes]:
    seen: list[Request] = []
    records: list[RequestRecord] = []

    def handler(request: Request) -> Response:
        seen.append(request)
        return Response(200, body=b"ok")

    conn = connect(handler, trustedProxies=trusted or (), **options)
    conn.factory.requestObservers.append(records.append)
    conn.send(request)
    return seen, records, conn.take()


REQUEST = (
    b"GET / HTTP/1.1\r\nHost: x\r\n"
    b"X-Forwarded-For: 192.0.2.9, 203.0.113.7\r\nX-Forwarded-Proto: https\r\n\r\n"
)


def test_trustedPeerNamesTheClient() -> None:
    seen, records, out = serve("127.0.0.1", REQUEST)
    assert out.startswith(b"HTTP/1.1 200 ")
    [request] = seen
    assert request.clientAddress == IPv4Address("TCP", "203.0.113.7", 0)
    assert request.scheme == "https"
    # The connection's facts are unchanged.
    assert request.peer == IPv4Address("TCP", "127.0.0.1", 40000)
    assert request.isSecure is False
    assert [record.peerHost for record in records] == ["203.0.113.7"]


def test_untrustedPeerFieldsAreIgnored() -> None:
    seen, records, _ = serve("10.0.0.0/8", REQUEST)
    [request] = seen
    assert request.clientAddress == request.peer
    assert request.scheme == "http"
    assert [record.peerHost for record in records] == ["127.0.0.1"]


def test_withoutTrustedProxiesFieldsAreIgnored() -> None:
    seen, records, _ = serve(None, REQUEST)
    [request] = seen
    assert request.clientAddress is request.peer
    assert request.scheme == "http"
    assert [record.peerHost for record in records] == ["127.0.0.1"]


def test_malformedFieldKeepsThePeerNever500() -> None:
    seen, records, out = serve(
        "127.0.0.1",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: [::1\r\n\r\n",
    )
    assert out.startswith(b"HTTP/1.1 200 ")
    [request] = seen
    assert request.clientAddress is request.peer
    assert [record.peerHost for record in records] == ["127.0.0.1"]


def test_aScopeIdCannotReachTheLog() -> None:
    """``[::1%evil 200 x]`` would put text of the client's in the log line."""
    seen, records, out = serve(
        "127.0.0.1",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: [::1%evil 200 x]\r\n\r\n",
    )
    assert out.startswith(b"HTTP/1.1 200 ")
    [request] = seen
    assert request.clientAddress is request.peer
    assert [record.peerHost for record in records] == ["127.0.0.1"]


def test_eachRequestOfAConnectionIsResolvedAlone() -> None:
    seen, records, _ = serve(
        "127.0.0.1",
        b'GET /1 HTTP/1.1\r\nHost: x\r\nForwarded: for="[2001:db8::7]:1234";proto=https\r\n\r\n'
        b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /3 HTTP/1.1\r\nHost: x\r\nForwarded: for=_gateway\r\n\r\n",
        forwardedHeader="forwarded",
    )
    assert [r.clientAddress for r in seen] == [
        IPv6Address("TCP", "2001:db8::7", 1234),
        IPv4Address("TCP", "127.0.0.1", 40000),
        HostnameAddress(b"_gateway", 0),
    ]
    assert [r.scheme for r in seen] == ["https", "http", "http"]
    assert [record.peerHost for record in records] == [
        "2001:db8::7",
        "127.0.0.1",
        "_gateway",
    ]


def test_twistedWebSeesTheClient() -> None:
    seen: list[tuple[Any, bool, bytes]] = []

    class Page(Resource):
        isLeaf = True

        def render_GET(self, request: WebRequest) -> bytes:
            seen.append(
                (
                    request.getClientAddress(),
                    request.isSecure(),
                    # The scheme of the URLs twisted.web builds.
                    request.prePathURL().split(b":")[0],
                )
            )
            return b"ok"

    conn = connect(
        WebResourceHandler(Page()),
        trustedProxies="127.0.0.0/8",
        forwardedHeader="forwarded",
    )
    conn.send(
        b"GET /p HTTP/1.1\r\nHost: example.org\r\n"
        b"Forwarded: for=198.51.100.17;proto=https\r\n\r\n"
    )
    assert conn.take().startswith(b"HTTP/1.1 200 ")
    assert seen == [
        (
            IPv4Address("TCP", "198.51.100.17", 0),
            True,
            b"https",
        )
    ]


def test_handMadeRequestDefaultsToThePeer() -> None:
    peer = IPv4Address("TCP", "192.0.2.1", 5000)
    request = Request(b"GET", b"/", peer=peer, isSecure=True)
    assert request.clientAddress is peer
    assert request.scheme == "https"
    assert Request(b"GET", b"/").scheme == "http"
    other = IPv6Address("TCP", "2001:db8::1", 0)
    request = Request(b"GET", b"/", peer=peer, clientAddress=other, scheme="http")
    assert (request.clientAddress, request.scheme) == (other, "http")


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_behindThePROXYProtocolTheNamedPeerIsTheOneTrusted() -> None:
    """
    A chain ending in the PROXY protocol: the header names the proxy before
    (10.1.1.1, trusted), whose X-Forwarded-For names the client.  The
    decision waits for the header, which Twisted parses after
    ``connectionMade``.
    """
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    from connserver import ConnectionFactory

    from ._sockets import bounded, connect, connserverTimers

    seen: list[Request] = []

    def handler(request: Request) -> Response:
        seen.append(request)
        return Response(200, body=b"ok")

    factory = ConnectionFactory(
        handler, ServerConfig(trustedProxies="10.0.0.0/8"), reactor=reactor
    )
    endpoint = serverFromString(reactor, "haproxy:tcp:0:interface=127.0.0.1")
    port = await bounded(endpoint.listen(factory))
    try:
        client = await connect(port.getHost().port)
        client.write(
            b"PROXY TCP4 10.1.1.1 127.0.0.1 56324 8080\r\n"
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"X-Forwarded-For: 198.51.100.23\r\n\r\n"
        )
        await client.waitClosed()
        assert client.data.startswith(b"HTTP/1.1 200 ")
        [request] = seen
        assert request.peer.host == "10.1.1.1"  # type: ignore[union-attr]
        assert request.clientAddress == IPv4Address("TCP", "198.51.100.23", 0)
    finally:
        await bounded(defer.maybeDeferred(port.stopListening))
        await bounded(factory.drain(2.0))
    assert connserverTimers() == []


def test_httpsRedirectTrustsTheForwardedScheme() -> None:
    """Behind a TLS-terminating trusted proxy, --redirect-to-https must not loop."""
    from connserver._handlers.routing import HTTPSRedirect

    conn = connect(
        HTTPSRedirect(lambda request: Response(200, body=b"in"), 443),
        trustedProxies="127.0.0.1",
    )
    conn.send(b"GET /a HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\n\r\n")
    assert conn.take().startswith(b"HTTP/1.1 200 ")
    conn.send(b"GET /a HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: http\r\n\r\n")
    out = conn.take()
    assert out.startswith(b"HTTP/1.1 308 ")
    assert b"\r\nLocation: https://x/a\r\n" in out


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_overTLSTheSchemeIsHttps() -> None:
    from ._sockets import connect as connectSocket
    from ._sockets import finish, serve

    seen: list[Request] = []

    def handler(request: Request) -> Response:
        seen.append(request)
        return Response(200, body=b"ok")

    server = await serve(handler, tls=True)
    try:
        client = await connectSocket(server)
        client.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await client.waitClosed()
        [request] = seen
        assert (request.scheme, request.isSecure) == ("https", True)
        assert request.clientAddress is request.peer
    finally:
        await finish(server)


@given(
    value=st.binary(max_size=80)
    | st.lists(
        st.sampled_from(
            [
                b"for=",
                b"192.0.2.1",
                b"10.0.0.1",
                b'"',
                b"\\",
                b",",
                b";",
                b" ",
                b"[",
                b"]",
                b"::1",
                b"%",
                b":80",
                b"proto=",
                b"https",
                b"_x",
                b"unknown",
            ]
        ),
        max_size=20,
    ).map(b"".join),
    family=st.sampled_from(FORWARDED_HEADERS),
)
def test_anyValueResolvesToAnAddressOrNothing(value: bytes, family: str) -> None:
    """Whatever a client writes: no exception, and only address text out."""
    hop = resolveClient(
        fields((FWD, value), (XFF, value), (XFP, value)), TRUSTED, family
    )
    if hop is not None:
        assert hop.scheme in (None, "http", "https")
        if hop.host is not None:
            assert re.fullmatch(r"[0-9A-Za-z.:_-]+", hop.host), hop.host
