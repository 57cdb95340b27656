"""Optimisers, learning-rate schedule and eps ramp of Section V-A."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from dataclasses import dataclass

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


EPS_SCHEDULES = ("epoch", "linear", "smooth")

#: Shi et al. (2021)'s smoothed ramp: exponential growth over the first quarter, then linear (auto_LiRPA's
#: SmoothedScheduler, mid point 0.25, exponent 4); the joint is where both pieces have the same slope.
_SMOOTH_MID, _SMOOTH_POWER = 0.25, 4.0
_SMOOTH_AT_MID = _SMOOTH_MID / (_SMOOTH_POWER * (1.0 - _SMOOTH_MID) + _SMOOTH_MID)


def smooth_ramp(p: float) -> float:
    """Shi et al.'s eps shape on the ramp progress p in [0, 1]: (p/m)^4 scaled, then linear; 0 -> 0, 1 -> 1."""
    p = min(max(p, 0.0), 1.0)
    if p <= _SMOOTH_MID:
        return _SMOOTH_AT_MID * (p / _SMOOTH_MID) ** _SMOOTH_POWER
    return _SMOOTH_AT_MID + (1.0 - _SMOOTH_AT_MID) * (p - _SMOOTH_MID) / (1.0 - _SMOOTH_MID)


@dataclass(frozen=True)
class StepSchedule:
    """eps and the ramp progress of one optimisation step.

    `clean_epochs` epochs at eps = 0 come first; then the ramp of `ramp_epochs` epochs to `eps` (the training
    eps): `epoch` is the paper's (Section V-A: linear from eps_start, one value per epoch; `eps_at_epoch`),
    `linear` and `smooth` move at every step from 0 (Gowal et al. 2018; Shi et al. 2021). `progress(step)` is
    the share of the ramp done after this step, in [0, 1], per step for every schedule: kappa and beta ramps
    (IBP, CROWN-IBP, DiffAI) follow it.
    """

    eps: float
    eps_start: float | None
    ramp_epochs: int
    num_batches: int
    schedule: str = "epoch"
    clean_epochs: int = 0

    def progress(self, step: int) -> float:
        ramp_steps = self.ramp_epochs * self.num_batches
        done = step + 1 - self.clean_epochs * self.num_batches
        if ramp_steps <= 0:
            return 1.0 if done > 0 else 0.0
        return min(1.0, max(0.0, done / ramp_steps))

    def eps_at(self, epoch: int, step: int) -> float:
        if epoch < self.clean_epochs:
            return 0.0
        if self.schedule == "epoch":
            return eps_at_epoch(epoch - self.clean_epochs, self.eps, self.eps_start, self.ramp_epochs)
        if self.ramp_epochs <= 0:
            return float(self.eps)
        p = (step - self.clean_epochs * self.num_batches) / (self.ramp_epochs * self.num_batches)
        shape = smooth_ramp(p) if self.schedule == "smooth" else min(max(p, 0.0), 1.0)
        return float(self.eps) * shape


def step_schedule(cfg: TrainConfig, num_batches: int) -> StepSchedule:
    """The eps schedule of a run (`cfg` resolved): ramps to `eps_train` (default: `eps`)."""
    return StepSchedule(
        cfg.eps if cfg.eps_train is None else cfg.eps_train,
        cfg.eps_start,
        cfg.eps_ramp_epochs,
        num_batches,
        cfg.eps_schedule,
        cfg.clean_epochs,
    )


#: the options `fit_schedule` may change (a resumed `--fit-budget` run takes them from its checkpoint)
FITTED = ("epochs", "eps_ramp_epochs", "lr_step", "lr_milestones", "warmup_epochs")


