"""
``Takeover``: a connection handed to another protocol after ``101
Switching Protocols`` (RFC 9110 §7.8, §15.2.2).

From the switch on, the HTTP parser, pipeline and timers are gone: the
connection is ``UPGRADED`` and another Twisted protocol (a WebSocket, say)
owns it.  It happens one of two ways:

* a handler answers ``Response.switchProtocols(b"websocket", protocol)``:
  connserver writes the 101 (or, with ``handshake``, lets the protocol
  answer its own), calls ``protocol.makeConnection`` and delivers the
  bytes that followed the request head;
* code that takes the transport itself, as twisted.web resources do
  (autobahn's ``WebSocketResource`` through ``request.channel.transport``):
  it gets a ``TakeoverTransport`` from ``Request.takeOverTransport`` and
  assigns its protocol to that transport's ``protocol`` attribute.

The connection stays the transport's protocol and forwards what arrives
(one call per read, counted), so that the factory still counts it for
``maxConnections``, the status page and the drain, and its close is one
``ConnectionRecord`` with the bytes each way.  On a drain the new protocol
is told as gracefully as it allows (``drain``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol, IProtocol, ISSLTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import classImplementsOnly, implementer, providedBy

from connserver._http.errors import ResponseFramingError
from connserver._http.framing import statusLine, validateResponseField
from connserver._http.state import ConnectionState, InputState
from connserver._twisted.reactor import cancelCall

__all__ = [
    "SwitchProtocols",
    "Takeover",
    "TakeoverTransport",
    "switchProtocols",
    "switchingHead",
    "transportFor",
]

_log = Logger(namespace="connserver")

#: Fields the 101 carries from connserver itself, never from the handler.
_SERVER_OWNED = frozenset(
    {b"connection", b"upgrade", b"content-length", b"transfer-encoding"}
)


class SwitchProtocols:
    """
    The body of a ``101 Switching Protocols`` response: the protocol the
    connection is handed to (see ``Response.switchProtocols``).
    """

    __slots__ = ("handshake", "protocol", "upgrade")

    def __init__(
        self, upgrade: bytes, protocol: IProtocol, handshake: bytes | None = None
    ) -> None:
        #: The protocol name, as the Upgrade field names it (``websocket``).
        self.upgrade = upgrade
        #: The Twisted protocol that gets the connection.
        self.protocol = protocol
        #: Bytes the protocol receives first, instead of connserver writing
        #: the 101 itself (None: connserver writes it).
        self.handshake = handshake


def switchingHead(
    response: Any, spec: SwitchProtocols, dateLine: bytes, serverLine: bytes
) -> bytes:
    """
    The head of a ``101 Switching Protocols``: the handler's fields (checked
    as any response's are; ValueError for a bad one), then ``Upgrade`` with
    the protocol switched to and ``Connection: upgrade`` (RFC 9110 §7.8:
    "A server that sends a 101 (Switching Protocols) response MUST send an
    Upgrade header field to indicate the new protocol(s)").  A 101 has no
    content (RFC 9110 §15.2).
    """
    lines = [statusLine(101), dateLine, serverLine]
    for name, value in response.fieldPairs():
        nameBytes = name if isinstance(name, bytes) else name.encode("latin-1")
        valueBytes = value if isinstance(value, bytes) else value.encode("latin-1")
        if nameBytes.lower() in _SERVER_OWNED:
            continue
        validateResponseField(nameBytes, valueBytes)
        lines.append(nameBytes + b": " + valueBytes + b"\r\n")
    validateResponseField(b"Upgrade", spec.upgrade)
    lines.append(b"Upgrade: " + spec.upgrade + b"\r\nConnection: upgrade\r\n\r\n")
    return b"".join(lines)


class TakeoverTransport:
    """
    The connection's transport as the new protocol sees it: every method and
    interface of the real one, with writes counted; assigning a protocol to
    ``protocol`` (or ``wrappedProtocol``) hands the connection to it.  (Made
    through ``_proxyFor``, which gives each kind of transport a subclass
    declaring its interfaces once, not each connection.)
    """

    def __init__(self, takeover: Takeover, transport: Any) -> None:
        self.__dict__["_takeover"] = takeover
        self.__dict__["_transport"] = transport

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("protocol", "wrappedProtocol"):
            if value is not self._takeover.target:
                self._takeover.begin(value, makeConnection=False)
            return
        setattr(self._transport, name, value)

    @property
    def protocol(self) -> Any:
        """The protocol that owns the connection now (HTTP until handed on)."""
        takeover = self._takeover
        return takeover.target if takeover.target is not None else takeover.conn

    wrappedProtocol = protocol

    def write(self, data: bytes) -> None:
        """Write, counting the bytes for the connection's record."""
        self._takeover.bytesSent += len(data)
        self._transport.write(data)

    def loseConnection(self) -> None:
        """
        Close: the new protocol (or connserver for it) ends the connection,
        and its record says so however the close completes (see
        ``Takeover.connectionLost``).
        """
        self._takeover.ended = True
        self._transport.loseConnection()

    def abortConnection(self) -> None:
        """
        Abort: the new protocol's own end too (autobahn, as a server, drops
        the TCP connection this way once a closing handshake is done).
        """
        self._takeover.ended = True
        self._transport.abortConnection()

    def writeSequence(self, data: list[bytes]) -> None:
        """Write each, counted."""
        self._takeover.bytesSent += sum(len(part) for part in data)
        self._transport.writeSequence(data)

    def recordFirstWrite(self) -> None:
        """
        Until the protocol that answers its own handshake has written its
        first bytes, writes also give the request's record its status (an
        instance attribute shadows the plain ``write`` until then).
        """
        self.__dict__["write"] = self._recordingWrite
        self.__dict__["writeSequence"] = self._recordingWriteSequence

    def _recordingWrite(self, data: bytes) -> None:
        self._recorded(data)
        self.write(data)

    def _recordingWriteSequence(self, data: list[bytes]) -> None:
        self._recorded(data[0] if data else b"")
        self.writeSequence(data)

    def _recorded(self, first: bytes) -> None:
        del self.__dict__["write"]
        del self.__dict__["writeSequence"]
        self._takeover.recordAnswer(first)


#: A TakeoverTransport subclass per kind of real transport, declaring what
#: that transport provides, once per kind rather than per connection.
_PROXY_CLASSES: dict[type, Any] = {}


def _proxyFor(takeover: Takeover, transport: Any) -> TakeoverTransport:
    """
    The TakeoverTransport for ``transport``.  It declares every interface
    the transport provides except ``ISSLTransport``: a library that sees
    that one takes the transport for Twisted's TLS class itself (autobahn
    asks its TLS channel binding of it, and fails on anything else), while
    the TLS methods still answer through the real transport.
    """
    kind = type(transport)
    proxyClass = _PROXY_CLASSES.get(kind)
    if proxyClass is None:
        proxyClass = type(
            f"TakeoverTransport_{kind.__name__}", (TakeoverTransport,), {}
        )
        interfaces = [
            interface
            for interface in providedBy(transport).flattened()
            if not interface.isOrExtends(ISSLTransport)
        ]
        classImplementsOnly(proxyClass, *interfaces)
        _PROXY_CLASSES[kind] = proxyClass
    proxy: TakeoverTransport = proxyClass(takeover, transport)
    return proxy


@implementer(IHalfCloseableProtocol)
class Takeover:
    """
    The connection (``conn``, an ``HTTPServerProtocol``) after it switched
    protocols.  Where it can, it becomes the transport's protocol itself
    (``transport.protocol``, or a wrapper's ``wrappedProtocol``), so that a
    read costs one call besides the new protocol's own: ``dataReceived`` is
    a slot that holds the bytes until the new protocol has had its
    handshake, then counts and forwards them.  Its close goes through the
    connection (the factory's registry, the record).
    """

    __slots__ = (
        "_call",
        "_pending",
        "_unrecorded",
        "bytesReceived",
        "bytesSent",
        "conn",
        "dataReceived",
        "draining",
        "ended",
        "target",
        "transport",
    )

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.target: IProtocol | None = None
        self.transport = _proxyFor(self, conn.transport)
        self.bytesReceived = 0
        self.bytesSent = 0
        self.draining = False
        # True once the connection was closed from this side.
        self.ended = False
        # Bytes that arrived after the request head, held until the new
        # protocol has had its handshake (None once they flow).
        self._pending: list[bytes] | None = []
        self._call: Any = None
        # The exchange whose record waits for the status the taking code
        # writes (it answers its own handshake).
        self._unrecorded: Any = None
        #: Bytes that arrive: held, then (``release``) forwarded.
        self.dataReceived: Callable[[bytes], None] = self._hold

    def begin(
        self,
        target: IProtocol,
        makeConnection: bool = True,
        head: bytes | None = None,
        handshake: bytes | None = None,
    ) -> None:
        """
        Leave HTTP and hand the connection to ``target``: write ``head``
        (the 101, if connserver writes it), then ``target.makeConnection``
        (unless the taking code calls it itself) and ``handshake``, then
        the bytes that followed the request head.
        """
        conn = self.conn
        front = conn.pipeline.front()
        if front is not None:
            if makeConnection and handshake is None:
                front.switched(101)
            else:
                self._unrecorded = front
                self.transport.recordFirstWrite()
        parser = conn.parser
        if parser is not None:
            self._hold(parser.takeBuffered())
        conn.parser = None
        conn.pipeline.takeAll()
        conn.setState(ConnectionState.UPGRADED)
        conn.timer.cancel()
        conn.takeover = self
        self.target = target
        flow = conn.flow
        if head is not None:
            flow.send(head)
        flow.flush()
        flow.setReading(False)
        real = conn.transport
        real.unregisterProducer()
        # On plain TCP, reads come here without the HTTP protocol in
        # between.  (A wrapper, TLS's or the PROXY protocol's, keeps the
        # HTTP protocol, which forwards: the wrapper's own cost dwarfs it.)
        if getattr(real, "protocol", None) is conn:
            real.protocol = self
        if makeConnection:
            target.makeConnection(self.transport)  # type: ignore[arg-type]
        if handshake:
            target.dataReceived(handshake)
        if makeConnection:
            self.release()
        else:
            # The taking code feeds its protocol first (autobahn replays the
            # handshake after makeConnection); what followed comes after, on
            # the next turn at the latest.
            self._call = conn.clock.callLater(0, self.release)

    def recordAnswer(self, first: bytes) -> None:
        """
        The request's record, with the status of the answer the new protocol
        wrote itself (its first bytes: ``HTTP/1.1 101 ...``, or a refusal).
        """
        exchange, self._unrecorded = self._unrecorded, None
        status = 0
        if first[:7] == b"HTTP/1." and first[12:13] == b" ":
            status = int(first[9:12]) if first[9:12].isdigit() else 0
        exchange.switched(status)

    def _hold(self, data: bytes) -> None:
        self.bytesReceived += len(data)
        if data:
            assert self._pending is not None
            self._pending.append(data)

    def _forward(self, data: bytes) -> None:
        self.bytesReceived += len(data)
        self.target.dataReceived(data)  # type: ignore[union-attr]

    def release(self, catchUp: bool = True) -> None:
        """
        The new protocol may have the bytes that followed the head now, and
        then (``catchUp``) what happened to the connection before it had
        them: the client's half-close, which came after those bytes, and a
        drain that began, which would otherwise never reach it.
        """
        call, self._call = self._call, None
        cancelCall(call)
        pending, self._pending = self._pending, None
        if pending is None or self.target is None:
            return
        self.dataReceived = self._forward
        if pending:
            self.target.dataReceived(b"".join(pending))
        conn = self.conn
        if not catchUp or conn.state is not ConnectionState.UPGRADED:
            return
        if conn.peerInput is not InputState.OPEN:
            self._halfClosed()
        if conn.draining and not self.draining:
            self.drain()

    def readConnectionLost(self) -> None:
        """The client half-closed: the new protocol's, or a close."""
        if self._pending is not None:
            self.release()  # Which tells it, after the bytes held.
        else:
            self._halfClosed()

    def _halfClosed(self) -> None:
        if IHalfCloseableProtocol.providedBy(self.target):
            self.target.readConnectionLost()
        else:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """Our write side is shut (the new protocol's half-close)."""
        if IHalfCloseableProtocol.providedBy(self.target):
            self.target.writeConnectionLost()

    def connectionLost(self, reason: Failure) -> None:
        """The transport is gone (as its protocol): the connection's close."""
        self.conn.connectionLost(reason)

    def targetLost(self, reason: Failure) -> None:
        """The connection ended: the new protocol learns it; the close reason."""
        # What was still held reaches the new protocol first; no call stays.
        self.release(catchUp=False)
        if self._unrecorded is not None:
            self.recordAnswer(b"")
        conn = self.conn
        # A close or an abort the new protocol made is its own end, however
        # the connection then goes: autobahn aborts the TCP connection once
        # the closing handshake is done (ConnectionAborted), and over TLS
        # most clients close the socket without their close_notify after it
        # (the websockets library does), which Twisted reports as
        # ConnectionLost.  Neither is a reset to count; the drain deadline's
        # abort has its own reason already.
        if conn.closeReason is None and (
            reason.check(ConnectionDone)
            or (self.ended and reason.check(ConnectionLost))
        ):
            conn.closeReason = "draining" if self.draining else "upgraded"
        target = self.target
        if target is not None:
            try:
                target.connectionLost(reason)
            except Exception:
                _log.failure("the upgraded protocol failed on connection loss")

    def drain(self) -> None:
        """
        The server drains: tell the new protocol as gracefully as it allows.
        A protocol with ``connectionDraining()`` is asked to end itself; an
        autobahn ``WebSocketServerProtocol`` is sent a close frame 1001
        (Going Away, RFC 6455 §7.4.1); any other loses its connection.  The
        drain deadline aborts whatever remains.
        """
        self.draining = True
        target: Any = self.target
        hook = getattr(target, "connectionDraining", None)
        try:
            if hook is not None:
                hook()
            elif callable(getattr(target, "sendCloseFrame", None)):
                # autobahn's sendClose refuses 1001 (it takes only the codes
                # an application may send: 1000 and 3000-4999); Going Away
                # is the endpoint's own, sent through its frame-level call.
                target.sendCloseFrame(code=1001, reasonUtf8=b"server shutting down")
            else:
                self.transport.loseConnection()
        except Exception:
            _log.failure("telling an upgraded protocol of the drain failed")
            self.transport.loseConnection()


def switchProtocols(exchange: Any, response: Any) -> None:
    """
    A handler's 101 for ``exchange``: hand the connection on if its request
    offered that protocol and nothing was read behind it; otherwise a 500,
    and the 101 is never sent (RFC 9110 §7.8).
    """
    owner = exchange.owner
    spec = response.body
    request = exchange.request
    try:
        if not isinstance(spec, SwitchProtocols):
            raise ValueError("a 101 needs Response.switchProtocols")
        if (
            owner.pipeline.holding is not exchange
            or request is None
            or spec.upgrade.lower() not in exchange.offered
        ):
            raise ValueError(
                f"a 101 to {spec.upgrade!r}, which the request did not offer"
            )
        head = None
        if spec.handshake is None:
            head = switchingHead(
                response,
                spec,
                owner.factory.dateLine(owner.clock.seconds()),
                owner.heads.serverLine,
            )
    except (ValueError, ResponseFramingError):
        # A field the 101 cannot carry (switchingHead's framing check).
        exchange.handlerFailed(Failure())
        return
    owner.takeover = takeover = Takeover(owner)
    takeover.begin(spec.protocol, True, head, spec.handshake)


def transportFor(conn: Any, request: Any) -> TakeoverTransport:
    """``Request.takeOverTransport``: only for the request that may switch."""
    holding = conn.pipeline.holding
    if holding is None or holding.request is not request:
        raise RuntimeError("only the request that may switch can take over")
    takeover: Takeover | None = conn.takeover
    if takeover is None:
        takeover = conn.takeover = Takeover(conn)
    return takeover.transport
