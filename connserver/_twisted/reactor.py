"""
``defaultReactor()``: the global reactor, for code given no reactor.

Importing ``twisted.internet.reactor`` installs the default reactor when
none is installed yet, so no module may import it at module level: twistd
(``--reactor``) and a worker process install theirs after importing
connserver.  Every module that falls back on the global reactor calls this
function, at the moment it needs one.
"""

from __future__ import annotations

from typing import Any

__all__ = ["defaultReactor"]


def defaultReactor() -> Any:
    """
    The installed global reactor (installing Twisted's default one if none
    is yet).  Typed ``Any``: the reactor provides every ``IReactor*``
    interface its platform has, which no single static type says.
    """
    from twisted.internet import reactor

    return reactor
