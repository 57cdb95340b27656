"""The `veritrain` command: models, train, evaluate, quickstart, plot."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import types
import typing
from pathlib import Path
from typing import Any, Sequence

from veritrain import __version__
from veritrain.device import DEVICE_CHOICES
from veritrain.errors import ConfigError
from veritrain.evaluation.results import Evaluation, RunSummary
from veritrain.registry import UnknownNameError, split_names
from veritrain.training.config import OPTION_GROUPS, TrainConfig
from veritrain.training import distributed
from veritrain.training.run_dir import RunFiles
from veritrain.validation import DEFAULT_DOMAIN, DEFAULT_NORM, NORMS

# ----------------------------------------------------------------------------- `train` options

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_TYPES = typing.get_type_hints(TrainConfig)


class _DefaultsText:
    """`{defaults.acc0}` in a help text: that `TrainingDefaults` field per data set."""

    def __getattr__(self, name: str) -> str:
        from veritrain.data.info import defaults_text

        return defaults_text(name)


def help_names() -> dict[str, Any]:
    """What a TrainConfig help text may name in braces: registry names and per-data-set defaults."""
    from veritrain.attacks import ATTACKS
    from veritrain.bounds import DOMAINS
    from veritrain.data import DATASETS
    from veritrain.data.augment import AUGMENTATIONS
    from veritrain.models import MODELS
    from veritrain.models.zoo import ACTIVATIONS
    from veritrain.training.config import DEFAULT_LR
    from veritrain.training.methods import METHODS
    from veritrain.training.methods.mixtrain import BATCH_DOMAINS
    from veritrain.training.schedules import EPS_SCHEDULES, OPTIMIZERS

    def names(items: Any) -> str:
        return ", ".join(items)

    return {
        "models": names(MODELS),
        "datasets": names(DATASETS),
        "methods": names(METHODS),
        "activations": names(ACTIVATIONS),
        "optimizers": names(OPTIMIZERS),
        "augmentations": names(AUGMENTATIONS),
        "learning_rates": names(f"{lr:g} with {opt}" for opt, lr in DEFAULT_LR.items()),
        "devices": DEVICE_CHOICES,
        "norms": names(NORMS),
        "eps_schedules": names(EPS_SCHEDULES),
        "batch_domains": names(BATCH_DOMAINS),
        "domains": names(DOMAINS),
        "attacks": names(ATTACKS),
        "run_files": names((RunFiles.CONFIG, RunFiles.METRICS, RunFiles.CHECKPOINT, RunFiles.MODEL, RunFiles.SUMMARY)),
        "defaults": _DefaultsText(),
    }


def _base_type(tp: Any) -> Any:
    """int | None -> int, etc."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return tp


def train_help(name: str, names: dict[str, Any] | None = None) -> str:
    """The help text of a TrainConfig field (its `option` metadata), registry names filled in, [methods] tagged."""
    meta = _FIELDS[name].metadata
    text = str(meta.get("help", "")).format(**(names if names is not None else help_names()))
    methods = meta.get("methods", ())
    return f"{text} [{', '.join(methods)}]" if methods else text


