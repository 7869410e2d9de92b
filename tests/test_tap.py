"""
``connserver.tap``: the generated config flags, value parsing, every
usage error, ``makeService``'s shape, and the plugin file.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python import usage

from connserver import tap
from connserver._connection.message import Request
from connserver._http.config import ServerConfig
from connserver._http.headers import Headers

ROOT = Path(__file__).resolve().parent.parent


def parse(*args: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(args))
    return options


def test_everyConfigFieldHasAFlag() -> None:
    fields = [f.name for f in dataclasses.fields(ServerConfig)]
    assert [flag.field for flag in tap.CONFIG_FLAGS] == fields
    help = str(tap.Options())
    for flag in tap.CONFIG_FLAGS:
        assert f"--{flag.flag}=" in help


@pytest.mark.parametrize(
    ("name", "flag"),
    [
        ("idleTimeout", "idle-timeout"),
        ("maxRequestsPerConnection", "max-requests-per-connection"),
        ("keepAlive", "keep-alive"),
        ("serverHeader", "server-header"),
    ],
)
def test_flagName(name: str, flag: str) -> None:
    assert tap.flagName(name) == flag


def test_defaults() -> None:
    options = parse()
    assert options["config"] == ServerConfig()
    assert options["listen"] == ["tcp:8080"]
    assert options["path"] == str(Path(".").resolve())
    assert options["application"] is None


@pytest.mark.parametrize(
    ("args", "changes"),
    [
        pytest.param(["--idle-timeout", "2.5"], {"idleTimeout": 2.5}, id="seconds"),
        pytest.param(["--idle-timeout", "none"], {"idleTimeout": None}, id="off"),
        pytest.param(["--send-timeout", "OFF"], {"sendTimeout": None}, id="off-case"),
        pytest.param(
            ["--max-requests-per-connection", "5"],
            {"maxRequestsPerConnection": 5},
            id="count",
        ),
        pytest.param(
            ["--max-requests", "7"], {"maxRequestsPerConnection": 7}, id="alias"
        ),
        pytest.param(["--max-body-bytes", "10M"], {"maxBodyBytes": 10 << 20}, id="M"),
        pytest.param(["--max-head-bytes", "32k"], {"maxHeadBytes": 32 << 10}, id="k"),
        pytest.param(["--keep-alive", "off"], {"keepAlive": False}, id="keep-alive"),
        pytest.param(["--no-keep-alive"], {"keepAlive": False}, id="no-keep-alive"),
        pytest.param(
            ["--keep-alive-hint", "off"], {"keepAliveHint": False}, id="hint-off"
        ),
        pytest.param(
            ["--no-keep-alive-hint"], {"keepAliveHint": False}, id="no-keep-alive-hint"
        ),
        pytest.param(["--server-header", "x/1"], {"serverHeader": "x/1"}, id="server"),
        pytest.param(["--server-header", "none"], {"serverHeader": None}, id="no-srv"),
        pytest.param(
            ["--drain-grace-timeout", "0"], {"drainGraceTimeout": 0.0}, id="zero"
        ),
    ],
)
def test_configValues(args: list[str], changes: dict[str, Any]) -> None:
    assert parse(*args)["config"] == ServerConfig(**changes)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--idle-timeout", "-1"], "--idle-timeout '-1': must be a positive", id="negative"),
        pytest.param(["--idle-timeout", "soon"], "expected a number of seconds or none", id="nan-word"),
        pytest.param(["--idle-timeout", "inf"], "finite", id="infinite"),
        pytest.param(["--drain-grace-timeout", "none"], "expected a number of seconds", id="not-optional"),
        pytest.param(["--max-connections", "0"], "positive whole number", id="zero"),
        pytest.param(["--max-connections", "1k"], "expected a whole number", id="count-suffix"),
        pytest.param(["--max-body-bytes", "1T"], "k, M, G", id="size-suffix"),
        pytest.param(["--keep-alive", "maybe"], "expected on or off", id="bool"),
        pytest.param(["--keep-alive", "on", "--no-keep-alive"], "contradicts", id="contradiction"),
        pytest.param(["--keep-alive-hint", "on", "--no-keep-alive-hint"], "--no-keep-alive-hint contradicts", id="hint-contradiction"),
        pytest.param(["--server-header", "caf\u00e9"], "printable ASCII", id="header"),
        pytest.param(["--path", "/nonexistent/x"], "not a directory", id="path"),
        pytest.param(["--listen", "nope:1"], "Unknown endpoint type", id="endpoint-type"),
        pytest.param(["--listen", "tcp:abc"], "--listen 'tcp:abc'", id="endpoint-port"),
        pytest.param(["--listen", "ssl:0:privateKey=/nonexistent.pem"], "No such file", id="ssl-key"),
        pytest.param(["--handler", "nomodule"], "MODULE:ATTRIBUTE", id="handler-syntax"),
        pytest.param(["--handler", "no_such_module_x:app"], "cannot import", id="import"),
        pytest.param(["--handler", "os:nothing_here"], "has no attribute", id="attribute"),
        pytest.param(["--handler", "os:sep"], "not a handler", id="not-callable"),
        pytest.param(["--handler", "os:getcwd", "--path", "."], "not both", id="both"),
        pytest.param(["--handler", "os:getcwd", "--listing"], "--listing applies", id="listing"),
        pytest.param(["--access-log-format", "xml"], "combined or json", id="log-format"),
        pytest.param(["--access-log", "/nonexistent/dir/log"], "cannot create", id="log-dir"),
        pytest.param(["--access-log", "-", "--log-closes", "some"], "--log-closes 'some': expected all, abnormal or none", id="log-closes"),
        pytest.param(["--log-closes", "all"], "--log-closes applies to --access-log", id="log-closes-alone"),
        pytest.param(["--access-log", "x.log", "--access-log-mode", "0999"], "expected octal permissions such as 0640", id="log-mode"),
        pytest.param(["--access-log-mode", "0644"], "--access-log-mode applies to --access-log", id="log-mode-alone"),
        pytest.param(["--access-log", "-", "--access-log-mode", "0644"], "applies to an access log file", id="log-mode-stdout"),
        pytest.param(["--status-path", "status"], "absolute path", id="status-relative"),
        pytest.param(["--status-path", "/"], "cannot take the whole site", id="status-root"),
        pytest.param(["--https", "x"], "port number", id="https-port"),
        pytest.param(["--https", "8443"], "needs --certificate", id="https-cert"),
        pytest.param(["--https", "8443", "-c", "/nonexistent.pem"], "/nonexistent.pem: cannot read the certificate", id="https-file"),
        pytest.param(["--https", "8443", "-k", "k.pem"], "after the --certificate", id="https-key-first"),
        pytest.param(["--listen", "ssl:0:privateKey=k.pem:sslmethod=TLSv1_METHOD"], "does not take sslmethod", id="ssl-unknown-option"),
        pytest.param(["--listen", "ssl:0"], "needs privateKey=", id="ssl-no-key"),
        pytest.param(["--listen", "ssl:x:privateKey=k.pem"], "expected ssl:PORT", id="ssl-port"),
        pytest.param(["--https", "1", "--certificate-dir", "/nonexistent"], "not a directory", id="cert-dir"),
        pytest.param(["--redirect-to-https"], "needs an HTTPS listener", id="redirect-no-tls"),
        pytest.param(["--hsts", "-1"], "--hsts-max-age '-1'", id="hsts"),
        pytest.param(["--certificate", "c.pem"], "go with --https", id="cert-alone"),
        pytest.param(["--proxy", "http://127.0.0.1:9000"], "expected PREFIX=URL", id="proxy-no-prefix"),
        pytest.param(["--proxy", "api=http://127.0.0.1:9000"], "expected PREFIX=URL", id="proxy-relative"),
        pytest.param(["--proxy", "/api=ftp://127.0.0.1"], "expected http://HOST", id="proxy-scheme"),
        pytest.param(["--proxy", "/api=http://127.0.0.1:99999"], "bad port", id="proxy-port"),
        pytest.param(["--proxy", "/api=http://h/?q"], "no query", id="proxy-query"),
        pytest.param(["--proxy", "/api=http://h", "--proxy", "/api/=http://g"], "already mounted", id="proxy-twice"),
        pytest.param(["--status-path", "/s", "--proxy", "/s=http://h"], "already mounted", id="proxy-status"),
        pytest.param(["--workers", "\u00b2"], "expected a number from 1 to 1024", id="workers-superscript"),
        pytest.param(["--workers", "2", "--worker-max-requests", "\u00b2"], "expected a whole number", id="max-requests-superscript"),
        pytest.param(["--workers", "2", "--worker-max-requests-jitter", "\u00b3"], "expected a whole number", id="jitter-superscript"),
        pytest.param(["--error-page", "\u00b2=/a.html"], "expected STATUS=/PATH", id="error-page-superscript"),
        pytest.param(["--https", "\u00b2"], "port number", id="https-superscript"),
        pytest.param(["--error-page", "404=/a.html", "--error-page", "404=/b.html"], "404 already has an error page", id="error-page-twice"),
        pytest.param(["--fallback", "index.html"], "such as /index.html", id="fallback-relative"),
        pytest.param(["--proxy-idle-timeout", "2"], "--proxy-idle-timeout applies to --proxy", id="proxy-idle-alone"),
        pytest.param(["--proxy-underscores"], "--proxy-underscores applies to --proxy", id="proxy-underscores-alone"),
        pytest.param(["--proxy", "/api=http://h", "--proxy-idle-timeout", "none"], "expected a positive number of seconds", id="proxy-idle-none"),
        pytest.param(["--proxy", "/api=http://h", "--proxy-idle-timeout", "0"], "expected a positive number of seconds", id="proxy-idle-zero"),
        pytest.param(["--proxy", "/api=http://h", "--proxy-timeout", "soon"], "expected a positive number of seconds or none", id="proxy-timeout-word"),
        pytest.param(["--proxy", "/api=http://h", "--proxy-timeout", "inf"], "or none", id="proxy-timeout-inf"),
        pytest.param(["--trusted-proxies", ",,"], "--trusted-proxies ',,': must be CIDR networks: an empty entry", id="trusted-empty-entries"),
        pytest.param(["--trusted-proxies", "10.0.0.0/8,"], "an empty entry", id="trusted-trailing-comma"),
        pytest.param(["--workers", "2", "--worker-max-requests-jitter", "5"], "needs --worker-max-requests", id="jitter-alone"),
        pytest.param(["--workers", "2", "--reuse-port", "--listen", "unix:/tmp/cs-x.sock"], "--reuse-port applies to tcp:", id="reuse-port-unix"),
    ],
)  # fmt: skip
def test_usageErrors(args: list[str], message: str) -> None:
    with pytest.raises(usage.UsageError) as raised:
        parse(*args)
    text = str(raised.value)
    assert message in text
    assert "\n" not in text, "one line"


def test_listenRepeats() -> None:
    options = parse("--listen", "tcp:1:interface=127.0.0.1", "--listen", "unix:/tmp/x")
    assert options["listen"] == ["tcp:1:interface=127.0.0.1", "unix:/tmp/x"]


def test_https(tmp_path: Path) -> None:
    """--https and ssl: listeners get connserver's TLS, with the files read."""
    from tests._certs import makeCertificate

    files = makeCertificate(tmp_path)
    options = parse(
        "--https",
        "8443",
        "--certificate",
        str(files.certificate),
        "-k",
        str(files.privateKey),
    )
    assert options["listen"] == []
    [listener] = options["tls"]
    assert (listener.port, listener.interface) == (8443, "")
    assert listener.options.names == {str(files.certificate): "localhost"}
    combined = tmp_path / "both.pem"
    combined.write_bytes(files.privateKey.read_bytes() + files.certificatePEM)
    options = parse("--https", "8443", "-c", str(combined), "--listen", "tcp:8080")
    assert options["listen"] == ["tcp:8080"]
    assert options["tls"][0].options.names == {str(combined): "localhost"}
    options = parse(
        "--listen",
        f"ssl:port=8444:interface=127.0.0.1:backlog=7:privateKey={files.privateKey}"
        f":certKey={files.certificate}",
    )
    [listener] = options["tls"]
    assert (listener.port, listener.interface, listener.backlog) == (
        8444,
        "127.0.0.1",
        7,
    )


