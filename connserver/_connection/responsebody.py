"""
``ResponseBody``: a streamed response body on its way out.

A response whose body is an ``IBodyProducer`` or an open file is written as
its producer produces; this object is the consumer the producer writes to
(``IConsumer``, and ``ISendfileConsumer`` so that a file on plain TCP goes
out with the kernel's ``sendfile``).  It frames every write (Content-Length
or chunked, ``_http.framing``), counts the bytes, and tells its exchange
how the body ended.  It is made only for streamed bodies: a response with
``bytes`` is written whole by its exchange.
"""

from __future__ import annotations

from typing import Any, BinaryIO, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from connserver._connection.fileproducer import FileBodyProducer, ISendfileConsumer
from connserver._connection.flow import WOULD_BLOCK, Flow
from connserver._http.errors import BodyInterrupted, ResponseFramingError
from connserver._http.framing import BodyWriter, ContentLengthWriter
from connserver._http.headers import Headers

__all__ = ["ResponseBody", "StreamingExchange"]

_log = Logger(namespace="connserver")


class StreamingExchange(Protocol):
    """What a streamed body uses of its exchange (``Exchange`` provides it)."""

    owner: Any
    bodyBytes: int

    @property
    def finished(self) -> bool:
        """Its response is complete, or nobody will read it."""

    def abortResponse(self, why: str, logged: bool = False) -> None:
        """The response cannot be completed as framed."""

    def responseDone(self) -> None:
        """The response is complete."""


@implementer(ISendfileConsumer)
class ResponseBody:
    """
    The consumer of one streamed response body.

    :param exchange: the exchange whose response this is.
    :param body: the ``IBodyProducer`` or open binary file.
    :param writer: the framing of the body.
    :param length: the body's length, if known.
    """

    __slots__ = ("_exchange", "_flow", "_writer", "file", "producer")

    def __init__(
        self,
        exchange: StreamingExchange,
        body: Any,
        writer: BodyWriter,
        length: int | None,
    ) -> None:
        self._exchange = exchange
        owner = exchange.owner
        self._flow: Flow = owner.flow
        self._writer = writer
        #: The open file that is the body, closed when it ends either way.
        self.file: BinaryIO | None = None
        self.producer: Any
        if IBodyProducer.providedBy(body):
            self.producer = body
        else:
            self.file = body
            self.producer = FileBodyProducer(
                body, length, paused=self._flow.writePaused, clock=owner.clock
            )

    def start(self, trailers: Headers | None) -> None:
        """Start the producer; ``trailers`` follow a chunked body."""
        producer = self.producer
        try:
            done = producer.startProducing(self)
        except Exception:
            done = Deferred()
            done.errback(Failure())
        if self._flow.writePaused and not self._exchange.finished:
            producer.pauseProducing()
        done.addCallbacks(lambda _: self._finished(trailers), self._failed)

    # IConsumer, ISendfileConsumer

    def write(self, data: bytes) -> None:
        """Body bytes from the producer: framed, counted, sent."""
        exchange = self._exchange
        if exchange.finished or not data:
            return
        try:
            wire = self._writer.write(data)
        except ResponseFramingError as error:
            exchange.abortResponse(str(error))
            return
        exchange.bodyBytes += len(data)
        if wire:
            self._flow.send(wire)

    def sendfile(self, fd: int, offset: int, count: int) -> int | None:
        """
        Send ``count`` bytes of the open file ``fd`` from ``offset`` with
        the kernel's ``sendfile``.  Returns the bytes sent (0 only at the end
        of the file), ``WOULD_BLOCK`` after pausing the producer until the
        socket can take more, or None when the producer must ``write``
        instead (TLS, chunked framing, ...).
        """
        exchange = self._exchange
        writer = self._writer
        if exchange.finished or type(writer) is not ContentLengthWriter:
            return None
        flow = self._flow
        sent = flow.sendFile(fd, offset, count)
        if sent is None:
            return None
        if sent == WOULD_BLOCK:
            # Wait for the socket like any write would: pause the producer,
            # and let the transport resume us when it can take more.
            flow.pauseProducing()
            flow.waitUntilWritable()
            return WOULD_BLOCK
        try:
            writer.account(sent)
        except ResponseFramingError as error:
            exchange.abortResponse(str(error))
            return None
        exchange.bodyBytes += sent
        return sent

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        """
        An ``IBodyProducer`` may hand us a producer of its own; the
        connection already relays the transport's pause/resume to the body
        producer.
        """

    def unregisterProducer(self) -> None:
        """See ``registerProducer``."""

    # The end, either way.

    def _finished(self, trailers: Headers | None) -> None:
        exchange = self._exchange
        if exchange.finished:
            return
        try:
            tail = self._writer.finish(trailers)
        except ResponseFramingError as error:
            exchange.abortResponse(str(error))
            return
        if tail:
            self._flow.send(tail)
        self._closeFile()
        self.producer = None
        exchange.responseDone()

    def _failed(self, failure: Failure) -> None:
        exchange = self._exchange
        if exchange.finished:
            return
        peer = exchange.owner.peerHost
        if failure.check(BodyInterrupted):
            # A known, named cause (the source ended early): one line.
            _log.warn(
                "response body for {peer} interrupted: {why}; aborting the response",
                peer=peer,
                why=failure.getErrorMessage(),
            )
        else:
            _log.failure(
                "response body failed for {peer}: aborting the response",
                failure,
                peer=peer,
            )
        exchange.abortResponse("body-error", logged=True)

    def stop(self) -> None:
        """Nobody will read the rest: stop the producer, close the file."""
        producer = self.producer
        self.producer = None
        if producer is not None:
            try:
                producer.stopProducing()
            except Exception:
                _log.failure("stopping a body producer failed")
        self._closeFile()

    def _closeFile(self) -> None:
        if self.file is not None:
            fileBody, self.file = self.file, None
            try:
                fileBody.close()
            except OSError:
                pass
