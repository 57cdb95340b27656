"""SABR (Müller et al. 2023): IBP on a small box around an adversarial point.

The centre x* is found by PGD inside B_{(1 - lambda) eps}(x) ∩ [0, 1]; the robust loss is the IBP verified loss
over B_{lambda eps}(x*) ∩ [0, 1], a subset of B_eps(x) ∩ [0, 1]. The small box propagates with far less
over-approximation than the whole ball, so the loss is closer to the true worst case: not an upper bound of it
(SABR is certified-training by design, not a sound training loss); VRA is always measured by sound domains.
`--sabr-lambda` (0.4; Müller et al. use 0.4 at MNIST 0.1, 0.6 at 0.3, 0.1 at CIFAR-10 2/255), `--adv-steps` (8).
"""

from __future__ import annotations

from torch import Tensor, nn

from veritrain.bounds import Ball
from veritrain.training.config import TrainConfig
from veritrain.training.methods.base import METHODS, StepContext
from veritrain.training.methods.ibp import IBP, check_unit, interval_margin_lower
from veritrain.training.methods.madry import madry_examples
from veritrain.validation import LINF


def training_attack(
    model: nn.Module, x: Tensor, y: Tensor, radius: float, steps: int, norm: str, ctx: StepContext
) -> Tensor:
    """PGD on the cross-entropy in B_radius(x) ∩ [0, 1], step 2.5 radius / steps, random start (detached)."""
    return madry_examples(model, x, y, radius, steps, 2.5 * radius / max(steps, 1), norm, ctx.generator)


def check_adv_steps(steps: int) -> int:
    """The training attack's step count (`--adv-steps`), checked: 0 (no attack, the clean point) or more."""
    if steps < 0:
        raise ValueError(f"--adv-steps must be >= 0, got {steps}")
    return int(steps)


@METHODS.register("sabr")
class SABR(IBP):
    """IBP loss on the box of radius lambda * eps around a PGD point of the shrunk ball."""

    name = "sabr"
    default_kappa = (1.0, 0.0)

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__(cfg)
        self.lam = check_unit("sabr_lambda", cfg.sabr_lambda)
        self.adv_steps = check_adv_steps(cfg.adv_steps)
        if cfg.norm != LINF:
            raise ValueError("sabr propagates boxes: it supports --norm linf only")

    def robust_lower(
        self, model: nn.Module, x: Tensor, y: Tensor, logits: Tensor, ctx: StepContext
    ) -> tuple[Tensor, list[tuple[Tensor, Tensor]], Ball]:
        eps = float(ctx.eps)
        centre = training_attack(model, x, y, (1.0 - self.lam) * eps, self.adv_steps, LINF, ctx)
        ball = Ball(centre, self.lam * eps)
        lower, pre = interval_margin_lower(model, ball, y, logits.shape[1])
        return lower, pre, ball
