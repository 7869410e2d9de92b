"""
``connserver._twisted.privates`` against the installed Twisted.

Each private name the module reaches for gets two checks: that it still
exists (and is what the module uses, not the fallback), so that these tests
fail the day a Twisted release renames it; and that the fallback gives the
same result as the private, so that such a Twisted stays correct.  Run
them before raising the bound on ``twisted`` in ``pyproject.toml``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import socket
from typing import Any

import pytest
from twisted.internet import tcp
from twisted.internet.endpoints import (
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    serverFromString,
)
from twisted.internet.protocol import Factory
from twisted.web import http_headers, resource
from twisted.web.resource import EncodingResourceWrapper, Resource
from twisted.web.server import GzipEncoderFactory
from twisted.web.test.requesthelper import DummyRequest

from connserver._twisted import privates

# Imported by name so that mypy treats it as untyped (it ships no stubs).
pytest_twisted: Any = importlib.import_module("pytest_twisted")


def test_nameEncoderExists() -> None:
    assert privates.HAS_NAME_ENCODER
    assert privates.encodeHeaderName == http_headers._nameEncoder.encode


@pytest.mark.parametrize(
    "name",
    [b"content-type", "x-custom-thing", b"ETAG", b"www-authenticate", b"te", b"dnt"],
)
def test_nameEncoderFallbackIsTheSame(name: str | bytes) -> None:
    fallback = privates._encodeHeaderNameFallback
    assert fallback(name) == http_headers._nameEncoder.encode(name)


def test_nameEncoderFallbackRefusesWhatTwistedRefuses() -> None:
    with pytest.raises(ValueError):
        privates._encodeHeaderNameFallback(b"bad name")
    with pytest.raises(ValueError):  # InvalidHeaderName is a ValueError
        http_headers._nameEncoder.encode(b"bad name")


def test_sanitizerExists() -> None:
    assert privates.HAS_SANITIZER
    assert privates.sanitizeFieldValue is http_headers._sanitizeLinearWhitespace


@pytest.mark.parametrize("value", [b"a\r\nb", b"a\nb\rc", b"plain", b"x\r\n"])
def test_sanitizerFallbackIsTheSame(value: bytes) -> None:
    expected = http_headers._sanitizeLinearWhitespace(value)
    assert privates._sanitizeFallback(value) == expected


def test_rawHeadersExists() -> None:
    assert privates.HAS_RAW_HEADERS
    headers = http_headers.Headers()
    headers.addRawHeader(b"x-a", b"1")
    raw = privates.rawHeaders(headers)
    assert raw is headers._rawHeaders
    assert raw == {b"X-A": [b"1"]}
    # What web.py writes into it, Headers reads back.
    raw[privates.encodeHeaderName(b"content-length")] = [b"3"]
    assert headers.getRawHeaders(b"content-length") == [b"3"]


def test_rawHeadersFallbackIsPublicAPI(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without it (or for a subclass), None: callers use the public methods."""

    class MyHeaders(http_headers.Headers):
        pass

    assert privates.rawHeaders(MyHeaders()) is None
    monkeypatch.setattr(privates, "HAS_RAW_HEADERS", False)
    assert privates.rawHeaders(http_headers.Headers()) is None


def test_encodingResourceExists() -> None:
    assert privates.HAS_ENCODING_RESOURCE
    assert privates._IEncodingResource is resource._IEncodingResource


def _gzipped() -> tuple[EncodingResourceWrapper, DummyRequest]:
    wrapped = EncodingResourceWrapper(Resource(), [GzipEncoderFactory()])
    request = DummyRequest([b""])
    request.requestHeaders.setRawHeaders(b"accept-encoding", [b"gzip"])
    return wrapped, request


def test_encoderForFallbackIsTheSame(monkeypatch: pytest.MonkeyPatch) -> None:
    wrapped, request = _gzipped()
    assert privates.encoderFor(wrapped, request) is not None
    assert privates.encoderFor(Resource(), request) is None
    monkeypatch.setattr(privates, "HAS_ENCODING_RESOURCE", False)
    wrapped, request = _gzipped()
    assert privates.encoderFor(wrapped, request) is not None
    assert privates.encoderFor(Resource(), request) is None


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("tcp:8080:interface=127.0.0.1:backlog=7", ("127.0.0.1", 8080, 7)),
        ("tcp6:8081:interface=\\:\\:1", ("::1", 8081, 50)),
    ],
)
def test_tcpEndpointAddressExists(
    description: str, expected: tuple[str, int, int]
) -> None:
    assert privates.HAS_TCP_ENDPOINT_ADDRESS
    endpoint = serverFromString(None, description)  # type: ignore[no-untyped-call]
    assert isinstance(endpoint, TCP4ServerEndpoint | TCP6ServerEndpoint)
    assert privates.tcpEndpointAddress(endpoint) == expected


def test_tcpEndpointAddressFallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without it, None: the listener is shared by descriptor instead."""
    monkeypatch.setattr(privates, "HAS_TCP_ENDPOINT_ADDRESS", False)
    endpoint = TCP4ServerEndpoint(None, 8080)  # type: ignore[no-untyped-call]
    assert privates.tcpEndpointAddress(endpoint) is None


def _adoptedUnixPort(path: str) -> Any:
    from twisted.internet import reactor

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(5)
    sock.setblocking(False)
    port = reactor.adoptStreamPort(  # type: ignore[attr-defined]
        sock.fileno(), socket.AF_UNIX, Factory()
    )
    return sock, port


def test_adoptedPortShutdownExists() -> None:
    """``_shouldShutdown`` is what decides ``shutdown(2)`` at close."""
    assert privates.HAS_ADOPTED_PORT_SHUTDOWN
    assert tcp.Port._shouldShutdown is True
    assert "if self._shouldShutdown:" in inspect.getsource(tcp._SocketCloser)


@pytest_twisted.ensureDeferred
async def test_keepSharedSocketOnStop(tmp_path: Any) -> None:
    """The shared socket still listens, and its path stays, after the stop."""
    path = str(tmp_path / "s.sock")
    sock, port = _adoptedUnixPort(path)
    try:
        privates.keepSharedSocketOnStop(port)
        assert port._shouldShutdown is False
        assert port.connected
        await port.stopListening()
        assert os.path.exists(path)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            client.connect(path)  # the parent's socket still listens
        finally:
            client.close()
    finally:
        sock.close()


@pytest_twisted.ensureDeferred
async def test_keepSharedSocketOnStopFallback(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``_shouldShutdown``, the path is kept all the same."""
    monkeypatch.setattr(privates, "HAS_ADOPTED_PORT_SHUTDOWN", False)
    path = str(tmp_path / "s.sock")
    sock, port = _adoptedUnixPort(path)
    try:
        privates.keepSharedSocketOnStop(port)
        assert port._shouldShutdown is True
        await port.stopListening()
        assert os.path.exists(path)
    finally:
        sock.close()
