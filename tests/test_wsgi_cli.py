"""
``twistd connserver --wsgi``: the flags and their one-line errors, the
settings a ``--workers`` worker rebuilds, the thread pool as a companion of
the server, and ``twistd`` in a subprocess answering with a WSGI app (one
process, and two workers).
"""

from __future__ import annotations

import http.client
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from twisted.python import usage

from connserver import tap
from connserver._handlers.wsgi import WSGIHandler
from connserver._running.assembly import makeServerService
from connserver._running.settings import (
    SettingsError,
    settingsFromJSON,
    settingsToJSON,
)

from . import wsgiapps
from .test_twistd import ROOT, Server, server, site

__all__ = ["server", "site"]  # fixtures, used by name


def parse(*args: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(args))
    return options


def test_wsgiFlags() -> None:
    options = parse("--wsgi", "tests.wsgiapps:hello", "--wsgi-threads", "3")
    settings = options.settings()
    assert settings.wsgiSpec == "tests.wsgiapps:hello"
    assert settings.wsgiThreads == 3
    handler = settings.application
    assert isinstance(handler, WSGIHandler)
    assert handler.application is wsgiapps.hello
    assert handler.pool.max == 3
    assert not handler.pool.started


def test_dottedNameAsTwistdWeb() -> None:
    """``twistd web --wsgi`` takes ``package.module.attribute``; so does --wsgi."""
    handler = parse("--wsgi", "tests.wsgiapps.hello").settings().application
    assert isinstance(handler, WSGIHandler)
    assert handler.application is wsgiapps.hello


def test_defaultThreadsAsTwistdWeb() -> None:
    handler = parse("--wsgi", "tests.wsgiapps:hello").settings().application
    assert isinstance(handler, WSGIHandler)
    assert handler.pool.max == 10


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--wsgi", "no_such_module:app"],
            "--wsgi 'no_such_module:app': cannot import",
        ),
        (["--wsgi", "wsgiapps"], "expected MODULE:ATTRIBUTE"),
        (["--wsgi", "tests..hello"], "expected MODULE:ATTRIBUTE"),
        (["--wsgi", "tests.wsgiapps"], "is not a WSGI application (not callable)"),
        (
            ["--wsgi", "tests.wsgiapps:createApp"],
            "cannot be called with 2 arguments: an application factory? "
            "Call it in your module (app = create_app())",
        ),
        (
            ["--wsgi", "tests._asgiapp:app"],
            "not a WSGI application, it cannot be called with 2 arguments: "
            "an ASGI application? Serve it with --asgi",
        ),
        (["--wsgi", "tests.wsgiapps:nothing"], "has no attribute nothing"),
        (["--wsgi", "tests.wsgiapps:HELLO"], "not a WSGI application"),
        (
            ["--wsgi", "tests.wsgiapps:hello", "--handler", "tests.wsgiapps:hello"],
            "use --handler or --wsgi, not both",
        ),
        (["--wsgi", "tests.wsgiapps:hello", "--path", "."], "use --path or --wsgi"),
        (
            ["--wsgi", "tests.wsgiapps:hello", "--listing"],
            "--listing applies to --path",
        ),
        (["--wsgi-threads", "4"], "--wsgi-threads applies to --wsgi"),
        (
            ["--wsgi", "tests.wsgiapps:hello", "--wsgi-threads", "0"],
            "--wsgi-threads '0': expected a number from 1 to 1024",
        ),
        (
            ["--wsgi", "tests.wsgiapps:hello", "--wsgi-threads", "many"],
            "--wsgi-threads 'many'",
        ),
    ],
)
def test_wsgiUsageErrors(args: list[str], message: str) -> None:
    with pytest.raises(usage.UsageError) as caught:
        parse(*args)
    assert message in str(caught.value)


def test_workersRebuildTheHandlerAsMultiprocess() -> None:
    settings = parse(
        "--wsgi", "tests.wsgiapps:hello", "--wsgi-threads", "2", "--workers", "2"
    ).settings()
    handler = settings.application
    assert isinstance(handler, WSGIHandler)
    assert handler._baseEnviron["wsgi.multiprocess"] is True
    data = json.loads(json.dumps(settingsToJSON(settings)))
    rebuilt = settingsFromJSON(data).application
    assert isinstance(rebuilt, WSGIHandler)
    assert rebuilt is not handler
    assert rebuilt.application is wsgiapps.hello
    assert rebuilt.pool.max == 2
    assert rebuilt._baseEnviron["wsgi.multiprocess"] is True
    data["wsgiSpec"] = "tests.wsgiapps:gone"
    with pytest.raises(SettingsError, match="has no attribute gone"):
        settingsFromJSON(data)


