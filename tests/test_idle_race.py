"""
The idle-close race behind the real nginx (docs/deployment.md): with
connserver's idle timeout longer than nginx's upstream ``keepalive_timeout``
no request fails; with it shorter, nginx sends requests on connections
connserver is closing and answers 502.

Short timeouts (1 s and 2 s), 10 loops of 20 POSTs each at random gaps of
0.9-1.2 s (around the shorter timeout, where the race is), with 20 ms of
one-way latency between nginx and connserver, as between two hosts (on
loopback the window is a fraction of a millisecond).  POST and
``proxy_next_upstream off``: nginx never retries such a request, so every
lost race is a 502.  Both settings run at once: about 25 s.
``bench/bench_idle_race.py`` runs more requests and settings.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer

from ._proxies import NGINX
from ._race import RaceResult, describe, runRace

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(NGINX is None, reason="nginx is not installed"),
]

SETTINGS = {"loops": 10, "requests": 20, "gaps": (0.9, 1.2), "latency": 0.02}


@pytest_twisted.ensureDeferred
async def test_idleTimeoutLongerThanTheProxysLosesNothing(tmp_path: Path) -> None:
    kept, broken = await defer.gatherResults(
        [
            defer.ensureDeferred(
                runRace(tmp_path / "kept", serverIdle=2.0, proxyIdle=1.0, **SETTINGS)  # type: ignore[arg-type]
            ),
            defer.ensureDeferred(
                runRace(tmp_path / "broken", serverIdle=1.0, proxyIdle=2.0, **SETTINGS)  # type: ignore[arg-type]
            ),
        ],
        consumeErrors=True,
    )
    print(describe(kept, ["kept"]), describe(broken, ["broken"]), sep="\n")
    total = SETTINGS["loops"] * SETTINGS["requests"]  # type: ignore[operator]
    # The rule kept: nginx closes its idle connections first, connserver
    # sees them go (peer-closed) and never closes one under a request.
    assert kept.outcomes == {"200": total}, describe(kept)
    assert kept.closes["idle-timeout"] == 0, describe(kept)
    # The rule broken: connserver's idle closes meet nginx's requests.
    assert isinstance(broken, RaceResult)
    assert broken.outcomes["502"] > 0, describe(broken)
    assert broken.outcomes["200"] + broken.outcomes["502"] == total, describe(broken)
    assert broken.closes["idle-timeout"] > 0, describe(broken)
