"""The speed and memory figures of issue 13 that `bench_training.py` does not print, each in its own child
process (one thread; CPU seconds and wall seconds, and the child's peak resident memory, VmHWM):

  vra       `symbolic-linear` VRA of the authors' eps 0.3 MNIST Small checkpoint on the first --n test images
            (through `verified_robust_accuracy`, chunked as the CLI): ms per image, target <= 8, and the VRA.
  interval  the interval attack (Algorithm 1, default domain `symbolic-linear`) at eps 0.3 on the first
            --attack-n images: seconds (target 1,000 images in <= 300 s) and peak RSS (target <= 2 GB), with
            the ERA of PGD-40 on the same images (the interval attack's ERA must not be above it).
  cifar     one MixTrain step (k' = 1, symbolic-linear, eps 2/255) of CIFAR Large, batch 50: peak RSS
            (target < 4 GB; the paper's Table X: Wong et al. needed 39.8 GB).

    python bench/bench_speed.py [--only vra,interval,cifar] [--n 1000] [--attack-n 1000] [--data DIR]

CPU seconds are the child's process time (robust on a shared machine, one thread); on an idle machine wall
seconds equal them. Needs $VERITRAIN_DATA (or --data) with mnist/ and reference/mnist_small_mixtrain_0.3.pth;
the cifar part uses random pixels (the memory does not depend on the images much).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

CKPT = Path("reference") / "mnist_small_mixtrain_0.3.pth"


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def mnist(args: argparse.Namespace, n: int):  # type: ignore[no-untyped-def]
    from common import mnist_images, mnist_small
    from veritrain.models import load_weights

    x, y, source = mnist_images(args.data, "test", n)
    if not source.startswith("real"):
        raise SystemExit("needs the MNIST test set and the authors' checkpoint under --data / $VERITRAIN_DATA")
    return load_weights(mnist_small(), Path(args.data) / CKPT).eval(), x, y


def child(args: argparse.Namespace) -> dict:
    torch.set_num_threads(1)
    t_cpu, t_wall = time.process_time(), time.perf_counter()
    out: dict = {"part": args.child}
    if args.child == "vra":
        from veritrain.evaluation.vra import verified_robust_accuracy

        model, x, y = mnist(args, args.n)
        t_cpu, t_wall = time.process_time(), time.perf_counter()
        out["vra"] = verified_robust_accuracy(model, x, y, 0.3, ["symbolic-linear"], progress=False)["symbolic-linear"]
        out["n"] = len(x)
    elif args.child == "interval":
        from veritrain.attacks import ATTACKS
        from veritrain.evaluation.era import estimate_robust_accuracy

        model, x, y = mnist(args, args.attack_n)
        pgd = estimate_robust_accuracy(model, x, y, ["pgd"], 0.3, progress=False)
        out["pgd_era"] = pgd["era"]["pgd"]
        t_cpu, t_wall = time.process_time(), time.perf_counter()
        res = ATTACKS.get("interval")(eps=0.3).run(model, x, y)  # the whole set in one call: the attack chunks
        with torch.no_grad():
            out["interval_era"] = 100.0 * float((model(res.x_adv).argmax(1) == y).double().mean())
        out["info"] = res.info  # samples broken by PGD first, verified over the ball, searched by Algorithm 1
        out["n"] = len(x)
    elif args.child == "cifar":
        from veritrain.models import build_model
        from veritrain.training.config import TrainConfig
        from veritrain.training.methods.base import StepContext
        from veritrain.training.methods.mixtrain import MixTrain

        model = build_model("cifar-large").train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        obj = MixTrain(
            TrainConfig(method="mixtrain", dataset="cifar10", domain="symbolic-linear", eps=2 / 255, k_per_batch=1)
        )
        g = torch.Generator().manual_seed(0)
        x, y = torch.rand(50, 3, 32, 32, generator=g), torch.randint(0, 10, (50,), generator=g)
        out["rss_before_mb"] = peak_rss_mb()
        t_cpu, t_wall = time.process_time(), time.perf_counter()
        ctx = StepContext(eps=2 / 255, epoch=0, step=0, num_batches=1, generator=g, device=torch.device("cpu"))
        loss = obj.loss(model, x, y, ctx)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    out["cpu_s"], out["wall_s"] = time.process_time() - t_cpu, time.perf_counter() - t_wall
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="vra,interval,cifar")
    p.add_argument("--n", type=int, default=1000, help="test images of the VRA part")
    p.add_argument("--attack-n", type=int, default=1000, help="test images of the interval-attack part")
    p.add_argument("--data", default=os.environ.get("VERITRAIN_DATA"))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    load = os.getloadavg()
    print(f"one thread per child; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    for part in [s for s in args.only.split(",") if s]:
        cmd = [sys.executable, __file__, "--child", part, "--n", str(args.n), "--attack-n", str(args.attack_n)]
        if args.data:
            cmd += ["--data", args.data]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout.splitlines()[-1])
        if part == "vra":
            ms = 1000 * r["cpu_s"] / r["n"]
            print(
                f"VRA symbolic-linear, authors' eps 0.3 checkpoint, first {r['n']} test images: VRA {r['vra']:.1f}%, "
                f"{ms:.2f} CPU ms/image (wall {1000 * r['wall_s'] / r['n']:.2f}), target <= 8 "
                f"{'ok' if ms <= 8 else 'MISSED'}; peak RSS {r['peak_rss_mb']:.0f} MB"
            )
        elif part == "interval":
            per = 1000 * r["cpu_s"] / r["n"]
            ok = r["interval_era"] <= r["pgd_era"]
            print(
                f"interval attack eps 0.3, first {r['n']} test images: {r['cpu_s']:.0f} CPU s ({per:.0f} ms/image; "
                f"{per:.0f} s per 1,000, target <= 300 {'ok' if per <= 300 else 'MISSED'}), wall {r['wall_s']:.0f} s; "
                f"peak RSS {r['peak_rss_mb']:.0f} MB (target <= 2048 {'ok' if r['peak_rss_mb'] <= 2048 else 'MISSED'}); "
                f"ERA interval {r['interval_era']:.1f} vs PGD {r['pgd_era']:.1f} {'ok' if ok else 'ABOVE PGD'}"
            )
            info = r.get("info") or {}
            if info:
                print(
                    f"  of which broken by PGD first {info.get('pgd_broken')}, verified over the whole ball "
                    f"{info.get('verified')}, searched by Algorithm 1 {info.get('searched')}"
                )
        elif part == "cifar":
            print(
                f"MixTrain k'=1 symbolic-linear step, CIFAR Large, batch 50: {r['cpu_s']:.1f} CPU s, peak RSS "
                f"{r['peak_rss_mb']:.0f} MB (before the step {r['rss_before_mb']:.0f}; target < 4096 "
                f"{'ok' if r['peak_rss_mb'] < 4096 else 'MISSED'})"
            )


if __name__ == "__main__":
    main()
