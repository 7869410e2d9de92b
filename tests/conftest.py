"""Test-wide settings."""

from __future__ import annotations

import os

from hypothesis import settings

# CI runs the property tests on a fixed sequence of examples, so that a run
# is repeatable; a developer's run explores new examples every time (and
# bench/fuzz_long.py explores many more).
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
