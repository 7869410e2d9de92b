"""
``ReverseProxy`` against a scripted raw-socket upstream that breaks the
framing rules, one way per test: what the client receives, and that the
next request does not travel on the faulty upstream connection (the
upstream's accept count goes up, and the next answer is the one scripted
for it, never what the faulty connection still had to say).  Every wait is
bounded; they use real sockets on 127.0.0.1, so they are marked slow.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from twisted.internet import protocol, task, threads

from connserver import ReverseProxy
from connserver._http.records import RequestRecord

from ._harness import parseResponses
from ._helpers import ensureDeferred, eventuallyDeferred
from ._helpers import realReactor as _reactor
from ._sockets import bounded, connect, finish, serve

pytestmark = pytest.mark.slow

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

#: An answer: bytes written at once, or (delay, bytes) steps.
Answer = bytes | list[tuple[float, bytes]]


class ScriptedUpstream(protocol.Protocol):
    """Answers each request head with the next answer of the script."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.buffer = b""

    def connectionMade(self) -> None:
        self.script.accepted += 1

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            self.script.heads.append(head)
            answer = self.script.answers.pop(0) if self.script.answers else OK
            steps = [(0.0, answer)] if isinstance(answer, bytes) else answer
            for delay, data in steps:
                if delay:
                    _reactor().callLater(delay, self._write, data)
                else:
                    self._write(data)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and self.transport.connected:  # type: ignore[attr-defined]
            if data == b"<close>":
                self.transport.loseConnection()
            else:
                self.transport.write(data)


class Script:
    def __init__(self, answers: list[Answer]) -> None:
        self.answers = answers
        self.accepted = 0
        self.heads: list[bytes] = []
        factory = protocol.Factory.forProtocol(lambda: ScriptedUpstream(self))
        self.port: Any = _reactor().listenTCP(0, factory, interface="127.0.0.1")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port.getHost().port}"


async def proxied(
    answers: list[Answer], **options: Any
) -> tuple[Script, Any, ReverseProxy, list[RequestRecord]]:
    script = Script(answers)
    proxy = ReverseProxy(script.url, reactor=_reactor(), **options)
    front = await serve(proxy)
    records: list[RequestRecord] = []
    front.factory.requestObservers.append(records.append)
    return script, front, proxy, records


async def close(script: Script, front: Any, proxy: ReverseProxy) -> None:
    await bounded(proxy.close())
    await script.port.stopListening()
    await finish(front)


GET = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n"
HEAD = b"HEAD /x HTTP/1.1\r\nHost: h\r\n\r\n"

