"""
``Pipeline``: a connection's requests in order (RFC 9112 §9.3.2).

Requests may arrive before earlier ones are answered; responses must leave
in request order.  The pipeline holds the exchanges received and not yet
answered, front first, bounded by ``maxPipelinedRequests``, and the one
whose body is still arriving (``incoming``, which may be the front or the
last).  Only the front runs its handler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from connserver._connection.exchange import Exchange

__all__ = ["Pipeline"]

# The queue of a pipeline with no request in it: an empty tuple shared by
# all (typed as the list it stands for; nothing appends to it, a list is made
# for the first request), so that an idle connection holds no list.  (A list,
# not a deque: it holds at most maxPipelinedRequests, and an empty deque
# costs 600 bytes.)
_EMPTY: list[Any] = cast(Any, ())


class Pipeline:
    """The exchanges of one connection, front first, and the incoming one."""

    __slots__ = ("incoming", "limit", "queue")

    def __init__(self, limit: int) -> None:
        #: Exchanges waiting for or writing their response, front first.
        self.queue: list[Exchange] = _EMPTY
        #: The exchange whose body the parser is still reading, if any.
        self.incoming: Exchange | None = None
        #: maxPipelinedRequests: no further request is parsed past it.
        self.limit = limit

    def front(self) -> Exchange | None:
        """The exchange whose response goes next."""
        queue = self.queue
        return queue[0] if queue else None

    def isFull(self) -> bool:
        """No further request may be parsed until one is answered."""
        return len(self.queue) >= self.limit

    def append(self, exchange: Exchange) -> None:
        """A request was received (the shared empty queue becomes a list)."""
        if self.queue:
            self.queue.append(exchange)
        else:
            self.queue = [exchange]

    def popFront(self) -> None:
        """The front's response is complete."""
        queue = self.queue
        if len(queue) == 1:
            self.queue = _EMPTY
        else:
            queue.pop(0)

    def takeAll(self) -> list[Exchange]:
        """Every exchange, the incoming one included, and empty the pipeline."""
        exchanges = list(self.queue)
        incoming = self.incoming
        if incoming is not None and incoming not in exchanges:
            exchanges.append(incoming)
        self.queue = _EMPTY
        self.incoming = None
        return exchanges

    def abandonAll(self, error: BaseException, bodiesFirst: bool) -> None:
        """
        Nobody will read the responses: every exchange is abandoned (all
        of them first, so that whatever runs below, a handler told that its
        body will not come, finds them so), then each lets go of its
        handler and body producer and its body reader learns ``error``
        (before letting go when ``bodiesFirst``: the connection is lost,
        and the reader's failure is the truer one).
        """
        exchanges = self.takeAll()
        for exchange in exchanges:
            exchange.markAbandoned()
        for exchange in exchanges:
            exchange.release(error, bodiesFirst)
