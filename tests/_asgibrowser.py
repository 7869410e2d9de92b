"""
The Starlette app ``tests/test_asgi_browser.py`` serves with ``twistd
connserver --asgi`` (copied into the subprocess's path as
``cs_asgibrowser``): the page of ``tests/test_websocket_browser.py``, its
``/gate`` and ``/done``, and a WebSocket echo of text and binary messages.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

#: The page, which the test writes next to this module (the test module holds it).
PAGE = Path(__file__).with_name("cs_asgibrowser.html").read_bytes()
#: How long ``/gate`` waits for ``/done`` before it answers anyway.
GATE_TIMEOUT = 30

done = asyncio.Event()


async def page(request: Request) -> Response:
    return Response(PAGE, media_type="text/html; charset=utf-8")


async def gate(request: Request) -> Response:
    # Parser-blocking: Chromium's load event, and its DOM dump, wait for it.
    try:
        await asyncio.wait_for(done.wait(), GATE_TIMEOUT)
    except TimeoutError:
        pass
    return Response(b"", media_type="text/javascript")


async def finished(request: Request) -> Response:
    done.set()
    return Response(status_code=204)


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        return


app = Starlette(
    routes=[
        Route("/", page),
        Route("/gate", gate),
        Route("/done", finished),
        WebSocketRoute("/ws", echo),
    ]
)
