"""
Run a WSGI application (PEP 3333) as a connserver handler: ``--wsgi``.

:class:`WSGIHandler` calls the application in a bounded
``twisted.python.threadpool.ThreadPool`` and turns what it answers into a
``Response``, while connserver keeps the connection (framing, persistence,
timers, drain).  It is written for connserver rather than reusing
twisted.web's ``WSGIResource`` through the twisted.web adapter, which would
read the whole request body into memory first (the adapter gives a resource
``request.content``), and crosses between the threads once per ``write``
with a blocking round trip (see ``docs/apps.md``).  Here:

* ``environ`` is built in the application's thread from the ``Request``:
  ``REMOTE_ADDR`` and ``wsgi.url_scheme`` are the client's and scheme
  ``--trusted-proxies`` resolved; request fields whose names hold ``_`` are
  left out, so that ``X_Forwarded_Proto`` never poses as
  ``X-Forwarded-Proto`` (both would be ``HTTP_X_FORWARDED_PROTO``).
* ``wsgi.input`` (:class:`_Input`) reads the body only when the application
  does, through ``Request.deliverBody``: the reactor thread fills a buffer
  of at most ``_INPUT_HIGH`` bytes and pauses reading from the socket past
  it, and a read in the application's thread waits for what the reactor
  thread delivers.  A body over ``maxBodyBytes`` is answered 413.
* The response: a body complete when the first chunk comes (a list, or
  ``Content-Length`` reached) is sent as ``bytes``, in one hop back to the
  reactor; anything else is streamed as an ``IBodyProducer``, each further
  chunk pulled in the thread pool only when the connection wants more.  The
  iterable's ``close()`` is always called, in the thread pool: at its end,
  when the client goes, on an error.
* An application that raises before its response started is answered 500
  (connserver's handler error: one log line); one that raises after it
  started has its response aborted (never padded).
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.threads import blockingCallFromThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web.client import ResponseDone
from twisted.web.http import RESPONSES
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from connserver._connection.message import Request, Response, ResponseDeferred
from connserver._http.errors import ProtocolError
from connserver._http.headers import isToken
from connserver._http.paths import splitTarget
from connserver._twisted.reactor import defaultReactor

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["DEFAULT_WSGI_THREADS", "WSGIApplication", "WSGIHandler"]

#: A WSGI application: ``application(environ, start_response) -> iterable``.
WSGIApplication = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
#: ``--wsgi-threads``' default: the size of the thread pool ``twistd web
#: --wsgi`` runs applications in (the reactor's, at most 10 threads).
DEFAULT_WSGI_THREADS = 10

#: ``wsgi.input``: above this many buffered bytes reading from the socket
#: pauses; below ``_INPUT_LOW`` it resumes.
_INPUT_HIGH = 256 * 1024
_INPUT_LOW = 64 * 1024
#: How long stopping the thread pool waits for applications still running
#: after the drain, before it lets them go (the threads are daemons).
STOP_WAIT = 5.0

_log = Logger(namespace="connserver.wsgi")

_STATUS_RE = re.compile(r"([1-9][0-9][0-9])(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?")
_BAD_VALUE_RE = re.compile(r"[\x00\r\n]")
#: Response fields already checked and encoded, by (name, value).
_FIELD_CACHE: dict[tuple[str, str], tuple[bytes, bytes]] = {}
_FIELD_CACHE_MAX = 1000
#: Request field name -> its environ key, or "" when it is left out.
_ENVIRON_KEYS: dict[bytes, str] = {b"content-type": "", b"content-length": ""}
_ENVIRON_KEYS_MAX = 1000
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_PROTOCOLS = {(1, 0): "HTTP/1.0", (1, 1): "HTTP/1.1"}


class _Errors:
    """``wsgi.errors``: each write is one error event in twisted.logger."""

    def write(self, text: str) -> None:
        text = text.rstrip("\n")
        if text:
            _log.error("{text}", text=text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass


class _EmptyInput:
    """``wsgi.input`` of a request without a body: shared, always at its end."""

    def read(self, size: int | None = -1) -> bytes:
        return b""

    def readline(self, size: int | None = -1) -> bytes:
        return b""

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        return []

    def __iter__(self) -> Iterator[bytes]:
        return iter(())


_EMPTY_INPUT = _EmptyInput()


class _DaemonThread(threading.Thread):
    """The pool's threads: a stuck application never keeps the process alive."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.daemon = True


