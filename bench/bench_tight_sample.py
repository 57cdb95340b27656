"""What the tight k' samples cost MixTrain over a batch domain (issue 11): CPU ms per training step of the
frontier's `mixtrain-ibp` recipe (IBP on the batch of 100) with k' = 0 and with k' = 1 sample bounded by
crown-ibp, symbolic-linear or interval, at the final eps, on fresh weights, one thread, interleaved repetitions.

    python bench/bench_tight_sample.py [--setting mnist-0.3|mnist-0.1|cifar-2of255] [--reps 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from veritrain.experiments.frontier import RECIPES, SETTINGS, scaled_config
from veritrain.training.loop import build_model, validate_config
from veritrain.training.methods import METHODS, StepContext

VARIANTS = ((0, "crown-ibp"), (1, "interval"), (1, "crown-ibp"), (1, "symbolic-linear"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", default="mnist-0.3", choices=list(SETTINGS))
    ap.add_argument("--reps", type=int, default=5, help="interleaved rounds of 4 timed steps per variant")
    args = ap.parse_args()
    torch.set_num_threads(1)
    setting = SETTINGS[args.setting]
    shape = (1, 28, 28) if setting.dataset == "mnist" else (3, 32, 32)
    x, y = torch.rand(100, *shape, generator=torch.Generator().manual_seed(0)), torch.arange(100) % 10
    runs = {}
    for kp, dom in VARIANTS:
        cfg = validate_config(scaled_config(RECIPES["mixtrain-ibp"], setting, 30, k_per_batch=kp, domain=dom))
        model = build_model(cfg)
        objective = METHODS.get(cfg.method)(cfg)
        objective.prepare(model, torch.Generator().manual_seed(0))
        runs[(kp, dom)] = (model, objective, torch.optim.Adam(model.parameters(), lr=1e-4), [])
    step = 0
    for r in range(args.reps + 1):  # round 0 warms up
        for key, (model, objective, opt, times) in runs.items():
            for _ in range(4):
                step += 1
                ctx = StepContext(
                    eps=setting.eps_train,
                    epoch=20,
                    step=20 * 600 + step,
                    num_batches=600,
                    generator=torch.Generator().manual_seed(step),
                    device=torch.device("cpu"),
                )
                t0 = time.process_time()
                loss, _ = objective.loss(model, x, y, ctx)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if r > 0:
                    times.append(time.process_time() - t0)
    base = statistics.median(runs[VARIANTS[0]][3])
    print(f"{args.setting}: MixTrain over IBP, batch 100, one thread, load {os.getloadavg()[0]:.1f}")
    for (kp, dom), (*_, times) in runs.items():
        ms = statistics.median(times) * 1000
        print(f"  k'={kp} {dom if kp else '(none)':16s} {ms:7.1f} ms/step  x{ms / 1000 / base:.2f}")


if __name__ == "__main__":
    main()
