"""
Header fields over bytes, the RFC 9110 list rule, and connection options.

Pure module: nothing here imports ``twisted.internet``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence

__all__ = [
    "HOP_BY_HOP",
    "TOKEN_RE",
    "Headers",
    "connectionOptions",
    "isToken",
    "removeHopByHop",
    "splitList",
]

# RFC 9110 §5.6.2: token = 1*tchar
# tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
#         "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
TOKEN_RE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

#: Fields that are hop-by-hop by definition (RFC 9110 §7.6.1, RFC 9112 §7,
#: RFC 9110 §11.7), plus the obsolete Proxy-Connection that clients still send.
HOP_BY_HOP: frozenset[bytes] = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"transfer-encoding",
        b"trailer",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
    }
)


def isToken(value: bytes) -> bool:
    """True if ``value`` is an RFC 9110 §5.6.2 token."""
    return TOKEN_RE.fullmatch(value) is not None


class Headers:
    """
    An ordered collection of header fields.

    Names compare case-insensitively (RFC 9110 §5.1) but keep the spelling
    they were added with, for the wire.  Repeated fields stay in order, as
    separate lines; :meth:`getAll` returns every line's value.
    """

    __slots__ = ("_fields",)

    def __init__(self, fields: Iterable[tuple[bytes, bytes]] = ()) -> None:
        # (lowercased name, name as given, value)
        self._fields: list[tuple[bytes, bytes, bytes]] = [
            (name.lower(), name, value) for name, value in fields
        ]

    @classmethod
    def _fromLowered(cls, fields: list[tuple[bytes, bytes, bytes]]) -> Headers:
        """Adopt a list the parser already lowercased, without copying."""
        self = cls.__new__(cls)
        self._fields = fields
        return self

    def add(self, name: bytes, value: bytes) -> None:
        """Append one field line."""
        self._fields.append((name.lower(), name, value))

    def set(self, name: bytes, value: bytes) -> None:
        """Replace every line of ``name`` with one line holding ``value``."""
        self.remove(name)
        self.add(name, value)

    def remove(self, name: bytes) -> None:
        """Remove every line of ``name`` (no error if there is none)."""
        lowered = name.lower()
        self._fields = [f for f in self._fields if f[0] != lowered]

    def get(self, name: bytes, default: bytes | None = None) -> bytes | None:
        """The value of the first line of ``name``, or ``default``."""
        lowered = name.lower()
        for lower, _, value in self._fields:
            if lower == lowered:
                return value
        return default

    def getAll(self, name: bytes) -> list[bytes]:
        """The values of every line of ``name``, in order."""
        lowered = name.lower()
        return [value for lower, _, value in self._fields if lower == lowered]

    def getList(self, name: bytes) -> list[bytes]:
        """The elements of every line of ``name`` under the list rule."""
        return splitList(self.getAll(name))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, bytes):
            return False
        lowered = name.lower()
        return any(f[0] == lowered for f in self._fields)

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        for _, name, value in self._fields:
            yield name, value

    def __len__(self) -> int:
        return len(self._fields)

    def loweredItems(self) -> list[tuple[bytes, bytes]]:
        """Every field line as (lowercased name, value), in order (ASGI's form)."""
        return [(lowered, value) for lowered, _, value in self._fields]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(f[0], f[2]) for f in self._fields] == [
            (f[0], f[2]) for f in other._fields
        ]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"

    def copy(self) -> Headers:
        """An independent copy."""
        return Headers._fromLowered(list(self._fields))

    def names(self) -> list[bytes]:
        """The lowercased names of every line, in order (repeats included)."""
        return [f[0] for f in self._fields]


def splitList(values: Iterable[bytes]) -> list[bytes]:
    """
    Split field values by the list rule of RFC 9110 §5.6.1.

    "A recipient MUST parse and ignore a reasonable number of empty list
    elements": ``, close ,`` is one element.  Optional whitespace around each
    element is removed.  Several lines are one list, in order (RFC 9110 §5.3).
    Elements are returned as given (not lowercased).
    """
    out: list[bytes] = []
    for value in values:
        for element in value.split(b","):
            element = element.strip(b" \t")
            if element:
                out.append(element)
    return out


def connectionOptions(headers: Headers) -> frozenset[bytes]:
    """
    The lowercased tokens of every ``Connection`` line (RFC 9110 §7.6.1:
    ``Connection = #connection-option``, case-insensitive).  Elements that
    are not tokens are dropped: they can neither be ``close`` nor name a field.
    """
    return optionsFromValues(
        [value for lower, _, value in headers._fields if lower == b"connection"]
    )


def optionsFromValues(values: Sequence[bytes]) -> frozenset[bytes]:
    """The connection options in ``Connection`` field values (see above)."""
    if not values:
        return _NO_OPTIONS
    return frozenset(
        element.lower() for element in splitList(values) if TOKEN_RE.fullmatch(element)
    )


_NO_OPTIONS: frozenset[bytes] = frozenset()


def removeHopByHop(headers: Headers) -> Headers:
    """
    A copy of ``headers`` without the fields an intermediary must not
    forward: those named in ``Connection`` (RFC 9110 §7.6.1: "a proxy or
    gateway MUST parse a received Connection header field before a message
    is forwarded and, for each connection-option in this field, remove any
    header or trailer field(s) from the message with the same name as the
    connection-option, and then remove the Connection header field itself")
    and the standard hop-by-hop set.
    """
    drop = HOP_BY_HOP | connectionOptions(headers)
    return Headers._fromLowered([f for f in headers._fields if f[0] not in drop])
