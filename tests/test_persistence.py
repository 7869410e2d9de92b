"""PersistencePolicy: RFC 9112 §9.3 and §9.6, in the order the policy applies them."""

from __future__ import annotations

from typing import Any

import pytest

from connserver._http.config import ServerConfig
from connserver._http.headers import Headers, connectionOptions
from connserver._http.persistence import (
    CLOSE_REASONS,
    PersistencePolicy,
    keepAliveTimeout,
)

POLICY = PersistencePolicy(ServerConfig())


def options(*lines: bytes) -> frozenset[bytes]:
    return connectionOptions(Headers([(b"Connection", line) for line in lines]))


@pytest.mark.parametrize(
    ("kwargs", "keepAlive", "reason", "connection", "keepAliveHeader"),
    [
        pytest.param(
            {"version": (1, 1), "requestOptions": options()},
            True,
            "http11-default",
            b"keep-alive",
            b"timeout=75",
            id="rfc9112-9.3-http11-persists",
        ),
        pytest.param(
            {"version": (1, 1), "requestOptions": options(b"keep-alive, close")},
            False,
            "client-close",
            b"close",
            None,
            id="rfc9112-9.3-close-in-list",
        ),
        pytest.param(
            {"version": (1, 1), "requestOptions": options(b"close,foo")},
            False,
            "client-close",
            b"close",
            None,
            id="rfc9112-9.3-close-first",
        ),
        pytest.param(
            {"version": (1, 1), "requestOptions": options(b"CLOSE")},
            False,
            "client-close",
            b"close",
            None,
            id="rfc9110-7.6.1-case",
        ),
        pytest.param(
            {"version": (1, 1), "requestOptions": options(b"foo", b"close")},
            False,
            "client-close",
            b"close",
            None,
            id="rfc9110-5.3-second-line",
        ),
        pytest.param(
            {"version": (1, 1), "requestOptions": options(b", close ,")},
            False,
            "client-close",
            b"close",
            None,
            id="rfc9110-5.6.1-empty-elements",
        ),
        pytest.param(
            {"version": (1, 1), "requestOptions": options(b"enclosed")},
            True,
            "http11-default",
            b"keep-alive",
            b"timeout=75",
            id="rfc9110-7.6.1-enclosed",
        ),
        pytest.param(
            {"version": (1, 0), "requestOptions": options(b"Keep-Alive, X-Foo")},
            True,
            "http10-keep-alive",
            b"keep-alive",
            b"timeout=75, max=999",
            id="rfc9112-9.3-http10-keep-alive-list",
        ),
        pytest.param(
            {
                "version": (1, 0),
                "requestOptions": options(b"keep-alive"),
                "responseLengthKnown": False,
            },
            False,
            "unknown-length-http10",
            b"close",
            None,
            id="rfc9112-9.3-http10-unknown-length",
        ),
        pytest.param(
            {"version": (1, 0), "requestOptions": options()},
            False,
            "http10-default",
            b"close",
            None,
            id="rfc9112-9.3-http10-default",
        ),
        pytest.param(
            {
                "version": (1, 1),
                "requestOptions": options(),
                "responseOptions": frozenset({b"close"}),
            },
            False,
            "handler-close",
            b"close",
            None,
            id="rfc9112-9.6-handler-close",
        ),
        pytest.param(
            {"version": (1, 1), "requestOptions": options(), "requestsServed": 999},
            True,
            "http11-default",
            b"keep-alive",
            b"timeout=75",
            id="max-requests-minus-one",
        ),
        pytest.param(
            {"version": (1, 1), "requestOptions": options(), "requestsServed": 1000},
            False,
            "max-requests",
            b"close",
            None,
            id="rfc9112-9.3-max-requests",
        ),
        pytest.param(
            {
                "version": (1, 0),
                "requestOptions": options(b"keep-alive"),
                "requestsServed": 1000,
            },
            False,
            "max-requests",
            b"close",
            None,
            id="max-requests-http10",
        ),
        pytest.param(
            {"version": (1, 1), "requestOptions": options(), "connectionAge": 3600.0},
            False,
            "max-age",
            b"close",
            None,
            id="max-age",
        ),
        pytest.param(
            {"version": (1, 1), "requestOptions": options(), "draining": True},
            False,
            "draining",
            b"close",
            None,
            id="draining",
        ),
        pytest.param(
            {
                "version": (1, 1),
                "requestOptions": options(),
                "requestBodyConsumable": False,
            },
            False,
            "unread-body",
            b"close",
            None,
            id="rfc9112-9.3-unread-body",
        ),
        pytest.param(
            {"version": (1, 1), "requestOptions": options(), "framingSafe": False},
            False,
            "unsafe-framing",
            b"close",
            None,
            id="rfc9112-6.3-unsafe-framing",
        ),
        pytest.param(
            {
                "version": (1, 0),
                "requestOptions": options(b"keep-alive"),
                "responseOptions": frozenset({b"close"}),
            },
            False,
            "handler-close",
            b"close",
            None,
            id="handler-close-beats-http10-keep-alive",
        ),
    ],
)
def test_decide(
    kwargs: dict[str, Any],
    keepAlive: bool,
    reason: str,
    connection: bytes | None,
    keepAliveHeader: bytes | None,
) -> None:
    decision = POLICY.decide(**kwargs)
    assert decision.keepAlive is keepAlive
    assert decision.reason == reason
    assert decision.connectionHeader == connection
    assert decision.keepAliveHeader == keepAliveHeader
    if not keepAlive:
        assert reason in CLOSE_REASONS


