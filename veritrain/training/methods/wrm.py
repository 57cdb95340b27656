"""Sinha et al. (2018): the Wasserstein robust method (WRM), a distributional-robustness baseline (Sections II-C, V-B).

The Wasserstein ball is relaxed with a Lagrangian penalty (Section II-C): the inner problem is
    phi_gamma(x) = max_{x'} L(f(x'), y) - gamma * ||x' - x||_2^2,
solved by gradient ascent from x, then the network is trained with CE on x'. As in Sinha et al.'s
reference code, the ascent runs on phi / (2 gamma) (their `eps = 0.5 / gamma`) with step sizes
1/sqrt(t+1), t = 0..wrm_steps (one plain gradient step from x, then `wrm_steps` = 15 more), no
projection. Choices, documented:

- gamma defaults to 0.385 = 0.5 / 1.3, the MNIST setting of Sinha et al.'s reference code (its
  `eps = 1.3` is 0.5 / gamma). The MixTrain paper does not state its gamma; set `--gamma`.
  WRM ignores the eps ramp: its robustness radius is set by gamma, not eps.
- no clipping to [0, 1] by default (as the reference; the models carry their own normalisation,
  so any x' is a valid input); `cfg.wrm_clip` clips each iterate to [0, 1].
- the ascent runs with the model in eval mode (modes restored after), the loss in train mode.
- WRM needs a smooth loss (Sinha et al.'s guarantee assumes smoothness): use `--activation elu`.
  Then no sound bounds exist (the bound engine handles ReLU networks only), so `sound` is False
  and VRA is reported as not applicable. With ReLU the method still runs (a warning is issued,
  as the inner problem is no longer smooth) and VRA stays meaningful.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from veritrain.attacks.base import eval_mode
from veritrain.evaluation.accuracy import batch_accuracy
from veritrain.training.config import TrainConfig
from veritrain.training.methods.base import METHODS, Objective, StepContext

#: gamma of Sinha et al.'s reference MNIST run (eps = 0.5 / gamma = 1.3)
DEFAULT_GAMMA = 0.5 / 1.3


def penalised_objective(model: nn.Module, x_adv: Tensor, x: Tensor, y: Tensor, gamma: float) -> Tensor:
    """Per-sample L(f(x'), y) - gamma ||x' - x||_2^2 (the WRM inner objective), shape (B,)."""
    ce = F.cross_entropy(model(x_adv), y, reduction="none")
    return ce - gamma * (x_adv - x).flatten(1).pow(2).sum(1)


def wrm_examples(
    model: nn.Module, x: Tensor, y: Tensor, gamma: float = DEFAULT_GAMMA, steps: int = 15, clip: bool = False
) -> Tensor:
    """Gradient ascent on phi/(2 gamma) from x with steps 1/sqrt(t+1), t = 0..steps; detached x'."""
    if gamma <= 0:
        raise ValueError(f"WRM needs gamma > 0 (the L2 penalty weight), got {gamma}")
    x = x.detach()
    x_adv = x.clone()
    with eval_mode(model), torch.enable_grad():
        for t in range(steps + 1):
            x_adv.requires_grad_(True)
            obj = penalised_objective(model, x_adv, x, y, gamma).sum() / (2.0 * gamma)
            (g,) = torch.autograd.grad(obj, x_adv)
            x_adv = x_adv.detach() + g / math.sqrt(t + 1)
            if clip:
                x_adv = x_adv.clamp(0.0, 1.0)
    return x_adv.detach()


@METHODS.register("wrm")
class WRM(Objective):
    """CE on WRM examples (Sinha et al.); `sound` only for ReLU networks (see the module docstring)."""

    name = "wrm"
    sound = False

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__(cfg)
        self.gamma = DEFAULT_GAMMA if cfg.gamma is None else float(cfg.gamma)
        if not self.gamma > 0:
            raise ValueError(f"--gamma must be > 0 for WRM (the L2 penalty weight), got {cfg.gamma}")
        if cfg.wrm_steps < 0:
            raise ValueError(f"--wrm-steps must be >= 0, got {cfg.wrm_steps}")
        self.sound = cfg.activation == "relu"
        if cfg.activation == "relu":
            warnings.warn(
                "WRM (Sinha et al.) assumes a smooth network; train it with --activation elu "
                "(ReLU runs, but the inner maximisation is not smooth)",
                stacklevel=2,
            )

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        x_adv = wrm_examples(model, x, y, self.gamma, self.cfg.wrm_steps, self.cfg.wrm_clip)
        logits = model(x_adv)
        loss = F.cross_entropy(logits, y)
        with torch.no_grad():
            clean = model(x).argmax(1)
            dist = (x_adv - x).flatten(1).norm(dim=1).mean().item()
        return loss, {
            "acc": (clean == y).float().mean().item() * 100.0,
            "adv_acc": batch_accuracy(logits, y),
            "wrm_l2": dist,
        }