class WSGIHandler:
    """
    A connserver handler that runs the WSGI ``application`` in a thread pool
    of at most ``threads`` threads.

    The pool starts with :meth:`startThreads` (``twistd connserver --wsgi``
    starts it with the server; a handler used before then starts it on its
    first request) and stops with :meth:`stopThreads` (after the drain, or at
    reactor shutdown).  ``multiprocess`` is ``wsgi.multiprocess`` (true under
    ``--workers``).
    """

    def __init__(
        self,
        application: WSGIApplication,
        *,
        threads: int = DEFAULT_WSGI_THREADS,
        multiprocess: bool = False,
        reactor: Any = None,
    ) -> None:
        if not callable(application):
            raise TypeError(f"{application!r} is not a WSGI application (callable)")
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        self.application = application
        self.reactor = reactor if reactor is not None else defaultReactor()
        self.pool = ThreadPool(0, threads, name="connserver-wsgi")
        self.pool.threadFactory = _DaemonThread
        self._shutdownTrigger: Any = None
        self._stopping: Deferred[None] | None = None
        self._baseEnviron: dict[str, Any] = {
            "SCRIPT_NAME": "",
            "wsgi.version": (1, 0),
            "wsgi.errors": _Errors(),
            "wsgi.multithread": True,
            "wsgi.multiprocess": multiprocess,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
        }

    def __repr__(self) -> str:
        return f"<WSGIHandler {self.application!r}>"

    def startThreads(self) -> None:
        """Start the thread pool (and stop it at reactor shutdown)."""
        if self.pool.started:
            return
        if self.pool.joined:
            # Stopped before: a ThreadPool does not start again.
            self.pool = ThreadPool(0, self.pool.max, name="connserver-wsgi")
            self.pool.threadFactory = _DaemonThread
        self.pool.start()
        self._stopping = None
        self._shutdownTrigger = self.reactor.addSystemEventTrigger(
            "during", "shutdown", self.stopThreads
        )

    def stopThreads(self) -> Deferred[None]:
        """
        Stop the thread pool: the work queued (a ``close()`` owed) runs, then
        the threads end.  Fires once they have, or after ``STOP_WAIT``
        seconds with a warning for the applications still running.
        """
        if self._stopping is not None:
            return self._stopping
        trigger, self._shutdownTrigger = self._shutdownTrigger, None
        if trigger is not None:
            try:
                self.reactor.removeSystemEventTrigger(trigger)
            except (ValueError, KeyError):
                pass  # it is the trigger running now
        if not self.pool.started:
            return succeed(None)
        stopped: Deferred[None] = Deferred()
        self._stopping = stopped
        reactor = self.reactor

        def expired() -> None:
            busy = len(self.pool.working)
            _log.warn(
                "{busy} WSGI application thread(s) still running {wait:g} s after"
                " the stop; not waiting for them",
                busy=busy,
                wait=STOP_WAIT,
            )
            stopped.callback(None)

        deadline = reactor.callLater(STOP_WAIT, expired)

        def joined() -> None:
            if deadline.active():
                deadline.cancel()
                stopped.callback(None)

        def join() -> None:
            self.pool.stop()
            reactor.callFromThread(joined)

        threading.Thread(target=join, name="connserver-wsgi-stop", daemon=True).start()
        return stopped

    def __call__(self, request: Request) -> Deferred[Response]:
        """Run the application for ``request`` in the thread pool."""
        limit = request.maxBodyBytes
        length = request.contentLength
        if limit is not None and length is not None and length > limit:
            # Known too large from the head: the application never sees it.
            raise ProtocolError("request body larger than maxBodyBytes", 413)
        call = _Call(self, request, limit)
        # Taken by the exchange directly, without a callback chain.
        result: Deferred[Response] = ResponseDeferred(call.cancel)
        call.result = result
        if not self.pool.started:
            if self._stopping is not None:
                raise ProtocolError("the WSGI thread pool is stopped", 503)
            self.startThreads()
        self.pool.callInThread(call.run)
        return result

    def environFor(self, request: Request, wsgiInput: Any) -> dict[str, Any]:
        """The PEP 3333 ``environ`` of ``request``."""
        environ = self._baseEnviron.copy()
        target = request.target
        path, query = request.path, request.query
        authority = None
        if target[:1] != b"/":
            parts = splitTarget(target)
            if parts is not None:
                path, query, authority = parts
                query = query[1:]
        if b"%" in path:
            path = _unquote(path)
        environ["REQUEST_METHOD"] = request.method.decode("latin-1")
        environ["PATH_INFO"] = path.decode("latin-1")
        environ["QUERY_STRING"] = query.decode("latin-1")
        version = request.version
        environ["SERVER_PROTOCOL"] = (
            _PROTOCOLS.get(version) or f"HTTP/{version[0]}.{version[1]}"
        )
        scheme = request.scheme
        environ["wsgi.url_scheme"] = scheme
        environ["wsgi.input"] = wsgiInput
        client = request.clientAddress
        environ["REMOTE_ADDR"] = str(getattr(client, "host", "") or "")
        port = getattr(client, "port", None)
        if port is not None:
            environ["REMOTE_PORT"] = str(port)
        if request.contentLength is not None and not request.chunked:
            environ["CONTENT_LENGTH"] = str(request.contentLength)
        host = _addFields(environ, request)
        if authority is not None:
            host = authority.decode("latin-1")
            environ["HTTP_HOST"] = host
        _serverNameAndPort(environ, host, request, scheme)
        return environ


