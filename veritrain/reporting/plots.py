"""Training curves of a run (alpha, eps, losses over epochs); matplotlib is an optional dependency."""

from __future__ import annotations

import os
from pathlib import Path

from veritrain.errors import MissingExtraError
from veritrain.reporting.io import read_jsonl

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
# curves drawn in the panel of another metric: the loss parts, and the per-epoch test metrics (--monitor-n)
PANEL_PARTS = {"loss": LOSS_PARTS, "test_acc": ("test_era", "test_vra")}


def plot_metrics(run_dir: str | os.PathLike, out_png: str | os.PathLike | None = None) -> Path:
    """Plot RUN/metrics.jsonl to `out_png` (default RUN/metrics.png) and return its path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingExtraError("plotting needs matplotlib: pip install 'veritrain[plot]'") from None
    from veritrain.training.run_dir import RunFiles  # here: reporting sits below training

    files = RunFiles(run_dir)
    path = files.metrics
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; is {run_dir} a training run folder?")
    rows = read_jsonl(path)
    if not rows:
        raise ValueError(f"{path} has no epochs yet; plot after the first epoch has finished")
    epochs = [r["epoch"] for r in rows]
    panels = [(k, t) for k, t in PANELS if any(k in r for r in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        keys = [key] + [p for p in PANEL_PARTS.get(key, ()) if any(p in r for r in rows)]
        for k in keys:
            pts = [(e, r[k]) for e, r in zip(epochs, rows) if isinstance(r.get(k), (int, float))]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, label=k)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if len(keys) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out_png) if out_png is not None else files.plot
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
