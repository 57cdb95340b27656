"""The one training loop every method shares (Section V-A): a method only supplies its `Objective`.

The run folder (its files, checkpoints, random states) is `veritrain.training.run_dir`; devices are
`veritrain.device`.

A run killed at any point and restarted with `resume=True` replays the interrupted epoch from the last
checkpoint with the same random numbers, so it ends exactly as an uninterrupted run would.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
import time
from collections import defaultdict
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import TensorDataset

from veritrain.attacks import ATTACKS
from veritrain.attacks.base import eval_mode
from veritrain.bounds import DOMAINS
from veritrain.data.augment import AUGMENTATIONS, augment
from veritrain.device import peak_memory_mb, reset_peak_memory, select_device, synchronize
from veritrain.errors import ConfigError, TrainingError
from veritrain.evaluation.accuracy import accuracy, batch_accuracy
from veritrain.evaluation.evaluate import evaluate_tensors
from veritrain.evaluation.results import bound_engine_accepts
from veritrain.registry import split_names
from veritrain.reporting.io import append_jsonl, write_json, write_jsonl
from veritrain.training import distributed
from veritrain.training.config import TrainConfig
from veritrain.training.methods import METHODS, EpochContext, Objective, StepContext
from veritrain.training.monitor import EpochMonitor, TensorBoardLog, check_tensorboard
from veritrain.training.run_dir import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    RunFiles,
    get_rng_state,
    load_checkpoint,
    read_metrics,
    save_checkpoint,
    save_weights,
    seed_everything,
    set_rng_state,
)
from veritrain.training.run_lock import acquire as acquire_lock
from veritrain.training.run_lock import release as release_lock
from veritrain.training.schedules import (
    EPS_SCHEDULES,
    FITTED,
    OPTIMIZERS,
    budget_epochs,
    fit_schedule,
    make_optimizer,
    make_scheduler,
    step_schedule,
)
from veritrain.validation import LINF, NORMS, check_labels
from veritrain.versions import versions

# options that may change between a checkpoint and its resumption (they do not affect the trajectory)
RESUMABLE_CHANGES = frozenset(
    {
        "epochs",
        "device",
        "progress",
        "resume",
        "overwrite",
        "out",
        "data_dir",
        "eval_n",
        "eval_attacks",
        "eval_domains",
        "full_eval",
        "budget_minutes",
        "monitor_n",
        "tensorboard",
    }
)


# ----------------------------------------------------------------------------- validation


def validate_config(cfg: TrainConfig) -> TrainConfig:
    """The one validation entry point of a training configuration: resolve the paper defaults, check the
    numbers and names, and build the method's objective (whose constructor checks its own options).
    Every problem raises `ConfigError` (a TrainingError, a ValueError) with a one-line message."""
    cfg = cfg.resolved()
    checks = [
        (cfg.epochs >= 1, f"--epochs must be at least 1, got {cfg.epochs}"),
        (cfg.batch_size >= 1, f"--batch-size must be at least 1, got {cfg.batch_size}"),
        (cfg.lr is not None and cfg.lr > 0, f"--lr must be positive, got {cfg.lr}"),
        (cfg.lr_step >= 1, f"--lr-step must be at least 1, got {cfg.lr_step}"),
        (cfg.lr_gamma > 0, f"--lr-gamma must be positive, got {cfg.lr_gamma}"),
        (math.isfinite(cfg.eps) and cfg.eps >= 0, f"--eps must be a finite number >= 0 (pixel space), got {cfg.eps}"),
        (
            cfg.norm != LINF or cfg.eps <= 1,
            f"--eps {cfg.eps} exceeds 1, the whole pixel range [0, 1] (L-inf); pixel-space eps are e.g. 0.1, 0.3, 2/255",
        ),
        (
            cfg.eps_start is None or (math.isfinite(cfg.eps_start) and cfg.eps_start >= 0),
            f"--eps-start must be a finite number >= 0, got {cfg.eps_start}",
        ),
        (cfg.eps_ramp_epochs >= 0, f"--eps-ramp-epochs must be >= 0, got {cfg.eps_ramp_epochs}"),
        (
            cfg.eps_train is None or (math.isfinite(cfg.eps_train) and cfg.eps_train >= 0),
            f"--eps-train must be a finite number >= 0, got {cfg.eps_train}",
        ),
        (
            cfg.eps_schedule in EPS_SCHEDULES,
            f"unknown eps schedule {cfg.eps_schedule!r}; choose one of: {', '.join(EPS_SCHEDULES)}",
        ),
        (cfg.clean_epochs >= 0, f"--clean-epochs must be >= 0, got {cfg.clean_epochs}"),
        (cfg.l1_reg >= 0, f"--l1-reg must be >= 0, got {cfg.l1_reg}"),
        (
            cfg.budget_minutes is None or cfg.budget_minutes > 0,
            f"--budget-minutes must be positive, got {cfg.budget_minutes}",
        ),
        (
            not cfg.fit_budget or cfg.budget_minutes is not None,
            "--fit-budget fits the schedule to --budget-minutes: pass both",
        ),
        (not (cfg.ibp_init and cfg.weights), "--ibp-init re-initialises the network: it contradicts --weights"),
        (cfg.norm in NORMS, f"unknown norm {cfg.norm!r}; choose one of: {', '.join(NORMS)}"),
        (cfg.optimizer in OPTIMIZERS, f"unknown optimizer {cfg.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}"),
        (cfg.train_size is None or cfg.train_size >= 1, f"--train-size must be at least 1, got {cfg.train_size}"),
        (cfg.holdout >= 0, f"--holdout must be >= 0 (0: no held-out images), got {cfg.holdout}"),
        (
            not cfg.keep_best or cfg.holdout > 0,
            "--keep-best ranks the epochs on held-out images: it needs --holdout N (e.g. 5000)",
        ),
        (cfg.grad_clip is None or cfg.grad_clip > 0, f"--grad-clip must be positive, got {cfg.grad_clip}"),
        (cfg.eval_n >= 1, f"--eval-n must be at least 1, got {cfg.eval_n}"),
        (cfg.monitor_n >= 0, f"--monitor-n must be >= 0, got {cfg.monitor_n}"),
        (
            cfg.augment in AUGMENTATIONS,
            f"unknown augmentation {cfg.augment!r}; choose one of: {', '.join(AUGMENTATIONS)}",
        ),
        (
            cfg.ema is None or (math.isfinite(cfg.ema) and 0.0 < cfg.ema < 1.0),
            f"--ema must be a decay in (0, 1), got {cfg.ema}",
        ),
        (cfg.augment_pad >= 1, f"--augment-pad must be at least 1, got {cfg.augment_pad}"),
        (not (cfg.resume and cfg.overwrite), "--resume and --overwrite contradict each other; pass one"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)
    if cfg.tensorboard:
        check_tensorboard()
    try:
        objective = METHODS.get(cfg.method)  # the list of methods when unknown
        for name in split_names(cfg.eval_attacks):  # unknown evaluation names fail before training, not after it
            ATTACKS.get(name)
        for name in split_names(cfg.eval_domains):
            DOMAINS.get(name)
        if cfg.holdout > 0:
            DOMAINS.get(cfg.holdout_domain)
        objective(cfg)  # the method's own options (k, alpha0, kappa, ...)
    except ValueError as e:  # UnknownNameError is a ConfigError already
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(str(e)) from None
    return cfg


def _resolved_dict(values: dict[str, Any]) -> dict[str, Any]:
    """A stored configuration with today's resolved defaults filled in (checkpoints of older versions kept
    None for defaults such as acc0), so that resuming compares like with like."""
    try:
        return (
            TrainConfig.from_dict({k: v for k, v in values.items() if k in TrainConfig.__dataclass_fields__})
            .resolved()
            .to_dict()
        )
    except (TypeError, ValueError):
        return dict(values)


def _check_data(ds: TensorDataset, what: str) -> None:
    x = ds.tensors[0]
    if len(x) == 0:
        raise TrainingError(f"the {what} set is empty; check --dataset/--train-size")
    if not torch.isfinite(x).all():
        raise TrainingError(f"the {what} images contain NaN or inf values; the data files are corrupt")
    if x.min() < 0 or x.max() > 1:
        raise TrainingError(f"the {what} images are not pixels in [0, 1]; the data loader must scale them")
    try:
        check_labels(ds.tensors[1], len(x), None, f"the {what} labels")
    except ValueError as e:
        raise TrainingError(str(e)) from None
    if int(ds.tensors[1].min()) < 0:
        raise TrainingError(f"the {what} labels must be class indices >= 0, got {int(ds.tensors[1].min())}")


def _check_model_fits(model: nn.Module, ds: TensorDataset, net: str, dataset: str, device: torch.device) -> None:
    x, y = ds.tensors[0][:2].to(device), ds.tensors[1]
    try:
        with torch.no_grad(), eval_mode(model):
            out = model(x)
    except RuntimeError as e:
        msg = str(e).splitlines()[0][:160]
        raise TrainingError(
            f"network {net!r} does not accept {dataset!r} images of shape {tuple(x.shape[1:])} ({msg}); "
            "pick a network for this data set (veritrain models)"
        ) from None
    if out.dim() != 2 or int(y.max()) >= out.shape[1]:
        raise TrainingError(
            f"network {net!r} outputs {tuple(out.shape[1:])} logits but {dataset!r} has labels up to {int(y.max())}"
        )


# ----------------------------------------------------------------------------- building blocks


def build_model(cfg: TrainConfig) -> nn.Module:
    """`resolve_model(cfg.net, activation=cfg.activation)`, then `load_weights` when cfg.weights is set."""
    from veritrain.models import load_weights, resolve_model

    model = resolve_model(cfg.net, activation=cfg.activation)
    if cfg.weights:
        load_weights(model, cfg.weights)
    return model


def load_train_data(cfg: TrainConfig) -> TensorDataset:
    from veritrain.data import load_dataset, take_subset

    ds = load_dataset(cfg.dataset, "train", root=cfg.data_dir)
    if cfg.train_size is not None:
        ds = take_subset(ds, cfg.train_size, cfg.train_subset_seed)
    return ds


#: offset of the held-out split's seed from --seed (the trainer's generators take seed, seed + 1, seed + 2)
HOLDOUT_SEED_OFFSET = 3


def split_train_data(cfg: TrainConfig, ds: TensorDataset) -> tuple[TensorDataset, TensorDataset | None]:
    """(the images trained on, the `cfg.holdout` held-out ones or None): the same split for the same seed and
    data, so a resumed run (and every torchrun process) holds out the same images. ConfigError when
    --holdout leaves no image to train on."""
    from veritrain.data.loaders import split_holdout

    if cfg.holdout <= 0:
        return ds, None
    if cfg.holdout >= len(ds):
        raise ConfigError(
            f"--holdout {cfg.holdout} leaves no image to train on: the training set has {len(ds)} images"
            + (" (after --train-size)" if cfg.train_size is not None else "")
            + "; lower --holdout"
        )
    return split_holdout(ds, cfg.holdout, cfg.seed + HOLDOUT_SEED_OFFSET)


def load_test_data(cfg: TrainConfig) -> TensorDataset:
    from veritrain.data import load_dataset

    return load_dataset(cfg.dataset, "test", root=cfg.data_dir)


def l1_norm(model: nn.Module) -> torch.Tensor:
    """Sum of |w| over the weight matrices and kernels (not biases, not normalisation): the L1 penalty."""
    return sum(
        (p.abs().sum() for p in model.parameters() if p.requires_grad and p.dim() > 1),
        torch.zeros((), device=next(model.parameters()).device),
    )


def _progress(iterable: Any, enabled: bool, desc: str) -> Any:
    from veritrain.progress import progress_bar

    return progress_bar(iterable, enabled=enabled, desc=desc)


# ----------------------------------------------------------------------------- the loop


class Trainer:
    """Holds the state of one run; `train()` below is the entry point."""

    def __init__(
        self,
        cfg: TrainConfig,
        model: nn.Module,
        train_data: TensorDataset,
        test_data: TensorDataset | None,
        device: torch.device,
        holdout_data: TensorDataset | None = None,
    ) -> None:
        self.cfg = cfg
        self.device = device
        self.model = model.to(device)
        self.train_data = train_data
        self.test_data = test_data
        self.holdout_data = holdout_data  # --holdout: images kept aside (`split_train_data`)
        self._holdout_sound: bool | None = None  # whether the bound engine accepts the network (`holdout_metrics`)
        #: --keep-best: {"epoch" (1-based), "key" (`best_key`), "model" (its weights on the CPU)}
        self.best: dict[str, Any] | None = None
        self.objective: Objective = METHODS.get(cfg.method)(cfg)
        self.optimizer = make_optimizer(self.model, cfg)
        self.scheduler = make_scheduler(self.optimizer, cfg)
        self.shuffle_gen = torch.Generator().manual_seed(cfg.seed)
        self.method_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        self.epoch = 0  # epochs finished
        self.step = 0
        #: --fit-budget: {"from": planned epochs, "to": fitted epochs, "epoch": epochs done at the first fit,
        #: "refit": epochs done at the second (after the ramp), once refitted}
        self.fitted: dict[str, int] | None = None
        self.metrics: list[dict[str, Any]] = []
        self.files = RunFiles(cfg.out)
        self.objective.prepare(self.model, torch.Generator().manual_seed(cfg.seed + 2))
        self.procs = distributed.current()  # torchrun: this process's rank among the data-parallel processes
        if self.procs.active:
            distributed.broadcast_parameters(self.model)
        #: --ema: the moving average of the weights (`AveragedModel`; `.module` is the averaged network)
        self.ema: AveragedModel | None = None
        if cfg.ema is not None:
            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
        self.monitor = EpochMonitor(cfg, test_data, self.objective)
        self.tensorboard: TensorBoardLog | None = None  # set by `train` with --tensorboard

    # -- checkpoints
    def state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "rng": get_rng_state(self.shuffle_gen, self.method_gen),
            "objective": self.objective.state_dict(),
            "metrics": self.metrics,
            "best": self.best,
            "fitted": self.fitted,
            "ema": None if self.ema is None else self.ema.state_dict(),
        }

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Load a checkpoint into this trainer; TrainingError when it belongs to another run."""
        old = _resolved_dict(ckpt.get("config", {}))
        if ckpt.get("fitted") and self.cfg.fit_budget:  # the schedule it was fitted to, not the planned one
            self.use_config(dataclasses.replace(self.cfg, **{k: old[k] for k in FITTED if k in old}))
        new = self.cfg.to_dict()
        changed = [k for k in new if k not in RESUMABLE_CHANGES and k in old and old[k] != new[k]]
        if changed:
            what = ", ".join(f"{k}={old[k]!r} (now {new[k]!r})" for k in changed[:4])
            raise TrainingError(
                f"{self.files.checkpoint} belongs to a run with other options: {what}; "
                "resume with the same options or train into a new --out"
            )
        if ckpt["epoch"] > self.cfg.epochs:
            raise TrainingError(
                f"{self.files.checkpoint} has already trained {ckpt['epoch']} epochs, more than --epochs {self.cfg.epochs}"
            )
        try:
            self.model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            raise TrainingError(
                f"{self.files.checkpoint} holds weights of another architecture than {self.cfg.net!r} "
                f"({str(e).splitlines()[0][:120]}); resume with the same --net or train into a new --out"
            ) from None
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            self.objective.load_state_dict(ckpt["objective"])
            set_rng_state(ckpt["rng"], self.shuffle_gen, self.method_gen)
            if self.ema is not None:
                self.ema.load_state_dict(ckpt["ema"])
        except (KeyError, ValueError, RuntimeError, TypeError) as e:
            raise TrainingError(
                f"{self.files.checkpoint} is incomplete or inconsistent ({e}); train into a new --out"
            ) from None
        self.epoch = int(ckpt["epoch"])
        self.step = int(ckpt["step"])
        self.metrics = list(ckpt["metrics"])
        self.best = ckpt.get("best")
        self.fitted = ckpt.get("fitted")

    @property
    def evaluated(self) -> nn.Module:
        """The network that is measured and kept: the moving average with --ema, else the trained one."""
        return self.model if self.ema is None else self.ema.module

    def run_weights(self) -> dict[str, torch.Tensor]:
        """The run's weights (RUN/model.pt, the final evaluation): the kept epoch's with --keep-best, else the
        latest (averaged with --ema)."""
        if self.cfg.keep_best and self.best is not None:
            return dict(self.best["model"])
        return self.evaluated.state_dict()

    def save(self) -> None:
        save_checkpoint(self.files.checkpoint, self.state())
        save_weights(self.files.model, self.run_weights())

    # -- held-out images (--holdout) and the kept epoch (--keep-best)
    def holdout_metrics(self) -> dict[str, Any]:
        """Clean accuracy and certified accuracy (`holdout_domain`, at the final eps `cfg.eps`) on every held-out
        image, in percent; `holdout_vra` is None when the bound engine does not accept the network."""
        if self.holdout_data is None:
            return {}
        from veritrain.evaluation.accuracy import correct, percent
        from veritrain.evaluation.vra import verified_mask

        cfg = self.cfg
        t0, cpu0 = time.perf_counter(), time.process_time()
        x, y = self.holdout_data.tensors[0], self.holdout_data.tensors[1]
        batch = max(cfg.batch_size, 500)
        model = self.evaluated
        out: dict[str, Any] = {"holdout_acc": percent(correct(model, x, y, batch)), "holdout_n": len(x)}
        if cfg.eps > 0:
            if self._holdout_sound is None:  # the architecture decides it: checked once
                self._holdout_sound = bound_engine_accepts(model, tuple(x.shape[1:])) is None
            out["holdout_vra"] = (
                percent(verified_mask(model, x, y, cfg.eps, cfg.holdout_domain, cfg.norm, batch, progress=False))
                if self._holdout_sound
                else None
            )
        out["holdout_time"] = time.perf_counter() - t0
        out["holdout_cpu_time"] = time.process_time() - cpu0
        return out

    def best_key(self, row: dict[str, Any]) -> tuple[bool, float, float]:
        """How --keep-best ranks an epoch: after the eps ramp first (a ramp epoch is kept only while no later
        epoch exists), then held-out certified accuracy, then clean accuracy."""
        return (
            int(row["epoch"]) >= self.cfg.ramp_end,
            float(row.get("holdout_vra") or 0.0),
            float(row["holdout_acc"]),
        )

    def consider_best(self, row: dict[str, Any]) -> None:
        """Keep this epoch's weights when it beats the kept one (a tie keeps the earlier epoch)."""
        if not self.cfg.keep_best:
            return
        key = self.best_key(row)
        if self.best is None or key > tuple(self.best["key"]):
            weights = {k: v.detach().cpu().clone() for k, v in self.evaluated.state_dict().items()}
            self.best = {"epoch": int(row["epoch"]), "key": list(key), "model": weights}

    # -- one epoch
    def run_epoch(self) -> dict[str, Any]:
        cfg, e = self.cfg, self.epoch
        lr = self.optimizer.param_groups[0]["lr"]
        x_all, y_all = self.train_data.tensors[0], self.train_data.tensors[1]
        n = len(x_all)
        perm = torch.randperm(n, generator=self.shuffle_gen)
        num_batches = math.ceil(n / cfg.batch_size)
        schedule = step_schedule(cfg, num_batches)
        eps = schedule.eps_at(e, self.step)
        sums: dict[str, float] = defaultdict(float)
        seen = 0
        batch_times: list[float] = []
        reset_peak_memory(self.device)
        self.model.train()
        bar = _progress(range(num_batches), cfg.progress, f"epoch {e + 1}/{cfg.epochs}")
        t_epoch, cpu_epoch = time.perf_counter(), time.process_time()
        for b in bar:
            idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            x, y = augment(x_all[idx], cfg.augment or "none", self.shuffle_gen, cfg.augment_pad), y_all[idx]
            share = 1.0  # torchrun: this process's rows of the global batch, and its share of the loss
            if self.procs.active:
                rows = distributed.share(len(idx), self.procs)
                x, y = x[rows], y[rows]
                share = len(y) / len(idx)
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            t0 = time.perf_counter()
            eps = schedule.eps_at(e, self.step)
            ctx = StepContext(
                eps=eps, epoch=e, step=self.step, num_batches=num_batches, generator=self.method_gen, device=self.device
            )
            if len(y):
                loss, m = self.objective.loss(self.model, x, y, ctx)
                if cfg.l1_reg > 0:
                    loss = loss + cfg.l1_reg * l1_norm(self.model)
                bad = not bool(torch.isfinite(loss))
                self.optimizer.zero_grad(set_to_none=True)
                if not bad:
                    (loss * share if share != 1.0 else loss).backward()
            else:  # torchrun: a last batch with fewer images than processes leaves this one none
                loss, m, bad = torch.zeros((), device=self.device), {"acc": 0.0}, False
                self.optimizer.zero_grad(set_to_none=True)
            if self.procs.active:
                bad = distributed.sum_gradients(self.model, bad)
            if bad:
                raise TrainingError(
                    f"the loss became {loss.item()} at epoch {e + 1}, batch {b + 1}; "
                    "lower --lr or check the data (the last checkpoint is intact)"
                )
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            synchronize(self.device)
            batch_times.append(time.perf_counter() - t0)
            m = dict(m)
            acc = m.pop("acc", None)
            if acc is None:  # the objective did not report clean batch accuracy: measure it
                with torch.no_grad():
                    acc = batch_accuracy(self.model(x), y)
            bs = len(y)
            seen += bs
            sums["loss"] += loss.item() * bs
            sums["train_acc"] += float(acc) * bs
            for k, v in m.items():
                sums[k] += float(v) * bs
            self.step += 1
            if cfg.progress:
                bar.set_postfix(loss=f"{sums['loss'] / seen:.4f}", acc=f"{sums['train_acc'] / seen:.1f}")
        if self.procs.active:  # the epoch's means over the images of every process
            keys = distributed.all_keys(set(sums))
            totals = distributed.sum_floats({**{k: sums.get(k, 0.0) for k in keys}, " seen": float(seen)})
            seen = int(totals.pop(" seen"))
            sums = defaultdict(float, totals)
        self.scheduler.step()
        end = self.objective.end_epoch(
            self.model,
            EpochContext(
                eps=eps,
                epoch=e,
                train_data=self.train_data,
                generator=self.method_gen,
                device=self.device,
                extra={} if self.holdout_data is None else {"holdout": self.holdout_data},
            ),
        )
        if self.procs.active:  # rank 0's end of epoch (e.g. MixTrain's alpha) decides for every process
            state, end = distributed.from_main((self.objective.state_dict(), end))
            self.objective.load_state_dict(state)
        row: dict[str, Any] = {"epoch": e + 1, "eps": eps, "lr": lr}
        row.update({k: v / seen for k, v in sums.items()})
        row.update({k: (float(v) if isinstance(v, (int, float)) else v) for k, v in (end or {}).items()})
        row["batch_time"] = float(np.mean(batch_times))
        row["epoch_time"] = time.perf_counter() - t_epoch
        row["cpu_time"] = time.process_time() - cpu_epoch  # CPU seconds of this process (all its threads)
        row["peak_mem_mb"] = peak_memory_mb(self.device)
        self.epoch += 1
        return row

    def use_config(self, cfg: TrainConfig) -> None:
        """Train on with `cfg` (the same run with another schedule, `fit_schedule`): the objective reads it
        and the learning-rate schedule is rebuilt from it, keeping the current learning rate and epoch."""
        self.cfg = cfg
        self.objective.cfg = cfg
        lrs, last = [g["lr"] for g in self.optimizer.param_groups], self.scheduler.last_epoch
        self.scheduler = make_scheduler(self.optimizer, cfg)
        self.scheduler.last_epoch = last
        for g, lr in zip(self.optimizer.param_groups, lrs):
            g["lr"] = lr

    def phase_cost_ratios(self, steps: int = 3) -> tuple[float, float]:
        """CPU time of a training step half-way through the eps ramp and of one after it, each over that of a
        step like the last one trained (`fit_to_budget`): the cost of a step changes with eps and the method's
        own ramps (CROWN-IBP's backward pass ends with its beta ramp). Timed on copies of the network and the
        objective with their own generator, on the first batch (one untimed step first), so the run is untouched;
        their few seconds are not counted to the budget. Each ratio is kept within [1/100, 100]."""
        cfg = self.cfg
        x_all, y_all = self.train_data.tensors[0], self.train_data.tensors[1]
        x, y = x_all[: cfg.batch_size].to(self.device), y_all[: cfg.batch_size].to(self.device)
        num_batches = math.ceil(len(x_all) / cfg.batch_size)
        schedule = step_schedule(cfg, num_batches)
        model, objective = copy.deepcopy(self.model), copy.deepcopy(self.objective)
        model.train()
        generator = torch.Generator(device=self.method_gen.device).manual_seed(cfg.seed + 7)
        mid = cfg.clean_epochs * num_batches + max(cfg.eps_ramp_epochs, 1) * num_batches // 2
        steps_at = (max(self.step - 1, 0), mid, cfg.ramp_end * num_batches)
        seconds = []
        for step in steps_at:
            epoch = step // num_batches
            ctx = StepContext(schedule.eps_at(epoch, step), epoch, step, num_batches, generator, self.device)
            spent = 0.0
            for i in range(steps + 1):
                t0 = time.process_time()
                loss, _ = objective.loss(model, x, y, ctx)
                model.zero_grad(set_to_none=True)
                loss.backward()
                synchronize(self.device)
                if i > 0:
                    spent += time.process_time() - t0
            seconds.append(max(spent, 1e-9))
        ramp, post = (min(100.0, max(0.01, t / seconds[0])) for t in seconds[1:])
        return ramp, post

    def fit_to_budget(self, row: dict[str, Any]) -> None:
        """--fit-budget, twice. After the first epoch of the eps ramp (`row`, its CPU time with the held-out
        evaluation): the epochs the rest of the budget allows (`budget_epochs`), the remaining ramp epochs and the
        later ones costing that epoch's time scaled by `phase_cost_ratios`. After the first epoch past the ramp:
        again, at that epoch's own cost (every later epoch trains at the same eps), which moves only what lies
        ahead (the learning-rate drops), so that a run priced high in its ramp still spends its budget. The
        schedule is rescaled to them (`fit_schedule`). Rank 0 decides under torchrun."""
        cfg = self.cfg
        if not cfg.fit_budget or cfg.budget_minutes is None:
            return
        first = not self.fitted and self.epoch == cfg.clean_epochs + 1
        refit = self.fitted is not None and "refit" not in self.fitted and self.epoch == cfg.ramp_end + 1
        if not (first or (refit and self.epoch < cfg.epochs)):
            return
        epochs = cfg.epochs
        if self.procs.main:
            left = 60.0 * cfg.budget_minutes - sum(float(r.get("cpu_time", 0.0)) for r in self.metrics)
            per = float(row.get("cpu_time", 0.0))
            if per > 0 and first:
                ramp, post = self.phase_cost_ratios()
                # the rest of the ramp is priced no lower than the epoch just measured: eps only grows in it (a
                # 30-minute crown-ibp run priced at the probe's 0.86 ran 14% dearer and lost its last 3 epochs)
                epochs = budget_epochs(cfg, self.epoch, left, per * max(ramp, 1.0), per * post)
            elif per > 0:
                epochs = budget_epochs(cfg, self.epoch, left, per, per)
        if self.procs.active:
            epochs = int(distributed.from_main(epochs))
        epochs = max(epochs, self.epoch)
        if first:
            self.fitted = {"from": cfg.epochs, "to": epochs, "epoch": self.epoch}
        else:
            assert self.fitted is not None
            self.fitted = {**self.fitted, "to": epochs, "refit": self.epoch}
        if epochs != cfg.epochs:
            self.use_config(fit_schedule(cfg, epochs, self.epoch))
            if self.procs.main:
                self.write_config()

    def write_config(self) -> None:
        """RUN/config.json: the run's configuration (after a resume or `fit_to_budget`, the one it trains on)."""
        write_json(self.files.config, {**self.cfg.to_dict(), "versions": versions()})

    def budget_spent(self) -> bool:
        """Whether the training CPU time of the run (all epochs, across resumes) reached `budget_minutes`."""
        if self.cfg.budget_minutes is None:
            return False
        return sum(float(r.get("cpu_time", 0.0)) for r in self.metrics) >= 60.0 * self.cfg.budget_minutes

    def stop_by_budget(self) -> bool:
        """`budget_spent`, decided by rank 0 under torchrun (CPU times differ between processes, and rank 0's
        include the held-out evaluation), so that every process stops after the same epoch."""
        spent = self.budget_spent()
        if self.procs.active and self.cfg.budget_minutes is not None:
            spent = distributed.from_main(spent)
        return spent

    def fit(self) -> None:
        while self.epoch < self.cfg.epochs and not self.stop_by_budget():
            row = self.run_epoch()
            if self.procs.main:  # torchrun: rank 0 measures, logs and writes the run folder
                row.update(self.monitor(self.evaluated))
                row.update(self.holdout_metrics())
                # the held-out evaluation is part of training (alpha, --keep-best): its CPU time counts to the budget
                row["cpu_time"] += row.pop("holdout_cpu_time", 0.0)
                self.consider_best(row)
                if self.best is not None:
                    row["kept_epoch"] = self.best["epoch"]
            self.metrics.append(row)
            self.fit_to_budget(row)
            if not self.procs.main:
                continue
            # checkpoint first: a kill between the two writes leaves metrics.jsonl one line short,
            # and resuming rewrites metrics.jsonl from the checkpoint anyway
            self.save()
            append_jsonl(self.files.metrics, row)
            if self.tensorboard is not None:
                self.tensorboard.log(row)
            if not self.cfg.progress:
                continue
            held = "" if "holdout_acc" not in row else f"  held-out acc {row['holdout_acc']:.2f}%"
            if row.get("holdout_vra") is not None:
                held += f" vra {row['holdout_vra']:.2f}%"
            print(
                f"epoch {row['epoch']}/{self.cfg.epochs}: loss {row['loss']:.4f}  "
                f"train acc {row['train_acc']:.2f}%  eps {row['eps']:.4g}{held}",
                file=sys.stderr,
            )
        if self.procs.main and not self.files.model.exists():
            # a resume with no epoch left to train (e.g. --epochs lowered) still leaves the weights it evaluates
            save_weights(self.files.model, self.run_weights())


