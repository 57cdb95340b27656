"""Projected gradient descent (Madry et al.), L-inf and L2, and FGSM as its one-step case.

Paper setting (Section III-A, V-A): 40 iterations, step 0.01, random start. `pgd_attack` is the fast
function the Madry baseline calls every batch; the `PGD` / `FGSM` classes are the evaluation attacks.
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
    check_norm,
    eval_mode,
    flat_norm,
    per_sample_loss,
    project,
    random_in_ball,
)
from veritrain.validation import DEFAULT_NORM, L2, LINF, check_eps


def default_step_size(eps: float, steps: int, norm: str) -> float:
    """linf: min(0.01, 2.5 eps / steps) (0.01 is the paper's step for MNIST, eps = 0.3); l2: 2.5 eps / steps."""
    if norm == LINF:
        return min(0.01, 2.5 * eps / max(steps, 1))
    return 2.5 * eps / max(steps, 1)


class _Best:
    """Per-sample best candidate: misclassified beats not, then the higher loss. No host syncs."""

    def __init__(self, x: Tensor) -> None:
        self.x = x.clone()
        self.success = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        self.loss = torch.full((x.shape[0],), float("-inf"), device=x.device, dtype=x.dtype)

    def update(self, x: Tensor, success: Tensor, loss: Tensor) -> None:
        better = (success & ~self.success) | ((success == self.success) & (loss > self.loss))
        self.x = torch.where(better.view(-1, *([1] * (x.dim() - 1))), x.detach(), self.x)
        self.success = self.success | success
        self.loss = torch.where(better, loss.detach(), self.loss)


def _pgd_run(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    start: Tensor,
    eps: float,
    steps: int,
    step_size: float,
    norm: str,
    loss: str,
    best: _Best | None,
    early_stop: bool = False,
    target: Tensor | None = None,
) -> Tensor:
    """One PGD run from `start`; returns the last iterate. With `best`, every evaluated point
    (the start, each iterate and the last one) is offered to it. `target`: the classes of `loss="target"`."""
    x_adv = start.detach()
    for i in range(steps + 1):
        if i == steps and best is None:
            break
        x_adv.requires_grad_(True)
        logits = model(x_adv)
        l = per_sample_loss(logits, y, loss, target)
        if best is not None:
            best.update(x_adv.detach(), logits.detach().argmax(1) != y, l.detach())
            if i == steps or (early_stop and bool(best.success.all())):
                break
        (g,) = torch.autograd.grad(l.sum(), x_adv)
        x_adv = project(x_adv.detach() + step_size * ascent_direction(g, norm), x, eps, norm)
    return x_adv.detach()


def pgd_attack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    steps: int = 40,
    step_size: float | None = 0.01,
    norm: str = DEFAULT_NORM,
    random_start: bool = True,
    restarts: int = 1,
    loss: str = "ce",
    keep_best: bool = False,
    x_init: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """PGD for training use: returns detached adversarial inputs inside B_eps(x) and [0, 1].

    keep_best=False (default, fast): the last iterate, no bookkeeping and no host syncs
    (with restarts > 1 the final iterates are compared once). `x_init` starts from a given point
    (then no random start). `generator=None` draws the random start from torch's global RNG so a
    training run seeded with `torch.manual_seed` is reproducible; pass a generator to keep it local.
    The model runs in eval mode and its previous modes are restored; no parameter gradients are made.
    """
    check_norm(norm)
    check_eps(eps, x.shape[0], "pgd_attack: eps")
    step_size = default_step_size(eps, steps, norm) if step_size is None else step_size
    x = x.detach()
    y = y.detach().to(device=x.device, dtype=torch.long)
    with eval_mode(model), torch.enable_grad():
        best = _Best(x) if (keep_best or restarts > 1) else None
        out = x
        for r in range(max(restarts, 1)):
            if x_init is not None and r == 0:
                start = project(x_init.detach(), x, eps, norm)
            elif random_start or r > 0:
                start = random_in_ball(x, eps, norm, generator)
            else:
                start = x
            out = _pgd_run(model, x, y, start, eps, steps, step_size, norm, loss, best if keep_best else None)
            if best is not None and not keep_best:
                with torch.no_grad():
                    logits = model(out)
                best.update(out, logits.argmax(1) != y, per_sample_loss(logits, y, loss))
        return best.x if best is not None else out


@ATTACKS.register("pgd")
class PGD(Attack):
    """PGD with restarts, keeping the best point per sample over all it evaluated (Madry et al.).

    Candidates: every start and iterate of every restart, plus (include_fgsm) the FGSM point, i.e.
    one step of size eps from the clean x. So PGD's successes contain FGSM's (same model and seed)
    by construction, at the cost of one more gradient. `step_size=None`: see `default_step_size`.
    """

    name = "pgd"
    keep_best = True

    def __init__(
        self,
        eps: float,
        norm: str = DEFAULT_NORM,
        seed: int | None = 0,
        steps: int = 40,
        step_size: float | None = 0.01,
        restarts: int = 1,
        random_start: bool = True,
        loss: str = "ce",
        include_fgsm: bool = True,
        early_stop: bool = True,
    ) -> None:
        super().__init__(eps, norm, seed)
        if eps is None:
            raise ValueError(f"{self.name} needs an eps (the radius of the {norm} ball)")
        if steps < 1 or restarts < 1:
            raise ValueError(f"steps and restarts must be >= 1, got steps={steps}, restarts={restarts}")
        self.steps = steps
        self.step_size = default_step_size(eps, steps, norm) if step_size is None else float(step_size)
        if not self.step_size > 0:
            raise ValueError(f"step_size must be > 0, got {step_size}")
        if loss not in UNTARGETED_LOSSES:
            raise ValueError(f"{self.name}: loss must be one of {', '.join(UNTARGETED_LOSSES)}, got {loss!r}")
        self.restarts = restarts
        self.random_start = random_start
        self.loss = loss
        self.include_fgsm = include_fgsm
        self.early_stop = early_stop

    def _run(self, model: nn.Module, x: Tensor, y: Tensor) -> AttackResult:
        assert self.eps is not None  # __init__ refuses None
        eps, norm = float(self.eps), self.norm
        gen = self.generator(x.device)
        if not self.keep_best:  # FGSM and other plain runs: the last iterate
            start = random_in_ball(x, eps, norm, gen) if self.random_start else x
            x_adv = _pgd_run(model, x, y, start, eps, self.steps, self.step_size, norm, self.loss, None)
            with torch.no_grad():
                success = model(x_adv).argmax(1) != y
            return AttackResult(x_adv, success, flat_norm(x_adv - x, norm))
        best = _Best(x)
        if self.include_fgsm:
            x_f = _pgd_run(model, x, y, x, eps, 1, eps, norm, "ce", None)
            with torch.no_grad():
                logits = model(x_f)
            best.update(x_f, logits.argmax(1) != y, per_sample_loss(logits, y, self.loss))
        for _ in range(self.restarts):
            start = random_in_ball(x, eps, norm, gen) if self.random_start else x
            _pgd_run(
                model,
                x,
                y,
                start,
                eps,
                self.steps,
                self.step_size,
                norm,
                self.loss,
                best,
                early_stop=self.early_stop,
            )
            if self.early_stop and bool(best.success.all()):
                break
        return AttackResult(best.x, best.success, flat_norm(best.x - x, norm))


@ATTACKS.register("pgd-l2")
class PGDL2(PGD):
    """PGD in the L2 ball (normalised-gradient steps, uniform random start in the ball)."""

    name = "pgd-l2"

    def __init__(self, eps: float, norm: str = L2, seed: int | None = 0, **kw) -> None:
        kw.setdefault("step_size", None)
        super().__init__(eps, norm, seed, **kw)


@ATTACKS.register("fgsm")
class FGSM(PGD):
    """Fast gradient sign method: PGD's one-step case, no random start, step = eps (linf: eps*sign(g);
    l2: eps*g/||g||), returns that point."""

    name = "fgsm"
    keep_best = False

    def __init__(self, eps: float, norm: str = DEFAULT_NORM, seed: int | None = 0, loss: str = "ce") -> None:
        super().__init__(
            eps,
            norm,
            seed,
            steps=1,
            step_size=max(float(eps), 1e-12),
            restarts=1,
            random_start=False,
            loss=loss,
            include_fgsm=False,
            early_stop=False,
        )
