"""Median optimiser-step time of every training method on MNIST Small, batch 50 (Table III's batch time).

All methods are measured in the same run, with the same network, batch and optimiser (Adam), and
printed with their ratio to MixTrain (k' = 1). Real MNIST batches when $VERITRAIN_DATA holds MNIST,
else random pixels (the step time hardly depends on the pixels, except through unstable ReLUs).

    python bench/bench_methods.py [--steps 10] [--eps 0.1] [--device cpu] [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from veritrain.training.config import TrainConfig  # noqa: E402
from veritrain.training.methods import METHODS, StepContext  # noqa: E402

from common import mnist_images, mnist_small  # noqa: E402

#: (label, method, options) in print order; MixTrain is the reference of the ratios
CASES: list[tuple[str, str, dict]] = [
    ("regular", "regular", {}),
    ("mixtrain k'=1", "mixtrain", {"k_per_batch": 1}),
    ("madry (PGD 40)", "madry", {}),
    ("wrm (elu, 15+1 steps)", "wrm", {"activation": "elu"}),
    ("wong exact", "wong", {}),
    ("wong projections=50", "wong", {"projections": 50}),
    ("wong projections=10", "wong", {"projections": 10}),
    ("diffai (box)", "diffai", {}),
]


def batch(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, str]:
    x, y, source = mnist_images(os.environ.get("VERITRAIN_DATA"), "train", n)
    return x.to(device), y.to(device), source


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_method(
    method: str, opts: dict, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, warmup: int, device: torch.device
) -> list[float]:
    cfg = TrainConfig(method=method, dataset="mnist", eps=eps, **opts).resolved()
    torch.manual_seed(0)
    model = mnist_small(cfg.activation).to(device).train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obj = METHODS.get(method)(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator(device=device).manual_seed(1)
    times = []
    for i in range(warmup + steps):
        ctx = StepContext(eps=eps, epoch=0, step=i, num_batches=1000, generator=gen, device=device)
        sync(device)
        t = time.perf_counter()
        loss, _ = obj.loss(model, x, y, ctx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return times


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10, help="timed steps per method (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    p.add_argument("--only", default=None, help="comma-separated method names to run (default: all)")
    p.add_argument("--json", default=None, help="write the results here")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    x, y, source = batch(a.batch_size, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"MNIST Small, batch {a.batch_size} ({source}), eps {a.eps}, {name}, median of {a.steps} steps")
    only = set(a.only.split(",")) if a.only else None
    results: dict[str, dict] = {}
    for label, method, opts in CASES:
        if only and method not in only:
            continue
        if method not in METHODS:
            print(f"{label:24s} not registered")
            continue
        ts = time_method(method, opts, x, y, a.eps, a.steps, a.warmup, device)
        results[label] = {"method": method, "options": opts, "median_s": statistics.median(ts), "times_s": ts}
    ref = results.get("mixtrain k'=1", {}).get("median_s")
    print(f"{'method':24s} {'median step (s)':>16s} {'x MixTrain':>11s}")
    for label, r in results.items():
        ratio = f"{r['median_s'] / ref:11.2f}" if ref else f"{'n/a':>11s}"
        print(f"{label:24s} {r['median_s']:16.4f} {ratio}")
    out = {"device": name, "batch_size": a.batch_size, "eps": a.eps, "data": source, "results": results}
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
