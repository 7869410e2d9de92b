"""The public surface is deliberate (klein's test_exports habit)."""

from __future__ import annotations

import subprocess
import sys

import connserver


def test_allNamesExistAndAreDocumented() -> None:
    for name in connserver.__all__:
        obj = getattr(connserver, name)
        if callable(obj) and not name.startswith("__") and name != "Handler":
            assert obj.__doc__, f"connserver.{name} has no docstring"


def test_importDoesNotInstallReactor() -> None:
    code = "import sys, connserver; print('twisted.internet.reactor' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "False"


def test_embeddingIsPublic() -> None:
    """
    What ``twistd connserver`` adds (the access log, the status page, the
    metrics) is on the exported ``ConnectionServerService``, documented,
    and named in the package's documentation.
    """
    service = connserver.ConnectionServerService
    for name in ("addAccessLog", "addStatusPage", "addMetrics", "mount", "serving"):
        assert getattr(service, name).__doc__, f"ConnectionServerService.{name}"
    assert connserver.__doc__ is not None
    for name in ("addAccessLog", "addStatusPage", "addMetrics"):
        assert name in connserver.__doc__
