"""
``PrefixMount``: send requests under a path prefix to another handler.

The command line uses it to put the status page at ``--status-path`` in
front of the main handler (static files or an application).  It is
deliberately tiny: connserver is not a web framework, and an application that
needs routing brings its own (Klein, twisted.web resources).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping

from twisted.internet.defer import Deferred

from connserver._connection.message import Handler, Request, Response
from connserver._http.paths import mayHaveDotSegments, removeDotSegments, splitTarget

__all__ = ["HTTPSRedirect", "PrefixMount"]


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

    The path routed on is the target's, in absolute-form too (RFC 9112
    §3.2.2: ``GET http://x/api/y`` goes to the ``/api`` mount), with its
    dot-segments removed (RFC 3986 §5.2.4, encoded dots too).  A request
    whose path climbs above the root, or lands in another mount than its
    path as sent names, is refused with 400: ``/api/../private`` is neither
    the proxy's nor the static files' to answer.
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
        path = request.path
        if path[:1] != b"/":
            split = splitTarget(request.target)
            if split is None:
                # The asterisk form (OPTIONS *) names no path.
                return self.default(request)
            path = split[0]
        if mayHaveDotSegments(path):
            normal = removeDotSegments(path)
            handler = None if normal is None else self.route(normal)
            if handler is None or handler is not self.route(path):
                return Response(
                    400,
                    [(b"Content-Type", b"text/plain; charset=utf-8")],
                    b"400 Bad Request\n",
                    note="dot-segment",
                )
            return handler(request)
        return self.route(path)(request)


class HTTPSRedirect:
    """
    Sends plain-HTTP requests to HTTPS: ``308 Permanent Redirect`` to the
    same target on ``httpsPort`` (RFC 9110 §15.4.9: unlike 301, the method
    and body stay as they are).  Requests whose ``scheme`` is ``https``
    (over TLS, or forwarded so by a trusted proxy), and those under an
    ``exempt`` prefix (the status page), go to ``inner``.  The Location's
    host is the request's ``Host`` without its port, else the address the
    client connected to.  ``httpsPort`` may be a callable, read on each
    redirect (for a listener on port 0, whose number is known once it
    listens).
    """

    __slots__ = ("_exempt", "_httpsPort", "_inner")

    def __init__(
        self,
        inner: Handler,
        httpsPort: int | Callable[[], int],
        exempt: Iterable[str | bytes] = (),
    ) -> None:
        self._inner = inner
        self._httpsPort = httpsPort
        self._exempt = PrefixMount(self._redirect, {p: inner for p in exempt})

    def __call__(
        self, request: Request
    ) -> Response | Deferred[Response] | Awaitable[Response]:
        # The client's scheme: over TLS, or from a trusted proxy that
        # terminated TLS (--trusted-proxies), which must not loop.
        if request.scheme == "https":
            return self._inner(request)
        return self._exempt(request)

    def _redirect(self, request: Request) -> Response:
        host = request.headers.get(b"host")
        if host:
            # Host = uri-host [":" port] (RFC 9112 §3.2); an IPv6 literal is
            # in brackets.
            if host.startswith(b"["):
                name = host[: host.find(b"]") + 1]
            else:
                name = host.split(b":", 1)[0]
        else:
            address = getattr(request.host, "host", "localhost")
            name = (f"[{address}]" if ":" in address else address).encode("ascii")
        target = request.target if request.target.startswith(b"/") else b"/"
        port = self._httpsPort() if callable(self._httpsPort) else self._httpsPort
        suffix = b"" if port == 443 else b":%d" % port
        location = b"https://" + name + suffix + target
        return Response(
            308,
            [(b"Location", location), (b"Content-Type", b"text/plain")],
            b"Redirecting to " + location + b"\n",
        )
