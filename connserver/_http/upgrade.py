"""
Which protocols a request may switch to (RFC 9110 §7.8).

Pure module: nothing here imports ``twisted.internet``.
"""

from __future__ import annotations

from connserver._http.headers import splitList

__all__ = ["NEVER_SWITCHED", "offeredUpgrades"]

#: Protocols connserver never switches to, whatever a handler says: HTTP/2
#: over cleartext (``h2c``, RFC 9113 §3.1 retired the upgrade) gets an
#: ordinary HTTP/1.1 response.
NEVER_SWITCHED = frozenset({b"h2c"})


def offeredUpgrades(
    version: tuple[int, int],
    connectionOptions: frozenset[bytes],
    upgradeValues: list[bytes],
    hasBody: bool,
) -> tuple[bytes, ...]:
    """
    The protocols (lowercased, in the client's order of preference) that a
    request may be switched to, or ``()``.

    RFC 9110 §7.8: "A server MUST ignore an Upgrade header field that is
    received in an HTTP/1.0 request", and "A sender of Upgrade MUST also
    send an 'upgrade' connection option" (a bare Upgrade is a hop-by-hop
    field some intermediary forgot to remove: ignored too).  A request with
    a body is answered without switching: connserver does not read a body
    and then hand the connection on (the RFC allows either, and WebSocket
    handshakes carry none).
    """
    if version < (1, 1) or b"upgrade" not in connectionOptions or hasBody:
        return ()
    offered = []
    for token in splitList(upgradeValues):
        name = token.strip().lower()
        if name and name not in NEVER_SWITCHED:
            offered.append(name)
    return tuple(offered)
