"""CROWN-IBP training (Zhang et al. 2020): the robust loss on a mix of CROWN-IBP and IBP bounds.

lower = beta * lower_CROWN-IBP + (1 - beta) * lower_IBP of the margins z_y - z_j over B_eps(x) ∩ [0, 1];
beta ramps from `beta_start` (1) to `beta_end` (0) over the eps ramp, kappa (the clean weight) as in `ibp`.
CROWN-IBP bounds the specification by one backward linear pass with interval bounds for the hidden
layers (`veritrain.bounds.crown.CrownIBP`); ours is intersected with the IBP bound, so it is never looser.
Once beta reaches 0 the step is an IBP step: the expensive backward pass is only paid during the ramp.
"""

from __future__ import annotations

from torch import Tensor, nn

from veritrain.bounds import Ball, margin_lower
from veritrain.bounds.crown import CrownIBP
from veritrain.training.config import TrainConfig
from veritrain.training.methods.base import METHODS, StepContext
from veritrain.training.methods.ibp import IBP, check_unit, ramp


def crown_ibp_mix(model: nn.Module, ball: Ball, y: Tensor, ibp_lower: Tensor, beta: float, domain: CrownIBP) -> Tensor:
    """beta * CROWN-IBP + (1 - beta) * IBP lower bounds (B, K); the IBP bounds alone when beta is 0."""
    if beta <= 0.0:
        return ibp_lower
    crown = margin_lower(model, ball, y, domain)
    return crown if beta >= 1.0 else beta * crown + (1.0 - beta) * ibp_lower


@METHODS.register("crown-ibp")
class CrownIBPTraining(IBP):
    """Zhang et al. (2020): kappa * CE + (1 - kappa) * CE(-(beta * CROWN-IBP + (1 - beta) * IBP))."""

    name = "crown-ibp"
    training_domain: str | None = "crown-ibp"

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__(cfg)
        self.beta_start = check_unit("beta_start", cfg.beta_start)
        self.beta_end = check_unit("beta_end", cfg.beta_end)
        self.domain = CrownIBP()

    def beta_at(self, ctx: StepContext) -> float:
        return ramp(self.beta_start, self.beta_end, self.progress(ctx))

    def robust_lower(
        self, model: nn.Module, x: Tensor, y: Tensor, logits: Tensor, ctx: StepContext
    ) -> tuple[Tensor, list[tuple[Tensor, Tensor]], Ball]:
        lower, pre, ball = super().robust_lower(model, x, y, logits, ctx)
        return crown_ibp_mix(model, ball, y, lower, self.beta_at(ctx), self.domain), pre, ball
