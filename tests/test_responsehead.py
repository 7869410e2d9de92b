"""
``HeadBuilder`` alone, without a transport: the lines of a response head,
the framing it announces (RFC 9112 §6), the fields the server owns, and the
bounded field-line cache.
"""

from __future__ import annotations

import pytest

from connserver._http.errors import ResponseFramingError
from connserver._http.framing import BodyFraming
from connserver._http.persistence import PersistenceDecision
from connserver._http.responsehead import HeadBuilder, finishHead

DATE = b"Date: Sun, 29 Nov 2026 19:00:00 GMT\r\n"
KEEP = PersistenceDecision(True, None, None, "http11-default")
CLOSE = PersistenceDecision(False, b"close", None, "client-close")


def build(
    builder: HeadBuilder,
    fields: list[tuple[bytes | str, bytes | str]],
    *,
    method: bytes = b"GET",
    version: tuple[int, int] = (1, 1),
    code: int = 200,
    length: int | None = 5,
    secure: bool = False,
    decision: PersistenceDecision = KEEP,
) -> tuple[bytes, BodyFraming, int | None, frozenset[bytes]]:
    lines, framing, announced, options = builder.prepare(
        method, version, code, None, fields, length, DATE, secure
    )
    return finishHead(lines, decision, options), framing, announced, options


def test_plainResponse() -> None:
    builder = HeadBuilder(serverLine=b"Server: t\r\n")
    head, framing, length, options = build(builder, [(b"Content-Type", b"text/plain")])
    assert head == (
        b"HTTP/1.1 200 OK\r\n" + DATE + b"Server: t\r\n"
        b"Content-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
    )
    assert (framing, length, options) == (BodyFraming.CONTENT_LENGTH, 5, frozenset())


def test_serverOwnedFieldsAreTakenFromTheHandler() -> None:
    head, _, _, options = build(
        HeadBuilder(),
        [
            ("Connection", "close, X-Custom"),
            (b"Keep-Alive", b"timeout=1"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Content-Length", b"5"),
        ],
        decision=CLOSE,
    )
    assert options == frozenset({b"close", b"x-custom"})
    assert head.count(b"Content-Length") == 1
    assert b"Keep-Alive" not in head and b"Transfer-Encoding" not in head
    # The policy's close first, then the handler's own connection options.
    assert head.endswith(b"Connection: close, x-custom\r\n\r\n")


@pytest.mark.parametrize(
    ("decision", "connection"),
    [
        (KEEP, b"Connection: upgrade\r\n"),
        (CLOSE, b"Connection: close, upgrade\r\n"),
    ],
)
def test_anUpgradeFieldGoesWithTheUpgradeOption(
    decision: PersistenceDecision, connection: bytes
) -> None:
    """
    RFC 9110 §7.8: a sender of Upgrade (a 426, or any response advertising
    it) MUST send the "upgrade" connection option, so that no intermediary
    forwards the field; the handler need not say it.
    """
    builder = HeadBuilder()
    for _ in range(2):  # Also once the field's line is cached.
        head, _, _, options = build(
            builder, [(b"Upgrade", b"websocket")], code=426, decision=decision
        )
        assert options == frozenset({b"upgrade"})
        assert b"\r\nUpgrade: websocket\r\n" in head
        assert head.endswith(connection + b"\r\n")


def test_contradictingContentLengthFails() -> None:
    with pytest.raises(ResponseFramingError):
        build(HeadBuilder(), [(b"Content-Length", b"4")], length=5)
    with pytest.raises(ResponseFramingError):
        build(HeadBuilder(), [(b"Content-Length", b"x")], length=None)


@pytest.mark.parametrize(
    ("method", "code", "length", "expected"),
    [
        pytest.param(b"HEAD", 200, 5, b"Content-Length: 5\r\n", id="head-known"),
        pytest.param(b"HEAD", 200, 0, None, id="head-empty-unknown"),
        pytest.param(b"GET", 304, 7, b"Content-Length: 7\r\n", id="304"),
        pytest.param(b"GET", 204, 0, None, id="204"),
    ],
)
def test_noBodyResponses(
    method: bytes, code: int, length: int, expected: bytes | None
) -> None:
    head, framing, _, _ = build(
        HeadBuilder(), [], method=method, code=code, length=length
    )
    assert framing is BodyFraming.NONE
    if expected is None:
        assert b"Content-Length" not in head
    else:
        assert expected in head


@pytest.mark.parametrize(
    ("version", "framing", "field"),
    [
        pytest.param(
            (1, 1), BodyFraming.CHUNKED, b"Transfer-Encoding: chunked", id="11"
        ),
        pytest.param((1, 0), BodyFraming.CLOSE_DELIMITED, None, id="10"),
    ],
)
def test_unknownLength(
    version: tuple[int, int], framing: BodyFraming, field: bytes | None
) -> None:
    head, chosen, length, _ = build(HeadBuilder(), [], version=version, length=None)
    assert (chosen, length) == (framing, None)
    assert (field in head) if field else b"Transfer-Encoding" not in head


def test_hstsOnlyOverTLS() -> None:
    builder = HeadBuilder(hstsLine=b"Strict-Transport-Security: max-age=60\r\n")
    assert b"Strict-Transport-Security" in build(builder, [], secure=True)[0]
    assert b"Strict-Transport-Security" not in build(builder, [], secure=False)[0]


def test_handlerServerAndDateReplaceTheServers() -> None:
    builder = HeadBuilder(serverLine=b"Server: t\r\n")
    head = build(builder, [(b"Server", b"mine"), (b"Date", b"x")])[0]
    assert head.count(b"Server:") == 1 and b"Server: mine\r\n" in head
    assert head.count(b"Date:") == 1 and b"Date: x\r\n" in head
    # Not cached: the next response gets the server's own again.
    assert b"Server: t\r\n" in build(builder, [])[0]


def test_invalidFieldsFail() -> None:
    for fields in ([(b"Bad Name", b"v")], [(b"X", b"a\r\nInjected: 1")]):
        with pytest.raises(ResponseFramingError):
            build(HeadBuilder(), list(fields))


def test_cacheIsBoundedFirstInFirstOut() -> None:
    """One-off values (ETags) pass through; the cache never grows past its size."""
    builder = HeadBuilder(cacheSize=8)
    build(builder, [(b"Content-Type", b"text/html")])
    for n in range(100):
        head = build(builder, [(b"ETag", b'"%d"' % n)])[0]
        assert b'ETag: "%d"\r\n' % n in head
        assert builder.cachedLines <= 8
    # The common line is built again (and cached again) after its eviction.
    assert (
        b"Content-Type: text/html\r\n"
        in build(builder, [(b"Content-Type", b"text/html")])[0]
    )


def test_cachesAreLocalToABuilder() -> None:
    first, second = HeadBuilder(), HeadBuilder()
    build(first, [(b"X-A", b"1")])
    assert (first.cachedLines, second.cachedLines) == (1, 0)


def test_oneXXIsRefused() -> None:
    with pytest.raises(ValueError):
        build(HeadBuilder(), [], code=101)