#: (id, method, the faulty answer, the status the client gets, or None when
#: the client's response is aborted after its head).
FAULTS = [
    pytest.param(
        b"GET",
        [
            (
                0.0,
                b"HTTP/1.1 200 OK\r\nContent-Length: 77\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            ),
            (0.3, b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nsmuggle"),
        ],
        502,
        id="length-and-chunked",
    ),
    pytest.param(
        b"GET",
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: keep-alive\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        502,
        id="chunked-http10",
    ),
    pytest.param(
        b"GET",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
        502,
        id="repeated-length",
    ),
    pytest.param(
        b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\nok", 502, id="bad-length"
    ),
    pytest.param(
        b"GET",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok",
        502,
        id="length-list",
    ),
    pytest.param(
        b"GET", b"HTTP/1.1 2_00 OK\r\nContent-Length: 2\r\n\r\nok", 502, id="2_00"
    ),
    pytest.param(
        b"GET", b"HTTP/1.1 +200 OK\r\nContent-Length: 2\r\n\r\nok", 502, id="+200"
    ),
    pytest.param(
        b"GET", b"HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nok", 502, id="two-digits"
    ),
    pytest.param(
        b"GET", b"HTTP/1.1 700 Odd\r\nContent-Length: 2\r\n\r\nok", 502, id="700"
    ),
    pytest.param(
        b"GET", b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", 502, id="bare-lf"
    ),
    pytest.param(
        b"GET",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx",
        502,
        id="gzip-coding",
    ),
    pytest.param(
        b"GET",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: upgrade\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno",
        502,
        id="unrequested-101",
    ),
    pytest.param(
        b"GET",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA",
        200,
        id="beyond-length",
    ),
    pytest.param(
        b"GET",
        b"HTTP/1.1 204 No Content\r\n\r\nbody",
        204,
        id="204-with-body",
    ),
    pytest.param(
        b"GET",
        b"HTTP/1.1 304 Not Modified\r\n\r\nbody",
        304,
        id="304-with-body",
    ),
    pytest.param(
        b"HEAD",
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody",
        200,
        id="head-with-body",
    ),
    pytest.param(
        b"GET",
        [
            (0.0, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            (0.1, b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nsmuggle"),
        ],
        200,
        id="bytes-while-idle",
    ),
    pytest.param(
        b"GET",
        [
            (
                0.0,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
            ),
            (0.1, b"zz\r\n"),
        ],
        None,
        id="bad-chunk-after-head",
    ),
    pytest.param(
        b"GET",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        200,
        id="upstream-close-option",
    ),
    pytest.param(
        b"GET",
        [(0.0, b"HTTP/1.0 200 OK\r\n\r\nuntil-close"), (0.05, b"<close>")],
        200,
        id="close-delimited",
    ),
]


@pytest.mark.parametrize(("method", "answer", "status"), FAULTS)
@ensureDeferred
async def test_faultClosesTheUpstreamConnection(
    method: bytes, answer: Answer, status: int | None
) -> None:
    script, front, proxy, records = await proxied([answer, OK])
    request = HEAD if method == b"HEAD" else GET
    try:
        first = await connect(front, request=request)
        if status is None:
            # After the head: the client's response is aborted, not padded.
            data = await first.waitClosed()
            assert data.startswith(b"HTTP/1.1 200 OK\r\n")
            # The chunk that came, never the last-chunk.
            assert data.endswith(b"\r\n\r\n5\r\nhello\r\n")
        else:
            [response] = await first.waitResponses(1, [method])
            assert response.status == status
            if status == 502:
                assert response.body == b"502 Bad Gateway\n"
                assert b"smuggle" not in first.data
            first.close()
        # The faulty connection is closed at once and never pooled: a
        # later request (from another client) gets a new connection and its
        # own answer.
        await task.deferLater(_reactor(), 0.4, lambda: None)
        assert proxy.pool.idle == []
        second = await connect(front, request=GET)
        [response] = await second.waitResponses(1)
        assert (response.status, response.body) == (200, b"ok")
        assert script.accepted == 2
        second.close()
    finally:
        await close(script, front, proxy)
    if status == 502:
        assert records[0].note == "upstream-bad-response"


@ensureDeferred
async def test_goodAnswersShareOneConnection() -> None:
    """The control: the same script without a fault reuses one connection."""
    script, front, proxy, _ = await proxied([OK, OK, OK])
    try:
        client = await connect(front)
        for i in range(3):
            client.write(GET)
            responses = await client.waitResponses(i + 1)
            assert responses[i].body == b"ok"
        assert script.accepted == 1
        client.close()
    finally:
        await close(script, front, proxy)


@ensureDeferred
async def test_idleConnectionClosedByTheUpstreamLeavesThePool() -> None:
    script, front, proxy, _ = await proxied([[(0.0, OK), (0.05, b"<close>")], OK])
    try:
        client = await connect(front, request=GET)
        await client.waitResponses(1)
        # The FIN reaches the pool at once: nothing waits for a request to
        # find the connection dead.
        await eventuallyDeferred(lambda: proxy.pool.idle == [], timeout=5)
        client.write(GET)
        responses = await client.waitResponses(2)
        assert responses[1].body == b"ok"
        assert script.accepted == 2
        client.close()
    finally:
        await close(script, front, proxy)


@ensureDeferred
async def test_poolKeepsMostRecentlyUsedFirstAndAtMostMaxPerUpstream() -> None:
    slow = [(0.2, OK)]
    script, front, proxy, _ = await proxied([slow, slow, slow], maxPerUpstream=2)
    try:
        clients = [await connect(front, request=GET) for _ in range(3)]
        for client in clients:
            await client.waitResponses(1)
        # Three concurrent requests opened three connections; two are kept.
        assert script.accepted == 3
        await eventuallyDeferred(lambda: len(proxy.pool.idle) == 2, timeout=5)
        last = proxy.pool.idle[-1]
        clients[0].write(GET)
        await clients[0].waitResponses(2)
        # The most recently used one served it, and went back on top.
        assert proxy.pool.idle[-1] is last
        for client in clients:
            client.close()
    finally:
        await close(script, front, proxy)


@ensureDeferred
async def test_earlyHintsReachHTTP11ClientsOnly() -> None:
    hints = (
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n"
        b"Connection: X-Hop\r\nX-Hop: 1\r\n\r\n"
    )
    script, front, proxy, _ = await proxied(
        [hints + OK, b"HTTP/1.1 100 Continue\r\n\r\n" + hints + OK, hints + OK]
    )
    try:
        client = await connect(front, request=GET)
        [response] = await client.waitResponses(1)
        assert response.informational == [103]
        assert client.data.startswith(
            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
        )
        # The upstream's 100 is not relayed (100 Continue is connserver's).
        client.write(GET)
        responses = await client.waitResponses(2)
        assert responses[1].informational == [103]
        client.close()
        old = await connect(front, request=b"GET /x HTTP/1.0\r\n\r\n")
        data = await old.waitClosed()
        assert b"103" not in data.split(b"\r\n", 1)[0]
        assert parseResponses(data, eof=True)[0].status == 200
    finally:
        await close(script, front, proxy)


@ensureDeferred
async def test_earlyHintsReachCurl() -> None:
    hints = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    script, front, proxy, _ = await proxied([hints + OK])
    try:

        def run() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [
                    "curl",
                    "-sv",
                    "--max-time",
                    "10",
                    f"http://127.0.0.1:{front.portNumber}/x",
                ],
                capture_output=True,
                text=True,
                timeout=20,
            )

        try:
            result = await bounded(threads.deferToThread(run))
        except FileNotFoundError:
            pytest.skip("curl is not installed")
        assert "< HTTP/1.1 103 Early Hints" in result.stderr
        assert "< Link: </style.css>; rel=preload" in result.stderr
        assert "< HTTP/1.1 200 OK" in result.stderr
        assert result.stdout == "ok"
    finally:
        await close(script, front, proxy)


@ensureDeferred
async def test_upstreamServerAndDateAreHidden() -> None:
    script, front, proxy, _ = await proxied(
        [
            b"HTTP/1.1 200 OK\r\nServer: secret-app/1.2\r\n"
            b"Date: Thu, 01 Jan 1970 00:00:00 GMT\r\nContent-Length: 2\r\n\r\nok"
        ]
    )
    try:
        client = await connect(front, request=GET)
        [response] = await client.waitResponses(1)
        assert response.header(b"server") == b"connserver"
        assert b"secret-app" not in client.data
        assert b"1970" not in client.data
        client.close()
    finally:
        await close(script, front, proxy)
