"""
A longer fuzzing run of ``tests/test_fuzz.py`` for local use (issue 7).

The test module reads its example counts from the environment; this script
raises them and runs pytest on it, so the properties are the same as in CI,
only searched for longer.  Hypothesis keeps failing examples in
``.hypothesis/`` (in the working directory) so that the next run tries them
first.

    python bench/fuzz_long.py [--examples 20000] [--stateful 5000] [--minutes 20]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(
        description="long fuzzing run of tests/test_fuzz.py"
    )
    parser.add_argument("--examples", type=int, default=20_000)
    parser.add_argument("--stateful", type=int, default=5_000)
    parser.add_argument("--minutes", type=float, default=20.0, help="hard time bound")
    args = parser.parse_args()
    env = {
        **os.environ,
        "FUZZ_EXAMPLES": str(args.examples),
        "FUZZ_STATEFUL_EXAMPLES": str(args.stateful),
    }
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "tests/test_fuzz.py",
        "-q",
        "--hypothesis-show-statistics",
    ]
    try:
        return subprocess.run(
            argv, cwd=ROOT, env=env, timeout=args.minutes * 60, check=False
        ).returncode
    except subprocess.TimeoutExpired:
        print(f"stopped after {args.minutes} minutes without a failure")
        return 0


if __name__ == "__main__":
    sys.exit(main())
