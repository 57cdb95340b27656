"""The `veritrain reproduce` subcommand (registered by veritrain.cli)."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

DESCRIPTION = """\
Reproduce a table or figure of the MixTrain paper: train its runs (ordinary run folders under
DIR/training-runs/, skipped when finished, resumed when a previous reproduce was killed) and write
DIR/NAME.md and DIR/NAME.csv (and DIR/NAME.png for figures): our numbers beside the paper's, with the
scale and the machine stated.

--scale paper uses the paper's settings (Section V-A: 60 epochs, batch 50, MNIST Adam 1e-3, CIFAR and
ImageNet-200 SGD 0.05 momentum 0.9, lr x0.6 every 5 epochs, eps ramped over 10 epochs, MixTrain k' = 1
with symbolic-linear unless the table says otherwise, the whole test set): meant for a GPU.
--scale cpu reduces it to finish on one free core (one thread): eps ramp and lr decay compressed to the fewer
epochs, ERA/VRA on the first 500 test images, and only the rows small enough (the large networks are for a
GPU). Tables III-VII and Figure 4: 3-4 epochs on 2,000-5,000 training images, acc0 90, Wong et al. with 10
projections. Issue 12's, sized for one free core: Table VIII (MNIST Small eps 0.1 for CIFAR Small, as in
Table IX and Figure 8; acc0 95) k' = 1, 2, 5, 10 for 3 epochs on 20,000 images (~20 CPU-minutes); Table IX
and Figure 8 16 short epochs on 10,000 images, room for the dynamic alpha to move (~21); Table I Madry FC1 as
in the paper (PGD-40) for 20 epochs on all 60,000 images (at most 45 CPU-minutes), the attacks at equal CPU
time on 200 images with symbolic-linear and on 1,024 with crown-ibp, FC2 a small PGD-8 sanity row (~70 in
all); Table X CPU time, forked children capped at 60 CPU s and 6 GB (~10).
`--dry-run` prints exactly what each scale runs.
"""


def add_reproduce_parser(sub: Any) -> argparse.ArgumentParser:
    from veritrain.experiments import EXPERIMENTS, SCALES

    r = sub.add_parser(
        "reproduce",
        help="reproduce a table or figure of the paper (--list names them)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("name", nargs="?", help=f"the experiment: {', '.join(EXPERIMENTS)}")
    r.add_argument("--list", action="store_true", help="list the experiments and exit")
    r.add_argument(
        "--scale",
        choices=SCALES,
        default="paper",
        help="paper: the paper's settings (a GPU); cpu: reduced to finish on a CPU (see above) (default: paper)",
    )
    r.add_argument("--dry-run", action="store_true", help="print the runs and their commands; train nothing")
    r.add_argument(
        "--out",
        default="results/paper",
        metavar="DIR",
        help="folder of NAME.md/.csv/.png and of the run folders (default: results/paper)",
    )
    r.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    r.add_argument(
        "--only",
        metavar="TEXT",
        help="only the runs whose key contains TEXT, or one of TEXT,TEXT,... (e.g. mnist-small)",
    )
    r.add_argument(
        "--no-train",
        dest="train",
        action="store_false",
        help="train nothing: report the runs already finished (others are 'not run')",
    )
    r.add_argument(
        "--reuse",
        action="append",
        default=[],
        metavar="DIR",
        help="also take finished runs under DIR whose training options match a run (repeatable)",
    )
    r.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show progress bars")
    r.set_defaults(func=cmd_reproduce)
    return r


def cmd_reproduce(args: argparse.Namespace) -> int:
    from veritrain.experiments import EXPERIMENTS
    from veritrain.experiments.runner import reproduce

    if args.list or not args.name:
        if not args.list:
            raise ValueError("reproduce needs an experiment NAME (or --list)")
        for name in EXPERIMENTS:
            exp = EXPERIMENTS.get(name)
            print(
                f"{name:8s} {exp.source}: {exp.title} ({len(exp.runs_at('paper'))} runs at the paper scale, "
                f"{len(exp.runs_at('cpu'))} at the cpu scale)"
            )
        return 0
    exp = EXPERIMENTS.get(args.name)
    command = (
        shlex.join(["veritrain", "reproduce", *sys.argv[2:]])
        if sys.argv[1:2] == ["reproduce"]
        else f"veritrain reproduce {args.name} --scale {args.scale}"
    )
    files = reproduce(
        exp,
        args.scale,
        args.out,
        device=args.device,
        dry_run=args.dry_run,
        train_missing=args.train,
        only=args.only,
        reuse=args.reuse,
        progress=args.progress,
        command=command,
        log=lambda m: print(m, file=sys.stderr if not args.dry_run else sys.stdout),
    )
    for f in files:
        print(f"written: {f}")
    return 0
