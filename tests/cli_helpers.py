"""Helpers of the CLI tests."""

from __future__ import annotations

from pathlib import Path

from veritrain.cli import main


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    """`veritrain ARGV` in this process: (exit status, stdout, stderr)."""
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of a folder by name, to check that a failed command changed nothing."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