def _evaluate_run(trainer: Trainer) -> dict[str, Any]:
    """ACC on the whole test set; ERA/VRA on the first eval_n test images (all with full_eval); the run's
    weights (`Trainer.run_weights`: with --keep-best the kept epoch's) are loaded first."""
    cfg = trainer.cfg
    trainer.model.load_state_dict(trainer.run_weights())
    if trainer.test_data is None:
        return {"test_acc": None}  # no test data given
    x, y = trainer.test_data.tensors[0], trainer.test_data.tensors[1]
    model = trainer.model.eval()
    out: dict[str, Any] = {"test_acc": accuracy(model, x, y, batch_size=max(cfg.batch_size, 500)), "test_n": len(x)}
    if cfg.eps > 0:
        n = len(x) if cfg.full_eval else min(cfg.eval_n, len(x))
        out["eval"] = evaluate_tensors(
            model,
            x[:n],
            y[:n],
            eps=cfg.eps,
            norm=cfg.norm,
            attacks=split_names(cfg.eval_attacks),
            domains=split_names(cfg.eval_domains),
            progress=cfg.progress,
            seed=cfg.seed,
        )
    return out


def train(
    cfg: TrainConfig,
    *,
    model: nn.Module | None = None,
    train_data: TensorDataset | None = None,
    test_data: TensorDataset | None = None,
) -> dict[str, Any]:
    """Train `cfg.net` on `cfg.dataset` with `cfg.method` and return the summary (also RUN/summary.json).

    `model`, `train_data` and `test_data` replace what `cfg` names (Python API for own networks/data;
    with `train_data` given and no `test_data`, no test evaluation is done). Everything is validated
    (options, device, network, data, checkpoint) before any file in RUN is created or changed.
    """
    t_start = time.perf_counter()
    cfg = validate_config(cfg)
    device = distributed.setup(cfg.device)  # under torchrun: this process's device, and the process group
    if not distributed.current().main:
        return _train_follower(cfg, device, model, train_data)
    files = RunFiles(cfg.out)
    if cfg.resume and not files.checkpoint.exists():
        raise TrainingError(
            f"--resume: {files.dir} holds no run to resume (no {files.CHECKPOINT}"
            + (", the run never finished an epoch" if files.config.exists() else "")
            + "); check --out, or "
            + (
                "pass --overwrite instead of --resume to start it again"
                if files.config.exists()
                else "drop --resume to start a new run"
            )
        )
    created = not files.dir.exists()
    lock = acquire_lock(files.dir, f"training ({cfg.method})")  # one process per run folder
    try:
        return _train_locked(cfg, device, files, t_start, model, train_data, test_data)
    finally:
        release_lock(lock)
        if created and files.dir.is_dir() and not any(files.dir.iterdir()):
            files.dir.rmdir()  # the run failed before writing anything: leave no empty folder behind


