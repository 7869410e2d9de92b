"""
``ReverseProxy`` against real upstreams on 127.0.0.1: twisted.web, connserver
itself and nginx (skipped when /usr/sbin/nginx is absent).  The echo
upstreams answer with the request fields they received and with their own
hop-by-hop fields (``Connection: X-Up``, ``X-Up: 1``, ``Keep-Alive:
timeout=5``), so that each test sees both directions.  Every wait is bounded;
they wait on real sockets, so they are marked slow.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, protocol, task
from twisted.web import resource, server
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from connserver import ReverseProxy, ServerConfig
from connserver._connection.message import Request, Response
from connserver._http.persistence import keepAliveTimeout
from connserver._http.records import RequestRecord

from ._harness import ParsedResponse, parseResponses
from ._helpers import ensureDeferred, eventually, eventuallyDeferred
from ._helpers import realReactor as _reactor
from ._sockets import Server, bounded, connect, finish, serve

pytestmark = pytest.mark.slow

NGINX = "/usr/sbin/nginx"


# -- upstreams ------------------------------------------------------------------

#: The upstream's own hop-by-hop fields, and one end-to-end field.
UPSTREAM_FIELDS = [
    (b"Connection", b"X-Up"),
    (b"X-Up", b"1"),
    (b"Keep-Alive", b"timeout=5"),
    (b"Proxy-Authenticate", b"Basic"),
    (b"X-End-Response", b"e2e"),
]


class EchoResource(resource.Resource):
    """twisted.web: the request's fields as JSON, the upstream fields above."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        body = request.content.read()
        for name, value in UPSTREAM_FIELDS:
            request.responseHeaders.addRawHeader(name, value)
        # No Content-Length: twisted.web chunks the body for HTTP/1.1.
        request.write(
            _echo(
                request.method,
                request.uri,
                list(request.requestHeaders.getAllRawHeaders()),
                len(body),
            )
        )
        request.finish()
        return server.NOT_DONE_YET  # type: ignore[no-any-return]


def _echo(method: bytes, target: bytes, headers: list[Any], size: int) -> bytes:
    fields = []
    for name, values in headers:
        if isinstance(values, bytes):
            values = [values]
        for value in values:
            fields.append([name.decode().lower(), value.decode()])
    return json.dumps(
        {
            "method": method.decode(),
            "target": target.decode(),
            "fields": fields,
            "size": size,
        }
    ).encode()


async def echoHandler(request: Request) -> Response:
    """connserver: the same echo (its Connection line lists X-Up after its own)."""
    body = await request.readBody()
    return Response(
        200,
        UPSTREAM_FIELDS,
        _echo(request.method, request.target, list(request.headers), len(body)),
    )


async def twistedWebUpstream() -> Any:
    site = server.Site(EchoResource())
    site.noisy = False
    port = _reactor().listenTCP(0, site, interface="127.0.0.1")
    return port


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


NGINX_TEMPLATE = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_timeout 75 7;
    {http}
    server {{
        listen 127.0.0.1:{port};
        {server}
    }}
}}
"""

#: nginx as an echo upstream: the request fields the tests look at, and
#: its own hop-by-hop fields.
NGINX_ECHO = """
        location / {
            add_header X-Up 1;
            add_header Connection X-Up;
            add_header X-End-Response e2e;
            default_type application/json;
            return 200 '{"method":"$request_method","target":"$request_uri","fields":[["x-client","$http_x_client"],["proxy-connection","$http_proxy_connection"],["keep-alive","$http_keep_alive"],["te","$http_te"],["proxy-authorization","$http_proxy_authorization"],["x-end","$http_x_end"],["host","$http_host"],["via","$http_via"],["x-forwarded-for","$http_x_forwarded_for"],["forwarded","$http_forwarded"]],"size":0}';
        }
