"""MixTrain (Section IV): stochastic robust approximation (Eqn. 8) + dynamic mixed training (Eqn. 9)."""

from __future__ import annotations

import math

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from veritrain.bounds import DOMAINS, Ball, margin_lower, verified_loss
from veritrain.attacks.base import eval_mode
from veritrain.data.info import DATASETS, training_defaults
from veritrain.evaluation.accuracy import batch_accuracy
from veritrain.training.config import TrainConfig
from veritrain.training.methods.base import METHODS, EpochContext, Objective, StepContext
from veritrain.training.methods.crown_ibp import CrownIBPTraining
from veritrain.training.methods.ibp import IBP, shi_regulariser, verified_metrics

#: cheap sound domains MixTrain can put on the whole batch (`--batch-domain`)
BATCH_DOMAINS = ("interval", "crown-ibp")

#: Default target accuracy acc0 (percent, like every accuracy in veritrain) per data set; see `MixTrain`.
#: A view of the one table, `veritrain.data.DATASETS` (`TrainingDefaults.acc0`).
DEFAULT_ACC0: dict[str, float] = {
    name: acc0 for name in DATASETS if (acc0 := DATASETS.get(name).defaults.acc0) is not None
}
#: k', the bounded samples per batch when neither --k nor --k-per-batch is given (the paper's k' = 1)
DEFAULT_K_PER_BATCH = 1


def default_acc0(dataset: str) -> float:
    """The default acc0 of a data set; a one-line error names the option for other data sets."""
    if dataset not in DEFAULT_ACC0:
        raise ValueError(f"no default acc0 for data set {dataset!r}; pass --acc0 (percent, e.g. 90)")
    return DEFAULT_ACC0[dataset]


class SamplePlan:
    """How many sound samples each batch of one epoch gets (Eqn. 8, 'integration with batch training').

    With a total `k` per epoch over B batches, every batch gets k // B and k % B batches, drawn at random
    (from the method's seeded generator) among the first B - 1, get one more, so that exactly k samples
    are bounded per epoch. A batch smaller than its share (the last one, typically) passes the deficit on
    to the next batch. With `k_per_batch`, every batch gets k' (at most its size).
    """

    def __init__(self, num_batches: int, k: int | None, k_per_batch: int, generator: torch.Generator) -> None:
        self.num_batches = max(int(num_batches), 1)
        self.k = k
        self.k_per_batch = k_per_batch
        self.counts: list[int] | None = None
        if k is not None:
            base, extra = divmod(k, self.num_batches)
            counts = [base] * self.num_batches
            pool = max(self.num_batches - 1, 1)  # the last batch may be short: keep the remainder off it
            picks = torch.randperm(pool, generator=generator, device=generator.device)[:extra]
            for i in picks.tolist():  # extra < num_batches, so extra <= pool
                counts[i] += 1
            self.counts = counts
        self.position = 0
        self.carry = 0  # samples a short batch could not take, owed to the next batch

    def take(self, batch_size: int) -> int:
        """k' for the next batch of this epoch."""
        if self.counts is None:
            want = self.k_per_batch
        else:
            i = min(self.position, self.num_batches - 1)
            want = (self.counts[i] if self.position < self.num_batches else 0) + self.carry
        got = min(want, batch_size)
        if self.counts is not None:
            self.carry = want - got
        self.position += 1
        return got

    def state_dict(self) -> dict[str, Any]:
        return {
            "num_batches": self.num_batches,
            "k": self.k,
            "k_per_batch": self.k_per_batch,
            "counts": self.counts,
            "position": self.position,
            "carry": self.carry,
        }

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> "SamplePlan":
        plan = cls.__new__(cls)
        plan.num_batches, plan.k, plan.k_per_batch = s["num_batches"], s["k"], s["k_per_batch"]
        plan.counts, plan.position, plan.carry = s["counts"], s["position"], s["carry"]
        return plan


