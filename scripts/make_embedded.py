"""Build `veritrain/data/embedded/mnist_mini.npz`, the small real-MNIST subset shipped with veritrain.

    python scripts/make_embedded.py --mnist-dir /path/to/mnist   # the four canonical IDX files

What it holds: 5,000 training and 1,000 test images (uint8, 28x28) and their labels, drawn without
replacement with a fixed seed, stratified by class (500 / 100 per digit), kept in the canonical MNIST
order. Provenance is stored inside the file: `train_indices` / `test_indices` are the indices of the
chosen images in the canonical MNIST training / test files, `source` and `license` describe them.

README: MNIST by Yann LeCun and Corinna Cortes (http://yann.lecun.com/exdb/mnist/), licensed under
CC BY-SA 3.0 (https://creativecommons.org/licenses/by-sa/3.0/); mnist_mini.npz is a subset of it,
unchanged apart from the selection, and is distributed under the same license.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from veritrain.data.idx import read_idx  # noqa: E402

OUT = REPO / "veritrain" / "data" / "embedded" / "mnist_mini.npz"
LICENSE = (
    "MNIST (c) Yann LeCun and Corinna Cortes, http://yann.lecun.com/exdb/mnist/, "
    "CC BY-SA 3.0 (https://creativecommons.org/licenses/by-sa/3.0/); this file is an unmodified subset"
)


def stratified(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """`per_class` indices of every class, drawn without replacement, returned sorted (canonical order)."""
    picks = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in np.unique(labels)]
    return np.sort(np.concatenate(picks))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mnist-dir", type=Path, required=True, help="folder with the four MNIST IDX .gz files")
    ap.add_argument("--train-per-class", type=int, default=500)
    ap.add_argument("--test-per-class", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    arrays: dict[str, np.ndarray] = {}
    for split, prefix, k in (("train", "train", args.train_per_class), ("test", "t10k", args.test_per_class)):
        x = read_idx(args.mnist_dir / f"{prefix}-images-idx3-ubyte.gz")
        y = read_idx(args.mnist_dir / f"{prefix}-labels-idx1-ubyte.gz")
        idx = stratified(y, k, rng)
        arrays[f"x_{split}"] = x[idx].astype(np.uint8)
        arrays[f"y_{split}"] = y[idx].astype(np.uint8)
        arrays[f"{split}_indices"] = idx.astype(np.int32)
    arrays["source"] = np.array(
        f"MNIST canonical IDX files, stratified draw with numpy default_rng(seed={args.seed}); "
        f"*_indices index the canonical train/t10k files"
    )
    arrays["license"] = np.array(LICENSE)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB): "
        f"{len(arrays['y_train'])} train, {len(arrays['y_test'])} test images"
    )


if __name__ == "__main__":
    main()
