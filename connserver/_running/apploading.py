"""
``--handler MODULE:ATTRIBUTE``: the application, imported and adapted.

The command line loads it once to check it (a bad name is a one-line usage
error); each ``--workers`` worker loads it again in its own process, so
that a worker started by a SIGHUP runs the code as it is now.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connserver._connection.message import Handler

__all__ = ["HandlerLoadError", "loadASGIApp", "loadHandler", "loadWSGIHandler"]


class HandlerLoadError(ValueError):
    """The handler cannot be loaded; the message is the one-line reason."""


def loadHandler(spec: str) -> Handler:
    """
    The handler named by ``module:attribute`` (``attribute`` may be dotted),
    adapted by ``connserver._handlers.web.asHandler`` (IResource, Klein app,
    handler).  The current directory is searched last, as ``python -m``
    would.
    """
    return _adapt(spec, _importObject("--handler", spec, "myapp:app"))


def _adapt(spec: str, obj: object) -> Handler:
    from connserver._handlers.web import asHandler

    try:
        return asHandler(obj)
    except TypeError as error:
        raise HandlerLoadError(
            f"--handler {spec!r}: not a handler, IResource or Klein app ({error})"
        ) from None


def loadWSGIHandler(spec: str, threads: int, multiprocess: bool) -> Handler:
    """
    ``--wsgi MODULE:ATTRIBUTE``: the WSGI application it names, in a
    ``WSGIHandler`` of at most ``threads`` threads (``wsgi.multiprocess``
    under ``--workers``).  The current directory is searched last, so that
    Django's ``myproject.wsgi:application`` loads from the project's
    directory.
    """
    from connserver._handlers.wsgi import WSGIHandler

    obj = _importObject("--wsgi", spec, "myproject.wsgi:application")
    if not callable(obj):
        raise HandlerLoadError(
            f"--wsgi {spec!r}: {obj!r} is not a WSGI application (not callable)"
        )
    _checkArguments("--wsgi", spec, obj, 2)
    return WSGIHandler(obj, threads=threads, multiprocess=multiprocess)


def loadASGIApp(spec: str) -> Any:
    """
    The ASGI 3 application named by ``--asgi module:attribute`` (a Django
    project's ``myproject.asgi:application``, a Starlette app), imported as
    :func:`loadHandler` imports a handler; ``HandlerLoadError`` otherwise.
    """
    obj = _importObject("--asgi", spec, "myapp:app")
    if not callable(obj) or isinstance(obj, type):
        raise HandlerLoadError(
            f"--asgi {spec!r}: not an ASGI 3 application (an async callable "
            "taking scope, receive, send)"
        )
    _checkArguments("--asgi", spec, obj, 3)
    return obj


# What an application that takes the wrong number of arguments most likely
# is, by that number: a factory, an ASGI 2 app, a WSGI app, an ASGI 3 app.
_LIKELY = {
    0: "an application factory? Call it in your module (app = create_app())",
    1: "an ASGI 2 application? connserver serves ASGI 3 (scope, receive, send)",
    2: "a WSGI application? Serve it with --wsgi",
    3: "an ASGI application? Serve it with --asgi",
}


def _checkArguments(flag: str, spec: str, obj: Any, count: int) -> None:
    """
    A one-line error now, rather than a 500 on every request, when ``obj``
    cannot be called with ``count`` positional arguments (a WSGI app takes
    environ and start_response; an ASGI 3 app scope, receive and send).
    Callables whose signature Python cannot tell are let through.
    """
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return
    if _binds(signature, count):
        return
    takes = next((n for n in _LIKELY if n != count and _binds(signature, n)), None)
    likely = f": {_LIKELY[takes]}" if takes is not None else ""
    kind = "a WSGI" if count == 2 else "an ASGI 3"
    raise HandlerLoadError(
        f"{flag} {spec!r}: not {kind} application, it cannot be called with "
        f"{count} arguments{likely}"
    )


def _binds(signature: inspect.Signature, count: int) -> bool:
    try:
        signature.bind(*range(count))
    except TypeError:
        return False
    return True


def _importObject(flag: str, spec: str, example: str) -> Any:
    """
    The object ``MODULE:ATTRIBUTE`` names (``--handler``, ``--wsgi``,
    ``--asgi``; or ``package.module.attribute``, as ``twistd web --wsgi``
    takes it), with the current directory searched last, so that a
    project's module loads from its own directory; ``HandlerLoadError``
    saying what is wrong otherwise.
    """
    moduleName, sep, attribute = spec.partition(":")
    if not sep:
        # twistd web --wsgi's spelling: the last dotted name is the attribute.
        moduleName, _, attribute = spec.rpartition(".")
    if not moduleName or not attribute or "" in moduleName.split("."):
        raise HandlerLoadError(
            f"{flag} {spec!r}: expected MODULE:ATTRIBUTE, e.g. {example}"
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    try:
        obj: Any = importlib.import_module(moduleName)
    except Exception as error:
        raise HandlerLoadError(
            f"{flag} {spec!r}: cannot import {moduleName}: "
            f"{type(error).__name__}: {error}"
        ) from None
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise HandlerLoadError(
                f"{flag} {spec!r}: {moduleName} has no attribute {attribute}"
            ) from None
    return obj
