"""DESIGN.md: the pure core never imports twisted.internet (checked with ast)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PURE = [
    "_headers",
    "_parser",
    "_framing",
    "_persistence",
    "_state",
    "_config",
    "_errors",
    "_records",
    "_forwarded",
    "_encoding",
]
PACKAGE = Path(__file__).resolve().parent.parent / "connserver"


def importedModules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # A relative import reaches another connserver module.
                names.add("connserver." + (node.module or ""))
            elif node.module:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("module", PURE)
def test_pureModuleDoesNotImportTwistedInternet(module: str) -> None:
    imported = importedModules(PACKAGE / f"{module}.py")
    offending = {
        n
        for n in imported
        if n == "twisted.internet" or n.startswith("twisted.internet.")
    }
    assert not offending, f"{module} imports {sorted(offending)}"
    # Nor may it import a module above the line, which would do so in turn.
    above = {
        "connserver._protocol",
        "connserver._factory",
        "connserver._message",
        "connserver._service",
        "connserver.tap",
    }
    assert not (imported & above), f"{module} imports {sorted(imported & above)}"


def test_checkerSeesTwistedInternetImports(tmp_path: Path) -> None:
    """The check itself can fail: it finds both import forms."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from twisted.internet import reactor\nimport twisted.internet.defer\n"
    )
    imported = importedModules(sample)
    assert "twisted.internet" in imported
    assert "twisted.internet.defer" in imported
