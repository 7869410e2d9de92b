"""
The test helpers themselves (issue 13): response parsing that fails loudly,
and the guard against wall-clock waits in tests not marked slow.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from connserver import Request, Response

from ._harness import connect, hello, parseResponses
from .conftest import WallClockWaits

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def test_everyResponseIsParsedNotJust64() -> None:
    """``Connection.responses()`` reads every response in the output."""
    conn = connect(hello)
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 100)
    responses = conn.responses()
    assert len(responses) == 100
    assert all(r.body == b"x" * 130 for r in responses)


def test_trailingPartialResponseFailsLoudly() -> None:
    """Bytes that are not a complete response are an error, with the bytes."""
    with pytest.raises(AssertionError, match=r"response 2 is incomplete"):
        parseResponses(OK + OK[:-1])
    with pytest.raises(AssertionError, match=r"response 1 is incomplete"):
        parseResponses(OK[:10])
    with pytest.raises(AssertionError, match=r"incomplete .*then EOF"):
        parseResponses(OK[:-1], eof=True)


def test_partialResponseAllowedWhenSaid() -> None:
    assert [r.body for r in parseResponses(OK + OK[:-1], partial=True)] == [b"ok"]
    assert parseResponses(OK[:10], partial=True) == []
    assert parseResponses(OK[:-1], eof=True, partial=True) == []


def test_moreResponsesThanRequestsFailsLoudly() -> None:
    assert len(parseResponses(OK + OK, [b"GET", b"GET"])) == 2
    with pytest.raises(AssertionError, match=r"left after the 1 responses"):
        parseResponses(OK + OK, [b"GET"])


def test_invalidResponseFailsLoudly() -> None:
    with pytest.raises(AssertionError, match=r"not a valid response"):
        parseResponses(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")


def test_closeDelimitedBodyNeedsEof() -> None:
    data = b"HTTP/1.0 200 OK\r\n\r\nall of it"
    assert [r.body for r in parseResponses(data, eof=True)] == [b"all of it"]
    with pytest.raises(AssertionError, match=r"incomplete"):
        parseResponses(data)


def test_headResponseHasNoBody() -> None:
    def handler(request: Request) -> Response:
        return Response(200, body=b"abc")

    conn = connect(handler)
    conn.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head, get = conn.responses(b"HEAD", b"GET")
    assert (head.body, head.header(b"content-length")) == (b"", b"3")
    assert get.body == b"abc"


def test_wallClockGuardSeesDelayedCallsThatRun() -> None:
    """The guard's record: positive delays that ran, not zero or cancelled."""
    clock = Clock()
    waits = WallClockWaits(clock)
    waits.callLater(0, lambda: None)
    waits.callLater(0.5, lambda: None).cancel()
    waits.callLater(5, lambda: None)

    def pause() -> None:
        pass

    waits.callLater(0.01, pause)
    assert waits.ran() == []
    clock.advance(1)
    assert waits.ran() == [
        "callLater(0.01, test_wallClockGuardSeesDelayedCallsThatRun.<locals>.pause)"
    ]
