"""Held-out training images (issue 11): the split, MixTrain's alpha on them, per-epoch held-out metrics and the
kept best epoch (`--holdout`, `--holdout-domain`, `--keep-best`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from veritrain.data.loaders import split_holdout
from veritrain.errors import ConfigError, TrainingError
from veritrain.evaluation.accuracy import accuracy
from veritrain.reporting import read_jsonl
from veritrain.training import METHODS, TrainConfig, train
from veritrain.training.loop import load_checkpoint, split_train_data
from veritrain.training.methods.base import EpochContext
from veritrain.training.methods.mixtrain import MixTrain
from veritrain.training.methods.regular import Regular

from cli_helpers import VOLATILE, run_main
from nets import tiny_model

#: the held-out evaluation's wall time varies like the other timings
UNSTABLE = VOLATILE | {"holdout_time"}


def stable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in UNSTABLE} for r in rows]


def tiny_data(n: int = 200, seed: int = 0) -> TensorDataset:
    """A separable 2-class problem on 1x6x6 'images'; every image is distinct (its index is in pixel 0)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 6, 6, generator=g)
    y = (x[:, :, :3].mean((1, 2, 3)) > x[:, :, 3:].mean((1, 2, 3))).long()
    x[:, 0, 0, 0] = torch.arange(n) / n
    return TensorDataset(x, y)


def cfg_for(tmp_path: Path, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        dataset="mnist-mini",
        epochs=3,
        batch_size=25,
        eps=0.05,
        eps_ramp_epochs=1,
        lr=0.02,
        holdout=50,
        holdout_domain="interval",
        out=str(tmp_path / "run"),
        progress=False,
        eval_attacks="",
        eval_domains="interval",
        monitor_n=0,
    )
    base.update(kw)
    return TrainConfig(**base)


def ids(ds: TensorDataset) -> set[int]:
    return {round(float(v) * 200) for v in ds.tensors[0][:, 0, 0, 0]}


# ----------------------------------------------------------------------------- the split


def test_split_is_disjoint_complete_and_deterministic():
    ds = tiny_data()
    rest, held = split_holdout(ds, 50, seed=7)
    assert len(held) == 50 and len(rest) == 150
    assert ids(rest).isdisjoint(ids(held)) and ids(rest) | ids(held) == set(range(200))
    again = split_holdout(ds, 50, seed=7)
    assert torch.equal(again[1].tensors[0], held.tensors[0]) and torch.equal(again[0].tensors[1], rest.tensors[1])
    assert ids(split_holdout(ds, 50, seed=8)[1]) != ids(held)
    # the run's split follows --seed, and --train-size applies first
    cfg = TrainConfig(dataset="mnist-mini", holdout=20, seed=3)
    a = split_train_data(cfg, ds)
    b = split_train_data(TrainConfig(dataset="mnist-mini", holdout=20, seed=3), ds)
    assert a[1] is not None and b[1] is not None and torch.equal(a[1].tensors[0], b[1].tensors[0])
    assert split_train_data(TrainConfig(dataset="mnist-mini"), ds) == (ds, None)


def test_training_never_sees_the_held_out_images(tmp_path):
    seen: list[torch.Tensor] = []

    class Recorder(Regular):
        name = "holdout-recorder"

        def loss(self, model, x, y, ctx):
            seen.append(x[:, 0, 0, 0].clone())
            return super().loss(model, x, y, ctx)

    if "holdout-recorder" not in METHODS:
        METHODS.add("holdout-recorder", Recorder)
    data = tiny_data()
    cfg = cfg_for(tmp_path, method="holdout-recorder", eps=0.0, epochs=2)
    s = train(cfg, model=tiny_model(), train_data=data)
    _, held = split_train_data(cfg.resolved(), data)
    assert held is not None
    trained = {round(float(v) * 200) for v in torch.cat(seen)}
    assert trained.isdisjoint(ids(held)) and len(trained) == 150
    assert s["train_size"] == 150 and s["holdout"] == 50
    assert json.loads((tmp_path / "run" / "config.json").read_text())["holdout"] == 50


# ----------------------------------------------------------------------------- MixTrain's alpha


