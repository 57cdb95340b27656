"""Optimisers, learning-rate schedule and eps ramp of Section V-A."""
from __future__ import annotations

import torch
from torch import nn

from veritrain.training.config import TrainConfig

OPTIMIZERS = ("adam", "sgd")


def eps_at_epoch(epoch: int, eps: float, eps_start: float | None, ramp_epochs: int) -> float:
    """The eps of a 0-based epoch: linear from `eps_start` (epoch 0) to `eps` (epoch ramp_epochs - 1), then eps.

    Section V-A: eps ramps from 0.01 (MNIST) / 0.001 (CIFAR) to its final value over the first 10 epochs.
    A start above the final eps is clipped to eps; `ramp_epochs <= 1` means no ramp.
    """
    if eps_start is None or ramp_epochs <= 1 or epoch >= ramp_epochs - 1:
        return float(eps)
    start = min(float(eps_start), float(eps))
    t = max(epoch, 0) / (ramp_epochs - 1)
    return start + (float(eps) - start) * t


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam (MNIST-like, lr 1e-3) or SGD with momentum (CIFAR, lr 0.05); `cfg` must be resolved."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.StepLR:
    """lr x lr_gamma every lr_step epochs (paper: x0.6 every 5 epochs); stepped once per epoch."""
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
