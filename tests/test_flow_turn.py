"""
On Twisted's TCP transport, the answers a round gathered leave at the end
of the reactor's turn, together with every other connection's
(``Flow.endRound``, ``connserver._twisted.afterturn``): a client asleep
in ``epoll_wait`` is woken once per turn, not once per answer.  What must
hold around that: nothing is held past the turn, a lone client is not made
to wait, a close sends what was gathered first, and a later write never
overtakes gathered bytes.

"On the wire" is read from the client socket's receive queue (loopback
delivers a send at once), right after the server's protocol is handed the
request in the test's own reactor turn.
"""

from __future__ import annotations

import fcntl
import struct
import termios
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, task

from connserver import Request, Response
from connserver._twisted.afterturn import afterTurnOf

from ._helpers import ensureDeferred
from ._helpers import realReactor as _reactor
from ._sockets import RawClient, Server, connect, finish, serve
from .test_closes import Stream
from .test_upgrade import Echo

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
BODY = b"hello\n"


def hello(request: Request) -> Response:
    return Response(200, [(b"Content-Type", b"text/plain")], BODY)


def onTheWire(client: RawClient) -> int:
    """Bytes the server sent that wait in the client socket (FIONREAD)."""
    skt: Any = client.transport.socket  # type: ignore[attr-defined]
    value: int = struct.unpack(
        "i", fcntl.ioctl(skt.fileno(), termios.FIONREAD, b"\0\0\0\0")
    )[0]
    return value


async def turns(condition: Callable[[], object], what: str) -> None:
    """Reactor turns (callLater(0), not the wall clock) until ``condition()``."""
    for _ in range(10000):
        if condition():
            return
        await task.deferLater(_reactor(), 0, lambda: None)
    raise AssertionError(f"never: {what}")


def busy() -> None:
    """The reactor's turns were busy lately: answers wait for the turn's end."""
    afterTurnOf(_reactor())._atOnce = 0


async def clients(server: Server, count: int) -> list[RawClient]:
    connected = [await connect(server) for _ in range(count)]
    await turns(lambda: len(server.protocols) == count, "the server's protocols")
    return connected


@ensureDeferred
async def test_answersOfOneTurnLeaveTogetherAtItsEnd() -> None:
    server = await serve(hello)
    a, b = await clients(server, 2)
    try:
        busy()
        for protocol in server.protocols:
            protocol.dataReceived(GET)
        # Answered, gathered, not sent yet.
        assert [p.flow.queuedForTurn for p in server.protocols] == [True, True]
        assert (onTheWire(a), onTheWire(b)) == (0, 0)
        for client in (a, b):
            (response,) = await client.waitResponses(1)
            assert response.status == 200 and response.body == BODY
        assert [p.flow.batch for p in server.protocols] == [None, None]
    finally:
        a.close()
        b.close()
        await finish(server)


@ensureDeferred
async def test_aLoneClientIsAnsweredAtOnce() -> None:
    """
    A turn that had a single answer to send had nothing to send it with:
    the next answers go at once (for a while), without the extra pass.
    """
    server = await serve(hello)
    (client,) = await clients(server, 1)
    try:
        busy()
        (protocol,) = server.protocols
        protocol.dataReceived(GET)
        assert onTheWire(client) == 0
        await client.waitResponses(1)
        protocol.dataReceived(GET)
        assert onTheWire(client) > 0
        assert not protocol.flow.queuedForTurn
        await client.waitResponses(2)
    finally:
        client.close()
        await finish(server)


@ensureDeferred
async def test_aCloseSendsWhatWasGatheredFirst() -> None:
    server = await serve(hello)
    (client,) = await clients(server, 1)
    try:
        busy()
        (protocol,) = server.protocols
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        # The closer flushed before the half-close: the answer is out now.
        assert onTheWire(client) > 0
        received = await client.waitClosed()
        assert received.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"Connection: close\r\n" in received
        assert received.endswith(b"\r\n\r\n" + BODY)
    finally:
        client.close()
        await finish(server)


@ensureDeferred
async def test_aLaterWriteFollowsTheGatheredBytes() -> None:
    """
    A streamed body's later write, in the same turn as its gathered head
    and first part, sends those first, then itself: in order, at once.
    """
    producer = Stream()  # writes b"part" when started
    server = await serve(lambda request: Response(200, [], producer))
    (client,) = await clients(server, 1)
    try:
        busy()
        (protocol,) = server.protocols
        protocol.dataReceived(GET)
        assert onTheWire(client) == 0
        assert producer.consumer is not None
        producer.consumer.write(b"second")
        assert onTheWire(client) > 0
        producer.done.callback(None)
        received = await client.waitUntil(
            lambda data: data.endswith(b"0\r\n\r\n"), "the last chunk"
        )
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert body == b"4\r\npart\r\n6\r\nsecond\r\n0\r\n\r\n"
    finally:
        client.close()
        await finish(server)


@ensureDeferred
async def test_anAsynchronousAnswerWaitsForTheTurnToo() -> None:
    """A handler's Deferred answer is gathered as a round's would be."""
    answers: list[defer.Deferred[Response]] = []

    def later(request: Request) -> defer.Deferred[Response]:
        answers.append(defer.Deferred())
        return answers[-1]

    server = await serve(later)
    a, b = await clients(server, 2)
    try:
        for protocol in server.protocols:
            protocol.dataReceived(GET)
        await turns(lambda: len(answers) == 2, "both handlers called")
        busy()
        for answer in answers:
            answer.callback(hello(None))  # type: ignore[arg-type]
        assert (onTheWire(a), onTheWire(b)) == (0, 0)
        for client in (a, b):
            (response,) = await client.waitResponses(1)
            assert response.body == BODY
    finally:
        a.close()
        b.close()
        await finish(server)


@ensureDeferred
async def test_aSwitchInTheTurnSendsTheGatheredAnswerBeforeThe101() -> None:
    """
    A pipelined upgrade answered later in the same turn: the takeover sends
    the answer waiting for the turn's end first, then the 101, then the new
    protocol's bytes.
    """
    switches: list[defer.Deferred[Response]] = []

    def handler(request: Request) -> Response | defer.Deferred[Response]:
        if request.path == b"/plain":
            return hello(request)
        switches.append(defer.Deferred())
        return switches[-1]

    server = await serve(handler)
    (client,) = await clients(server, 1)
    try:
        busy()
        (protocol,) = server.protocols
        protocol.dataReceived(
            b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
        )
        assert onTheWire(client) == 0 and len(switches) == 1
        switches[0].callback(Response.switchProtocols(b"echo", Echo()))
        assert onTheWire(client) > 0
        client.write(b"hi")
        received = await client.waitUntil(lambda data: data.endswith(b"hi"), "the echo")
        first, _, rest = received.partition(b"\r\n\r\n" + BODY)
        assert first.startswith(b"HTTP/1.1 200 OK\r\n")
        assert rest.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        assert rest.endswith(b"\r\n\r\nhi")
    finally:
        client.close()
        await finish(server)
