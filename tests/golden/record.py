"""
Regenerate the golden files: ``python -m tests.golden.record``.

Runs every case on the current code and writes ``tests/golden/<group>.json``
(one file per group).  ``--group NAME`` (repeatable) records only those
groups; ``--no-subprocess`` skips the ``twistd`` group; ``--check`` writes
nothing and exits 1 if any file would change.
"""

from __future__ import annotations

import argparse
import sys
import time

from twisted.logger import globalLogBeginner

from .cases import allCases
from .runner import runCase
from .store import SPLIT_SOURCES, SPLITS, Transcript, compact, dumps, goldenPath

SUBPROCESS = "subprocess"


def recordGroup(group: str) -> list[Transcript]:
    """The transcripts of ``group`` on the current code, as they are stored."""
    if group == SUBPROCESS:
        from .subprocess_cases import runAll

        return runAll()
    groups = allCases()
    transcripts = [runCase(c) for c in groups[group]]
    if group == SPLITS:
        sources = {c.id: runCase(c) for name in SPLIT_SOURCES for c in groups[name]}
        transcripts = [compact(t, sources) for t in transcripts]
    return transcripts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate the golden files.")
    parser.add_argument("--group", action="append", default=[])
    parser.add_argument("--no-subprocess", action="store_true")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    # connserver's log lines go into the transcripts, not to the terminal.
    globalLogBeginner.beginLoggingTo([], discardBuffer=True, redirectStandardIO=False)
    groups = list(allCases())
    if not args.no_subprocess:
        groups.append(SUBPROCESS)
    if args.group:
        unknown = set(args.group) - set(groups)
        if unknown:
            parser.error(f"unknown groups: {sorted(unknown)}")
        groups = [g for g in groups if g in args.group]
    changed = []
    for group in groups:
        started = time.monotonic()
        transcripts = recordGroup(group)
        text = dumps(transcripts)
        path = goldenPath(group)
        old = path.read_text("ascii") if path.exists() else None
        if old != text:
            changed.append(group)
            if not args.check:
                path.write_text(text, "ascii")
        print(
            f"{group}: {len(transcripts)} cases, {len(text) // 1024} KiB, "
            f"{time.monotonic() - started:.1f} s, "
            f"{'unchanged' if old == text else 'CHANGED'}"
        )
    if args.check and changed:
        print(f"would change: {', '.join(changed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
