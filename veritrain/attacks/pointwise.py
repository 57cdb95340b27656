"""Schott et al.'s decision-based L0 Pointwise attack, for the L0 robustness curves of Figure 7b.

1. Start: salt-and-pepper noise of increasing density p (k/levels, k = 1..levels; `repeats` sweeps),
   keeping per sample the adversarial start with the fewest changed units.
2. Reset: visit the changed units in a fresh random order and reset each to its clean value if the
   input stays misclassified; repeat passes until a whole pass resets nothing (every remaining
   unit is needed) or `max_passes`.
3. Optional (`binary_search_steps > 0`): per remaining unit, bisect between clean and adversarial
   value for the smallest change that stays adversarial (lowers L2, not L0).

Unit: `unit="pixel"` (default) changes/resets all channels of a pixel location together and L0 counts
pixel locations; `unit="value"` works on single values (foolbox's variant) and L0 counts values.
For MNIST (one channel) both are the same. Only predicted labels are used (decision-based). Every step
is one batched forward of the samples still being worked on.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from veritrain.attacks.base import ATTACKS, Attack, AttackResult
from veritrain.validation import L0


@ATTACKS.register("pointwise")
class Pointwise(Attack):
    """eps: L0 budget in units (None: minimal-perturbation attack). success = adversarial found
    (with L0 <= eps when eps is given; elsewhere x_adv = x). distance = L0 in units, inf where
    nothing was found, 0 where x is already misclassified. info["start_distance"]: L0 of the
    salt-and-pepper start."""

    name = "pointwise"
    norms = (L0,)

    def __init__(
        self,
        eps: float | None = None,
        norm: str = L0,
        seed: int | None = 0,
        unit: str = "pixel",
        levels: int = 100,
        repeats: int = 2,
        max_passes: int = 50,
        binary_search_steps: int = 0,
    ) -> None:
        super().__init__(eps, norm, seed)
        if unit not in ("pixel", "value"):
            raise ValueError(f"unit must be 'pixel' or 'value', got {unit!r}")
        if levels < 1 or repeats < 1 or max_passes < 1 or binary_search_steps < 0:
            raise ValueError("pointwise needs levels, repeats, max_passes >= 1 and binary_search_steps >= 0")
        self.unit = unit
        self.levels = levels
        self.repeats = repeats
        self.max_passes = max_passes
        self.binary_search_steps = binary_search_steps

    def _units(self, x: Tensor) -> Tensor:
        """(B, C, U) view: channels x units."""
        B = x.shape[0]
        if self.unit == "pixel" and x.dim() >= 3:
            return x.reshape(B, x.shape[1], -1)
        return x.reshape(B, 1, -1)

    @staticmethod
    @torch.no_grad()
    def _adv(model: nn.Module, x3: Tensor, shape: torch.Size, y: Tensor) -> Tensor:
        return model(x3.reshape(x3.shape[0], *shape[1:])).argmax(1) != y

    @torch.no_grad()
    def _run(self, model: nn.Module, x: Tensor, y: Tensor) -> AttackResult:
        gen = self.generator(x.device)
        B, shape = x.shape[0], x.shape
        x3 = self._units(x)
        U = x3.shape[2]
        inf = float("inf")
        clean_adv = self._adv(model, x3, shape, y)

        # 1. salt-and-pepper start
        xa = x3.clone()
        l0 = torch.full((B,), inf, device=x.device)
        l0[clean_adv] = 0.0
        for _ in range(self.repeats):
            todo = ~clean_adv
            for k in range(1, self.levels + 1):
                idx = todo.nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                p = k / self.levels
                r = torch.rand(idx.numel(), 1, U, generator=gen, device=x.device)
                cand = x3[idx].clone()
                cand = torch.where(r < p / 2, torch.zeros_like(cand), cand)
                cand = torch.where(r >= 1 - p / 2, torch.ones_like(cand), cand)
                adv = self._adv(model, cand, shape, y[idx])
                d = (cand != x3[idx]).any(1).sum(1).float()
                take = adv & (d < l0[idx])
                xa[idx[take]] = cand[take]
                l0[idx[take]] = d[take]
                todo[idx[adv]] = False
        found = torch.isfinite(l0)
        start_l0 = l0.clone()

        # 2. reset changed units to clean values while still adversarial
        active = found & ~clean_adv
        for _ in range(self.max_passes):
            if not bool(active.any()):
                break
            diff = (xa != x3).any(1)  # (B, U)
            keys = torch.rand(B, U, generator=gen, device=x.device).masked_fill(~diff, inf)
            order = keys.argsort(1)
            counts = torch.where(active, diff.sum(1), 0)
            changed = torch.zeros(B, dtype=torch.bool, device=x.device)
            for k in range(int(counts.max())):
                idx = (counts > k).nonzero().squeeze(1)
                u = order[idx, k]
                cand = xa[idx].clone()
                ar = torch.arange(idx.numel(), device=x.device)
                cand[ar, :, u] = x3[idx, :, u]
                ok = self._adv(model, cand, shape, y[idx])
                xa[idx[ok]] = cand[ok]
                changed[idx[ok]] = True
            active = active & changed

        # 3. optional bisection of each remaining unit between clean and adversarial value
        if self.binary_search_steps > 0:
            diff = (xa != x3).any(1) & (found & ~clean_adv).view(-1, 1)
            counts = diff.sum(1)
            order = torch.argsort(diff.float(), dim=1, descending=True, stable=True)
            for k in range(int(counts.max()) if B else 0):
                idx = (counts > k).nonzero().squeeze(1)
                u = order[idx, k]
                ar = torch.arange(idx.numel(), device=x.device)
                clean_v, adv_v = x3[idx, :, u], xa[idx, :, u]  # (n, C)
                lo_t = torch.zeros(idx.numel(), 1, device=x.device)
                hi_t = torch.ones(idx.numel(), 1, device=x.device)
                for _ in range(self.binary_search_steps):
                    mid = (lo_t + hi_t) / 2
                    cand = xa[idx].clone()
                    cand[ar, :, u] = clean_v + mid * (adv_v - clean_v)
                    ok = self._adv(model, cand, shape, y[idx]).view(-1, 1)
                    hi_t = torch.where(ok, mid, hi_t)
                    lo_t = torch.where(ok, lo_t, mid)
                new_v = clean_v + hi_t * (adv_v - clean_v)
                xa[idx, :, u] = torch.where(hi_t < 1, new_v, adv_v)

        x_adv = xa.reshape(shape)
        l0 = torch.where(found, (xa != x3).any(1).sum(1).float(), torch.full_like(l0, inf))
        success = found if self.eps is None else found & (l0 <= self.eps)
        x_adv = torch.where(success.view(-1, *([1] * (x.dim() - 1))), x_adv, x)
        return AttackResult(x_adv, success, l0, info={"start_distance": start_l0})
