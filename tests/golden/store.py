"""
The golden files: writing, reading, and comparing transcripts.

One JSON file per group (``tests/golden/<group>.json``): a list of
transcripts, in case order.  In ``splits`` a case whose transcript is its
source case's (the same bytes sent whole) but for how the bytes were sent
is stored as ``{"id", "sameAs", "send"}``; :func:`expand` rebuilds it from
the source's golden transcript, so a split case is compared with what the
golden file says of the whole send, not with a fresh run of it.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).resolve().parent
SPLITS = "splits"
#: The groups whose cases ``splits`` sends again in pieces.
SPLIT_SOURCES = ("persistence", "framing", "malformed")

Transcript = dict[str, Any]


def goldenPath(group: str) -> Path:
    return GOLDEN / f"{group}.json"


def dumps(transcripts: list[Transcript]) -> str:
    """The text of a golden file: stable, ASCII, one key or line per line."""
    return json.dumps(transcripts, indent=1, ensure_ascii=True) + "\n"


def load(group: str) -> list[Transcript]:
    """A group's stored transcripts, as stored (``splits`` still compact)."""
    data: list[Transcript] = json.loads(goldenPath(group).read_text("ascii"))
    return data


# -- splits ------------------------------------------------------------------------


def splitSource(caseId: str) -> str:
    """``splits/bytewise/framing/x`` -> ``framing/x``."""
    return caseId.split("/", 2)[2]


def _asWhole(transcript: Transcript) -> Transcript:
    """A split case's transcript as the whole send's would read."""
    whole = copy.deepcopy(transcript)
    whole["id"] = splitSource(transcript["id"])
    sending = whole["steps"][1]
    sending["do"] = "send"
    sending.pop("cuts", None)
    return whole


def compact(transcript: Transcript, sources: dict[str, Transcript]) -> Transcript:
    """A split case's transcript, as ``sameAs`` its source when it is."""
    source = sources[splitSource(transcript["id"])]
    if _asWhole(transcript) != source:
        return transcript
    sending = transcript["steps"][1]
    how = {key: sending[key] for key in ("do", "cuts") if key in sending}
    return {"id": transcript["id"], "sameAs": source["id"], "send": how}


def expand(entry: Transcript, sources: dict[str, Transcript]) -> Transcript:
    """The whole transcript that a stored (maybe compact) entry stands for."""
    if "sameAs" not in entry:
        return entry
    transcript = copy.deepcopy(sources[entry["sameAs"]])
    transcript["id"] = entry["id"]
    steps = transcript["steps"]
    sending = steps[1]
    rebuilt: dict[str, Any] = {}
    for key, value in sending.items():
        rebuilt[key] = entry["send"]["do"] if key == "do" else value
        if key == "in" and "cuts" in entry["send"]:
            rebuilt["cuts"] = entry["send"]["cuts"]
    steps[1] = rebuilt
    return transcript


def expected(groups: list[str]) -> dict[str, dict[str, Transcript]]:
    """The stored transcripts of ``groups``, expanded, by group and case id."""
    out: dict[str, dict[str, Transcript]] = {}
    for group in groups:
        if not goldenPath(group).exists():
            out[group] = {}
            continue
        out[group] = {t["id"]: t for t in load(group)}
    if SPLITS in out:
        sources: dict[str, Transcript] = {}
        for group in SPLIT_SOURCES:
            sources.update(out.get(group) or {t["id"]: t for t in load(group)})
        out[SPLITS] = {
            caseId: expand(entry, sources) for caseId, entry in out[SPLITS].items()
        }
    return out


# -- comparing ---------------------------------------------------------------------


def _firstDifference(expected: Any, actual: Any, path: str) -> str | None:
    if type(expected) is not type(actual):
        return path
    if isinstance(expected, dict):
        for key in list(expected) + [k for k in actual if k not in expected]:
            if key not in expected or key not in actual:
                return f"{path}.{key}"
            found = _firstDifference(expected[key], actual[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(expected, list):
        for index, (e, a) in enumerate(zip(expected, actual, strict=False)):
            found = _firstDifference(e, a, f"{path}[{index}]")
            if found:
                return found
        if len(expected) != len(actual):
            return f"{path}[{min(len(expected), len(actual))}]"
        return None
    return None if expected == actual else path


# "timers" (the DelayedCalls pending on the clock) is compared as "some" or
# "none": whether a deadline is pending is behaviour, how many calls carry
# the deadlines is not (since issue 20 every connection's deadlines share one
# call, connserver/_connection/timer.py TimerQueue).


def ignoredKeys() -> frozenset[str]:
    """
    Keys left out of every comparison, from ``GOLDEN_IGNORE`` (comma-separated,
    empty by default): a triage aid, e.g. ``GOLDEN_IGNORE=timers,log`` to see
    whether anything but the delayed-call counts and log lines differs.
    """
    return frozenset(k for k in os.environ.get("GOLDEN_IGNORE", "").split(",") if k)


def _without(value: Any, keys: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {
            k: bool(v) if k == "timers" else _without(v, keys)
            for k, v in value.items()
            if k not in keys
        }
    if isinstance(value, list):
        return [_without(v, keys) for v in value]
    return value


def difference(
    expected: Transcript | None, actual: Transcript, source: str = "golden file"
) -> str | None:
    """None if they are equal, else a readable account: the case, where, a diff."""
    caseId = actual.get("id", "?")
    if expected is None:
        return (
            f"{caseId}: no golden transcript in the {source} "
            "(a new case? record it: python -m tests.golden.record)"
        )
    ignored = ignoredKeys()
    expected = _without(expected, ignored)
    actual = _without(actual, ignored)
    if expected == actual:
        return None
    where = _firstDifference(expected, actual, "") or "?"
    expectedText = json.dumps(expected, indent=1, ensure_ascii=True).splitlines()
    actualText = json.dumps(actual, indent=1, ensure_ascii=True).splitlines()
    diff = "\n".join(
        difflib.unified_diff(
            expectedText,
            actualText,
            f"expected ({source})",
            "actual",
            n=6,
            lineterm="",
        )
    )
    return f"golden mismatch in case {caseId}, first at {where.lstrip('.')}:\n{diff}"
