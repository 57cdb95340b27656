"""Benchmark of the attacks on MNIST Small.

1. Time of PGD-40 (step 0.01, the Madry baseline's inner loop, `pgd_attack`) on a batch of 50 versus a
   regular forward + backward of the network on the same batch; the ratio is printed (expected ~40x:
   PGD-40 is 40 forward + backward passes w.r.t. the input). Also the evaluation `PGD` class.
2. With real data (--data or $VERITRAIN_DATA holding mnist/ and reference/*.pth): ERA of the authors'
   checkpoints (MixTrain eps = 0.3 and regular training) on the first --n test images under
   --attacks, to compare with Table III (MixTrain, eps 0.3: ACC 95.4, ERA 87.3; regular: ERA 0.8 at 0.1).

    python bench/bench_attacks.py [--device cpu] [--repeats 5] [--data DIR] [--n 500] [--attacks fgsm,pgd,cw]
"""

from __future__ import annotations

import argparse
import json
import statistics
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from veritrain.attacks import make_attack, pgd_attack
from veritrain.evaluation.era import estimate_robust_accuracy
from veritrain.models import load_weights

from common import mnist_images, mnist_small


def timed(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return float(statistics.median(ts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--eps", type=float, default=0.3)
    ap.add_argument("--data", default=os.environ.get("VERITRAIN_DATA"))
    ap.add_argument("--n", type=int, default=500, help="test images for the ERA part (0: skip it)")
    ap.add_argument("--attacks", default="fgsm,pgd,cw")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    out: dict[str, object] = {"device": str(dev), "threads": torch.get_num_threads()}

    # 1. PGD-40 vs forward + backward
    model = mnist_small().to(dev)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 1, 28, 28, generator=g).to(dev)
    y = torch.randint(0, 10, (args.batch,), generator=g).to(dev)

    def fwd_bwd() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    gen = torch.Generator(device=dev).manual_seed(0)
    t_reg = timed(fwd_bwd, args.repeats, dev)
    model.zero_grad(set_to_none=True)
    t_pgd = timed(lambda: pgd_attack(model, x, y, args.eps, 40, 0.01, generator=gen), args.repeats, dev)
    pgd_eval = make_attack("pgd", args.eps, steps=40, step_size=0.01, early_stop=False)
    t_eval = timed(lambda: pgd_eval.run(model, x, y), args.repeats, dev)
    out["timing"] = {
        "batch": args.batch,
        "forward_backward_s": t_reg,
        "pgd40_train_s": t_pgd,
        "pgd40_eval_s": t_eval,
        "ratio_train": t_pgd / t_reg,
        "ratio_eval": t_eval / t_reg,
    }
    print(f"forward+backward, batch {args.batch}: {1e3 * t_reg:.2f} ms")
    print(f"PGD-40 pgd_attack (training):        {1e3 * t_pgd:.2f} ms  ({t_pgd / t_reg:.1f}x)")
    print(f"PGD-40 PGD class (eval, best kept):  {1e3 * t_eval:.2f} ms  ({t_eval / t_reg:.1f}x)")

    # 2. ERA of the authors' checkpoints
    root = Path(args.data) if args.data else None
    xt, yt, source = mnist_images(str(root) if root is not None and args.n > 0 else None, "test", max(args.n, 1))
    if not source.startswith("real"):
        print("ERA part skipped: no MNIST test set under --data / $VERITRAIN_DATA")
    else:
        attacks = [a for a in args.attacks.split(",") if a]
        out["era"] = {}
        for tag, fname, eps_list in (
            ("mixtrain-0.3", "mnist_small_mixtrain_0.3.pth", (0.1, 0.3)),
            ("regular", "mnist_small_baseline.pth", (0.1,)),
        ):
            ckpt = root / "reference" / fname
            if not ckpt.exists():
                continue
            m = load_weights(mnist_small(), ckpt).to(dev)
            for eps in eps_list:
                t = time.perf_counter()
                r = estimate_robust_accuracy(m, xt, yt, attacks, eps, batch_size=args.batch, progress=False)
                r["seconds"] = time.perf_counter() - t
                out["era"][f"{tag}@{eps}"] = r
                print(
                    f"{tag} eps={eps} n={r['n']}: ACC {r['acc']:.1f}  ERA "
                    + "  ".join(f"{k} {v:.1f}" for k, v in r["era"].items())
                    + f"  ({r['seconds']:.0f} s)"
                )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
