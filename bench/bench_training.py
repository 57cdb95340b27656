"""Training-step speed and memory of MixTrain against regular and PGD-40 training (Table III, Table X).

One run prints every ratio side by side (MNIST Small, batch 50, k' = 1 unless said otherwise):
  PGD-40 step / MixTrain step        target >= 5 (paper, GPU: 0.027 / 0.011 = 2.5)
  MixTrain step / regular step       target <= 3 (paper, GPU: 0.011 / 0.006 = 1.8)
  MixTrain k'=50 / MixTrain k'=1     reported
  peak RSS MixTrain / regular        target <= 1.5 (separate subprocesses, a few hundred steps each)
  MixTrain step time per bound domain
A step is a full optimiser step: forward, backward and Adam. Steps of all variants are interleaved
(round robin) so that a busy machine slows them alike; the median over --steps is reported, in CPU time of
this process by default (`--clock cpu`: on a shared, loaded machine wall time mostly measures the other
processes; with one thread, CPU time is the step's own work) or wall time (`--clock wall`).

  python bench/bench_training.py --threads 1 [--data /path/to/data] [--device cuda]

Real MNIST batches when --data or $VERITRAIN_DATA holds MNIST, else random pixels.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from veritrain.bounds import DOMAINS  # noqa: E402
from veritrain.models import load_weights  # noqa: E402
from veritrain.training.config import TrainConfig  # noqa: E402
from veritrain.training.methods.base import StepContext  # noqa: E402
from veritrain.training.methods.mixtrain import MixTrain  # noqa: E402

from common import mnist_images, mnist_small  # noqa: E402

Step = Callable[[], None]


def batches(args: argparse.Namespace, device: torch.device, count: int) -> tuple[list, str]:
    """`count` batches of args.batch: real MNIST training images when available, else random pixels."""
    x, y, source = mnist_images(args.data or os.environ.get("VERITRAIN_DATA"), "train", count * args.batch, seed=0)
    xs, ys = x.split(args.batch), y.split(args.batch)
    return [(a.to(device), b.to(device)) for a, b in zip(xs, ys)], source


def make_step(
    kind: str,
    args: argparse.Namespace,
    device: torch.device,
    data: list,
    k_per_batch: int = 1,
    domain: str | None = None,
) -> Step:
    """One full optimiser step of `kind` (regular | pgd40 | mixtrain) on its own model and Adam."""
    torch.manual_seed(0)
    model = mnist_small()
    if args.weights:  # e.g. a trained network: fewer unstable ReLUs, the steady state of a long run
        load_weights(model, args.weights)
    model = model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    state = {"i": 0}
    if kind == "mixtrain":
        cfg = TrainConfig(
            method="mixtrain", dataset="mnist", domain=domain or args.domain, eps=args.eps, k_per_batch=k_per_batch
        )
        obj = MixTrain(cfg)
        gen = torch.Generator(device=device).manual_seed(1)
    if kind == "pgd40":
        try:
            from veritrain.attacks.pgd import pgd_attack
        except ImportError:
            pgd_attack = None

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if kind == "regular":
            return F.cross_entropy(model(x), y)
        if kind == "pgd40":
            if pgd_attack is not None:
                x_adv = pgd_attack(model, x, y, args.eps, steps=40, step_size=0.01)
            else:
                x_adv = inline_pgd(model, x, y, args.eps, 40, 0.01)
            return F.cross_entropy(model(x_adv), y)
        ctx = StepContext(eps=args.eps, epoch=0, step=state["i"], num_batches=len(data), generator=gen, device=device)
        return obj.loss(model, x, y, ctx)[0]

    def step() -> None:
        x, y = data[state["i"] % len(data)]
        state["i"] += 1
        loss = loss_of(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step


def inline_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, size: float) -> torch.Tensor:
    """Madry et al.'s L-inf PGD with random start (used when veritrain.attacks is absent)."""
    was = model.training
    model.eval()
    xa = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        xa.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xa), y), xa)
        xa = torch.min(torch.max(xa.detach() + size * g.sign(), x - eps), x + eps).clamp(0, 1)
    model.train(was)
    return xa.detach()


