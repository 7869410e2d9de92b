"""
Real HAProxy and nginx in front of connserver, for the interop tests and
``bench/bench_idle_race.py``: their configurations (written to a temporary
directory, listening on a free 127.0.0.1 port), starting them in the
foreground, waiting for their port, and stopping them.  Nothing here
touches the reactor, so a test can run connserver in-process meanwhile.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ._helpers import eventually

__all__ = [
    "HAPROXY",
    "HAPROXY_WEBSOCKET",
    "NGINX",
    "NGINX_WEBSOCKET",
    "Proxy",
    "freePort",
    "haproxyConfig",
    "haproxyWebSocketConfig",
    "nginxConfig",
    "nginxWebSocketConfig",
    "proxies",
    "startProxy",
]

HAPROXY = shutil.which("haproxy") or (
    "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
)
NGINX = shutil.which("nginx") or (
    "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
)

#: How long a proxy may take to start listening.
START_TIMEOUT = 10.0


def freePort() -> int:
    """A port free on 127.0.0.1 now (the kernel's choice for port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def haproxyConfig(
    ports: list[int],
    backendPort: int,
    *,
    serverIdle: str = "5s",
    clientIdle: str = "10s",
    proxyProtocol: bool = True,
    healthCheck: str | None = None,
) -> str:
    """
    HAProxy in HTTP mode reusing its connections to connserver (``http-reuse
    always``), telling it the client's address with the PROXY protocol v2,
    or with ``X-Forwarded-For`` (``option forwardfor``, which passes on a
    client's own ``X-Forwarded-Proto``, hence the ``set-header`` that
    overwrites it, as docs/deployment.md says) when not ``proxyProtocol``.  Idle connections to connserver are purged every
    ``serverIdle`` (``pool-purge-delay``, half of them each time).  One
    frontend and backend (so one pool) per port in ``ports``.

    ``healthCheck`` adds docs/deployment.md's health check, every 100 ms:
    ``"http"`` (``option httpchk GET /status``, the status page) or
    ``"tcp"`` (a bare ``check``: connect, then close with a reset).
    """
    if proxyProtocol:
        client = "send-proxy-v2"
        forward = ""
    else:
        client = ""
        forward = (
            "    option forwardfor\n"
            "    http-request set-header X-Forwarded-Proto %[ssl_fc,iif(https,http)]\n"
        )
    check = ""
    checkOptions = ""
    if healthCheck == "http":
        checkOptions = (
            "    option httpchk GET /status\n    http-check expect status 200\n"
        )
    if healthCheck is not None:
        check = " check inter 100ms"
    sections = "".join(
        f"""
frontend www{index}
    bind 127.0.0.1:{port}
    default_backend connserver{index}

backend connserver{index}
    http-reuse always
{forward}{checkOptions}    server cs1 127.0.0.1:{backendPort} {client} pool-purge-delay {serverIdle}{check}
"""
        for index, port in enumerate(ports)
    )
    return f"""\
global
    nbthread 1
    maxconn 1024

defaults
    mode http
    option http-keep-alive
    timeout connect 2s
    timeout client {clientIdle}
    timeout http-keep-alive {clientIdle}
    timeout server 10s
{sections}"""


def nginxConfig(
    directory: Path,
    ports: list[int],
    backendPort: int,
    *,
    upstreamIdle: str = "60s",
    nextUpstream: bool = True,
    keepalive: int = 8,
    ipv6: bool = False,
) -> str:
    """
    nginx with an upstream ``keepalive`` pool towards connserver (HTTP/1.1,
    ``Connection: ""``), ``keepalive_timeout`` in the upstream block being
    its idle timeout towards connserver.  ``/xff/`` forwards
    ``X-Forwarded-For`` and ``X-Forwarded-Proto`` (overwriting the client's
    scheme), everything else ``Forwarded`` (appending to the client's, as a
    proxy in a chain does, an IPv6 client in brackets); each passes on the
    other family as the client sent it, as docs/deployment.md's
    configurations do.  ``ipv6`` also listens on ``[::1]`` (same port).
    One server block and one upstream pool per port in ``ports``, so that
    the idle-race loops each have their own pooled connection.
    ``nextUpstream=False`` stops nginx from retrying a request that failed on
    a reused connection, so that the idle-close race shows as a 502.
    """
    retry = "" if nextUpstream else "proxy_next_upstream off;"
    blocks = []
    for index, port in enumerate(ports):
        blocks.append(
            f"""\
    upstream connserver{index} {{
        server 127.0.0.1:{backendPort};
        keepalive {keepalive};
        keepalive_timeout {upstreamIdle};
    }}
    server {{
        listen 127.0.0.1:{port};
        {f"listen [::1]:{port};" if ipv6 else ""}
        proxy_http_version 1.1;
        {retry}
        # A location's proxy_set_header replaces every one it inherits:
        # Connection "" must be repeated where other fields are set.
        location /xff/ {{
            proxy_pass http://connserver{index};
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
        location / {{
            proxy_pass http://connserver{index};
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header Forwarded "$http_forwarded, for=$forwarded_for;proto=$scheme";
        }}
    }}
"""
        )
    servers = "".join(blocks)
    return f"""\
daemon off;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {directory}/client_body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    # RFC 7239 §6: an IPv6 node is a quoted "[...]".
    map $remote_addr $forwarded_for {{
        ~:       "\\"[$remote_addr]\\"";
        default  $remote_addr;
    }}
{servers}}}
"""


