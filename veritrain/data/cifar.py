"""CIFAR-10's canonical python release (`cifar-10-batches-py/`, pickled batches), as torchvision stores it.

The pickles are read with a restricted unpickler that only accepts numpy arrays, lists, dicts and
strings, so a tampered file cannot run code.
"""

from __future__ import annotations

import importlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from veritrain.data.cache import cache_key, cached, file_signature
from veritrain.data.errors import DataError

BATCHES_DIR = "cifar-10-batches-py"
TARBALL = "cifar-10-python.tar.gz"
SPLIT_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core."):  # numpy 2 moved numpy.core to numpy._core
            try:
                return getattr(importlib.import_module("numpy._core." + module[11:]), name)
            except (ImportError, AttributeError):
                pass
        return getattr(importlib.import_module(module), name)


def _unpickle_batch(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch -> (uint8 (n, 32, 32, 3), int64 (n,))."""
    try:
        d = _SafeUnpickler(io.BytesIO(data), encoding="latin1").load()
        d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
        x = np.asarray(d["data"])
        y = np.asarray(d["labels"], dtype=np.int64)
    except Exception as e:
        raise DataError(
            f"cannot read CIFAR-10 batch {name}: {e} (corrupt file? delete it and download again)"
        ) from None
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072 or len(y) != len(x):
        raise DataError(
            f"CIFAR-10 batch {name} has data {x.dtype}{x.shape} and {len(y)} labels; "
            f"expected uint8 (n, 3072) and n labels"
        )
    return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), y


def _join(parts: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    return {"x": np.concatenate([p[0] for p in parts]), "y": np.concatenate([p[1] for p in parts])}


def load_batches_dir(folder: Path, split: str) -> dict[str, np.ndarray]:
    """`folder` = `.../cifar-10-batches-py`; returns {"x": uint8 (N, 32, 32, 3), "y": int64}."""
    parts = []
    for name in SPLIT_FILES[split]:
        path = folder / name
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DataError(f"cannot read {path}: {e}") from None
        parts.append(_unpickle_batch(data, str(path)))
    return _join(parts)


def missing_batches(folder: Path, split: str) -> list[str]:
    return [n for n in SPLIT_FILES[split] if not (folder / n).is_file()]


def load_tarball(tar_path: Path, split: str) -> dict[str, np.ndarray]:
    """The batches read straight from `cifar-10-python.tar.gz` (no extraction); cached."""
    wanted = {f"{BATCHES_DIR}/{n}": n for n in SPLIT_FILES[split]}

    def build() -> dict[str, np.ndarray]:
        got: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        try:
            with tarfile.open(tar_path, "r|*") as tar:
                for m in tar:
                    name = m.name[2:] if m.name.startswith("./") else m.name
                    if m.isfile() and name in wanted:
                        f = tar.extractfile(m)
                        got[wanted[name]] = _unpickle_batch(f.read() if f else b"", f"{tar_path}:{name}")
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"cannot read {tar_path}: {e} (corrupt or truncated archive; delete it)") from None
        missing = [n for n in SPLIT_FILES[split] if n not in got]
        if missing:
            raise DataError(f"{tar_path} lacks {', '.join(BATCHES_DIR + '/' + n for n in missing)}")
        return _join([got[n] for n in SPLIT_FILES[split]])

    return cached(f"cifar10-python-{split}", cache_key("cifar-python-tar", file_signature(tar_path), split), build)
