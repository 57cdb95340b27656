"""Helpers of the CLI and training-run tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from veritrain.cli import main


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    """`veritrain ARGV` in this process: (exit status, stdout, stderr)."""
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


#: metrics.jsonl / summary fields that depend on the machine's speed and load, not on what was computed
VOLATILE = {"batch_time", "epoch_time", "cpu_time", "peak_mem_mb", "monitor_time"}


def stable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows without their VOLATILE fields: equal for two runs that computed the same."""
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of a folder by name, to check that a failed command changed nothing."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
