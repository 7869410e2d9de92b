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
        (["--wsgi", "tests.wsgiapps"], "expected MODULE:ATTRIBUTE"),
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
