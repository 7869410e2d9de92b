"""
``connserver._handlers.asgitask.startEagerly``: an app's task whose first
step runs inside the call, as that task (3.12's eager tasks; built from
``asyncio``'s task hooks on 3.11).  What an app may rely on in its first
step must hold: ``current_task()``, its context, cancellation, asyncio's
and anyio's timeouts.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import anyio
import pytest

from connserver._handlers.asgitask import startEagerly

T = TypeVar("T")

_var: contextvars.ContextVar[str] = contextvars.ContextVar("_var", default="unset")


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(main(), 10))


async def fromCallback(call: Callable[[], T]) -> T:
    """``call()`` from a plain loop callback (no task current), as a reactor's."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def callback() -> None:
        assert asyncio.current_task() is None
        done.set_result(call())

    loop.call_soon(callback)
    return await done


def test_theFirstStepRunsAtOnceAsTheTask() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        gate: asyncio.Future[None] = loop.create_future()
        seen: list[Any] = []

        async def app() -> None:
            seen.append(("first", asyncio.current_task()))
            await gate
            seen.append(("after", asyncio.current_task()))

        task = await fromCallback(lambda: startEagerly(loop, app()))
        assert seen == [("first", task)]
        gate.set_result(None)
        await task
        assert seen == [("first", task), ("after", task)]
        assert task.done() and not task.cancelled()

    run(main)


def test_aCoroutineThatEndsInItsFirstStep() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        ran: list[str] = []

        async def app() -> None:
            ran.append("ran")

        task = await fromCallback(lambda: startEagerly(loop, app()))
        assert ran == ["ran"]
        await task
        assert task.result() is None

    run(main)


def test_whatTheFirstStepRaisesIsTheTasksOutcome() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def app() -> None:
            raise ValueError("broken")

        task = await fromCallback(lambda: startEagerly(loop, app()))
        with pytest.raises(ValueError, match="broken"):
            await task

    run(main)


def test_theContextCarriesOverTheFirstStep() -> None:
    """
    A variable set before the first wait is still set after it (one
    context for the whole task), and the caller's context is untouched.
    """

    async def main() -> None:
        loop = asyncio.get_running_loop()
        gate: asyncio.Future[None] = loop.create_future()
        seen: list[str] = []

        async def app() -> None:
            _var.set("set in the first step")
            await gate
            seen.append(_var.get())

        def start() -> asyncio.Task[None]:
            task = startEagerly(loop, app())
            seen.append(_var.get())
            return task

        task = await fromCallback(start)
        gate.set_result(None)
        await task
        assert seen == ["unset", "set in the first step"]

    run(main)


def test_cancelledBeforeItsTaskRanTheCoroutineHearsIt() -> None:
    """
    Cancelled between its first step and the task's first turn (a drain's
    end in the same turn): the coroutine gets CancelledError where it
    waits, and its cleanup runs.
    """

    async def main() -> None:
        loop = asyncio.get_running_loop()
        never: asyncio.Future[None] = loop.create_future()
        seen: list[str] = []

        async def app() -> None:
            try:
                await never
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise
            finally:
                seen.append("cleanup")

        def startAndCancel() -> asyncio.Task[None]:
            task = startEagerly(loop, app())
            task.cancel()
            return task

        task = await fromCallback(startAndCancel)
        with pytest.raises(asyncio.CancelledError):
            await task
        assert seen == ["cancelled", "cleanup"]
        assert task.cancelled()

    run(main)


def test_startedFromInsideAnotherTask() -> None:
    """
    A handler called from another task (a pipelined request dispatched when
    an app's response completed): the new task is current for the first
    step, the caller's again afterwards.
    """

    async def main() -> None:
        loop = asyncio.get_running_loop()
        outer = asyncio.current_task()
        seen: list[Any] = []

        async def app() -> None:
            seen.append(asyncio.current_task())
            await asyncio.sleep(0)
            seen.append(asyncio.current_task())

        task = startEagerly(loop, app())
        assert asyncio.current_task() is outer
        await task
        assert seen == [task, task]

    run(main)


def test_asyncioTimeoutInTheFirstStep() -> None:
    """``asyncio.timeout`` needs a current task: it is there."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        seen: list[str] = []

        async def app() -> None:
            try:
                async with asyncio.timeout(0.01):
                    await loop.create_future()
            except TimeoutError:
                seen.append("timed out")

        task = await fromCallback(lambda: startEagerly(loop, app()))
        await task
        assert seen == ["timed out"]

    run(main)


def test_anyioCancelScopesInTheFirstStep() -> None:
    """Starlette's anyio: a cancel scope entered in the first step, left later."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        seen: list[str] = []

        async def app() -> None:
            with anyio.move_on_after(0.01) as scope:
                await anyio.sleep(10)
            seen.append(f"cancelled: {scope.cancelled_caught}")
            async with anyio.create_task_group() as group:
                group.start_soon(anyio.sleep, 0)
            seen.append("task group done")

        task = await fromCallback(lambda: startEagerly(loop, app()))
        await task
        assert seen == ["cancelled: True", "task group done"]

    run(main)


def test_cancelledBeforeItsTaskRanAChildItAwaitsIsCancelledToo() -> None:
    """As when the task waits on its child: the child is cancelled with it."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        children: list[asyncio.Future[None]] = []
        seen: list[str] = []

        async def app() -> None:
            children.append(loop.create_task(asyncio.sleep(10)))
            try:
                await children[0]
            except asyncio.CancelledError:
                seen.append("parent cancelled")
                raise

        def startAndCancel() -> asyncio.Task[None]:
            task = startEagerly(loop, app())
            task.cancel()
            return task

        task = await fromCallback(startAndCancel)
        with pytest.raises(asyncio.CancelledError):
            await task
        assert seen == ["parent cancelled"]
        assert children[0].cancelled()

    run(main)


def test_aCancelAfterTheCoroutineEndedChangesNothing() -> None:
    """It ended in its first step: a cancel then is a cancel of a done task."""

    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def app() -> None:
            pass

        def startAndCancel() -> asyncio.Task[None]:
            task = startEagerly(loop, app())
            task.cancel()
            return task

        task = await fromCallback(startAndCancel)
        await asyncio.sleep(0)
        assert task.done() and not task.cancelled()
        assert task.result() is None

    run(main)


def test_debuggersSeeTheAppsCoroutine() -> None:
    """What inspect, a task's repr and get_stack read of its coroutine."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        gate: asyncio.Future[None] = loop.create_future()

        async def someApp() -> None:
            await gate

        task = await fromCallback(lambda: startEagerly(loop, someApp()))
        await asyncio.sleep(0)
        assert inspect.getcoroutinestate(task.get_coro()) == inspect.CORO_SUSPENDED
        assert "someApp" in repr(task)
        assert [frame.f_code.co_name for frame in task.get_stack()] == ["someApp"]
        gate.set_result(None)
        await task

    run(main)
