"""
``AccessLog``: the line formats, the timer-driven buffering (on ``Clock``)
and the failure handling.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from connserver._http.records import ConnectionRecord, RequestRecord
from connserver._running.accesslog import AccessLog, formatCombined, formatJSON

# 2025-03-05 14:02:07.250 UTC
T0 = 1741183327.25

RECORD = RequestRecord(
    timestamp=T0,
    peerHost="127.0.0.1",
    method=b"GET",
    target=b"/a?b=1",
    version=(1, 1),
    status=200,
    bodyBytes=512,
    referer=None,
    userAgent=b"curl/8.5.0",
    connectionId=7,
    requestIndex=3,
    connectionAge=2.0414,
    duration=0.000412,
    closeReason=None,
)


def record(**changes: Any) -> RequestRecord:
    return dataclasses.replace(RECORD, **changes)


class FailingFile(io.RawIOBase):
    """A binary file whose writes fail until ``healthy`` is set."""

    def __init__(self) -> None:
        self.healthy = False
        self.data = b""

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if not self.healthy:
            raise OSError(28, "No space left on device")
        self.data += bytes(data)
        return len(data)


def test_combinedLine() -> None:
    assert formatCombined(RECORD) == (
        '127.0.0.1 - - [05/Mar/2025:14:02:07 +0000] "GET /a?b=1 HTTP/1.1" 200 512 '
        '"-" "curl/8.5.0" conn=7 req=3 age=2.041 dur=0.000412 close=-\n'
    )


def test_combinedLineLastResponseOfConnection() -> None:
    line = formatCombined(
        record(version=(1, 0), closeReason="http10-default", referer=b"http://x/")
    )
    assert '"GET /a?b=1 HTTP/1.0"' in line
    assert '"http://x/"' in line
    assert line.endswith(" close=http10-default\n")


def test_combinedEscapesHostileFields() -> None:
    """A quote, a backslash or a control byte cannot forge a field or a line."""
    line = formatCombined(
        record(target=b'/x"y\\z\n\xe9', userAgent=b'a" "b', referer=b"\x00")
    )
    assert line.count("\n") == 1
    assert '"GET /x\\x22y\\x5Cz\\x0A\\xE9 HTTP/1.1"' in line
    assert '"a\\x22 \\x22b"' in line
    assert '"\\x00"' in line


@pytest.mark.parametrize(
    "host, written",
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8::7", "2001:db8::7"),
        ("fe80::1%eth0", "fe80::1%eth0"),  # a transport's link-local peer
        ("_hidden", "_hidden"),
        ("::1%evil 200 x", "::1%evil\\x20200\\x20x"),
        ('a"b\\c\n\u00e9', "a\\x22b\\x5Cc\\x0A\\xC3\\xA9"),
    ],
)
def test_combinedAddressCannotForgeAField(host: str, written: str) -> None:
    """
    The address is written as is only when it is made of address
    characters; anything else (a space, a quote, a newline) as ``\\xHH``,
    on request lines and close lines alike.
    """
    line = formatCombined(record(peerHost=host))
    assert line.startswith(written + " - - [")
    assert line.count("\n") == 1
    close = formatCombined(
        ConnectionRecord(
            timestamp=T0,
            peerHost=host,
            connectionId=7,
            requestsServed=0,
            connectionAge=1.0,
            closeReason="idle-timeout",
        )
    )
    assert close.startswith(written + " - - [")


def test_combinedUnparsedRequest() -> None:
    """A 400 for a head that never parsed logs ``"-"`` as the request line."""
    line = formatCombined(
        record(method=b"", target=b"", status=400, closeReason="unsafe-framing")
    )
    assert ' "-" 400 ' in line


def test_jsonLine() -> None:
    line = formatJSON(record(closeReason="max-requests", secure=True, scheme="https"))
    assert line.endswith("\n") and line.count("\n") == 1
    assert json.loads(line) == {
        "time": "2025-03-05T14:02:07.250Z",
        "remote": "127.0.0.1",
        "method": "GET",
        "target": "/a?b=1",
        "version": "HTTP/1.1",
        "status": 200,
        "bytes": 512,
        "referer": None,
        "userAgent": "curl/8.5.0",
        "conn": 7,
        "req": 3,
        "age": 2.0414,
        "dur": 0.000412,
        "close": "max-requests",
        "secure": True,
        "scheme": "https",
    }


def test_jsonSchemeIsTheForwardedOne() -> None:
    """Behind a TLS-terminating proxy: a plain connection, an https client."""
    line = formatJSON(record(secure=False, scheme="https"))
    assert (json.loads(line)["secure"], json.loads(line)["scheme"]) == (False, "https")


def test_jsonEscapesNonASCII() -> None:
    line = formatJSON(record(target=b"/\xe9"))
    assert json.loads(line)["target"] == "/\\xe9"


def test_unknownFormat() -> None:
    with pytest.raises(ValueError, match="combined, json"):
        AccessLog(io.BytesIO(), "xml")


def test_idleLogRunsNoTimer() -> None:
    clock = Clock()
    AccessLog(io.BytesIO(), reactor=clock)
    assert clock.getDelayedCalls() == []


def test_linesAreBufferedUntilTheTimer() -> None:
    """Lines wait for one timer; it is armed once, and gone after the flush."""
    clock = Clock()
    out = io.BytesIO()
    log = AccessLog(out, reactor=clock, flushInterval=1.0)
    log(RECORD)
    log(record(requestIndex=4))
    assert out.getvalue() == b""
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(0.999)
    assert out.getvalue() == b""
    clock.advance(0.001)
    assert out.getvalue().decode().splitlines() == [
        formatCombined(RECORD).rstrip("\n"),
        formatCombined(record(requestIndex=4)).rstrip("\n"),
    ]
    assert clock.getDelayedCalls() == []


def test_fullBufferIsWrittenAtOnce() -> None:
    clock = Clock()
    out = io.BytesIO()
    log = AccessLog(out, reactor=clock, bufferBytes=200)
    log(RECORD)
    assert out.getvalue() == b""
    log(RECORD)  # two lines pass 200 bytes
    assert out.getvalue().count(b"\n") == 2
    assert clock.getDelayedCalls() == []


def test_textFileObject() -> None:
    clock = Clock()
    out = io.StringIO()
    log = AccessLog(out, "json", reactor=clock)
    log(RECORD)
    log.close()
    assert json.loads(out.getvalue())["conn"] == 7
    assert not out.closed, "a file object passed in is not ours to close"
    assert clock.getDelayedCalls() == []


def test_pathIsAppendedAndClosedOnClose(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    path.write_text("earlier line\n")
    clock = Clock()
    log = AccessLog(str(path), reactor=clock)
    log(RECORD)
    assert path.read_text() == "earlier line\n"
    log.close()
    assert path.read_text() == "earlier line\n" + formatCombined(RECORD)
    assert clock.getDelayedCalls() == []
    log(RECORD)  # after close: dropped, no timer, no error
    assert clock.getDelayedCalls() == []


def test_standardOutput(capfd: pytest.CaptureFixture[str]) -> None:
    clock = Clock()
    log = AccessLog("-", reactor=clock)
    log(RECORD)
    clock.advance(1)
    assert capfd.readouterr().out == formatCombined(RECORD)
    log.close()


def test_failingFileIsReportedOnceAndRecovers() -> None:
    clock = Clock()
    out = FailingFile()
    log = AccessLog(out, reactor=clock)  # type: ignore[arg-type]
    with capturedLogs() as events:
        log(RECORD)
        clock.advance(1)
        log(RECORD)
        clock.advance(1)
        errors = [e for e in events if e["log_level"].name == "error"]
        assert len(errors) == 1
        assert "No space left on device" in str(errors[0]["error"])
        out.healthy = True
        log(record(requestIndex=9))
        clock.advance(1)
    assert out.data == formatCombined(record(requestIndex=9)).encode()
    recovered = [e for e in events if e["log_level"].name == "info"]
    assert len(recovered) == 1 and recovered[0]["dropped"] == 2
    assert clock.getDelayedCalls() == []


def test_unwritablePathDoesNotRaise(tmp_path: Path) -> None:
    """A log in a directory that vanished: reported, dropped, and reopened later."""
    directory = tmp_path / "logs"
    clock = Clock()
    log = AccessLog(str(directory / "access.log"), reactor=clock)
    with capturedLogs() as events:
        log(RECORD)
        clock.advance(1)
        log(RECORD)
        clock.advance(1)
    assert [e["log_level"].name for e in events] == ["error"]
    os.mkdir(directory)
    log(RECORD)
    log.close()
    assert (directory / "access.log").read_text() == formatCombined(RECORD)
    assert clock.getDelayedCalls() == []


def test_reopenAfterRename(tmp_path: Path) -> None:
    """
    logrotate's rename, then a reopen (SIGUSR1): the lines buffered before
    go to the old file, those after to a new file at the path; none is lost
    and the flush timer is not left behind.
    """
    path = tmp_path / "access.log"
    rotated = tmp_path / "access.log.1"
    clock = Clock()
    log = AccessLog(str(path), reactor=clock)
    log(record(requestIndex=1))
    clock.advance(1)  # the file is open now
    log(record(requestIndex=2))  # buffered, timer pending
    path.rename(rotated)
    with capturedLogs() as events:
        log.reopen()
    assert [e["log_level"].name for e in events] == ["info"]
    assert "reopened" in events[0]["log_format"]
    assert clock.getDelayedCalls() == []
    assert rotated.read_text() == formatCombined(record(requestIndex=1)) + (
        formatCombined(record(requestIndex=2))
    )
    assert path.read_text() == "", "the new file exists at once"
    log(record(requestIndex=3))
    clock.advance(1)
    log.close()
    assert path.read_text() == formatCombined(record(requestIndex=3))
    assert rotated.read_text().count("\n") == 2


def test_reopenBeforeAnyWrite(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    clock = Clock()
    log = AccessLog(str(path), reactor=clock)
    log(RECORD)
    log.reopen()
    log.close()
    assert path.read_text() == formatCombined(RECORD)


def test_reopenWhenTheOldFileFailsWritesToTheNewOne(tmp_path: Path) -> None:
    """Lines the old file will not take are not dropped: the new file has them."""
    path = tmp_path / "access.log"
    clock = Clock()
    log = AccessLog(str(path), reactor=clock)
    log(record(requestIndex=1))
    clock.advance(1)
    assert log._file is not None
    log._file.close()  # the old file now raises ValueError on write
    log(record(requestIndex=2))
    log.reopen()
    log.close()
    assert path.read_text() == formatCombined(record(requestIndex=1)) + (
        formatCombined(record(requestIndex=2))
    )


def test_reopenFailureIsReportedOnce(tmp_path: Path) -> None:
    directory = tmp_path / "logs"
    directory.mkdir()
    path = directory / "access.log"
    clock = Clock()
    log = AccessLog(str(path), reactor=clock)
    log(RECORD)
    clock.advance(1)
    path.unlink()
    directory.rmdir()
    with capturedLogs() as events:
        log.reopen()
        log.reopen()
    assert [e["log_level"].name for e in events] == ["error"]
    directory.mkdir()
    log.reopen()
    log(RECORD)
    log.close()
    assert path.read_text() == formatCombined(RECORD)


def test_reopenStandardOutputIsANoOp(capfd: pytest.CaptureFixture[str]) -> None:
    clock = Clock()
    log = AccessLog("-", reactor=clock)
    log(RECORD)
    with capturedLogs() as events:
        log.reopen()
    assert capfd.readouterr().out == formatCombined(RECORD)
    assert len(events) == 1 and "nothing to reopen" in events[0]["log_format"]
    assert clock.getDelayedCalls() == []
    log.close()


def test_aRequestThatNeverParsedIsLoggedAsDash() -> None:
    """
    Through the protocol: a malformed request line gives 400, and its record
    carries no request line, so the log shows "-" (and null in JSON).
    """
    from ._harness import connect, hello

    conn = connect(hello)
    records: list[RequestRecord] = []
    conn.factory.requestObservers.append(records.append)
    conn.send(b"NOT A REQUEST\r\n\r\n")
    [record] = records
    assert record.status == 400
    assert '"-" 400 ' in formatCombined(record)
    line = json.loads(formatJSON(record))
    assert (line["method"], line["target"], line["version"]) == (None, None, None)


def test_handlerNoteIsWrittenOnlyWhenGiven() -> None:
    """``Response.note`` (the proxy's upstream outcome) ends the line."""
    line = formatCombined(record(status=504, note="upstream-timeout"))
    assert line.endswith(" close=- note=upstream-timeout\n")
    assert "note=" not in formatCombined(record())
    assert json.loads(formatJSON(record(note="upstream-refused")))["note"] == (
        "upstream-refused"
    )
    assert "note" not in json.loads(formatJSON(record()))


# -- which close lines (--log-closes) -------------------------------------------


def closeRecord(reason: str) -> ConnectionRecord:
    return ConnectionRecord(
        timestamp=T0,
        peerHost="127.0.0.1",
        connectionId=7,
        requestsServed=1,
        connectionAge=1.0,
        closeReason=reason,
    )


@pytest.mark.parametrize(
    "closes, written",
    [
        ("all", ["peer-closed", "idle-timeout", "draining", "peer-reset", "header-timeout"]),
        ("abnormal", ["peer-reset", "header-timeout"]),
        ("none", []),
    ],
)  # fmt: skip
def test_whichCloseLines(closes: str, written: list[str]) -> None:
    """
    ``abnormal`` leaves out a keep-alive connection's ordinary end (the
    client's close, the idle timeout, the graceful stop of an idle
    connection); request lines are never filtered.
    """
    out = io.StringIO()
    log = AccessLog(out, reactor=Clock(), closes=closes)
    for reason in (
        "peer-closed",
        "idle-timeout",
        "draining",
        "peer-reset",
        "header-timeout",
    ):
        log(closeRecord(reason))
    log(record(closeReason="client-close"))
    log.flush()
    lines = out.getvalue().splitlines()
    assert [line.rsplit("close=", 1)[1] for line in lines[:-1]] == written
    assert '"GET /a?b=1 HTTP/1.1" 200' in lines[-1]


def test_badClosesOrModeRefused() -> None:
    with pytest.raises(ValueError, match="closes must be one of all, abnormal, none"):
        AccessLog(io.StringIO(), closes="some")
    with pytest.raises(ValueError, match="mode must be"):
        AccessLog(io.StringIO(), mode=0o1000)


# -- the file: created at start, with its mode ------------------------------------


@pytest.fixture
def strictUmask() -> Any:
    """A daemonised twistd's umask (077): files would be created 0600."""
    previous = os.umask(0o077)
    yield
    os.umask(previous)


def test_fileCreatedAtOpenWithMode(tmp_path: Path, strictUmask: None) -> None:
    """
    ``open()`` (at service start) creates the file, 0640 whatever the
    umask, before any line: a log shipper in the group can read it.
    """
    path = tmp_path / "access.log"
    log = AccessLog(path, reactor=Clock())
    assert not path.exists()
    log.open()
    assert path.exists() and path.read_bytes() == b""
    assert path.stat().st_mode & 0o777 == 0o640
    log(record())
    log.flush()
    assert path.read_text().startswith("127.0.0.1 - - ")
    # After logrotate's rename, the new file has the mode too.
    path.rename(tmp_path / "access.log.1")
    log.reopen()
    assert path.stat().st_mode & 0o777 == 0o640
    log.close()


def test_fileModeIsConfigurableAndAnExistingFileKeepsItsOwn(
    tmp_path: Path, strictUmask: None
) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(path, reactor=Clock(), mode=0o644)
    log.open()
    assert path.stat().st_mode & 0o777 == 0o644
    log.close()
    existing = tmp_path / "existing.log"
    existing.write_text("old\n")
    existing.chmod(0o600)
    log = AccessLog(existing, reactor=Clock())
    log.open()
    log(record())
    log.close()
    assert existing.stat().st_mode & 0o777 == 0o600
    assert existing.read_text().startswith("old\n127.0.0.1 ")


def test_fileThatCannotBeCreatedAtOpenIsReportedOnce(tmp_path: Path) -> None:
    log = AccessLog(tmp_path / "missing" / "access.log", reactor=Clock())
    with capturedLogs() as events:
        log.open()
        log.open()
    assert len([e for e in events if "cannot be written" in e["log_format"]]) == 1


def test_jsonSchemeFromATrustedProxy() -> None:
    """A request forwarded with X-Forwarded-Proto: https logs scheme https."""
    from twisted.internet.task import Clock

    from connserver import AccessLog, ConnectionFactory, ServerConfig

    from ._harness import hello, openOn

    clock = Clock()
    factory = ConnectionFactory(
        hello, config=ServerConfig(trustedProxies=("127.0.0.1/32",)), reactor=clock
    )
    out = io.StringIO()
    log = AccessLog(out, "json", reactor=clock)
    factory.requestObservers.append(log)
    conn = openOn(factory, clock)
    assert conn is not None
    conn.send(
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 192.0.2.7\r\n"
        b"X-Forwarded-Proto: https\r\n\r\n"
    )
    log.flush()
    entry = json.loads(out.getvalue())
    assert (entry["remote"], entry["secure"], entry["scheme"]) == (
        "192.0.2.7",
        False,
        "https",
    )
