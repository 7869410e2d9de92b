"""
Conditional and range requests for ``StaticFiles``: the evaluation of
RFC 9110 §13.2.2 preconditions, entity-tag lists (§13.1), Range values
(§14) and the framing of multipart/byteranges (§14.6).

Kept out of ``static.py`` so that the handler's class holds the request
path; these only run for a request that carries a validator or a Range.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from email.utils import parsedate_to_datetime

from twisted.internet.interfaces import IReactorTime

from connserver._http.headers import Headers

__all__ = [
    "MAX_RANGES",
    "NOT_MODIFIED",
    "PRECONDITION_FAILED",
    "RANGE_COALESCE_GAP",
    "UNSATISFIABLE",
    "WHOLE",
    "Preconditions",
    "byterangesParts",
    "etagMatches",
    "parseRanges",
]

#: More range-specs than this in one Range field: the field is ignored and
#: the whole file is sent (RFC 9110 §14.2 lets a server ignore it).
MAX_RANGES = 50
#: Satisfiable ranges closer than this are merged into one part: a gap this
#: small costs less than a multipart header (RFC 9110 §14.6 allows it).
RANGE_COALESCE_GAP = 80

#: The outcomes of :meth:`Preconditions.evaluate` other than a list of
#: ranges (206): the status to answer with.
WHOLE = 200
NOT_MODIFIED = 304
PRECONDITION_FAILED = 412
UNSATISFIABLE = 416

# RFC 9110 §8.8.3: entity-tag = [ weak ] opaque-tag; opaque-tag = DQUOTE
# *etagc DQUOTE.  etagc may contain a comma, so a list is parsed by this
# pattern rather than split on commas.
_ETAG_LIST_RE = re.compile(rb'\s*(W/)?("[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|$)')
# RFC 9110 §14.1.2: int-range = first-pos "-" [ last-pos ]; suffix-range =
# "-" suffix-length.
_RANGE_SPEC_RE = re.compile(rb"(\d*)-(\d*)")


class Preconditions:
    """
    Evaluates a request's preconditions and Range against one file's
    validators; one instance per handler, so that parsed HTTP-dates are
    cached across requests.

    :param clock: gives the time that decides whether a Last-Modified is
        strong enough for If-Range.
    """

    __slots__ = ("_clock", "_dates")

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._dates: dict[bytes, int | None] = {}

    def parseDate(self, value: bytes) -> int | None:
        """An HTTP-date as epoch seconds, or None when invalid (cached)."""
        try:
            return self._dates[value]
        except KeyError:
            pass
        seconds: int | None
        try:
            parsed: datetime = parsedate_to_datetime(value.decode("latin-1"))
            seconds = None if parsed.tzinfo is None else int(parsed.timestamp())
        except (TypeError, ValueError, IndexError, OverflowError):
            seconds = None
        if len(self._dates) > 256:
            self._dates.clear()
        self._dates[value] = seconds
        return seconds

    def evaluate(
        self,
        headers: Headers,
        isGet: bool,
        etag: bytes,
        mtime: int,
        rangeableSize: int,
    ) -> int | list[tuple[int, int]]:
        """
        RFC 9110 §13.2.2: evaluate preconditions in order, then ranges.

        :param isGet: the method is GET (else HEAD: no ranges).
        :param rangeableSize: the size of the file when it can be ranged
            over (identity coding), else 0.
        :return: :data:`PRECONDITION_FAILED`, :data:`NOT_MODIFIED`,
            :data:`UNSATISFIABLE`, :data:`WHOLE` (a 200), or the ranges of
            a 206.
        """
        # Step 1: If-Match; step 2 (only without If-Match): If-Unmodified-Since.
        ifMatch = headers.getAll(b"if-match")
        if ifMatch:
            if not etagMatches(ifMatch, etag, strong=True):
                return PRECONDITION_FAILED
        else:
            ifUnmodified = headers.getAll(b"if-unmodified-since")
            if len(ifUnmodified) == 1:
                since = self.parseDate(ifUnmodified[0])
                if since is not None and mtime > since:
                    return PRECONDITION_FAILED
        # Step 3: If-None-Match; step 4 (only without it): If-Modified-Since.
        # Both give 304 for GET and HEAD (the only methods that get here).
        ifNoneMatch = headers.getAll(b"if-none-match")
        if ifNoneMatch:
            if etagMatches(ifNoneMatch, etag, strong=False):
                return NOT_MODIFIED
        else:
            ifModified = headers.getAll(b"if-modified-since")
            if len(ifModified) == 1:
                since = self.parseDate(ifModified[0])
                if since is not None and mtime <= since:
                    return NOT_MODIFIED
        # Step 5: Range (and If-Range), for GET only (RFC 9110 §14.2).
        rangeValues = headers.getAll(b"range")
        if isGet and len(rangeValues) == 1 and rangeableSize > 0:
            ranges = parseRanges(rangeValues[0], rangeableSize)
            if ranges is not None and self._ifRangeHolds(headers, etag, mtime):
                return ranges if ranges else UNSATISFIABLE
        return WHOLE

    def _ifRangeHolds(self, headers: Headers, etag: bytes, mtime: int) -> bool:
        """RFC 9110 §13.1.5: Range applies only if If-Range (when sent) matches."""
        values = headers.getAll(b"if-range")
        if not values:
            return True
        if len(values) != 1:
            return False
        value = values[0].strip()
        if value.startswith(b'"') or value.startswith(b"W/"):
            # A strong comparison: a weak tag never matches.
            return value == etag
        since = self.parseDate(value)
        # An HTTP-date matches only an exactly equal, strong Last-Modified:
        # one at least a second older than now (RFC 9110 §8.8.2.2).
        return (
            since is not None and since == mtime and mtime <= self._clock.seconds() - 1
        )


def byterangesParts(
    ranges: list[tuple[int, int]], contentType: bytes, size: int
) -> tuple[bytes, list[tuple[bytes, int, int]], bytes]:
    """
    The boundary, the parts (a part's header, offset and length) and the
    closing delimiter of a multipart/byteranges body.

    RFC 9110 §14.6: one part per range, each with its own Content-Type and
    Content-Range.
    """
    boundary = secrets.token_hex(12).encode("ascii")
    parts: list[tuple[bytes, int, int]] = []
    for index, (first, last) in enumerate(ranges):
        parts.append(
            (
                (b"\r\n" if index else b"")
                + b"--%s\r\nContent-Type: %s\r\nContent-Range: bytes %d-%d/%d\r\n\r\n"
                % (boundary, contentType, first, last, size),
                first,
                last - first + 1,
            )
        )
    return boundary, parts, b"\r\n--%s--\r\n" % boundary


def etagMatches(values: list[bytes], etag: bytes, strong: bool) -> bool:
    """
    Whether an If-Match / If-None-Match list matches ``etag``.

    RFC 9110 §13.1.1: If-Match uses the strong comparison (a weak tag never
    matches); §13.1.2: If-None-Match uses the weak comparison.  ``*``
    matches any current representation, and this one exists.  A malformed
    list matches nothing.
    """
    for value in values:
        value = value.strip()
        if value == b"*":
            return True
        position = 0
        while position < len(value):
            match = _ETAG_LIST_RE.match(value, position)
            if match is None:
                break
            if match.end() == position:
                break
            position = match.end()
            weak, opaque = match.group(1), match.group(2)
            if opaque == etag and not (strong and weak):
                return True
    return False


def parseRanges(value: bytes, size: int) -> list[tuple[int, int]] | None:
    """
    The satisfiable ranges of a Range value, sorted and coalesced.

    ``None`` means "ignore the field" (another unit, bad syntax, or more
    than ``MAX_RANGES`` specs: RFC 9110 §14.2 lets a server ignore Range);
    an empty list means unsatisfiable (416).  Ranges are inclusive.
    """
    unit, sep, rangeSet = value.partition(b"=")
    # RFC 9110 §14.2: a server MUST ignore a range unit it does not understand.
    if not sep or unit.strip().lower() != b"bytes":
        return None
    specs = [spec.strip(b" \t") for spec in rangeSet.split(b",")]
    specs = [spec for spec in specs if spec]
    if not specs or len(specs) > MAX_RANGES:
        return None
    ranges: list[tuple[int, int]] = []
    for spec in specs:
        match = _RANGE_SPEC_RE.fullmatch(spec)
        if match is None:
            return None
        firstText, lastText = match.group(1), match.group(2)
        if firstText:
            first = _bigInt(firstText)
            if lastText:
                last = _bigInt(lastText)
                if last < first:
                    return None  # §14.1.1: an invalid range-spec
                last = min(last, size - 1)
            else:
                last = size - 1
            # §14.1.1: satisfiable when first-pos is less than the length.
            if first < size:
                ranges.append((first, last))
        elif lastText:
            suffix = _bigInt(lastText)
            # §14.1.1: a suffix-range is satisfiable when its length is > 0.
            if suffix > 0:
                ranges.append((max(0, size - suffix), size - 1))
        else:
            return None
    ranges.sort()
    merged: list[tuple[int, int]] = []
    for first, last in ranges:
        if merged and first <= merged[-1][1] + 1 + RANGE_COALESCE_GAP:
            if last > merged[-1][1]:
                merged[-1] = (merged[-1][0], last)
        else:
            merged.append((first, last))
    return merged


def _bigInt(digits: bytes) -> int:
    """A range position as an int, capped so that no digit string is too long."""
    # Python refuses int() of more than 4300 digits; anything past 18 digits
    # is beyond any file size anyway.
    return int(digits) if len(digits) <= 18 else 10**18
