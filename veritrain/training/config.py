"""Every option of `veritrain train`, in one flat dataclass; paper defaults are filled per dataset."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# Paper Section V-A: MNIST-like data sets use Adam 1e-3, CIFAR/ImageNet SGD 0.05; x0.6 every 5 epochs.
# MixTrain departs from it on colour data: with k' = 1 the one bounded image weighs alpha = 0.5 in Eqn. 9
# against 0.01 for each clean image, and SGD at lr 0.05 collapsed CIFAR Small to constant logits within the
# first epoch in every run we made (lr 0.01 stayed near chance), while Adam 1e-3 learns (results/README.md).
# MixTrain therefore defaults to Adam 1e-3 on every data set; --optimizer sgd restores the paper's setting.
_GREY = {"mnist", "fashion-mnist", "mnist-mini"}


@dataclass
class TrainConfig:
    # what to train
    net: str = "mnist-small"  # registry name or path/to/file.py:build_fn
    dataset: str = "mnist"
    method: str = "regular"
    weights: str | None = None  # initial weights (plain state_dict)
    activation: str = "relu"  # relu | elu (WRM needs a smooth activation)
    # data
    data_dir: str | None = None
    train_size: int | None = None  # first N training images (None: all)
    train_subset_seed: int | None = None  # draw the N at random with this seed instead
    # loop
    epochs: int = 60
    batch_size: int = 50
    optimizer: str | None = None  # adam | sgd (None: paper default for the data set)
    lr: float | None = None
    lr_step: int = 5
    lr_gamma: float = 0.6
    lr_milestones: str | None = None  # comma-separated epochs at which lr *= lr_gamma (replaces --lr-step)
    momentum: float = 0.9
    weight_decay: float = 0.0
    grad_clip: float | None = None  # clip the gradient's global L2 norm to this before each step
    augment: str | None = None  # none | crop | crop-flip (None: crop-flip for colour data, none for MNIST-like)
    seed: int = 0
    budget_minutes: float | None = None  # stop after the epoch in which the training CPU time reaches this (minutes)
    device: str = "cpu"
    out: str = "runs/run"
    resume: bool = False
    overwrite: bool = False  # start afresh in an existing RUN folder, replacing its files
    progress: bool = True
    # robustness (all robust methods)
    eps: float = 0.1  # final eps, pixel space [0, 1]
    norm: str = "linf"
    eps_start: float | None = None  # paper: 0.01 MNIST, 0.001 CIFAR
    eps_ramp_epochs: int = 10
    eps_train: float | None = None  # eps the training schedule ramps to (default: --eps)
    eps_schedule: str = "epoch"  # epoch | linear | smooth
    clean_epochs: int = 0  # epochs at eps = 0 before the eps ramp starts
    # certified training (ibp, crown-ibp, sabr, mtl-ibp, diffai; mixtrain with --batch-domain)
    kappa_start: float | None = None  # weight of the clean cross-entropy when the ramp starts
    kappa_end: float | None = None  # weight of the clean cross-entropy after the ramp
    beta_start: float = 1.0  # crown-ibp: weight of the CROWN-IBP bound (1 - beta: IBP) at the ramp start
    beta_end: float = 0.0  # crown-ibp: the same after the ramp
    ibp_init: bool = False  # Shi et al. 2021's initialisation
    bound_reg: float = 0.0  # weight of Shi et al.'s bound regularisers during the ramp
    l1_reg: float = 0.0  # L1 penalty on the weights (every method)
    sabr_lambda: float = 0.4  # sabr: the small box has radius lambda * eps
    mtl_alpha: float = 0.5  # mtl-ibp: weight of the IBP loss (1 - alpha: adversarial)
    adv_steps: int = 8  # sabr, mtl-ibp: PGD steps of the training attack
    batch_domain: str | None = None  # mixtrain: cheap sound bound on every sample of the batch
    # MixTrain (Section IV)
    domain: str = "symbolic-linear"
    k: int | None = None  # total sound samples per epoch (Eqn. 8)
    k_per_batch: int | None = None  # k' per batch (default 1)
    alpha0: float | None = None  # paper: 0.8 MNIST, 0.5 CIFAR
    alpha: float | None = None  # fixed alpha (Fig. 8, Table IX)
    alpha_step: float = 0.05
    acc0: float | None = None
    acc_subsample: int = 1000
    warmup_epochs: int = 0  # epochs of plain cross-entropy (alpha = 0) before Eqn. 9 starts
    # Madry / attacks
    pgd_steps: int = 40
    pgd_step_size: float = 0.01
    # WRM (Sinha et al.)
    gamma: float | None = None
    wrm_steps: int = 15
    wrm_clip: bool = False  # clip WRM's x' to [0, 1] (Sinha et al.'s reference code does not)
    # Wong et al.
    projections: int | None = None  # None: exact bound; 50 in the paper
    # DiffAI (Mirman et al.)
    diffai_kappa: float = 1.0  # weight of the box-domain verified loss; 1 - kappa on clean CE
    # final evaluation written to summary.json
    eval_n: int = 1000
    eval_attacks: str = "pgd"
    eval_domains: str = "symbolic-linear"
    full_eval: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def grey(self) -> bool:
        return self.dataset in _GREY

    def resolved(self) -> "TrainConfig":
        """A copy with the paper's per-dataset defaults filled in (Section V-A)."""
        c = dataclasses.replace(self)
        if c.optimizer is None:
            c.optimizer = "adam" if c.grey or c.method == "mixtrain" else "sgd"
        if c.lr is None:
            c.lr = 1e-3 if c.optimizer == "adam" else 0.05
        if c.eps_start is None:
            c.eps_start = 0.01 if c.grey else 0.001
        if c.augment is None:
            c.augment = "none" if c.grey else "crop-flip"
        if c.alpha0 is None:
            c.alpha0 = 0.8 if c.grey else 0.5
        return c

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)}")
        return cls(**d)
