"""What an experiment of the paper is, as data: its runs, the numbers it reports and the paper's own.

An `Experiment` (one table or figure) holds `Run`s. A run is a set of `TrainConfig` options at the paper's
scale (Section V-A: 60 epochs, batch 50, the paper's optimisers and eps ramp) plus the overrides of the
reduced `cpu` scale; its row in the output carries `labels` (network, eps, method) and the paper's numbers
(`paper`: {"ACC": 98.5, ...}). `measure` experiments (Table I's attacks, Table X's memory) compute their row
from a run (or from nothing) instead of reading a training summary.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from veritrain.validation import DEFAULT_DOMAIN

SCALES = ("paper", "cpu")

#: every eps in pixel space [0, 1]. CIFAR: the paper's 0.0348 on inputs normalised with sigma = 0.225 is
#: 0.0348 * 0.225 = 0.00783, i.e. 2/255; ImageNet-200: 0.0075 normalised (Table VI says 0.007) is 0.0017.
EPS_CIFAR = 2 / 255
EPS_IMAGENET = 0.0075 * 0.225

#: Section V-A, per data set, at the paper's scale. The paper trains CIFAR/ImageNet with SGD 0.05 (our
#: MixTrain default is Adam everywhere, see TrainConfig), so the paper's optimiser is stated explicitly.
PAPER_TRAINING: dict[str, dict[str, Any]] = {
    "mnist": dict(
        epochs=60, batch_size=50, optimizer="adam", lr=1e-3, lr_step=5, lr_gamma=0.6, eps_start=0.01, eps_ramp_epochs=10
    ),
    "cifar10": dict(
        epochs=60, batch_size=50, optimizer="sgd", lr=0.05, lr_step=5, lr_gamma=0.6, eps_start=0.001, eps_ramp_epochs=10
    ),
    "imagenet200": dict(
        epochs=60, batch_size=50, optimizer="sgd", lr=0.05, lr_step=5, lr_gamma=0.6, eps_start=0.001, eps_ramp_epochs=10
    ),
}
#: the cpu scale's MNIST Small setting of the ablations (Fig. 4, Fig. 8, Table VIII): eps 0.1 with Section V-A's
#: MNIST optimiser, ERA and VRA on the first 500 test images; each experiment adds its epochs and data size
MNIST_CPU: dict[str, Any] = dict(
    net="mnist-small", dataset="mnist", eps=0.1, optimizer="adam", lr=1e-3, eps_start=0.01, full_eval=False, eval_n=500
)
#: the final evaluation at the paper's scale: the whole test set, PGD-40 ERA, symbolic-linear VRA
PAPER_EVAL: dict[str, Any] = dict(full_eval=True, eval_attacks="pgd", eval_domains=DEFAULT_DOMAIN)

#: the baselines as the paper ran them (Section V-A/B): Madry PGD-40 step 0.01 random start, WRM with a
#: smooth activation, Wong et al. with 50 random projections, DiffAI's box domain; MixTrain k' = 1 with
#: the paper's symbolic linear relaxation and dynamic alpha.
METHOD_OPTIONS: dict[str, dict[str, Any]] = {
    "regular": dict(method="regular"),
    "madry": dict(method="madry", pgd_steps=40, pgd_step_size=0.01),
    "wrm": dict(method="wrm", activation="elu"),
    "wong": dict(method="wong", projections=50),
    "diffai": dict(method="diffai"),
    "mixtrain": dict(method="mixtrain", domain=DEFAULT_DOMAIN, k_per_batch=1),
}
#: printed names of the methods, as in the paper's tables
METHOD_LABELS = {
    "regular": "Regular training",
    "madry": "Madry et al.",
    "wrm": "Sinha et al.",
    "wong": "Wong et al.",
    "diffai": "DIFFAI",
    "mixtrain": "MixTrain",
}
#: the paper's networks' printed names
NET_LABELS = {
    "mnist-fc1": "MNIST FC1",
    "mnist-fc2": "MNIST FC2",
    "mnist-small": "MNIST Small",
    "mnist-large": "MNIST Large",
    "cifar-small": "CIFAR Small",
    "cifar-large": "CIFAR Large",
    "cifar-resnet": "CIFAR Resnet",
    "imagenet-resnet": "ImageNet Resnet",
}
NET_DATASET = {
    "mnist-fc1": "mnist",
    "mnist-fc2": "mnist",
    "mnist-small": "mnist",
    "mnist-large": "mnist",
    "cifar-small": "cifar10",
    "cifar-large": "cifar10",
    "cifar-resnet": "cifar10",
    "imagenet-resnet": "imagenet200",
}
#: metrics a row can report, and what each means (the .md legend)
METRICS: dict[str, str] = {
    "ACC": "clean accuracy on the whole test set (%)",
    "ERA": "accuracy under PGD-40 (step 0.01, random start) on the evaluated test images (%)",
    "VRA": "share of the evaluated test images the symbolic linear relaxation proves robust (%)",
    "batch s": "mean wall-clock seconds per training batch (this machine; the paper: one GTX 1080 Ti)",
    "train time": "training time (this machine)",
}


@dataclass(frozen=True)
class Run:
    """One row of an experiment: the options of its run and the paper's numbers for that row."""

    key: str  # unique within the experiment, e.g. "mnist-small eps=0.1 mixtrain"
    config: Mapping[str, Any]  # TrainConfig options at the paper's scale
    labels: Mapping[str, Any] = field(default_factory=dict)  # row labels (Network, eps, Method, k, alpha)
    paper: Mapping[str, Any] = field(default_factory=dict)  # the paper's numbers for this row
    cpu: Mapping[str, Any] = field(default_factory=dict)  # overrides at the cpu scale (after Experiment.cpu)
    cpu_skip: str | None = None  # why this row is not run at the cpu scale (kept for a GPU)
    cpu_only: bool = False  # a row of the cpu scale only (e.g. a second measurement of a cpu-scale run)
    measure_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # per scale, over the experiment's


