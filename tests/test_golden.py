"""
Golden wire transcripts: the same inputs give the same bytes, records and
close reasons as when ``tests/golden/*.json`` were recorded.

Each in-process case (``tests/golden/cases.py``) is replayed on a fresh
``ConnectionFactory`` over ``StringTransport`` and ``Clock`` and its
transcript compared with the stored one; a mismatch shows the case id,
where the transcripts first differ, and a unified diff (expected, then
actual).  The ``twistd`` cases run in one slow test.

After an intended change of behaviour, regenerate and review the diff::

    python -m tests.golden.record          # all groups (twistd too)
    git diff --stat tests/golden

For triage, ``GOLDEN_IGNORE=timers,log pytest tests/test_golden.py`` leaves
those keys out of the comparison (see ``tests/golden/store.py``).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from .golden.cases import allCases
from .golden.record import SUBPROCESS
from .golden.runner import Case, runCase
from .golden.store import Transcript, difference, expected, goldenPath, load

CASES = allCases()
GOLDEN = expected(list(CASES))


def _params() -> list[Any]:
    return [pytest.param(c, id=c.id) for cases in CASES.values() for c in cases]


@pytest.mark.parametrize("theCase", _params())
def test_transcript(theCase: Case) -> None:
    actual = runCase(theCase)
    problem = difference(
        GOLDEN[theCase.group].get(theCase.id),
        actual,
        f"tests/golden/{theCase.group}.json",
    )
    if problem is not None:
        pytest.fail(problem, pytrace=False)


@pytest.mark.parametrize("group", list(CASES))
def test_noStaleGoldenTranscripts(group: str) -> None:
    """Every stored transcript still has its case (none renamed or dropped)."""
    assert goldenPath(group).exists(), "record it: python -m tests.golden.record"
    stale = set(GOLDEN[group]) - {c.id for c in CASES[group]}
    assert not stale, f"golden transcripts without a case: {sorted(stale)}"


# -- the comparison can fail ------------------------------------------------------------


def _mutateOneByte(transcript: Transcript) -> Transcript:
    """A copy with one byte of the first response changed ("200" -> "201")."""
    mutated = copy.deepcopy(transcript)
    for step in mutated["steps"]:
        lines = step.get("out")
        if isinstance(lines, list) and lines and lines[0].startswith("HTTP/1.1 200"):
            lines[0] = lines[0].replace("200", "201", 1)
            return mutated
    raise AssertionError("no 200 response in the transcript")


def test_aChangedByteIsDetected() -> None:
    theCase = next(c for c in CASES["persistence"] if c.id == "persistence/1.1/none")
    actual = runCase(theCase)
    stored = GOLDEN["persistence"][theCase.id]
    assert difference(stored, actual) is None
    problem = difference(_mutateOneByte(stored), actual, "persistence.json")
    assert problem is not None
    assert "persistence/1.1/none" in problem
    lines = problem.splitlines()
    assert '-    "HTTP/1.1 201 OK\\r\\n",' in lines
    assert '+    "HTTP/1.1 200 OK\\r\\n",' in lines
    assert "first at steps[1].out[0]" in problem


def test_aChangedRecordIsDetected() -> None:
    theCase = next(c for c in CASES["timers"] if c.id == "timers/idle/timeout")
    actual = runCase(theCase)
    stored = copy.deepcopy(GOLDEN["timers"][theCase.id])
    for step in stored["steps"]:
        for index, record in enumerate(step.get("records", [])):
            if "close=idle-timeout" in record:
                step["records"][index] = record.replace("idle-timeout", "idle-timeouT")
    problem = difference(stored, actual)
    assert problem is not None and "timers/idle/timeout" in problem


def test_aChangedSplitCaseIsDetected() -> None:
    """A compact split entry expands to its source's transcript, and is checked."""
    theCase = next(
        c for c in CASES["splits"] if c.id == "splits/bytewise/persistence/1.1/none"
    )
    actual = runCase(theCase)
    assert difference(GOLDEN["splits"][theCase.id], actual) is None
    problem = difference(_mutateOneByte(GOLDEN["splits"][theCase.id]), actual)
    assert problem is not None and theCase.id in problem


# -- twistd --------------------------------------------------------------------------


@pytest.mark.slow
def test_twistdTranscripts() -> None:
    from .golden.subprocess_cases import runAll

    stored = {t["id"]: t for t in load(SUBPROCESS)}
    actual = runAll()
    problems = [
        problem
        for transcript in actual
        if (problem := difference(stored.get(transcript["id"]), transcript))
    ]
    stale = set(stored) - {t["id"] for t in actual}
    if stale:
        problems.append(f"golden transcripts without a case: {sorted(stale)}")
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)
