"""The interval attack (Section III, Algorithm 1): gradient ascent on the verified robust loss of a
small region around the current point (the "interval gradient"), then PGD from the point it found.

Per iteration and sample: eps' starts at eps0 and grows by p while the sound analysis verifies
B_eps'(x') (intersected with [0, 1]) - Lines 3-7; growth stops at eps/2 (we cap eps' at exactly
eps/2; the paper breaks at the first value >= eps/2). g_I = d L(d_eps'(x'), y) / d x' (Line 8).
The step is step_size * sign(g_I) for L-inf (normalised g_I for L2) where the paper writes
alpha * g_I: the raw interval gradient's scale varies by orders of magnitude across samples.
x' is projected onto B_eps(x) and [0, 1] (Line 10); a sample stops as soon as it is misclassified
(Line 11). The rest get PGD from x' without random start (Line 13). Restart r > 0 starts from a
random point of the ball instead of x.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from veritrain.attacks.base import (
    ATTACKS,
    Attack,
    AttackResult,
    ascent_direction,
    flat_norm,
    per_sample_loss,
    project,
    random_in_ball,
)
from veritrain.attacks.pgd import _Best, _pgd_run, default_step_size
from veritrain.bounds import Ball, interval_gradient, verify


@ATTACKS.register("interval")
class IntervalAttack(Attack):
    """Defaults: iterations t = 20 (the paper's), eps0 = eps / 20 (our choice: small enough that the
    symbolic relaxation is tight, few doublings to reach eps/2), p = 2, step_size = eps / 10,
    then PGD with `pgd_steps` steps (40) of `pgd_step_size` (see `default_step_size`)."""

    name = "interval"

    def __init__(
        self,
        eps: float,
        norm: str = "linf",
        seed: int | None = 0,
        iterations: int = 20,
        eps0: float | None = None,
        p: float = 2.0,
        step_size: float | None = None,
        domain: str = "symbolic-linear",
        pgd_steps: int = 40,
        pgd_step_size: float | None = None,
        restarts: int = 1,
    ) -> None:
        super().__init__(eps, norm, seed)
        if eps is None:
            raise ValueError("the interval attack needs an eps (the radius of the ball)")
        if iterations < 0 or pgd_steps < 0 or restarts < 1:
            raise ValueError("interval attack needs iterations >= 0, pgd_steps >= 0, restarts >= 1")
        if not p > 1:
            raise ValueError(f"p (the growth factor of eps') must be > 1, got {p}")
        self.iterations = iterations
        self.eps0 = eps / 20 if eps0 is None else float(eps0)
        if eps > 0 and not self.eps0 > 0:
            raise ValueError(f"eps0 must be > 0, got {eps0}")
        self.p = p
        self.step_size = eps / 10 if step_size is None else float(step_size)
        self.domain = domain
        self.pgd_steps = pgd_steps
        self.pgd_step_size = default_step_size(eps, pgd_steps, norm) if pgd_step_size is None else float(pgd_step_size)
        self.restarts = restarts

    def levels(self) -> list[float]:
        """eps0, eps0 p, eps0 p^2, ... capped at eps / 2 (the last level)."""
        cap = self.eps / 2
        out, e = [], self.eps0
        while e < cap:
            out.append(e)
            e *= self.p
        out.append(cap)
        return out

    def _interval_steps(self, model: nn.Module, x: Tensor, y: Tensor, xp: Tensor, done: Tensor) -> Tensor:
        """Lines 2-12 for the samples not `done` (updated in place); returns x'."""
        eps, norm, levels = float(self.eps), self.norm, self.levels()
        for _ in range(self.iterations):
            act = (~done).nonzero().squeeze(1)
            if act.numel() == 0:
                break
            xa, ya = xp[act], y[act]
            chosen = torch.full((act.numel(),), len(levels) - 1, dtype=torch.long, device=x.device)
            undecided = torch.ones(act.numel(), dtype=torch.bool, device=x.device)
            for li, e in enumerate(levels[:-1]):
                und = undecided.nonzero().squeeze(1)
                if und.numel() == 0:
                    break
                with torch.no_grad():
                    ok = verify(model, Ball(xa[und], e, norm=norm, lo=0.0, hi=1.0), ya[und], domain=self.domain)
                ok = torch.as_tensor(ok, device=x.device).bool().view(-1)
                stop = und[~ok]  # a violation may exist within eps': use this eps'
                chosen[stop] = li
                undecided[stop] = False
            g = torch.zeros_like(xa)
            for li in chosen.unique().tolist():
                m = (chosen == li).nonzero().squeeze(1)
                ball = Ball(xa[m], levels[li], norm=norm, lo=0.0, hi=1.0)
                gi = interval_gradient(model, ball, ya[m], domain=self.domain)
                g[m] = gi.detach().to(g.dtype).reshape(xa[m].shape)
            xa = project(xa + self.step_size * ascent_direction(g, norm), x[act], eps, norm)
            xp[act] = xa
            with torch.no_grad():
                done[act[model(xa).argmax(1) != ya]] = True
        return xp

    def _run(self, model: nn.Module, x: Tensor, y: Tensor) -> AttackResult:
        eps, norm = float(self.eps), self.norm
        gen = self.generator(x.device)
        best = _Best(x)
        with torch.no_grad():
            logits = model(x)
        best.update(x, logits.argmax(1) != y, per_sample_loss(logits, y, "ce"))
        if eps > 0:
            for r in range(self.restarts):
                if bool(best.success.all()):
                    break
                xp = x.clone() if r == 0 else random_in_ball(x, eps, norm, gen)
                done = best.success.clone()
                with torch.no_grad():
                    done |= model(xp).argmax(1) != y
                xp = self._interval_steps(model, x, y, xp, done)
                with torch.no_grad():
                    logits = model(xp)
                best.update(xp, logits.argmax(1) != y, per_sample_loss(logits, y, "ce"))
                rest = (~best.success).nonzero().squeeze(1)
                if rest.numel() and self.pgd_steps > 0:
                    sub = _Best(x[rest])
                    _pgd_run(
                        model,
                        x[rest],
                        y[rest],
                        xp[rest],
                        eps,
                        self.pgd_steps,
                        self.pgd_step_size,
                        norm,
                        "ce",
                        sub,
                        early_stop=True,
                    )
                    cand = best.x.clone()
                    cand[rest] = sub.x
                    succ = torch.zeros_like(best.success)
                    succ[rest] = sub.success
                    loss = torch.full_like(best.loss, float("-inf"))
                    loss[rest] = sub.loss
                    best.update(cand, succ, loss)
        return AttackResult(best.x, best.success, flat_norm(best.x - x, norm))
