"""Carlini-Wagner L2 attack (minimal perturbation), for the L2 robustness curves of Figure 7a.

minimise ||x' - x||_2^2 + c * max(z_y - max_{j != y} z_j + kappa, 0) over w, x' = (tanh(w) + 1) / 2
(so x' stays in [0, 1]), with Adam (inlined; elementwise, so samples do not interact), a per-sample
binary search over c and early abort (Carlini & Wagner 2017).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from veritrain.attacks.base import ATTACKS, Attack, AttackResult, margin, robust_curve
from veritrain.validation import L2

__all__ = ["CWL2", "robust_curve"]


@ATTACKS.register("cw-l2")
class CWL2(Attack):
    """Returns per sample the smallest adversarial perturbation found and its L2 norm (`distance`,
    inf where none was found, 0 where x is already misclassified).

    eps=None: minimal-perturbation attack; success = an adversarial example was found and x_adv is it.
    eps given: success = found with distance <= eps; elsewhere x_adv = x (so x_adv is always in the
    ball), while `distance` still reports the smallest perturbation found. The search is
    deterministic; `seed` is accepted for the common calling convention only.

    Defaults (200 Adam steps of lr 0.1 in tanh space, 6 binary-search steps) are set at full strength:
    the earlier 100 steps of lr 0.01 found an adversarial example for only 54% of 50 images of the
    authors' regular MNIST Small network (curve 62% robust at L2 = 2.0, PGD-L2: 2%); these find one
    for all 50 (robust at L2 = 1.0 / 1.5 / 2.0 / 3.0: 52 / 8 / 2 / 0 %, PGD-L2: 50 / 18 / 2 / 0 %).
    """

    name = "cw-l2"
    norms = (L2,)

    def __init__(
        self,
        eps: float | None = None,
        norm: str = L2,
        seed: int | None = 0,
        steps: int = 200,
        binary_search_steps: int = 6,
        initial_const: float = 1e-2,
        lr: float = 1e-1,
        kappa: float = 0.0,
        abort_early: bool = True,
        max_const: float = 1e10,
    ) -> None:
        super().__init__(eps, norm, seed)
        if steps < 1 or binary_search_steps < 1:
            raise ValueError("cw-l2 needs steps >= 1 and binary_search_steps >= 1")
        if not initial_const > 0 or not lr > 0 or kappa < 0:
            raise ValueError("cw-l2 needs initial_const > 0, lr > 0 and kappa >= 0")
        self.steps = steps
        self.binary_search_steps = binary_search_steps
        self.initial_const = initial_const
        self.lr = lr
        self.kappa = kappa
        self.abort_early = abort_early
        self.max_const = max_const

    def _run(self, model: nn.Module, x: Tensor, y: Tensor) -> AttackResult:
        B = x.shape[0]
        dev, dt = x.device, x.dtype
        w0 = torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        lo = torch.zeros(B, device=dev, dtype=dt)
        hi = torch.full((B,), float("inf"), device=dev, dtype=dt)
        c = torch.full((B,), self.initial_const, device=dev, dtype=dt)
        best_d2 = torch.full((B,), float("inf"), device=dev, dtype=dt)
        best_x = x.clone()
        with torch.no_grad():
            best_d2[model(x).argmax(1) != y] = 0.0  # already misclassified: distance 0, x_adv = x
        shape = (-1,) + (1,) * (x.dim() - 1)
        check_every = max(self.steps // 10, 1)
        for _ in range(self.binary_search_steps):
            w = w0.clone().requires_grad_(True)
            m1, m2 = torch.zeros_like(w0), torch.zeros_like(w0)  # Adam moments (beta 0.9, 0.999)
            found = torch.zeros(B, dtype=torch.bool, device=dev)
            prev = float("inf")
            for it in range(self.steps):
                xa = (torch.tanh(w) + 1) / 2
                m = margin(model(xa), y)
                d2 = (xa - x).flatten(1).pow(2).sum(1)
                loss = (d2 + c * (self.kappa - m).clamp_min(0)).sum()
                (g,) = torch.autograd.grad(loss, w)
                with torch.no_grad():
                    adv = m > self.kappa
                    better = adv & (d2 < best_d2)
                    best_d2 = torch.where(better, d2, best_d2)
                    best_x = torch.where(better.view(shape), xa, best_x)
                    found |= adv
                if self.abort_early and it % check_every == 0:
                    cur = loss.item()
                    if cur > prev * 0.9999:
                        break
                    prev = cur
                with torch.no_grad():
                    m1.mul_(0.9).add_(g, alpha=0.1)
                    m2.mul_(0.999).addcmul_(g, g, value=0.001)
                    step = self.lr * (m1 / (1 - 0.9 ** (it + 1))) / ((m2 / (1 - 0.999 ** (it + 1))).sqrt() + 1e-8)
                    w.sub_(step)
            with torch.no_grad():
                hi = torch.where(found, torch.minimum(hi, c), hi)
                lo = torch.where(found, lo, torch.maximum(lo, c))
                c = torch.where(torch.isinf(hi), c * 10, (lo + hi) / 2).clamp(max=self.max_const)
        found_any = torch.isfinite(best_d2)
        distance = torch.where(found_any, (best_x - x).flatten(1).norm(dim=1), torch.full_like(best_d2, float("inf")))
        if self.eps is None:
            success = found_any
        else:
            success = found_any & (distance <= self.eps)
        x_adv = torch.where(success.view(shape), best_x, x).detach()
        return AttackResult(x_adv, success, distance.detach())
