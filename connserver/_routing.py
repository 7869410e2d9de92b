"""
``PrefixMount``: send requests under a path prefix to another handler.

The command line uses it to put the status page at ``--status-path`` in
front of the main handler (static files or an application).  It is
deliberately tiny: connserver is not a web framework, and an application that
needs routing brings its own (Klein, twisted.web resources).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping

from twisted.internet.defer import Deferred

from ._message import Handler, Request, Response

__all__ = ["PrefixMount"]


def _normalizePrefix(prefix: str | bytes) -> bytes:
    raw = prefix.encode("ascii") if isinstance(prefix, str) else prefix
    if not raw.startswith(b"/"):
        raise ValueError(f"a mount prefix must start with '/', not {raw!r}")
    if b"?" in raw or b"#" in raw:
        raise ValueError(f"a mount prefix is a path only, not {raw!r}")
    # "/status/" and "/status" mount the same subtree.
    return raw.rstrip(b"/") or b"/"


class PrefixMount:
    """
    A handler that dispatches on the request path.

    A request whose path is a mounted prefix, or lies below it
    (``/status``, ``/status/``, ``/status/x`` for the prefix ``/status``), goes
    to that prefix's handler; the longest matching prefix wins; everything
    else goes to ``default``.  The handlers see the request unchanged (the
    prefix is not stripped), so that links they generate stay absolute.
    """

    __slots__ = ("_mounts", "default")

    def __init__(
        self, default: Handler, mounts: Mapping[str | bytes, Handler] | None = None
    ) -> None:
        self.default = default
        self._mounts: list[tuple[bytes, Handler]] = []
        for prefix, handler in (mounts or {}).items():
            self.mount(prefix, handler)

    def mount(self, prefix: str | bytes, handler: Handler) -> None:
        """Send requests at or under ``prefix`` to ``handler``."""
        normalized = _normalizePrefix(prefix)
        self._mounts = [(p, h) for p, h in self._mounts if p != normalized]
        self._mounts.append((normalized, handler))
        # Longest first, so that /status/extra wins over /status.
        self._mounts.sort(key=lambda item: len(item[0]), reverse=True)

    def route(self, path: bytes) -> Handler:
        """The handler that answers a request for ``path``."""
        for prefix, handler in self._mounts:
            if prefix == b"/":
                return handler
            if path == prefix or path.startswith(prefix + b"/"):
                return handler
        return self.default

    def __call__(
        self, request: Request
    ) -> Response | Deferred[Response] | Awaitable[Response]:
        return self.route(request.path)(request)
