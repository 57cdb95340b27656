"""The interoperability commands of the `veritrain` CLI: export, crosscheck, vnnlib."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from veritrain.interop import EXTRAS, InteropError, require
from veritrain.training.run_dir import RunFiles

#: the help of a positional RUN folder
RUN_HELP = f"a training run folder (uses its {RunFiles.CONFIG} and {RunFiles.MODEL})"


def _require(*extras: str) -> None:
    """Fail at once, in one line, when an extra the command needs is missing."""
    for extra in extras:
        for module in EXTRAS[extra]:
            require(module, extra)


def add_network_options(p: argparse.ArgumentParser) -> None:
    """The options naming a network and its data set instead of a RUN folder (export, crosscheck, evaluate)."""
    p.add_argument("--net", help="network: a registered name, file.py:fn or model.onnx (instead of RUN)")
    p.add_argument("--weights", help=f"state_dict file for --net (default with RUN: RUN/{RunFiles.MODEL})")
    p.add_argument("--dataset", help="data set of the test samples (default with RUN: the run's)")
    p.add_argument("--activation", help="activation of a registered network (default: relu, or the run's)")
    p.add_argument("--data-dir", help="data root (default: $VERITRAIN_DATA, else ~/.cache/veritrain)")


def onnx_network(path: str, dataset: str, weights: str | None = None) -> nn.Module:
    """`--net model.onnx`: the ONNX network as a model taking the data set's pixels."""
    from veritrain.data import DATASETS
    from veritrain.interop.onnx_import import onnx_model_for

    if weights:
        raise ValueError("--weights cannot be combined with an ONNX --net: the ONNX file holds the weights")
    return onnx_model_for(path, DATASETS.get(dataset).shape)


def load_network(run: str | None, args: argparse.Namespace) -> tuple[nn.Module, str, str, dict[str, Any]]:
    """(model in eval mode, dataset, a name, the run's config) from a RUN folder or --net/--weights."""
    from veritrain.interop.onnx_import import is_onnx
    from veritrain.models import load_weights, resolve_model
    from veritrain.reporting import read_json

    cfg: dict[str, Any] = {}
    weights = args.weights
    if run:
        files = RunFiles(run)
        if not files.config.is_file():
            raise ValueError(
                f"{run} is not a training run folder (no {files.CONFIG}); pass --net and --weights instead"
            )
        cfg = read_json(files.config)
        weights = weights or str(files.model)
    net, dataset = args.net or cfg.get("net"), args.dataset or cfg.get("dataset")
    if not net or not dataset:
        raise ValueError("give a RUN folder, or --net and --dataset (and --weights)")
    if is_onnx(net):
        model = onnx_network(net, dataset, weights)
    else:
        model = resolve_model(net, activation=args.activation or cfg.get("activation", "relu"))
        if not weights:
            raise ValueError(f"--net {net} needs --weights (a trained state_dict)")
        load_weights(model, weights)
    name = Path(run).name if run else Path(net.split(":")[0]).stem
    return model.eval(), dataset, name, cfg


