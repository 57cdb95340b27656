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
    times = [m["batch_time"] for m in metrics if "batch_time" in m]
    row["batch ms"] = 1000 * sum(times) / len(times) if times else None
    mems = [m["peak_mem_mb"] for m in metrics if "peak_mem_mb" in m]
    row["peak MB"] = max(mems) if mems else None
    train_s = summary.time_s.get("train")
    row["train min"] = train_s / 60 if train_s is not None else None
    return row


def runs_table(run_dirs: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """Rows of several runs with the union of their columns, in a stable order."""
    rows = [run_row(d) for d in run_dirs]
    columns: list[str] = []
    for r in rows:
        columns.extend(c for c in r if c not in columns)
    return [{c: r.get(c) for c in columns} for r in rows]


__all__ = ["run_row", "runs_table"]
