"""Regular training: cross-entropy on clean inputs (Eqn. 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from veritrain.evaluation.accuracy import batch_accuracy
from veritrain.training.methods.base import METHODS, Objective, StepContext


@METHODS.register("regular")
class Regular(Objective):
    """min_theta E[L(f(x), y)] with L the cross-entropy (Eqn. 1); no robustness term."""

    name = "regular"
    sound = True

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext
    ) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        acc = batch_accuracy(logits, y)
        return loss, {"acc": acc}
