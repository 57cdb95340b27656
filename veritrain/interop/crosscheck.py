"""An external complete verifier (Marabou) checking veritrain's proofs on exported networks.

For the first N test samples, the network is exported as ONNX with one VNN-LIB robustness property per
sample (a VNN-COMP benchmark folder); Marabou reads that ONNX file and solves each property split into
one VNN-LIB query per other class (its own parsers read both files). Every
domain's verdict (`veritrain.bounds.verify`) is compared with Marabou's:

- proved by a domain and `sat` for Marabou: a *soundness failure*. The counterexample is saved and
  re-checked by a forward pass of the PyTorch model (inside the box? margin <= 0?).
- `unsat` for Marabou and not proved by a domain: the domain's *gap* (a measure of its tightness).
- `sat` for Marabou is re-checked the same way; a PGD counterexample with `unsat` from Marabou is a
  disagreement of the external verifier, reported too. Timeouts count as timeouts, never as robust.

Times are CPU seconds of this (single-threaded) process, comparable on a shared machine; Marabou's
timeout is wall-clock, so a loaded machine turns more queries into timeouts.

Needs the extras `veritrain[onnx]` and `veritrain[verify]` (maraboupy).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from veritrain.bounds import Ball, Domain, verify
from veritrain.interop import require
from veritrain.interop.vnnlib import robustness_property, write_benchmark

#: Marabou exit codes -> our names ("timeout" is never robust)
MARABOU_RESULTS = {"sat": "sat", "unsat": "unsat", "TIMEOUT": "timeout"}


#: a solver's floating-point counterexample may leave the box or miss the tie Y_j >= Y_y by this much
RECHECK_TOL = 1e-6


@dataclass
class Recheck:
    """A counterexample re-checked by a float64 forward pass of the PyTorch model: how far it lies
    outside the box (`box_error`), and the margin z_y - max_{j != y} z_j at the point clamped into the
    box (<= 0: the property's Y_j >= Y_y holds). Confirmed when both are within RECHECK_TOL."""

    box_error: float
    margin: float

    @property
    def confirmed(self) -> bool:
        return self.box_error <= RECHECK_TOL and self.margin <= RECHECK_TOL


def recheck(model: nn.Module, x: Tensor, y: int, eps: float, cex: np.ndarray) -> Recheck:
    """Re-check a counterexample of sample x (C, H, W) with a float64 forward pass of the model."""
    lo, hi = Ball(x.unsqueeze(0).double(), eps).box()
    c = torch.from_numpy(np.asarray(cex, dtype=np.float64)).reshape(lo.shape)
    err = float(torch.maximum(lo - c, c - hi).clamp(min=0).max())
    with torch.no_grad():
        z = _double(model)(torch.minimum(torch.maximum(c, lo), hi))[0]
    others = torch.cat([z[:y], z[y + 1 :]])
    return Recheck(err, float(z[y] - others.max()))


def _double(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).double().eval()


class Marabou:
    """Marabou on one ONNX file: `solve(vnnlib)` -> (result, seconds, input assignment or None)."""

    def __init__(self, onnx_path: str | Path, timeout: float = 60.0, log: str | Path = os.devnull) -> None:
        require("maraboupy", "verify")
        import warnings

        with warnings.catch_warnings():  # maraboupy warns that its TensorFlow reader is unavailable
            warnings.simplefilter("ignore")
            from maraboupy import Marabou as M
        self.network = M.read_onnx(str(onnx_path))
        self.options = M.createOptions(timeoutInSeconds=max(1, int(round(timeout))), verbosity=0)
        self.log = str(log)

    def solve(self, vnnlib: str | Path, timeout: float | None = None) -> tuple[str, float, float, np.ndarray | None]:
        """(result, wall seconds, CPU seconds, input assignment of a sat); the timeout is wall-clock."""
        if timeout is not None:
            self.options._timeoutInSeconds = max(1, int(math.ceil(timeout)))
        t0, c0 = time.perf_counter(), time.process_time()
        code, vals = self._quiet_solve(str(vnnlib))
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        result = MARABOU_RESULTS.get(code, f"error ({code})")
        cex = None
        if result == "sat":
            cex = np.array([vals[int(v)] for v in np.asarray(self.network.inputVars[0]).flatten()])
        return result, dt, cpu, cex

    def _quiet_solve(self, vnnlib: str) -> tuple[str, dict]:
        """Marabou's C++ code prints to file descriptor 1: send that to the log while it solves."""
        import sys

        sys.stdout.flush()
        saved = os.dup(1)
        with open(self.log, "a") as log:
            os.dup2(log.fileno(), 1)
            try:
                code, vals, _ = self.network.solve(
                    filename=self.log, verbose=False, options=self.options, propertyFilename=vnnlib
                )
            finally:
                os.dup2(saved, 1)
                os.close(saved)
        return code, vals


@dataclass
class CrossCheck:
    """Per-sample verdicts of every domain, PGD and Marabou, and what they say together."""

    name: str
    n: int
    eps: float
    domains: list[str]
    correct: list[bool]
    proved: dict[str, list[bool]]
    pgd_robust: list[bool]
    marabou: list[str]
    marabou_time: list[float]
    marabou_cpu: list[float]
    time_s: dict[str, float]
    onnx_max_diff: float
    rechecks: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def failures(self) -> list[dict[str, Any]]:
        """Soundness failures: proved by a domain, refuted (sat) by Marabou."""
        return [
            {"sample": i, "domain": d, **self.rechecks.get(i, {})}
            for d in self.domains
            for i in range(self.n)
            if self.proved[d][i] and self.marabou[i] == "sat"
        ]

    @property
    def marabou_disagreements(self) -> list[int]:
        """Samples PGD broke (a checked counterexample) that Marabou calls unsat."""
        return [i for i in range(self.n) if self.correct[i] and not self.pgd_robust[i] and self.marabou[i] == "unsat"]

    def row(self) -> dict[str, Any]:
        """The table row: percentages over n, times per sample, timeouts as timeouts, gaps per domain."""
        pct = lambda k: round(100.0 * k / self.n, 2) if self.n else None  # noqa: E731
        queried = [t for t, r in zip(self.marabou_time, self.marabou) if r != "misclassified"]
        cpu = [t for t, r in zip(self.marabou_cpu, self.marabou) if r != "misclassified"]
        row: dict[str, Any] = {"network": self.name, "eps": self.eps, "n": self.n, "ACC": pct(sum(self.correct))}
        for d in self.domains:
            row[f"VRA {d}"] = pct(sum(self.proved[d]))
        row["Marabou RA"] = pct(sum(r == "unsat" for r in self.marabou))
        row["Marabou timeouts"] = sum(r == "timeout" for r in self.marabou)
        row["Marabou errors"] = sum(r.startswith("error") for r in self.marabou)
        row["PGD ERA"] = pct(sum(self.pgd_robust))
        for d in self.domains:
            row[f"CPU ms/sample {d}"] = round(1000 * self.time_s[d] / max(1, sum(self.correct)), 2)
        row["CPU ms/sample PGD"] = round(1000 * self.time_s["pgd"] / max(1, sum(self.correct)), 2)
        row["CPU s/sample Marabou"] = round(sum(cpu) / len(cpu), 3) if cpu else None
        row["wall s/sample Marabou"] = round(sum(queried) / len(queried), 3) if queried else None
        for d in self.domains:
            row[f"gap {d}"] = sum(1 for i in range(self.n) if self.marabou[i] == "unsat" and not self.proved[d][i])
        row["soundness failures"] = len(self.failures)
        row["Marabou vs PGD disagreements"] = len(self.marabou_disagreements)
        row["ONNX max abs diff"] = float(f"{self.onnx_max_diff:.3g}")
        return row

    def samples(self) -> list[dict[str, Any]]:
        return [
            {
                "sample": i,
                "correct": self.correct[i],
                **{d: self.proved[d][i] for d in self.domains},
                "pgd_robust": self.pgd_robust[i],
                "marabou": self.marabou[i],
                "marabou_wall_s": round(self.marabou_time[i], 3),
                "marabou_cpu_s": round(self.marabou_cpu[i], 3),
            }
            for i in range(self.n)
        ]


def _marabou_sample(
    solver: Marabou, model: nn.Module, x: Tensor, y: int, eps: float, out: Path, index: int, timeout: float
) -> tuple[str, float, float, np.ndarray | None]:
    """Marabou on sample `index`, one query per other class j (the box and Y_j >= Y_y, written as VNN-LIB
    files in out/queries and read by Marabou's own parser): the disjunctive property of the benchmark
    split into its disjuncts, which Marabou solves far faster. sat at the first class that is sat;
    timeout when the sample's `timeout` (wall-clock, shared by its queries) runs out; else unsat."""
    with torch.no_grad():
        k = int(model(x.unsqueeze(0)).shape[1])
    queries = out / "queries"
    queries.mkdir(parents=True, exist_ok=True)
    wall = cpu = 0.0
    for j in (j for j in range(k) if j != y):
        left = timeout - wall
        if left <= 0:
            return "timeout", wall, cpu, None
        path = queries / f"prop_{index}_target{j}.vnnlib"
        path.write_text(
            robustness_property(x, y, eps, k, f"sample {index}: can class {j} reach class {y}?", [j]), encoding="utf-8"
        )
        result, dt, dc, cex = solver.solve(path, left)
        path.unlink()
        wall, cpu = wall + dt, cpu + dc
        if result != "unsat":
            return result, wall, cpu, cex
    return "unsat", wall, cpu, None


def crosscheck(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    domains: Sequence[str | Domain],
    out_dir: str | Path,
    timeout: float = 60.0,
    name: str = "network",
    pgd_steps: int = 100,
    progress: bool = False,
) -> CrossCheck:
    """Cross-check every domain against Marabou on the samples (x, y); files go to out_dir:
    `model.onnx`, `vnnlib/`, `instances.csv` (a VNN-COMP benchmark), `marabou.log` and
    `counterexamples/sample{i}.npz` for every Marabou `sat` (with its re-check)."""
    from veritrain.evaluation.era import estimate_robust_accuracy
    from veritrain.interop.onnx_export import max_difference

    out = Path(out_dir)
    model = model.eval()
    in_shape = tuple(x.shape[1:])
    write_benchmark(
        model, in_shape, x, y, eps, out / "model.onnx", out / "vnnlib", out / "instances.csv", timeout=timeout
    )
    diff = max_difference(model, out / "model.onnx", x)
    n = len(x)
    with torch.no_grad():
        correct = (model(x).argmax(1) == y).tolist()
    good = [i for i in range(n) if correct[i]]
    times: dict[str, float] = {}
    proved: dict[str, list[bool]] = {}
    names = [d if isinstance(d, str) else d.name for d in domains]
    for d, key in zip(domains, names):  # CPU times: the machine may be shared; every run is single-threaded
        t0 = time.process_time()
        mask = [False] * n
        if good:
            ok = verify(model, Ball(x[good], eps), y[good], d).tolist()
            for i, v in zip(good, ok):
                mask[i] = bool(v)
        times[key] = time.process_time() - t0
        proved[key] = mask
    t0 = time.process_time()
    era = estimate_robust_accuracy(model, x, y, ["pgd"], eps, progress=False, steps=pgd_steps)
    times["pgd"] = time.process_time() - t0
    pgd_robust = [bool(v) for v in era["robust_mask"].tolist()]

    solver = Marabou(out / "model.onnx", timeout, out / "marabou.log")
    results, mtimes, mcpu, rechecks = ["misclassified"] * n, [0.0] * n, [0.0] * n, {}
    for i in good:
        results[i], mtimes[i], mcpu[i], cex = _marabou_sample(solver, model, x[i], int(y[i]), eps, out, i, timeout)
        if cex is not None:
            rc = recheck(model, x[i], int(y[i]), eps, cex)
            rechecks[i] = {"box_error": rc.box_error, "margin": rc.margin, "confirmed": rc.confirmed}
            (out / "counterexamples").mkdir(parents=True, exist_ok=True)
            np.savez(
                out / "counterexamples" / f"sample{i}.npz",
                x=x[i].numpy(),
                label=int(y[i]),
                eps=eps,
                counterexample=cex.reshape(in_shape),
                box_error=rc.box_error,
                margin=rc.margin,
                confirmed=rc.confirmed,
            )
        if progress:
            print(f"  sample {i}: Marabou {results[i]} ({mtimes[i]:.2f} s wall, {mcpu[i]:.2f} s CPU)", flush=True)
    times["marabou"] = sum(mcpu)
    return CrossCheck(name, n, eps, names, correct, proved, pgd_robust, results, mtimes, mcpu, times, diff, rechecks)


__all__ = ["CrossCheck", "Marabou", "Recheck", "crosscheck", "recheck"]
