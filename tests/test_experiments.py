"""`veritrain reproduce`: the experiment specs, the runner (skip, resume, reuse), the reports, the
measurements (Table I attacks, Table X child processes), and one MixTrain epoch of each of the paper's
eight networks through the CLI."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from veritrain.cli import main
from veritrain.experiments import EXPERIMENTS, Experiment, Run, plan, reproduce
from veritrain.experiments.measures import attack_comparison, measure_step
from veritrain.experiments.runner import config_hash, train_command
from veritrain.models import MODELS

PAPER_NAMES = ("table1", "table3", "table4", "table5", "table6", "table7", "table8", "table9", "table10", "fig8")


def test_list_names_every_experiment(capsys):
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    for name in PAPER_NAMES:
        assert any(line.startswith(name + " ") for line in out.splitlines()), name


def test_table3_paper_dry_run_prints_the_papers_runs(tmp_path, capsys):
    assert main(["reproduce", "table3", "--scale", "paper", "--dry-run", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    cmds = [line.strip() for line in out.splitlines() if line.strip().startswith("veritrain train")]
    assert len(cmds) == len(EXPERIMENTS.get("table3").runs) == 26
    for c in cmds:
        assert "--epochs 60 " in c and "--batch-size 50 " in c and "--lr-step 5 " in c and "--lr-gamma 0.6 " in c
        assert "--eps-ramp-epochs 10 " in c and "--full-eval" in c
        if "--dataset mnist " in c:
            assert "--optimizer adam --lr 0.001 " in c and "--eps-start 0.01 " in c
        else:
            assert "--optimizer sgd --lr 0.05 " in c and "--eps-start 0.001 " in c and "--eps 0.00784" in c
        if "--method mixtrain" in c:
            assert "--k-per-batch 1 " in c and "--domain symbolic-linear" in c
        if "--method madry" in c:
            assert "--pgd-steps 40 --pgd-step-size 0.01" in c
    assert not list(tmp_path.iterdir())  # a dry run writes nothing


def test_cpu_scale_is_smaller_and_rows_for_a_gpu_are_kept():
    t3 = EXPERIMENTS.get("table3")
    assert len(t3.runs_at("cpu")) == 7 and all(r.config["net"] == "mnist-small" for r in t3.runs_at("cpu"))
    for name in PAPER_NAMES:
        exp = EXPERIMENTS.get(name)
        for r in exp.runs_at("cpu"):
            paper, cpu = exp.config(r, "paper"), exp.config(r, "cpu")
            assert cpu.get("epochs", 60) <= paper.get("epochs", 60)
        assert exp.cpu_note or not exp.runs_at("cpu") or exp.kind == "measure", name
    with pytest.raises(ValueError, match="unknown scale"):
        t3.config(t3.runs[0], "laptop")


def test_cpu_scale_fits_one_free_core():
    """Issue 12: the cpu scale of Tables I, VIII, IX/Figure 8 and X, sized for one free core."""
    t1 = EXPERIMENTS.get("table1")
    fc1 = [r for r in t1.runs_at("cpu") if r.config["net"] == "mnist-fc1"]
    assert len(fc1) == 3 and [r.cpu_only for r in fc1] == [False, True, True]
    assert len(t1.runs_at("paper")) == 2  # the other FC1 rows are more measurements at the cpu scale only
    for r in fc1:  # Madry as in the paper: PGD-40, step 0.01, on all 60,000 images
        cfg = t1.config(r, "cpu")
        assert cfg["pgd_steps"] == 40 and cfg["pgd_step_size"] == 0.01 and cfg.get("train_size") is None
        assert cfg["epochs"] >= 15 and cfg["budget_minutes"] <= 50
    assert fc1[0].measure_options["cpu"].get("domain", "symbolic-linear") == "symbolic-linear"
    assert fc1[1].measure_options["cpu"]["n"] == 1024
    assert fc1[2].measure_options["cpu"]["attack"] == "interval-targeted" and fc1[2].config == fc1[0].config
    t8 = EXPERIMENTS.get("table8")
    assert sorted(t8.config(r, "cpu")["k_per_batch"] for r in t8.runs_at("cpu")) == [1, 2, 5, 10]
    assert all(t8.config(r, "cpu")["train_size"] >= 10000 for r in t8.runs_at("cpu"))
    f8 = EXPERIMENTS.get("fig8")
    assert all(f8.config(r, "cpu")["epochs"] >= 10 for r in f8.runs_at("cpu"))  # room for alpha to move
    t10 = EXPERIMENTS.get("table10")
    assert t10.scale_options["cpu"]["cpu_limit_s"] >= 60 and t10.scale_options["cpu"]["memory_limit_mb"] <= 6144
    assert {r.key for r in t10.runs if r.measure_options.get("cpu", {}).get("warmup") == 0} >= {
        "cifar-large",
        "cifar-resnet",
    }


def test_rows_of_one_run_train_it_once(tmp_path, monkeypatch, capsys):
    """Two rows with the same options (Table I's FC1 measured twice) share one folder, trained by the first."""
    monkeypatch.setenv("VERITRAIN_CACHE", str(tmp_path / "cache"))
    base = _tiny().runs[0]
    again = Run("again", base.config, labels={"Method": "again"}, cpu_only=True)
    exp = Experiment(name="twice", source="Table T", title="one run, two rows", runs=(base, again), cpu_note="t")
    assert [p.run.key for p in plan(exp, "paper", tmp_path)] == ["regular"]
    first, second = plan(exp, "cpu", tmp_path)
    assert first.folder == second.folder and [first.state, second.state] == ["new", "shared"]
    reproduce(exp, "cpu", tmp_path, dry_run=True, log=print)
    assert capsys.readouterr().out.count("veritrain train") == 1
    logs: list[str] = []
    reproduce(exp, "cpu", tmp_path, device="cpu", progress=False, log=logs.append)
    assert sum(": training in " in m for m in logs) == 1
    rows = _rows(tmp_path / "twice.csv")
    assert [r["Method"] for r in rows] == ["regular", "again"] and rows[0]["ACC"] == rows[1]["ACC"] != "not run"


def test_shared_runs_share_a_folder(tmp_path):
    """Table IX's runs are Figure 8's; Table VII's are Table III's: same options, same folder."""
    t9 = {p.run.key: p.folder for p in plan(EXPERIMENTS.get("table9"), "cpu", tmp_path)}
    f8 = {p.run.key: p.folder for p in plan(EXPERIMENTS.get("fig8"), "cpu", tmp_path)}
    assert t9["alpha=0.5"] == f8["alpha=0.5"] and t9["alpha=dynamic"] == f8["alpha=dynamic"]
    t7 = plan(EXPERIMENTS.get("table7"), "paper", tmp_path)
    t3 = {p.run.key: p.folder for p in plan(EXPERIMENTS.get("table3"), "paper", tmp_path)}
    assert all(p.folder == t3[p.run.key] for p in t7) and len(t7) == 5


def _tiny(name: str = "tiny", **extra) -> Experiment:
    base = dict(
        net="mnist-small",
        dataset="mnist-mini",
        epochs=1,
        train_size=100,
        eval_n=20,
        eps=0.1,
        eval_domains="interval",
        progress=False,
    )
    return Experiment(
        name=name,
        source="Table T",
        title="a test",
        runs=(
            Run("regular", {**base, "method": "regular"}, labels={"Method": "regular"}, paper={"ACC": 98.6}),
            Run(
                "mixtrain",
                {**base, "method": "mixtrain", "domain": "interval"},
                labels={"Method": "mixtrain"},
                paper={"ACC": 98.5, "VRA": 91.6},
                cpu={"train_size": 50},
                cpu_skip=None,
            ),
        ),
        columns=("ACC", "ERA", "VRA"),
        cpu={"epochs": 1},
        cpu_note="tiny",
        **extra,
    )


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_reproduce_trains_skips_resumes_and_reports(tmp_path, monkeypatch):
    monkeypatch.setenv("VERITRAIN_CACHE", str(tmp_path / "cache"))
    exp = _tiny()
    files = reproduce(exp, "cpu", tmp_path, device="cpu", progress=False, command="test", log=lambda m: None)
    md, csv_path = tmp_path / "tiny.md", tmp_path / "tiny.csv"
    assert set(files) == {md, csv_path}
    rows = _rows(csv_path)
    assert [r["Method"] for r in rows] == ["regular", "mixtrain"]
    assert float(rows[0]["ACC"]) > 0 and rows[0]["ACC (paper)"] == "98.6" and rows[1]["VRA (paper)"] == "91.6"
    text = md.read_text()
    assert "scale: **cpu** (tiny)" in text and "machine:" in text and "| Method | ACC | ACC (paper) |" in text
    planned = plan(exp, "cpu", tmp_path)
    assert [p.state for p in planned] == ["done", "done"]
    assert json.loads((planned[1].folder / "config.json").read_text())["train_size"] == 50
    # a finished run is not trained again
    stamp = (planned[0].folder / "summary.json").stat().st_mtime_ns
    reproduce(exp, "cpu", tmp_path, device="cpu", progress=False, log=lambda m: None)
    assert (planned[0].folder / "summary.json").stat().st_mtime_ns == stamp
    # a run killed after its checkpoint (no summary yet) is resumed, not restarted
    (planned[1].folder / "summary.json").unlink()
    assert [p.state for p in plan(exp, "cpu", tmp_path)] == ["done", "partial"]
    assert "--resume" in train_command(plan(exp, "cpu", tmp_path)[1])
    reproduce(exp, "cpu", tmp_path, device="cpu", progress=False, log=lambda m: None)
    assert json.loads((planned[1].folder / "summary.json").read_text())["resumed"] is True
    # --no-train on another scale reports the rows as not run
    reproduce(exp, "paper", tmp_path / "p", device="cpu", train_missing=False, log=lambda m: None)
    assert _rows(tmp_path / "p" / "tiny.csv")[0]["ACC"] == "not run"


def test_reuse_takes_only_a_matching_finished_run(tmp_path, monkeypatch):
    monkeypatch.setenv("VERITRAIN_CACHE", str(tmp_path / "cache"))
    exp = _tiny()
    reproduce(exp, "cpu", tmp_path / "a", device="cpu", progress=False, log=lambda m: None, only="regular")
    planned = plan(exp, "cpu", tmp_path / "b", reuse=[tmp_path / "a"])
    assert [p.state for p in planned] == ["reused", "new"]  # mixtrain was never trained in a
    assert planned[0].folder.parent.parent == tmp_path / "a"
    # evaluation options may differ only when the finished run evaluated at least as much
    other = Experiment(**{**exp.__dict__, "cpu": {"epochs": 1, "eval_n": 10}})
    assert plan(other, "cpu", tmp_path / "b", reuse=[tmp_path / "a"])[0].state == "reused"
    more = Experiment(**{**exp.__dict__, "cpu": {"epochs": 1, "eval_n": 500}})
    assert plan(more, "cpu", tmp_path / "b", reuse=[tmp_path / "a"])[0].state == "new"
    trained_differently = Experiment(**{**exp.__dict__, "cpu": {"epochs": 1, "lr": 0.01}})
    assert plan(trained_differently, "cpu", tmp_path / "b", reuse=[tmp_path / "a"])[0].state == "new"
    assert config_hash(exp.config(exp.runs[0], "cpu")) != config_hash(more.config(more.runs[0], "cpu"))
    # a finished run of DIR/training-runs under an earlier version's name is found there and not retrained
    old_name = planned[0].folder.with_name(planned[0].folder.name[:-8] + "0ld0ld00")
    planned[0].folder.rename(old_name)
    assert [(p.state, p.folder) for p in plan(exp, "cpu", tmp_path / "a", only="regular")] == [("done", old_name)]
    # an option at its TrainConfig default does not enter the hash: spelling it out names the same folder
    options = exp.config(exp.runs[0], "cpu")
    assert config_hash({**options, "tight_weight": None, "holdout": 0}) == config_hash(options)


def test_a_run_may_start_from_another_runs_weights(tmp_path, monkeypatch):
    """Figure 4's second phases: weights="@KEY" is the model of the experiment's earlier run KEY."""
    monkeypatch.setenv("VERITRAIN_CACHE", str(tmp_path / "cache"))
    base = _tiny().runs[0]
    second = Run("then", {**base.config, "weights": "@regular", "lr": 1e-4}, labels={"Method": "then", "phase": 2})
    exp = Experiment(
        name="two", source="Figure T", title="two phases", runs=(base, second), figure=EXPERIMENTS.get("fig4").figure
    )
    reproduce(exp, "paper", tmp_path, device="cpu", progress=False, log=lambda m: None)
    first, then = plan(exp, "paper", tmp_path)
    assert json.loads((then.folder / "config.json").read_text())["weights"] == str(first.folder / "model.pt")
    assert (tmp_path / "two.png").is_file()
    with pytest.raises(ValueError, match="names no earlier run"):
        plan(Experiment(name="bad", source="", title="", runs=(second,)), "paper", tmp_path)


def test_fig8_figure_from_rows(tmp_path):
    pytest.importorskip("matplotlib")
    exp = EXPERIMENTS.get("fig8")
    rows = [
        {"alpha": a, "ACC": 90 - 10 * a, "ERA": 50 + 20 * a, "VRA": 40 * a, "ACC (paper)": None}
        for a in (0.0, 0.25, 0.5, 0.75, 1.0)
    ]
    rows.append({"alpha": "dynamic", "ACC": 85.0, "ERA": 65.0, "VRA": 30.0})
    rows[2].update({"ACC (paper)": 71.4, "ERA (paper)": 53.2, "VRA (paper)": 30.9})
    exp.figure(rows, tmp_path / "fig8.png", "cpu")
    assert (tmp_path / "fig8.png").stat().st_size > 1000


def test_table1_attacks_at_equal_time(tmp_path, monkeypatch):
    monkeypatch.setenv("VERITRAIN_CACHE", str(tmp_path / "cache"))
    exp = _tiny()
    reproduce(exp, "cpu", tmp_path, device="cpu", progress=False, log=lambda m: None, only="regular")
    p = plan(exp, "cpu", tmp_path)[0]
    cfg = {**p.config, "eps": 0.1}
    res = attack_comparison(exp, p.run, cfg, "cpu", p.folder, tmp_path, n=6, iterations=2, chunk=3)
    for k in ("PGD", "CW", "interval"):
        assert 0.0 <= res[k] <= 100.0
    assert res["n"] == 6 and res["attack time s"] > 0 and res["PGD iterations"] >= 40
    assert attack_comparison(exp, p.run, cfg, "cpu", p.folder, tmp_path, n=6, iterations=2, chunk=3) == res  # cached
    # keyed by the weights' content: a fresh checkout (a new modification time) keeps it, new weights do not
    model = p.folder / "model.pt"
    os.utime(model, (1.0, 1.0))
    cached = sorted(p.folder.glob("table1-attacks-*.json"))
    assert attack_comparison(exp, p.run, cfg, "cpu", p.folder, tmp_path, n=6, iterations=2, chunk=3) == res
    assert sorted(p.folder.glob("table1-attacks-*.json")) == cached
    state = torch.load(model)
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in state.items()}, model)
    attack_comparison(exp, p.run, cfg, "cpu", p.folder, tmp_path, n=6, iterations=2, chunk=3)
    assert len(list(p.folder.glob("table1-attacks-*.json"))) == len(cached) + 1
    # on the CPU clock PGD and CW get the interval attack's CPU seconds (at least: they stop after a whole restart)
    cpu = attack_comparison(exp, p.run, cfg, "cpu", p.folder, tmp_path, n=6, iterations=2, chunk=3, clock="cpu")
    assert cpu["clock"] == "cpu" and cpu["PGD time s"] >= cpu["attack time s"] or cpu["PGD"] == 100.0
    assert 0 <= cpu["interval only"] <= 6 and 0 <= cpu["PGD only"] <= 6


