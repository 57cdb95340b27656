"""The kept results (`results/`) carry no paths of the machine that made them (issue 11: "no absolute paths")."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parent.parent / "results"
#: a quoted or comma-separated absolute path of a development machine
_ABSOLUTE = re.compile(r"""(^|["',\s=])/(work|tmp|root|home|Users)/""", re.MULTILINE)


@pytest.mark.skipif(not RESULTS.is_dir(), reason="no results/ folder next to the tests (an installed copy)")
def test_results_record_no_absolute_paths() -> None:
    bad = [
        str(p.relative_to(RESULTS))
        for p in sorted(RESULTS.rglob("*"))
        if p.suffix in {".json", ".jsonl", ".csv", ".md"} and _ABSOLUTE.search(p.read_text(errors="replace"))
    ]
    assert not bad, f"absolute paths in {bad}"
