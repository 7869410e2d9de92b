"""
``--proxy-no-upgrade`` and ``--proxy-tunnel-timeout`` (issue 21): parsing,
the usage errors, the settings a worker receives as JSON, and what reaches
each ``--proxy`` mount's ``ReverseProxy`` (``allowUpgrade``,
``tunnelIdleTimeout``).  What those do to a request is in
``test_proxy_tunnel.py`` (with ``Clock``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.python import usage

from connserver import ReverseProxy, tap
from connserver._running.settings import settingsFromJSON, settingsToJSON


def parse(*args: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(args))
    return options


PROXIES = (
    "--proxy",
    "/api=http://127.0.0.1:9000",
    "--proxy",
    "/b=http://127.0.0.1:9001",
)


def proxiesOf(options: tap.Options) -> list[ReverseProxy]:
    service: Any = tap.makeService(options)
    return [service.factory.handler.route(path) for path in (b"/api", b"/b")]


def test_theDefaults() -> None:
    settings = parse(*PROXIES).settings()
    assert settings.proxyUpgrade is True
    assert settings.proxyTunnelTimeout == 300.0
    for proxy in proxiesOf(parse(*PROXIES)):
        assert proxy.allowUpgrade is True
        assert proxy.tunnelIdleTimeout == 300.0


def test_theFlagsReachEveryMount() -> None:
    options = parse(*PROXIES, "--proxy-no-upgrade", "--proxy-tunnel-timeout", "2.5")
    assert options.settings().proxyUpgrade is False
    assert options.settings().proxyTunnelTimeout == 2.5
    for proxy in proxiesOf(options):
        assert proxy.allowUpgrade is False
        assert proxy.tunnelIdleTimeout == 2.5


@pytest.mark.parametrize("word", ["none", "off", "NONE"])
def test_noTunnelTimeout(word: str) -> None:
    options = parse(*PROXIES, "--proxy-tunnel-timeout", word)
    assert options.settings().proxyTunnelTimeout is None
    for proxy in proxiesOf(options):
        assert proxy.tunnelIdleTimeout is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--proxy-no-upgrade"], "--proxy-no-upgrade applies to --proxy", id="no-upgrade-alone"),
        pytest.param(["--proxy-tunnel-timeout", "5"], "--proxy-tunnel-timeout applies to --proxy", id="tunnel-alone"),
        pytest.param([*PROXIES, "--proxy-tunnel-timeout", "0"], "--proxy-tunnel-timeout '0': expected a positive number of seconds or none", id="tunnel-zero"),
        pytest.param([*PROXIES, "--proxy-tunnel-timeout", "-3"], "expected a positive number of seconds or none", id="tunnel-negative"),
        pytest.param([*PROXIES, "--proxy-tunnel-timeout", "soon"], "expected a positive number of seconds or none", id="tunnel-word"),
        pytest.param([*PROXIES, "--proxy-tunnel-timeout", "inf"], "or none", id="tunnel-inf"),
        pytest.param([*PROXIES, "--proxy-tunnel-timeout", "nan"], "or none", id="tunnel-nan"),
        pytest.param([*PROXIES, "--proxy-tunnel-timeout", ""], "or none", id="tunnel-empty"),
        pytest.param([*PROXIES, "--proxy-timeout", ""], "or none", id="timeout-empty"),
    ],
)  # fmt: skip
def test_usageErrors(args: list[str], message: str) -> None:
    with pytest.raises(usage.UsageError) as raised:
        parse(*args)
    text = str(raised.value)
    assert message in text
    assert "\n" not in text, "one line"


@pytest.mark.parametrize(
    "flags",
    [
        (),
        ("--proxy-no-upgrade", "--proxy-tunnel-timeout", "none"),
        ("--proxy-tunnel-timeout", "42"),
    ],
)
def test_workersGetTheSettings(flags: tuple[str, ...]) -> None:
    """A worker rebuilds its settings from JSON: the two survive it."""
    settings = parse(*PROXIES, "--workers", "2", *flags).settings()
    again = settingsFromJSON(json.loads(json.dumps(settingsToJSON(settings))))
    assert again.proxyUpgrade == settings.proxyUpgrade
    assert again.proxyTunnelTimeout == settings.proxyTunnelTimeout
    assert again == settings


@pytest.mark.parametrize("value", [0, -1, float("inf"), float("nan")])
def test_thePythonAPIRefusesTheSameValues(value: float) -> None:
    from twisted.internet.testing import MemoryReactorClock

    with pytest.raises(ValueError, match="tunnelIdleTimeout"):
        ReverseProxy(
            "http://127.0.0.1:9000",
            reactor=MemoryReactorClock(),
            tunnelIdleTimeout=value,
        )
