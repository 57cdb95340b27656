"""Training curves of a run (alpha, eps, losses over epochs); matplotlib is an optional dependency.

`metrics_plot_data(RUN)` gathers what is drawn (panels of labelled series, the kept epoch) without matplotlib;
`metrics_figure` draws it; `plot_metrics` writes RUN/metrics.png (`veritrain plot RUN`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from veritrain.errors import MissingExtraError
from veritrain.reporting.io import read_json, read_jsonl

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# what to draw, if the run logged it: (metric key, panel title)
PANELS = (
    ("loss", "training loss"),
    ("alpha", "alpha (MixTrain, Eqn. 9)"),
    ("eps", "eps (ramp, Section V-A)"),
    ("train_acc", "training accuracy (%)"),
    ("test_acc", "test subset: ACC, ERA (PGD), VRA (%)"),
)
# losses of the two parts of a mixed objective, drawn next to the total loss when present
LOSS_PARTS = ("regular_loss", "verified_loss", "robust_loss")
# the held-out images' clean and certified accuracy (--holdout), drawn with the training accuracy
HOLDOUT_PARTS = ("holdout_acc", "holdout_vra")
# curves drawn in the panel of another metric: the loss parts, the per-epoch test metrics (--monitor-n) and the
# held-out metrics (--holdout)
PANEL_PARTS = {"loss": LOSS_PARTS, "train_acc": HOLDOUT_PARTS, "test_acc": ("test_era", "test_vra")}
# the accuracy panel's title when the run holds images out
HOLDOUT_TITLE = "training and held-out accuracy (%)"


@dataclass
class Series:
    """One curve: its metric key, its legend label and the epochs (1-based) with a number."""

    key: str
    label: str
    epochs: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


@dataclass
class Panel:
    """One axes of the figure: the panel's metric key, title and curves (a legend when there are several)."""

    key: str
    title: str
    series: list[Series]


@dataclass
class MetricsPlot:
    """What `veritrain plot RUN` draws: the panels and, with --keep-best, the kept epoch (a dashed line)."""

    panels: list[Panel]
    kept_epoch: int | None = None

    @property
    def kept_label(self) -> str | None:
        return None if self.kept_epoch is None else f"kept epoch {self.kept_epoch}"

    def series(self, key: str) -> Series | None:
        """The curve of metric `key`, in whichever panel it is drawn."""
        return next((s for p in self.panels for s in p.series if s.key == key), None)


def _label(key: str, holdout_domain: str | None) -> str:
    if key == "holdout_acc":
        return "held-out ACC"
    if key == "holdout_vra":
        return f"held-out VRA ({holdout_domain})" if holdout_domain else "held-out VRA"
    return key


def metrics_plot_data(run_dir: str | os.PathLike) -> MetricsPlot:
    """RUN/metrics.jsonl as panels of curves; with --holdout the held-out ACC and VRA (the domain from config.json's
    `holdout_domain`) join the training accuracy, and with --keep-best the kept epoch is summary.json's
    `kept_epoch` (while the run trains: the last epoch's)."""
    from veritrain.training.run_dir import RunFiles  # here: reporting sits below training

    files = RunFiles(run_dir)
    path = files.metrics
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; is {run_dir} a training run folder?")
    rows = read_jsonl(path)
    if not rows:
        raise ValueError(f"{path} has no epochs yet; plot after the first epoch has finished")
    cfg: dict[str, Any] = read_json(files.config) if files.config.is_file() else {}
    summary: dict[str, Any] = read_json(files.summary) if files.summary.is_file() else {}
    holdout = any(k in r for r in rows for k in HOLDOUT_PARTS)
    epochs = [r["epoch"] for r in rows]
    panels = []
    for key, title in PANELS:
        parts = [p for p in PANEL_PARTS.get(key, ()) if any(p in r for r in rows)]
        if not any(key in r for r in rows) and not parts:
            continue
        if key == "train_acc" and holdout:
            title = HOLDOUT_TITLE if any(key in r for r in rows) else "held-out accuracy (%)"
        series = []
        for k in [key] + parts:
            pts = [(e, r[k]) for e, r in zip(epochs, rows) if isinstance(r.get(k), (int, float))]
            if k != key or pts or any(k in r for r in rows):
                series.append(
                    Series(k, _label(k, cfg.get("holdout_domain")), [e for e, _ in pts], [float(v) for _, v in pts])
                )
        panels.append(Panel(key, title, series))
    kept = summary["kept_epoch"] if "kept_epoch" in summary else rows[-1].get("kept_epoch")
    return MetricsPlot(panels, int(kept) if isinstance(kept, (int, float)) else None)


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingExtraError("plotting needs matplotlib: pip install 'veritrain[plot]'") from None
    return plt


def metrics_figure(data: MetricsPlot) -> "Figure":
    """The figure of `metrics_plot_data` (one axes per panel; the caller closes it)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(data.panels), figsize=(4 * len(data.panels), 3.2), squeeze=False)
    for ax, panel in zip(axes[0], data.panels):
        for s in panel.series:
            if s.epochs:
                ax.plot(s.epochs, s.values, marker="o", ms=3, label=s.label)
        if data.kept_epoch is not None:
            ax.axvline(data.kept_epoch, color="gray", linestyle="--", linewidth=1, label=data.kept_label)
        ax.set_title(panel.title)
        ax.set_xlabel("epoch")
        if len(panel.series) > 1 or data.kept_epoch is not None:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_metrics(run_dir: str | os.PathLike, out_png: str | os.PathLike | None = None) -> Path:
    """Plot RUN/metrics.jsonl to `out_png` (default RUN/metrics.png) and return its path."""
    from veritrain.training.run_dir import RunFiles

    plt = _pyplot()  # MissingExtraError before reading the run
    fig = metrics_figure(metrics_plot_data(run_dir))
    out = Path(out_png) if out_png is not None else RunFiles(run_dir).plot
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
