"""
The client behind trusted proxies: ``X-Forwarded-For`` and
``X-Forwarded-Proto``, or ``Forwarded`` (RFC 7239), whichever one family
the operator chose (``--forwarded-header``).

These fields are whatever the sender wrote, so they count only when the
connection's peer is a proxy the operator trusts (``--trusted-proxies``),
and only the family that proxy writes: a proxy passes the other family on
as the client sent it.  Each proxy appends the address it received the
request from; reading the hops from right to left, the trusted ones are
skipped and the first untrusted hop is the client (anything to its left was
written by the client itself and proves nothing, so it is never parsed).
If every hop is trusted, the left-most is the client.  A hop that does not
parse at or right of the client's voids the address (the peer stays the
client): a trusted proxy writes well-formed values, so a malformed one says
nothing reliable, and it is never worth a 500.

Pure module: nothing here imports ``twisted.internet``; the protocol calls
:func:`resolveClient` once per request, and only on connections whose peer
:func:`isTrusted` (checked once per connection).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from connserver._http.headers import Headers

__all__ = [
    "FORWARDED_HEADERS",
    "ClientHop",
    "Network",
    "isTrusted",
    "parseNetworks",
    "resolveClient",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_OFF_WORDS = frozenset({"", "none", "off"})


def parseNetworks(value: str | Iterable[str | Network]) -> tuple[Network, ...]:
    """
    ``"10.0.0.0/8, 2001:db8::/32, 127.0.0.1"`` (or an iterable of such
    strings or of networks) as networks; a bare address is a /32 or /128.
    Host bits are allowed (``10.1.2.3/8`` is ``10.0.0.0/8``), as nginx's
    ``set_real_ip_from`` allows them.  ``ValueError`` names the bad entry.
    """
    if isinstance(value, str):
        if value.strip().lower() in _OFF_WORDS:
            return ()
        items: Iterable[str | Network] = value.split(",")
    elif isinstance(value, Iterable):
        items = value
    else:
        raise ValueError(f"expected CIDR text, not {value!r}")
    networks: list[Network] = []
    for item in items:
        if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
            networks.append(item)
            continue
        if not isinstance(item, str):
            raise ValueError(f"expected CIDR text, not {item!r}")
        text = item.strip()
        if not text:
            # ",," or "10.0.0.0/8,": a slip that must not silently mean
            # fewer trusted proxies than intended.
            raise ValueError("an empty entry in the list")
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"{text!r} is not an address or CIDR network") from None
    return tuple(networks)


def isTrusted(host: object, networks: tuple[Network, ...]) -> bool:
    """Whether ``host`` (address text, or an ``ip_address``) is in ``networks``."""
    if isinstance(host, str):
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            # A Unix socket's peer, a hostname, an obfuscated node.
            return False
    elif isinstance(host, ipaddress.IPv4Address | ipaddress.IPv6Address):
        address = host
    else:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        # A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d.
        mapped = address.ipv4_mapped
        if mapped is not None:
            address = mapped
    return any(address in network for network in networks)


@dataclass(frozen=True, slots=True)
class ClientHop:
    """The client as the proxies name it."""

    #: Address text (``"203.0.113.7"``, ``"2001:db8::1"``), or an RFC 7239
    #: §6.2-6.3 identifier (``"unknown"``, ``"_hidden"``); None when only the
    #: scheme was forwarded (the peer stays the client).
    host: str | None
    #: The port when the proxy gave a numeric one.
    port: int | None
    #: The lowercased scheme the client used (``"https"``), or None.
    scheme: str | None


# RFC 7239 §4: forwarded-pair = token "=" value; value = token / quoted-string
# (RFC 9110 §5.6.2, §5.6.4).
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_PAIR_RE = re.compile(
    rb"[ \t]*(" + _TOKEN + rb")=(" + _TOKEN + rb"|" + _QUOTED + rb")[ \t]*"
)
_UNQUOTE_RE = re.compile(rb"\\(.)", re.S)
# RFC 7239 §6: obfnode = "_" 1*( ALPHA / DIGIT / "." / "_" / "-");
# node-port = port / obfport (the same shape).
_OBFUSCATED_RE = re.compile(r"_[A-Za-z0-9._-]+")
_PORT_RE = re.compile(r"[0-9]{1,5}")


class _Malformed(Exception):
    """A forwarding value that does not parse."""


#: The values ``ServerConfig.forwardedHeader`` takes.
FORWARDED_HEADERS = ("x-forwarded-for", "forwarded")

# Only these schemes name what the client used; anything else is ignored
# (the connection's scheme stays), never a reason to drop the address.
_SCHEMES = {"http": "http", "https": "https"}


def _element(data: bytes) -> dict[bytes, str]:
    """
    One ``Forwarded`` element (``for=...;proto=...``) as a dict of its
    lowercased parameter names to values (quoted strings unquoted); empty
    pairs are allowed by the grammar (RFC 7239 §4).
    """
    current: dict[bytes, str] = {}
    pos = 0
    end = len(data)
    while True:
        while pos < end and data[pos] in b" \t":
            pos += 1
        if pos < end and data[pos] != ord(";"):
            match = _PAIR_RE.match(data, pos)
            if match is None:
                raise _Malformed
            name = match.group(1).lower()
            raw = match.group(2)
            if raw.startswith(b'"'):
                raw = _UNQUOTE_RE.sub(rb"\1", raw[1:-1])
            if name in current:
                # RFC 7239 §4: a parameter MUST NOT occur more than once per
                # forwarded-element.
                raise _Malformed
            current[name] = raw.decode("latin-1")
            pos = match.end()
        if pos >= end:
            return current
        if data[pos] != ord(";"):
            raise _Malformed
        pos += 1


def _elementsFromTheRight(data: bytes) -> Iterator[bytes]:
    """
    The ``Forwarded`` list's elements, right-most first, as raw bytes.

    Read from the right so that whatever the client wrote on the left (an
    unterminated quote, garbage) is never looked at unless every hop to its
    right is trusted: a quoted string is matched backwards (a ``"`` after an
    odd number of backslashes is a quoted-pair), and a comma outside one
    ends the element (RFC 9110 §5.6.1, §5.6.4).
    """
    end = pos = len(data)
    while True:
        comma = data.rfind(b",", 0, pos)
        quote = data.rfind(b'"', comma + 1, pos)
        if quote < 0:
            yield data[comma + 1 : end]
            if comma < 0:
                return
            end = pos = comma
            continue
        # The end of a quoted string: find where it opens.
        while True:
            quote = data.rfind(b'"', 0, quote)
            if quote < 0:
                raise _Malformed
            slashes = 0
            while data[quote - slashes - 1 : quote - slashes] == b"\\":
                slashes += 1
            if slashes % 2 == 0:
                break
        pos = quote


def _address(text: str) -> str:
    """
    An IP address as text, normalised; an IPv4-mapped IPv6 address as its
    IPv4 address (as :func:`isTrusted` reads it).  A scope id
    (``fe80::1%eth0``) is refused: it names an interface of the proxy, not
    a client, and its text is arbitrary (it would reach the access log).
    """
    if "%" in text:
        raise _Malformed
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise _Malformed from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(address)


def _node(text: str) -> tuple[str, int | None]:
    """
    An RFC 7239 §6 node (``for=`` value): ``198.51.100.17``,
    ``"[2001:db8::1]:4711"``, ``unknown``, ``_hidden:_port``.
    """
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or ":" not in text[1:close]:
            # An IPv6 address (with colons) goes in brackets, nothing else.
            raise _Malformed
        host, rest = _address(text[1:close]), text[close + 1 :]
    else:
        host, colon, port = text.partition(":")
        rest = colon + port
        if host.lower() == "unknown":
            host = "unknown"
        elif _OBFUSCATED_RE.fullmatch(host) is None:
            try:
                host = str(ipaddress.IPv4Address(host))
            except ValueError:
                # An IPv6 address must be in brackets (RFC 7239 §6).
                raise _Malformed from None
    if not rest:
        return host, None
    if not rest.startswith(":"):
        raise _Malformed
    port = rest[1:]
    if _PORT_RE.fullmatch(port):
        number = int(port)
        if number > 65535:
            raise _Malformed
        return host, number
    if _OBFUSCATED_RE.fullmatch(port):
        return host, None
    raise _Malformed


def _fromForwarded(
    values: list[bytes], trusted: tuple[Network, ...]
) -> ClientHop | None:
    chosen: tuple[str, int | None, str | None] | None = None
    for raw in _elementsFromTheRight(b",".join(values)):
        if not raw.strip(b" \t"):
            # RFC 9110 §5.6.1.2: empty list elements are ignored.
            continue
        element = _element(raw)
        # An element without for= names no node: the hop is unknown.
        text = element.get(b"for")
        host, port = _node(text) if text is not None else ("unknown", None)
        proto = element.get(b"proto")
        # The element's proto is the scheme its proxy received the request
        # over from that node (RFC 7239 §5.4).
        chosen = (host, port, _SCHEMES.get(proto.lower()) if proto else None)
        if not isTrusted(host, trusted):
            break
    if chosen is None:
        return None
    return ClientHop(*chosen)


def _xffHop(text: str) -> tuple[str, int | None]:
    """One ``X-Forwarded-For`` entry: an address, with a port or IPv6 brackets."""
    if text.startswith("["):
        return _node(text)
    if text.count(":") != 1:
        # An address alone (IPv6 has several colons, IPv4 none).
        return _address(text), None
    host, port = _node(text)
    if host == "unknown" or host.startswith("_"):
        # RFC 7239 identifiers are not X-Forwarded-For's.
        raise _Malformed
    return host, port


def _fromXForwarded(
    forValues: list[bytes], protoValues: list[bytes], trusted: tuple[Network, ...]
) -> ClientHop | None:
    host: str | None = None
    port: int | None = None
    scheme: str | None = None
    if forValues:
        items = b",".join(forValues).split(b",")
        try:
            for item in reversed(items):
                text = item.strip(b" \t").decode("latin-1")
                if not text:
                    continue
                host, port = _xffHop(text)
                if not isTrusted(host, trusted):
                    break
        except _Malformed:
            # At or right of the client's hop: nothing reliable names it.
            host = port = None
    if protoValues:
        # The right-most value: the one the nearest trusted proxy set (it
        # must overwrite what the client sent, see docs/deployment.md).
        for item in reversed(b",".join(protoValues).split(b",")):
            value = item.strip(b" \t")
            if value:
                scheme = _SCHEMES.get(value.decode("latin-1").lower())
                break
    if host is None and scheme is None:
        return None
    return ClientHop(host, port, scheme)


def resolveClient(
    headers: Headers,
    trusted: tuple[Network, ...],
    field: str = "x-forwarded-for",
) -> ClientHop | None:
    """
    The client the forwarding fields of a request from a trusted peer name,
    or None when they name none (absent or malformed: the peer stays the
    client).

    Only one family counts, ``field`` (``ServerConfig.forwardedHeader``), as
    nginx's ``real_ip_header``: with ``"x-forwarded-for"``,
    ``X-Forwarded-For`` names the client and ``X-Forwarded-Proto`` the
    scheme, and ``Forwarded`` is ignored; with ``"forwarded"``, only
    ``Forwarded`` counts.  A proxy passes the family it does not write
    through untouched, so reading it would let the client name itself.

    Hops are read from the right and the first untrusted one is the client;
    a malformed hop at or right of it voids the address (the peer stays),
    anything to its left is never parsed.  A scheme other than ``http`` or
    ``https`` is ignored.
    """
    if field == "forwarded":
        forwarded = headers.getAll(b"forwarded")
        if not forwarded:
            return None
        try:
            return _fromForwarded(forwarded, trusted)
        except _Malformed:
            return None
    forValues = headers.getAll(b"x-forwarded-for")
    protoValues = headers.getAll(b"x-forwarded-proto")
    if forValues or protoValues:
        return _fromXForwarded(forValues, protoValues, trusted)
    return None