def test_thePoolIsACompanionOfTheServer() -> None:
    settings = parse(
        "--wsgi", "tests.wsgiapps:hello", "--listen", "tcp:0:interface=127.0.0.1"
    ).settings()
    service = makeServerService(settings)
    names = [companion.name for companion in service.companions]  # type: ignore[attr-defined]
    assert "wsgi-threads" in names


@pytest.fixture
def wsgiSite(site: Path) -> Path:
    """The test apps, importable by twistd as ``cs_wsgiapps``."""
    shutil.copy(ROOT / "tests" / "wsgiapps.py", site / "cs_wsgiapps.py")
    return site


def get(port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.slow
def test_twistdServesAWSGIApp(wsgiSite: Path, server: Callable[..., Server]) -> None:
    s = server("--wsgi", "cs_wsgiapps:hello", "--wsgi-threads", "2")
    assert get(s.port, "/") == (200, wsgiapps.HELLO)
    s.stop()


@pytest.mark.slow
def test_twistdServesAWSGIAppFromWorkers(
    wsgiSite: Path, server: Callable[..., Server]
) -> None:
    s = server("--wsgi", "cs_wsgiapps:raw", "--workers", "2")
    for _ in range(2):
        s.waitFor(r"connserver: worker \d+ \(pid \d+\) ready")
    status, body = get(s.port, "/environ")
    assert status == 200
    environ = json.loads(body)
    assert environ["wsgi.multiprocess"] is True
    assert environ["PATH_INFO"] == "/environ"
    s.stop()


RELOADABLE = """
import os
from pathlib import Path

VERSION = {version!r}


def app(environ, startResponse):
    if environ["PATH_INFO"] == "/upload":
        # Tells the test that a worker holds the upload, then waits for it.
        Path(__file__).with_name("upload-started").write_text(str(os.getpid()))
        body = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
    else:
        body = b""
    text = f"{{VERSION}} {{os.getpid()}} ".encode() + body
    startResponse("200 OK", [("Content-Length", str(len(text)))])
    return [text]
"""


def versionAndPid(body: bytes) -> tuple[str, int]:
    version, pid, _ = body.split(b" ", 2)
    return version.decode(), int(pid)


@pytest.mark.slow
def test_workersReloadTheAppOnSIGHUPAndDrainAnUpload(
    wsgiSite: Path, server: Callable[..., Server]
) -> None:
    """
    SIGHUP under ``--wsgi --workers``: the new workers import the app again
    (the edited module answers), and an upload that an old worker holds when
    the signal arrives is answered in full by that worker before it exits.
    """
    import signal
    import socket

    from ._helpers import eventually

    module = wsgiSite / "cs_reloadable.py"
    module.write_text(RELOADABLE.format(version="old"))
    s = server("--wsgi", "cs_reloadable:app", "--workers", "2")
    for _ in range(2):
        s.waitFor(r"connserver: worker \d+ \(pid \d+\) ready")
    status, body = get(s.port, "/")
    assert status == 200 and versionAndPid(body)[0] == "old"

    upload = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    try:
        upload.sendall(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345"
        )
        started = wsgiSite / "upload-started"
        holder = int(eventually(lambda: started.exists() and started.read_text()))
        # A different length, so that no stale bytecode can stand in for it.
        module.write_text(RELOADABLE.format(version="brand-new"))
        s.process.send_signal(signal.SIGHUP)
        # Workers are replaced one at a time: wait for the holder's turn.
        s.waitFor(rf"connserver: draining worker \d+ \(pid {holder}\)")
        upload.sendall(b"67890")
        reply = b""
        while chunk := upload.recv(65536):
            reply += chunk
    finally:
        upload.close()
    head, _, answer = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    # The loop above read to the end: the draining worker closed the
    # connection after the response (with "Connection: close" when its
    # SIGTERM was handled before the last bytes arrived, else once idle).
    assert answer == f"old {holder} 1234567890".encode()

    s.waitFor("connserver: reload done: every worker replaced")
    answers = [versionAndPid(get(s.port, "/")[1]) for _ in range(6)]
    assert {version for version, _ in answers} == {"brand-new"}
    assert holder not in {pid for _, pid in answers}
    s.stop()
