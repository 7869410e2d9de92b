"""
The client behind trusted proxies: ``Forwarded`` (RFC 7239), else
``X-Forwarded-For`` and ``X-Forwarded-Proto``.

These fields are whatever the sender wrote, so they count only when the
connection's peer is a proxy the operator trusts (``--trusted-proxies``).
Each proxy appends the address it received the request from; reading the
hops from right to left, the trusted ones are skipped and the first
untrusted hop is the client (anything to its left was written by the client
itself and proves nothing).  If every hop is trusted, the left-most is the
client.  A value that does not parse is ignored as a whole (the peer stays
the client): a proxy that is trusted writes well-formed values, so a
malformed one says nothing reliable, and it is never worth a 500.

Pure module: nothing here imports ``twisted.internet``; the protocol calls
:func:`resolveClient` once per request, and only on connections whose peer
:func:`isTrusted` (checked once per connection).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from ._headers import Headers

__all__ = ["ClientHop", "Network", "isTrusted", "parseNetworks", "resolveClient"]

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
            continue
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
# RFC 3986 §3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")


class _Malformed(Exception):
    """A forwarding field that does not parse: it is ignored as a whole."""


def _elements(values: list[bytes]) -> list[dict[bytes, str]]:
    """
    ``Forwarded`` field lines as a list of elements, each a dict of its
    lowercased parameter names to values (quoted strings unquoted).  Lines
    combine as one list (RFC 9110 §5.3); empty list elements are ignored
    (RFC 9110 §5.6.1.2).
    """
    data = b",".join(values)
    elements: list[dict[bytes, str]] = []
    pos = 0
    end = len(data)
    current: dict[bytes, str] = {}
    while True:
        # Skip blanks; an empty pair or element is allowed by the grammar.
        while pos < end and data[pos] in b" \t":
            pos += 1
        if pos < end and data[pos] not in b",;":
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
            if current:
                elements.append(current)
            return elements
        separator = data[pos]
        pos += 1
        if separator == ord(","):
            if current:
                elements.append(current)
            current = {}
        elif separator != ord(";"):
            raise _Malformed


def _node(text: str) -> tuple[str, int | None]:
    """
    An RFC 7239 §6 node (``for=`` value): ``198.51.100.17``,
    ``"[2001:db8::1]:4711"``, ``unknown``, ``_hidden:_port``.
    """
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise _Malformed
        host, rest = text[1:close], text[close + 1 :]
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise _Malformed from None
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


def _scheme(text: str) -> str:
    text = text.strip()
    if _SCHEME_RE.fullmatch(text) is None:
        raise _Malformed
    return text.lower()


def _pick(hops: list[str], trusted: tuple[Network, ...]) -> int:
    """The index of the right-most untrusted hop, or 0 if all are trusted."""
    for index in range(len(hops) - 1, -1, -1):
        if not isTrusted(hops[index], trusted):
            return index
    return 0


def _fromForwarded(
    values: list[bytes], trusted: tuple[Network, ...]
) -> ClientHop | None:
    elements = _elements(values)
    if not elements:
        return None
    nodes = []
    for element in elements:
        # An element without for= names no node: the hop is unknown.
        text = element.get(b"for")
        nodes.append(_node(text) if text is not None else ("unknown", None))
        proto = element.get(b"proto")
        if proto is not None:
            _scheme(proto)
    index = _pick([host for host, _ in nodes], trusted)
    host, port = nodes[index]
    proto = elements[index].get(b"proto")
    return ClientHop(host, port, _scheme(proto) if proto is not None else None)


def _xffHop(text: str) -> tuple[str, int | None]:
    """One ``X-Forwarded-For`` entry: an address, with a port or IPv6 brackets."""
    if text.startswith("["):
        return _node(text)
    try:
        return str(ipaddress.ip_address(text)), None
    except ValueError:
        pass
    host, port = _node(text)
    if host == "unknown" or host.startswith("_"):
        # RFC 7239 identifiers are not X-Forwarded-For's.
        raise _Malformed
    return host, port


def _split(values: list[bytes]) -> list[str]:
    items = [
        item.strip(b" \t").decode("latin-1") for item in b",".join(values).split(b",")
    ]
    return [item for item in items if item]


def _fromXForwarded(
    forValues: list[bytes], protoValues: list[bytes], trusted: tuple[Network, ...]
) -> ClientHop | None:
    hops = [_xffHop(item) for item in _split(forValues)] if forValues else []
    schemes = [_scheme(item) for item in _split(protoValues)] if protoValues else []
    if not hops and not schemes:
        return None
    host: str | None = None
    port: int | None = None
    scheme: str | None = None
    index = 0
    if hops:
        index = _pick([hop for hop, _ in hops], trusted)
        host, port = hops[index]
    if len(schemes) == 1:
        scheme = schemes[0]
    elif schemes:
        # A chain of proxies may append one scheme per hop, as for the
        # addresses: take the chosen hop's.  Without that pairing a list
        # says nothing reliable.
        if len(schemes) != len(hops):
            raise _Malformed
        scheme = schemes[index]
    return ClientHop(host, port, scheme)


def resolveClient(headers: Headers, trusted: tuple[Network, ...]) -> ClientHop | None:
    """
    The client the forwarding fields of a request from a trusted peer name,
    or None when they name none (absent or malformed: the peer stays the
    client).  ``Forwarded`` wins over the ``X-Forwarded-*`` fields when it is
    present (it is the standard; RFC 7239 §1 replaces them).
    """
    try:
        forwarded = headers.getAll(b"forwarded")
        if forwarded:
            return _fromForwarded(forwarded, trusted)
        forValues = headers.getAll(b"x-forwarded-for")
        protoValues = headers.getAll(b"x-forwarded-proto")
        if forValues or protoValues:
            return _fromXForwarded(forValues, protoValues, trusted)
    except _Malformed:
        return None
    return None
