"""One row per training run (ACC, ERA, VRA, batch time, memory): the comparison tables of Tables III-V."""

from __future__ import annotations

import os
from typing import Any, Sequence

from veritrain.reporting.io import read_json, read_jsonl


def run_row(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The headline numbers of a finished run folder (config.json, metrics.jsonl, summary.json)."""
    # imported here: reporting sits below training and evaluation, which write through reporting.io
    from veritrain.evaluation.results import RunSummary
    from veritrain.training.run_dir import RunFiles

    files = RunFiles(run_dir)
    summary = RunSummary.read(files.dir)
    cfg = read_json(files.config)
    metrics = read_jsonl(files.metrics) if files.metrics.exists() else []
    method = cfg.get("method")
    if method == "mixtrain":
        method = f"mixtrain ({cfg.get('domain')}, k'={cfg.get('k_per_batch') or 1})"
    elif method == "wong" and cfg.get("projections"):
        method = f"wong ({cfg['projections']} projections)"
    row: dict[str, Any] = {
        "run": files.dir.name,
        "method": method,
        "net": cfg.get("net"),
        "dataset": cfg.get("dataset"),
        "eps": cfg.get("eps"),
        "epochs": len(metrics) or cfg.get("epochs"),
        "ACC": summary.test_acc,
    }
    if summary.eval is not None:  # ERA per attack (and the worst case), VRA per domain ("n/a": not bounded)
        row.update(summary.eval.row(acc=False))
    row["eval n"] = summary.eval.n if summary.eval is not None else None
    row.update(holdout_columns(summary.to_dict(), metrics))
    times = [m["batch_time"] for m in metrics if "batch_time" in m]
    row["batch ms"] = 1000 * sum(times) / len(times) if times else None
    mems = [m["peak_mem_mb"] for m in metrics if "peak_mem_mb" in m]
    row["peak MB"] = max(mems) if mems else None
    train_s = summary.time_s.get("train")
    row["train min"] = train_s / 60 if train_s is not None else None
    return row


def _percent(v: Any) -> str:
    return f"{v:.2f}%" if isinstance(v, (int, float)) else "n/a"


def evaluated_epoch(summary: dict[str, Any], metrics: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The metrics.jsonl row of the epoch whose weights the run ended with: the kept epoch (--keep-best), else the
    last one ({} when the run logged no epoch)."""
    kept = summary.get("kept_epoch")
    if kept is not None:
        row = next((r for r in metrics if r.get("epoch") == kept), None)
        if row is not None:
            return row
    return dict(metrics[-1]) if metrics else dict(summary.get("final") or {})


def holdout_columns(summary: dict[str, Any], metrics: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The held-out columns of a run's table row (--holdout; none without): the held-out size, the held-out ACC
    and VRA of the run's epoch (`evaluated_epoch`) and the kept epoch (--keep-best)."""
    if not summary.get("holdout"):
        return {}
    row = evaluated_epoch(summary, metrics)
    return {
        "held-out n": summary["holdout"],
        "held-out ACC": row.get("holdout_acc"),
        "held-out VRA": row.get("holdout_vra"),
        "kept epoch": summary.get("kept_epoch"),
    }


def holdout_lines(
    summary: dict[str, Any], metrics: Sequence[dict[str, Any]], config: dict[str, Any] | None = None
) -> list[str]:
    """What a run's printed summary says of --holdout and --keep-best (no line without --holdout): the held-out
    size and, with --keep-best, "kept epoch N of M (best held-out VRA X%)"."""
    n = summary.get("holdout")
    if not n:
        return []
    config = config or {}
    domain, eps = config.get("holdout_domain"), config.get("eps", summary.get("eps"))
    vra_name = "VRA" + (f" ({domain}, eps {eps:g})" if domain and isinstance(eps, (int, float)) else "")
    row = evaluated_epoch(summary, metrics)
    kept = summary.get("kept_epoch")
    which = f"epoch {kept}" if kept is not None else "last epoch"
    lines = [
        f"held out: {n:,} training images, never trained on; {which}: held-out ACC "
        f"{_percent(row.get('holdout_acc'))}, {vra_name} {_percent(row.get('holdout_vra'))}"
    ]
    if kept is not None:
        total = summary.get("epochs_trained") or len(metrics) or summary.get("epochs")
        best = (
            f"best held-out VRA {_percent(row['holdout_vra'])}"
            if isinstance(row.get("holdout_vra"), (int, float))
            else f"held-out VRA n/a, best held-out ACC {_percent(row.get('holdout_acc'))}"
        )
        lines.append(f"kept epoch {kept} of {total} ({best}): model.pt and the evaluation are its weights")
    return lines


def run_holdout_lines(run_dir: str | os.PathLike) -> list[str]:
    """`holdout_lines` of a run folder (summary.json, metrics.jsonl, config.json)."""
    from veritrain.training.run_dir import RunFiles

    files = RunFiles(run_dir)
    if not files.summary.is_file():
        return []
    summary = read_json(files.summary)
    metrics = read_jsonl(files.metrics) if files.metrics.is_file() else []
    config = read_json(files.config) if files.config.is_file() else {}
    return holdout_lines(summary, metrics, config)


def runs_table(run_dirs: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """Rows of several runs with the union of their columns, in a stable order."""
    rows = [run_row(d) for d in run_dirs]
    columns: list[str] = []
    for r in rows:
        columns.extend(c for c in r if c not in columns)
    return [{c: r.get(c) for c in columns} for r in rows]


__all__ = ["evaluated_epoch", "holdout_columns", "holdout_lines", "run_holdout_lines", "run_row", "runs_table"]
