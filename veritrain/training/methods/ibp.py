"""IBP training (Gowal et al. 2018) with Shi et al. (2021)'s initialisation and bound regularisers.

Loss: kappa * CE(f(x), y) + (1 - kappa) * CE(-lower(z_y - z_j), y), the lower bounds from interval propagation
over B_eps(x) ∩ [0, 1] (the verified loss of Eqns. 6-7 with the `interval` domain). kappa ramps linearly
from `kappa_start` (1: clean only) to `kappa_end` (Gowal et al.: 0.5) over the eps ramp, per step.

Shi et al. (2021) make IBP train in few epochs:
- `--ibp-init`: weights of every layer but the last ~ N(0, 2 pi / n_in^2), biases 0, so that interval
  widths neither explode nor vanish at initialisation (`shi_init`);
- `--eps-schedule smooth` (exponential, then linear ramp; `schedules.smooth_ramp`);
- `--bound-reg W`: W * (1 - eps / eps_train) * (L_tightness + L_relu) during the ramp (`shi_regulariser`).

`diffai` (the paper's DiffAI baseline) is this objective with its own kappa defaults; `crown-ibp`, `sabr`,
`mtl-ibp` and MixTrain's `--batch-domain` reuse `interval_margin_lower` and the kappa ramp.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from veritrain.bounds import Ball, margin_spec
from veritrain.bounds.interval import interval_preactivations
from veritrain.evaluation.accuracy import batch_accuracy
from veritrain.training.config import TrainConfig
from veritrain.training.methods.base import METHODS, Objective, StepContext
from veritrain.training.schedules import step_schedule


def verified_metrics(lower: Tensor, y: Tensor) -> dict[str, float]:
    """Training-time share (%) of samples whose margin lower bounds (B, K) are all positive."""
    lo = lower.detach().scatter(1, y.view(-1, 1), float("inf"))
    return {"verified": (lo > 0).all(1).float().mean().item() * 100.0}


def ramp(start: float, end: float, progress: float) -> float:
    """Linear interpolation start -> end on the ramp progress in [0, 1]."""
    return start + (end - start) * progress


def interval_margin_lower(
    model: nn.Module, ball: Ball, y: Tensor, num_classes: int
) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
    """IBP lower bounds of z_y - z_j (B, K) (column y is 0) and every ReLU's input box, from one pass."""
    lower, _, pre = interval_preactivations(model, ball, margin_spec(y, num_classes).to(ball.x.dtype))
    return lower, pre


def check_unit(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1], got {value}")
    return float(value)


