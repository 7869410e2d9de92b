"""
``defaultReactor()``: the global reactor, for code given no reactor; and
``cancelCall``, the one way a pending ``DelayedCall`` is let go.

Importing ``twisted.internet.reactor`` installs the default reactor when
none is installed yet, so no module may import it at module level: twistd
(``--reactor``) and a worker process install theirs after importing
connserver.  Every module that falls back on the global reactor calls this
function, at the moment it needs one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall

__all__ = ["cancelCall", "defaultReactor", "installAsyncioReactor"]


def defaultReactor() -> Any:
    """
    The installed global reactor (installing Twisted's default one if none
    is yet).  Typed ``Any``: the reactor provides every ``IReactor*``
    interface its platform has, which no single static type says.
    """
    from twisted.internet import reactor

    return reactor


def cancelCall(call: IDelayedCall | None) -> None:
    """
    Cancel ``call`` if it is still pending: ``None``, a call that ran and a
    call already cancelled are nothing to do (``DelayedCall.cancel`` raises
    for the last two).  Callers clear their own reference first
    (``call, self._call = self._call, None``), so that no stale one stays.
    """
    if call is not None and call.active():
        call.cancel()


def installAsyncioReactor() -> None:
    """
    Install Twisted's asyncio reactor (``twisted.internet.asyncioreactor``,
    on a new asyncio loop) unless it is the installed one already; an ASGI
    application runs on its loop.  ``RuntimeError`` if another reactor is
    installed (something imported ``twisted.internet.reactor`` first, or
    ``twistd --reactor`` named another).
    """
    import sys

    installed = sys.modules.get("twisted.internet.reactor")
    if installed is None:
        from twisted.internet import asyncioreactor

        asyncioreactor.install()  # type: ignore[no-untyped-call]
        return
    kind = type(installed).__module__
    if kind != "twisted.internet.asyncioreactor":
        raise RuntimeError(f"another reactor is installed already ({kind})")