def test_orderClientCloseFirst() -> None:
    """Every close input at once: the client's close is the reason given."""
    decision = POLICY.decide(
        version=(1, 0),
        requestOptions=frozenset({b"close"}),
        responseOptions=frozenset({b"close"}),
        requestsServed=5000,
        draining=True,
        framingSafe=False,
    )
    assert decision.reason == "client-close"


def test_keepAliveDisabled() -> None:
    policy = PersistencePolicy(ServerConfig(keepAlive=False))
    decision = policy.decide(version=(1, 1), requestOptions=frozenset())
    assert (decision.keepAlive, decision.reason) == (False, "keepalive-disabled")


def test_keepAliveHeaderFollowsConfig() -> None:
    policy = PersistencePolicy(
        ServerConfig(idleTimeout=None, maxRequestsPerConnection=None)
    )
    decision = policy.decide(version=(1, 0), requestOptions=frozenset({b"keep-alive"}))
    assert decision.keepAlive
    assert decision.keepAliveHeader is None
    policy = PersistencePolicy(
        ServerConfig(idleTimeout=7.5, maxRequestsPerConnection=3)
    )
    decision = policy.decide(
        version=(1, 0), requestOptions=frozenset({b"keep-alive"}), requestsServed=2
    )
    assert decision.keepAliveHeader == b"timeout=7, max=1"


def test_http11KeepAliveHint() -> None:
    """
    HTTP/1.1 keep-alive responses advertise the idle timeout (keepAliveHint),
    rounded down to whole seconds and at least 1, as one decision built once;
    never on a close, nor without an idle timeout, nor when turned off.
    """
    policy = PersistencePolicy(ServerConfig(idleTimeout=2.9))
    first = policy.decide((1, 1), frozenset())
    assert (first.connectionHeader, first.keepAliveHeader) == (
        b"keep-alive",
        b"timeout=2",
    )
    # Prebuilt: the same object for every response, whatever the budget.
    assert policy.decide((1, 1), frozenset(), requestsServed=7) is first
    closing = policy.decide((1, 1), frozenset({b"close"}))
    assert (closing.connectionHeader, closing.keepAliveHeader) == (b"close", None)
    # Under a second: no hint (timeout=1 would promise more than is given).
    short = PersistencePolicy(ServerConfig(idleTimeout=0.25))
    assert short.decide((1, 1), frozenset()).keepAliveHeader is None
    short10 = short.decide((1, 0), frozenset({b"keep-alive"}))
    assert short10.keepAliveHeader == b"max=999"
    for config in (
        ServerConfig(idleTimeout=None),
        ServerConfig(keepAliveHint=False),
    ):
        decision = PersistencePolicy(config).decide((1, 1), frozenset())
        assert decision.keepAlive
        assert (decision.connectionHeader, decision.keepAliveHeader) == (None, None)
    # HTTP/1.0 keep-alive keeps its Keep-Alive field either way (it answers
    # the client's own keep-alive option).
    off = PersistencePolicy(ServerConfig(keepAliveHint=False, idleTimeout=5))
    decision = off.decide((1, 0), frozenset({b"keep-alive"}))
    assert decision.keepAliveHeader == b"timeout=5, max=999"


def test_keepAliveTimeoutRounding() -> None:
    assert [keepAliveTimeout(t) for t in (None, 0.001, 0.999, 1.0, 1.999, 60.0)] == [
        None,
        None,
        None,
        1,
        1,
        60,
    ]