@torch.no_grad()
def shi_init(model: nn.Module, generator: torch.Generator) -> None:
    """Shi et al. (2021)'s IBP initialisation: every Linear/Conv weight but the last ~ N(0, (sqrt(2 pi) / n_in)^2)
    and its bias 0, so that E |W| 1 keeps interval widths stable through depth at initialisation."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    for layer in layers[:-1]:
        fan_in = layer.weight[0].numel()
        std = math.sqrt(2.0 * math.pi) / fan_in
        w = torch.randn(layer.weight.shape, generator=generator, dtype=layer.weight.dtype) * std
        layer.weight.copy_(w.to(layer.weight.device))
        if layer.bias is not None:
            layer.bias.zero_()


def shi_regulariser(ball: Ball, pre: list[tuple[Tensor, Tensor]], tol: float = 0.5) -> Tensor:
    """Shi et al. (2021)'s warm-up regularisers, averaged over the ReLU layers.

    L_tightness: relu(tol - w_0 / w_l) / tol, with w_0 the mean input radius and w_l the mean radius of the
    layer's pre-activation box (penalises bounds that grow through the layers). L_relu: relu(tol - r) / tol for
    r the (symmetrised) ratios of the mean and variance of the box centres of active against inactive neurons
    (penalises the imbalance of active and dead ReLUs that IBP drifts into).
    """
    lo, hi = ball.box()
    w0 = ((hi - lo) / 2).mean()
    total = torch.zeros((), dtype=lo.dtype, device=lo.device)
    if not pre:
        return total
    for l, u in pre:
        centre, radius = (u + l) / 2, (u - l) / 2
        total = total + F.relu(tol - w0 / radius.mean().clamp(min=1e-12)) / tol
        active, inactive = (l > 0).to(l.dtype), (u < 0).to(l.dtype)
        mean_act, mean_inact = (centre * active).mean(), (centre * inactive).mean()
        delta = (centre - centre.mean()) ** 2
        var_act, var_inact = (delta * active).sum(), (delta * inactive).sum()
        terms = []
        for num, den in ((mean_act, -mean_inact), (var_act, var_inact)):
            ratio = num / den
            ratio = torch.minimum(ratio, 1.0 / ratio.clamp(min=1e-12))
            terms.append(F.relu(tol - ratio) / tol)
        relu_term = terms[0] + terms[1]
        if torch.isfinite(relu_term):  # no active (or no inactive) neuron: the ratio is undefined
            total = total + relu_term
    return total / len(pre)


@METHODS.register("ibp")
class IBP(Objective):
    """Interval bound propagation training (Gowal et al. 2018), with Shi et al. (2021)'s options."""

    name = "ibp"
    sound = True
    training_domain: str | None = "interval"
    #: (kappa_start, kappa_end) when the options are not given: Gowal et al.'s 1 -> 0.5
    default_kappa = (1.0, 0.5)

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__(cfg)
        start, end = self.default_kappa
        self.kappa_start = check_unit("kappa_start", start if cfg.kappa_start is None else cfg.kappa_start)
        self.kappa_end = check_unit("kappa_end", end if cfg.kappa_end is None else cfg.kappa_end)
        if cfg.bound_reg < 0:
            raise ValueError(f"--bound-reg must be >= 0, got {cfg.bound_reg}")
        self.eps_train = float(cfg.eps if cfg.eps_train is None else cfg.eps_train)

    def progress(self, ctx: StepContext) -> float:
        """Share of the eps ramp done after this step, in [0, 1] (`StepSchedule.progress`)."""
        return step_schedule(self.cfg, ctx.num_batches).progress(ctx.step)

    def kappa_at(self, ctx: StepContext) -> float:
        """Weight of the clean cross-entropy at this step (the rest weighs the robust loss)."""
        return ramp(self.kappa_start, self.kappa_end, self.progress(ctx))

    def reg_weight(self, ctx: StepContext) -> float:
        """Weight of Shi et al.'s regularisers at this step: `bound_reg`, decaying to 0 as eps reaches eps_train."""
        if not self.eps_train:
            return 0.0
        return self.cfg.bound_reg * max(0.0, 1.0 - float(ctx.eps) / self.eps_train)

    def robust_lower(
        self, model: nn.Module, x: Tensor, y: Tensor, logits: Tensor, ctx: StepContext
    ) -> tuple[Tensor, list[tuple[Tensor, Tensor]], Ball]:
        """Lower bounds of the margins (B, K) whose CE is the robust loss, the ReLU input boxes, the ball."""
        ball = Ball(x, float(ctx.eps), self.cfg.norm)
        lower, pre = interval_margin_lower(model, ball, y, logits.shape[1])
        return lower, pre, ball

    def robust_loss(self, model: nn.Module, x: Tensor, y: Tensor, lower: Tensor, ctx: StepContext) -> Tensor:
        """The robust term from the margin lower bounds: the verified loss of Eqns. 6-7."""
        return F.cross_entropy(-lower, y)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        kappa = self.kappa_at(ctx)
        logits = model(x)
        clean = F.cross_entropy(logits, y)
        metrics = {"acc": batch_accuracy(logits, y), "kappa": kappa}
        if ctx.eps <= 0:  # the ball is the point: the robust loss is the clean one
            return clean, metrics
        lower, pre, ball = self.robust_lower(model, x, y, logits, ctx)
        robust = self.robust_loss(model, x, y, lower, ctx)
        loss = kappa * clean + (1.0 - kappa) * robust if kappa > 0 else robust
        metrics.update({"robust_loss": robust.item(), **verified_metrics(lower, y)})
        reg_weight = self.reg_weight(ctx)
        if reg_weight > 0:
            reg = shi_regulariser(ball, pre)
            loss = loss + reg_weight * reg
            metrics["bound_reg"] = reg.item()
        return loss, metrics
