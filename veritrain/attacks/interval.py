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

Where this departs from Algorithm 1, and why (none of it changes which samples can be broken for the
worse; all of it is about time, measured on MNIST Small at eps 0.3, `bench/bench_speed.py`):

- PGD first (`include_pgd`): the registered PGD attack (`pgd`, or `pgd-l2` for L2; its defaults, random
  start, this attack's seed) runs on the whole batch before Algorithm 1, and every sample it breaks is
  done. The result is the best point over PGD and Algorithm 1, so the attack is never weaker than PGD
  (with the same seed and batch, as `estimate_robust_accuracy` runs them, its successes contain PGD's).
- Verified samples are skipped (`skip_verified`): the samples left are bounded once over the whole ball
  B_eps(x) with `domain`, then those it does not verify with each of `verify_domains` (CROWN); where a
  sound analysis verifies the ball, no point of it is misclassified, so no attack (Algorithm 1 included:
  it never leaves the ball) can succeed, and Algorithm 1 runs on the rest only. Those samples keep PGD's
  best point. On the authors' eps 0.3 MNIST Small network, of the first 1,000 test images 7% are broken
  by PGD and symbolic-linear verifies 65% (7 ms each); of the first 100, CROWN verifies 8 of the 22 left
  (0.1 s each, against about a second of Algorithm 1).
- A cheaper sound domain first in Lines 3-7 (`precheck_domain`, plain intervals): "the analysis verifies
  B_eps'(x')" is asked of `precheck_domain` first and only the balls it does not verify go to `domain`.
  Either proof means there is no violation within eps', which is the loop's question; interval bounds
  are looser than symbolic-linear, so where the latter is the domain the chosen eps' is the same.
- All samples of an iteration share one bound call per level of the scan and one gradient call
  (per-sample eps'), each chunked by the bound engine (`veritrain.bounds.base.CHUNK_MEMORY`).

`interval-targeted` (not in the paper) runs Algorithm 1 once per wrong class j on a copy of each sample,
with L_j = -lower(z_y - z_j), the bound of the margin to that one class, in Line 8 instead of the CE over all
bounds, and Line 13's PGD from each copy's point on that class's margin z_j - z_y (`pgd_loss="target"`) with a
step of eps/10; the sample keeps its best copy. Its defaults are one iteration with step eps: the sign of the
interval gradient over the small ball B_eps'(x) sends the copy to the vertex of B_eps(x) where the linear bound
of that margin is lowest. Measured on the Madry-trained MNIST FC1 of Table I at eps 0.3 (1,024 test images,
crown-ibp, one thread, CPU seconds, without the sound pre-pass; `bench/bench_interval_targeting.py`): it broke
47.9% in 22 s, 1.31x PGD-40 (step 0.01, restarted) given the same time; most of that is the larger step, not the
bounds: PGD-40 at step 0.03 given the same time broke 44.9% (1.07x), and the same per-class targeted steps from
the plain gradient of z_y - z_j instead of the bound's broke 45.6% in 18 s.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from veritrain.attacks.base import (
    ATTACKS,
    UNTARGETED_LOSSES,
    Attack,
    AttackResult,
    ascent_direction,
    flat_norm,
    per_sample_loss,
    project,
    random_in_ball,
)
from veritrain.attacks.pgd import PGD, _Best, _pgd_run, default_step_size
from veritrain.bounds import Ball, interval_gradient, verify
from veritrain.validation import DEFAULT_DOMAIN, DEFAULT_NORM, LINF


def target_copies(y: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """One row per (sample, wrong class), sample-major: each row's index into `y` and its wrong class."""
    n = y.numel()
    others = torch.arange(num_classes, device=y.device).expand(n, num_classes)
    rows = torch.arange(n, device=y.device).repeat_interleave(num_classes - 1)
    return rows, others[others != y.unsqueeze(1)]


def _offer(best: _Best, idx: Tensor, x: Tensor, success: Tensor, loss: Tensor) -> None:
    """Offer candidates for the rows `idx` of `best` (the other rows are left as they are)."""
    cand = best.x.clone()
    cand[idx] = x
    succ = torch.zeros_like(best.success)
    succ[idx] = success
    full = torch.full_like(best.loss, float("-inf"))
    full[idx] = loss.to(full.dtype)
    best.update(cand, succ, full)


@ATTACKS.register("interval")
class IntervalAttack(Attack):
    """Defaults: iterations t = 20 (the paper's), eps0 = eps / 20 (our choice: small enough that the
    symbolic relaxation is tight, few doublings to reach eps/2), p = 2, step_size = eps / 10,
    then PGD with `pgd_steps` steps (40) of `pgd_step_size` (see `default_step_size`).
    `include_pgd`, `skip_verified` (with `domain`, then `verify_domains`) and `precheck_domain` (see the
    module's docstring) save time; `include_pgd=False, skip_verified=False, precheck_domain=None` runs
    Algorithm 1 alone on every sample.
    `run(...).info` counts the samples broken by PGD first (`pgd_broken`), verified (`verified`) and
    searched by Algorithm 1 (`searched`)."""

    name = "interval"
    #: one copy of each sample per wrong class, each with its own target (`interval-targeted`)
    targeted = False
    #: the defaults of `iterations` and of `step_size` (a share of eps)
    default_iterations, default_step_share = 20, 0.1
    #: the defaults of Line 13's PGD: its loss, and its step as a share of eps (None: `default_step_size`)
    default_pgd_loss: str = "ce"
    default_pgd_step_share: float | None = None

    def __init__(
        self,
        eps: float,
        norm: str = DEFAULT_NORM,
        seed: int | None = 0,
        iterations: int | None = None,
        eps0: float | None = None,
        p: float = 2.0,
        step_size: float | None = None,
        domain: str = DEFAULT_DOMAIN,
        pgd_steps: int = 40,
        pgd_step_size: float | None = None,
        pgd_loss: str | None = None,
        restarts: int = 1,
        include_pgd: bool = True,
        skip_verified: bool = True,
        verify_domains: tuple[str, ...] = ("crown",),
        precheck_domain: str | None = "interval",
    ) -> None:
        super().__init__(eps, norm, seed)
        if eps is None:
            raise ValueError("the interval attack needs an eps (the radius of the ball)")
        iterations = self.default_iterations if iterations is None else iterations
        if iterations < 0 or pgd_steps < 0 or restarts < 1:
            raise ValueError("interval attack needs iterations >= 0, pgd_steps >= 0, restarts >= 1")
        if not p > 1:
            raise ValueError(f"p (the growth factor of eps') must be > 1, got {p}")
        self.eps: float = float(eps)
        self.iterations = iterations
        self.eps0 = eps / 20 if eps0 is None else float(eps0)
        if eps > 0 and not self.eps0 > 0:
            raise ValueError(f"eps0 must be > 0, got {eps0}")
        self.p = p
        self.step_size = eps * self.default_step_share if step_size is None else float(step_size)
        self.domain = domain
        self.pgd_steps = pgd_steps
        if pgd_step_size is not None:
            self.pgd_step_size = float(pgd_step_size)
        elif self.default_pgd_step_share is not None:
            self.pgd_step_size = eps * self.default_pgd_step_share
        else:
            self.pgd_step_size = default_step_size(eps, pgd_steps, norm)
        self.pgd_loss = self.default_pgd_loss if pgd_loss is None else pgd_loss
        losses = (*UNTARGETED_LOSSES, "target") if self.targeted else UNTARGETED_LOSSES
        if self.pgd_loss not in losses:
            raise ValueError(f"{self.name}: pgd_loss must be one of {', '.join(losses)}, got {self.pgd_loss!r}")
        self.restarts = restarts
        self.include_pgd = include_pgd
        self.skip_verified = skip_verified
        self.verify_domains = tuple(d for d in verify_domains if d != domain)
        self.precheck_domain = None if precheck_domain == domain else precheck_domain

    def levels(self) -> list[float]:
        """eps0, eps0 p, eps0 p^2, ... capped at eps / 2 (the last level)."""
        cap = self.eps / 2
        out, e = [], self.eps0
        while e < cap:
            out.append(e)
            e *= self.p
        out.append(cap)
        return out

    def _verified(self, model: nn.Module, x: Tensor, y: Tensor, eps: float, domain: str) -> Tensor:
        ok = verify(model, Ball(x, eps, norm=self.norm, lo=0.0, hi=1.0), y, domain=domain)
        return torch.as_tensor(ok, device=x.device).bool().view(-1)

    def _scan(self, model: nn.Module, xa: Tensor, ya: Tensor, levels: list[float]) -> Tensor:
        """Lines 3-7 for every row at once: the index of the first level whose ball the analysis does not
        verify (the last level, eps/2, where every smaller one is verified)."""
        chosen = torch.full((xa.shape[0],), len(levels) - 1, dtype=torch.long, device=xa.device)
        undecided = torch.ones(xa.shape[0], dtype=torch.bool, device=xa.device)
        for li, e in enumerate(levels[:-1]):
            und = undecided.nonzero().squeeze(1)
            if und.numel() == 0:
                break
            ok = torch.zeros(und.numel(), dtype=torch.bool, device=xa.device)
            if self.precheck_domain is not None:
                ok = self._verified(model, xa[und], ya[und], e, self.precheck_domain)
            need = (~ok).nonzero().squeeze(1)
            if need.numel():
                ok[need] = self._verified(model, xa[und[need]], ya[und[need]], e, self.domain)
            stop = und[~ok]  # a violation may exist within eps': use this eps'
            chosen[stop] = li
            undecided[stop] = False
        return chosen

    def _interval_steps(
        self, model: nn.Module, x: Tensor, y: Tensor, xp: Tensor, done: Tensor, target: Tensor | None = None
    ) -> Tensor:
        """Lines 2-12 for the samples not `done` (updated in place); returns x'. With `target`, Line 8's loss
        of row i is the bound of the margin to class target[i]."""
        eps, norm, levels = self.eps, self.norm, self.levels()
        level_eps = torch.tensor(levels, dtype=x.dtype, device=x.device)
        for _ in range(self.iterations):
            act = (~done).nonzero().squeeze(1)
            if act.numel() == 0:
                break
            xa, ya = xp[act], y[act]
            chosen = self._scan(model, xa, ya, levels)
            ball = Ball(xa, level_eps[chosen], norm=norm, lo=0.0, hi=1.0)
            ta = None if target is None else target[act]
            g = interval_gradient(model, ball, ya, domain=self.domain, target=ta).detach()
            g = g.to(xa.dtype).reshape(xa.shape)
            xa = project(xa + self.step_size * ascent_direction(g, norm), x[act], eps, norm)
            xp[act] = xa
            with torch.no_grad():
                done[act[model(xa).argmax(1) != ya]] = True
        return xp

    def _pgd_first(self) -> PGD:
        """The registered PGD attack of this norm with its defaults and this attack's seed."""
        step = 0.01 if self.norm == LINF else None  # as `pgd` and `pgd-l2` (ATTACKS) default
        return PGD(self.eps, self.norm, self.seed, step_size=step)

    def _run(self, model: nn.Module, x: Tensor, y: Tensor) -> AttackResult:
        eps, norm = self.eps, self.norm
        gen = self.generator(x.device)
        best = _Best(x)
        with torch.no_grad():
            logits = model(x)
        best.update(x, logits.argmax(1) != y, per_sample_loss(logits, y, "ce"))
        todo = ~best.success
        info = {"pgd_broken": 0, "verified": 0, "searched": 0}
        if eps > 0 and self.include_pgd and bool(todo.any()):
            res = self._pgd_first()._run(model, x, y)  # the whole batch: the draws of `pgd` with this seed
            with torch.no_grad():
                logits = model(res.x_adv)
            best.update(res.x_adv, logits.argmax(1) != y, per_sample_loss(logits, y, "ce"))
            info["pgd_broken"] = int((todo & best.success).sum())
            todo = todo & ~best.success
        if eps > 0 and self.skip_verified and bool(todo.any()):
            for dom in (self.domain, *self.verify_domains):
                idx = todo.nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                ok = self._verified(model, x[idx], y[idx], eps, dom)
                info["verified"] += int(ok.sum())
                todo[idx[ok]] = False
        info["searched"] = int(todo.sum()) if eps > 0 else 0
        num_classes = logits.shape[1]
        for r in range(self.restarts if eps > 0 else 0):
            idx = (todo & ~best.success).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            if self.targeted:
                rows, target = target_copies(y[idx], num_classes)
                copies = idx[rows]
            else:
                target, copies = None, idx
            xs, ys = x[copies], y[copies]
            xp = xs.clone() if r == 0 else random_in_ball(xs, eps, norm, gen)
            with torch.no_grad():
                done = model(xp).argmax(1) != ys
            xp = self._interval_steps(model, xs, ys, xp, done, target)
            with torch.no_grad():
                logits = model(xp)
            sub = _Best(xs)
            sub.update(xp, logits.argmax(1) != ys, per_sample_loss(logits, ys, self.pgd_loss, target))
            rest = (~sub.success).nonzero().squeeze(1)
            if rest.numel() and self.pgd_steps > 0:  # Line 13: PGD from x', no random start
                tail = _Best(xs[rest])
                _pgd_run(
                    model,
                    xs[rest],
                    ys[rest],
                    xp[rest],
                    eps,
                    self.pgd_steps,
                    self.pgd_step_size,
                    norm,
                    self.pgd_loss,
                    tail,
                    early_stop=True,
                    target=None if target is None else target[rest],
                )
                _offer(sub, rest, tail.x, tail.success, tail.loss)
            pick = torch.arange(idx.numel(), device=x.device)
            if self.targeted:  # each sample's best copy: broken first, then the highest loss
                score = torch.where(sub.success, float("inf"), sub.loss).view(idx.numel(), num_classes - 1)
                pick = pick * (num_classes - 1) + score.argmax(1)
            loss = sub.loss[pick]
            if self.pgd_loss != "ce":  # the batch's best is ranked by CE, whatever loss Line 13 ascended
                with torch.no_grad():
                    loss = per_sample_loss(model(sub.x[pick]), y[idx], "ce")
            _offer(best, idx, sub.x[pick], sub.success[pick], loss)
        return AttackResult(best.x, best.success, flat_norm(best.x - x, norm), info=info)


@ATTACKS.register("interval-targeted")
class TargetedIntervalAttack(IntervalAttack):
    """The interval attack once per wrong class (see the module's docstring): t = 1 iteration with step eps
    by default, then PGD-40 on that class's margin (`pgd_loss="target"`, step eps/10) from each copy's point;
    every other option as `interval`."""

    name = "interval-targeted"
    targeted = True
    default_iterations, default_step_share = 1, 1.0
    default_pgd_loss, default_pgd_step_share = "target", 0.1
