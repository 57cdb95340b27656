"""Fuzz the bound engine: random (network, input, eps, norm) cases through every domain, checked against
sampled and PGD points (veritrain.bounds.fuzz), then the mutation check (how sensitive the fuzzing is).

    OMP_NUM_THREADS=1 python scripts/fuzz_bounds.py --cases 100000 --json results/fuzz.json

Exit status 1 when any case violates its bounds beyond float tolerance (or a domain raises).
"""

from __future__ import annotations

import argparse
import json
import sys

from veritrain.bounds.fuzz import fuzz, mutation_check


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=100_000, help="random cases (inputs), each through every domain")
    p.add_argument("--batch", type=int, default=32, help="cases per random network (default: 32)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first trial (default: 0)")
    p.add_argument("--domains", default="", help="comma-separated domains (default: all registered)")
    p.add_argument("--mutation-trials", type=int, default=100, help="trials per mutant and domain (0: skip)")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON")
    args = p.parse_args(argv)
    domains = [d for d in args.domains.split(",") if d] or None

    def show(r) -> None:  # noqa: ANN001
        print(
            f"{r.cases} cases, {r.trials} networks, {r.seconds:.0f} s, worst violation {r.worst:.3g}, "
            f"failures {len(r.failures)}, errors {len(r.errors)}",
            file=sys.stderr,
            flush=True,
        )

    report = fuzz(args.cases, seed=args.seed, domains=domains, batch=args.batch, progress=show)
    show(report)
    out = {"fuzz": report.as_dict()}
    if args.mutation_trials > 0:
        m = mutation_check(args.mutation_trials, domains=domains)
        out["mutation"] = m
        for name, per in m["mutants"].items():
            rates = ", ".join(f"{d} {v['caught']}/{v['trials']}" for d, v in per.items())
            print(f"mutant {name}: {rates}", file=sys.stderr)
        print(
            f"mutants killed: {m['killed']}/{m['total']}; trials catching a mutant: {100 * m['case_rate']:.1f}%",
            file=sys.stderr,
        )
    text = json.dumps(out, indent=2, default=str)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 1 if report.failures or report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