"""

#: nginx as the proxy, the way the issue measured it: proxy_pass with an
#: upstream keepalive pool.
NGINX_PROXY_HTTP = "upstream up {{ server 127.0.0.1:{upstream}; keepalive 8; }}"
NGINX_PROXY = """
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
"""


@contextlib.contextmanager
def runNginx(directory: Path, server: str, http: str = "") -> Iterator[int]:
    """nginx with ``server`` (and ``http``) on a free port of 127.0.0.1."""
    if not os.path.exists(NGINX):
        pytest.skip(f"{NGINX} is not installed")
    port = freePort()
    (directory / "nginx.conf").write_text(
        NGINX_TEMPLATE.format(dir=directory, port=port, server=server, http=http)
    )
    process = subprocess.Popen(
        [NGINX, "-p", str(directory), "-c", str(directory / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                if process.poll() is not None:
                    raise AssertionError(
                        "nginx did not start: "
                        + (directory / "error.log").read_text(errors="replace")
                    ) from None
                return False
            return True

        eventually(
            listening,
            timeout=10,
            message=lambda: (
                "nginx did not start: "
                + (directory / "error.log").read_text(errors="replace")
            ),
        )
        yield port
    finally:
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture
def nginxUpstream(tmp_path: Path) -> Iterator[int]:
    with runNginx(tmp_path, NGINX_ECHO) as port:
        yield port


async def proxyTo(
    url: str, **options: Any
) -> tuple[Server, ReverseProxy, list[RequestRecord]]:
    proxy = ReverseProxy(url, reactor=_reactor(), **options)
    front = await serve(proxy)
    records: list[RequestRecord] = []
    front.factory.requestObservers.append(records.append)
    return front, proxy, records


async def closeProxy(front: Server, proxy: ReverseProxy, *others: Server) -> None:
    # The pool's idle connections first: their idle timers are connserver's.
    await bounded(proxy.close())
    await finish(front, *others)


def echoed(response: ParsedResponse) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for name, value in json.loads(response.body)["fields"]:
        if value != "":
            fields.setdefault(name, []).append(value)
    return fields


CLIENT_REQUEST = (
    b"GET /api/x?q=1 HTTP/1.1\r\n"
    b"Host: front.example\r\n"
    b"Connection: keep-alive, X-Client\r\n"
    b"X-Client: secret\r\n"
    b"Proxy-Connection: keep-alive\r\n"
    b"Keep-Alive: 300\r\n"
    b"TE: trailers\r\n"
    b"Proxy-Authorization: Basic Zm9vOmJhcg==\r\n"
    b"X-End: e2e\r\n"
    b"\r\n"
)

#: Fields that must never reach the upstream from CLIENT_REQUEST.
CLIENT_HOP_BY_HOP = {
    "connection",
    "x-client",
    "proxy-connection",
    "keep-alive",
    "te",
    "proxy-authorization",
    "transfer-encoding",
    "upgrade",
}


def assertOwnConnectionFields(response: ParsedResponse) -> None:
    """
    The response's Connection and Keep-Alive are the front connserver's own
    (its keep-alive hint for its idle timeout), never the upstream's
    (``Keep-Alive: timeout=5``, ``Connection: X-Up``).
    """
    names = [name for name, _ in response.headers]
    assert names.count(b"connection") == 1, response.headers
    assert names.count(b"keep-alive") == 1, response.headers
    assert response.header(b"connection") == b"keep-alive"
    hint = keepAliveTimeout(ServerConfig().idleTimeout)
    assert hint is not None
    assert response.header(b"keep-alive") == b"timeout=%d" % hint


def checkForwarded(response: ParsedResponse, upstreamListsXUp: bool = True) -> None:
    assert response.status == 200
    fields = echoed(response)
    assert not CLIENT_HOP_BY_HOP & set(fields), fields
    assert fields["x-end"] == ["e2e"]
    assert fields["host"] == ["front.example"]
    assert fields["via"] == ["1.1 connserver"]
    assert fields["x-forwarded-for"] == ["127.0.0.1"]
    assert fields["forwarded"] == ["for=127.0.0.1;proto=http;host=front.example"]
    names = {name for name, _ in response.headers}
    # The upstream's hop-by-hop fields stop here; its end-to-end ones pass.
    assert b"x-up" not in names
    assert b"proxy-authenticate" not in names
    assertOwnConnectionFields(response)
    assert response.header(b"x-end-response") == b"e2e"
    assert response.header(b"via") == b"1.1 connserver"


@ensureDeferred
async def test_twistedWebUpstreamHopByHopBothWays() -> None:
    upstream = await twistedWebUpstream()
    front, proxy, records = await proxyTo(f"http://127.0.0.1:{upstream.getHost().port}")
    try:
        client = await connect(front, request=CLIENT_REQUEST)
        [response] = await client.waitResponses(1)
        checkForwarded(response)
        assert json.loads(response.body)["target"] == "/api/x?q=1"
        # twisted.web chunks; connserver frames for its client again: the
        # body came whole with its head, so with its length.
        assert response.header(b"transfer-encoding") is None
        assert response.header(b"content-length") == b"%d" % len(response.body)
        client.close()
    finally:
        await upstream.stopListening()
        await closeProxy(front, proxy)
    assert records[0].status == 200 and records[0].note is None


@ensureDeferred
async def test_connserverUpstreamHopByHop() -> None:
    upstream = await serve(echoHandler)
    front, proxy, _ = await proxyTo(f"http://127.0.0.1:{upstream.portNumber}")
    try:
        client = await connect(front, request=CLIENT_REQUEST)
        [response] = await client.waitResponses(1)
        # connserver (the upstream) keeps its handler's Connection option
        # beside its own keep-alive, so X-Up is this hop's: the proxy drops
        # it, as with any upstream.
        fields = echoed(response)
        assert not CLIENT_HOP_BY_HOP & set(fields), fields
        assert fields["x-end"] == ["e2e"]
        assert response.header(b"x-up") is None
        assertOwnConnectionFields(response)
        client.close()
    finally:
        await closeProxy(front, proxy, upstream)


@ensureDeferred
async def test_nginxUpstreamHopByHopBothWays(nginxUpstream: int) -> None:
    front, proxy, _ = await proxyTo(f"http://127.0.0.1:{nginxUpstream}")
    try:
        client = await connect(front, request=CLIENT_REQUEST)
        [response] = await client.waitResponses(1)
        checkForwarded(response)
        client.close()
    finally:
        await closeProxy(front, proxy)


@ensureDeferred
async def test_tenRequestsReuseOneUpstreamConnection() -> None:
    upstream = await serve(echoHandler)
    front, proxy, _ = await proxyTo(f"http://127.0.0.1:{upstream.portNumber}")
    try:
        client = await connect(front)
        for i in range(10):
            client.write(b"GET /r%d HTTP/1.1\r\nHost: h\r\n\r\n" % i)
            responses = await client.waitResponses(i + 1)
            assert responses[i].status == 200
        assert len(upstream.protocols) == 1
        assert upstream.protocols[0].requestsServed == 10
        # The pooled upstream connection has Nagle's algorithm off: Twisted's
        # client writes a head and a body apart, and with Nagle on the second
        # write waits for the upstream's delayed ACK (half the proxy's
        # throughput went to that wait).
        [pooled] = proxy.pool.idle
        assert proxy.pool.opened == 1
        handle = pooled.transport.getHandle()
        assert handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        client.close()
    finally:
        await closeProxy(front, proxy, upstream)


@ensureDeferred
async def test_http10ClientGetsChunkedUpstreamBodyDelimited() -> None:
    upstream = await twistedWebUpstream()
    front, proxy, _ = await proxyTo(f"http://127.0.0.1:{upstream.getHost().port}")
    try:
        # Without keep-alive: close-delimited.
        client = await connect(front, request=b"GET /a HTTP/1.0\r\nHost: h\r\n\r\n")
        data = await client.waitClosed()
        [response] = parseResponses(data, eof=True)
        assert response.header(b"transfer-encoding") is None
        assert json.loads(response.body)["target"] == "/a"
        assert b"HTTP/1.1 200 OK\r\n" in data.split(b"\r\n\r\n")[0] + b"\r\n"
    finally:
        await upstream.stopListening()
        await closeProxy(front, proxy)


@ensureDeferred
async def test_http10ClientGetsLengthWhenUpstreamGivesOne() -> None:
    upstream = await serve(echoHandler)
    front, proxy, _ = await proxyTo(f"http://127.0.0.1:{upstream.portNumber}")
    try:
        client = await connect(
            front,
            request=b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        )
        [response] = await client.waitResponses(1)
        assert response.header(b"content-length") == str(len(response.body)).encode()
        assert response.header(b"connection") == b"keep-alive"
        # No Host from the client: the upstream's is sent.
        assert echoed(response)["host"] == [f"127.0.0.1:{upstream.portNumber}"]
        client.close()
    finally:
        await closeProxy(front, proxy, upstream)


@ensureDeferred
async def test_refusedUpstreamIs502() -> None:
    port = freePort()
    front, proxy, records = await proxyTo(f"http://127.0.0.1:{port}")
    try:
        client = await connect(front, request=b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        [response] = await client.waitResponses(1)
        assert response.status == 502
        assert response.body == b"502 Bad Gateway\n"
        assert str(port).encode() not in client.data
        # The connection stays usable.
        client.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        await client.waitResponses(2)
        client.close()
    finally:
        await closeProxy(front, proxy)
    assert [r.note for r in records] == ["upstream-refused", "upstream-refused"]
    assert records[0].closeReason is None


class Silent(protocol.Protocol):
    """An upstream that reads the request and never answers."""

    def __init__(self, events: dict[str, defer.Deferred[Any]]) -> None:
        self.events = events

    def dataReceived(self, data: bytes) -> None:
        d = self.events.pop("received", None)
        if d is not None:
            d.callback(data)

    def connectionLost(self, reason: Any = None) -> None:
        d = self.events.pop("lost", None)
        if d is not None:
            d.callback(None)


class SplitReactor:
    """The real reactor for sockets, a ``Clock`` for time."""

    def __init__(self, clock: task.Clock) -> None:
        self._clock = clock

    def callLater(self, delay: float, *args: Any, **kwargs: Any) -> Any:
        if delay == 0:
            # Not a timeout: the end of the reactor's turn (the proxy sends
            # what a turn queued then, UpstreamPool.afterTurn).
            return _reactor().callLater(0, *args, **kwargs)
        return self._clock.callLater(delay, *args, **kwargs)

    def seconds(self) -> float:
        return self._clock.seconds()

    def __getattr__(self, name: str) -> Any:
        return getattr(_reactor(), name)


async def silentUpstream() -> tuple[Any, dict[str, defer.Deferred[Any]]]:
    events: dict[str, defer.Deferred[Any]] = {
        "received": defer.Deferred(),
        "lost": defer.Deferred(),
    }
    factory = protocol.Factory.forProtocol(lambda: Silent(events))
    port = _reactor().listenTCP(0, factory, interface="127.0.0.1")
    return port, events


@ensureDeferred
async def test_upstreamThatDoesNotAnswerIs504() -> None:
    port, events = await silentUpstream()
    received, lost = events["received"], events["lost"]
    clock = task.Clock()
    proxy = ReverseProxy(
        f"http://127.0.0.1:{port.getHost().port}",
        reactor=SplitReactor(clock),  # type: ignore[arg-type]
        responseTimeout=30,
    )
    front = await serve(proxy)
    records: list[RequestRecord] = []
    front.factory.requestObservers.append(records.append)
    try:
        client = await connect(front, request=b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
        await bounded(received)
        clock.advance(29)
        assert client.data == b""
        clock.advance(1)
        [response] = await client.waitResponses(1)
        assert response.status == 504
        assert response.body == b"504 Gateway Timeout\n"
        await bounded(lost)  # the upstream request was abandoned
        client.close()
    finally:
        await port.stopListening()
        await closeProxy(front, proxy)
    assert records[0].note == "upstream-timeout"
    assert clock.getDelayedCalls() == []


@ensureDeferred
async def test_clientDisconnectCancelsUpstreamRequest() -> None:
    port, events = await silentUpstream()
    received, lost = events["received"], events["lost"]
    front, proxy, records = await proxyTo(f"http://127.0.0.1:{port.getHost().port}")
    try:
        client = await connect(front, request=b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
        await bounded(received)
        # A FIN alone is a half-close (the response would still be sent):
        # going away is a reset.
        client.transport.abortConnection()
        await bounded(lost)
        await client.waitClosed()
    finally:
        await port.stopListening()
        await closeProxy(front, proxy)
    assert records == []
    # The proxy's response timer went with the request.
    assert not [
        c
        for c in _reactor().getDelayedCalls()
        if "_proxy" in getattr(getattr(c.func, "__self__", None), "__module__", "")
    ]


@ensureDeferred
async def test_idleUpstreamCloseRaceIsRetriedForGet() -> None:
    """
    The upstream closes idle connections after 1 s, the proxy keeps them
    longer, and requests come about 1 s apart: some land on a connection
    the upstream is closing.  Twisted's pool retries those (bodiless GET)
    on a new connection, so the client sees no error.
    """
    upstream = await serve(echoHandler, idleTimeout=1.0)
    front, proxy, records = await proxyTo(
        f"http://127.0.0.1:{upstream.portNumber}", upstreamIdleTimeout=30
    )
    try:
        client = await connect(front)
        for i, delay in enumerate([0.0, 0.98, 1.0, 1.02, 0.99, 1.01]):
            await task.deferLater(_reactor(), delay, lambda: None)
            client.write(b"GET /r HTTP/1.1\r\nHost: h\r\n\r\n")
            responses = await client.waitResponses(i + 1)
            assert responses[i].status == 200, responses[i]
        client.close()
    finally:
        await closeProxy(front, proxy, upstream)
    assert [r.status for r in records] == [200] * 6
    # The upstream did close idle connections under the proxy.
    assert len(upstream.protocols) > 1


@ensureDeferred
async def test_upstreamIdleTimeoutShorterThanUpstreamsAvoidsRace() -> None:
    upstream = await serve(echoHandler, idleTimeout=1.0)
    front, proxy, records = await proxyTo(
        f"http://127.0.0.1:{upstream.portNumber}", upstreamIdleTimeout=0.3
    )
    try:
        client = await connect(front)
        for i in range(3):
            client.write(b"GET /r HTTP/1.1\r\nHost: h\r\n\r\n")
            await client.waitResponses(i + 1)
            # The proxy closes its idle upstream connection first.
            await eventuallyDeferred(
                lambda: upstream.factory.stats.active == 0, timeout=5
            )
        client.close()
    finally:
        await closeProxy(front, proxy, upstream)
    assert [r.status for r in records] == [200] * 3
    assert len(upstream.protocols) == 3
    assert [p.closeReason for p in upstream.protocols] == ["peer-closed"] * 3


class OneAnswerPerConnection(protocol.Protocol):
    """
    An upstream that answers the first request of each connection and
    closes on the second without a byte: the idle-close race, made
    deterministic (the request reached a connection the upstream closes).
    """

    def __init__(self, log: list[bytes]) -> None:
        self.log = log
        self.buffer = b""
        self.answered = False

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" not in self.buffer:
            return
        head = self.buffer.split(b"\r\n", 1)[0]
        self.log.append(head)
        assert self.transport is not None
        if self.answered:
            self.transport.loseConnection()
            return
        self.answered = True
        self.buffer = b""
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


async def racingUpstream() -> tuple[Any, list[bytes]]:
    log: list[bytes] = []
    factory = protocol.Factory.forProtocol(lambda: OneAnswerPerConnection(log))
    return _reactor().listenTCP(0, factory, interface="127.0.0.1"), log


@ensureDeferred
async def test_getOnDroppedPooledConnectionIsRetriedOnce() -> None:
    port, log = await racingUpstream()
    front, proxy, records = await proxyTo(f"http://127.0.0.1:{port.getHost().port}")
    try:
        client = await connect(front)
        client.write(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n")
        await client.waitResponses(1)
        client.write(b"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
        responses = await client.waitResponses(2)
        assert [r.status for r in responses] == [200, 200]
        client.close()
    finally:
        await port.stopListening()
        await closeProxy(front, proxy)
    # /2 reached the dropping connection, then a new one.
    assert log == [b"GET /1 HTTP/1.1", b"GET /2 HTTP/1.1", b"GET /2 HTTP/1.1"]
    assert [r.note for r in records] == [None, None]


@ensureDeferred
async def test_postOnDroppedPooledConnectionIs502() -> None:
    port, log = await racingUpstream()
    front, proxy, records = await proxyTo(f"http://127.0.0.1:{port.getHost().port}")
    try:
        client = await connect(front)
        client.write(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n")
        await client.waitResponses(1)
        client.write(b"POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")
        responses = await client.waitResponses(2, [b"GET", b"POST"])
        assert responses[1].status == 502
        # The same POST on a fresh upstream connection goes through.
        client.write(b"POST /3 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")
        responses = await client.waitResponses(3, [b"GET", b"POST", b"POST"])
        assert responses[2].status == 200
        client.close()
    finally:
        await port.stopListening()
        await closeProxy(front, proxy)
    # Not idempotent (and with a body): never sent twice.
    assert log == [b"GET /1 HTTP/1.1", b"POST /2 HTTP/1.1", b"POST /3 HTTP/1.1"]
    assert [r.note for r in records] == [None, "upstream-failed", None]


# -- streaming with backpressure ----------------------------------------------------

BIG = 32 * 1024 * 1024


def buffered(proto: Any) -> int:
    """Bytes waiting in a Twisted TCP transport's write buffer."""
    transport = proto.transport
    return int(len(transport.dataBuffer) - transport.offset + transport._tempDataLen)


