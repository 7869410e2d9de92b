"""
``connserver._running.settings``: the settings a worker receives are the
parent's, the application loaded and the certificates read again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connserver._running.settings import (
    SettingsError,
    settingsFromJSON,
    settingsToJSON,
    workerSettings,
)
from connserver.tap import Options
from tests._certs import makeCertificate


def _parsed(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def test_roundTripThroughJSON(tmp_path: Path) -> None:
    files = makeCertificate(tmp_path)
    options = _parsed(
        "--handler", "tests._slowapp:app",
        "--listen", "tcp:0:interface=127.0.0.1",
        "--listen", f"ssl:0:privateKey={files.privateKey}:certKey={files.certificate}",
        "--https", "0",
        "--certificate", str(files.certificate), "--privkey", str(files.privateKey),
        "--proxy", "/api=http://127.0.0.1:9000",
        "--trusted-proxies", "10.0.0.0/8,::1",
        "--idle-timeout", "7",
        "--status-path", "/status",
        "--access-log", str(tmp_path / "access.log"),
    )  # fmt: skip
    settings = options.settings()
    data = json.loads(json.dumps(settingsToJSON(settings)))
    again = settingsFromJSON(data)
    assert again.config == settings.config
    assert again.application is settings.application  # the same module's
    assert [(t.port, t.interface, t.backlog, t.description) for t in again.tls] == [
        (t.port, t.interface, t.backlog, t.description) for t in settings.tls
    ]
    assert [t.options.names for t in again.tls] == [
        t.options.names for t in settings.tls
    ]
    # Read again, not shared with the parent's.
    assert again.tls[0].options is not settings.tls[0].options
    for name in ("listen", "proxies", "statusPath", "accessLog", "cwd", "workers"):
        assert getattr(again, name) == getattr(settings, name), name


def test_sharedCertificatesStayShared(tmp_path: Path) -> None:
    """One set of certificates for two listeners: one reload for both."""
    files = makeCertificate(tmp_path)
    options = _parsed(
        "--https",
        "0",
        "--listen",
        "ssl:0",
        "--certificate",
        str(files.certificate),
        "--privkey",
        str(files.privateKey),
    )
    again = settingsFromJSON(settingsToJSON(options.settings()))
    assert again.tls[0].options is again.tls[1].options


def test_staticSettingsRoundTrip(tmp_path: Path) -> None:
    (tmp_path / "404.html").write_text("gone")
    options = _parsed(
        "--path", str(tmp_path),
        "--error-page", "404=/404.html",
        "--fallback", "/index.html",
        "--listing", "--no-compress",
    )  # fmt: skip
    settings = workerSettings(options.settings())
    assert settingsFromJSON(json.loads(json.dumps(settingsToJSON(settings)))) == (
        settings
    )


def test_aHandlerGoneIsOneLine() -> None:
    settings = settingsToJSON(_parsed("--handler", "tests._slowapp:app").settings())
    settings["handlerSpec"] = "tests._slowapp:nothingHere"
    with pytest.raises(SettingsError, match="has no attribute nothingHere"):
        settingsFromJSON(settings)