def fit_schedule(cfg: TrainConfig, epochs: int, done: int) -> TrainConfig:
    """`cfg` with `epochs` epochs and its epoch-valued schedule scaled by epochs / cfg.epochs (`--fit-budget`),
    `done` epochs being trained already: what lies ahead of them moves, what is behind stays. The eps ramp
    keeps its start (`clean_epochs`) and ends no earlier than after the next epoch; `lr_milestones` under the
    new epochs are kept, `lr_step` (without milestones, if no decay happened yet) and `warmup_epochs` (if not
    yet over) are scaled."""
    if epochs < 1 or done < 0:
        raise ValueError(f"fit_schedule needs epochs >= 1 and done >= 0, got {epochs} and {done}")
    r = epochs / cfg.epochs

    def ahead(e: int) -> int:
        return e if e <= done else max(done + 1, round(e * r))

    values: dict[str, Any] = {"epochs": epochs}
    if cfg.clean_epochs + cfg.eps_ramp_epochs > done:
        values["eps_ramp_epochs"] = max(done + 1 - cfg.clean_epochs, round(cfg.eps_ramp_epochs * r), 1)
    stones = lr_milestones(cfg.lr_milestones)
    if stones:
        kept = sorted({ahead(m) for m in stones if ahead(m) < epochs})
        values["lr_milestones"] = ",".join(map(str, kept)) or None
        if not kept:
            values["lr_step"] = epochs + 1  # no decay left
    elif cfg.lr_step > cfg.epochs:  # no decay planned
        values["lr_step"] = epochs + 1
    elif cfg.lr_step > done:
        values["lr_step"] = max(1, round(cfg.lr_step * r))
    if cfg.warmup_epochs > done:
        values["warmup_epochs"] = ahead(cfg.warmup_epochs)
    return dataclasses.replace(cfg, **values)


#: `budget_epochs` fits at most this many times the planned epochs (a guard against a mismeasured step cost)
MAX_FIT_FACTOR = 20


def budget_epochs(cfg: TrainConfig, done: int, left: float, ramp_cost: float, post_cost: float) -> int:
    """The most epochs (at least `done`) whose `left` CPU seconds pay for the epochs after the `done` ones, when the
    schedule is fitted to them (`fit_schedule`): an epoch of the fitted eps ramp costs `ramp_cost`, a later one
    `post_cost` (`--fit-budget`; e.g. CROWN-IBP's backward pass stops with its beta ramp, a tenth of the cost).
    At most `MAX_FIT_FACTOR` x the planned epochs."""
    cheapest = min(ramp_cost, post_cost)
    if cheapest <= 0:
        raise ValueError(f"budget_epochs needs positive epoch costs, got {ramp_cost} and {post_cost}")
    best = done
    most = min(done + int(max(left, 0.0) // cheapest), MAX_FIT_FACTOR * max(cfg.epochs, done + 1))
    for epochs in range(done + 1, most + 1):
        fitted = fit_schedule(cfg, epochs, done)
        in_ramp = max(0, min(fitted.ramp_end, epochs) - done)
        if in_ramp * ramp_cost + (epochs - done - in_ramp) * post_cost > left:
            break
        best = epochs
    return best


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam (MNIST-like, lr 1e-3) or SGD with momentum (CIFAR, lr 0.05); `cfg` must be resolved."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.lr is None:
        raise ValueError("make_optimizer needs a resolved configuration (cfg.resolved() sets the data set's lr)")
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")


def lr_milestones(text: str | None) -> list[int]:
    """The epochs of `--lr-milestones` ('50,60'), increasing and positive; ValueError otherwise."""
    if not text:
        return []
    try:
        epochs = [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--lr-milestones expects comma-separated epochs such as 50,60, got {text!r}") from None
    if any(e < 1 for e in epochs) or epochs != sorted(set(epochs)):
        raise ValueError(f"--lr-milestones must be increasing positive epochs, got {text!r}")
    return epochs


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """lr x lr_gamma every lr_step epochs (paper: x0.6 every 5 epochs), or at each of `lr_milestones`
    (certified training's usual schedule); stepped once per epoch."""
    milestones = lr_milestones(cfg.lr_milestones)
    if milestones:
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=cfg.lr_gamma)
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
