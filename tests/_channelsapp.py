"""
A minimal Django Channels project that ``tests/test_asgi_channels.py``
serves with ``twistd connserver --asgi`` (copied into the subprocess's
path as ``cs_channelsapp``): settings with no database and Channels'
in-memory channel layer, a ``ProtocolTypeRouter`` with a Django view for
``http`` and, for ``websocket``, an ``AsyncWebsocketConsumer`` that
echoes and broadcasts through a group, and a sync ``WebsocketConsumer``.
"""

from __future__ import annotations

from typing import Any

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="connserver-tests",
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["channels"],
    # No database server: none at all (Channels' consumers close old
    # connections, of which there are none).
    DATABASES={},
    ASGI_APPLICATION=f"{__name__}.application",
    CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
)
django.setup()

from asgiref.sync import async_to_sync  # noqa: E402
from channels.generic.websocket import (  # noqa: E402
    AsyncWebsocketConsumer,
    WebsocketConsumer,
)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse(
        f"hello from django {request.method} {request.path} "
        f"{request.GET.get('name', '')}",
        content_type="text/plain",
    )


urlpatterns = [path("hello", hello)]


class EchoConsumer(AsyncWebsocketConsumer):
    """Echoes text and bytes; ``all:TEXT`` goes to the group through the layer."""

    groups = ["room"]

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None
    ) -> None:
        if text_data is not None and text_data.startswith("all:"):
            await self.channel_layer.group_send(
                "room", {"type": "room.message", "text": text_data}
            )
        elif text_data is not None:
            await self.send(text_data=text_data)
        else:
            await self.send(bytes_data=bytes_data)

    async def room_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])


class SyncEchoConsumer(WebsocketConsumer):
    def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None
    ) -> None:
        if text_data == "layer":
            # A sync consumer reaches the layer through async_to_sync.
            async_to_sync(self.channel_layer.send)(
                self.channel_name, {"type": "echo.back", "text": "via layer"}
            )
        else:
            self.send(text_data=text_data, bytes_data=bytes_data)

    def echo_back(self, event: dict[str, Any]) -> None:
        self.send(text_data=event["text"])


application = ProtocolTypeRouter(
    {
        "http": get_asgi_application(),
        "websocket": URLRouter(
            [
                path("ws/echo", EchoConsumer.as_asgi()),
                path("ws/sync", SyncEchoConsumer.as_asgi()),
            ]
        ),
    }
)