def test_table10_step_in_a_child_process():
    cfg = {
        "net": "mnist-small",
        "dataset": "mnist",
        "method": "mixtrain",
        "k_per_batch": 1,
        "eps": 0.1,
        "batch_size": 10,
        "device": "cpu",
    }
    res = measure_step(cfg, batches=1, warmup=0, time_limit_s=120)
    assert "error" not in res, res
    assert res["batch s"] > 0 and res["peak MB"] > res["base MB"] > 0
    assert "limit" in measure_step(cfg, batches=1, warmup=0, time_limit_s=120, memory_limit_mb=1.0)


# ----------------------------------------------------------------------------- every network trains

#: the networks that take more than a few seconds for one MixTrain epoch on a CPU
SLOW_NETS = {"mnist-fc2", "mnist-large", "cifar-large", "cifar-resnet", "imagenet-resnet"}


def _png_folder(split_dir: Path, classes: list[str], per_class: int, side: int, seed: int, layout: str) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in classes:
        folder = split_dir / c / ("images" if layout == "tiny" else "")
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(
                folder / f"{c}_{i}.{'JPEG' if layout == 'tiny' else 'png'}", format="PNG"
            )


def make_cifar_folder(root: Path) -> None:
    from veritrain.data.info import CIFAR10_CLASSES

    for split, n in (("train", 5), ("test", 1)):
        _png_folder(root / "cifar10" / split, list(CIFAR10_CLASSES), n, 32, seed=len(split), layout="cifar")