def test_sslListenerQuotesColons(tmp_path: Path) -> None:
    """Twisted's quoting (quoteStringArgument) is read back as Twisted reads it."""
    from twisted.internet.endpoints import quoteStringArgument

    from connserver._running.listeners import splitEndpointDescription
    from tests._certs import makeCertificate

    directory = tmp_path / "a:b=c"
    directory.mkdir()
    files = makeCertificate(directory)
    description = (
        f"ssl:8443:privateKey={quoteStringArgument(str(files.privateKey))}"
        f":certKey={quoteStringArgument(str(files.certificate))}"
    )
    args, kwargs = splitEndpointDescription(description)
    assert args == ["ssl", "8443"]
    assert kwargs == {
        "privateKey": str(files.privateKey),
        "certKey": str(files.certificate),
    }
    [listener] = parse("--listen", description)["tls"]
    assert listener.options.names == {str(files.certificate): "localhost"}


def test_handlerIsLoadedAndAdapted() -> None:
    options = parse("--handler", "tests._slowapp:app")
    from tests import _slowapp

    assert options["application"] is _slowapp.app


def test_handlerResource(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An IResource is adapted by connserver._handlers.web.asHandler."""
    pytest.importorskip("connserver._handlers.web")
    (tmp_path / "cs_resource_app.py").write_text(
        "from twisted.web.resource import Resource\n"
        "class Hello(Resource):\n"
        "    isLeaf = True\n"
        "    def render_GET(self, request):\n"
        "        return b'hello'\n"
        "root = Hello()\n"
        "notAHandler = 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    options = parse("--handler", "cs_resource_app:root")
    application = options["application"]
    assert callable(application)
    assert application is not sys.modules["cs_resource_app"].root
    with pytest.raises(usage.UsageError, match="not a handler"):
        parse("--handler", "cs_resource_app:notAHandler")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        parse("--version")
    assert raised.value.code == 0
    assert capsys.readouterr().out.startswith("connserver ")


def test_makeService(tmp_path: Path) -> None:
    from twisted.internet import reactor

    from connserver._handlers.routing import PrefixMount
    from connserver._handlers.static import StaticFiles
    from connserver._handlers.status import StatusSamplingService
    from connserver._running.accesslog import AccessLog
    from connserver._running.service import ConnectionServerService

    options = parse(
        "--path", str(tmp_path),
        "--listen", "tcp:0:interface=127.0.0.1",
        "--listen", "tcp:0:interface=127.0.0.1",
        "--status-path", "/status/",
        "--access-log", str(tmp_path / "access.log"),
        "--access-log-format", "json",
        "--idle-timeout", "5",
    )  # fmt: skip
    service = tap.makeService(options)
    assert isinstance(service, ConnectionServerService)
    assert len(service.listeners) == 2
    factory: Any = service.factory
    assert factory.config.idleTimeout == 5
    assert factory.reactor is reactor
    assert isinstance(factory.handler, PrefixMount)
    assert isinstance(factory.handler.default, StaticFiles)
    assert isinstance(factory.handler.route(b"/status"), object)
    assert factory.handler.route(b"/status") is not factory.handler.default
    assert [type(o) for o in factory.requestObservers] == [AccessLog]
    assert factory.requestObservers[0].format == "json"
    # The same log writes the closes no response carried.
    assert factory.closeObservers == factory.requestObservers
    assert type(service.companions[0]) is StatusSamplingService


def test_makeServiceWithProxy(tmp_path: Path) -> None:
    from connserver._handlers.proxy import ReverseProxy
    from connserver._handlers.routing import PrefixMount
    from connserver._handlers.static import StaticFiles

    options = parse(
        "--path", str(tmp_path),
        "--proxy", "/api=http://127.0.0.1:9000",
        "--proxy", "/b/=http://127.0.0.1:9001/base/",
    )  # fmt: skip
    service: Any = tap.makeService(options)
    handler = service.factory.handler
    assert isinstance(handler, PrefixMount)
    assert isinstance(handler.default, StaticFiles)
    api = handler.route(b"/api/x")
    assert isinstance(api, ReverseProxy) and api.url == "http://127.0.0.1:9000"
    b = handler.route(b"/b")
    assert isinstance(b, ReverseProxy) and b.url == "http://127.0.0.1:9001/base/"
    assert handler.route(b"/apix") is handler.default
    # The defaults: 4 s idle upstream connections, 60 s for a response.
    assert api.upstreamIdleTimeout == 4.0 and api.responseTimeout == 60.0
    assert api.prefix == b"/api" and b.prefix == b"/b"
    assert not api.allowEncodedSlashes and not api.forwardUnderscores
    # Each proxy's idle upstream connections are closed at shutdown.
    assert [c.name for c in service.companions][:2] == ["proxy /api", "proxy /b/"]


def test_proxyTimeoutFlags() -> None:
    """--proxy-idle-timeout and --proxy-timeout reach every --proxy mount."""
    options = parse(
        "--proxy", "/api=http://127.0.0.1:9000",
        "--proxy", "/b=http://127.0.0.1:9001",
        "--proxy-idle-timeout", "1.5",
        "--proxy-timeout", "none",
        "--proxy-encoded-slashes",
        "--proxy-underscores",
    )  # fmt: skip
    service: Any = tap.makeService(options)
    for path in (b"/api", b"/b"):
        proxy = service.factory.handler.route(path)
        assert proxy.upstreamIdleTimeout == 1.5
        assert proxy.responseTimeout is None
        assert proxy.allowEncodedSlashes and proxy.forwardUnderscores


def test_makeServiceWithHandler() -> None:
    options = parse("--handler", "tests._slowapp:app")
    service: Any = tap.makeService(options)
    from tests import _slowapp

    assert service.factory.handler is _slowapp.app
    assert service.factory.requestObservers == []
    assert service.factory.closeObservers == []
    # Only the signal handlers (a second SIGTERM; SIGHUP: nothing to
    # reload; SIGUSR1: no log).
    assert [c.name for c in service.companions] == [
        "repeated-stop-signals",
        "reload",
        "access-log-reopen",
    ]


def test_tapDoesNotImportTheReactor() -> None:
    """tap.py is imported by twistd before the reactor is chosen."""
    source = (ROOT / "connserver" / "tap.py").read_text()
    for node in ast.parse(source).body:
        if isinstance(node, ast.ImportFrom | ast.Import):
            names = [alias.name for alias in node.names]
            module = getattr(node, "module", None) or ""
            assert "reactor" not in names
            assert "twisted.internet.reactor" not in [*names, module]


def test_pluginFile() -> None:
    """The plugin names connserver.tap and imports nothing of connserver."""
    path = ROOT / "twisted" / "plugins" / "connserver_plugin.py"
    assert not (ROOT / "twisted" / "__init__.py").exists()
    assert not (ROOT / "twisted" / "plugins" / "__init__.py").exists()
    tree = ast.parse(path.read_text())
    imported = [
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    ]
    assert imported == ["twisted.application.service"]
    spec = importlib.util.spec_from_file_location("_connserver_plugin_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    maker = module.connserver
    assert (maker.tapname, maker.module) == ("connserver", "connserver.tap")
    assert maker.options is tap.Options
    assert "connserver.tap" in sys.modules


def test_staticFileFlagsReachStaticFiles(tmp_path: Path) -> None:
    tapModule = tap
    (tmp_path / "a.txt").write_text("x")
    options = tapModule.Options()
    options.parseOptions(
        ["--path", str(tmp_path), "--cache-control", "max-age=60", "--precompressed"]
    )
    service = tapModule.makeService(options)
    handler = service.factory.handler  # type: ignore[attr-defined]
    response = handler(Request(b"GET", b"/a.txt", (1, 1), Headers([(b"host", b"x")])))
    assert response.headers.get(b"cache-control") == b"max-age=60"


def test_cacheControlMustBePrintable(tmp_path: Path) -> None:
    with pytest.raises(usage.UsageError, match="--cache-control"):
        tap.Options().parseOptions(
            ["--path", str(tmp_path), "--cache-control", "a\x01b"]
        )


def test_helpSentencesHaveNoIndentationInside() -> None:
    """Multi-line opt_ docstrings read as one sentence in --help."""
    from connserver.tap import Options

    options = Options()
    for name, doc in options.docs.items():
        assert not doc or "  " not in doc, name
    for line in options.getUsage().splitlines():
        if line.startswith(" " * 10):  # a description's continuation line
            assert "  " not in line.strip(), line


def test_missingErrorPageOrFallbackIsOneWarning(tmp_path: Path) -> None:
    """
    A --error-page or --fallback file that does not exist at start is one
    warning line each (the server starts: the file may come later).
    """
    (tmp_path / "404.html").write_text("gone")
    options = parse(
        "--path",
        str(tmp_path),
        "--error-page",
        "403=/missing.html",
        "--error-page",
        "404=/404.html",
        "--error-page",
        "500=/oops.html",
        "--fallback",
        "/index.html",
    )
    with capturedLogs() as events:
        tap.makeService(options)
    warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
    assert warnings == [
        f"--error-page 403=/missing.html: no such file under {tmp_path} (yet)",
        f"--error-page 500=/oops.html: no such file under {tmp_path} (yet)",
        f"--fallback /index.html: no such file under {tmp_path} (yet)",
    ]


# -- systemd: socket activation ---------------------------------------------------


def systemd(description: str, environ: dict[str, str], pid: int = 4242) -> Any:
    from connserver._running.listeners import systemdEndpoint

    return systemdEndpoint(object(), description, environ, pid)


@pytest.mark.parametrize(
    "description, environ, message",
    [
        pytest.param("systemd:domain=INET:index=0", {}, "systemd passed this process no socket", id="none"),
        pytest.param("systemd:domain=INET:index=0", {"LISTEN_PID": "1", "LISTEN_FDS": "1"}, "no socket", id="other-pid"),
        pytest.param("systemd:domain=INET:index=1", {"LISTEN_PID": "4242", "LISTEN_FDS": "1"}, "index='1': systemd passed 1 socket(s), index 0 to 0", id="index-range"),
        pytest.param("systemd:domain=INET:name=http", {"LISTEN_PID": "4242", "LISTEN_FDS": "1"}, "LISTEN_FDNAMES is not set): set FileDescriptorName=http in the .socket unit (systemd-socket-activate --fdname=http), or use index=N", id="name-without-names"),
        pytest.param("systemd:domain=INET:name=web", {"LISTEN_PID": "4242", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "http:https"}, "passed the sockets http, https", id="unknown-name"),
        pytest.param("systemd:domain=INET", {"LISTEN_PID": "4242", "LISTEN_FDS": "1"}, "give index=N or name=NAME (exactly one)", id="neither"),
        pytest.param("systemd:domain=INET:index=0:name=x", {"LISTEN_PID": "4242", "LISTEN_FDS": "1"}, "exactly one", id="both"),
        pytest.param("systemd:domain=IPX:index=0", {"LISTEN_PID": "4242", "LISTEN_FDS": "1"}, "expected INET, INET6 or UNIX", id="domain"),
        pytest.param("systemd:domain=INET:port=1", {"LISTEN_PID": "4242", "LISTEN_FDS": "1"}, "expected systemd:domain=", id="unknown-key"),
    ],
)  # fmt: skip
def test_systemdErrorsSayWhatIsMissing(
    description: str, environ: dict[str, str], message: str
) -> None:
    from connserver._running.listeners import ListenerError

    with pytest.raises(ListenerError) as raised:
        systemd(description, environ)
    assert message in str(raised.value)
    assert str(raised.value).startswith(f"--listen {description!r}: ")


def test_systemdIndexWithoutNames() -> None:
    """
    Without LISTEN_FDNAMES (systemd before 227, systemd-socket-activate
    without --fdname) Twisted's parser finds no socket at all, even for
    index=0 ("list index out of range"); the index still works here.
    """
    import socket

    environ = {"LISTEN_PID": "4242", "LISTEN_FDS": "2"}
    endpoint = systemd("systemd:domain=INET6:index=1", environ)
    assert (endpoint.fileno, endpoint.addressFamily) == (4, socket.AF_INET6)
    named = {**environ, "LISTEN_FDNAMES": "http:https"}
    endpoint = systemd("systemd:domain=INET:name=https", named)
    assert (endpoint.fileno, endpoint.addressFamily) == (4, socket.AF_INET)
    # Twisted's positional spelling too.
    assert systemd("systemd:UNIX:0", environ).fileno == 3


def test_systemdWithoutSocketIsAUsageError() -> None:
    with pytest.raises(usage.UsageError, match="systemd passed this process no socket"):
        parse("--listen", "systemd:domain=INET:index=0")


def test_hstsWithoutATLSListenerIsOneWarning(tmp_path: Path) -> None:
    """Strict-Transport-Security goes over TLS only: without TLS, say so."""
    with capturedLogs() as events:
        tap.makeService(parse("--path", str(tmp_path), "--hsts", "31536000"))
    warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
    assert len(warnings) == 1
    assert warnings[0].startswith(
        "--hsts-max-age 31536000: no TLS listener (--https or --listen ssl:...)"
    )
    assert "so no response will carry it" in warnings[0]


def test_hstsWithATLSListenerIsNoWarning(tmp_path: Path) -> None:
    from ._certs import makeCertificate

    cert = makeCertificate(tmp_path)
    options = parse(
        "--path", str(tmp_path), "--hsts", "100",
        "--https", "0", "-c", str(cert.certificate), "-k", str(cert.privateKey),
    )  # fmt: skip
    with capturedLogs() as events:
        tap.makeService(options)
    assert not [e for e in events if e["log_level"] == LogLevel.warn]


def test_accessLogFlagsReachTheLog(tmp_path: Path) -> None:
    """--log-closes (default abnormal) and --access-log-mode (default 0640)."""
    log = str(tmp_path / "access.log")
    settings = parse("--path", str(tmp_path), "--access-log", log).settings()
    assert (settings.logCloses, settings.accessLogMode) == ("abnormal", 0o640)
    options = parse(
        "--path", str(tmp_path), "--access-log", log,
        "--log-closes", "none", "--access-log-mode", "644",
    )  # fmt: skip
    service: Any = tap.makeService(options)
    accessLog = service.factory.requestObservers[0]
    assert (accessLog.closes, accessLog.mode) == ("none", 0o644)
    assert not os.path.exists(log), "created when the service starts"
