"""Where data sets live (data root) and where decoded arrays are cached (cache dir)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = Path("~/.cache/veritrain")


def get_data_root(path: str | os.PathLike | None = None) -> Path:
    """The data root: `path` if given, else `$VERITRAIN_DATA`, else `~/.cache/veritrain`."""
    if path is None or str(path) == "":
        path = os.environ.get("VERITRAIN_DATA") or DEFAULT_HOME
    return Path(path).expanduser()


def get_cache_dir(path: str | os.PathLike | None = None) -> Path:
    """Writable cache for decoded arrays: `path`, else `$VERITRAIN_CACHE`, else `~/.cache/veritrain`.

    Decoded image arrays go under `<cache>/decoded/`; nothing is ever written next to the sources,
    so the data root may be read-only.
    """
    if path is None or str(path) == "":
        path = os.environ.get("VERITRAIN_CACHE") or DEFAULT_HOME
    return Path(path).expanduser()
