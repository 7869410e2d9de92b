"""docs/ stays true: generated pages match the code they describe."""

from __future__ import annotations

import re
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


#: Where a cited project file may be: the paths the project's own text names.
_CITED = re.compile(
    r"(?<![\w/.-])((?:docs|tests|bench|examples|connserver|tools|\.ci)/[\w./-]*[\w]"
    r"|[\w-]+\.md)(?![\w/-])"
)


def test_everyCitedFileExists() -> None:
    """
    A file the code, tests or docs cite (a ``*.md`` page, or a path under one
    of the project's folders) exists: nothing points to a page that is not
    in the repository.
    """
    sources = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for folder in ("connserver", "tests", "bench", "examples"):
        # Not the virtualenvs setup scripts make (bench/.venv-peers).
        sources += sorted(
            p
            for p in (ROOT / folder).rglob("*.py")
            if not any(part.startswith(".venv") for part in p.parts)
        )
    files = {
        p.relative_to(ROOT).as_posix()
        for p in ROOT.rglob("*")
        if ".venv" not in p.parts and ".git" not in p.parts
    }
    names = {name.rsplit("/", 1)[-1] for name in files}
    missing = []
    for source in sources:
        for cited in _CITED.findall(source.read_text()):
            cited = cited.rstrip(".")
            if ".venv" in cited:
                continue  # made by a setup script (bench/setup-peers.sh), not kept
            if "/" in cited:
                found = cited in files or any(f.startswith(cited + "/") for f in files)
            else:
                found = cited in names
            if not found:
                missing.append(f"{source.relative_to(ROOT)}: {cited}")
    assert not missing, missing


def test_theCitationCheckSeesPagesAndPaths() -> None:
    """The check itself can fail: it finds both kinds of citation."""
    # (Built from parts, so that this file cites no missing page itself.)
    page, path = "GONE" + ".md", "docs/" + "gone" + ".md"
    text = f"as {page} says; see {path} and `tests/_harness.py`."
    assert _CITED.findall(text) == [page, path, "tests/_harness.py"]
