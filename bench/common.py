"""What the benchmarks share: the paper's MNIST Small and MNIST images (real when a data root has them)."""

from __future__ import annotations

import sys

import torch
from torch import nn

from veritrain.data import DataError, load_dataset
from veritrain.models import build_model


def mnist_small(activation: str = "relu") -> nn.Module:
    """MNIST Small (Table II): Conv16 4x4/2 - Conv32 4x4/2 - FC100 - FC10."""
    return build_model("mnist-small", activation=activation)


def mnist_images(
    root: str | None, split: str, n: int, seed: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """n MNIST images of `split` from the data root (the first n, or a seeded random n), else random pixels;
    the third value says which, for the benchmark's header."""
    if root:
        try:
            ds = load_dataset("mnist", split, root=root, download=False)
            x, y = ds.tensors
            idx = (
                torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
                if seed is not None
                else torch.arange(min(n, len(x)))
            )
            return x[idx], y[idx], f"real MNIST {split} ({root})"
        except DataError as e:
            print(f"note: MNIST not loaded from {root} ({e}); using random pixels", file=sys.stderr)
    g = torch.Generator().manual_seed(0 if seed is None else seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g), "random pixels"
