"""
Content-coding negotiation: which coding a response may use, from the
request's ``Accept-Encoding`` (RFC 9110 §12.5.3) and the server's own order
of preference.

Pure module: bytes in, a tuple of coding names out; nothing here imports
``twisted.internet``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["IDENTITY", "acceptableCodings"]

#: The name of "no content coding" (RFC 9110 §12.5.3).
IDENTITY = b"identity"

# RFC 9110 §12.4.2: weight = OWS ";" OWS "q=" qvalue; qvalue = ( "0" [ "."
# 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ).  Trailing digits beyond three are
# tolerated (some clients send "0.8000"); anything else is malformed.
_QVALUE_RE = re.compile(rb"(?:0(?:\.\d*)?|1(?:\.0*)?)")
# RFC 9110 §8.4.1.3: 'A recipient SHOULD consider "x-gzip" to be equivalent
# to "gzip"'.
_ALIASES = {b"x-gzip": b"gzip"}
# Below any weight a client can write (the smallest is 0.001): identity's
# weight when the field neither lists it nor has "*".
_IMPLICIT = 1e-9


def _parse(values: Sequence[bytes]) -> dict[bytes, float]:
    """Each listed coding (lowercased) with its weight; the first occurrence counts."""
    weights: dict[bytes, float] = {}
    for value in values:
        for element in value.split(b","):
            coding, _, params = element.partition(b";")
            coding = coding.strip(b" \t").lower()
            if not coding:
                continue  # RFC 9110 §5.6.1: empty list elements are ignored
            coding = _ALIASES.get(coding, coding)
            weight = 1.0
            malformed = False
            for param in params.split(b";") if params else ():
                name, sep, text = param.strip(b" \t").partition(b"=")
                if name.strip(b" \t").lower() != b"q":
                    continue
                text = text.strip(b" \t")
                if not sep or _QVALUE_RE.fullmatch(text) is None:
                    malformed = True
                    break
                weight = float(text)
            if malformed:
                # A weight that cannot be read says neither yes nor no: the
                # element is ignored rather than guessed at.
                continue
            weights.setdefault(coding, weight)
    return weights


def acceptableCodings(
    values: Sequence[bytes] | None, supported: Sequence[bytes]
) -> tuple[bytes, ...]:
    """
    The codings a response may use, best first: those of ``supported``
    (lowercase names, in the server's order of preference) that the client
    accepts, and ``identity``; an empty tuple when nothing is acceptable.

    ``values`` are the request's ``Accept-Encoding`` field lines, or None
    when it sent none.  The rules are RFC 9110 §12.5.3's:

    - a listed coding is acceptable unless its weight is 0; ``*`` gives its
      weight to every coding not listed;
    - identity is acceptable unless ``identity;q=0``, or ``*;q=0`` without
      an ``identity`` element, excludes it; not listed (and no ``*``), it
      ranks after every listed coding;
    - an empty field value means "no content coding": identity only.

    Higher weights come first; on a tie, the order of ``supported``, and
    identity last.  Without the field any coding would be acceptable; the
    answer is identity alone all the same, as nginx and Apache do, since
    clients that send no ``Accept-Encoding`` (plain curl, scripts) often
    cannot decode one.
    """
    if values is None:
        return (IDENTITY,)
    weights = _parse(values)
    star = weights.get(b"*")
    ranked: list[tuple[float, int, bytes]] = []
    for rank, coding in enumerate(supported):
        weight = weights.get(coding, star if star is not None else 0.0)
        if weight > 0:
            ranked.append((-weight, rank, coding))
    identity = weights.get(IDENTITY, star if star is not None else _IMPLICIT)
    if identity > 0:
        ranked.append((-identity, len(supported), IDENTITY))
    ranked.sort()
    return tuple(coding for _, _, coding in ranked)
