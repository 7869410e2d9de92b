"""
WSGI applications for the ``--wsgi`` tests (``tests/test_wsgi.py``) and for
``twistd connserver --wsgi tests.wsgiapps:hello``: a raw PEP 3333 app, a
Flask app and a Django project configured in memory (no database).

Each framework app records the ``close()`` of its response iterables in
``CLOSED`` (a path per call), so that a test can check that close() is
called in every case.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

#: The paths whose response iterable was closed, in order.
CLOSED: list[str] = []
#: Set each time an entry is added to CLOSED.
CLOSED_EVENT = threading.Event()
#: How many chunks the endless streams produced so far, by path.
PRODUCED: dict[str, int] = {}

HELLO = b"x" * 130

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


def recordClose(path: str) -> None:
    CLOSED.append(path)
    CLOSED_EVENT.set()


def hello(environ: Environ, startResponse: StartResponse) -> list[bytes]:
    """The benchmark's app: 130 bytes, with their length."""
    startResponse("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "130")])
    return [HELLO]


def createApp() -> Callable[[Environ, StartResponse], list[bytes]]:
    """An application factory: what ``--wsgi`` must not mistake for an app."""
    return hello


def _environJSON(environ: Environ) -> bytes:
    keys = [
        k
        for k, v in environ.items()
        if isinstance(v, str | bool | int | tuple) and k != "wsgi.errors"
    ]
    return json.dumps({k: environ[k] for k in sorted(keys)}).encode()


# -- Flask ----------------------------------------------------------------------


def makeFlask() -> Any:
    from flask import Flask, Response, request

    app = Flask("wsgiapps")
    # The exceptions reach the server (else Flask answers 500 itself).
    app.config["PROPAGATE_EXCEPTIONS"] = True

    def closing(response: Any) -> Any:
        path = request.path
        response.call_on_close(lambda: recordClose(path))
        return response

    app.after_request(closing)

    @app.post("/form")
    def form() -> Any:
        return {"name": request.form["name"], "tags": request.form.getlist("tag")}

    @app.get("/stream")
    def stream() -> Any:
        def chunks() -> Iterator[bytes]:
            for i in range(5):
                yield b"chunk %d\n" % i

        return Response(chunks(), mimetype="text/plain")

    @app.get("/endless")
    def endless() -> Any:
        def chunks() -> Iterator[bytes]:
            while True:
                PRODUCED["flask"] = PRODUCED.get("flask", 0) + 1
                yield b"y" * 65536

        return Response(chunks(), mimetype="application/octet-stream")

    @app.post("/upload")
    def upload() -> Any:
        digest = hashlib.sha256()
        size = 0
        stream = request.stream
        while True:
            data = stream.read(65536)
            if not data:
                break
            size += len(data)
            digest.update(data)
        return {"size": size, "sha256": digest.hexdigest()}

    @app.get("/boom")
    def boom() -> Any:
        raise RuntimeError("boom before start_response")

    @app.get("/late")
    def late() -> Any:
        def chunks() -> Iterator[bytes]:
            yield b"first part\n"
            raise RuntimeError("boom after the headers")

        return Response(chunks(), mimetype="text/plain")

    @app.route("/environ", methods=["GET", "POST"])
    def environ() -> Any:
        return Response(_environJSON(request.environ), mimetype="application/json")

    return app


# -- Django ---------------------------------------------------------------------


def _djangoViews() -> list[Any]:
    from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
    from django.urls import path

    def form(request: Any) -> Any:
        return JsonResponse(
            {"name": request.POST["name"], "tags": request.POST.getlist("tag")}
        )

    def stream(request: Any) -> Any:
        def chunks() -> Iterator[bytes]:
            for i in range(5):
                yield b"chunk %d\n" % i

        return StreamingHttpResponse(chunks(), content_type="text/plain")

    def endless(request: Any) -> Any:
        def chunks() -> Iterator[bytes]:
            while True:
                PRODUCED["django"] = PRODUCED.get("django", 0) + 1
                yield b"y" * 65536

        return StreamingHttpResponse(chunks())

    def upload(request: Any) -> Any:
        digest = hashlib.sha256()
        size = 0
        while True:
            data = request.read(65536)
            if not data:
                break
            size += len(data)
            digest.update(data)
        return JsonResponse({"size": size, "sha256": digest.hexdigest()})

    def boom(request: Any) -> Any:
        raise RuntimeError("boom before start_response")

    def late(request: Any) -> Any:
        def chunks() -> Iterator[bytes]:
            yield b"first part\n"
            raise RuntimeError("boom after the headers")

        return StreamingHttpResponse(chunks(), content_type="text/plain")

    def environ(request: Any) -> Any:
        body = json.loads(_environJSON(request.META))
        body["scheme"] = request.scheme
        body["is_secure"] = request.is_secure()
        return HttpResponse(json.dumps(body), content_type="application/json")

    return [
        path("form", form),
        path("stream", stream),
        path("endless", endless),
        path("upload", upload),
        path("boom", boom),
        path("late", late),
        path("environ", environ),
    ]


def __getattr__(name: str) -> Any:
    # Django's ROOT_URLCONF is this module: its urlpatterns, made on first use.
    if name == "urlpatterns":
        patterns = _djangoViews()
        globals()["urlpatterns"] = patterns
        return patterns
    raise AttributeError(name)


def makeDjango() -> Any:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            # The exceptions reach the server (else Django answers 500).
            DEBUG_PROPAGATE_EXCEPTIONS=True,
            SECRET_KEY="connserver-tests",
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF="tests.wsgiapps",
            MIDDLEWARE=[],
            INSTALLED_APPS=[],
            DATABASES={},
            USE_TZ=True,
            # --trusted-proxies decides the scheme: Django believes the server.
            SECURE_PROXY_SSL_HEADER=None,
        )
        django.setup()
        from django.core.signals import request_finished

        def finished(sender: Any, **kwargs: Any) -> None:
            recordClose("django")

        request_finished.connect(finished, weak=False)
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


