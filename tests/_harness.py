"""
Drive an ``HTTPServerProtocol`` over ``StringTransport`` and ``Clock``.

Responses are read back with h11, an independent HTTP/1.1 implementation,
so the tests check the wire against someone else's parser as well as
against exact bytes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import h11
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from connserver._connection.factory import ConnectionFactory
from connserver._connection.message import Handler, Request, Response
from connserver._connection.protocol import HTTPServerProtocol
from connserver._http.config import ServerConfig

PEER = IPv4Address("TCP", "127.0.0.1", 40000)


class TCPStringTransport(StringTransport):
    """A StringTransport that can half-close, as a TCP transport can."""

    def __init__(self) -> None:
        super().__init__(peerAddress=PEER)
        self.writeClosed = False
        self.aborted = False

    def loseWriteConnection(self) -> None:
        self.writeClosed = True

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


@dataclass
class ParsedResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    httpVersion: bytes
    informational: list[int] = field(default_factory=list)

    def header(self, name: bytes) -> bytes | None:
        values = [v for n, v in self.headers if n == name.lower()]
        return b", ".join(values) if values else None


@dataclass
class Connection:
    protocol: HTTPServerProtocol
    transport: TCPStringTransport
    clock: Clock
    factory: ConnectionFactory

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def sendByteByByte(self, data: bytes) -> None:
        for i in range(len(data)):
            self.protocol.dataReceived(data[i : i + 1])

    def output(self) -> bytes:
        data: bytes = self.transport.value()
        return data

    def take(self) -> bytes:
        data: bytes = self.transport.value()
        self.transport.clear()
        return data

    @property
    def closing(self) -> bool:
        return bool(self.transport.disconnecting or self.transport.writeClosed)

    def lose(self, reason: Failure | None = None) -> None:
        """Deliver connectionLost, as the reactor would after a close."""
        self.protocol.connectionLost(reason or Failure(ConnectionDone()))

    def responses(
        self, *methods: bytes, eof: bool = False, partial: bool = False
    ) -> list[ParsedResponse]:
        """
        Parse everything written so far as responses (to GETs unless
        ``methods`` says), all of them; see :func:`parseResponses`.
        """
        return parseResponses(
            self.output(), list(methods) or None, eof=eof, partial=partial
        )


def parseResponses(
    data: bytes | bytearray,
    methods: list[bytes] | None = None,
    *,
    eof: bool = False,
    partial: bool = False,
) -> list[ParsedResponse]:
    """
    Read every response in ``data``, in order, with a fresh h11 client per
    response.  ``methods`` are the methods of the requests (one per
    response; every response answers a GET when it is not given).  ``eof``
    says the connection was closed after ``data`` (for close-delimited
    bodies).

    Fails loudly (``AssertionError``) when bytes remain that are not a
    complete response: a malformed one, more responses than ``methods``,
    or an incomplete one at the end, unless ``partial`` says a trailing
    partial response is expected (a body still streaming, a response cut
    short); then the complete ones before it are returned.
    """
    data = bytes(data)
    out: list[ParsedResponse] = []
    start = 0
    while start < len(data):
        index = len(out)
        rest = data[start : start + 300]
        if methods is None:
            method = b"GET"
        elif index < len(methods):
            method = methods[index]
        else:
            raise AssertionError(
                f"{len(data) - start} bytes left after the {len(methods)} "
                f"responses expected: {rest!r}"
            )
        parsed = _parseOne(data, start, method, eof)
        if parsed is None:
            if partial:
                return out
            raise AssertionError(
                f"response {index + 1} is incomplete ({len(data) - start} bytes"
                f"{', then EOF' if eof else ''}; partial=True if expected): "
                f"{rest!r}"
            )
        response, start = parsed
        out.append(response)
    return out


#: Bytes handed to h11 at a time: each response costs its own size, not the
#: size of everything after it (thousands of pipelined responses).
_WINDOW = 64 * 1024


def _parseOne(
    data: bytes, start: int, method: bytes, eof: bool
) -> tuple[ParsedResponse, int] | None:
    """
    One complete response to ``method`` at ``data[start:]`` and the offset
    just after it, or None if it is incomplete.
    """
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    fed = min(len(data), start + _WINDOW)
    client.receive_data(data[start:fed])
    informational: list[int] = []
    response: Any = None
    body: list[bytes] = []
    closed = False
    while True:
        try:
            event = client.next_event()
        except h11.RemoteProtocolError as error:
            if closed:
                # The close came before the response was complete.
                return None
            raise AssertionError(
                f"not a valid response ({error}): {data[start : start + 300]!r}"
            ) from error
        if event is h11.NEED_DATA:
            if fed < len(data):
                end = min(len(data), fed + _WINDOW)
                client.receive_data(data[fed:end])
                fed = end
                continue
            if not eof or closed:
                return None
            client.receive_data(b"")
            closed = True
            continue
        if isinstance(event, h11.InformationalResponse):
            informational.append(event.status_code)
        elif isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            break
        else:
            return None
    parsed = ParsedResponse(
        response.status_code,
        list(response.headers),
        b"".join(body),
        response.http_version,
        informational,
    )
    return parsed, fed - len(client.trailing_data[0])


def connect(
    handler: Handler,
    *,
    clock: Clock | None = None,
    config: ServerConfig | None = None,
    **options: Any,
) -> Connection:
    clock = clock if clock is not None else Clock()
    if config is None:
        config = ServerConfig(**options)
    factory = ConnectionFactory(handler, config=config, reactor=clock)
    protocol = factory.buildProtocol(PEER)
    assert protocol is not None
    transport = TCPStringTransport()
    protocol.makeConnection(transport)
    return Connection(protocol, transport, clock, factory)


class FakePort:
    """Records stopReading/startReading, as a listening port would get."""

    def __init__(self) -> None:
        self.reading = True

    def stopReading(self) -> None:
        self.reading = False

    def startReading(self) -> None:
        self.reading = True


def openOn(factory: ConnectionFactory, clock: Clock) -> Connection | None:
    """One more connection to ``factory``, or None if it refused it."""
    protocol = factory.buildProtocol(PEER)
    if protocol is None:
        return None
    transport = TCPStringTransport()
    protocol.makeConnection(transport)
    return Connection(protocol, transport, clock, factory)


class ZeroFile(io.RawIOBase):
    """A large seekable binary file that costs no memory; counts what was read."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}
        self.position = base[whence] + offset
        return self.position

    def read(self, n: int = -1) -> bytes:
        left = self.size - self.position
        n = left if n < 0 else min(n, left)
        self.position += n
        return b"\0" * n


def hello(request: Request) -> Response:
    """A handler answering 130 bytes from memory (the bench case)."""
    return Response(200, [(b"Content-Type", b"text/plain")], b"x" * 130)