@implementer(IBodyProducer)
class BigBody:
    """An upstream body of ``length`` bytes, written while not paused."""

    def __init__(self, length: int) -> None:
        self.length = length
        self.sent = 0
        self.paused = False
        self.pauses = 0
        self.done: defer.Deferred[None] = defer.Deferred()
        self.consumer: Any = None

    def startProducing(self, consumer: Any) -> defer.Deferred[None]:
        self.consumer = consumer
        self._go()
        return self.done

    def _go(self) -> None:
        chunk = b"x" * 65536
        while not self.paused and self.sent < self.length:
            n = min(len(chunk), self.length - self.sent)
            self.sent += n
            self.consumer.write(chunk[:n])
        if self.sent >= self.length and not self.done.called:
            self.done.callback(None)

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.paused = False
        self._go()

    def stopProducing(self) -> None:
        self.paused = True


async def settled(condition: Callable[[], bool], seconds: float = 0.3) -> None:
    """``condition`` holds now and still after ``seconds`` of reactor time."""
    await eventuallyDeferred(condition, timeout=5)
    await task.deferLater(_reactor(), seconds, lambda: None)
    assert condition()


@ensureDeferred
async def test_downloadPausesUpstreamWhenClientStopsReading() -> None:
    body = BigBody(BIG)
    upstream = await serve(lambda request: Response(200, [], body))
    front, proxy, records = await proxyTo(f"http://127.0.0.1:{upstream.portNumber}")
    try:
        client = await connect(front)
        client.transport.pauseProducing()  # the client stops reading
        client.write(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
        # The pause travels back: client socket full -> proxy pauses its
        # upstream read -> upstream socket full -> the upstream body pauses.
        await settled(lambda: body.paused)
        held = body.sent
        assert body.pauses >= 1
        assert held < BIG // 2, held
        # What the proxy itself holds toward the client stays small.
        assert buffered(front.protocols[0]) < 1024 * 1024
        client.transport.resumeProducing()
        await client.waitUntil(lambda received: len(received) >= BIG, "the body")
        [response] = await client.waitResponses(1)
        assert response.header(b"content-length") == str(BIG).encode()
        assert len(response.body) == BIG
        client.close()
    finally:
        await closeProxy(front, proxy, upstream)
    assert records[0].bodyBytes == BIG


class PausingReader(protocol.Protocol):
    """Reads a request body, pausing it after the first piece."""

    def __init__(self) -> None:
        self.size = 0
        self.producer: Any = None
        self.pausedOnce: defer.Deferred[None] = defer.Deferred()
        self.done: defer.Deferred[int] = defer.Deferred()

    def makeConnection(self, producer: Any) -> None:  # type: ignore[override]
        self.producer = producer

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)
        if not self.pausedOnce.called:
            self.producer.pauseProducing()
            self.pausedOnce.callback(None)

    def connectionLost(self, reason: Any = None) -> None:
        self.done.callback(self.size)