#: docs/deployment.md's HAProxy configuration for WebSockets, verbatim
#: (tests/test_websocket_interop.py checks it is there): HTTP mode handles
#: the upgrade itself; ``timeout tunnel`` is the idle timeout of an upgraded
#: connection.  The tests replace the addresses and drop ``ssl crt``.
HAPROXY_WEBSOCKET = """\
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client  60s
    timeout server  60s
    timeout http-keep-alive 10s
    # After the 101: how long a WebSocket may go without a frame either way.
    timeout tunnel  1h

frontend www
    bind :443 ssl crt /etc/haproxy/site.pem
    default_backend connserver

backend connserver
    http-reuse safe
    server cs1 127.0.0.1:8080 send-proxy-v2 pool-purge-delay 5s
"""

#: docs/deployment.md's nginx configuration for WebSockets, verbatim (at
#: ``http`` level; the tests replace the addresses and drop ``ssl``).
NGINX_WEBSOCKET = """\
# Upgrade and Connection are hop-by-hop: nginx passes neither on unless told.
# A WebSocket handshake gets Connection: upgrade; any other request
# Connection "", so that the keepalive pool still works for it.
map $http_upgrade $connection_upgrade {
    default  upgrade;
    ""       "";
}
upstream connserver {
    server 127.0.0.1:8080;
    keepalive 32;
    keepalive_timeout 60s;
}
server {
    listen 443 ssl;
    location / {
        proxy_pass http://connserver;
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $connection_upgrade;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        # nginx closes a WebSocket that goes this long without a frame
        # from connserver (60 s by default): raise it, or ping more often.
        proxy_read_timeout 1h;
    }
}
"""


def haproxyWebSocketConfig(
    port: int, backendPort: int, *, proxyProtocol: bool = True
) -> str:
    """
    ``HAPROXY_WEBSOCKET`` on 127.0.0.1 ``port`` without TLS, in front of
    connserver on ``backendPort`` (without ``send-proxy-v2`` when not
    ``proxyProtocol``).
    """
    config = HAPROXY_WEBSOCKET.replace(
        "bind :443 ssl crt /etc/haproxy/site.pem", f"bind 127.0.0.1:{port}"
    ).replace("127.0.0.1:8080", f"127.0.0.1:{backendPort}")
    if not proxyProtocol:
        config = config.replace(" send-proxy-v2", "")
    return "global\n    nbthread 1\n    maxconn 1024\n\n" + config


def nginxWebSocketConfig(directory: Path, port: int, backendPort: int) -> str:
    """``NGINX_WEBSOCKET`` on 127.0.0.1 ``port`` without TLS, in front of ``backendPort``."""
    http = NGINX_WEBSOCKET.replace(
        "listen 443 ssl;", f"listen 127.0.0.1:{port};"
    ).replace("127.0.0.1:8080", f"127.0.0.1:{backendPort}")
    return f"""\
daemon off;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {directory}/client_body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
{http}}}
"""


@dataclass
class Proxy:
    """A running proxy: its process, the ports clients use, its directory."""

    process: subprocess.Popen[bytes]
    ports: list[int]
    directory: Path

    @property
    def port(self) -> int:
        """The (first) port clients use."""
        return self.ports[0]

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL) and reap it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def log(self) -> str:
        """What it wrote to its error log or stderr (for failure messages)."""
        text = ""
        for name in ("error.log", "stderr"):
            path = self.directory / name
            if path.exists():
                text += path.read_text(errors="replace")
        return text


def startProxy(
    kind: str,
    directory: Path,
    backendPort: int,
    pools: int = 1,
    *,
    websocket: bool = False,
    **options: object,
) -> Proxy:
    """
    Start ``kind`` (``"haproxy"`` or ``"nginx"``) in the foreground in front
    of connserver on ``backendPort``, and return once it listens on
    ``pools`` ports, each with its own pool of connections to connserver;
    with ``websocket``, docs/deployment.md's WebSocket configuration (one
    port).
    """
    directory.mkdir(parents=True, exist_ok=True)
    ports = [freePort() for _ in range(pools)]
    config = directory / f"{kind}.conf"
    if kind == "haproxy":
        assert HAPROXY is not None
        if websocket:
            text = haproxyWebSocketConfig(ports[0], backendPort, **options)  # type: ignore[arg-type]
        else:
            text = haproxyConfig(ports, backendPort, **options)  # type: ignore[arg-type]
        config.write_text(text)
        command = [HAPROXY, "-db", "-f", str(config)]
    else:
        assert NGINX is not None
        if websocket:
            text = nginxWebSocketConfig(directory, ports[0], backendPort)
        else:
            text = nginxConfig(directory, ports, backendPort, **options)  # type: ignore[arg-type]
        config.write_text(text)
        command = [NGINX, "-e", str(directory / "error.log"), "-p", str(directory)]
        command += ["-c", str(config)]
    stderr = (directory / "stderr").open("wb")
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr
    )
    stderr.close()
    proxy = Proxy(process, ports, directory)
    waiting = list(ports)

    def listening() -> bool:
        while waiting:
            if process.poll() is not None:
                raise RuntimeError(f"{kind} exited {process.returncode}: {proxy.log()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", waiting[0]), timeout=0.5),
            ):
                waiting.pop(0)
                continue
            return False
        return True

    try:
        eventually(listening, timeout=START_TIMEOUT, interval=0.05)
    except AssertionError:
        proxy.stop()
        raise RuntimeError(f"{kind} did not listen on {ports}: {proxy.log()}") from None
    return proxy


@pytest.fixture
def proxies() -> Iterator[list[Proxy]]:
    """The HAProxy and nginx a test starts (``startProxy``), stopped after it."""
    started: list[Proxy] = []
    yield started
    for proxy in started:
        proxy.stop()
