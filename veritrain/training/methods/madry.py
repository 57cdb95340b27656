"""Madry et al. (2018): PGD adversarial training, the paper's first baseline (Sections II-B, V-B).

min_theta E[ max_{x' in B_eps(x) ∩ [0,1]} L(f(x'), y) ], the inner max approximated by PGD:
`cfg.pgd_steps` (40) steps of size `cfg.pgd_step_size` (0.01) from a random start, eps = the
ramped eps of the epoch. Mode: the attack runs the model in eval mode (`pgd_attack` switches and
restores every module's mode), the training loss in train mode; for the paper's BN-free networks
the two are the same function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from veritrain.attacks.base import random_in_ball
from veritrain.attacks.pgd import pgd_attack
from veritrain.evaluation.accuracy import batch_accuracy
from veritrain.training.methods.base import METHODS, Objective, StepContext
from veritrain.validation import LINF


def random_start(x: Tensor, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    """A uniform random point of B_eps(x) ∩ [0, 1], drawn with `generator` on its own device."""
    dev = generator.device if generator is not None else x.device
    return random_in_ball(x.detach().to(dev), eps, norm, generator).to(x.device)


def madry_examples(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    steps: int,
    step_size: float,
    norm: str = LINF,
    generator: torch.Generator | None = None,
) -> Tensor:
    """PGD examples for training (detached, inside the ball and [0, 1]); random start from `generator`."""
    if eps <= 0:
        return x.detach()
    start = random_start(x, eps, norm, generator)
    return pgd_attack(model, x, y, eps, steps=steps, step_size=step_size, norm=norm, random_start=False, x_init=start)


@METHODS.register("madry")
class Madry(Objective):
    """Cross-entropy on PGD examples (Madry et al.; the paper's setting: 40 steps, step 0.01, random start)."""

    name = "madry"
    sound = True

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        cfg = self.cfg
        x_adv = madry_examples(model, x, y, float(ctx.eps), cfg.pgd_steps, cfg.pgd_step_size, cfg.norm, ctx.generator)
        logits = model(x_adv)
        loss = F.cross_entropy(logits, y)
        with torch.no_grad():
            clean = model(x).argmax(1)
        return loss, {
            "acc": (clean == y).float().mean().item() * 100.0,
            "adv_acc": batch_accuracy(logits, y),
        }