def test_alpha_reads_the_held_out_accuracy():
    """The model is right on every training image and wrong on every held-out one: alpha follows the latter."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 2))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([1.0, 0.0]))  # always class 0
    x = torch.rand(40, 1, 6, 6)
    right, wrong = (
        TensorDataset(x, torch.zeros(40, dtype=torch.long)),
        TensorDataset(x, torch.ones(40, dtype=torch.long)),
    )
    cfg = TrainConfig(method="mixtrain", dataset="mnist", domain="interval", alpha0=0.5, acc0=50.0, holdout=40)
    ctx = dict(eps=0.1, epoch=0, generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    obj = MixTrain(cfg)
    out = obj.end_epoch(model, EpochContext(train_data=right, extra={"holdout": wrong}, **ctx))
    assert out["subsample_acc"] == 0.0 and out["alpha_next"] == pytest.approx(0.45)
    obj = MixTrain(cfg)  # without held-out images: the paper's rule on training images
    out = obj.end_epoch(model, EpochContext(train_data=right, **ctx))
    assert out["subsample_acc"] == 100.0 and out["alpha_next"] == pytest.approx(0.55)


def test_mixtrain_through_the_loop_steers_alpha_by_the_logged_held_out_accuracy(tmp_path):
    cfg = cfg_for(tmp_path, method="mixtrain", domain="interval", k_per_batch=1, acc_subsample=50, acc0=60.0)
    train(cfg, model=tiny_model(), train_data=tiny_data())
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    for r in rows:  # all 50 held-out images, the same weights: the rule's accuracy is the logged one
        assert r["subsample_acc"] == pytest.approx(r["holdout_acc"])
        assert r["alpha_next"] == pytest.approx(r["alpha"] + (0.05 if r["holdout_acc"] > 60.0 else -0.05))


# ----------------------------------------------------------------------------- per-epoch metrics


@pytest.mark.parametrize("method", ["regular", "ibp", "mixtrain"])
def test_held_out_metrics_are_logged_every_epoch(tmp_path, method):
    extra = {"domain": "interval", "batch_domain": "interval", "k_per_batch": 0} if method == "mixtrain" else {}
    train(cfg_for(tmp_path, method=method, epochs=2, **extra), model=tiny_model(), train_data=tiny_data())
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert len(rows) == 2
    for r in rows:
        assert r["holdout_n"] == 50
        assert 0.0 <= r["holdout_vra"] <= r["holdout_acc"] <= 100.0
        assert r["holdout_time"] >= 0 and "holdout_cpu_time" not in r  # counted in cpu_time
    assert not any("kept_epoch" in r for r in rows)  # no --keep-best


def test_no_holdout_logs_nothing_new(tmp_path):
    train(cfg_for(tmp_path, holdout=0, epochs=1), model=tiny_model(), train_data=tiny_data())
    (row,) = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert not any(k.startswith("holdout") for k in row)


# ----------------------------------------------------------------------------- the kept epoch


class Saboteur(Regular):
    """Regular training whose epoch `extra["sabotage"]` (1-based; default the last) ends by negating the last
    layer: the network then ranks the classes backwards (worse clean and certified accuracy)."""

    name = "holdout-saboteur"

    def end_epoch(self, model, ctx):
        if ctx.epoch + 1 == self.cfg.extra.get("sabotage", self.cfg.epochs):
            with torch.no_grad():
                last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
                last.weight.neg_()
                last.bias.neg_()
        return {}


if "holdout-saboteur" not in METHODS:
    METHODS.add("holdout-saboteur", Saboteur)


def _best_epoch(rows: list[dict[str, Any]], ramp_end: int) -> int:
    keys = [(r["epoch"] >= ramp_end, r.get("holdout_vra") or 0.0, r["holdout_acc"], -r["epoch"]) for r in rows]
    return rows[keys.index(max(keys))]["epoch"]


def test_keep_best_keeps_the_best_epoch_and_model_pt_holds_it(tmp_path):
    data, test = tiny_data(), tiny_data(100, seed=1)
    cfg = cfg_for(tmp_path, method="holdout-saboteur", epochs=4, keep_best=True)
    s = train(cfg, model=tiny_model(), train_data=data, test_data=test)
    run = tmp_path / "run"
    rows = read_jsonl(run / "metrics.jsonl")
    assert rows[-1]["holdout_acc"] < max(r["holdout_acc"] for r in rows)  # the sabotaged last epoch
    kept = _best_epoch(rows, cfg.ramp_end)
    assert s["kept_epoch"] == kept < 4 and rows[-1]["kept_epoch"] == kept
    ckpt = load_checkpoint(run / "checkpoint.pt")
    weights = torch.load(run / "model.pt", weights_only=True)
    assert ckpt["best"]["epoch"] == kept
    assert all(torch.equal(weights[k], ckpt["best"]["model"][k]) for k in weights)
    assert not all(torch.equal(weights[k], ckpt["model"][k]) for k in weights)  # the last epoch, for --resume
    model = tiny_model(5)
    model.load_state_dict(weights)
    assert s["test_acc"] == accuracy(model, *test.tensors)  # the summary evaluates the kept weights


def test_ramp_epochs_are_kept_only_while_no_later_epoch_exists(tmp_path):
    """eps ramps over 3 epochs: epochs 1-2 may be kept only in a run that stops before epoch 3."""
    cfg = cfg_for(tmp_path, method="holdout-saboteur", epochs=4, eps_ramp_epochs=3, keep_best=True)
    assert cfg.ramp_end == 3
    s = train(cfg, model=tiny_model(), train_data=tiny_data())
    assert s["kept_epoch"] == 3  # epoch 4 is sabotaged; 1 and 2 are ramp epochs
    s = train(
        cfg_for(tmp_path, epochs=2, eps_ramp_epochs=3, keep_best=True, overwrite=True),
        model=tiny_model(),
        train_data=tiny_data(),
    )
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert s["kept_epoch"] == _best_epoch(rows, 3)


def test_resume_keeps_the_split_and_the_kept_epoch(tmp_path):
    data = tiny_data()
    part = dict(method="holdout-saboteur", keep_best=True, extra={"sabotage": 4}, out=str(tmp_path / "part"))
    full = cfg_for(tmp_path, epochs=4, **{**part, "out": str(tmp_path / "full")})
    s_full = train(full, model=tiny_model(), train_data=data, test_data=data)
    train(cfg_for(tmp_path, epochs=2, **part), model=tiny_model(), train_data=data, test_data=data)
    s_part = train(
        cfg_for(tmp_path, epochs=4, resume=True, **part), model=tiny_model(), train_data=data, test_data=data
    )
    rows_full, rows_part = (read_jsonl(tmp_path / d / "metrics.jsonl") for d in ("full", "part"))
    assert stable(rows_part) == stable(rows_full)  # same held-out images, same trajectory
    assert s_part["kept_epoch"] == s_full["kept_epoch"] and s_part["test_acc"] == s_full["test_acc"]
    w_full, w_part = (torch.load(tmp_path / d / "model.pt", weights_only=True) for d in ("full", "part"))
    assert all(torch.equal(w_full[k], w_part[k]) for k in w_full)
    with pytest.raises(TrainingError, match="holdout"):  # another split: refused
        train(cfg_for(tmp_path, epochs=4, resume=True, holdout=40, **part), model=tiny_model(), train_data=data)


def test_evaluate_model_pt_reproduces_the_summary(tmp_path, capsys):
    """`veritrain evaluate --weights RUN/model.pt` evaluates the kept weights, as the summary did."""
    run = tmp_path / "run"
    cfg = TrainConfig(
        net="mnist-small",
        dataset="mnist-mini",
        method="holdout-saboteur",
        train_size=300,
        holdout=100,
        keep_best=True,
        holdout_domain="interval",
        epochs=3,
        batch_size=50,
        eps=0.01,
        eps_ramp_epochs=1,
        eval_n=200,
        eval_attacks="",
        eval_domains="interval",
        monitor_n=0,
        progress=False,
        device="cpu",
        out=str(run),
    )
    s = train(cfg)
    assert s["kept_epoch"] < 3
    rc, _, err = run_main(
        capsys,
        "evaluate",
        "--net", "mnist-small", "--dataset", "mnist-mini", "--weights", str(run / "model.pt"),
        "--n", "200", "--eps", "0.01", "--attacks", "", "--domains", "interval", "--json", str(tmp_path / "ev.json"),
        "--no-progress", "--device", "cpu",
    )  # fmt: skip
    assert rc == 0, err
    ev = json.loads((tmp_path / "ev.json").read_text())
    assert ev["vra"]["interval"] == s["eval"]["vra"]["interval"] and ev["acc"] == s["eval"]["acc"]


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "options,words",
    [
        (dict(holdout=200), ["--holdout 200", "200 images", "lower --holdout"]),
        (dict(holdout=-1), ["--holdout", ">= 0"]),
        (dict(holdout=0, keep_best=True), ["--keep-best", "--holdout"]),
        (dict(holdout_domain="nope"), ["nope"]),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_option(tmp_path, options, words):
    with pytest.raises(ConfigError) as e:
        train(cfg_for(tmp_path, **options), model=tiny_model(), train_data=tiny_data())
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg
    assert not (tmp_path / "run").exists()


def test_cli_holdout_error_is_one_line(tmp_path, capsys):
    rc, _, err = run_main(
        capsys, "train", "--dataset", "mnist-mini", "--train-size", "100", "--holdout", "100",
        "--epochs", "1", "--out", str(tmp_path / "run"), "--no-progress",
    )  # fmt: skip
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "--holdout 100" in lines[0] and "--train-size" in lines[0], err


# ----------------------------------------------------------------------------- frontier recipes


def test_frontier_val_recipes_add_the_same_holdout_to_ibp_and_mixtrain():
    from veritrain.experiments.frontier import RECIPES, SETTINGS, scaled_config

    mnist = SETTINGS["mnist-0.1"]
    ibp, ibp_val = (scaled_config(RECIPES[r], mnist, 30).to_dict() for r in ("ibp", "ibp-val"))
    assert {k for k in ibp if ibp[k] != ibp_val[k]} == {"holdout", "keep_best"}
    hold, val = (scaled_config(RECIPES[r], mnist, 30).to_dict() for r in ("mixtrain-ibp-hold", "mixtrain-ibp-val"))
    assert {k for k in hold if hold[k] != val[k]} == {"holdout", "keep_best", "acc_subsample", "acc0"}
    assert val["holdout"] == ibp_val["holdout"] == val["acc_subsample"] == 5000 and val["keep_best"]
    assert val["acc0"] == 98.5 and hold["acc0"] == mnist.acc0_held
    assert scaled_config(RECIPES["mixtrain-ibp-val"], SETTINGS["mnist-0.3"], 30).acc0 == 96.0


# ----------------------------------------------------------------------------- torchrun


@pytest.mark.skipif(sys.platform != "linux", reason="forks processes (Linux)")
def test_two_processes_hold_out_the_same_images_as_one(tmp_path):
    """Every process splits alike and rank 0 keeps the same epoch as one process would; MixTrain's alpha reads
    the held-out images under torchrun too."""
    from test_distributed import BASE, TOLERANCE, run_processes

    cfg = {**BASE, "method": "regular", "holdout": 50, "keep_best": True, "holdout_domain": "interval"}
    one, two = tmp_path / "one", tmp_path / "two"
    s1 = train(TrainConfig(**cfg, out=str(one)))
    run_processes({**cfg, "out": str(two)})
    r1, r2 = (read_jsonl(d / "metrics.jsonl") for d in (one, two))
    for a, b in zip(r1, r2, strict=True):
        assert abs(a["loss"] - b["loss"]) <= TOLERANCE
        assert a["holdout_acc"] == b["holdout_acc"] and a["holdout_vra"] == b["holdout_vra"]
    s2 = json.loads((two / "summary.json").read_text())
    assert s1["kept_epoch"] == s2["kept_epoch"] and s2["train_size"] == 150 and s2["holdout"] == 50
    mix = tmp_path / "mix"
    run_processes({**cfg, "method": "mixtrain", "k_per_batch": 1, "acc_subsample": 50, "out": str(mix)})
    assert all(r["subsample_acc"] == r["holdout_acc"] for r in read_jsonl(mix / "metrics.jsonl"))