def make_tiny_imagenet_folder(root: Path) -> None:
    """The Tiny ImageNet layout: wnids.txt, train/<wnid>/images/*.JPEG, val/images + val_annotations.txt."""
    from PIL import Image

    base = root / "tiny-imagenet-200"
    wnids = [f"n{i:08d}" for i in range(200)]
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    _png_folder(base / "train", wnids, 1, 64, seed=0, layout="tiny")
    (base / "val" / "images").mkdir(parents=True)
    rng = np.random.default_rng(1)
    lines = []
    for i, w in enumerate(wnids[:20]):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
            base / "val" / "images" / f"val_{i}.JPEG", format="PNG"
        )
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("net", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_NETS else n for n in MODELS])
def test_every_network_trains_one_mixtrain_epoch(net, tmp_path, monkeypatch, capsys):
    pytest.importorskip("PIL")
    monkeypatch.setenv("VERITRAIN_CACHE", str(tmp_path / "cache"))
    spec = MODELS.get(net)
    if spec.dataset == "mnist":
        dataset, data = "mnist-mini", []
    elif spec.dataset == "cifar10":
        make_cifar_folder(tmp_path / "data")
        dataset, data = "cifar10", ["--data-dir", str(tmp_path / "data")]
    else:
        make_tiny_imagenet_folder(tmp_path / "data")
        dataset, data = "imagenet200", ["--data-dir", str(tmp_path / "data")]
    out = tmp_path / "run"
    # the paper's MixTrain (symbolic-linear, k' = 1) for one epoch of 2 batches; the final VRA with interval bounds
    rc = main(
        [
            "train",
            "--net",
            net,
            "--dataset",
            dataset,
            *data,
            "--method",
            "mixtrain",
            "--epochs",
            "1",
            "--train-size",
            "50",
            "--batch-size",
            "25",
            "--k-per-batch",
            "1",
            "--domain",
            "symbolic-linear",
            "--eps",
            "0.01",
            "--eval-n",
            "2",
            "--eval-domains",
            "interval",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1 and metrics[0]["verified_samples"] == 2  # k' = 1 in each of the 2 batches
    assert np.isfinite(metrics[0]["verified_loss"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["net"] == net and "interval" in summary["eval"]["vra"]
    assert torch.load(out / "model.pt", weights_only=True)


# ----------------------------------------------------------------------------- device tests (scripts/gpu_check.sh)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.cuda
@needs_cuda
def test_bounds_on_cuda_match_cpu():
    from veritrain.bounds import DOMAINS, Ball, compute_bounds
    from veritrain.models import build_model

    torch.manual_seed(0)
    model = build_model("cifar-small").eval()
    x = torch.rand(4, 3, 32, 32)
    for domain in DOMAINS:
        lo, hi = compute_bounds(model, Ball(x, 2 / 255), domain=domain)
        lo_c, hi_c = compute_bounds(model.cuda(), Ball(x.cuda(), 2 / 255), domain=domain)
        model.cpu()
        assert torch.allclose(lo, lo_c.cpu(), atol=1e-4) and torch.allclose(hi, hi_c.cpu(), atol=1e-4), domain


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("net", list(MODELS))
def test_every_method_steps_on_cuda(net):
    from veritrain.experiments.measures import STEP_METHODS, time_methods

    res = time_methods(net, list(STEP_METHODS), device="cuda", batches=1, warmup=0)
    for label, r in res.items():
        assert "error" not in r or "OutOfMemory" in r["error"], (label, r)
        assert "error" in r or r["gpu MB"] > 0