# -- raw PEP 3333 apps for the edge cases ----------------------------------------


class Tracked:
    """A response iterable that records its close() (and how far it got)."""

    def __init__(self, name: str, chunks: Iterator[bytes]) -> None:
        self.name = name
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        return self.chunks

    def close(self) -> None:
        recordClose(self.name)


def raw(environ: Environ, startResponse: StartResponse) -> Any:
    """A dispatcher over the edge cases, by PATH_INFO."""
    path = environ["PATH_INFO"]
    if path == "/raise-first":

        def failing() -> Iterator[bytes]:
            startResponse("200 OK", [("Content-Type", "text/plain")])
            raise ValueError("raised in the first iteration")
            yield b""  # pragma: no cover

        return Tracked("raise-first", failing())
    if path == "/late-start":

        def lateStart() -> Iterator[bytes]:
            startResponse("200 OK", [("Content-Type", "text/plain")])
            yield b"started late"

        return Tracked("late-start", lateStart())
    if path == "/close":
        startResponse(
            "200 OK", [("Content-Type", "text/plain"), ("Connection", "close")]
        )
        return [b"bye"]
    if path == "/bad-status":
        startResponse("OK", [])
        return [b""]
    if path == "/bad-header":
        startResponse("200 OK", [("X-Bad", "a\r\nInjected: yes")])
        return [b""]
    if path == "/bytes-header":
        startResponse("200 OK", [(b"X-Bytes", b"1")])
        return [b""]
    if path == "/twice":
        startResponse("200 OK", [])
        startResponse("500 Oops", [])
        return [b""]
    if path == "/exc-info":
        startResponse("200 OK", [("X-Before", "1")])
        try:
            raise KeyError("handled")
        except KeyError:
            import sys

            startResponse("503 Service Unavailable", [("X-After", "1")], sys.exc_info())
        return [b"replaced"]
    if path == "/write":
        write = startResponse("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        write(b"then ")
        return Tracked("write", iter([b"iterated"]))
    if path == "/too-long":
        startResponse("200 OK", [("Content-Length", "5")])
        return Tracked("too-long", iter([b"abc", b"defgh", b"never"]))
    if path == "/too-short":
        startResponse("200 OK", [("Content-Length", "50")])
        return Tracked("too-short", iter([b"abc", b"def"]))
    if path == "/slow":
        time.sleep(float(environ["QUERY_STRING"] or "0.5"))
        startResponse("200 OK", [])
        return Tracked("slow", iter([b"slept"]))
    if path == "/upload":
        # A slow reader: one byte, a pause while the client keeps sending
        # (reading from the socket must pause), then the rest.
        stream = environ["wsgi.input"]
        digest = hashlib.sha256(stream.read(1))
        size = 1
        time.sleep(0.5)
        while data := stream.read(65536):
            size += len(data)
            digest.update(data)
        startResponse("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"size": size, "sha256": digest.hexdigest()}).encode()]
    if path == "/read-all":
        body = environ["wsgi.input"].read()
        startResponse("200 OK", [("Content-Type", "text/plain")])
        return [b"%d" % len(body)]
    if path == "/lines":
        lines = list(environ["wsgi.input"])
        startResponse("200 OK", [("Content-Type", "application/json")])
        return [json.dumps([line.decode() for line in lines]).encode()]
    if path == "/not-bytes":
        startResponse("200 OK", [])
        return ["text, not bytes"]
    if path == "/no-start":
        return [b"never started"]
    startResponse("200 OK", [("Content-Type", "application/json")])
    return [_environJSON(environ)]
