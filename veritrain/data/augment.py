"""Training-time data augmentation on pixel batches (N, C, H, W) in [0, 1].

`crop-flip` is the usual CIFAR recipe: zero-pad 4 pixels (`pad`, `--augment-pad`), take a random crop of
the original size and flip horizontally with probability 1/2; `crop` does the crop only (digits must not be
mirrored). The paper does not say whether it augments (Section V-A); veritrain augments the colour data
sets by default because CIFAR Small over-fits without it (`results/README.md`). Augmentation draws from the
trainer's shuffling generator, so a resumed run replays the same crops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

AUGMENTATIONS = ("none", "crop", "crop-flip")


def random_crop(x: Tensor, pad: int, generator: torch.Generator | None = None) -> Tensor:
    """A random (H, W) crop of each zero-padded image: shifts of up to `pad` pixels in each direction."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (n, h, 1)
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (n, 1, w)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def random_flip(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = (torch.rand(x.shape[0], generator=generator) < 0.5).to(x.device).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(3), x)


def augment(x: Tensor, kind: str, generator: torch.Generator | None = None, pad: int = 4) -> Tensor:
    """Apply augmentation `kind` (one of AUGMENTATIONS) to a batch; a new tensor, x is not modified."""
    if kind not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {kind!r}; choose one of {', '.join(AUGMENTATIONS)}")
    if kind == "none":
        return x
    if x.dim() != 4:
        raise ValueError(f"augmentation {kind!r} needs image batches (N, C, H, W), got shape {tuple(x.shape)}")
    out = random_crop(x, pad, generator)
    return random_flip(out, generator) if kind == "crop-flip" else out


__all__ = ["AUGMENTATIONS", "augment", "random_crop", "random_flip"]
