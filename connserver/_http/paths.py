"""
Request targets as paths: the path of an origin-form or absolute-form
target, dot-segments removed (RFC 3986 §5.2.4), and the encoded separators
a proxied path must not carry.

Pure module: nothing here imports ``twisted.internet``.
"""

from __future__ import annotations

import re

__all__ = [
    "hasEncodedSeparator",
    "mayHaveDotSegments",
    "removeDotSegments",
    "splitTarget",
]

# RFC 9112 §3.2.2: absolute-form = absolute-URI; for http and https its
# hier-part is "//" authority path-abempty.
_ABSOLUTE_RE = re.compile(rb"[hH][tT][tT][pP][sS]?://([^/?#]*)([^?#]*)(\?[^#]*)?")

#: A "." or ".." segment, its dots maybe percent-encoded ("%2e", "%2E").
_DOTS = {b".", b".."}

#: An encoded "/" or "\", or a raw "\" (which some upstreams, Windows ones
#: first, take for "/").
_SEPARATOR_RE = re.compile(rb"%(?:2[fF]|5[cC])|\\")


def splitTarget(target: bytes) -> tuple[bytes, bytes, bytes | None] | None:
    """
    ``(path, query, authority)`` of an origin-form target (``authority``
    None) or an absolute-form one (RFC 9112 §3.2.2: a server MUST accept
    it; an empty path is "/"); ``query`` keeps its "?".  None for the
    asterisk and authority forms, which name no path.
    """
    if target[:1] == b"/":
        path, sep, query = target.partition(b"?")
        return path, sep + query, None
    match = _ABSOLUTE_RE.fullmatch(target)
    if match is None:
        return None
    authority, path, query = match.groups()
    return path or b"/", query or b"", authority


def mayHaveDotSegments(path: bytes) -> bool:
    """
    False when ``path`` certainly has no dot-segment: each one starts with
    "/." or "/%" (two substring tests, the fast path of every request).
    """
    return b"/." in path or b"/%" in path


def removeDotSegments(path: bytes) -> bytes | None:
    """
    ``path`` (absolute, starting with "/") without its "." and ".."
    segments, RFC 3986 §5.2.4, the dots also when percent-encoded (an
    upstream decodes them before it resolves them).  None when a ".." would
    climb above the root: such a request is refused, not clamped (nginx
    answers 400 too).  Other segments keep their spelling.
    """
    segments = path.split(b"/")
    out: list[bytes] = []
    last = len(segments) - 1
    for index in range(1, last + 1):
        segment = segments[index]
        dots = segment
        if b"%" in segment:
            dots = segment.replace(b"%2e", b".").replace(b"%2E", b".")
        if dots in _DOTS:
            if dots == b"..":
                if not out:
                    return None
                out.pop()
            if index == last:
                out.append(b"")  # "/a/." is "/a/", a directory
            continue
        out.append(segment)
    return b"/" + b"/".join(out)


def hasEncodedSeparator(path: bytes) -> bool:
    """
    True when ``path`` holds ``%2F``, ``%5C`` (any case) or a raw ``\\``:
    one segment here, but two at an upstream that decodes before it splits
    (``/api/..%2fsecret`` is ``/secret`` there).
    """
    if b"%" not in path and b"\\" not in path:
        return False
    return _SEPARATOR_RE.search(path) is not None
