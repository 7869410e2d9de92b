"""
The ASGI apps ``tests/test_asgi_twistd.py`` serves with ``twistd connserver
--asgi`` (copied into the subprocess's path as ``cs_asgiapp``): a Starlette
app, and raw ASGI apps that break the protocol.  Marker files in the
current directory tell the test what the app saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


def mark(name: str, text: str = "") -> None:
    Path(name).write_text(text)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    mark("startup")
    yield {"greeting": "hello from lifespan"}
    mark("shutdown")


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse(
        f"{request.state.greeting} {request.url.path} {request.scope['root_path']}"
    )


async def stream(request: Request) -> StreamingResponse:
    async def parts() -> AsyncIterator[bytes]:
        for i in range(5):
            yield f"part {i}\n".encode()
            await asyncio.sleep(0.01)

    return StreamingResponse(parts(), media_type="text/plain")


async def long(request: Request) -> StreamingResponse:
    async def parts() -> AsyncIterator[bytes]:
        for i in range(2000):
            if await request.is_disconnected():
                mark("saw-disconnect", str(i))
                return
            yield b"x" * 1000 + b"\n"
            await asyncio.sleep(0.01)

    return StreamingResponse(parts(), media_type="text/plain")


async def echo(request: Request) -> PlainTextResponse:
    parts = 0
    size = 0
    async for chunk in request.stream():
        parts += 1 if chunk else 0
        size += len(chunk)
    return PlainTextResponse(f"{size} bytes in {parts} parts")


async def fields(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(len(request.headers)))


async def wsEcho(websocket: WebSocket) -> None:
    await websocket.accept(
        subprotocol="echo" if websocket.scope["subprotocols"] else None
    )
    try:
        while True:
            message = await websocket.receive_text()
            await websocket.send_text(message)
    except WebSocketDisconnect as disconnect:
        mark("ws-disconnect", str(disconnect.code))


async def wsRefuse(websocket: WebSocket) -> None:
    await websocket.close()


async def wsWelcome(websocket: WebSocket) -> None:
    """Sends and closes without waiting on the client: FastAPI's usual opening."""
    await websocket.accept()
    await websocket.send_text("welcome")
    await websocket.close(code=1000)


app = Starlette(
    routes=[
        Route("/hello", hello),
        Route("/stream", stream),
        Route("/long", long),
        Route("/echo", echo, methods=["POST"]),
        Route("/fields", fields),
        WebSocketRoute("/ws", wsEcho),
        WebSocketRoute("/refuse", wsRefuse),
        WebSocketRoute("/welcome", wsWelcome),
    ],
    lifespan=lifespan,
)


async def bad(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Raw ASGI: each path breaks the protocol its own way."""
    if scope["type"] == "lifespan":
        raise RuntimeError("no lifespan here")
    path = scope["path"]
    start = {"type": "http.response.start", "status": 200, "headers": []}
    if path == "/no-start":
        return
    if path == "/raise":
        raise ValueError("the app failed")
    if path == "/two-starts":
        await send(start)
        await send(start)
    if path == "/after-end":
        await send(start)
        await send({"type": "http.response.body", "body": b"done"})
        await send({"type": "http.response.body", "body": b"more"})
    if path == "/raise-streaming":
        await send(start)
        await send(
            {"type": "http.response.body", "body": b"partial", "more_body": True}
        )
        raise ValueError("failed mid-body")
    if path == "/close":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"connection", b"close"), (b"content-length", b"2")],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})


async def failingStartup(scope: dict[str, Any], receive: Any, send: Any) -> None:
    message = await receive()
    assert message["type"] == "lifespan.startup"
    await send({"type": "lifespan.startup.failed", "message": "no database"})


def createApp() -> Starlette:
    """An application factory: what ``--asgi`` must not mistake for an app."""
    return app


def wsgiHello(environ: dict[str, Any], startResponse: Any) -> list[bytes]:
    """A WSGI app, which ``--asgi`` must refuse at once."""
    startResponse("200 OK", [])
    return [b"hello"]


@contextlib.asynccontextmanager
async def threadedLifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    # asyncio's default thread pool, first used by the startup: it must be
    # the serving process's (twistd without -n forks into the background).
    yield {"startupPid": await asyncio.to_thread(os.getpid)}


async def pids(request: Request) -> PlainTextResponse:
    inThread = await asyncio.to_thread(os.getpid)
    return PlainTextResponse(f"{request.state.startupPid} {inThread} {os.getpid()}")


threaded = Starlette(routes=[Route("/pids", pids)], lifespan=threadedLifespan)


@contextlib.asynccontextmanager
async def unreachable(app: Starlette) -> AsyncIterator[None]:
    raise RuntimeError("database unreachable")
    yield  # pragma: no cover


brokenStartup = Starlette(lifespan=unreachable)


async def hangups(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """
    Waits for the client to go; ``/answer`` still answers then, and
    ``/streaming`` (which began its response before it first waited)
    finishes its body.
    """
    if scope["type"] != "http":
        return  # No lifespan.
    if scope["path"] == "/streaming":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first ", "more_body": True})
    await receive()  # The (empty) request body.
    gone = await receive()
    mark("hungup" + scope["path"].replace("/", "-"), gone["type"])
    if scope["path"] == "/answer":
        body = b"saw " + gone["type"].encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})
    elif scope["path"] == "/streaming":
        await send(
            {"type": "http.response.body", "body": b"saw " + gone["type"].encode()}
        )
