"""
What the ``http`` and ``websocket`` cycles of ``ASGIHandler`` share: the
ASGI types, the errors ``send`` raises, and the app's task and its end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from twisted.python.failure import Failure

from connserver._connection.message import Request
from connserver._handlers.asgitask import startEagerly
from connserver._http.errors import ClientGone

__all__ = [
    "ASGIApp",
    "ASGIAppError",
    "ClientDisconnected",
    "Cycle",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "asFailure",
]

#: An ASGI scope and an ASGI event (dictionaries, keys as the spec says).
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: An ASGI 3 application.
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ASGIAppError(RuntimeError):
    """
    What ``send`` raises when the app breaks the ASGI protocol (a second
    ``http.response.start``, a body after the end, an unknown message).
    """


class ClientDisconnected(OSError, ClientGone):
    """
    ``send`` after the client went away (ASGI 2.4: an ``OSError``
    subclass, which Starlette turns into ``ClientDisconnect``); also what
    connserver is told when an app whose client closed returned without a
    response (``ClientGone``: nothing to answer, nothing to log as an error).
    """


class Cycle:
    """What the HTTP and WebSocket cycles share: the app's task and its end."""

    task: asyncio.Task[None] | None = None
    #: The app's coroutine returned (or raised).
    ended = False
    #: What a waiting receive or send waits on (``wake`` sets it).
    waiter: asyncio.Future[None] | None = None
    _grace: asyncio.TimerHandle | None = None

    def __init__(
        self, handler: Any, request: Request, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.handler = handler
        self.request = request
        self.loop = loop

    #: Start the app's task eagerly (``startEagerly``): the HTTP cycle.  A
    #: WebSocket's app is started on the loop's next pass, once its
    #: handshake's answer reached the connection (what it sends at once
    #: after accepting needs the connection switched).
    eager = False

    def startApp(self, scope: Scope) -> None:
        """
        Run the app in a task of its own; started eagerly (``eager``), what
        it does before it first waits is done when this returns.
        """
        self.handler.cycles.add(self)
        main = self._main(scope)
        self.task = (
            startEagerly(self.loop, main) if self.eager else self.loop.create_task(main)
        )

    async def _main(self, scope: Scope) -> None:
        # The end is handled here rather than in a done callback: one loop
        # turn less per request.
        error: BaseException | None = None
        try:
            await self.handler.app(scope, self.receive, self.send)
        except asyncio.CancelledError:
            pass
        except BaseException as raised:
            error = raised
        self.ended = True
        self.handler.cycles.discard(self)
        grace, self._grace = self._grace, None
        if grace is not None:
            grace.cancel()
        self.appDone(error)

    async def _wait(self) -> None:
        """Until something changes (``wake``)."""
        waiter = self.waiter = self.loop.create_future()
        try:
            await waiter
        finally:
            self.waiter = None

    def wake(self) -> None:
        """Something changed: a waiting receive or send looks again."""
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def receive(self) -> Message:
        raise NotImplementedError

    async def send(self, message: Message) -> None:
        raise NotImplementedError

    def appDone(self, error: BaseException | None) -> None:
        raise NotImplementedError

    def cancelLater(self) -> None:
        """The client went: cancel the app if it has not ended within the grace."""
        task = self.task
        if task is not None and not self.ended and self._grace is None:
            self._grace = self.loop.call_later(
                self.handler.disconnectGrace, task.cancel
            )

    def describe(self) -> str:
        request = self.request
        return (
            f"{request.method.decode('latin-1')} "
            f"{request.target.decode('latin-1')[:200]}"
        )


def asFailure(error: BaseException) -> Failure:
    """A Failure of a task's exception, its traceback kept."""
    return Failure(error, type(error), error.__traceback__)