@ensureDeferred
async def test_uploadStreamsWithBackpressure() -> None:
    reader = PausingReader()

    async def handler(request: Request) -> Response:
        request.deliverBody(reader)
        size = await reader.done
        return Response(200, [], b"%d" % size)

    upstream = await serve(handler, maxBodyBytes=None)
    proxy = ReverseProxy(f"http://127.0.0.1:{upstream.portNumber}", reactor=_reactor())
    # --max-body-bytes applies to proxied uploads: none here.
    front = await serve(proxy, maxBodyBytes=None)
    try:
        client = await connect(front)
        client.write(
            b"PUT /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % BIG
        )
        # 100 Continue only once the request is on its way upstream.
        await client.waitFor(b"HTTP/1.1 100 Continue\r\n\r\n")
        client.write(b"y" * BIG)
        await bounded(reader.pausedOnce)
        proxyConnection = front.protocols[0]
        # The upstream stopped reading: the proxy stops reading the client.
        await settled(lambda: proxyConnection.flow.readPaused)
        received = proxyConnection.pipeline.queue[0].bodyReceived
        assert received < BIG // 2, received
        reader.producer.resumeProducing()
        [response] = await client.waitResponses(1, [b"PUT"])
        assert response.status == 200
        assert response.body == str(BIG).encode()
        client.close()
    finally:
        await closeProxy(front, proxy, upstream)