def _default_text(name: str) -> str:
    f = _FIELDS[name]
    if f.default is dataclasses.MISSING or f.default is None:
        return ""
    return f" (default: {f.default})"


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field, with its type, help and group; booleans as --flag/--no-flag.

    Defaults are suppressed so that only options given on the command line override --config FILE.
    """
    groups = {key: parser.add_argument_group(title) for key, title in OPTION_GROUPS.items()}
    names = help_names()
    for name, f in _FIELDS.items():
        flag = "--" + name.replace("_", "-")
        tp = _base_type(_TYPES[name])
        help_ = train_help(name, names) + _default_text(name)
        group = groups[f.metadata.get("group", "general")]
        if tp is bool:
            group.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_
            )
        elif name == "extra":
            group.add_argument(
                flag, dest=name, action="append", metavar="KEY=VALUE", default=argparse.SUPPRESS, help=help_
            )
        else:
            group.add_argument(flag, dest=name, type=tp, default=argparse.SUPPRESS, metavar=name.upper(), help=help_)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Options from a YAML, TOML or JSON file; keys are option names with - or _. A run folder's config.json
    re-runs that run: its `versions` record and the options only other methods read (it holds them all) are
    skipped; in any other file such an option is an error (`_check_method_options`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise ConfigError(f"config file {path} must end in .yaml, .yml, .toml or .json")
    try:
        if suffix == ".json":
            data = json.loads(text)
            if isinstance(data, dict) and "versions" in data:
                # a run's config.json (`versions` beside the options) holds every option: keep its method's
                data.pop("versions")
                method = data.get("method", _FIELDS["method"].default)
                data = {k: v for k, v in data.items() if _reads(method, str(k).replace("-", "_"))}
        elif suffix == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:
                import tomli as tomllib
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
    except Exception as e:  # yaml.YAMLError, tomllib.TOMLDecodeError (a ValueError: caught here, named)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"config file {path} cannot be parsed: {first}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option: value")
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in _FIELDS:
            raise ConfigError(f"config file {path}: unknown option {key!r}; see `veritrain train --help`")
        out[name] = _coerce(name, value, f"config file {path}")
    return out


def _coerce(name: str, value: Any, where: str) -> Any:
    """Check/convert a file value to the field's type (YAML reads 1e-3 as a string, TOML has no null)."""
    tp = _base_type(_TYPES[name])
    optional = type(None) in typing.get_args(_TYPES[name])
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ConfigError(f"{where}: option {name!r} cannot be empty")
    try:
        if tp is bool:
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
                return value.lower() in ("true", "yes", "1")
            if not isinstance(value, bool):
                raise TypeError
            return value
        if tp is int:
            if isinstance(value, float) and not value.is_integer() or isinstance(value, bool):
                raise TypeError
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if tp is str:
            if isinstance(value, list):
                return ",".join(str(v) for v in value)
            return str(value)
        if name == "extra":
            if not isinstance(value, dict):
                raise TypeError
            return dict(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: option {name!r} expects {getattr(tp, '__name__', tp)}, got {value!r}") from None
    return value


def _parse_extra(items: list[str]) -> dict[str, Any]:
    import yaml

    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--extra expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def _option_methods(name: str) -> tuple[str, ...]:
    """The methods that read option `name` (its `methods` metadata in TrainConfig; empty: every method)."""
    return tuple(_FIELDS[name].metadata.get("methods", ()))


def _reads(method: str, name: str) -> bool:
    """Whether `method` reads option `name` (unknown names count as read: they are reported later)."""
    return name not in _FIELDS or not _option_methods(name) or method in _option_methods(name)


def _check_method_options(values: dict[str, Any], given: set[str]) -> None:
    """An option that only other methods read, given explicitly, is an error rather than silently ignored."""
    from veritrain.training.methods import METHODS

    method = values.get("method", _FIELDS["method"].default)
    for name in sorted(given):
        readers = [m for m in _option_methods(name) if m in METHODS]
        if readers and method not in readers and len(readers) == len(_option_methods(name)):
            flag = "--" + name.replace("_", "-")
            raise ConfigError(
                f"{flag} is an option of {', '.join(readers)}; --method {method} does not read it "
                f"(drop {flag} or pick one of those methods)"
            )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from the defaults, then --config FILE, then the options given on the command line."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values.update(read_config_file(args.config))
    given = {k: v for k, v in vars(args).items() if k in _FIELDS}
    if "extra" in given:
        given["extra"] = {**values.get("extra", {}), **_parse_extra(given["extra"])}
    values.update(given)
    explicit = set(values) - {"method"}  # options the user gave (file or command line), not a resumed run's
    if values.get("resume"):
        # `veritrain train --out RUN --resume`: options not given again come from RUN/config.json
        saved = RunFiles(values.get("out", TrainConfig.out)).config
        if saved.is_file():
            try:
                run_values = json.loads(saved.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as e:
                raise ConfigError(f"{saved} is unreadable ({e}); pass all options again or train into a new --out")
            if not isinstance(run_values, dict):
                raise ConfigError(f"{saved} is not a run configuration; train into a new --out")
            # how the run was started (--overwrite) is not an option of the run: never carried into a resume
            run_values = {k: v for k, v in run_values.items() if k in _FIELDS and k != "overwrite"}
            values = {**run_values, **values}
    _check_method_options(values, explicit)
    return TrainConfig.from_dict(values)


# ----------------------------------------------------------------------------- quickstart

#: per-method quickstart settings: MNIST Small on the embedded mnist-mini (5,000 train / 1,000 test)
QUICKSTART: dict[str, dict[str, Any]] = {
    # ERA/VRA on the first 300 of the 1,000 embedded test images (ACC on all 1,000) keeps it near a minute
    "common": dict(
        net="mnist-small",
        dataset="mnist-mini",
        eps=0.1,
        batch_size=50,
        seed=0,
        device="auto",
        eval_n=300,
        eval_attacks="pgd",
        eval_domains=DEFAULT_DOMAIN,
    ),
    "regular": dict(epochs=3),
    # MixTrain over IBP, the CPU choice (README, results/frontier): IBP bounds on the whole batch, CROWN-IBP on
    # k' = 1 sample of each, dynamic alpha; Shi et al.'s initialisation and smooth ramp after a clean epoch.
    # VRA is still measured with the paper's symbolic-linear. (MixTrain with crown-ibp on k' = 10 of each batch
    # and no batch domain, the previous quickstart: 87.2 / 67.3 / 61.3 against 92.6 / 79.7 / 73.3, in more time.)
    "mixtrain": dict(
        epochs=6,
        eps_ramp_epochs=2,
        batch_domain="interval",
        domain="crown-ibp",
        k_per_batch=1,
        ibp_init=True,
        eps_schedule="smooth",
        clean_epochs=1,
    ),
    "wong": dict(epochs=4, eps_ramp_epochs=2),
    "diffai": dict(epochs=6, eps_ramp_epochs=3),
    "madry": dict(epochs=3, pgd_steps=10, pgd_step_size=0.02),
}
#: what `--fast` changes (a smoke run: seconds instead of a minute)
QUICKSTART_FAST: dict[str, Any] = dict(epochs=1, train_size=1000, full_eval=False, eval_n=200)
#: robust methods in order of preference for the quickstart
QUICKSTART_PREFERENCE = ("mixtrain", "wong", "diffai", "madry")


def quickstart_configs(out: str | Path, fast: bool = False, progress: bool = True) -> list[TrainConfig]:
    from veritrain.training.methods import METHODS

    robust = next((m for m in QUICKSTART_PREFERENCE if m in METHODS), None)
    configs = []
    for method in ["regular"] + ([robust] if robust else []):
        values = {
            **QUICKSTART["common"],
            **QUICKSTART.get(method, {}),
            "method": method,
            "out": str(Path(out) / method),
            "overwrite": True,
            "progress": progress,
        }
        if fast:
            values.update(QUICKSTART_FAST)
        configs.append(TrainConfig(**values))
    return configs


# ----------------------------------------------------------------------------- summaries as table rows


def eval_row(ev: dict[str, Any], attacks: list[str], domains: list[str]) -> dict[str, Any]:
    """An evaluation (the JSON of `evaluate`) as a table row: `Evaluation.row`, the one rendering."""
    return Evaluation.from_dict(ev).row(attacks, domains)


# ----------------------------------------------------------------------------- commands


def cmd_models(args: argparse.Namespace) -> int:
    from veritrain.models import MODELS

    rows = []
    for name in MODELS:
        s = MODELS.get(name)
        rows.append({"name": s.name, "dataset": s.dataset, "parameters": s.parameters, "hidden_units": s.hidden_units})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        from veritrain.reporting import format_table

        print(format_table(rows, ["name", "dataset", "parameters", "hidden_units"], {"hidden_units": "hidden units"}))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from veritrain.reporting import format_table, run_holdout_lines
    from veritrain.training.loop import train

    cfg = config_from_args(args)
    summary = train(cfg)
    if not distributed.current().main:  # torchrun: rank 0 reports
        return 0
    row = {
        "method": cfg.method,
        **RunSummary.from_dict(summary).row(split_names(cfg.eval_attacks), split_names(cfg.eval_domains)),
    }
    print(format_table([row]))
    files = RunFiles(cfg.out)
    for line in run_holdout_lines(files.dir):  # --holdout: its size; --keep-best: the kept epoch
        print(line)
    print(f"run folder: {files.dir} ({files.SUMMARY}, {files.METRICS}, {files.MODEL})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from veritrain.evaluation.evaluate import evaluate
    from veritrain.interop.commands import onnx_network
    from veritrain.interop.onnx_import import is_onnx
    from veritrain.models import load_weights, resolve_model
    from veritrain.device import select_device
    from veritrain.reporting import format_table, read_json, write_json
    from veritrain.reporting.io import append_jsonl
    from veritrain.training.run_lock import acquire as acquire_lock
    from veritrain.training.run_lock import release as release_lock
    from veritrain.versions import versions

    run_cfg: dict[str, Any] = {}
    weights = args.weights
    if args.run:
        run = RunFiles(args.run)
        if not run.config.is_file():
            raise ValueError(
                f"{run.dir} is not a training run folder (no {run.CONFIG}); pass --net and --weights instead"
            )
        run_cfg = read_json(run.config)
        if weights is None:
            weights = str(run.model)
            if not run.model.is_file():
                raise ValueError(f"{run.dir} has no {run.MODEL} yet; wait for the first epoch to finish")
    net = args.net or run_cfg.get("net")
    dataset = args.dataset or run_cfg.get("dataset")
    if not net or not dataset:
        raise ValueError("evaluate needs a RUN folder, or --net and --dataset (and --weights)")
    activation = args.activation or run_cfg.get("activation", "relu")
    eps = args.eps if args.eps is not None else run_cfg.get("eps", 0.0)
    norm = args.norm or run_cfg.get("norm", DEFAULT_NORM)
    attacks, domains = split_names(args.attacks), split_names(args.domains)
    if (attacks or domains) and not eps > 0:
        raise ValueError("--attacks/--domains need --eps > 0")
    device = select_device(args.device)
    if is_onnx(net):  # a third-party network: the ONNX file holds the weights (veritrain.interop)
        model = onnx_network(net, dataset, weights)
    else:
        model = resolve_model(net, activation=activation)
        if weights:
            load_weights(model, weights)
        elif not args.run:
            print("veritrain: warning: no --weights given: evaluating randomly initialised weights", file=sys.stderr)
    model = model.to(device).eval()
    data_dir = args.data_dir or run_cfg.get("data_dir")
    attack_options = {"steps": args.attack_steps, "restarts": args.attack_restarts, "step_size": args.attack_step_size}
    into_run = RunFiles(args.run) if args.run and not args.json else None
    # the run folder is locked while its evaluation is computed and written (not while it trains)
    lock = acquire_lock(into_run.dir, "evaluation") if into_run else None
    try:
        res = evaluate(
            model,
            dataset,
            args.n,
            eps,
            attacks,
            domains,
            curves=split_names(args.curves),
            data_dir=data_dir,
            random_subset=args.random_subset,
            norm=norm,
            batch_size=args.batch_size,
            chunk_size=args.chunk_size,
            seed=args.seed,
            progress=args.progress,
            attack_options=attack_options,
        )
        res = {
            "net": net,
            "weights": weights,
            **res,
            "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": versions(),
        }
        print(format_table([{"n": res["n"], "eps": res["eps"], **eval_row(res, attacks, domains)}]))
        if into_run:  # every evaluation is kept: appended to the history, and the latest as evaluation.json
            append_jsonl(into_run.evaluations, res)
            write_json(into_run.evaluation, res)
            print(f"written: {into_run.evaluation} (history: {into_run.evaluations})")
        elif args.json:
            write_json(args.json, res)
            print(f"written: {args.json}")
    finally:
        if lock is not None:
            release_lock(lock)
    return 0


def quickstart_row(cfg: TrainConfig, s: dict[str, Any]) -> dict[str, Any]:
    """One quickstart table row: the method's own quickstart settings, the epochs it trained, the image counts
    behind each number (ACC on the whole test set, ERA/VRA on its first eval_n images) and the numbers."""
    ev = RunSummary.from_dict(s).eval or Evaluation(acc=None, n=0, eps=cfg.eps)
    settings = {k: v for k, v in QUICKSTART.get(cfg.method, {}).items() if k != "epochs"}
    return {
        "method": cfg.method,
        "settings": ", ".join(f"{k}={v}" for k, v in settings.items()) or "-",
        "epochs": s.get("epochs_trained", s.get("epochs")),
        "train images": s.get("train_size"),
        "ACC": s.get("test_acc"),
        "ACC n": s.get("test_n"),
        "ERA (PGD)": ev.era.get("pgd"),
        f"VRA ({DEFAULT_DOMAIN})": ev.vra_value(DEFAULT_DOMAIN),
        "ERA/VRA n": ev.n,
        "train s": (s.get("time_s") or {}).get("train"),
    }


def cmd_quickstart(args: argparse.Namespace) -> int:
    from veritrain.reporting import format_table, write_json
    from veritrain.training.loop import train

    configs = quickstart_configs(args.out, fast=args.fast, progress=args.progress)
    rows = []
    for cfg in configs:
        print(f"== {cfg.method}: {cfg.net} on {cfg.dataset}, eps {cfg.eps}, {cfg.epochs} epochs", file=sys.stderr)
        rows.append(quickstart_row(cfg, train(cfg)))
    print(
        f"\nMNIST Small on mnist-mini, eps = {configs[0].eps} (L-inf); percent. ACC on the whole test set "
        "(ACC n images), ERA (PGD) and VRA (symbolic-linear) on its first ERA/VRA n images:"
    )
    print(format_table(rows))
    write_json(Path(args.out) / "quickstart.json", rows)
    print(f"runs and quickstart.json in {args.out}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from veritrain.reporting import format_markdown, format_table, runs_table, write_csv, write_json

    rows = runs_table(args.runs)
    print(format_markdown(rows) if args.markdown else format_table(rows))
    if args.csv:
        write_csv(args.csv, rows)
    if args.json:
        write_json(args.json, rows)
    return 0


def cmd_frontier(args: argparse.Namespace) -> int:
    from veritrain.experiments.frontier import RECIPES, run_frontier
    from veritrain.registry import split_names

    recipes = split_names(args.methods) or list(RECIPES)
    budgets = [float(b) for b in split_names(args.budgets)]
    if not budgets or any(b <= 0 for b in budgets):
        raise ValueError(f"--budgets expects positive CPU-minutes such as 15,30,60, got {args.budgets!r}")
    rows = run_frontier(
        args.setting, recipes, budgets, Path(args.out), eval_n=args.eval_n, dry_run=args.dry_run, progress=args.progress
    )
    if rows:
        print((Path(args.out) / args.setting / "frontier.md").read_text(), end="")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from veritrain.reporting import plot_metrics

    print(f"written: {plot_metrics(args.run, args.out)}")
    return 0


# ----------------------------------------------------------------------------- parser and main


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, like every other veritrain error."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"veritrain: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from veritrain.interop.commands import RUN_HELP, add_commands, add_network_options

    p = _Parser(prog="veritrain", description="Verifiably robust training (MixTrain), sound bounds and attacks.")
    p.add_argument("--version", action="version", version=f"veritrain {__version__}")
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="CPU threads of torch (default: $OMP_NUM_THREADS if set, else the CPUs not already busy, "
        "at most 8; see README)",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    m = sub.add_parser("models", help="list the registered networks (Table II)")
    m.add_argument("--json", action="store_true", help="print JSON instead of a table")
    m.set_defaults(func=cmd_models)

    t = sub.add_parser("train", help="train a network (any method); writes a run folder")
    t.add_argument(
        "--config",
        metavar="FILE",
        help="read options from a YAML, TOML or JSON file (keys: option names with - or _), e.g. a run "
        "folder's config.json to re-run it; options on the command line override it",
    )
    add_train_options(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="ACC, and ERA (attacks) / VRA (sound bounds) when asked")
    e.add_argument("run", nargs="?", help=RUN_HELP)
    add_network_options(e)
    e.add_argument("--n", type=int, default=1000, help="number of test images (default: 1000; 0 or less: error)")
    e.add_argument("--all", dest="n", action="store_const", const=None, help="use the whole test set")
    e.add_argument(
        "--random-subset",
        type=int,
        metavar="SEED",
        help="draw the --n test images at random with this seed instead of taking the first n",
    )
    e.add_argument("--eps", type=float, help="perturbation radius in pixel space (default with RUN: the run's)")
    e.add_argument("--norm", help=f"{' or '.join(NORMS)} (default: {DEFAULT_NORM}, or the run's)")
    e.add_argument(
        "--attacks",
        default="",
        help="comma-separated attacks for ERA, e.g. pgd,cw,interval (worst case over them per image; default: none)",
    )
    e.add_argument(
        "--domains",
        default="",
        help="comma-separated bound domains for VRA, e.g. interval,symbolic-linear (default: none)",
    )
    e.add_argument(
        "--curves",
        default="",
        help="comma-separated minimal-perturbation attacks for robustness "
        "curves (Figure 7), e.g. cw-l2,pointwise (default: none)",
    )
    e.add_argument(
        "--json",
        metavar="FILE",
        help="write the results as JSON (default with RUN: RUN/evaluation.json, "
        "the latest, and appended to RUN/evaluations.jsonl, the history)",
    )
    e.add_argument("--device", default="auto", help=f"{DEVICE_CHOICES} (default: auto)")
    e.add_argument("--batch-size", type=int, default=500, help="images per forward pass / attack batch (default: 500)")
    e.add_argument("--chunk-size", type=int, help="images per chunk of bound propagation (memory vs speed)")
    e.add_argument("--seed", type=int, default=0, help="seed of the attacks' random starts (default: 0)")
    e.add_argument(
        "--attack-steps",
        type=int,
        metavar="N",
        help="iterations of every ERA attack that takes steps (default: each attack's own, pgd 40)",
    )
    e.add_argument(
        "--attack-restarts",
        type=int,
        metavar="N",
        help="random restarts of every ERA attack that takes them (default: 1)",
    )
    e.add_argument(
        "--attack-step-size",
        type=float,
        metavar="S",
        help="step size of every ERA attack that takes one, in pixel space (default: pgd 0.01 for "
        "L-inf, 2.5 eps / steps for L2)",
    )
    e.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show progress bars")
    e.set_defaults(func=cmd_evaluate)

    q = sub.add_parser(
        "quickstart",
        help="regular vs. the strongest robust method on the embedded mnist-mini "
        "(about a minute on 2 CPU cores), ACC/ERA/VRA side by side",
    )
    q.add_argument("--fast", action="store_true", help="a smoke run of a few seconds (1 epoch, 1,000 images)")
    q.add_argument("--out", default="runs/quickstart", help="folder of the two runs (default: runs/quickstart)")
    q.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show progress bars")
    q.set_defaults(func=cmd_quickstart)

    tb = sub.add_parser("table", help="runs side by side: ACC, ERA, VRA, batch time, peak memory (Tables III-V)")
    tb.add_argument("runs", nargs="+", help="finished training run folders")
    tb.add_argument("--markdown", action="store_true", help="print a Markdown table")
    tb.add_argument("--csv", metavar="FILE", help="also write the rows as CSV")
    tb.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    tb.set_defaults(func=cmd_table)

    fr = sub.add_parser(
        "frontier",
        help="VRA against training CPU-minutes: every method trained for fixed budgets, then a table and a plot",
    )
    from veritrain.experiments.frontier import RECIPES, SETTINGS

    fr.add_argument("setting", help=f"network, data set and eps: {', '.join(SETTINGS)}")
    fr.add_argument("--methods", default="", help=f"comma-separated recipes (default: all): {', '.join(RECIPES)}")
    fr.add_argument(
        "--budgets", default="15,30,60,120", help="CPU-minutes of one thread per run (default: 15,30,60,120)"
    )
    fr.add_argument(
        "--out", default="results/frontier", help="folder of the runs and tables (default: results/frontier)"
    )
    fr.add_argument("--eval-n", type=int, default=1000, help="test images for ERA and VRA (default: 1000; ACC: all)")
    fr.add_argument("--dry-run", action="store_true", help="print the runs (epochs from a short calibration) only")
    fr.add_argument("--progress", action=argparse.BooleanOptionalAction, default=False, help="show progress bars")
    fr.set_defaults(func=cmd_frontier)

    pl = sub.add_parser(
        "plot", help="plot a run's metrics (alpha, eps, losses, held-out ACC/VRA per epoch); needs matplotlib"
    )
    pl.add_argument("run", help="training run folder")
    pl.add_argument("--out", help="PNG file (default: RUN/metrics.png)")
    pl.set_defaults(func=cmd_plot)

    from veritrain.experiments.command import add_reproduce_parser

    add_reproduce_parser(sub)  # `veritrain reproduce NAME`: the paper's tables and figures

    add_commands(sub)  # `veritrain export|crosscheck|vnnlib`: ONNX, VNN-LIB, Marabou (veritrain.interop)
    return p


def _error_types() -> tuple[type[BaseException], ...]:
    """The errors `main` prints as one line (exit 2): invalid options and the one-line errors of each layer."""
    from veritrain.bounds import UnsupportedLayerError
    from veritrain.data import DataError
    from veritrain.models import ModelError

    return (UnknownNameError, ValueError, OSError, DataError, ModelError, UnsupportedLayerError)


def _one_line(e: BaseException) -> str:
    msg = str(e).strip() or type(e).__name__
    if isinstance(e, OSError) and e.filename and str(e.filename) not in msg:
        msg = f"{msg}: {e.filename}"
    return " ".join(msg.split())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from veritrain.device import configure_threads

        configure_threads(args.threads)
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `veritrain models | head`
        sys.stderr = sys.stdout = open(os.devnull, "w")
        return 0
    except _error_types() as e:
        print(f"veritrain: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("veritrain: interrupted (a training run continues with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
