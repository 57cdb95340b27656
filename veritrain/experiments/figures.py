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
        paper = [(r["alpha"], _num(r.get(f"{metric} (paper)"))) for r in fixed
                 if _num(r.get(f"{metric} (paper)")) is not None]
        if paper:
            ax.scatter(*zip(*paper), facecolors="none", edgecolors=colour, s=60, marker="s",
                       label=f"{metric} paper (CIFAR Small)")
    ax.set_xlabel("fixed alpha (Eqn. 9)")
    ax.set_ylabel("%")
    ax.set_title(f"Figure 8 reproduced ({scale} scale)")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