def _unquote(path: bytes) -> bytes:
    """Percent-decoding of a path (PEP 3333: PATH_INFO is decoded)."""
    from urllib.parse import unquote_to_bytes

    return unquote_to_bytes(path)


def _environKey(lowered: bytes) -> str:
    key = _ENVIRON_KEYS.get(lowered)
    if key is None:
        if b"_" in lowered:
            key = ""
        else:
            key = "HTTP_" + lowered.decode("latin-1").upper().replace("-", "_")
        if len(_ENVIRON_KEYS) < _ENVIRON_KEYS_MAX:
            _ENVIRON_KEYS[lowered] = key
    return key


def _addFields(environ: dict[str, Any], request: Request) -> str | None:
    """The ``HTTP_*`` fields (and ``CONTENT_TYPE``); the Host value."""
    host: str | None = None
    for lowered, _, raw in request.headers._fields:
        value = raw.decode("latin-1")
        key = _environKey(lowered)
        if not key:
            if lowered == b"content-type":
                environ["CONTENT_TYPE"] = value
            continue
        if key in environ:
            # Repeated lines are one list (RFC 9110 §5.3); Cookie's
            # separator is "; " (RFC 6265 §5.4).
            joiner = "; " if lowered == b"cookie" else ", "
            environ[key] = environ[key] + joiner + value
        else:
            environ[key] = value
        if lowered == b"host":
            host = value
    return host


def _defaultPort(scheme: str) -> str:
    return _DEFAULT_PORTS.get(scheme, "80")


def _serverNameAndPort(
    environ: dict[str, Any], host: str | None, request: Request, scheme: str
) -> None:
    """SERVER_NAME and SERVER_PORT from Host, else from the listener."""
    if host:
        name, port = host, ""
        if host.startswith("["):
            end = host.find("]")
            if end != -1:
                name, port = host[: end + 1], host[end + 2 :]
        elif ":" in host:
            name, _, port = host.rpartition(":")
        environ["SERVER_NAME"] = name
        environ["SERVER_PORT"] = port if port.isdigit() else _defaultPort(scheme)
        return
    listener = request.host
    environ["SERVER_NAME"] = str(getattr(listener, "host", "") or "localhost")
    listenerPort = getattr(listener, "port", None)
    environ["SERVER_PORT"] = (
        str(listenerPort) if listenerPort is not None else _defaultPort(scheme)
    )


def _checkedField(name: Any, value: Any) -> tuple[bytes, bytes]:
    """A response field (native strings, PEP 3333) as bytes, or an error."""
    pair = (name, value)
    cached = _FIELD_CACHE.get(pair)
    if cached is not None:
        return cached
    if type(name) is not str or type(value) is not str:
        raise TypeError(
            f"WSGI response field {name!r}: {value!r}: name and value must be str"
        )
    try:
        encoded = (name.encode("latin-1"), value.encode("latin-1"))
    except UnicodeEncodeError:
        raise ValueError(
            f"WSGI response field {name!r}: {value!r}: not latin-1"
        ) from None
    if not isToken(encoded[0]):
        raise ValueError(f"WSGI response field name {name!r}: not a token")
    if _BAD_VALUE_RE.search(value):
        raise ValueError(
            f"WSGI response field {name!r}: {value!r}: CR, LF or NUL in the value"
        )
    if len(_FIELD_CACHE) < _FIELD_CACHE_MAX and name.lower() != "set-cookie":
        _FIELD_CACHE[pair] = encoded
    return encoded


