"""Clean accuracy (ACC, Section II)."""

from __future__ import annotations

import torch
from torch import nn

from veritrain.attacks.base import eval_mode


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); cpu for a model without either."""
    p: torch.Tensor | None = next(iter(model.parameters()), None)
    if p is None:
        p = next(iter(model.buffers()), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Predicted labels of `x` (on x's device), evaluated in batches on the model's device."""
    device = model_device(model)
    with eval_mode(model):
        out = [model(x[i : i + batch_size].to(device)).argmax(1).to(x.device) for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long, device=x.device)


def batch_accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Percent of the rows of `logits` (B, K) whose largest entry is the label: a training step's accuracy."""
    return (logits.detach().argmax(1) == y).float().mean().item() * 100.0


def correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Bool per sample: is it classified correctly?"""
    return predict(model, x, batch_size) == y.to(x.device)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """ACC in percent: 100 * (number correct) / n, computed exactly (96 of 100 gives 96.0, as ERA and VRA do)."""
    if len(x) == 0:
        raise ValueError("accuracy of an empty set is undefined; pass at least one sample")
    return percent(correct(model, x, y, batch_size))


def percent(mask: torch.Tensor) -> float:
    """100 * (number of True) / n as an exact count ratio (no float32 mean): the one rule for ACC, ERA, VRA."""
    return 100.0 * int(mask.sum()) / mask.numel()
