"""
``startEagerly``: an ASGI app's task whose first step runs at once.

``loop.create_task`` runs nothing before the loop's next pass: an app that
answers without waiting (most do, for most requests) would leave its
response for that pass, and connserver would take it as an asynchronous
answer.  Started eagerly, the app's first step runs inside the handler
call, as the app's own task (``asyncio.current_task()`` is it, so anyio's
cancel scopes and ``asyncio.timeout`` work as usual), and a response sent
in that step is a synchronous answer.  In-process an ASGI hello costs 20
instead of 26 microseconds of CPU (``bench/bench_inprocess.py --asgi``);
with the end-of-turn writes (``connserver._twisted.afterturn``),
``bench/bench_asgi.py``'s hello went from 0.56x-0.61x uvicorn to 0.74x.
The ``http`` scope starts this way; a ``websocket`` scope's app needs its
connection switched before it sends, and starts on the loop's next pass.

Python 3.12 has this as ``Task(..., eager_start=True)``.  On 3.11 it is
built from what 3.12's eager tasks are made of: the task is created on a
stand-in coroutine (``_Started``) that carries on from where the first
step stopped, and the first step runs with that task entered as the
current one (``asyncio.tasks._enter_task``, the hook the event loop uses
around every step).
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Coroutine, Generator
from typing import Any

__all__ = ["startEagerly"]


if sys.version_info >= (3, 12):

    def startEagerly(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]
    ) -> asyncio.Task[None]:
        """Start ``coro`` as a task whose first step runs now."""
        return asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]

else:
    from asyncio.tasks import _enter_task, _leave_task

    _currentTask = asyncio.current_task

    class _Started(Coroutine[Any, Any, None]):
        """
        The coroutine of a task whose first step ran already: it hands the
        task what that step yielded (the future it waits on), then passes
        every send and throw to the app's coroutine.
        """

        __slots__ = ("coro", "ended", "error", "first", "started")

        def __init__(self, coro: Coroutine[Any, Any, None]) -> None:
            self.coro = coro
            self.first: Any = None
            #: The first step ended the coroutine (returned or raised).
            self.ended = False
            #: What it raised then: the task's outcome, as ever.
            self.error: BaseException | None = None
            self.started = False

        def send(self, value: Any) -> Any:
            if self.started:
                return self.coro.send(value)
            self.started = True
            if self.ended:
                if self.error is not None:
                    raise self.error
                raise StopIteration
            return self.first

        def throw(self, *args: Any) -> Any:
            if self.started:
                # What the coroutine awaited failed, or the task was cancelled.
                return self.coro.throw(*args)
            # The task was cancelled before its first step (the only throw a
            # task makes then).  3.12's eager task would have been waiting on
            # what the step yielded: cancel that (a child task is cancelled
            # with its parent), and the coroutine hears it when it resumes.
            # If it cannot be cancelled, the coroutine hears it at once.
            self.started = True
            error = args[1] if len(args) > 1 and args[1] is not None else args[0]
            if self.ended:
                if isinstance(error, asyncio.CancelledError):
                    # Ended already: as for a task that is done, the
                    # cancellation changes nothing.
                    raise StopIteration
                raise error
            first = self.first
            if (
                isinstance(error, asyncio.CancelledError)
                and isinstance(first, asyncio.Future)
                and first.cancel(*error.args)
            ):
                return first
            return self.coro.throw(*args)

        def __getattr__(self, name: str) -> Any:
            # What debuggers and inspect.getcoroutinestate read of a task's
            # coroutine (cr_frame, cr_running, __qualname__ ...): the app's.
            if name == "coro":
                raise AttributeError(name)
            return getattr(self.coro, name)

        def close(self) -> None:
            self.coro.close()

        def __await__(self) -> Generator[Any, None, None]:
            raise TypeError("a task's own coroutine, not to be awaited")

        def step(self) -> None:
            """The first step (in the task's context, the task current)."""
            try:
                self.first = self.coro.send(None)
            except StopIteration:
                self.ended = True
            except BaseException as error:
                self.ended = True
                self.error = error

    def startEagerly(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]
    ) -> asyncio.Task[None]:
        """Start ``coro`` as a task whose first step runs now."""
        started = _Started(coro)
        context = contextvars.copy_context()
        task = loop.create_task(started, context=context)
        # A handler can be called from inside another task (a pipelined
        # request, dispatched when an app's response completed): that task
        # steps aside for the first step, as 3.12 does it.
        outer = _currentTask(loop)
        if outer is not None:
            _leave_task(loop, outer)
        _enter_task(loop, task)
        try:
            context.run(started.step)
        finally:
            _leave_task(loop, task)
            if outer is not None:
                _enter_task(loop, outer)
        return task