@dataclass(frozen=True)
class Experiment:
    """A table or figure of the paper; `kind` "train" reads each run's summary, "measure" calls `measure`."""

    name: str  # the `veritrain reproduce NAME`
    source: str  # "Table III", "Figure 8"
    title: str
    runs: tuple[Run, ...]
    columns: tuple[str, ...] = ("ACC", "ERA", "VRA", "batch s", "train time")
    cpu: Mapping[str, Any] = field(default_factory=dict)  # overrides of every run at the cpu scale
    cpu_note: str = ""  # what the cpu scale reduces, in words
    note: str = ""  # how the paper's numbers were read, what differs and why
    kind: str = "train"  # "train" | "measure"
    #: measure(exp, run, config: dict, scale, run_dir, out_dir) -> {column: value}; for kind "measure", or
    #: to add columns to a trained run (cached by the measure itself)
    measure: Callable[..., dict[str, Any]] | None = None
    #: figure(rows, png_path, scale) draws DIR/NAME.png from the output rows
    figure: Callable[..., None] | None = None
    scale_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # per-scale measure options

    def config(self, run: Run, scale: str) -> dict[str, Any]:
        """The TrainConfig options of `run` at `scale` (paper: as declared; cpu: plus the reductions)."""
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; choose one of: {', '.join(SCALES)}")
        cfg = dict(run.config)
        if scale == "cpu":
            cfg.update(self.cpu)
            cfg.update(run.cpu)
        return cfg

    def runs_at(self, scale: str) -> list[Run]:
        """The runs made at `scale` (rows with a `cpu_skip` reason are paper-scale only, `cpu_only` rows
        cpu-scale only)."""
        if scale == "paper":
            return [r for r in self.runs if not r.cpu_only]
        return [r for r in self.runs if r.cpu_skip is None]


def paper_run(net: str, method: str, eps: float, **options: Any) -> dict[str, Any]:
    """TrainConfig options of `method` on `net` as the paper trains it (Section V-A), plus `options`."""
    dataset = options.pop("dataset", NET_DATASET[net])
    return {
        "net": net,
        "dataset": dataset,
        **PAPER_TRAINING[dataset],
        **METHOD_OPTIONS[method],
        "eps": eps,
        **PAPER_EVAL,
        **options,
    }


def row(
    net: str,
    eps: float,
    method: str,
    paper: Mapping[str, Any] | None = None,
    key: str | None = None,
    cpu: Mapping[str, Any] | None = None,
    cpu_skip: str | None = None,
    labels: Mapping[str, Any] | None = None,
    **options: Any,
) -> Run:
    """A Run of `method` on `net` at `eps` with the standard labels (Network, eps, Method)."""
    lab = {"Network": NET_LABELS[net], "eps": eps_label(eps), "Method": METHOD_LABELS[method]}
    lab.update(labels or {})
    k = key or " ".join([net, f"eps={eps_label(eps)}", method, *(f"{a}={b}" for a, b in (labels or {}).items())])
    return Run(
        key=k,
        config=paper_run(net, method, eps, **options),
        labels=lab,
        paper=dict(paper or {}),
        cpu=dict(cpu or {}),
        cpu_skip=cpu_skip,
    )


def eps_label(eps: float) -> str:
    if abs(eps - EPS_CIFAR) < 1e-9:
        return "2/255"
    return f"{eps:g}"


def paper_numbers(
    acc_era_vra: tuple[float | None, float | None, float | None] | str | None,
    batch_s: float | None = None,
    train_time: str | None = None,
) -> dict[str, Any]:
    """{"ACC", "ERA", "VRA", "batch s", "train time"} of a paper row; "does not converge" rows as text."""
    out: dict[str, Any] = {}
    if isinstance(acc_era_vra, str):
        out.update({"ACC": acc_era_vra, "ERA": acc_era_vra, "VRA": acc_era_vra})
    elif acc_era_vra is not None:
        out.update(dict(zip(("ACC", "ERA", "VRA"), acc_era_vra)))
    if batch_s is not None:
        out["batch s"] = batch_s
    if train_time is not None:
        out["train time"] = train_time
    return out


def replace(exp: Experiment, **changes: Any) -> Experiment:
    return dataclasses.replace(exp, **changes)


DNC = "does not converge"