def _check_bound_support(objective: Objective, model: nn.Module, ds: TensorDataset, method: str) -> None:
    """A method that trains on sound bounds is refused before its first epoch when an op of the network has
    no rule in its domain (`veritrain.bounds.check_supported`: the op, its line in the user's code)."""
    from veritrain.bounds import UnsupportedLayerError, check_supported

    domain = objective.training_domain
    if domain is None:
        return
    try:
        check_supported(model, tuple(ds.tensors[0].shape[1:]), [domain])
    except UnsupportedLayerError as e:
        raise TrainingError(
            f"--method {method} trains on {domain} bounds, which this network does not allow: {e}"
        ) from None


def _train_locked(
    cfg: TrainConfig,
    device: torch.device,
    files: RunFiles,
    t_start: float,
    model: nn.Module | None,
    train_data: TensorDataset | None,
    test_data: TensorDataset | None,
) -> dict[str, Any]:
    """`train` once the run folder is locked."""
    ckpt = load_checkpoint(files.checkpoint) if cfg.resume else None
    seed_everything(cfg.seed)
    if model is None:
        model = build_model(cfg)
    if train_data is None:
        train_data = load_train_data(cfg)
        if test_data is None:
            test_data = load_test_data(cfg)
    _check_data(train_data, "training")
    if test_data is not None:
        _check_data(test_data, "test")
    train_data, holdout_data = split_train_data(cfg, train_data)
    model = model.to(device)
    _check_model_fits(model, train_data, cfg.net, cfg.dataset, device)
    trainer = Trainer(cfg, model, train_data, test_data, device, holdout_data)
    _check_bound_support(trainer.objective, model, train_data, cfg.method)
    if ckpt is not None:
        trainer.restore(ckpt)
    elif files.started() and not cfg.overwrite:
        hint = "pass --resume to continue it" if files.checkpoint.exists() else "its checkpoint is missing"
        raise TrainingError(
            f"{files.dir} already holds a training run ({hint}, --overwrite to start afresh, or choose another --out)"
        )
    # everything is valid: from here on the run folder is written
    files.dir.mkdir(parents=True, exist_ok=True)
    if ckpt is not None:
        write_jsonl(files.metrics, trainer.metrics)  # drop lines of an epoch that did not checkpoint
    else:
        for p in files.training_outputs():
            if p.exists():
                p.unlink()
    trainer.write_config()
    t_fit = time.perf_counter()
    if cfg.tensorboard:
        trainer.tensorboard = TensorBoardLog(files.tensorboard)
    try:
        trainer.fit()
    finally:
        if trainer.tensorboard is not None:
            trainer.tensorboard.close()
    t_fit = time.perf_counter() - t_fit
    # every epoch of the run, across resumes (an interrupted epoch, replayed, counts once)
    train_time = sum(float(r.get("epoch_time", 0.0)) for r in trainer.metrics)
    t_eval = time.perf_counter()
    evaluation = _evaluate_run(trainer)
    summary: dict[str, Any] = {
        "net": cfg.net,
        "dataset": cfg.dataset,
        "method": cfg.method,
        "eps": cfg.eps,
        "epochs": trainer.cfg.epochs,
        # --fit-budget: the epochs planned before the schedule was fitted to the budget (None: not fitted)
        "planned_epochs": trainer.fitted["from"] if trainer.fitted else None,
        "seed": cfg.seed,
        "device": str(device),
        # VRA is meaningful when the bound engine accepts the network (not e.g. an ELU one)
        "sound": bound_engine_accepts(trainer.model, tuple(train_data.tensors[0].shape[1:])) is None,
        "train_size": len(train_data),  # the images trained on (without the held-out ones)
        "holdout": cfg.holdout,
        # --keep-best: the epoch whose weights are model.pt and were evaluated (None: the last epoch's)
        "kept_epoch": trainer.best["epoch"] if cfg.keep_best and trainer.best is not None else None,
        "final": trainer.metrics[-1] if trainer.metrics else {},
        **evaluation,
        "epochs_trained": trainer.epoch,
        "stopped_by_budget": trainer.epoch < trainer.cfg.epochs,
        "train_cpu_s": sum(float(r.get("cpu_time", 0.0)) for r in trainer.metrics),
        "time_s": {
            "train": train_time,
            "eval": time.perf_counter() - t_eval,
            "total": train_time + time.perf_counter() - t_eval,
            "train_this_process": t_fit,
            "this_process": time.perf_counter() - t_start,
        },
        "resumed": ckpt is not None,
        "versions": versions(),
    }
    write_json(files.summary, summary)
    if distributed.current().active:  # the other processes return rank 0's summary
        distributed.from_main(summary)
        distributed.shutdown()
    return summary


def _train_follower(
    cfg: TrainConfig, device: torch.device, model: nn.Module | None, train_data: TensorDataset | None
) -> dict[str, Any]:
    """torchrun, ranks > 0: train in step with rank 0 (its own share of every batch), write nothing, and
    return rank 0's summary. Rank 0 checks the run folder and the data; when it fails, torchrun stops all."""
    files = RunFiles(cfg.out)
    ckpt = load_checkpoint(files.checkpoint) if cfg.resume else None
    seed_everything(cfg.seed)
    model = (model if model is not None else build_model(cfg)).to(device)
    # the same split as rank 0: MixTrain's alpha reads the held-out images in every process
    train_data, holdout_data = split_train_data(cfg, train_data if train_data is not None else load_train_data(cfg))
    trainer = Trainer(cfg, model, train_data, None, device, holdout_data)
    if ckpt is not None:
        trainer.restore(ckpt)
    trainer.fit()
    summary: dict[str, Any] = distributed.from_main({})
    distributed.shutdown()
    return summary


__all__ = [
    "RunFiles",
    "Trainer",
    "TrainingError",
    "load_checkpoint",
    "read_metrics",
    "save_checkpoint",
    "seed_everything",
    "select_device",
    "train",
]
