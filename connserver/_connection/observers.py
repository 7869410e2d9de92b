"""
The records a connection gives its factory's observers (the access log,
metrics): one ``RequestRecord`` per complete response, and one
``ConnectionRecord`` for a connection that ended without a final response
carrying its close reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from connserver._http.records import ConnectionRecord, RequestRecord

__all__ = ["notify", "recordClose", "recordRequest"]

_log = Logger(namespace="connserver")


def recordRequest(exchange: Any, closeReason: str | None) -> None:
    """The ``RequestRecord`` of a complete response, to the request observers."""
    owner = exchange.owner
    request = exchange.request
    head = exchange.head
    now = owner.clock.seconds()
    headers = head.headers if head is not None else None
    record = RequestRecord(
        timestamp=exchange.startedAt,
        peerHost=exchange.clientHost or owner.peerHost,
        # No head (a request that never parsed): empty, which the access
        # log writes as "-" (combined) or null (JSON).
        method=head.method if head is not None else b"",
        target=head.target if head is not None else b"",
        version=head.version if head is not None else (1, 1),
        status=exchange.status,
        bodyBytes=exchange.bodyBytes,
        referer=headers.get(b"referer") if headers is not None else None,
        userAgent=headers.get(b"user-agent") if headers is not None else None,
        connectionId=owner.connectionId,
        requestIndex=owner.served,
        connectionAge=now - owner.acceptedAt,
        duration=now - exchange.startedAt,
        closeReason=closeReason,
        secure=owner.isSecure,
        note=exchange.note,
        scheme=request.scheme if request is not None else owner.scheme,
    )
    notify(owner.factory.requestObservers, record, "a request observer failed")


def recordClose(conn: Any) -> None:
    """
    The connection ended without a final response carrying its reason:
    one ``ConnectionRecord`` for the close observers (the access log).
    """
    reason = conn.closeReason
    assert reason is not None
    now = conn.clock.seconds()
    takeover = conn.takeover
    switched = takeover is not None and takeover.target is not None
    record = ConnectionRecord(
        timestamp=now,
        peerHost=conn.peerHost,
        connectionId=conn.connectionId,
        requestsServed=conn.served,
        connectionAge=now - conn.acceptedAt,
        closeReason=reason,
        secure=conn.isSecure,
        bytesReceived=takeover.bytesReceived if switched else None,
        bytesSent=takeover.bytesSent if switched else None,
    )
    notify(conn.factory.closeObservers, record, "a close observer failed")


def notify(observers: list[Callable[[Any], None]], record: object, failed: str) -> None:
    """Give ``record`` to each observer; one that raises is logged, not fatal."""
    for observer in observers:
        try:
            observer(record)
        except Exception:
            _log.failure(failed)
