"""Benchmark of the bound domains on MNIST Small (the issue's targets, printed as ratios in one run).

1. `symbolic-linear` forward + backward (gradient of verified_loss w.r.t. the weights) for k' = 1 and
   k' = 10 samples, versus a plain forward + backward of the network on as many images as the
   representation carries columns (d + 1 input columns plus the error symbols). Target <= 1.5x.
   Printed for the default (input colouring through the conv layers, `bounds/colouring.py`: 100 colour
   columns instead of 784 pixel columns until the first dense layer) and for dense pixel columns.
2. `interval` forward + backward, batch 50, versus a regular forward + backward on 50 images. Target <= 2.5x.
3. Peak memory of VRA evaluation for several chunk sizes (a child process per size; CUDA: max allocated).

Uses the authors' checkpoint and real MNIST test images when $VERITRAIN_DATA (or --data) has them
(mnist/ and reference/mnist_small_mixtrain_0.3.pth), otherwise a fresh network and random images.

    python bench/bench_bounds.py [--eps 0.3] [--device cpu] [--repeats 5] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from veritrain.bounds import DOMAINS, Ball, verified_loss
from veritrain.bounds.base import margin_spec, with_spec
from veritrain.bounds.ops import to_ops
from veritrain.bounds.symbolic_linear import SymbolicLinear
from veritrain.models import load_weights

from common import mnist_images, mnist_small


def load_setup(data: str | None, n: int) -> tuple[nn.Sequential, torch.Tensor, torch.Tensor, str]:
    model = mnist_small()
    ckpt = Path(data) / "reference" / "mnist_small_mixtrain_0.3.pth" if data else None
    x, y, source = mnist_images(data if ckpt is not None and ckpt.exists() else None, "test", n)
    if source.startswith("real"):
        load_weights(model, ckpt)
        return model, x, y, "authors' checkpoint, MNIST test"
    return model, x, y, "fresh weights, random images"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    """Best time of fn() over `repeats` runs after one warm-up: process CPU time on CPU (robust on a shared
    machine; use --threads 1), wall time on CUDA."""
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t = clock()
        fn()
        sync(device)
        times.append(clock() - t)
    return min(times)


def paired(fa, fb, device: torch.device, rounds: int) -> tuple[float, float]:
    """Median times of fa() and fb() run alternately (the same machine load for both; for ms-scale calls,
    where a best-of-few is at the mercy of one lucky or unlucky run)."""
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    fa(), fb()
    ta, tb = [], []
    for _ in range(rounds):
        for f, out in ((fa, ta), (fb, tb)):
            sync(device)
            t = clock()
            f()
            sync(device)
            out.append(clock() - t)
    return statistics.median(ta), statistics.median(tb)


def fwd_bwd_bound(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, domain) -> None:
    model.zero_grad(set_to_none=True)
    verified_loss(model, Ball(x, eps), y, domain).backward()


def fwd_bwd_plain(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()


def error_symbols(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> int:
    dom = DOMAINS.get("symbolic-linear")()
    ops = with_spec(to_ops(model, tuple(x.shape[1:])), margin_spec(y, 10).to(x.dtype))
    with torch.no_grad():
        dom.bounds(ops, Ball(x, eps))
    return dom.error_symbols


def peak_memory_child(args: argparse.Namespace, chunk: int) -> float:
    """Peak memory (MiB) of a VRA run with `chunk` samples per bound computation, in a fresh process."""
    cmd = [
        sys.executable,
        __file__,
        "--child-vra",
        str(chunk),
        "--eps",
        str(args.eps),
        "--device",
        args.device,
        "--vra-samples",
        str(args.vra_samples),
        "--threads",
        str(args.threads),
    ] + (["--data", args.data] if args.data else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mib"]


class PeakRSS:
    """Highest resident set size (MiB) above the level at start, sampled every few ms from a thread (CPU)."""

    def __init__(self) -> None:
        import threading

        self.base = self.peak = self.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    @staticmethod
    def rss() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20

    def _poll(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self.rss())

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def child_vra(args: argparse.Namespace) -> None:
    from veritrain.evaluation.vra import verified_robust_accuracy

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model, x, y, _ = load_setup(args.data, args.vra_samples)
    model = model.to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    with PeakRSS() as rss:
        res = verified_robust_accuracy(
            model, x, y, args.eps, ["symbolic-linear"], chunk_size=args.child_vra, progress=False, device=device
        )
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    else:
        peak = rss.peak - rss.base
    print(json.dumps({"peak_mib": peak, "vra": res}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (CPU times are process CPU seconds)")
    p.add_argument("--data", default=os.environ.get("VERITRAIN_DATA"))
    p.add_argument("--chunks", default="5,25", help="chunk sizes for the VRA peak-memory check ('' skips it)")
    p.add_argument("--vra-samples", type=int, default=50)
    p.add_argument("--child-vra", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_vra:
        return child_vra(args)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model, x, y, source = load_setup(args.data, 50)
    model, x, y = model.to(device), x.to(device), y.to(device)
    print(f"MNIST Small ({source}), eps={args.eps}, device={device}, threads={torch.get_num_threads()}")
    d = x[0].numel()
    for k in (1, 10):
        xs, ys = x[:k], y[:k]
        m = error_symbols(model, xs, ys, args.eps)
        t_sym = timed(lambda: fwd_bwd_bound(model, xs, ys, args.eps, SymbolicLinear()), device, args.repeats)
        t_dense = timed(
            lambda: fwd_bwd_bound(model, xs, ys, args.eps, SymbolicLinear(colour=False)), device, args.repeats
        )
        n = k * (d + 1 + m)  # images a plain network would process for as many columns
        xp = torch.rand(n, *x.shape[1:], device=device)
        yp = torch.randint(0, 10, (n,), device=device)
        t_plain = timed(lambda: fwd_bwd_plain(model, xp, yp), device, args.repeats)
        print(
            f"symbolic-linear k'={k:2d}: error symbols {m} (padded, per sample); fwd+bwd {t_sym * 1e3:.1f} ms "
            f"(dense pixel columns {t_dense * 1e3:.1f} ms); plain fwd+bwd on {n} images {t_plain * 1e3:.1f} ms; "
            f"ratio {t_sym / t_plain:.2f}x (dense {t_dense / t_plain:.2f}x; target <= 1.5x)"
        )
    t_int, t_reg = paired(
        lambda: fwd_bwd_bound(model, x, y, args.eps, "interval"),
        lambda: fwd_bwd_plain(model, x, y),
        device,
        args.repeats * 40,
    )
    print(
        f"interval batch 50: fwd+bwd {t_int * 1e3:.2f} ms; regular fwd+bwd {t_reg * 1e3:.2f} ms; "
        f"ratio {t_int / t_reg:.2f}x (target <= 2.5x; medians of {args.repeats * 40} alternating runs)"
    )
    for chunk in [int(c) for c in args.chunks.split(",") if c]:
        peak = peak_memory_child(args, chunk)
        print(
            f"VRA symbolic-linear over {args.vra_samples} samples, chunk_size={chunk}: peak memory above baseline {peak:.0f} MiB"
        )


if __name__ == "__main__":
    main()
