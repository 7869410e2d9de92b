"""
``ConnectionServerService``: listening, and the order of a graceful stop
(stop accepting, drain, then the companions), first with fakes, then on a
real socket with a real ``ConnectionFactory``.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.internet.error import CannotListenError
from twisted.logger import capturedLogs, formatEvent

from connserver._http.config import ServerConfig
from connserver._running.service import (
    CallbackService,
    ConnectionServerService,
    ListeningService,
    SignalService,
    StartupError,
    describeHandler,
    describePort,
    serviceURL,
    startupErrorMessage,
)


class FakePort:
    def __init__(self, events: list[str], name: str) -> None:
        self.events = events
        self.name = name
        self.stopped: Deferred[None] = Deferred()

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 8080)

    def stopListening(self) -> Deferred[None]:
        self.events.append(f"stopListening {self.name}")
        return self.stopped


class FakeEndpoint:
    def __init__(self, events: list[str], name: str, error: Exception | None = None):
        self.port = FakePort(events, name)
        self.error = error

    def listen(self, factory: Any) -> Deferred[Any]:
        if self.error is not None:
            return fail(self.error)
        return succeed(self.port)


class FakeFactory:
    def __init__(self, events: list[str], config: ServerConfig) -> None:
        self.events = events
        self.config = config
        self.ports: list[Any] = []
        self.drained: Deferred[None] = Deferred()

    def addListeningPort(self, port: Any) -> None:
        self.ports.append(port)

    def drain(self, timeout: float | None = None) -> Deferred[None]:
        self.events.append(f"drain {timeout}")
        return self.drained


def makeService(
    drainTimeout: float | None = 7.0,
) -> tuple[ConnectionServerService, FakeFactory, list[str], list[FakeEndpoint]]:
    events: list[str] = []
    factory = FakeFactory(events, ServerConfig(drainTimeout=drainTimeout))
    endpoints = [FakeEndpoint(events, "a"), FakeEndpoint(events, "b")]
    service = ConnectionServerService(factory, endpoints)  # type: ignore[arg-type]
    companion = CallbackService(
        "companion",
        onStart=lambda: events.append("companion start"),
        onStop=lambda: events.append("companion stop"),
    )
    service.addCompanion(companion)
    return service, factory, events, endpoints


def test_startRegistersEveryPort() -> None:
    service, factory, events, endpoints = makeService()
    service.privilegedStartService()
    service.startService()
    assert factory.ports == [endpoints[0].port, endpoints[1].port]
    assert list(service.ports) == factory.ports
    assert events == ["companion start"]


def test_stopOrder() -> None:
    """Stop accepting, then drain, then the companions; fire only at the end."""
    service, factory, events, endpoints = makeService()
    service.startService()
    stopped = service.stopService()
    assert events == ["companion start", "stopListening b", "stopListening a"]
    endpoints[1].port.stopped.callback(None)
    assert "drain 7.0" not in events, "drain waits for every port"
    endpoints[0].port.stopped.callback(None)
    assert events[-1] == "drain 7.0"
    assert not stopped.called, "twistd must keep the reactor up during the drain"
    factory.drained.callback(None)
    assert events[-1] == "companion stop"
    assert stopped.called
    assert not service.running


def test_drainTimeoutNone() -> None:
    service, _, events, endpoints = makeService(drainTimeout=None)
    service.startService()
    for endpoint in endpoints:
        endpoint.port.stopped.callback(None)
    service.stopService()
    assert "drain None" in events


def test_drainTimeoutOverride() -> None:
    events: list[str] = []
    factory = FakeFactory(events, ServerConfig())
    service = ConnectionServerService(factory, [], drainTimeout=2.5)  # type: ignore[arg-type]
    service.startService()
    service.stopService()
    assert events == ["drain 2.5"]


def test_listenFailureRaisesAtStartup() -> None:
    """A port in use stops twistd at startup rather than serving nothing."""
    events: list[str] = []
    factory = FakeFactory(events, ServerConfig())
    endpoint = FakeEndpoint(events, "a", CannotListenError("127.0.0.1", 80, OSError()))
    service = ConnectionServerService(factory, [endpoint])  # type: ignore[arg-type]
    with pytest.raises(CannotListenError):
        service.privilegedStartService()


def test_listenFailureAsOneLine(capsys: pytest.CaptureFixture[str]) -> None:
    """
    For twistd: one logged line naming the listener and the reason, then a
    StartupError that sys.excepthook prints nothing for (exit status 1).
    """
    events: list[str] = []
    factory = FakeFactory(events, ServerConfig())
    inUse = CannotListenError(
        "127.0.0.1", 8080, OSError(errno.EADDRINUSE, "Address already in use")
    )
    service = ConnectionServerService(
        factory,  # type: ignore[arg-type]
        [FakeEndpoint(events, "a"), FakeEndpoint(events, "b", inUse)],
    )
    service.oneLineStartupErrors = True
    service.listeners[1].description = "tcp:8080"
    previousHook = sys.excepthook
    try:
        with capturedLogs() as logged, pytest.raises(StartupError) as raised:
            service.privilegedStartService()
        message = str(raised.value)
        assert message == (
            "connserver cannot listen on tcp:8080: Address already in use "
            "(another process is listening there)"
        )
        assert raised.value.__cause__ is None and raised.value.__suppress_context__
        critical = [e for e in logged if e["log_level"].name == "critical"]
        assert len(critical) == 1 and critical[0]["message"] == message
        assert sys.excepthook is not previousHook
        capsys.readouterr()
        sys.excepthook(StartupError, raised.value, None)
        assert capsys.readouterr() == ("", ""), "no traceback"
    finally:
        sys.excepthook = previousHook


def test_startupErrorMessages() -> None:
    denied = CannotListenError("", 80, OSError(errno.EACCES, "Permission denied"))
    assert startupErrorMessage("tcp:80", denied).startswith(
        "connserver cannot listen on tcp:80: Permission denied (a port below 1024"
    )
    assert startupErrorMessage(
        "tcp:99999", OverflowError("port must be 0-65535.\nx")
    ) == ("connserver cannot listen on tcp:99999: port must be 0-65535.")
    assert startupErrorMessage("x", ValueError()) == (
        "connserver cannot listen on x: ValueError"
    )


def test_signalServiceChainsThePreviousHandler() -> None:
    """
    The action runs in the reactor; a Python handler installed before (as
    twistd's for SIGUSR1 with --logfile) runs too; stop puts it back.
    """
    calls: list[str] = []
    scheduled: list[Callable[[], object]] = []

    class Reactor:
        def callFromThread(self, f: Callable[[], object]) -> None:
            scheduled.append(f)

    def previous(signum: int, frame: object) -> None:
        calls.append(f"previous {signum}")

    original = signal.signal(signal.SIGUSR1, previous)
    try:
        service = SignalService(
            "reopen",
            signal.SIGUSR1,
            lambda: calls.append("action"),
            Reactor(),  # type: ignore[arg-type]
        )
        service.startService()
        os.kill(os.getpid(), signal.SIGUSR1)
        assert calls == [f"previous {int(signal.SIGUSR1)}"]
        assert len(scheduled) == 1
        scheduled[0]()
        assert calls[-1] == "action"
        service.stopService()
        assert signal.getsignal(signal.SIGUSR1) is previous
    finally:
        signal.signal(signal.SIGUSR1, original)


def test_signalServiceDoesNotCallTheDefault() -> None:
    scheduled: list[Callable[[], object]] = []

    class Reactor:
        def callFromThread(self, f: Callable[[], object]) -> None:
            scheduled.append(f)

    original = signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    try:
        service = SignalService(
            "reopen",
            signal.SIGUSR1,
            lambda: None,
            Reactor(),  # type: ignore[arg-type]
        )
        service.startService()
        os.kill(os.getpid(), signal.SIGUSR1)  # SIG_DFL would end pytest
        assert len(scheduled) == 1
        service.stopService()
    finally:
        signal.signal(signal.SIGUSR1, original)


def test_failingDrainStillStopsCompanions() -> None:
    service, factory, events, endpoints = makeService()
    service.startService()
    for endpoint in endpoints:
        endpoint.port.stopped.callback(None)
    stopped = service.stopService()
    factory.drained.errback(RuntimeError("boom"))
    assert events[-1] == "companion stop"
    assert stopped.called
    # The failure was logged (and flushed here, so it does not fail the test).
    assert stopped.result is None  # type: ignore[attr-defined]


def test_listeningServiceStopBeforeListening() -> None:
    service = ListeningService(FakeEndpoint([], "a"), None)  # type: ignore[arg-type]
    d = service.stopService()
    assert d.called


def test_describePort() -> None:
    assert describePort(FakePort([], "a")) == "ipv4 127.0.0.1:8080"  # type: ignore[arg-type]


def test_companionsStartAfterPorts() -> None:
    started: list[str] = []

    class Companion(Service):
        def startService(self) -> None:
            started.append("companion")

    events: list[str] = []
    factory = FakeFactory(events, ServerConfig())
    service = ConnectionServerService(factory, [FakeEndpoint(events, "a")])  # type: ignore[arg-type]
    service.addCompanion(Companion())
    service.startService()
    assert factory.ports and started == ["companion"]


# A real socket, a real factory.


@pytest_twisted.inlineCallbacks
def test_gracefulStopOnRealSocket() -> Any:
    """
    stopService during a slow response: the port closes (a new connection
    is refused), the response completes with Connection: close, and the
    Deferred fires once the connection is gone.
    """
    factoryModule = pytest.importorskip("connserver._connection.factory")
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
    from twisted.internet.error import ConnectionRefusedError
    from twisted.internet.protocol import Factory

    from connserver._connection.message import Request, Response
    from tests._sockets import RawClient, connect

    release: Deferred[Response] = Deferred()
    handled: Deferred[None] = Deferred()

    def handler(request: Request) -> Deferred[Response]:
        handled.callback(None)
        return release

    factory = factoryModule.ConnectionFactory(
        handler, config=ServerConfig(drainTimeout=10), reactor=reactor
    )
    service = ConnectionServerService(
        factory, [TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")]
    )
    service.startService()
    port = service.ports[0].getHost().port  # type: ignore[attr-defined]

    drainStarted: Deferred[None] = Deferred()
    realDrain = factory.drain

    def drain(timeout: float | None = None) -> Deferred[None]:
        drainStarted.callback(None)
        return realDrain(timeout)

    factory.drain = drain

    client: RawClient = yield ensureDeferred(connect(port))
    client.transport.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    yield handled.addTimeout(5, reactor)
    stopped = service.stopService()
    yield drainStarted.addTimeout(5, reactor)
    with pytest.raises(ConnectionRefusedError):
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5).connect(
            Factory.forProtocol(RawClient)
        )
    assert not stopped.called
    release.callback(Response(200, {"Content-Type": "text/plain"}, b"done"))
    yield client.closed.addTimeout(5, reactor)
    yield stopped.addTimeout(5, reactor)
    head, _, body = client.data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nconnection: close" in head.lower()
    assert body == b"done"


# drainTimeout=None on a real ConnectionFactory (with Clock).


def busyConnection(drainTimeout: float | None) -> tuple[Any, Deferred[Any]]:
    """A connection whose handler has not answered yet (a pending Deferred)."""
    from connserver._connection.message import Request, Response
    from tests._harness import connect

    release: Deferred[Response] = Deferred()

    def handler(request: Request) -> Deferred[Response]:
        return release

    conn = connect(handler, drainTimeout=drainTimeout)
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert conn.output() == b""
    return conn, release


def test_drainTimeoutNoneWaitsPastTheConfigDeadline() -> None:
    """
    ``drainTimeout=None`` on the service waits for the last connection, however
    long it takes (it used to abort at config.drainTimeout while logging
    "deadline none").
    """
    from twisted.logger import LogEvent, formatEvent, globalLogPublisher

    from connserver._connection.message import Response

    conn, release = busyConnection(drainTimeout=1.0)
    service = ConnectionServerService(conn.factory, [], drainTimeout=None)
    service.startService()
    logged: list[LogEvent] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        stopped = service.stopService()
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert any("(deadline none)" in formatEvent(event) for event in logged)
    for _ in range(100):
        conn.clock.advance(60.0)
    assert not conn.transport.aborted
    assert conn.protocol.closeReason is None
    assert not stopped.called
    release.callback(Response(200, body=b"late"))
    assert b"late" in conn.output()
    assert conn.closing
    conn.lose()
    assert stopped.called
    assert conn.factory.stats.closes.get("drain-timeout", 0) == 0


def test_drainTimeoutFromConfigStillAborts() -> None:
    """The default reads config.drainTimeout and aborts at it."""
    conn, _ = busyConnection(drainTimeout=1.0)
    service = ConnectionServerService(conn.factory, [])
    assert service.drainTimeout == 1.0
    service.startService()
    stopped = service.stopService()
    conn.clock.advance(0.9)
    assert not conn.transport.aborted
    conn.clock.advance(0.2)
    assert conn.transport.aborted
    assert conn.protocol.closeReason == "drain-timeout"
    conn.lose()
    assert stopped.called


@pytest.mark.parametrize(
    ("args", "aborted"),
    [
        pytest.param((), True, id="not-given-uses-config"),
        pytest.param((None,), False, id="none-waits"),
        pytest.param((0.5,), True, id="seconds"),
    ],
)
def test_factoryDrainTimeoutArgument(args: tuple[Any, ...], aborted: bool) -> None:
    conn, _ = busyConnection(drainTimeout=1.0)
    done = conn.factory.drain(*args)
    conn.clock.advance(1.5)
    assert conn.transport.aborted is aborted
    if not aborted:
        conn.clock.advance(3600.0)
        assert not conn.transport.aborted and not done.called
    conn.lose()
    assert done.called


# The "serving" line, and what an embedded server adds publicly.


@pytest.mark.parametrize(
    "address, scheme, url",
    [
        (IPv4Address("TCP", "127.0.0.1", 8080), "http", "http://127.0.0.1:8080/"),
        (IPv4Address("TCP", "0.0.0.0", 8080), "http", "http://127.0.0.1:8080/"),
        (IPv4Address("TCP", "192.0.2.1", 80), "http", "http://192.0.2.1/"),
        (IPv4Address("TCP", "127.0.0.1", 443), "https", "https://127.0.0.1/"),
        (IPv4Address("TCP", "127.0.0.1", 8443), "https", "https://127.0.0.1:8443/"),
        (IPv6Address("TCP", "::", 8080), "http", "http://[::1]:8080/"),
        (IPv6Address("TCP", "fe80::1%eth0", 80), "http", "http://[fe80::1]/"),
        (UNIXAddress(b"/run/cs.sock"), "http", None),
    ],
)
def test_serviceURL(address: Any, scheme: str, url: str | None) -> None:
    assert serviceURL(address, scheme) == url


def test_describeHandler(tmp_path: Any) -> None:
    from twisted.web.resource import Resource

    from connserver import PrefixMount, StaticFiles, WebResourceHandler

    static = StaticFiles(tmp_path)
    assert describeHandler(static) == f"static: {os.path.realpath(tmp_path)}"
    assert describeHandler(PrefixMount(static, {})) == describeHandler(static)
    web = WebResourceHandler(Resource())
    assert describeHandler(web) == "twisted.web: Resource"
    assert describeHandler(test_describeHandler) == (
        "handler: tests.test_service.test_describeHandler"
    )


@pytest_twisted.inlineCallbacks
def test_embeddedAccessLogStatusAndMetrics(tmp_path: Any) -> Any:
    """
    The public way to get what ``twistd connserver`` adds: an access log
    (created at start), the status page and the metrics, mounted in front
    of the handler; and one "serving" line per listener.
    """
    pytest.importorskip("prometheus_client")
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ServerEndpoint

    from connserver import ConnectionFactory, StaticFiles
    from tests._sockets import connect

    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "hello.txt").write_bytes(b"hello\n")
    factory = ConnectionFactory(StaticFiles(tmp_path / "www"), reactor=reactor)
    service = ConnectionServerService(
        factory, [TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")]
    )
    log = tmp_path / "access.log"
    service.addAccessLog(str(log))
    service.addStatusPage("/status")
    service.addMetrics("/metrics")
    with capturedLogs() as events:
        service.privilegedStartService()
        service.startService()
    port = service.ports[0].getHost().port  # type: ignore[attr-defined]
    lines = [formatEvent(e) for e in events]
    assert f"serving http://127.0.0.1:{port}/ (static: {tmp_path / 'www'})" in lines
    assert log.exists(), "created at start"
    try:
        answers = {}
        for path in (b"/hello.txt", b"/status?format=json", b"/metrics"):
            client = yield ensureDeferred(connect(port))
            client.transport.write(
                b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            yield client.closed.addTimeout(5, reactor)
            answers[path] = client.data
    finally:
        yield service.stopService()
    assert answers[b"/hello.txt"].endswith(b"\r\n\r\nhello\n")
    assert answers[b"/status?format=json"].startswith(b"HTTP/1.1 200 ")
    assert b"application/json" in answers[b"/status?format=json"]
    assert b"connserver_" in answers[b"/metrics"]
    written = log.read_text()
    assert '"GET /hello.txt HTTP/1.1" 200 6 ' in written
    assert '"GET /metrics HTTP/1.1" 200 ' in written
    assert log.stat().st_mode & 0o777 == 0o640
