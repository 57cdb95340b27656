"""What produced a result: veritrain's version, its git commit (when run from a checkout) and torch's.

Recorded in every run's config.json and summary.json and in evaluations, so a number can be traced to code.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path
from typing import Any


@functools.lru_cache(maxsize=1)
def git_commit() -> dict[str, Any] | None:
    """{"commit": sha, "dirty": bool} of the checkout veritrain runs from, or None (installed, no git)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", "veritrain"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": sha, "dirty": bool(status.strip())}


def versions() -> dict[str, Any]:
    """{"veritrain", "git_commit", "git_dirty", "torch", "python"} (git fields None outside a checkout)."""
    import torch

    from veritrain import __version__

    git = git_commit()
    return {
        "veritrain": __version__,
        "git_commit": git["commit"] if git else None,
        "git_dirty": git["dirty"] if git else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


__all__ = ["git_commit", "versions"]
