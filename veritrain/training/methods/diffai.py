"""DiffAI (Mirman et al. 2018) trained with the box domain, the paper's DiffAI baseline (Section V-B).

Loss: (1 - kappa) * CE(f(x), y) + kappa * L(d_box(x), y), where L is the verified robust loss
(Eqns. 6-7) of the `interval` domain over B_eps(x) ∩ [0, 1] with the ramped eps. The paper trains
DiffAI "with box domains"; `cfg.diffai_kappa` = 1.0 (default) is that pure box loss, a smaller
kappa mixes in the clean loss (later DiffAI versions mix losses). kappa itself ramps linearly from 0 to
its value over the eps-ramp epochs (Gowal et al.'s IBP schedule): box training of a freshly initialised
network at eps = 0.01 collapses to a constant classifier (measured: MNIST Small, 10 epochs, ACC 11.35%,
loss ln 10), because the initial boxes are so loose that a constant output is the easiest way to shrink the
verified loss; learning the clean task first avoids it. `--eps-ramp-epochs 0` disables the ramp. Testing is not done with the
training domain: the paper tests DiffAI with its strongest domain (hybrid zonotope); here VRA uses
the evaluation domains (`--eval-domains`), which are sound and at least as tight as the box.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from veritrain.bounds import Ball, margin_lower
from veritrain.training.config import TrainConfig
from veritrain.training.methods.base import METHODS, Objective, StepContext


def verified_metrics(lower: Tensor, y: Tensor) -> dict[str, float]:
    """Training-time share (%) of samples whose margin lower bounds (B, K) are all positive."""
    lo = lower.detach().scatter(1, y.view(-1, 1), float("inf"))
    return {"verified": (lo > 0).all(1).float().mean().item() * 100.0}


@METHODS.register("diffai")
class DiffAI(Objective):
    """Box-domain (interval) verified loss, optionally mixed with the clean CE by kappa."""

    name = "diffai"
    sound = True
    domain = "interval"

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__(cfg)
        self.kappa = float(cfg.diffai_kappa)
        if not 0.0 <= self.kappa <= 1.0:
            raise ValueError(f"--diffai-kappa must be in [0, 1] (weight of the box loss), got {cfg.diffai_kappa}")

    def kappa_at(self, ctx: StepContext) -> float:
        """kappa ramped linearly over the first eps-ramp epochs (per step), then constant."""
        ramp_steps = self.cfg.eps_ramp_epochs * ctx.num_batches
        return self.kappa if ramp_steps <= 0 else self.kappa * min(1.0, (ctx.step + 1) / ramp_steps)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        lower = margin_lower(model, Ball(x, float(ctx.eps), self.cfg.norm), y, self.domain)
        robust = F.cross_entropy(-lower, y)
        kappa = self.kappa_at(ctx)
        metrics = {"robust_loss": robust.item(), "kappa": kappa, **verified_metrics(lower, y)}
        if kappa < 1.0:
            logits = model(x)
            clean = F.cross_entropy(logits, y)
            loss = (1.0 - kappa) * clean + kappa * robust
            metrics["acc"] = (logits.detach().argmax(1) == y).float().mean().item() * 100.0
        else:
            loss = robust
            with torch.no_grad():
                metrics["acc"] = (model(x).argmax(1) == y).float().mean().item() * 100.0
        return loss, metrics
