"""Cache of decoded uint8 arrays, keyed by where they came from (path, size, mtime of the sources).

Decoding tens of thousands of JPEGs takes a while; the second load reads one uncompressed `.npz`.
A cache that cannot be written only costs speed (a warning); a corrupt one is rebuilt.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from veritrain.data.paths import get_cache_dir

CACHE_VERSION = 1


def file_signature(path: Path) -> tuple[str, int, int]:
    """(resolved path, size, mtime_ns): changes whenever the file is replaced or edited."""
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def tree_signature(files: Iterable[Path]) -> list[tuple[str, int, int]]:
    return [file_signature(p) for p in files]


def cache_key(*parts: object) -> str:
    return hashlib.sha1(repr((CACHE_VERSION, parts)).encode()).hexdigest()[:16]


def cache_path(tag: str, key: str, cache_dir: str | os.PathLike | None = None) -> Path:
    return get_cache_dir(cache_dir) / "decoded" / f"{tag}-{key}.npz"


def load_cached(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays stored at `path`, or None when it is absent or unreadable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:  # a half-written or corrupt cache: rebuild it
        warnings.warn(f"ignoring unreadable cache {path}: {e}", stacklevel=3)
        return None


def save_cached(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically (temporary file then rename); warn and go on when the cache dir is not writable."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, allow_pickle=False, **arrays)  # plain numeric arrays, read back without pickle
        os.replace(tmp, path)
    except OSError as e:
        warnings.warn(f"could not write cache {path} ({e}); set VERITRAIN_CACHE to a writable folder", stacklevel=3)
    finally:
        tmp.unlink(missing_ok=True)


def cached(tag: str, key: str, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Load `tag-key` from the cache, or `build()` it and store it."""
    path = cache_path(tag, key)
    arrays = load_cached(path)
    if arrays is None:
        arrays = build()
        save_cached(path, arrays)
    return arrays
