"""
``afterTurn``: run a call once the reactor has handled every event of its
current turn, together with every other call queued in that turn.

Sends wait for it.  A send to a peer asleep in ``epoll_wait`` wakes it (on
another core, an interrupt; on a virtual machine, an exit), and a sender
that handles one request per event wakes its peer once per request: the
peer (wrk, a proxy, an upstream) answers faster than the sender handles the
next event, so it is asleep again by then.  Sent together at the end of the
turn, the answers wake each peer about once per turn.  ``perf`` put that
wake-up at 14% of connserver's CPU under ``bench/bench_asgi.py``'s hello
load, and 12% under ``bench/bench_proxy.py``'s.

One ``callLater(0)`` per reactor and turn serves every call queued in it.
Waiting costs a pass of the reactor, though, which is only worth it when
the turn serves several peers: ``atOnce`` tells the sender (``Flow``) to
send at once for a while after a turn that had a single call queued (one
client, one request at a time), and to try waiting again after
``PROBE_EVERY`` sends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from weakref import WeakKeyDictionary, ref

from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

__all__ = ["PROBE_EVERY", "AfterTurn", "afterTurnOf"]

#: After a turn with a single call queued, this many ``atOnce`` answers are
#: True before one is False again (a probe: is the load still light?).
PROBE_EVERY = 32

_log = Logger(namespace="connserver")


class AfterTurn:
    """The calls queued for the end of ``clock``'s current turn."""

    __slots__ = ("__weakref__", "_asyncio", "_atOnce", "_clock", "_queue", "_running")

    def __init__(self, clock: IReactorTime) -> None:
        self._queue: list[tuple[Callable[[Any], object], Any]] = []
        #: How many more atOnce() answers are True.
        self._atOnce = 0
        #: The queue is being run: what is added meanwhile runs in this run.
        self._running = False
        # Weakly: the table of AfterTurns (afterTurnOf) holds its clocks weakly.
        self._clock = ref(clock)
        # Twisted's asyncio reactor: the running loop's own call_soon, which
        # runs first in the loop's next pass.  Its callLater(0) would cost a
        # DelayedCall, a timer handle and a second pass of Twisted's timers.
        self._asyncio = isinstance(clock, AsyncioSelectorReactor)

    def add(self, call: Callable[[Any], object], arg: Any) -> None:
        """``call(arg)`` at the end of this turn, after those queued before."""
        queue = self._queue
        if not queue and not self._running:
            self._schedule()
        queue.append((call, arg))

    def _schedule(self) -> None:
        if self._asyncio:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                pass  # The reactor is not running yet: its callLater.
            else:
                loop.call_soon(self._run)
                return
        clock = self._clock()
        if clock is not None:
            clock.callLater(0, self._run)

    def atOnce(self) -> bool:
        """
        Whether a send that may wait for the turn's end should rather go
        now: the load was light (a turn had one call queued) not long ago.
        """
        if self._atOnce:
            self._atOnce -= 1
            return True
        return False

    def _run(self) -> None:
        if len(self._queue) == 1:
            self._atOnce = PROBE_EVERY
        self._running = True
        try:
            # A call may queue more (a relayed answer that a connection
            # gathers for the turn's end): they run in this same run.
            while self._queue:
                queue, self._queue = self._queue, []
                for index, (call, arg) in enumerate(queue):
                    try:
                        call(arg)
                    except Exception:
                        # One connection's failure must not hold the others back.
                        _log.failure("a call queued for the end of the turn failed")
                    except BaseException:
                        # (KeyboardInterrupt, SystemExit): the calls not run
                        # yet run next turn, or their answers would wait
                        # for some other event.
                        self._queue[:0] = queue[index + 1 :]
                        raise
        finally:
            self._running = False
            if self._queue:
                self._schedule()


_shared: WeakKeyDictionary[Any, AfterTurn] = WeakKeyDictionary()


def afterTurnOf(clock: IReactorTime) -> AfterTurn:
    """The one ``AfterTurn`` of ``clock`` (a reactor, or a test's ``Clock``)."""
    turn = _shared.get(clock)
    if turn is None:
        turn = _shared[clock] = AfterTurn(clock)
    return turn
