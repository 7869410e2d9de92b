"""
connserver: an HTTP/1.0 and HTTP/1.1 origin server on Twisted that gets the
``Connection`` header, persistence, framing and per-phase timeouts right.

Embedding is one line::

    endpoint.listen(ConnectionFactory(handler, config=ServerConfig(...)))

What ``twistd connserver`` adds around the factory is public on
:class:`ConnectionServerService` (a Twisted service: listening, a graceful
stop): ``addAccessLog``, ``addStatusPage``, ``addMetrics`` and ``mount``::

    server = ConnectionServerService(factory, [endpoint])
    server.addAccessLog("access.log")
    server.addStatusPage("/status")
    server.setServiceParent(application)  # in a .tac; see examples/site.tac
"""

from connserver._connection.factory import ConnectionFactory, ConnectionStats
from connserver._connection.message import Handler, Request, Response, SwitchProtocols
from connserver._connection.protocol import HTTPServerProtocol
from connserver._handlers.asgi import ASGIHandler
from connserver._handlers.proxy import ReverseProxy
from connserver._handlers.routing import HTTPSRedirect, PrefixMount
from connserver._handlers.static import FileChangedError, StaticFiles
from connserver._handlers.status import StatusHandler
from connserver._handlers.web import WebResourceHandler, asHandler
from connserver._handlers.websocket import WebSocketHandler
from connserver._handlers.wsgi import WSGIHandler
from connserver._http.config import ServerConfig
from connserver._http.errors import (
    BodyInterrupted,
    ClientGone,
    InvalidTransition,
    ProtocolError,
    ResponseFramingError,
)
from connserver._http.headers import (
    HOP_BY_HOP,
    Headers,
    connectionOptions,
    removeHopByHop,
    splitList,
)
from connserver._http.persistence import (
    CLOSE_REASONS,
    PersistenceDecision,
    PersistencePolicy,
)
from connserver._http.records import ConnectionRecord, RequestRecord
from connserver._http.state import ConnectionState
from connserver._running.accesslog import AccessLog
from connserver._running.service import ConnectionServerService
from connserver._running.tls import CertificateSource, TLSConfigError, TLSServerOptions

__version__ = "0.1.0"

__all__ = [
    "CLOSE_REASONS",
    "HOP_BY_HOP",
    "ASGIHandler",
    "AccessLog",
    "BodyInterrupted",
    "CertificateSource",
    "ClientGone",
    "ConnectionFactory",
    "ConnectionRecord",
    "ConnectionServerService",
    "ConnectionState",
    "ConnectionStats",
    "FileChangedError",
    "HTTPSRedirect",
    "HTTPServerProtocol",
    "Handler",
    "Headers",
    "InvalidTransition",
    "PersistenceDecision",
    "PersistencePolicy",
    "PrefixMount",
    "ProtocolError",
    "Request",
    "RequestRecord",
    "Response",
    "ResponseFramingError",
    "ReverseProxy",
    "ServerConfig",
    "StaticFiles",
    "StatusHandler",
    "SwitchProtocols",
    "TLSConfigError",
    "TLSServerOptions",
    "WSGIHandler",
    "WebResourceHandler",
    "WebSocketHandler",
    "__version__",
    "asHandler",
    "connectionOptions",
    "removeHopByHop",
    "splitList",
]
