"""MTL-IBP (De Palma et al. 2024): the expressive loss (1 - a) * L_adv + a * L_IBP.

L_adv is the cross-entropy at a PGD point of B_eps(x) ∩ [0, 1] (`--adv-steps`, 8), L_IBP the IBP verified loss
over the same ball; `--mtl-alpha` a in [0, 1] moves the loss from adversarial (0) to verified (1) training.
As in `ibp`, kappa mixes the clean cross-entropy in during the eps ramp (default 1 -> 0).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from veritrain.training.config import TrainConfig
from veritrain.training.methods.base import METHODS, StepContext
from veritrain.training.methods.ibp import IBP, check_unit
from veritrain.training.methods.sabr import check_adv_steps, training_attack


@METHODS.register("mtl-ibp")
class MTLIBP(IBP):
    """(1 - a) * CE(f(x_adv), y) + a * CE(-lower_IBP, y)."""

    name = "mtl-ibp"
    default_kappa = (1.0, 0.0)

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__(cfg)
        self.a = check_unit("mtl_alpha", cfg.mtl_alpha)
        self.adv_steps = check_adv_steps(cfg.adv_steps)

    def robust_loss(self, model: nn.Module, x: Tensor, y: Tensor, lower: Tensor, ctx: StepContext) -> Tensor:
        verified = F.cross_entropy(-lower, y)
        if self.a >= 1.0:
            return verified
        x_adv = training_attack(model, x, y, float(ctx.eps), self.adv_steps, self.cfg.norm, ctx)
        return (1.0 - self.a) * F.cross_entropy(model(x_adv), y) + self.a * verified
