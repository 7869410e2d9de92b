"""
The layers of docs/architecture.md, checked with ``ast`` on every module:
imports point down only, the pure core never reaches ``twisted.internet``,
and no module is part of an import cycle (``TYPE_CHECKING`` imports
included).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "connserver"

#: Bottom first.  A module may import its own layer and the layers below.
LAYERS = [
    "connserver._http",
    "connserver._twisted",
    "connserver._connection",
    "connserver._handlers",
    "connserver._running",
    "connserver",  # __init__: the public API, re-exported
    "connserver.tap",  # the command line, on top of the public API
]
PURE = "connserver._http"
PLUGIN = REPO / "twisted" / "plugins" / "connserver_plugin.py"


def moduleName(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def allModules() -> dict[str, Path]:
    return {moduleName(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def importedModules(path: Path, package: str | None = None) -> set[str]:
    """Every module ``path`` imports, relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    if package is None:
        name = moduleName(path) if path.is_relative_to(REPO) else "sample"
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def layerOf(module: str) -> int:
    """The index in LAYERS of the deepest layer name that contains ``module``."""
    best = -1
    for index, layer in enumerate(LAYERS):
        if module == layer or module.startswith(layer + "."):
            if best < 0 or len(layer) > len(LAYERS[best]):
                best = index
    return best


def connserverImports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The connserver modules ``path`` imports (names resolved to modules)."""
    found = set()
    for name in importedModules(path):
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name:
            found.add(name)
    return found


MODULES = allModules()


def test_everyModuleHasALayer() -> None:
    missing = [m for m in MODULES if layerOf(m) < 0]
    assert not missing
    # Each layer package is there, so that a move is noticed.
    for layer in LAYERS:
        assert layer in MODULES, layer


@pytest.mark.parametrize("module", sorted(MODULES))
def test_importsPointDown(module: str) -> None:
    own = layerOf(module)
    upward = {
        imported
        for imported in connserverImports(MODULES[module], MODULES)
        if imported != module and layerOf(imported) > own
    }
    # A layer package's __init__ is documentation only: importing it is
    # importing nothing above.
    assert not upward, f"{module} imports {sorted(upward)} from a higher layer"


@pytest.mark.parametrize(
    "module", sorted(m for m in MODULES if m == PURE or m.startswith(PURE + "."))
)
def test_pureModuleDoesNotImportTwistedInternet(module: str) -> None:
    offending = {
        n
        for n in importedModules(MODULES[module])
        if n == "twisted.internet" or n.startswith("twisted.internet.")
    }
    assert not offending, f"{module} imports {sorted(offending)}"


def test_noImportCycles() -> None:
    graph = {m: connserverImports(p, MODULES) - {m} for m, p in MODULES.items()}
    # Package __init__ modules re-export; their edges are imports too.
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, cycles


def test_onlyThePluginImportsTap() -> None:
    importers = [
        m
        for m, p in MODULES.items()
        if m != "connserver.tap" and "connserver.tap" in connserverImports(p, MODULES)
    ]
    assert not importers
    assert "connserver.tap" in importedModules(PLUGIN) or "connserver.tap" in (
        PLUGIN.read_text()
    )


def test_checkerSeesEveryImportForm(tmp_path: Path) -> None:
    """The checks themselves can fail: each import form is found."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from twisted.internet import reactor\n"
        "import twisted.internet.defer\n"
        "from ..tap import Options\n"
    )
    imported = importedModules(sample, package="connserver._http")
    assert "twisted.internet" in imported
    assert "twisted.internet.defer" in imported
    assert "connserver.tap" in imported
    assert layerOf("connserver._http.parser") < layerOf("connserver._connection.x")
    assert layerOf("connserver.tap") > layerOf("connserver._running.worker")


# -- sizes: small modules with one owner each ------------------------------------

#: The limits the redesign set: the connection's protocol stays thin, no class
#: grows past 600 lines and no function past 60.
MAX_PROTOCOL_LINES = 400
MAX_CLASS_LINES = 600
MAX_FUNCTION_LINES = 60


def _spans(module: str) -> list[tuple[str, str, int]]:
    tree = ast.parse(MODULES[module].read_text())
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            kind = "class" if isinstance(node, ast.ClassDef) else "function"
            assert node.end_lineno is not None
            spans.append((kind, node.name, node.end_lineno - node.lineno + 1))
    return spans


@pytest.mark.parametrize("module", sorted(MODULES))
def test_classesAndFunctionsStaySmall(module: str) -> None:
    tooLong = [
        f"{kind} {name}: {lines} lines"
        for kind, name, lines in _spans(module)
        if lines > (MAX_CLASS_LINES if kind == "class" else MAX_FUNCTION_LINES)
    ]
    assert not tooLong, f"{module}: {tooLong}"


def test_theProtocolIsThin() -> None:
    [lines] = [
        n
        for kind, name, n in _spans("connserver._connection.protocol")
        if kind == "class" and name == "HTTPServerProtocol"
    ]
    assert lines < MAX_PROTOCOL_LINES
