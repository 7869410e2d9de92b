"""
Process limits that bound how many connections a server can hold.

Each connection costs one file descriptor, and one more while a file body
is being sent.  When the process runs out (``EMFILE``), Twisted's
``tcp.Port`` gives up a descriptor it keeps in reserve, accepts and closes
every waiting client, and logs it; if it cannot re-reserve that descriptor,
each later ``EMFILE`` is logged and retried on every reactor turn, which can
spin while the flood lasts.  Keeping ``maxConnections`` below the
descriptor limit makes the server pause accepting (and shed idle
connections) before that point.  See ``docs/hardening.md``.

Pure module: nothing here imports ``twisted.internet``.
"""

from __future__ import annotations

import sys

__all__ = [
    "DESCRIPTOR_RESERVE",
    "connectionBudget",
    "maxConnectionsWarning",
    "openFileLimit",
    "raiseOpenFileLimit",
]

#: Descriptors kept out of the connection budget: listening sockets, the
#: reactor's waker, log files, Twisted's EMFILE reserve, the TLS context
#: and a margin for handlers.
DESCRIPTOR_RESERVE = 64


def openFileLimit() -> tuple[int, int] | None:
    """The soft and hard ``RLIMIT_NOFILE``, or None where it does not exist."""
    if sys.platform == "win32":
        return None
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft, hard


def raiseOpenFileLimit(wanted: int | None = None) -> tuple[int, int] | None:
    """
    Raise the soft descriptor limit towards ``wanted`` (the hard limit when
    None), never above the hard limit and never lower than it is; return the
    new (soft, hard).  An unprivileged process may do this at any time, and
    most systems ship a soft limit of 1024 under a hard one of 512Ki or more.
    """
    limits = openFileLimit()
    if limits is None:
        return None
    import resource

    soft, hard = limits
    target = hard if wanted is None else wanted
    if hard != resource.RLIM_INFINITY:
        target = min(target, hard)
    if soft != resource.RLIM_INFINITY and target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            # macOS refuses more than OPEN_MAX for an "unlimited" hard limit.
            return limits
        soft = target
    return soft, hard


def connectionBudget(
    descriptorsPerConnection: int = 1, reserve: int = DESCRIPTOR_RESERVE
) -> int | None:
    """
    How many connections fit in the soft descriptor limit, keeping
    ``reserve`` descriptors free; use ``descriptorsPerConnection=2`` for a
    server that sends files (the file is open while it is sent).  None when
    the platform has no such limit.
    """
    limits = openFileLimit()
    if limits is None:
        return None
    import resource

    soft = limits[0]
    if soft == resource.RLIM_INFINITY:
        return None
    return max(1, (soft - reserve) // max(1, descriptorsPerConnection))


def maxConnectionsWarning(
    maxConnections: int | None, descriptorsPerConnection: int = 1
) -> str | None:
    """
    A sentence for the log when ``maxConnections`` does not fit the
    descriptor limit (the server would meet ``EMFILE`` before pausing
    accept), else None.
    """
    budget = connectionBudget(descriptorsPerConnection)
    if budget is None:
        return None
    if maxConnections is None or maxConnections > budget:
        shown = "unlimited" if maxConnections is None else str(maxConnections)
        return (
            f"maxConnections is {shown} but the open-file limit allows about "
            f"{budget} connections: lower maxConnections or raise the limit "
            f"(ulimit -n, LimitNOFILE=) so that accepting pauses before EMFILE"
        )
    return None
