"""The figures of `veritrain reproduce` (matplotlib, an optional dependency)."""

from __future__ import annotations

import os
from typing import Any, Sequence


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("figures need matplotlib: pip install 'veritrain[plot]'") from e
    return plt


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def alpha_figure(rows: Sequence[dict[str, Any]], png: str | os.PathLike, scale: str) -> None:
    """Figure 8: ACC, ERA, VRA against the fixed alpha; the dynamic alpha as dashed lines; the paper's
    alpha = 0.5 and dynamic points (Table IX) as open markers."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    fixed = [r for r in rows if isinstance(r.get("alpha"), float)]
    dynamic = next((r for r in rows if r.get("alpha") == "dynamic"), None)
    for metric, colour in (("ACC", "tab:blue"), ("ERA", "tab:orange"), ("VRA", "tab:green")):
        pts = [(r["alpha"], _num(r.get(metric))) for r in fixed if _num(r.get(metric)) is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", color=colour, label=f"{metric} (fixed alpha)")
        if dynamic is not None and _num(dynamic.get(metric)) is not None:
            ax.axhline(_num(dynamic.get(metric)), color=colour, ls="--", lw=1, label=f"{metric} (dynamic alpha)")
        paper = [
            (r["alpha"], _num(r.get(f"{metric} (paper)")))
            for r in fixed
            if _num(r.get(f"{metric} (paper)")) is not None
        ]
        if paper:
            ax.scatter(
                *zip(*paper),
                facecolors="none",
                edgecolors=colour,
                s=60,
                marker="s",
                label=f"{metric} paper (CIFAR Small)",
            )
    ax.set_xlabel("fixed alpha (Eqn. 9)")
    ax.set_ylabel("%")
    ax.set_title(f"Figure 8 reproduced ({scale} scale)")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def loss_figure(rows: Sequence[dict[str, Any]], png: str | os.PathLike, scale: str) -> None:
    """Figure 4: the regular (clean cross-entropy) and verified robust loss over the epochs of the second
    phase of each pair of runs (rows with a "phase 2" label), read from their metrics.jsonl."""
    from pathlib import Path

    from veritrain.reporting.io import read_jsonl
    from veritrain.training.run_dir import RunFiles

    plt = _pyplot()
    second = [r for r in rows if r.get("phase") == 2 and r.get("run") not in (None, "-")]
    fig, axes = plt.subplots(1, max(len(second), 1), figsize=(5 * max(len(second), 1), 3.6), squeeze=False)
    for ax, r in zip(axes[0], second):
        metrics = read_jsonl(RunFiles(Path(png).parent / r["run"]).metrics)
        epochs = [m["epoch"] for m in metrics]
        for key, label in (("regular_loss", "regular loss"), ("verified_loss", "verifiable robust loss")):
            pts = [(e, m[key]) for e, m in zip(epochs, metrics) if _num(m.get(key)) is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, label=label)
        ax.set_title(str(r.get("Training")), fontsize=9)
        ax.set_xlabel("epoch of the second phase")
        ax.legend(fontsize=8)
    fig.suptitle(f"Figure 4 reproduced ({scale} scale)", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
