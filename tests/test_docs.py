"""docs/ stays true: generated pages match the code they describe."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import gen_config_doc  # noqa: E402


def test_configDocIsCurrent() -> None:
    assert (ROOT / "docs" / "config.md").read_text() == gen_config_doc.render(), (
        "docs/config.md is stale: run python tools/gen_config_doc.py > docs/config.md"
    )


def test_closeReasonsAreDocumented() -> None:
    from connserver._http.persistence import CONNECTION_CLOSE_REASONS

    text = (ROOT / "docs" / "architecture.md").read_text()
    for reason in CONNECTION_CLOSE_REASONS:
        assert f"`{reason}`" in text, (
            f"close reason {reason} missing from docs/architecture.md"
        )


def test_everyFlagIsInTheREADMEAndCliDoc() -> None:
    """The README's flag table and docs/cli.md name every ``twistd connserver`` flag."""
    from connserver.tap import Options

    options = Options()
    flags = {name for name, *_ in options.optParameters + options.optFlags}
    flags |= {
        name[4:].replace("_", "-")
        for name in dir(options)
        if name.startswith("opt_") and len(name) > 5
    }
    readme = (ROOT / "README.md").read_text()
    cli = (ROOT / "docs" / "cli.md").read_text()
    for flag in sorted(flags):
        assert f"--{flag}" in readme, f"--{flag} missing from README.md"
        assert f"--{flag}" in cli, f"--{flag} missing from docs/cli.md"
