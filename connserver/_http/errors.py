"""Errors that carry the HTTP status they should produce.

Pure module: nothing here imports ``twisted.internet``.
"""

from __future__ import annotations

__all__ = [
    "BodyInterrupted",
    "ClientGone",
    "InvalidTransition",
    "ProtocolError",
    "ResponseFramingError",
]


class ProtocolError(Exception):
    """
    A request broke the HTTP/1.x grammar or a configured limit.

    ``statusCode`` is the response the server should send if no response byte
    has been written yet (400, 408, 413, 414, 417, 431, 501 or 505);
    ``closeConnection`` says the connection cannot be reused afterwards, which
    is true for every error that leaves the request framing in doubt
    (RFC 9112 §6.3: after an invalid length the server MUST close).
    """

    def __init__(
        self, message: str, statusCode: int = 400, closeConnection: bool = True
    ) -> None:
        super().__init__(message)
        self.message = message
        self.statusCode = statusCode
        self.closeConnection = closeConnection

    def __repr__(self) -> str:
        return (
            f"ProtocolError({self.message!r}, statusCode={self.statusCode}, "
            f"closeConnection={self.closeConnection})"
        )

    def __eq__(self, other: object) -> bool:
        # Equality lets tests compare the outcome of whole-buffer and
        # byte-by-byte parses directly.
        if not isinstance(other, ProtocolError):
            return NotImplemented
        return (self.message, self.statusCode, self.closeConnection) == (
            other.message,
            other.statusCode,
            other.closeConnection,
        )

    def __hash__(self) -> int:
        return hash((self.message, self.statusCode, self.closeConnection))


class ResponseFramingError(Exception):
    """
    A response body did not match its framing: more or fewer bytes than the
    declared ``Content-Length``, or a body on a response that must not have
    one.  The connection must close (RFC 9112 §6.3 ¶5).
    """


class BodyInterrupted(Exception):
    """
    A response body's source ended early for a reason its producer knows and
    names (an upstream that closed mid-body, say).  connserver aborts the
    response, as for any failed body, and logs the message as one warning
    line instead of a traceback: the failure is the source's, not a bug.
    """


class ClientGone(Exception):
    """
    A handler's failure that says its client gave up, so that there is
    nobody to answer: the client closed its side before a response existed
    (an ASGI app that saw ``http.disconnect`` and returned without one).
    connserver closes the connection (``peer-closed``) with one info line,
    and neither logs a handler error nor writes a 500.
    """


class InvalidTransition(Exception):
    """A connection was asked to move between two states the table forbids."""