def _checkedStatus(status: Any) -> tuple[int, bytes | None]:
    if type(status) is not str:
        raise TypeError(f"WSGI status {status!r}: must be str, such as '200 OK'")
    match = _STATUS_RE.fullmatch(status)
    if match is None or not 200 <= int(match.group(1)) <= 599:
        raise ValueError(
            f"WSGI status {status!r}: expected a final status line such as '200 OK'"
        )
    code = int(match.group(1))
    reason = match.group(2)
    if reason is None:
        return code, None
    encoded = reason.encode("latin-1")
    return code, None if encoded == RESPONSES.get(code) else encoded


def _closeIterable(iterable: object) -> None:
    """``iterable.close()`` if it has one; its failure is logged."""
    close = getattr(iterable, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception:
        _log.failure("close() of a WSGI response iterable failed")


class _ClientGone(ConnectionError):
    """write() after the client went away (not the application's fault)."""


@implementer(IBodyProducer)
class _Call:
    """
    One request's run of the application: the thread-side calls
    (``run``, ``startResponse``, ``write``, ``_next``) and, once the response
    streams, its ``IBodyProducer`` on the reactor side.
    """

    def __init__(self, handler: WSGIHandler, request: Request, limit: int | None):
        self.handler = handler
        self.request = request
        self.limit = limit
        self.result: Deferred[Response] | None = None
        # Thread side.
        self.status: tuple[int, bytes | None] | None = None
        self.fields: list[tuple[bytes, bytes]] = []
        self.contentLength: int | None = None
        self.committed = False
        self.input: _Input | None = None
        # Reactor side.
        self.cancelled = False
        self.length: Any = UNKNOWN_LENGTH
        self._consumer: IConsumer | None = None
        self._done: Deferred[None] | None = None
        self._paused = False
        self._pulling = False
        self._stopped = False
        self._finished = False
        self._appRunning = True
        self._iterator: Iterator[bytes] | None = None
        self._iterable: object = None
        self._closeOwed = False
        self._pending: list[bytes] = []
        self._remaining: int | None = None
        self._waiters: list[Deferred[None]] = []

    # -- in the application's thread -----------------------------------------

    def run(self) -> None:
        """Call the application and answer with what it gives."""
        request = self.request
        wsgiInput: Any = _EMPTY_INPUT
        if request.hasBody:
            wsgiInput = self.input = _Input(self.handler.reactor, request, self.limit)
        try:
            environ = self.handler.environFor(request, wsgiInput)
            iterable = self.handler.application(environ, self.startResponse)
        except Exception:
            self._failed(Failure(), None)
            return
        if self.committed:
            # It wrote with write(): the rest comes from the iterable.
            self._toReactor(self._streamFrom, iterable)
            return
        try:
            self._answer(iterable)
        except Exception:
            self._failed(Failure(), iterable)

    def startResponse(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: tuple[type[BaseException], BaseException, TracebackType]
        | None = None,
    ) -> Callable[[bytes], None]:
        """PEP 3333's ``start_response``."""
        if exc_info is not None:
            try:
                if self.committed:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # no cycle through the traceback
        elif self.status is not None:
            raise AssertionError("start_response() called twice without exc_info")
        if type(headers) is not list:
            raise TypeError(f"WSGI response headers must be a list, not {headers!r}")
        code = _checkedStatus(status)
        fields: list[tuple[bytes, bytes]] = []
        length: int | None = None
        for item in headers:
            if type(item) is not tuple or len(item) != 2:
                raise TypeError(
                    f"WSGI response header {item!r}: expected (name, value)"
                )
            name, value = _checkedField(*item)
            if len(name) == 14 and name.lower() == b"content-length":
                if not value.isdigit():
                    raise ValueError(f"WSGI Content-Length {item[1]!r}: not a number")
                length = int(value)
            fields.append((name, value))
        self.status = code
        self.fields = fields
        self.contentLength = length
        return self.write

    def write(self, data: bytes) -> None:
        """PEP 3333's ``write()``: sent (or buffered) before it returns."""
        if self.status is None:
            raise AssertionError("write() before start_response()")
        if type(data) is not bytes:
            raise TypeError(f"write() takes bytes, not {type(data).__name__}")
        if not data:
            return
        if not self.committed:
            self._commit(self._response(self))
        blockingCallFromThread(self.handler.reactor, self._push, data)  # type: ignore[arg-type]

    def _response(self, body: bytes | _Call) -> Response:
        assert self.status is not None
        code, reason = self.status
        if self.input is not None and self.input.tooLarge:
            raise ProtocolError("request body larger than maxBodyBytes", 413)
        if body is self:
            self.length = (
                UNKNOWN_LENGTH if self.contentLength is None else self.contentLength
            )
            self._remaining = self.contentLength
        return Response(code, self.fields, body, reason=reason)

    def _answer(self, iterable: Iterable[bytes]) -> None:
        """
        The first chunk of the iterable: the whole body when it is a list or
        tuple, or when it reaches Content-Length (close() called here);
        else the response streams, starting with it.
        """
        if type(iterable) is list or type(iterable) is tuple:
            for chunk in iterable:
                if type(chunk) is not bytes:
                    raise TypeError(f"WSGI body chunk {chunk!r}: not bytes")
            self._whole(b"".join(iterable), iterable)
            return
        iterator = iter(iterable)
        for chunk in iterator:
            if type(chunk) is not bytes:
                raise TypeError(f"WSGI body chunk {chunk!r}: not bytes")
            if chunk:
                break
        else:
            self._whole(b"", iterable)
            return
        length = self.contentLength
        if length is not None and len(chunk) >= length:
            self._whole(chunk[:length], iterable)
            return
        if self.status is None:
            raise AssertionError("the application did not call start_response()")
        response = self._response(self)
        self.committed = True
        self._toReactor(self._deliver, response, chunk, iterator, iterable)

    def _whole(self, body: bytes, iterable: object) -> None:
        if self.status is None:
            raise AssertionError("the application did not call start_response()")
        length = self.contentLength
        if length is not None and len(body) > length:
            body = body[:length]
        response = self._response(body)
        _closeIterable(iterable)
        self._commit(response)

    def _commit(self, response: Response) -> None:
        """The status and fields are final: hand the response over."""
        self.committed = True
        self._toReactor(self._deliver, response, None, None, None)

    def _failed(self, failure: Failure, iterable: object) -> None:
        if iterable is not None:
            _closeIterable(iterable)
        if self.input is not None and self.input.tooLarge:
            failure = Failure(
                ProtocolError("request body larger than maxBodyBytes", 413)
            )
        if self.committed:
            self._toReactor(self._bodyFailed, failure)
        else:
            self._toReactor(self._handlerFailed, failure)

    def _toReactor(self, f: Callable[..., object], *args: Any) -> None:
        self.handler.reactor.callFromThread(f, *args)

    def _next(self) -> None:
        """In the pool: the next non-empty chunk, or the end."""
        iterator = self._iterator
        assert iterator is not None
        try:
            for chunk in iterator:
                if type(chunk) is not bytes:
                    raise TypeError(f"WSGI body chunk {chunk!r}: not bytes")
                if chunk:
                    self._toReactor(self._got, chunk)
                    return
        except Exception:
            failure = Failure()
            _closeIterable(self._iterable)
            self._toReactor(self._bodyFailed, failure)
            return
        _closeIterable(self._iterable)
        self._toReactor(self._ended)

    def _closeInThread(self) -> None:
        _closeIterable(self._iterable)

    # -- in the reactor thread ------------------------------------------------

    def cancel(self, result: Deferred[Response]) -> None:
        """The connection went before the response started."""
        self.cancelled = True
        self._stop()
        if self.input is not None:
            self.input.abandon()

    def _deliver(
        self,
        response: Response,
        first: bytes | None,
        iterator: Iterator[bytes] | None,
        iterable: object,
    ) -> None:
        """The response from the thread: its first chunk and the rest."""
        if iterator is not None:
            assert first is not None
            self._pending.append(first)
            self._iterator = iterator
            self._iterable = iterable
            self._appRunning = False
        result = self.result
        if self.cancelled or result is None or result.called:
            if response.body is self:
                self._owedClose()
            return
        result.callback(response)

    def _handlerFailed(self, failure: Failure) -> None:
        result = self.result
        if self.cancelled or result is None or result.called:
            if not failure.check(_ClientGone) and not (
                self.input is not None and self.input.failed
            ):
                _log.failure("WSGI application failed after its client left", failure)
            return
        result.errback(failure)

    def _streamFrom(self, iterable: Iterable[bytes]) -> None:
        """After write(): the rest of the body is the iterable's."""
        self._iterable = iterable
        self._appRunning = False
        if self._stopped:
            self._owedClose()
            return
        self._pool(self._iterate, iterable)

    def _iterate(self, iterable: Iterable[bytes]) -> None:
        """In the pool: iter() of what the application returned after write()."""
        try:
            iterator = iter(iterable)
        except Exception:
            self._failed(Failure(), iterable)
            return
        self._toReactor(self._setIterator, iterator)

    def _setIterator(self, iterator: Iterator[bytes]) -> None:
        self._iterator = iterator
        if self._stopped:
            self._owedClose()
        else:
            self._pull()

    def _pool(self, f: Callable[..., object], *args: Any) -> None:
        pool = self.handler.pool
        if pool.joined:
            # Stopped already (the reactor is shutting down): here, then.
            f(*args)
        else:
            pool.callInThread(f, *args)

    # IBodyProducer

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        if self._stopped:
            return Deferred()
        self._consumer = consumer
        done: Deferred[None] = Deferred()
        self._done = done
        pending, self._pending = self._pending, []
        for chunk in pending:
            self._write(chunk)
        self._release()
        self._pull()
        return done

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._release()
        self._pull()

    def stopProducing(self) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._done = None
        self._consumer = None
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.errback(_ClientGone("the client went away"))
        self._owedClose()

    def _owedClose(self) -> None:
        """close() the iterable, unless the pool is still iterating it."""
        if (
            self._closeOwed
            or self._pulling
            or self._appRunning
            or self._finished
            or self._iterable is None
        ):
            return
        self._closeOwed = True
        self._pool(self._closeInThread)

    def _write(self, chunk: bytes) -> None:
        remaining = self._remaining
        if remaining is not None:
            if len(chunk) > remaining:
                # PEP 3333: never more than Content-Length.
                chunk = chunk[:remaining]
            self._remaining = remaining - len(chunk)
        consumer = self._consumer
        assert consumer is not None
        consumer.write(chunk)

    def _release(self) -> None:
        """Wake write() calls that waited for the consumer to want more."""
        if self._paused or self._consumer is None:
            return
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _push(self, data: bytes) -> Deferred[None]:
        """A write() from the application's thread."""
        if self._stopped:
            return fail(_ClientGone("the client went away"))
        if self._consumer is None:
            self._pending.append(data)
        else:
            self._write(data)
            if self._remaining == 0:
                return succeed(None)
        if self._consumer is not None and not self._paused:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        return waiter

    def _pull(self) -> None:
        if (
            self._pulling
            or self._paused
            or self._stopped
            or self._consumer is None
            or self._iterator is None
        ):
            return
        if self._remaining == 0:
            # Content-Length reached: no further iteration (PEP 3333).
            self._finished = True
            self._closeOwed = True
            self._pool(self._closeInThread)
            self._complete()
            return
        self._pulling = True
        self._pool(self._next)

    def _got(self, chunk: bytes) -> None:
        self._pulling = False
        if self._stopped:
            self._owedClose()
            return
        self._write(chunk)
        self._pull()

    def _ended(self) -> None:
        self._pulling = False
        self._finished = True
        if not self._stopped:
            self._complete()

    def _complete(self) -> None:
        done, self._done = self._done, None
        if done is not None:
            done.callback(None)

    def _bodyFailed(self, failure: Failure) -> None:
        self._pulling = False
        self._finished = True
        self._appRunning = False
        done, self._done = self._done, None
        if done is not None:
            # connserver logs it once and aborts the connection.
            done.errback(failure)
        elif not failure.check(_ClientGone) and not (
            self.input is not None and self.input.failed
        ):
            _log.failure("WSGI response failed after its client left", failure)


class _Input:
    """
    ``wsgi.input``: the request body, delivered by the reactor thread
    (``Request.deliverBody``) into a bounded buffer and read in the
    application's thread.
    """

    def __init__(self, reactor: Any, request: Request, limit: int | None) -> None:
        self._reactor = reactor
        self._request = request
        self._limit = limit
        self._condition = threading.Condition(threading.Lock())
        self._buffer = bytearray()
        self._received = 0
        self._started = False
        self._ended = False
        self._error: str | None = None
        self._producer: IPushProducer | None = None
        self._paused = False
        self._resumeAsked = False
        #: The body was larger than maxBodyBytes (the answer is 413).
        self.tooLarge = False
        #: The body will not come whole (the client went, a timeout, too large).
        self.failed = False

    # The application's side.

    def _waitFor(self, enough: Callable[[], bool]) -> None:
        """Wait (holding the condition) until ``enough()`` or the end."""
        if not self._started:
            self._started = True
            self._reactor.callFromThread(self._request.deliverBody, self)
        while not enough() and not self._ended:
            self._condition.wait()
        if self._error is not None and not self._buffer:
            raise OSError(self._error)

    def _take(self, size: int) -> bytes:
        buffer = self._buffer
        data = bytes(buffer[:size])
        del buffer[:size]
        if self._paused and not self._resumeAsked and len(buffer) < _INPUT_LOW:
            self._resumeAsked = True
            self._reactor.callFromThread(self._resume)
        return data

    def read(self, size: int | None = -1) -> bytes:
        # As a file's read(): ``size`` bytes, fewer only at the end of the
        # body (apps read CONTENT_LENGTH at once and trust the length).  The
        # buffer holds at most about _INPUT_HIGH, so a larger read takes
        # what is there and waits for more rather than for all of it.
        if size == 0:
            return b""
        wanted = sys.maxsize if size is None or size < 0 else size
        return self._collect(wanted, lambda buffer, limit: limit)

    def readline(self, size: int | None = -1) -> bytes:
        wanted = sys.maxsize if size is None or size < 0 else size
        if wanted == 0:
            return b""

        def lineEnd(buffer: bytearray, limit: int) -> int:
            end = buffer.find(b"\n", 0, limit)
            return limit if end == -1 else end + 1

        return self._collect(wanted, lineEnd, line=True)

    def _collect(
        self, wanted: int, portion: Callable[[bytearray, int], int], line: bool = False
    ) -> bytes:
        """
        Up to ``wanted`` bytes, taken from the buffer in the sizes
        ``portion(buffer, limit)`` gives, until ``wanted``, the end of the
        body, or (for a line) a portion that ends with a newline.
        """
        parts: list[bytes] = []
        got = 0
        with self._condition:
            while got < wanted:
                self._waitFor(lambda: bool(self._buffer))
                buffer = self._buffer
                if not buffer:
                    break  # The end of the body.
                part = self._take(portion(buffer, min(len(buffer), wanted - got)))
                parts.append(part)
                got += len(part)
                if line and part.endswith(b"\n"):
                    break
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    # The reactor's side: an IProtocol for Request.deliverBody.

    def makeConnection(self, producer: IPushProducer) -> None:
        self._producer = producer

    def dataReceived(self, data: bytes) -> None:
        with self._condition:
            if self._ended:
                return
            self._received += len(data)
            limit = self._limit
            if limit is not None and self._received > limit:
                self.tooLarge = True
                self._end("request body larger than maxBodyBytes")
                assert self._producer is not None
                self._producer.stopProducing()
                return
            self._buffer += data
            if not self._paused and len(self._buffer) >= _INPUT_HIGH:
                self._paused = True
                assert self._producer is not None
                self._producer.pauseProducing()
            self._condition.notify()

    def connectionLost(self, reason: Failure) -> None:
        with self._condition:
            if self._ended:
                return
            if reason.check(ResponseDone):
                self._ended = True
                self._condition.notify()
            else:
                self._end(f"request body not complete: {reason.getErrorMessage()}")

    def _end(self, error: str) -> None:
        """Holding the condition: the body ends here with ``error``."""
        self._ended = True
        self._error = error
        self.failed = True
        self._buffer.clear()
        self._condition.notify()

    def _resume(self) -> None:
        with self._condition:
            self._resumeAsked = False
            if not self._paused or self._ended:
                return
            self._paused = False
        assert self._producer is not None
        self._producer.resumeProducing()

    def abandon(self) -> None:
        """The request is gone: a waiting read raises."""
        with self._condition:
            if not self._ended:
                self._end("the client went away")