def _test_samples(dataset: str, n: int, data_dir: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    from veritrain.data import load_dataset, take_subset

    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    ds = take_subset(load_dataset(dataset, "test", root=data_dir), n)
    return ds.tensors[0], ds.tensors[1]


def cmd_export(args: argparse.Namespace) -> int:
    from veritrain.interop.onnx_export import OPSET, export_onnx, max_difference
    from veritrain.interop.vnnlib import write_benchmark

    _require("onnx")
    model, dataset, _, cfg = load_network(args.run, args)
    data_dir = args.data_dir or cfg.get("data_dir")
    if args.vnnlib:
        eps = args.eps if args.eps is not None else cfg.get("eps")
        if eps is None or not eps > 0:
            raise ValueError("--vnnlib needs --eps > 0 (default with RUN: the run's eps)")
        x, y = _test_samples(dataset, args.n, data_dir)
        csv_path = write_benchmark(
            model, tuple(x.shape[1:]), x, y, eps, args.onnx, args.vnnlib, args.instances, timeout=args.timeout
        )
        print(
            f"written: {args.onnx} (ONNX opset {OPSET}), {len(x)} VNN-LIB properties in {args.vnnlib} "
            f"(eps {eps:g}), {csv_path}"
        )
    else:
        from veritrain.data import DATASETS

        x = torch.rand(8, *DATASETS.get(dataset).shape, generator=torch.Generator().manual_seed(0))
        export_onnx(model, tuple(x.shape[1:]), args.onnx)
        print(f"written: {args.onnx} (ONNX opset {OPSET})")
    try:
        diff = max_difference(model, args.onnx, x)
        print(f"onnxruntime vs PyTorch on {len(x)} inputs: max |logit difference| = {diff:.3g}")
    except InteropError as e:
        print(f"veritrain: note: not checked with onnxruntime ({e})", file=sys.stderr)
    return 0


def cmd_crosscheck(args: argparse.Namespace) -> int:
    from veritrain.interop.crosscheck import crosscheck
    from veritrain.registry import split_names
    from veritrain.reporting import format_markdown, format_table, write_csv, write_json

    _require("onnx", "verify")
    runs = args.runs or [None]
    if args.net and len(runs) > 1:
        raise ValueError("--net names one network: give no RUN folders with it")
    domains = split_names(args.domains)
    out = Path(args.out)
    rows, failures, disagreements = [], 0, 0
    for run in runs:
        model, dataset, name, cfg = load_network(run, args)
        eps = args.eps if args.eps is not None else cfg.get("eps")
        if eps is None or not eps > 0:
            raise ValueError("crosscheck needs --eps > 0 (default with RUN: the run's eps)")
        x, y = _test_samples(dataset, args.n, args.data_dir or cfg.get("data_dir"))
        print(f"== {name}: {len(x)} samples, eps {eps:g}, Marabou timeout {args.timeout:g} s", file=sys.stderr)
        cc = crosscheck(model, x, y, eps, domains, out / name, timeout=args.timeout, name=name, progress=args.progress)
        write_csv(out / name / "samples.csv", cc.samples())
        write_json(
            out / name / "crosscheck.json",
            {"row": cc.row(), "failures": cc.failures, "rechecks": cc.rechecks, "samples": cc.samples()},
        )
        rows.append(cc.row())
        failures += len(cc.failures)
        disagreements += len(cc.marabou_disagreements)
        for f in cc.failures:
            print(
                f"veritrain: SOUNDNESS FAILURE: {name} sample {f['sample']} proved by {f['domain']} and refuted "
                f"by Marabou (re-check: {f}); counterexample in {out / name / 'counterexamples'}",
                file=sys.stderr,
            )
    print(format_markdown(rows) if args.markdown else format_table(rows))
    write_csv(out / "crosscheck.csv", rows)
    (out / "crosscheck.md").write_text(format_markdown(rows) + "\n", encoding="utf-8")
    write_json(out / "crosscheck.json", rows)
    print(f"written: {out / 'crosscheck.md'}, {out / 'crosscheck.csv'} and one folder per network")
    if disagreements:
        print(f"veritrain: warning: {disagreements} samples broken by PGD are unsat for Marabou", file=sys.stderr)
    return 1 if failures else 0


def cmd_vnnlib(args: argparse.Namespace) -> int:
    from veritrain.interop.vnnlib import run_instances, solve, summarise, write_result
    from veritrain.registry import split_names
    from veritrain.reporting import format_table, write_csv

    _require("onnx")
    domains = split_names(args.domains)
    if args.instances:
        if args.onnx or args.vnnlib:
            raise ValueError("give either --instances CSV or --onnx and --vnnlib")
        rows = run_instances(args.instances, args.out, args.timeout, domains, progress=args.progress)
        print(format_table(rows, ["vnnlib", "result", "time_s", "detail"]))
        summary = summarise(rows)
        print(json.dumps(summary))
        if args.out:
            write_csv(Path(args.out) / "results.csv", rows)
        return 0
    if not args.onnx or not args.vnnlib:
        raise ValueError("vnnlib needs --onnx MODEL.onnx and --vnnlib PROPERTY.vnnlib (or --instances CSV)")
    verdict = solve(args.onnx, args.vnnlib, args.timeout if args.timeout is not None else 60.0, domains)
    if args.out:
        write_result(verdict, args.out)
    print(verdict.result)
    print(f"{verdict.detail}; {verdict.time_s:.2f} s", file=sys.stderr)
    return 0


def add_commands(sub: Any) -> None:
    """Register `export`, `crosscheck` and `vnnlib` on the CLI's subparsers."""
    from veritrain.interop.vnnlib import DEFAULT_DOMAINS

    ex = sub.add_parser(
        "export", help="a network as ONNX, and VNN-LIB robustness properties with instances.csv (needs veritrain[onnx])"
    )
    ex.add_argument("run", nargs="?", help=RUN_HELP)
    add_network_options(ex)
    ex.add_argument("--onnx", required=True, metavar="FILE", help="the ONNX file to write")
    ex.add_argument("--vnnlib", metavar="DIR", help="also write one VNN-LIB property per test sample into DIR")
    ex.add_argument("--instances", metavar="CSV", help="the instances.csv to write (default: DIR/../instances.csv)")
    ex.add_argument("--n", type=int, default=100, help="properties for the first N test samples (default: 100)")
    ex.add_argument("--eps", type=float, help="L-inf radius of the properties (default with RUN: the run's)")
    ex.add_argument("--timeout", type=float, default=60.0, help="timeout column of instances.csv (default: 60)")
    ex.set_defaults(func=cmd_export)

    cc = sub.add_parser(
        "crosscheck",
        help="every domain's verdicts against Marabou's on the first N test samples; "
        "exit 1 on a soundness failure (needs veritrain[onnx,verify])",
    )
    cc.add_argument("runs", nargs="*", help="training run folders (one table row each)")
    add_network_options(cc)
    cc.add_argument("--n", type=int, default=20, help="test samples per network (default: 20)")
    cc.add_argument("--eps", type=float, help="L-inf radius (default with RUN: the run's eps)")
    cc.add_argument(
        "--domains",
        default=",".join(DEFAULT_DOMAINS),
        help=f"bound domains to check (default: {','.join(DEFAULT_DOMAINS)})",
    )
    cc.add_argument("--timeout", type=float, default=60.0, help="Marabou's timeout per query in seconds (default: 60)")
    cc.add_argument("--out", default="runs/crosscheck", help="output folder (default: runs/crosscheck)")
    cc.add_argument("--markdown", action="store_true", help="print a Markdown table")
    cc.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="one line per query")
    cc.set_defaults(func=cmd_crosscheck)

    vn = sub.add_parser(
        "vnnlib",
        help="answer VNN-COMP instances: sat (re-checked counterexample), unsat (sound "
        "bounds), unknown or timeout (needs veritrain[onnx])",
    )
    vn.add_argument("--onnx", metavar="MODEL", help="the network (.onnx or .onnx.gz)")
    vn.add_argument("--vnnlib", metavar="PROPERTY", help="the property (.vnnlib or .vnnlib.gz)")
    vn.add_argument("--instances", metavar="CSV", help="run every instance of a VNN-COMP instances.csv instead")
    vn.add_argument("--timeout", type=float, help="seconds per instance (default: 60, or the CSV's column)")
    vn.add_argument("--out", metavar="PATH", help="result file in the VNN-COMP format (with --instances: a folder)")
    vn.add_argument(
        "--domains",
        default=",".join(DEFAULT_DOMAINS),
        help=f"bound domains tried after the attack, cheap to tight (default: {','.join(DEFAULT_DOMAINS)})",
    )
    vn.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="one line per instance")
    vn.set_defaults(func=cmd_vnnlib)


__all__ = [
    "RUN_HELP",
    "add_commands",
    "add_network_options",
    "cmd_crosscheck",
    "cmd_export",
    "cmd_vnnlib",
    "load_network",
    "onnx_network",
]