def time_steps(
    steps: dict[str, Step], n: int, warmup: int, slow_s: float = 2.0, clock: Callable[[], float] = time.process_time
) -> dict[str, float]:
    """Median seconds per step of each variant, interleaved round robin, by `clock` (CPU time by default).

    A variant whose first step takes more than `slow_s` seconds is warmed up once and timed 3 times only.
    """
    rounds: dict[str, int] = {}
    for k, s in steps.items():
        t = clock()
        s()
        slow = clock() - t > slow_s
        rounds[k] = min(n, 3) if slow else n
        for _ in range(0 if slow else warmup - 1):
            s()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for r in range(n):
        for k, s in steps.items():
            if r >= rounds[k]:
                continue
            t = clock()
            s()
            times[k].append(clock() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def rss_mb() -> float:
    """Peak resident set of this process (MB): VmHWM, which, unlike ru_maxrss, does not inherit the
    parent's peak across fork/exec and can be reset; ru_maxrss where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_child(args: argparse.Namespace) -> None:
    """Subprocess body: run --mem-steps steps of one kind, print peak RSS before and after as JSON."""
    device = torch.device(args.device)
    # the parent's batches, saved small: loading the whole data set here would set the peak RSS
    data = [(x.to(device), y.to(device)) for x, y in torch.load(args.mem_data, weights_only=True)]
    kind = args.mem_child
    step = make_step("mixtrain" if kind.startswith("mixtrain") else kind, args, device, data)
    step()  # first step: lazy allocations belong to training, not to setup
    before = rss_mb()
    reset = reset_peak_rss()
    for _ in range(args.mem_steps):
        step()
    out = {
        "kind": kind,
        "rss_setup_mb": before,
        "rss_peak_mb": max(rss_mb(), before if not reset else 0.0),
        "peak_reset": reset,
    }
    if device.type == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    print(json.dumps(out))


def memory(args: argparse.Namespace, kind: str, data_file: str, domain: str | None = None) -> dict[str, float]:
    cmd = [
        sys.executable,
        __file__,
        "--mem-child",
        kind,
        "--mem-data",
        data_file,
        "--mem-steps",
        str(args.mem_steps),
        "--threads",
        str(args.threads),
        "--device",
        args.device,
        "--eps",
        str(args.eps),
        "--domain",
        domain or args.domain,
        "--batch",
        str(args.batch),
    ] + (["--weights", args.weights] if args.weights else [])
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--steps", type=int, default=30, help="timed steps per variant (median)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--domain", default="symbolic-linear", help="MixTrain's domain for the headline ratios")
    p.add_argument(
        "--domains",
        default="interval,symbolic,symbolic-linear,crown-ibp,crown",
        help="domains timed for MixTrain (those registered)",
    )
    p.add_argument("--mem-steps", type=int, default=300, help="steps per memory subprocess (0: skip)")
    p.add_argument("--mem-domains", default="interval,crown-ibp", help="extra domains whose memory is measured")
    p.add_argument("--data", default=None, help="data root holding MNIST (default $VERITRAIN_DATA)")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--weights",
        default=None,
        help="start every network from these MNIST Small weights (default: fresh initialisation)",
    )
    p.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="cpu: CPU time of this process (default; a loaded machine barely moves it), wall: elapsed time",
    )
    p.add_argument(
        "--skip-full-k", action="store_true", help="do not time MixTrain with k' = batch (its steps take seconds)"
    )
    p.add_argument("--mem-child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--mem-data", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.mem_child:
        memory_child(args)
        return
    device = torch.device(args.device)
    data, source = batches(args, device, 20)
    print(
        f"MNIST Small ({'weights ' + args.weights if args.weights else 'fresh weights'}), batch {args.batch}, "
        f"eps {args.eps}, {source}, device {device}, "
        f"{args.threads} thread(s), median of {args.steps} interleaved steps (3 for steps over 2 s) (forward+backward+Adam), "
        f"load average {os.getloadavg()[0]:.2f}"
    )

    steps = {
        "regular": make_step("regular", args, device, data),
        "pgd40": make_step("pgd40", args, device, data),
        f"mixtrain k'=1 ({args.domain})": make_step("mixtrain", args, device, data, 1),
    }
    if not args.skip_full_k:
        steps[f"mixtrain k'={args.batch} ({args.domain})"] = make_step("mixtrain", args, device, data, args.batch)
    for d in args.domains.split(","):
        if d and d != args.domain and d in DOMAINS:
            steps[f"mixtrain k'=1 ({d})"] = make_step("mixtrain", args, device, data, 1, d)
    if args.steps <= 0:  # memory only
        steps = {k: v for k, v in steps.items() if k in ("regular", f"mixtrain k'=1 ({args.domain})")}
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    t = time_steps(steps, max(args.steps, 1), args.warmup, clock=clock)
    mix = t[f"mixtrain k'=1 ({args.domain})"]
    print(f"\nstep times (ms, {'CPU time of this process' if args.clock == 'cpu' else 'wall time'}):")
    for k, v in t.items():
        print(f"  {k:34s} {1000 * v:9.2f}   x{v / t['regular']:.2f} regular")
    rows = [("MixTrain step / regular step", mix / t["regular"], "<= 3", mix / t["regular"] <= 3)]
    if "pgd40" in t:
        rows.insert(0, ("PGD-40 step / MixTrain step", t["pgd40"] / mix, ">= 5", t["pgd40"] / mix >= 5))
    big = t.get(f"mixtrain k'={args.batch} ({args.domain})")
    if big is not None:
        rows.append((f"MixTrain k'={args.batch} / k'=1", big / mix, "report", None))
    if args.mem_steps > 0:
        mem_domains = [args.domain] + [
            d for d in args.mem_domains.split(",") if d and d != args.domain and d in DOMAINS
        ]
        with tempfile.TemporaryDirectory() as tmp:
            data_file = str(Path(tmp) / "batches.pt")
            torch.save([(x.cpu(), y.cpu()) for x, y in data], data_file)
            reg = memory(args, "regular", data_file)
            mems = {d: memory(args, "mixtrain", data_file, d) for d in mem_domains}
        print(
            f"\npeak RSS over training steps 2-{args.mem_steps + 1} (MB, separate processes; "
            f"after step 1: regular {reg['rss_setup_mb']:.0f}):"
        )
        print(f"  regular                            {reg['rss_peak_mb']:7.0f}")
        for d, mx in mems.items():
            cuda = (
                f"   CUDA peak {mx['cuda_peak_mb']:.0f} (regular {reg['cuda_peak_mb']:.0f})"
                if "cuda_peak_mb" in mx
                else ""
            )
            print(
                f"  mixtrain k'=1 ({d}){'':{max(0, 18 - len(d))}s} {mx['rss_peak_mb']:7.0f}   "
                f"x{mx['rss_peak_mb'] / reg['rss_peak_mb']:.2f} regular{cuda}"
            )
        ratio = mems[args.domain]["rss_peak_mb"] / reg["rss_peak_mb"]
        rows.append(("peak RSS MixTrain / regular", ratio, "<= 1.5", ratio <= 1.5))
    print(f"\nratios ({args.domain}, k'=1):")
    for name, val, target, ok in rows:
        verdict = "" if ok is None else ("  ok" if ok else "  MISSED")
        print(f"  {name:34s} {val:7.2f}   target {target}{verdict}")


if __name__ == "__main__":
    main()
