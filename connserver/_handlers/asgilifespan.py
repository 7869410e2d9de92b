"""
ASGI's ``lifespan`` scope for ``ASGIHandler``: the app's startup before
the listeners accept, its shutdown after the drain.

``twistd connserver --asgi`` (and each ``--workers`` worker) runs the
startup on the asyncio loop before the reactor runs, so that no request
reaches an app that is not ready; a ``lifespan.startup.failed`` stops the
server with the app's message.  An app that does not speak lifespan (it
raises or returns on that scope without a word, as Django's ASGI handler
does) is served without it, as uvicorn's ``--lifespan auto`` does.
"""

from __future__ import annotations

import asyncio
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from connserver._handlers.asgicycle import ASGIApp, Message

__all__ = ["Lifespan", "LifespanError", "LifespanService"]

_log = Logger(namespace="connserver")

_ASGI = {"version": "3.0", "spec_version": "2.0"}


class LifespanError(Exception):
    """The app's startup (or shutdown) failed; the message says why."""


class Lifespan:
    """
    The lifespan of ``app``: one task from :meth:`startup` to the end of
    :meth:`shutdown`.  ``state`` is the scope's ``state``, which each
    request's scope gets a copy of.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self.supported = True
        self._inbox: asyncio.Queue[Message] | None = None
        self._outcome: asyncio.Future[Message | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._failureSaid = False

    async def startup(self) -> None:
        """Run the app's startup; ``LifespanError`` if it failed."""
        loop = asyncio.get_running_loop()
        self._inbox = asyncio.Queue()
        self._outcome = loop.create_future()
        scope = {"type": "lifespan", "asgi": _ASGI, "state": self.state}
        self._task = loop.create_task(self._run(scope))
        await self._inbox.put({"type": "lifespan.startup"})
        reply = await asyncio.shield(self._outcome)
        if reply is None:
            return
        if reply["type"] == "lifespan.startup.failed":
            raise LifespanError(_oneLine(reply.get("message")))

    async def shutdown(self, timeout: float | None = None) -> None:
        """Run the app's shutdown, within ``timeout`` seconds; then it is over."""
        task = self._task
        if task is None or task.done() or not self.supported:
            return
        assert self._inbox is not None
        loop = asyncio.get_running_loop()
        self._outcome = loop.create_future()
        await self._inbox.put({"type": "lifespan.shutdown"})
        try:
            reply = await asyncio.wait_for(asyncio.shield(self._outcome), timeout)
        except TimeoutError:
            _log.warn(
                "ASGI lifespan shutdown took more than {timeout} s: cancelled",
                timeout=timeout,
            )
            task.cancel()
            return
        if reply is not None and reply["type"] == "lifespan.shutdown.failed":
            _log.error(
                "ASGI lifespan shutdown failed: {message}",
                message=reply.get("message") or "",
            )

    async def _receive(self) -> Message:
        assert self._inbox is not None
        return await self._inbox.get()

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind not in (
            "lifespan.startup.complete",
            "lifespan.startup.failed",
            "lifespan.shutdown.complete",
            "lifespan.shutdown.failed",
        ):
            raise RuntimeError(f"unexpected lifespan message {kind!r}")
        if kind.endswith(".failed"):
            self._failureSaid = True
        outcome = self._outcome
        if outcome is not None and not outcome.done():
            outcome.set_result(message)

    async def _run(self, scope: dict[str, Any]) -> None:
        spoke = False
        outcome = self._outcome

        async def send(message: Message) -> None:
            nonlocal spoke
            spoke = True
            await self._send(message)

        try:
            await self.app(scope, self._receive, send)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if not spoke:
                self.supported = False
                _log.info(
                    "The ASGI app does not support lifespan ({error}): "
                    "served without it",
                    error=f"{type(error).__name__}: {error}",
                )
            elif not self._failureSaid:
                # (After a *.failed message the app's own error is the one
                # that message carried, and it is logged once, by its reader.)
                _log.failure("ASGI lifespan task raised")
        else:
            if not spoke:
                self.supported = False
        outcome = self._outcome
        if outcome is not None and not outcome.done():
            outcome.set_result(None)


def _oneLine(message: str | None) -> str:
    """
    A failure's message for one log line.  Frameworks send a whole
    traceback (Starlette does): that is logged once as it came, and its
    last line, the exception, is the one-line reason.
    """
    lines = [line.strip() for line in (message or "").splitlines() if line.strip()]
    if not lines:
        return "lifespan.startup.failed"
    if len(lines) > 1:
        _log.error("ASGI lifespan startup failed:\n{message}", message=message)
    return lines[-1]


class LifespanService(Service):
    """
    The lifespan of ``handler``'s app (an ``ASGIHandler``) as a companion
    service of the server.  The startup runs on the asyncio loop before the
    reactor runs, so that no request reaches an app that is not ready:
    when the service is made if ``startNow`` (a ``--workers`` worker, in its
    own process), else in ``privilegedStartService``, before the listeners
    bind (``twistd``: after it has daemonized, so that threads and loops the
    app starts belong to the process that serves; ``LifespanError`` if it
    failed; a listener that fails then runs the shutdown,
    ``startupAbandoned``).  If the reactor
    already runs, the startup runs when the service starts.  Stopping it,
    after the drain, runs the shutdown (within ``timeout`` seconds) and
    cancels what app tasks remain.
    """

    def __init__(
        self, handler: Any, timeout: float | None, startNow: bool = False
    ) -> None:
        self.setName("asgi-lifespan")  # type: ignore[no-untyped-call]
        self.handler = handler
        self.timeout = timeout
        self.lifespan = Lifespan(handler.app)
        self.loop = asyncio.get_event_loop()
        self.started = False
        if startNow:
            self._startBeforeTheReactor()

    def _startBeforeTheReactor(self) -> None:
        if not self.started and not self.loop.is_running():
            self.loop.run_until_complete(self.lifespan.startup())
            self._ready()

    def _ready(self) -> None:
        self.started = True
        if self.lifespan.supported:
            self.handler.state = self.lifespan.state

    def privilegedStartService(self) -> None:
        super().privilegedStartService()  # type: ignore[no-untyped-call]
        self._startBeforeTheReactor()

    def startupAbandoned(self) -> None:
        """
        The server could not start after the app's startup (a port in use):
        the app's shutdown runs now, as uvicorn runs it, so that what its
        startup opened is closed.
        """
        if self.started and not self.loop.is_running():
            self.loop.run_until_complete(self._stop())

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        if self.started:
            return

        def done(future: asyncio.Future[None]) -> None:
            error = future.exception()
            if error is None:
                self._ready()
            else:
                _log.critical("ASGI lifespan startup failed: {error}", error=error)

        self.loop.create_task(self.lifespan.startup()).add_done_callback(done)

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        return Deferred.fromFuture(self.loop.create_task(self._stop()))

    async def _stop(self) -> None:
        await self.lifespan.shutdown(self.timeout)
        tasks = self.handler.cancelAll()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
