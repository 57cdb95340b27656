"""What the per-target interval attack owes to its bounds (Table I's question, on a trained run folder).

On RUN's network and --n random test images (seed 0, the draw of Table I), one thread, CPU seconds:
1. `interval` (Algorithm 1, 20 iterations) and `interval-targeted` (one step of eps per wrong class along the
   interval gradient of that class's margin bound, then a targeted PGD-40 of step eps/10 from each copy), both
   with --domain, `interval-targeted` also without the sound pre-pass over the whole ball (as Table I runs it);
2. the control without bounds: the same per-class step of eps along the sign of the plain gradient of
   z_y - z_j at x, then the same targeted PGD-40 from each copy (what targeting alone buys);
3. PGD-40 (step 0.01) restarted from new random points until each of those times is spent (Table I's PGD),
   and PGD-40 at the targeted attack's step (eps/10) given the same time (what the larger step alone buys).
Success rate: share of the images misclassified after the attack, clean errors included.

    python bench/bench_interval_targeting.py [--run results/paper/training-runs/cpu-mnist-fc1-madry-737676fc]
        [--n 1024] [--domain crown-ibp]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from veritrain.attacks import make_attack
from veritrain.attacks.base import project
from veritrain.attacks.interval import target_copies
from veritrain.attacks.pgd import _Best, _pgd_run
from veritrain.experiments.measures import PGD_STEP, _equal_time, load_run_model, test_images

FC1 = "results/paper/training-runs/cpu-mnist-fc1-madry-737676fc"


def targeted_without_bounds(model, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Success per image of the control: per wrong class j, x - eps sign(d(z_y - z_j)/dx), then Line 13's PGD
    of `interval-targeted` (its loss, steps and step) from that point."""
    tail = make_attack("interval-targeted", eps)
    n, k = x.shape[0], model(x[:1]).shape[1]
    rows, target = target_copies(y, k)
    xs, ys = x[rows], y[rows]
    xr = xs.clone().requires_grad_(True)
    z = model(xr)
    margin = z.gather(1, ys.view(-1, 1)) - z.gather(1, target.view(-1, 1))
    (g,) = torch.autograd.grad(margin.sum(), xr)
    start = project(xs - eps * g.sign(), xs, eps, "linf")
    best = _Best(xs)
    _pgd_run(model, xs, ys, start, eps, tail.pgd_steps, tail.pgd_step_size, "linf", tail.pgd_loss, best, True, target)
    with torch.no_grad():
        wrong = model(x).argmax(1) != y
    return best.success.view(n, k - 1).any(1) | wrong


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=FC1, help="a finished run folder (config.json, model.pt)")
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--domain", default="crown-ibp")
    ap.add_argument("--chunk", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(1)
    run = Path(args.run)
    config = json.loads((run / "config.json").read_text())
    model = load_run_model(run, config)
    for p in model.parameters():
        p.requires_grad_(False)
    eps = float(config["eps"])
    x, y = test_images(config, args.n, 0)
    print(f"# {run.name}: {len(x)} images, eps {eps}, one thread, load average {os.getloadavg()[0]:.1f}")
    step = make_attack("interval-targeted", eps).pgd_step_size
    print(
        f"{'attack':44s} {'success %':>9s} {'CPU s':>7s} {'PGD at equal time %':>20s} {'ratio':>6s}"
        f" {f'PGD step {step:g} at equal time %':>30s} {'ratio':>6s}"
    )

    def chunks(fn):
        return torch.cat([fn(x[i : i + args.chunk], y[i : i + args.chunk]) for i in range(0, len(x), args.chunk)])

    cases = [
        (
            f"interval ({args.domain})",
            lambda a, b: make_attack("interval", eps, domain=args.domain).run(model, a, b).success,
        ),
        (
            f"interval-targeted ({args.domain})",
            lambda a, b: make_attack("interval-targeted", eps, domain=args.domain).run(model, a, b).success,
        ),
        (
            f"interval-targeted ({args.domain}, no pre-pass)",
            lambda a, b: (
                make_attack("interval-targeted", eps, domain=args.domain, skip_verified=False).run(model, a, b).success
            ),
        ),
        ("targeted, no bounds (control)", lambda a, b: targeted_without_bounds(model, a, b, eps)),
    ]
    for name, fn in cases:
        t0 = time.process_time()
        success = chunks(fn)
        spent = time.process_time() - t0
        pgd, _, _ = _equal_time("pgd", model, x, y, eps, spent, 40, PGD_STEP, args.chunk, time.process_time)
        same, _, _ = _equal_time("pgd", model, x, y, eps, spent, 40, step, args.chunk, time.process_time)
        rate, base, base2 = (100 * s.float().mean().item() for s in (success, pgd, same))
        print(
            f"{name:44s} {rate:9.2f} {spent:7.1f} {base:20.2f} {rate / max(base, 1e-9):6.2f}"
            f" {base2:30.2f} {rate / max(base2, 1e-9):6.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
