"""Every option of `veritrain train`, in one flat dataclass; paper defaults are filled per dataset.

Each field carries its `veritrain train --help` text and option group as metadata (`option`): the CLI builds
its parser from these fields alone. A help text may name a registry or a per-data-set default in braces
(`{methods}`, `{defaults.acc0}`, see `veritrain.cli.help_names`), so name lists are never written by hand.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from veritrain.data.info import DATASETS, training_defaults
from veritrain.errors import ConfigError
from veritrain.validation import DEFAULT_DOMAIN, DEFAULT_NORM

# Paper Section V-A: MNIST-like data sets use Adam 1e-3, CIFAR/ImageNet SGD 0.05; x0.6 every 5 epochs.
# MixTrain departs from it on colour data: with k' = 1 the one bounded image weighs alpha = 0.5 in Eqn. 9
# against 0.01 for each clean image, and SGD at lr 0.05 collapsed CIFAR Small to constant logits within the
# first epoch in every run we made (lr 0.01 stayed near chance), while Adam 1e-3 learns (results/README.md).
# MixTrain therefore defaults to Adam 1e-3 on every data set; --optimizer sgd restores the paper's setting.
#: methods that use Adam on every data set, whatever the data set's default optimiser
ADAM_EVERYWHERE = ("mixtrain",)
#: the initial learning rate of each optimiser (Section V-A)
DEFAULT_LR = {"adam": 1e-3, "sgd": 0.05}

#: the option groups of `veritrain train --help`, in order
OPTION_GROUPS = {
    "general": "what and how to train",
    "robust": "robust training (eps; method-specific options are marked [method])",
    "eval": "evaluation: per epoch on a fixed test subset (RUN/metrics.jsonl), and at the end (RUN/summary.json)",
}


def option(
    default: Any = None, help: str = "", *, group: str = "general", methods: tuple[str, ...] = (), factory: Any = None
) -> Any:
    """A TrainConfig field with its help text and group; `methods` (those that read it) makes it a robust
    training option tagged [method] in the help."""
    if methods and group == "general":
        group = "robust"
    meta = {"help": help, "group": group, "methods": methods}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


_CERTIFIED = ("ibp", "crown-ibp", "sabr", "mtl-ibp", "diffai")


@dataclass
class TrainConfig:
    # what to train
    net: str = option("mnist-small", "network: a registered name ({models}) or path/to/file.py:build_fn")
    dataset: str = option("mnist", "data set: {datasets} (mnist-mini is embedded: no download)")
    method: str = option("regular", "training method: {methods}")
    weights: str | None = option(
        None, "initial weights: a plain state_dict file (.pt) for --net, e.g. a previous RUN/model.pt"
    )
    activation: str = option(
        "relu", "activation of the registered networks: {activations} (wrm: Sinha et al. need a smooth one, elu)"
    )
    # data
    data_dir: str | None = option(
        None, "data root holding the data sets (default: $VERITRAIN_DATA, else ~/.cache/veritrain)"
    )
    train_size: int | None = option(None, "train on the first N training images only (default: all)")
    train_subset_seed: int | None = option(
        None, "with --train-size: draw the N images at random with this seed instead of the first N"
    )
    holdout: int = option(
        0,
        "keep N training images (after --train-size) aside, drawn with --seed: never trained on nor augmented; "
        "every epoch logs their clean and certified accuracy (holdout_acc, holdout_vra), MixTrain's alpha reads "
        "their accuracy, and --keep-best ranks the epochs by them (0: none)",
    )
    # loop
    epochs: int = option(60, "number of epochs (paper: 60)")
    batch_size: int = option(50, "images per batch (paper: 50)")
    optimizer: str | None = option(
        None,
        "{optimizers} (default per data set: {defaults.optimizer}, as in the "
        "paper; MixTrain: adam everywhere, since SGD 0.05 collapsed CIFAR "
        "MixTrain at k'=1)",
    )
    lr: float | None = option(None, "initial learning rate (default: {learning_rates}; Section V-A)")
    lr_step: int = option(5, "multiply the learning rate by --lr-gamma every this many epochs (paper: 5)")
    lr_gamma: float = option(0.6, "learning-rate decay factor applied every --lr-step epochs (paper: 0.6)")
    lr_milestones: str | None = option(
        None, "comma-separated epochs at which the learning rate is multiplied by --lr-gamma (replaces --lr-step)"
    )
    momentum: float = option(0.9, "SGD momentum (paper: 0.9)")
    weight_decay: float = option(0.0, "L2 weight decay of the optimiser")
    grad_clip: float | None = option(
        None, "clip the global L2 norm of the gradient to this value before each optimiser step (default: no clipping)"
    )
    augment: str | None = option(
        None,
        "training-data augmentation: {augmentations} (crop: shifts of up to --augment-pad pixels; "
        "crop-flip: shifts and left-right mirroring) (default per data set: "
        "{defaults.augment})",
    )
    augment_pad: int = option(4, "largest shift in pixels of the crop augmentations (zero padding of that width)")
    ema: float | None = option(
        None,
        "keep an exponential moving average of the weights, updated after every step with this decay (e.g. "
        "0.999); the per-epoch test and held-out metrics, --keep-best, RUN/model.pt and the final evaluation use "
        "the averaged weights; training (and MixTrain's alpha) continue on the raw ones (default: no average)",
    )
    seed: int = option(0, "random seed (python, numpy, torch, data shuffling and the method's own sampling)")
    budget_minutes: float | None = option(
        None, "stop after the epoch in which the training CPU time reaches this many minutes (default: no limit)"
    )
    fit_budget: bool = option(
        False,
        "with --budget-minutes: after the first epoch of the eps ramp, set --epochs to what the budget allows at "
        "that epoch's CPU time and scale the ramp, the learning-rate decay and --warmup-epochs with it, and after "
        "the first epoch past the ramp once more for the epochs ahead (recorded in config.json), so that a busier or faster machine than planned still "
        "finishes the schedule",
    )
    device: str = option("auto", "{devices}; under torchrun each process takes cuda:LOCAL_RANK")
    out: str = option("runs/run", "run folder: {run_files} go here")
    resume: bool = option(
        False, "continue the run in --out from its last checkpoint (the interrupted epoch is replayed exactly)"
    )
    overwrite: bool = option(False, "start afresh in an --out that already holds a run, replacing its files")
    progress: bool = option(True, "show a progress bar and per-epoch lines on stderr")
    tensorboard: bool = option(
        False,
        "also write the per-epoch metrics as TensorBoard scalars to RUN/tensorboard "
        "(needs the extra: pip install 'veritrain[tensorboard]')",
    )
    # robustness (all robust methods)
    eps: float = option(
        0.1,
        "final perturbation radius eps in pixel space [0, 1] (e.g. 0.1, 0.3 MNIST; "
        "2/255 = 0.00784 CIFAR); also the radius of the final ERA/VRA evaluation",
        group="robust",
    )
    norm: str = option(DEFAULT_NORM, "norm of the perturbation ball: {norms}", group="robust")
    eps_start: float | None = option(
        None,
        "eps of the first epoch; eps ramps linearly to --eps over "
        "--eps-ramp-epochs (default per data set: {defaults.eps_start})",
        group="robust",
    )
    eps_ramp_epochs: int = option(10, "number of epochs of the eps ramp (paper: 10; 0 or 1: no ramp)", group="robust")
    eps_train: float | None = option(None, "eps the training schedule ramps to (default: --eps)", group="robust")
    eps_schedule: str = option(
        "epoch",
        "eps ramp: {eps_schedules} (epoch: the paper's, one value per epoch from "
        "--eps-start; linear, smooth: per step from 0)",
        group="robust",
    )
    clean_epochs: int = option(0, "epochs at eps = 0 before the eps ramp starts", group="robust")
    # certified training (ibp, crown-ibp, sabr, mtl-ibp, diffai; mixtrain with --batch-domain)
    kappa_start: float | None = option(
        None, "weight of the clean cross-entropy when the ramp starts", methods=_CERTIFIED
    )
    kappa_end: float | None = option(None, "weight of the clean cross-entropy after the ramp", methods=_CERTIFIED)
    beta_start: float = option(
        1.0,
        "weight of the CROWN-IBP bound (1 - beta: IBP) at the ramp start "
        "(crown-ibp; mixtrain with --batch-domain crown-ibp)",
        methods=("crown-ibp", "mixtrain"),
    )
    beta_end: float = option(
        0.0, "weight of the CROWN-IBP bound (1 - beta: IBP) after the ramp", methods=("crown-ibp", "mixtrain")
    )
    ibp_init: bool = option(False, "Shi et al. 2021's initialisation of every layer but the last (every method)")
    bound_reg: float = option(
        0.0,
        "weight of Shi et al.'s bound regularisers during the ramp (the certified "
        "methods; mixtrain with --batch-domain)",
        methods=(*_CERTIFIED, "mixtrain"),
    )
    l1_reg: float = option(0.0, "L1 penalty on the weights (every method)")
    sabr_lambda: float = option(0.4, "the small box has radius lambda * eps", methods=("sabr",))
    mtl_alpha: float = option(0.5, "weight of the IBP loss (1 - alpha: adversarial)", methods=("mtl-ibp",))
    adv_steps: int = option(8, "PGD steps of the training attack", methods=("sabr", "mtl-ibp"))
    batch_domain: str | None = option(
        None,
        "cheap sound bound on every sample of the batch: {batch_domains} (the --domain bound stays on k' samples)",
        methods=("mixtrain",),
    )
    batch_share: float = option(
        1.0,
        "with --batch-domain: the share of each batch it bounds, a uniform draw that holds the k' tight samples "
        "(Eqn. 8 applied to the batch domain: its loss estimated from a sample; 1: the whole batch)",
        methods=("mixtrain",),
    )
    tight_weight: float | None = option(
        None,
        "with --batch-domain: weight w of the k' tight samples in the verified loss, (1 - w) * batch mean + w * "
        "mean over the k' samples (Eqn. 8's estimate of the batch's tight loss); default: each sample weighs 1 / batch",
        methods=("mixtrain",),
    )
    # MixTrain (Section IV)
    domain: str = option(
        DEFAULT_DOMAIN,
        "sound over-approximation used in training: {domains} (paper: symbolic-linear)",
        methods=("mixtrain",),
    )
    k: int | None = option(
        None, "sound training samples per epoch, k in Eqn. 8 (default: k' per batch x batches)", methods=("mixtrain",)
    )
    k_per_batch: int | None = option(
        None, "sound training samples per batch, k' = k / (n / m) (default 1)", methods=("mixtrain",)
    )
    alpha0: float | None = option(
        None,
        "initial weight alpha of the verified loss in Eqn. 9 (default per data set: {defaults.alpha0})",
        methods=("mixtrain",),
    )
    alpha: float | None = option(
        None, "fixed alpha for Eqn. 9 instead of the dynamic schedule (Fig. 8, Table IX)", methods=("mixtrain",)
    )
    alpha_step: float = option(
        0.05,
        "dynamic alpha: +/- this much per epoch depending on accuracy vs --acc0 (paper: 0.05)",
        methods=("mixtrain",),
    )
    alpha_min: float = option(
        0.0,
        "dynamic alpha: the lowest value the rule may set (paper: 0; e.g. 0.1 keeps a verified term in every "
        "epoch: at alpha 0 an epoch is clean training and can undo the robustness of earlier ones)",
        methods=("mixtrain",),
    )
    acc0: float | None = option(
        None,
        "dynamic alpha: target training accuracy acc_0 in percent; the paper gives "
        "no value. alpha settles where the training accuracy is about acc0, so it "
        "is the clean accuracy you accept (default per data set: {defaults.acc0}: "
        "just under the paper's MixTrain accuracies)",
        methods=("mixtrain",),
    )
    acc_subsample: int = option(
        1000,
        "dynamic alpha: training images (with --holdout: held-out images) sub-sampled each epoch to measure accuracy",
        methods=("mixtrain",),
    )
    warmup_epochs: int = option(
        0,
        "epochs of plain cross-entropy (alpha = 0, the verified loss only logged) "
        "before Eqn. 9 and the dynamic alpha start; the eps ramp runs as usual",
        methods=("mixtrain",),
    )
    alpha_after_ramp: bool = option(
        False,
        "dynamic alpha: keep alpha at alpha0 until the eps ramp ends (--clean-epochs + --eps-ramp-epochs), then "
        "apply the rule (not in the paper: while eps grows the accuracy falls because of the ramp, not alpha)",
        methods=("mixtrain",),
    )
    # Madry / attacks
    pgd_steps: int = option(40, "PGD iterations of the inner maximisation (paper: 40)", methods=("madry",))
    pgd_step_size: float = option(0.01, "PGD step size in pixel space (paper: 0.01)", methods=("madry",))
    # WRM (Sinha et al.)
    gamma: float | None = option(
        None, "Lagrangian penalty gamma of the distributional robustness objective", methods=("wrm",)
    )
    wrm_steps: int = option(15, "gradient-ascent steps of the inner WRM maximisation", methods=("wrm",))
    wrm_clip: bool = option(
        False, "clip WRM's perturbed x' to [0, 1] (Sinha et al.'s reference code does not)", methods=("wrm",)
    )
    # Wong et al.
    projections: int | None = option(
        None, "random projections for the dual bound (paper: 50; default: exact bound)", methods=("wong",)
    )
    # DiffAI (Mirman et al.)
    diffai_kappa: float = option(
        1.0,
        "final weight of the box-domain verified loss (1 - kappa weighs the clean "
        "cross-entropy); it ramps from 0 over --eps-ramp-epochs",
        methods=("diffai",),
    )
    # final evaluation written to summary.json
    eval_n: int = option(
        1000,
        "final evaluation: ERA and VRA on the first N test images (ACC always on the whole test set)",
        group="eval",
    )
    eval_attacks: str = option(
        "pgd", "final evaluation: comma-separated attacks for ERA: {attacks} (empty: none)", group="eval"
    )
    eval_domains: str = option(
        DEFAULT_DOMAIN, "final evaluation: comma-separated bound domains for VRA: {domains} (empty: none)", group="eval"
    )
    monitor_n: int = option(
        100,
        "per-epoch test metrics on the first N test images, in metrics.jsonl and the "
        "plot: ACC, ERA under PGD and VRA with the training domain (methods that train "
        "with none: the first --eval-domains domain) (0: none)",
        group="eval",
    )
    holdout_domain: str = option(
        "crown-ibp",
        "with --holdout: the sound domain of the per-epoch held-out certified accuracy at --eps: {domains}",
        group="eval",
    )
    keep_best: bool = option(
        False,
        "with --holdout: RUN/model.pt and the final evaluation use the weights of the epoch with the highest "
        "held-out certified accuracy (ties: clean accuracy, then the earlier epoch); epochs of the eps ramp "
        "count only while no epoch after it exists (RUN/checkpoint.pt keeps the last epoch for --resume)",
        group="eval",
    )
    full_eval: bool = option(
        False, "final evaluation: ERA and VRA on the whole test set instead of --eval-n images", group="eval"
    )
    extra: dict[str, Any] = option(
        help="KEY=VALUE options for methods added outside veritrain (repeatable; VALUE is parsed as YAML)", factory=dict
    )

    @property
    def gray(self) -> bool:
        """MNIST-like data (one channel): the gray per-data-set defaults apply."""
        return self.dataset in DATASETS and DATASETS.get(self.dataset).gray

    grey = gray  # the name before the spelling convention (ARCHITECTURE.md)

    @property
    def ramp_end(self) -> int:
        """Epochs until the training eps is reached: --clean-epochs + the eps ramp (at least 1). A 0-based
        epoch e ends at the final training eps when e + 1 >= ramp_end."""
        return int(self.clean_epochs) + max(int(self.eps_ramp_epochs), 1)

    def resolved(self) -> "TrainConfig":
        """A copy with the paper's per-dataset defaults filled in (Section V-A; `veritrain.data.DATASETS`)."""
        c = dataclasses.replace(self)
        d = training_defaults(c.dataset)
        if c.optimizer is None:
            c.optimizer = "adam" if c.method in ADAM_EVERYWHERE else d.optimizer
        if c.lr is None:
            c.lr = DEFAULT_LR.get(c.optimizer, DEFAULT_LR["sgd"])
        if c.eps_start is None:
            c.eps_start = d.eps_start
        if c.augment is None:
            c.augment = d.augment
        if c.alpha0 is None:
            c.alpha0 = d.alpha0
        if c.method == "mixtrain":  # config.json records what the run used, not None
            from veritrain.training.methods.mixtrain import DEFAULT_ACC0, DEFAULT_K_PER_BATCH

            if c.acc0 is None and c.dataset in DEFAULT_ACC0:
                c.acc0 = DEFAULT_ACC0[c.dataset]
            if c.k is None and c.k_per_batch is None:
                c.k_per_batch = DEFAULT_K_PER_BATCH
        return c

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown training option(s): {', '.join(unknown)}")
        return cls(**d)
