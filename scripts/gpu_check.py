"""Time one training batch (50 random images) of every training method on every network of the paper on
a CUDA device, one child process per network (an out-of-memory or a hang stays in its row), and write a
Markdown table of seconds per batch and peak GPU memory. Called by scripts/gpu_check.sh.

    python scripts/gpu_check.py [--out gpu_check.md] [--device cuda] [--timeout 60]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

from veritrain.experiments.spec import METHOD_OPTIONS
from veritrain.models import MODELS
from veritrain.training.methods import METHODS


def cases() -> list[tuple[str, dict]]:
    """Every registered method with the paper's options where it has them (MixTrain k' = 1, Wong 50 projections)."""
    out = []
    for name in METHODS:
        opts = dict(METHOD_OPTIONS.get(name, {"method": name}))
        out.append((name, opts))
        if name == "mixtrain":
            out.append(("mixtrain k'=10", {**opts, "k_per_batch": 10}))
    return out


def _child(net: str, device: str, queue) -> None:
    from veritrain.experiments.measures import time_methods

    queue.put(time_methods(net, cases(), device=device))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="gpu_check.md")
    p.add_argument("--device", default="cuda")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per network (default: 60)")
    args = p.parse_args()
    ctx = mp.get_context("spawn")
    labels = [label for label, _ in cases()]
    rows = []
    for net in MODELS:
        queue = ctx.Queue()
        child = ctx.Process(target=_child, args=(net, args.device, queue), daemon=True)
        t0 = time.perf_counter()
        child.start()
        try:
            res = queue.get(timeout=args.timeout)
        except Exception:  # noqa: BLE001 - queue.Empty: the network ran past its time
            res = {label: {"error": f"> {args.timeout:.0f} s for the network"} for label in labels}
        if child.is_alive():
            child.kill()
        child.join(5)
        cells = []
        for label in labels:
            r = res.get(label, {"error": "not reached"})
            cells.append(
                r["error"] if "error" in r else f"{r['batch s']:.3f} s / {r.get('gpu MB', float('nan')):,.0f} MB"
            )
        rows.append((net, cells))
        print(f"{net}: {time.perf_counter() - t0:.0f} s " + json.dumps(res), file=sys.stderr, flush=True)
    import torch

    where = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else args.device
    lines = [
        f"# One training batch (50 images) per method and network on {where}",
        "",
        "Seconds per batch / peak allocated GPU memory; eps 0.3 MNIST, 2/255 CIFAR, 0.0017 ImageNet-200.",
        "",
        "| network | " + " | ".join(labels) + " |",
        "|---" * (len(labels) + 1) + "|",
    ]
    lines += [f"| {net} | " + " | ".join(cells) + " |" for net, cells in rows]
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