def update_alpha(alpha: float, acc: float, acc0: float, step: float, low: float = 0.0) -> float:
    """Section V-A: alpha + step if acc > acc0 else alpha - step, kept in [low, 1] (acc, acc0 in one unit;
    the paper's low is 0, `--alpha-min` raises it)."""
    new = alpha + step if acc > acc0 else alpha - step
    return round(min(1.0, max(low, new)), 10)  # rounding keeps 0.8 - 16 * 0.05 from drifting off 0


@METHODS.register("mixtrain")
class MixTrain(Objective):
    """Loss (1 - alpha) * CE(f(x), y) on the batch + alpha * verified loss on k' random samples (Eqns. 8-9).

    Only the k' chosen samples go through the bound engine (`cfg.domain`, any registered domain); the
    cross-entropy reuses the batch's ordinary forward pass. After each epoch, alpha moves by
    `cfg.alpha_step` (0.05) up if the clean accuracy on `cfg.acc_subsample` random training images
    (eval mode) beats acc0, else down, kept in [0, 1] (`cfg.alpha_min` raises the 0, not in the paper); `cfg.alpha`
    fixes it instead (Fig. 8, Table IX).
    During the first `cfg.warmup_epochs` epochs (default 0, not in the paper) alpha is 0 and does not move:
    plain cross-entropy, with the verified loss only logged. With `cfg.alpha_after_ramp` (not in the paper)
    alpha stays at alpha0 until the eps ramp has ended (`first_rule_epoch`): while eps grows the accuracy
    falls because of the ramp, and the rule would read that as "alpha too high" and drive alpha to 0.

    With `cfg.holdout` > 0 (not in the paper) the rule reads the clean accuracy of the held-out training images
    the loop keeps aside (`EpochContext.extra["holdout"]`; all of them, or `acc_subsample` drawn each epoch)
    instead of images it trains on. This departs from Section V-A on purpose: once the network overfits, its
    accuracy on its own training images runs above its test accuracy (a point at MNIST eps 0.1 after 120
    CPU-minutes), so the rule would see acc0 reached too early and raise alpha; the held-out accuracy is an
    unbiased estimate of the test accuracy, so acc0 then means the clean accuracy wanted on unseen images.

    Default acc0 (the paper gives no value). The rule makes alpha settle where the training accuracy is
    about acc0, so acc0 is the clean accuracy we are willing to end at; everything above it is spent on
    verified robustness. We set it a little below the lowest ACC the paper reports for MixTrain on the data
    set, so that alpha keeps rising (more VRA) while the accuracy stays at the paper's level (percent):
    MNIST 95 (Table III: 98.5 at eps = 0.1, 95.4 at 0.3; Table IV 94.0), CIFAR-10 65 (Tables III-IV:
    69.4-77.9, training accuracy runs a few points above test accuracy), Fashion-MNIST 80 and
    Tiny ImageNet 25 (no MixTrain numbers in the paper; a few points under typical robustly trained
    accuracies). At MNIST eps = 0.1 this lets alpha climb towards 1; at eps = 0.3 it holds accuracy near 95%.

    Metrics: `loss()` gives regular_loss, verified_loss (batches with k' > 0), alpha and the batch acc;
    `end_epoch()` gives the epoch's alpha, the updated alpha_next, subsample_acc and acc0 (both in percent, like every
    accuracy in veritrain), and the epoch's verified_loss averaged over its bounded samples.
    """

    name = "mixtrain"
    sound = True

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__(cfg)
        if cfg.k is not None and cfg.k_per_batch is not None:
            raise ValueError("set either k (samples per epoch) or k_per_batch (samples per batch), not both")
        # k = 0 or k' = 0 bounds no sample: MixTrain would silently be regular training (unless
        # --batch-domain bounds the whole batch, where k' = 0 means no tight samples on top of it)
        low = 0 if cfg.batch_domain is not None else 1
        if cfg.k is not None and cfg.k < low:
            raise ValueError(
                f"--k must be >= {low} (0 bounds no sample, i.e. regular training: use --method "
                f"regular, or add --batch-domain), got {cfg.k}"
            )
        if cfg.k_per_batch is not None and cfg.k_per_batch < low:
            raise ValueError(
                f"--k-per-batch must be >= {low} (0 bounds no sample, i.e. regular training: use "
                f"--method regular, or add --batch-domain), got {cfg.k_per_batch}"
            )
        self.k = cfg.k
        self.k_per_batch = DEFAULT_K_PER_BATCH if cfg.k_per_batch is None else int(cfg.k_per_batch)
        self.domain = DOMAINS.get(cfg.domain)()  # fails early, listing the domains, for an unknown name
        self.training_domain = cfg.domain
        alpha0 = cfg.alpha0 if cfg.alpha0 is not None else training_defaults(cfg.dataset).alpha0
        for name, value in (("--alpha0", alpha0), ("--alpha", cfg.alpha), ("--alpha-min", cfg.alpha_min)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        self.fixed = cfg.alpha is not None
        self.alpha = float(cfg.alpha) if cfg.alpha is not None else float(alpha0)
        self.acc0 = default_acc0(cfg.dataset) if cfg.acc0 is None else float(cfg.acc0)
        if not (self.acc0 == 0.0 or 1.0 < self.acc0 <= 100.0):
            raise ValueError(f"acc0 is a percentage in (1, 100] (e.g. 95 for 95%), got {self.acc0}")
        if cfg.acc_subsample < 1:
            raise ValueError(f"acc_subsample must be >= 1, got {cfg.acc_subsample}")
        if cfg.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {cfg.warmup_epochs}")
        self.batch_domain = cfg.batch_domain
        if self.batch_domain is not None and self.batch_domain not in BATCH_DOMAINS:
            raise ValueError(f"unknown --batch-domain {self.batch_domain!r}; choose one of: {', '.join(BATCH_DOMAINS)}")
        if cfg.tight_weight is not None:
            if self.batch_domain is None:
                raise ValueError(
                    "--tight-weight needs --batch-domain (it weighs the k' tight samples against the batch)"
                )
            if not 0.0 <= cfg.tight_weight <= 1.0:
                raise ValueError(f"--tight-weight must be in [0, 1], got {cfg.tight_weight}")
        if not 0.0 < cfg.batch_share <= 1.0:
            raise ValueError(f"--batch-share must be in (0, 1], got {cfg.batch_share}")
        if cfg.batch_share < 1.0 and self.batch_domain is None:
            raise ValueError("--batch-share needs --batch-domain (it is the share of the batch that domain bounds)")
        if self.batch_domain is not None:
            # the batch bounds (and crown-ibp's beta ramp) are those of the ibp / crown-ibp objectives
            self._ibp = IBP(cfg) if self.batch_domain == "interval" else CrownIBPTraining(cfg)
        self._plan: SamplePlan | None = None
        self._plan_epoch = -1
        # this epoch's verified loss, summed over the bounded samples (batches with k' = 0 have none)
        self._vsum = 0.0
        self._vcount = 0

    # -- Eqn. 8: which samples of this batch get a sound bound --------------------------------------
    def choose(self, batch_size: int, ctx: StepContext) -> Tensor:
        """Indices (on the generator's device) of the k' samples of this batch to bound."""
        if self._plan is None or self._plan_epoch != ctx.epoch:
            if self.k is not None and self.k > ctx.num_batches * batch_size:
                raise ValueError(
                    f"k={self.k} sound samples per epoch exceed the {ctx.num_batches} batches of "
                    f"{batch_size}; lower --k or use --k-per-batch"
                )
            self._plan = SamplePlan(ctx.num_batches, self.k, self.k_per_batch, ctx.generator)
            self._plan_epoch = ctx.epoch
        kb = self._plan.take(batch_size)
        return torch.randperm(batch_size, generator=ctx.generator, device=ctx.generator.device)[:kb]

    @property
    def warmup_epochs(self) -> int:
        return int(self.cfg.warmup_epochs)

    @property
    def first_rule_epoch(self) -> int:
        """The first epoch (0-based) whose end moves alpha by the rule of Section V-A (read from `cfg`, which
        `--fit-budget` may rescale during the run)."""
        if self.cfg.alpha_after_ramp:
            return max(self.warmup_epochs, self.cfg.ramp_end - 1)
        return self.warmup_epochs

    # -- Eqn. 9 ----------------------------------------------------------------------------------
    def loss(self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        idx = self.choose(x.shape[0], ctx).to(x.device)
        logits = model(x)
        regular = F.cross_entropy(logits, y)
        alpha = 0.0 if ctx.epoch < self.warmup_epochs else self.alpha
        extra: dict[str, float] = {}
        with torch.set_grad_enabled(torch.is_grad_enabled() and alpha > 0.0):
            # alpha = 0: exactly regular training; the verified loss is only logged
            if self.batch_domain is not None:
                verified, extra = self.batch_verified(model, x, y, logits, idx, ctx)
            elif idx.numel() == 0:
                verified = None
            else:
                verified = verified_loss(model, Ball(x[idx], ctx.eps, self.cfg.norm), y[idx], self.domain)
        if verified is None or alpha == 0.0:
            loss = regular
        elif alpha == 1.0:
            loss = verified
        else:
            loss = (1.0 - alpha) * regular + alpha * verified
        metrics = {
            "regular_loss": regular.item(),
            "alpha": alpha,
            "acc": batch_accuracy(logits, y),
        }
        if verified is not None:
            v = verified.item()
            metrics["verified_loss"] = v
            n = x.shape[0] if self.batch_domain is not None else idx.numel()
            self._vsum += v * n
            self._vcount += n
        metrics.update(extra)
        return loss, metrics

    def batch_verified(
        self, model: nn.Module, x: Tensor, y: Tensor, logits: Tensor, idx: Tensor, ctx: StepContext
    ) -> tuple[Tensor, dict[str, float]]:
        """The verified loss over the whole batch (`--batch-domain`), tightened on the k' chosen samples.

        Every sample gets the batch domain's sound margin lower bounds (IBP, or CROWN-IBP mixed with IBP by
        beta as in `crown-ibp`; with `--batch-share` f < 1 only a uniform draw of a share f of the batch holding
        the k' samples does, Eqn. 8's stochastic estimate applied to the batch domain); the k' samples of
        Eqn. 8 also get the tight domain's (`--domain`), and keep the larger of the two (both are sound, so
        their maximum is). The loss is the cross-entropy of the negated margin bounds over the batch, where each
        tight sample weighs 1 / batch like any other; with
        `--tight-weight w` (not in the paper) it is (1 - w) * that mean + w * the mean over the k' samples. The k'
        samples are a uniform draw, so their mean is Eqn. 8's unbiased estimate of the whole batch's loss under
        the tight bounds, and the loss estimates (1 - w) * L_batch_domain + w * L_tight over the batch: the tight
        domain steers the network as much as w says, at the cost of k' bounds.
        With `--bound-reg`, Shi et al.'s regularisers of the IBP pass are added, scaled by 1 / alpha so that
        Eqn. 9 leaves their weight as set.
        """
        if ctx.eps <= 0:
            return F.cross_entropy(logits, y), {}
        share = self.share(idx, x.shape[0], ctx)
        if share is not None:  # --batch-share: the batch domain's loss estimated on a uniform share holding idx
            x, y, logits = x[share], y[share], logits[share]
            idx = torch.arange(idx.numel(), device=x.device)
        lower_all, pre, ball = self._ibp.robust_lower(model, x, y, logits, ctx)
        if idx.numel() > 0:
            tight = margin_lower(model, Ball(x[idx], ctx.eps, self.cfg.norm), y[idx], self.domain)
            lower_all = lower_all.index_put((idx,), torch.maximum(lower_all[idx], tight))
        verified = F.cross_entropy(-lower_all, y)
        w = self.cfg.tight_weight
        if w is not None and idx.numel() > 0:
            verified = (1.0 - w) * verified + w * F.cross_entropy(-lower_all[idx], y[idx])
        metrics = verified_metrics(lower_all, y)
        reg_weight = self._ibp.reg_weight(ctx)
        if reg_weight > 0 and self.alpha > 0:
            reg = shi_regulariser(ball, pre)
            metrics["bound_reg"] = reg.item()
            verified = verified + (reg_weight / self.alpha) * reg
        return verified, metrics

    def share(self, idx: Tensor, batch_size: int, ctx: StepContext) -> Tensor | None:
        """`--batch-share` f < 1: the indices of ceil(f * batch) samples the batch domain bounds, the k' tight
        ones (`idx`) first and the rest a uniform draw from the others; None for the whole batch."""
        f = self.cfg.batch_share
        if f >= 1.0:
            return None
        m = max(idx.numel(), math.ceil(f * batch_size))
        gen = ctx.generator
        perm = torch.randperm(batch_size, generator=gen, device=gen.device).to(idx.device)
        others = perm[~torch.isin(perm, idx)]
        return torch.cat([idx, others])[:m]

    # -- Section V-A: dynamic alpha ----------------------------------------------------------------
    @torch.no_grad()
    def subsample_accuracy(
        self, model: nn.Module, train_data: Any, generator: torch.Generator, device: torch.device, batch_size: int = 500
    ) -> float:
        """Clean accuracy (percent) on `acc_subsample` images of `train_data` (the training images, or the
        held-out ones) drawn with `generator`, eval mode (all of them when there are no more)."""
        n = len(train_data)
        if n == 0:
            raise ValueError("the training set is empty; MixTrain needs training images to update alpha")
        m = min(self.cfg.acc_subsample, n)
        idx = torch.randperm(n, generator=generator, device=generator.device)[:m].cpu()
        tensors = getattr(train_data, "tensors", None)
        if tensors is not None:
            xs, ys = tensors[0][idx], tensors[1][idx]
        else:
            items = [train_data[i] for i in idx.tolist()]
            xs = torch.stack([torch.as_tensor(it[0]) for it in items])
            ys = torch.as_tensor([int(it[1]) for it in items])
        hits = 0
        with eval_mode(model):
            for i in range(0, m, batch_size):
                xb, yb = xs[i : i + batch_size].to(device), ys[i : i + batch_size].to(device)
                hits += int((model(xb).argmax(1) == yb).sum())
        return 100.0 * hits / m

    def end_epoch(self, model: nn.Module, ctx: EpochContext) -> dict[str, float]:
        held = ctx.extra.get("holdout")  # --holdout: the held-out images (see the class docstring)
        acc = self.subsample_accuracy(model, ctx.train_data if held is None else held, ctx.generator, ctx.device)
        used = 0.0 if ctx.epoch < self.warmup_epochs else self.alpha  # what `loss` weighed this epoch with
        if not self.fixed and ctx.epoch >= self.first_rule_epoch:
            self.alpha = update_alpha(self.alpha, acc, self.acc0, self.cfg.alpha_step, self.cfg.alpha_min)
        # "alpha" is the epoch's own (logged and plotted with the epoch it weighed); "alpha_next" the update
        out = {
            "alpha": used,
            "alpha_next": self.alpha,
            "subsample_acc": acc,
            "acc0": self.acc0,
            # the epoch's mean over the bounded samples (replaces the loop's per-batch average)
            "verified_loss": self._vsum / self._vcount if self._vcount else float("nan"),
            "verified_samples": self._vcount,
        }
        self._vsum, self._vcount = 0.0, 0
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "plan_epoch": self._plan_epoch,
            "plan": None if self._plan is None else self._plan.state_dict(),
            "verified_sum": self._vsum,
            "verified_count": self._vcount,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not self.fixed:
            self.alpha = float(state["alpha"])
        self._plan_epoch = int(state.get("plan_epoch", -1))
        plan = state.get("plan")
        self._plan = None if plan is None else SamplePlan.from_state(plan)
        self._vsum = float(state.get("verified_sum", 0.0))
        self._vcount = int(state.get("verified_count", 0))
