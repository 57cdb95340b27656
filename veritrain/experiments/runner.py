"""`veritrain reproduce NAME`: train an experiment's runs (skipping finished ones, resuming killed ones)
and write DIR/NAME.md, DIR/NAME.csv (and DIR/NAME.png for figures): our numbers beside the paper's.

Each run is an ordinary run folder DIR/training-runs/<scale>-<net>-<method>-<hash>, the hash taken over
every option that changes the run or its evaluation and is not at its `TrainConfig` default (so a new
option, added at a default that keeps the old behaviour, renames no folder), so two experiments declaring
the same run share one folder (Table VIII's k = 1 is Table IX's dynamic-alpha run), and a changed spec never
reuses a stale run. A finished run in DIR/training-runs under another name (an earlier version's hash)
whose options match is taken as it is; `--reuse DIR` also accepts such runs elsewhere (e.g. results/).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from veritrain.experiments.spec import METRICS, NET_LABELS, Experiment, Run, eps_label
from veritrain.reporting.io import read_json, read_jsonl, write_csv
from veritrain.reporting.tables import format_markdown
from veritrain.training.config import TrainConfig
from veritrain.training.run_dir import RunFiles
from veritrain.validation import DEFAULT_DOMAIN

#: the folder (inside --out) holding the run folders; not named "runs", which .gitignore hides
RUNS_FOLDER = "training-runs"
#: a run folder's weights file (written by the training loop), which a later run may start from
WEIGHTS_FILE = RunFiles.MODEL
#: options that neither change a run's trajectory nor its evaluation: left out of the folder's hash
NOT_HASHED = frozenset({"out", "resume", "overwrite", "progress", "device", "data_dir"})
#: options that change the evaluation but not the training (ignored when matching a --reuse run)
EVAL_OPTIONS = frozenset({"epochs_eval", "eval_n", "eval_attacks", "eval_domains", "full_eval"})


@dataclass
class PlannedRun:
    """A run of an experiment at a scale: its options, folder and state (done, partial, new, stale, reused,
    shared: the folder of an earlier row of the experiment)."""

    run: Run
    config: dict[str, Any]
    folder: Path
    state: str

    def train_config(self, device: str, progress: bool) -> TrainConfig:
        return TrainConfig.from_dict(
            {
                **self.config,
                "out": str(self.folder),
                "device": device,
                "progress": progress,
                "resume": self.state == "partial",
                "overwrite": self.state == "stale",
            }
        )


def _field_defaults() -> dict[str, Any]:
    return TrainConfig().to_dict()


def full_config(options: dict[str, Any]) -> dict[str, Any]:
    """Every TrainConfig option, resolved (paper defaults per data set filled in) as config.json stores it."""
    return TrainConfig.from_dict(dict(options)).resolved().to_dict()


def config_hash(options: dict[str, Any]) -> str:
    """8 hex digits over the resolved options that change the run or its evaluation, those at their
    `TrainConfig` default left out."""
    defaults = _field_defaults()
    cfg = {
        k: v for k, v in full_config(options).items() if k not in NOT_HASHED and (k not in defaults or v != defaults[k])
    }
    if isinstance(cfg.get("weights"), str) and cfg["weights"].endswith("/" + WEIGHTS_FILE):
        cfg["weights"] = Path(cfg["weights"]).parent.name  # another run's folder: its name holds its own hash
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:8]


def run_folder(out_dir: str | os.PathLike, options: dict[str, Any], scale: str) -> Path:
    slug = f"{scale}-{Path(str(options.get('net', 'net'))).stem}-{options.get('method', 'regular')}"
    return Path(out_dir) / RUNS_FOLDER / f"{slug}-{config_hash(options)}"


def _is_finished(folder: Path) -> bool:
    files = RunFiles(folder)
    return files.summary.is_file() and files.config.is_file()


def matches(options: dict[str, Any], folder: Path) -> bool:
    """Whether the finished run in `folder` was trained with `options` (evaluation options aside) and its
    summary holds the evaluation `options` ask for (PGD ERA and symbolic-linear VRA on at least as many images)."""
    if not _is_finished(folder):
        return False
    try:
        saved = read_json(RunFiles(folder).config)
        summary = read_json(RunFiles(folder).summary)
    except (OSError, ValueError):
        return False
    want = full_config(options)
    defaults = _field_defaults()
    for k, v in want.items():
        if k in NOT_HASHED or k in EVAL_OPTIONS:
            continue
        if saved.get(k, defaults.get(k)) != v:
            return False
    ev = summary.get("eval") or {}
    n_needed = None if want.get("full_eval") else want.get("eval_n")
    n = ev.get("n")
    if (
        not isinstance(n, int)
        or (n_needed is not None and n < n_needed)
        or (n_needed is None and not saved.get("full_eval"))
    ):
        return False
    era, vra = ev.get("era") or {}, ev.get("vra") or {}
    attacks = [a for a in str(want.get("eval_attacks") or "").split(",") if a]
    domains = [d for d in str(want.get("eval_domains") or "").split(",") if d]
    return all(isinstance(era, dict) and a in era for a in attacks) and all(
        isinstance(vra, dict) and d in vra for d in domains
    )


def _resolve_refs(options: dict[str, Any], folders: dict[str, Path]) -> dict[str, Any]:
    """Option values "@KEY" (e.g. weights="@regular": start from that run's weights) become the model file
    of the earlier run KEY of the same experiment."""
    out = dict(options)
    for k, v in options.items():
        if isinstance(v, str) and v.startswith("@"):
            if v[1:] not in folders:
                raise ValueError(f"option {k}={v!r} names no earlier run of the experiment ({', '.join(folders)})")
            out[k] = str(folders[v[1:]] / WEIGHTS_FILE)
    return out


def plan(
    exp: Experiment,
    scale: str,
    out_dir: str | os.PathLike,
    only: str | None = None,
    reuse: Sequence[str | os.PathLike] = (),
) -> list[PlannedRun]:
    """The runs of `exp` at `scale` (those whose key contains one of the comma-separated `only`), each with its
    folder and state. A run whose folder an earlier planned run of `exp` already has (same options, e.g. a
    second measurement of one network) is "shared": trained once, by the earlier row."""
    planned: list[PlannedRun] = []
    folders: dict[str, Path] = {}
    for run in exp.runs_at(scale):
        options = _resolve_refs(exp.config(run, scale), folders)
        folder = folders[run.key] = run_folder(out_dir, options, scale)
        state = "new"
        if _is_finished(folder):
            state = "done"
        elif RunFiles(folder).checkpoint.is_file():
            state = "partial"
        elif folder.exists() and any(folder.iterdir()):
            state = "stale"  # files of a run killed before its first checkpoint: start afresh
        if state != "done" and any(q.folder == folder for q in planned):
            state = "shared"
        if state not in ("done", "shared"):
            own = Path(out_dir) / RUNS_FOLDER
            for base in (own, *reuse):
                found = next((f for f in _run_folders(base) if matches(options, f)), None)
                if found is not None:
                    folder, state = found, "done" if base == own else "reused"
                    folders[run.key] = folder  # a later run starting from this one's weights takes them here
                    break
        if only and not any(part and part in run.key for part in only.split(",")):
            continue
        planned.append(PlannedRun(run, options, folder, state))
    return planned


def _run_folders(base: str | os.PathLike) -> Iterable[Path]:
    base = Path(base)
    if (base / RunFiles.CONFIG).is_file():
        yield base
    if base.is_dir():
        for cfg in sorted(base.rglob(RunFiles.CONFIG)):
            if cfg.parent != base:
                yield cfg.parent


def train_command(p: PlannedRun, device: str = "auto") -> str:
    """The `veritrain train` command line of a planned run."""
    parts = ["veritrain", "train"]
    for k, v in p.config.items():  # every option the spec declares, defaults included (batch 50, k' = 1)
        if k in ("out", "extra"):
            continue
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            parts.append(flag if v else f"--no-{k.replace('_', '-')}")
        elif v is not None:
            parts += [flag, str(v)]
    parts += ["--device", device, "--out", str(p.folder)]
    if p.state == "partial":
        parts.append("--resume")
    return shlex.join(parts)


# ----------------------------------------------------------------------------- rows


def format_duration(seconds: float | None) -> str | None:
    """7m12s, 1h15m (as the paper prints training times)."""
    if seconds is None:
        return None
    s = int(round(seconds))
    h, m, sec = s // 3600, (s % 3600) // 60, s % 60
    return f"{h}h{m}m" if h else f"{m}m{sec}s"


def summary_metrics(folder: Path) -> dict[str, Any]:
    """ACC, ERA (PGD), VRA (symbolic-linear), batch s and train time of a finished run folder."""
    files = RunFiles(folder)
    summary = read_json(files.summary)
    metrics = read_jsonl(files.metrics) if files.metrics.is_file() else []
    ev = summary.get("eval") or {}
    era, vra = ev.get("era"), ev.get("vra")
    times = [m["batch_time"] for m in metrics if isinstance(m.get("batch_time"), (int, float))]
    out = {
        "ACC": summary.get("test_acc"),
        "ERA": era.get("pgd", era.get("all")) if isinstance(era, dict) else era,
        "VRA": vra.get(DEFAULT_DOMAIN) if isinstance(vra, dict) else vra,
        "batch s": sum(times) / len(times) if times else None,
        "train time": format_duration((summary.get("time_s") or {}).get("train")),
        "eval n": ev.get("n"),
        "epochs": len(metrics) or summary.get("epochs"),
    }
    if metrics and "alpha" in metrics[-1]:
        out["final alpha"] = metrics[-1]["alpha"]
    return out


def result_rows(
    exp: Experiment, planned: list[PlannedRun], scale: str, out_dir: Path, measured: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """One output row per planned run: labels, then each column ours and the paper's, then the run folder."""
    rows = []
    for p in planned:
        ours: dict[str, Any] = {}
        if exp.kind == "train" and p.state in ("done", "reused") or _is_finished(p.folder):
            ours.update(summary_metrics(p.folder))
        ours.update(measured.get(p.run.key, {}))
        r: dict[str, Any] = dict(p.run.labels)
        if "Network" in r and p.config.get("net") in NET_LABELS:  # the network and eps of this scale's run
            r["Network"] = NET_LABELS[p.config["net"]]
        if "eps" in r and isinstance(p.config.get("eps"), float):
            r["eps"] = eps_label(p.config["eps"])
        for c in exp.columns:
            r[c] = ours.get(c, "not run" if not ours else None)
            r[f"{c} (paper)"] = p.run.paper.get(c)
        for extra in ("epochs", "final alpha", "eval n"):
            if extra in ours and extra not in exp.columns and exp.kind == "train":
                r[extra] = ours[extra]
        if exp.kind != "train":
            r["run"] = p.run.key
        else:
            r["run"] = _relative(p.folder, out_dir) if _is_finished(p.folder) else "-"
        rows.append(r)
    columns: list[str] = []
    for r in rows:
        columns.extend(c for c in r if c not in columns)
    return [{c: r.get(c) for c in columns} for r in rows]


def _relative(folder: Path, base: Path) -> str:
    return os.path.relpath(folder, base)


# ----------------------------------------------------------------------------- the machine


def machine_description(device: str = "cpu") -> str:
    """CPU model, cores, torch threads, torch version and the accelerator used (when any)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    omp = os.environ.get("OMP_NUM_THREADS", "unset")
    parts = [
        f"{cpu}, {os.cpu_count()} logical cores",
        f"torch {torch.__version__}",
        f"{torch.get_num_threads()} torch thread(s) (OMP_NUM_THREADS={omp})",
    ]
    if device != "cpu" and torch.cuda.is_available():
        parts.append(f"GPU {torch.cuda.get_device_name(0)}")
    else:
        parts.append("no GPU used")
    if hasattr(os, "getloadavg"):  # times on a shared machine depend on what else runs
        parts.append(f"load average {os.getloadavg()[1]:.1f} (5 min) when this was written")
    return "; ".join(parts)


# ----------------------------------------------------------------------------- the command


def write_report(
    exp: Experiment,
    rows: list[dict[str, Any]],
    scale: str,
    out_dir: Path,
    device: str,
    planned: list[PlannedRun],
    command: str,
) -> list[Path]:
    """DIR/NAME.md, DIR/NAME.csv (and DIR/NAME.png when the experiment has a figure)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, csv = out_dir / f"{exp.name}.md", out_dir / f"{exp.name}.csv"
    write_csv(csv, rows)
    written = [md, csv]
    if exp.figure is not None and any(not isinstance(r.get(exp.columns[0]), str) for r in rows):
        png = out_dir / f"{exp.name}.png"
        try:
            exp.figure(rows, png, scale)
            written.append(png)
        except ImportError as e:
            print(f"veritrain: note: no figure ({e})", file=sys.stderr)
    lines = [
        f"# {exp.source}: {exp.title}",
        "",
        f"- scale: **{scale}**"
        + (
            f" ({exp.cpu_note})"
            if scale == "cpu" and exp.cpu_note
            else " (the paper's settings, Section V-A)"
            if scale == "paper"
            else ""
        ),
        f"- machine: {machine_description(device)}",
        f"- made by: `{command}` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- runs: {sum(p.state in ('done', 'reused') or _is_finished(p.folder) for p in planned)} of "
        f"{len(planned)} finished" + ("" if exp.kind == "train" else " (measured, no training)"),
        "",
        format_markdown(rows),
        "",
    ]
    legend = [f"- {c}: {METRICS[c]}" for c in exp.columns if c in METRICS]
    if legend:
        lines += ['Columns ("(paper)": the paper\'s number for the row):', *legend, ""]
    if exp.note:
        lines += [exp.note.strip(), ""]
    if any(p.state == "reused" for p in planned):
        lines += [
            "Rows marked with a run outside this folder reuse a finished run whose training options match (`--reuse`).",
            "",
        ]
    if len(written) > 2:
        lines += [f"![{exp.source}]({written[2].name})", ""]
    md.write_text("\n".join(lines), encoding="utf-8")
    return written


def measure_options(exp: Experiment, run: Run, scale: str) -> dict[str, Any]:
    """The keyword arguments of `exp.measure` for `run` at `scale` (the run's own over the experiment's)."""
    return {**exp.scale_options.get(scale, {}), **run.measure_options.get(scale, {})}


def reproduce(
    exp: Experiment,
    scale: str,
    out_dir: str | os.PathLike,
    *,
    device: str = "auto",
    dry_run: bool = False,
    train_missing: bool = True,
    only: str | None = None,
    reuse: Sequence[str | os.PathLike] = (),
    progress: bool = True,
    command: str = "",
    log=print,
) -> list[Path]:
    """Run (or, with `dry_run`, print) `exp` at `scale` into `out_dir`; returns the files written."""
    from veritrain.training import train

    out = Path(out_dir)
    planned = plan(exp, scale, out, only=only, reuse=reuse)
    skipped = [r for r in exp.runs if r not in exp.runs_at(scale)]
    if dry_run:
        log(f"{exp.name} ({exp.source}: {exp.title}), scale {scale}: {len(planned)} run(s) into {out}")
        if scale == "cpu" and exp.cpu_note:
            log(f"cpu scale: {exp.cpu_note}")
        for p in planned:
            log(f"- {p.run.key} [{p.state}]")
            if exp.kind == "train" and p.state == "shared":
                log(f"    (no training: the run of an earlier row, {p.folder})")
            elif exp.kind == "train":
                log(f"    {train_command(p, device)}")
            if exp.measure is not None:
                doc = (exp.measure.__doc__ or "measure").strip().splitlines()[0]
                opts = ", ".join(f"{k}={v}" for k, v in measure_options(exp, p.run, scale).items())
                log(f"    then: {doc}" + (f" ({opts})" if opts else ""))
        for r in skipped:
            log(f"- {r.key}: not at the {scale} scale ({r.cpu_skip or 'a row of the cpu scale only'})")
        return []
    measured: dict[str, dict[str, Any]] = {}
    for i, p in enumerate(planned):
        if p.state == "shared" and _is_finished(p.folder):  # trained by an earlier row of this experiment
            p.state = "done"
        if exp.kind == "train" and p.state not in ("done", "reused"):
            if not train_missing:
                continue
            log(
                f"[{i + 1}/{len(planned)}] {p.run.key}: {'resuming' if p.state == 'partial' else 'training'} "
                f"in {p.folder}"
            )
            train(p.train_config(device, progress))
            p.state = "done"
        elif exp.kind == "train":
            log(f"[{i + 1}/{len(planned)}] {p.run.key}: finished ({p.folder})")
        if exp.measure is not None and (exp.kind == "measure" or _is_finished(p.folder)):
            log(f"[{i + 1}/{len(planned)}] {p.run.key}: measuring")
            measured[p.run.key] = exp.measure(
                exp, p.run, p.config, scale, p.folder, out, **measure_options(exp, p.run, scale)
            )
    rows = result_rows(exp, planned, scale, out, measured)
    return write_report(exp, rows, scale, out, device, planned, command)
