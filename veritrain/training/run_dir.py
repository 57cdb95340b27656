"""A run folder: its file names (in one place), checkpoints and the random states a resume restores.

Run folder layout (`cfg.out`):
  config.json      the resolved options, written when training starts
  metrics.jsonl    one JSON line per finished epoch
  checkpoint.pt    everything needed to continue (the last epoch's model, optimiser, schedule, RNG states,
                   objective; with --keep-best also the kept epoch's weights), rewritten atomically at every
                   epoch boundary
  model.pt         the run's weights as a plain state_dict (`veritrain.models.load_weights`): the latest, or
                   with --keep-best those of the best epoch so far (what the final evaluation uses)
  summary.json     final metrics and the evaluation (ACC, ERA, VRA), written at the end
  evaluation.json  written by `veritrain evaluate RUN` (the latest evaluation)
  evaluations.jsonl every evaluation of `veritrain evaluate RUN`, one JSON line each (a history)
  run.lock         exists while a process trains or evaluates into the folder (owner pid; stale ones are taken over)
  metrics.png      written by `veritrain plot RUN`
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from veritrain.errors import TrainingError
from veritrain.reporting.io import atomic_write_bytes, read_jsonl

CHECKPOINT_VERSION = 1
CHECKPOINT_FORMAT = "veritrain-checkpoint"


class RunFiles:
    """The paths of one run folder; every module that reads or writes a run folder names its files here."""

    CONFIG = "config.json"
    METRICS = "metrics.jsonl"
    CHECKPOINT = "checkpoint.pt"
    MODEL = "model.pt"
    SUMMARY = "summary.json"
    EVALUATION = "evaluation.json"
    EVALUATIONS = "evaluations.jsonl"  # every evaluation of the run, appended (evaluation.json: the latest)
    LOCK = "run.lock"  # held while a process trains or writes evaluations (`veritrain.training.run_lock`)
    PLOT = "metrics.png"
    TENSORBOARD = "tensorboard"  # folder of the --tensorboard event files

    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.dir = Path(out)
        self.config = self.dir / self.CONFIG
        self.metrics = self.dir / self.METRICS
        self.checkpoint = self.dir / self.CHECKPOINT
        self.model = self.dir / self.MODEL
        self.summary = self.dir / self.SUMMARY
        self.evaluation = self.dir / self.EVALUATION
        self.evaluations = self.dir / self.EVALUATIONS
        self.lock = self.dir / self.LOCK
        self.plot = self.dir / self.PLOT
        self.tensorboard = self.dir / self.TENSORBOARD

    def started(self) -> bool:
        """Whether training has written anything an epoch produces."""
        return self.checkpoint.exists() or self.metrics.exists()

    def training_outputs(self) -> tuple[Path, ...]:
        """The files a fresh run (re)creates; `--overwrite` removes them first."""
        return (self.metrics, self.checkpoint, self.model, self.summary)


def read_metrics(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The per-epoch metrics of a run folder."""
    return read_jsonl(RunFiles(run_dir).metrics)


# ----------------------------------------------------------------------------- seeds and random states


def seed_everything(seed: int) -> None:
    """Seed python `random`, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_rng_state(shuffle_gen: torch.Generator, method_gen: torch.Generator) -> dict[str, Any]:
    """Every random state the loop depends on, in types `torch.load(weights_only=True)` accepts."""
    np_state = np.random.get_state()
    assert isinstance(np_state, tuple)  # legacy=True, the default: ("MT19937", keys, pos, has_gauss, gauss)
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np_state
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
        "shuffle": shuffle_gen.get_state(),
        "method": method_gen.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], shuffle_gen: torch.Generator, method_gen: torch.Generator) -> None:
    """Restore what `get_rng_state` saved (the cuda states only on a machine with as many GPUs)."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    shuffle_gen.set_state(state["shuffle"])
    method_gen.set_state(state["method"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- checkpoints and weights


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """torch.save to memory, then an atomic replace (tmp file in the same folder, fsync, os.replace)."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def save_weights(path: str | os.PathLike[str], model: nn.Module | dict[str, torch.Tensor]) -> None:
    """The model's state_dict (or a given one) on the CPU, written atomically (what
    `veritrain.models.load_weights` reads)."""
    state = model.state_dict() if isinstance(model, nn.Module) else model
    save_checkpoint(path, {k: v.detach().cpu() for k, v in state.items()})


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` (weights only); TrainingError if it is unreadable."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TrainingError(f"no checkpoint at {path}") from None
    except Exception as e:  # torch raises many types for truncated/garbled files
        from veritrain.models.loading import load_error_message

        raise TrainingError(load_error_message(path, e, "restart without --resume into a new --out")) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or "model" not in ckpt:
        raise TrainingError(f"{path} is not a veritrain training checkpoint; restart into a new --out")
    return ckpt


__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "RunFiles",
    "get_rng_state",
    "load_checkpoint",
    "read_metrics",
    "save_checkpoint",
    "save_weights",
    "seed_everything",
    "set_rng_state",
]
