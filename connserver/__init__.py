"""
connserver: an HTTP/1.0 and HTTP/1.1 origin server on Twisted that gets the
``Connection`` header, persistence, framing and per-phase timeouts right.

Embedding is one line::

    endpoint.listen(ConnectionFactory(handler, config=ServerConfig(...)))
"""

from ._accesslog import AccessLog
from ._config import ServerConfig
from ._errors import (
    BodyInterrupted,
    InvalidTransition,
    ProtocolError,
    ResponseFramingError,
)
from ._factory import ConnectionFactory, ConnectionStats
from ._headers import (
    HOP_BY_HOP,
    Headers,
    connectionOptions,
    removeHopByHop,
    splitList,
)
from ._message import Handler, Request, Response
from ._persistence import CLOSE_REASONS, PersistenceDecision, PersistencePolicy
from ._protocol import HTTPServerProtocol
from ._proxy import ReverseProxy
from ._records import ConnectionRecord, RequestRecord
from ._routing import HTTPSRedirect, PrefixMount
from ._service import ConnectionServerService
from ._state import ConnectionState
from ._static import FileChangedError, StaticFiles
from ._status import StatusHandler
from ._tls import CertificateSource, TLSConfigError, TLSServerOptions
from ._web import WebResourceHandler, asHandler

__version__ = "0.1.0"

__all__ = [
    "CLOSE_REASONS",
    "HOP_BY_HOP",
    "AccessLog",
    "BodyInterrupted",
    "CertificateSource",
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
    "TLSConfigError",
    "TLSServerOptions",
    "WebResourceHandler",
    "__version__",
    "asHandler",
    "connectionOptions",
    "removeHopByHop",
    "splitList",
]