@ensureDeferred
async def test_expectContinueNotSentWhenUpstreamIsDown() -> None:
    front, proxy, records = await proxyTo(f"http://127.0.0.1:{freePort()}")
    try:
        client = await connect(
            front,
            request=b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
            b"Content-Length: 5\r\n\r\n",
        )
        data = await client.waitClosed()
        assert b"100 Continue" not in data
        [response] = parseResponses(data, [b"POST"])
        assert response.status == 502
    finally:
        await closeProxy(front, proxy)
    assert records[0].note == "upstream-refused"


@ensureDeferred
async def test_drainFinishesProxiedResponseWithClose() -> None:
    gate: defer.Deferred[Response] = defer.Deferred()
    arrived: defer.Deferred[None] = defer.Deferred()

    def handler(request: Request) -> defer.Deferred[Response]:
        arrived.callback(None)
        return gate

    upstream = await serve(handler)
    front, proxy, _ = await proxyTo(f"http://127.0.0.1:{upstream.portNumber}")
    try:
        client = await connect(front, request=b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        await bounded(arrived)
        drained = front.factory.drain(10)
        gate.callback(Response(200, [], b"late"))
        [response] = await client.waitResponses(1)
        assert response.body == b"late"
        assert response.header(b"connection") == b"close"
        await bounded(drained)
    finally:
        await closeProxy(front, proxy, upstream)


# -- the anchors, measured with the same echo upstream (docs/proxy.md) --------


async def throughAnchor(anchor: str, tmp_path: Path) -> ParsedResponse:
    """CLIENT_REQUEST through ``anchor`` to the twisted.web echo upstream."""
    upstream = await twistedWebUpstream()
    upstreamPort = upstream.getHost().port
    try:
        if anchor == "nginx":
            with runNginx(
                tmp_path, NGINX_PROXY, NGINX_PROXY_HTTP.format(upstream=upstreamPort)
            ) as port:
                client = await connect(port, request=CLIENT_REQUEST)
                [response] = await client.waitResponses(1)
                client.close()
                await client.waitClosed()
                return response
        from twisted.web.proxy import ReverseProxyResource

        site = server.Site(ReverseProxyResource("127.0.0.1", upstreamPort, b""))
        front = _reactor().listenTCP(0, site, interface="127.0.0.1")
        try:
            client = await connect(front.getHost().port, request=CLIENT_REQUEST)
            [response] = await client.waitResponses(1)
            client.close()
            await client.waitClosed()
            return response
        finally:
            await front.stopListening()
    finally:
        await upstream.stopListening()


@pytest.mark.filterwarnings("ignore:twisted.web.http.HTTPClient:DeprecationWarning")
@ensureDeferred
async def test_reverseProxyResourceForwardsHopByHopFields(tmp_path: Path) -> None:
    """
    What twisted.web's ReverseProxyResource does with the same exchange (the
    table in docs/proxy.md): it removes Proxy-Connection and Keep-Alive and
    sends its own Connection: close, but forwards the field the client named
    in Connection, TE and Proxy-Authorization, rewrites Host; and it passes
    every hop-by-hop field of the upstream's response back to the client.
    """
    response = await throughAnchor("twisted", tmp_path)
    fields = echoed(response)
    assert fields["x-client"] == ["secret"]
    assert fields["te"] == ["trailers"]
    assert fields["proxy-authorization"] == ["Basic Zm9vOmJhcg=="]
    assert fields["connection"] == ["close"]
    assert "proxy-connection" not in fields and "keep-alive" not in fields
    assert fields["host"] != ["front.example"]
    assert "via" not in fields and "x-forwarded-for" not in fields
    assert response.header(b"connection") == b"X-Up"
    assert response.header(b"x-up") == b"1"
    assert response.header(b"keep-alive") == b"timeout=5"
    assert response.header(b"proxy-authenticate") == b"Basic"


@ensureDeferred
async def test_nginxProxyPassForwardsHopByHopFields(tmp_path: Path) -> None:
    """nginx proxy_pass (keepalive pool, Connection ""), measured alike."""
    response = await throughAnchor("nginx", tmp_path)
    fields = echoed(response)
    assert fields["x-client"] == ["secret"]
    assert fields["proxy-connection"] == ["keep-alive"]
    assert fields["proxy-authorization"] == ["Basic Zm9vOmJhcg=="]
    assert not {"connection", "keep-alive", "te"} & set(fields)
    assert fields["host"] == ["up"]  # proxy_set_header Host $proxy_host
    assert response.header(b"x-up") == b"1"
    assert response.header(b"proxy-authenticate") == b"Basic"
    # Its own Connection and Keep-Alive (keepalive_timeout 75 7), not the
    # upstream's.
    assert response.header(b"connection") == b"keep-alive"
    assert response.header(b"keep-alive") == b"timeout=7"


# -- odd upstream answers -----------------------------------------------------


class Scripted(protocol.Protocol):
    """An upstream that answers each request head with fixed bytes."""

    def __init__(self, answer: bytes, close: bool) -> None:
        self.answer = answer
        self.close = close
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" in self.buffer:
            self.buffer = b""
            assert self.transport is not None
            self.transport.write(self.answer)
            if self.close:
                self.transport.loseConnection()


def scriptedUpstream(answer: bytes, close: bool = False) -> Any:
    """Listening; its ``.built`` lists the connections it accepted."""
    built: list[Scripted] = []

    def build() -> Scripted:
        built.append(Scripted(answer, close))
        return built[-1]

    port = _reactor().listenTCP(
        0, protocol.Factory.forProtocol(build), interface="127.0.0.1"
    )
    port.built = built
    return port


@ensureDeferred
async def test_headIsRelayedWithTheUpstreamsLength() -> None:
    port = scriptedUpstream(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nX-A: 1\r\n\r\n"
    )
    front, proxy, _ = await proxyTo(f"http://127.0.0.1:{port.getHost().port}")
    try:
        client = await connect(front, request=b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
        [response] = await client.waitResponses(1, [b"HEAD"])
        assert response.status == 200
        assert response.header(b"content-length") == b"1234"
        assert response.header(b"x-a") == b"1"
        # The same upstream connection serves the next request.
        client.write(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
        await client.waitResponses(2, [b"HEAD", b"HEAD"])
        assert len(port.built) == 1
        client.close()
    finally:
        await port.stopListening()
        await closeProxy(front, proxy)


@ensureDeferred
async def test_upstreamFieldConnserverWouldNotSendIs502() -> None:
    port = scriptedUpstream(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Bad: a\x01b\r\n\r\nok"
    )
    front, proxy, records = await proxyTo(f"http://127.0.0.1:{port.getHost().port}")
    try:
        client = await connect(front, request=b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        [response] = await client.waitResponses(1)
        assert response.status == 502
        client.close()
    finally:
        await port.stopListening()
        await closeProxy(front, proxy)
    assert records[0].note == "upstream-bad-response"


@ensureDeferred
async def test_upstreamCutMidBodyAbortsTheClientsResponse(
    logFailures: list[Any],
) -> None:
    port = scriptedUpstream(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789", close=True
    )
    front, proxy, _ = await proxyTo(f"http://127.0.0.1:{port.getHost().port}")
    try:
        client = await connect(front, request=b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        data = await client.waitClosed()
        # Never padded, never completed: the head and the bytes that came.
        assert data.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"Content-Length: 100\r\n" in data
        assert data.endswith(b"\r\n\r\n0123456789")
    finally:
        await port.stopListening()
        await closeProxy(front, proxy)
    assert front.factory.stats.closes["response-error"] == 1
    # One warning line naming the cause, no traceback (no log failure).
    assert logFailures == []


@ensureDeferred
async def test_upstreamStalledMidBodyIsCutAfterResponseTimeout(
    logFailures: list[Any],
) -> None:
    port = scriptedUpstream(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123")
    clock = task.Clock()
    proxy = ReverseProxy(
        f"http://127.0.0.1:{port.getHost().port}",
        reactor=SplitReactor(clock),  # type: ignore[arg-type]
        responseTimeout=30,
    )
    front = await serve(proxy)
    try:
        client = await connect(front, request=b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        await client.waitFor(b"\r\n\r\n0123")
        clock.advance(29)
        assert front.protocols[0].closeReason is None
        clock.advance(1)
        assert front.protocols[0].closeReason == "response-error"
        data = await client.waitClosed()
        assert data.endswith(b"\r\n\r\n0123")
    finally:
        await port.stopListening()
        await closeProxy(front, proxy)
    assert front.factory.stats.closes["response-error"] == 1
    assert [e["log_failure"].type.__name__ for e in logFailures] == ["UpstreamTimeout"]
    logFailures.clear()
    assert clock.getDelayedCalls() == []


@ensureDeferred
async def test_chunkedUploadAndForwardingFieldsAppended() -> None:
    upstream = await serve(echoHandler)
    front, proxy, _ = await proxyTo(
        f"http://127.0.0.1:{upstream.portNumber}", rewriteHost=True
    )
    try:
        client = await connect(
            front,
            request=b"POST /c HTTP/1.1\r\nHost: front.example\r\n"
            b"Transfer-Encoding: chunked\r\n"
            b"X-Forwarded-For: 10.0.0.1\r\nForwarded: for=10.0.0.1\r\n"
            b"X-Forwarded-Proto: https\r\nVia: 1.1 edge\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        )
        [response] = await client.waitResponses(1, [b"POST"])
        echo = json.loads(response.body)
        assert echo["size"] == 11
        fields = echoed(response)
        # Framed for the upstream hop by Twisted's client (chunked).
        assert fields["transfer-encoding"] == ["chunked"]
        assert fields["host"] == [f"127.0.0.1:{upstream.portNumber}"]
        assert fields["x-forwarded-for"] == ["10.0.0.1, 127.0.0.1"]
        assert fields["forwarded"] == [
            "for=10.0.0.1",
            "for=127.0.0.1;proto=http;host=front.example",
        ]
        assert fields["x-forwarded-proto"] == ["http"]
        assert fields["via"] == ["1.1 edge", "1.1 connserver"]
        client.close()
    finally:
        await closeProxy(front, proxy, upstream)
