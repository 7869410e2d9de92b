"""ServerConfig: frozen, validated, documented."""

from __future__ import annotations

import dataclasses

import pytest

from connserver._http.config import ServerConfig, configFieldDocs


def test_defaults() -> None:
    config = ServerConfig()
    assert (config.idleTimeout, config.requestHeadTimeout, config.bodyTimeout) == (
        75.0,
        20.0,
        30.0,
    )
    assert (
        config.sendTimeout,
        config.abortTimeout,
        config.lingerTimeout,
        config.drainTimeout,
    ) == (60.0, 15.0, 5.0, 30.0)
    assert (
        config.maxRequestsPerConnection,
        config.maxConnectionAge,
        config.maxConnections,
    ) == (1000, 3600.0, 4096)
    assert (
        config.maxPipelinedRequests,
        config.maxRequestLineBytes,
        config.maxHeadBytes,
    ) == (16, 8192, 16384)
    assert (config.maxHeaderCount, config.maxBodyBytes) == (100, 1024 * 1024)
    # A bare LF line end is refused unless asked for (docs/parser.md).
    assert config.allowBareLf is False


def test_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ServerConfig().idleTimeout = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("idleTimeout", -1),
        ("idleTimeout", 0),
        ("idleTimeout", float("nan")),
        ("idleTimeout", float("inf")),
        ("idleTimeout", "10"),
        ("sendTimeout", True),
        ("maxConnections", 0),
        ("maxConnections", 1.5),
        ("maxPipelinedRequests", None),
        ("maxHeadBytes", -5),
        ("keepAlive", 1),
        ("allowBareLf", 1),
        ("allowBareLf", None),
        ("serverHeader", "bad\r\nheader"),
        ("drainGraceTimeout", -0.1),
    ],
)
def test_invalidValuesNameTheField(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"ServerConfig.{field} "):
        ServerConfig(**{field: value})  # type: ignore[arg-type]


def test_noneTurnsLimitsOff() -> None:
    config = ServerConfig(idleTimeout=None, maxConnections=None, maxBodyBytes=None)
    assert config.replace(idleTimeout=5).idleTimeout == 5
    assert config.maxConnections is None


def test_everyFieldIsDocumented() -> None:
    docs = configFieldDocs()
    assert set(docs) == {f.name for f in dataclasses.fields(ServerConfig)}
    assert all(len(text) > 20 for text in docs.values())
