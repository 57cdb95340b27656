"""The shared training loop: schedules, regular training, run files, checkpoints and exact resumption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from veritrain.reporting import read_jsonl
from veritrain.training import METHODS, TrainConfig, TrainingError, eps_at_epoch, train
from veritrain.training.loop import load_checkpoint, select_device

from cli_helpers import stable
from nets import tiny_data, tiny_model

REPO = Path(__file__).resolve().parents[1]


def cfg_for(tmp_path: Path, **kw) -> TrainConfig:
    base = dict(
        dataset="mnist-mini",
        epochs=3,
        batch_size=25,
        eps=0.0,
        out=str(tmp_path / "run"),
        progress=False,
        eval_attacks="",
        eval_domains="",
    )
    base.update(kw)
    return TrainConfig(**base)


# ----------------------------------------------------------------------------- schedules


def test_eps_ramp_is_linear_then_constant():
    eps = [eps_at_epoch(e, 0.3, 0.01, 10) for e in range(12)]
    assert eps[0] == pytest.approx(0.01)
    assert eps[9] == eps[10] == eps[11] == pytest.approx(0.3)
    steps = [b - a for a, b in zip(eps[:10], eps[1:10])]
    assert all(s == pytest.approx(steps[0]) for s in steps)
    assert eps_at_epoch(0, 0.1, None, 10) == 0.1  # no start: no ramp
    assert eps_at_epoch(0, 0.005, 0.01, 10) == pytest.approx(0.005)  # start above eps is clipped
    assert eps_at_epoch(3, 0.1, 0.01, 0) == 0.1


def test_paper_defaults_per_dataset():
    m = TrainConfig(dataset="mnist").resolved()
    c = TrainConfig(dataset="cifar10").resolved()
    assert (m.optimizer, m.lr, m.eps_start) == ("adam", 1e-3, 0.01)
    assert (c.optimizer, c.lr, c.eps_start) == ("sgd", 0.05, 0.001)
    mix = TrainConfig(dataset="cifar10", method="mixtrain").resolved()  # SGD 0.05 collapses it at k' = 1
    assert (mix.optimizer, mix.lr, mix.eps_start) == ("adam", 1e-3, 0.001)
    assert TrainConfig(dataset="cifar10", method="mixtrain", optimizer="sgd").resolved().lr == 0.05
    assert m.epochs == 60 and m.batch_size == 50 and m.lr_step == 5 and m.lr_gamma == 0.6


# ----------------------------------------------------------------------------- training and run files


def test_regular_training_decreases_loss_and_writes_run_files(tmp_path):
    data = tiny_data()
    s = train(cfg_for(tmp_path, epochs=4, lr=0.02), model=tiny_model(), train_data=data, test_data=data)
    run = tmp_path / "run"
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert rows[-1]["train_acc"] > 70 and rows[-1]["train_acc"] > rows[0]["train_acc"]
    for key in ("eps", "lr", "loss", "train_acc", "batch_time", "peak_mem_mb"):
        assert key in rows[0]
    assert json.loads((run / "config.json").read_text())["method"] == "regular"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test_acc"] == pytest.approx(s["test_acc"]) and s["test_acc"] > 70
    assert summary["final"]["epoch"] == 4 and "time_s" in summary
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["epoch"] == 4 and len(ckpt["metrics"]) == 4
    assert {"torch", "numpy", "python", "shuffle", "method"} <= set(ckpt["rng"])
    weights = torch.load(run / "model.pt", weights_only=True)
    m = tiny_model(1)
    m.load_state_dict(weights)  # a plain state_dict
    assert not list(run.glob(".*tmp"))  # no leftovers of atomic writes


def test_lr_schedule_steps_every_lr_step_epochs(tmp_path):
    data = tiny_data(50)
    train(cfg_for(tmp_path, epochs=5, lr=0.1, lr_step=2, lr_gamma=0.5), model=tiny_model(), train_data=data)
    lrs = [r["lr"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")]
    assert lrs == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])


def test_grad_clip_bounds_each_step(tmp_path):
    """With plain SGD (no momentum) each step moves the weights by lr x (clipped gradient): at most lr x clip."""
    data = tiny_data(50)
    start = tiny_model()
    before = torch.cat([p.detach().flatten().clone() for p in start.parameters()])
    train(
        cfg_for(tmp_path, epochs=1, batch_size=50, optimizer="sgd", momentum=0.0, lr=1.0, grad_clip=1e-3),
        model=start,
        train_data=data,
    )
    after = torch.cat([p.detach().flatten() for p in start.parameters()])
    assert 0 < (after - before).norm().item() <= 1e-3 + 1e-7
    with pytest.raises(TrainingError, match="grad-clip"):
        train(cfg_for(tmp_path, grad_clip=0.0, overwrite=True), model=tiny_model(), train_data=data)


def test_eps_ramp_is_logged(tmp_path):
    data = tiny_data(50)
    train(cfg_for(tmp_path, epochs=3, eps=0.1, eps_start=0.02, eps_ramp_epochs=3), model=tiny_model(), train_data=data)
    eps = [r["eps"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")]
    assert eps == pytest.approx([0.02, 0.06, 0.1])


def test_objective_metrics_are_averaged_and_end_epoch_logged(tmp_path):
    from veritrain.training.methods.regular import Regular

    class Probe(Regular):
        name = "probe-test"
        calls = 0

        def loss(self, model, x, y, ctx):
            loss, m = super().loss(model, x, y, ctx)
            return loss, {**m, "probe": float(ctx.step % 2)}

        def end_epoch(self, model, ctx):
            Probe.calls += 1
            return {"alpha": 0.5 + ctx.epoch}

    if "probe-test" not in METHODS:
        METHODS.add("probe-test", Probe)
    train(
        cfg_for(tmp_path, epochs=2, method="probe-test", batch_size=50), model=tiny_model(), train_data=tiny_data(100)
    )
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["alpha"] for r in rows] == [0.5, 1.5]
    assert rows[0]["probe"] == pytest.approx(0.5)  # steps 0, 1 averaged


# ----------------------------------------------------------------------------- validation before any file


def test_existing_run_is_protected(tmp_path):
    data = tiny_data(50)
    cfg = cfg_for(tmp_path, epochs=1)
    train(cfg, model=tiny_model(), train_data=data)
    run = tmp_path / "run"
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(TrainingError, match="--resume"):
        train(cfg, model=tiny_model(), train_data=data)
    with pytest.raises(TrainingError, match="other options"):
        train(cfg_for(tmp_path, epochs=2, lr=0.5, resume=True), model=tiny_model(), train_data=data)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    train(cfg_for(tmp_path, epochs=1, overwrite=True), model=tiny_model(), train_data=data)


def test_nan_data_and_bad_options_fail_before_writing(tmp_path):
    x, y = tiny_data(50).tensors
    x = x.clone()
    x[3, 0, 0, 0] = float("nan")
    with pytest.raises(TrainingError, match="NaN"):
        train(cfg_for(tmp_path), model=tiny_model(), train_data=TensorDataset(x, y))
    with pytest.raises(ValueError, match="batch-size"):
        train(cfg_for(tmp_path, batch_size=0), model=tiny_model(), train_data=tiny_data(50))
    with pytest.raises(KeyError, match="training method"):
        train(cfg_for(tmp_path, method="nope"), model=tiny_model(), train_data=tiny_data(50))
    assert not (tmp_path / "run").exists()


def test_corrupt_checkpoint_is_reported_and_left_alone(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n')
    with pytest.raises(TrainingError, match="corrupt"):
        train(cfg_for(tmp_path, resume=True), model=tiny_model(), train_data=tiny_data(50))
    assert (run / "checkpoint.pt").read_bytes() == b"not a checkpoint"
    assert (run / "metrics.jsonl").read_text() == '{"epoch": 1}\n'


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_absent_is_a_clear_error():
    with pytest.raises(TrainingError, match="CUDA is not available"):
        select_device("cuda")
    with pytest.raises(TrainingError, match="CUDA"):
        select_device("cuda:1")
    assert select_device("auto").type == "cpu"
    with pytest.raises(TrainingError, match="unknown device"):
        select_device("gpu0")


# ----------------------------------------------------------------------------- kill -9 and resume

SCRIPT = textwrap.dedent(
    """
    import sys, time
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    from veritrain.training import METHODS, TrainConfig, train
    from veritrain.training.methods.regular import Regular

    class SlowRegular(Regular):
        # regular training plus method randomness (ctx.generator) and a pause, so a kill lands mid-epoch
        def loss(self, model, x, y, ctx):
            time.sleep(0.01)
            noise = torch.rand(x.shape, generator=ctx.generator) * 0.01
            return super().loss(model, (x + noise).clamp(0, 1), y, ctx)

    METHODS.add("slow-regular", SlowRegular)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(400, 1, 6, 6, generator=g)
    y = (x[:, :, :3].mean((1, 2, 3)) > x[:, :, 3:].mean((1, 2, 3))).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 2))
    cfg = TrainConfig(dataset="mnist-mini", method="slow-regular", epochs=4, batch_size=20, eps=0.0,
                      out=sys.argv[1], resume=sys.argv[2] == "resume", progress=False,
                      train_size=None, seed=3)
    train(cfg, model=model, train_data=TensorDataset(x, y), test_data=TensorDataset(x[:100], y[:100]))
    """
)


def _run(script: Path, out: Path, mode: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(script), str(out), mode], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def test_kill9_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path):
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    p_ref = _run(script, ref, "fresh")
    p = _run(script, killed, "fresh")
    # wait until epoch 2 has checkpointed, then kill -9 in the middle of epoch 3 (20 batches x >= 10 ms)
    deadline = time.time() + 60
    while time.time() < deadline:
        m = killed / "metrics.jsonl"
        if m.exists() and len(m.read_text().splitlines()) >= 2:
            break
        assert p.poll() is None, p.stderr.read().decode()
        time.sleep(0.01)
    time.sleep(0.08)
    assert p.poll() is None, "the run finished before it could be killed"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert not (killed / "summary.json").exists()
    assert load_checkpoint(killed / "checkpoint.pt")["epoch"] == 2
    # a line of the interrupted epoch would be dropped on resume; simulate a torn write too
    with open(killed / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "loss": 0.1')
    p2 = _run(script, killed, "resume")
    assert p2.wait(60) == 0, p2.stderr.read().decode()
    assert p_ref.wait(60) == 0, p_ref.stderr.read().decode()

    ref_rows, res_rows = read_jsonl(ref / "metrics.jsonl"), read_jsonl(killed / "metrics.jsonl")
    assert [r["epoch"] for r in res_rows] == [1, 2, 3, 4]
    assert stable(res_rows) == stable(ref_rows)
    w_ref = torch.load(ref / "model.pt", weights_only=True)
    w_res = torch.load(killed / "model.pt", weights_only=True)
    assert all(torch.equal(w_ref[k], w_res[k]) for k in w_ref)
    s_ref = json.loads((ref / "summary.json").read_text())
    s_res = json.loads((killed / "summary.json").read_text())
    assert s_res["resumed"] and not s_ref["resumed"]
    assert s_res["test_acc"] == s_ref["test_acc"]
    assert stable([s_res["final"]]) == stable([s_ref["final"]])


# ----------------------------------------------------------------------------- evaluation composer


def test_evaluate_tensors_vra_none_when_the_bound_engine_rejects_the_model():
    from veritrain.evaluation.evaluate import evaluate_model, evaluate_tensors
    from veritrain.evaluation.results import EvalSettings, Evaluation

    data = tiny_data(20)
    x, y = data.tensors
    model = tiny_model()
    res = evaluate_tensors(model, x, y, 0.1, attacks=[], domains=["symbolic-linear"], sound=False)
    assert res["vra"] == {"symbolic-linear": None} and res["vra_note"] and res["n"] == 20 and 0 <= res["acc"] <= 100
    json.dumps(res)
    # soundness is decided by the bound engine: an ELU network is not bounded, whatever trained it
    elu = nn.Sequential(nn.Flatten(), nn.Linear(36, 8), nn.ELU(), nn.Linear(8, 2))
    ev = evaluate_model(elu, x, y, EvalSettings(eps=0.1, attacks=["pgd"], domains=["interval"]))
    assert isinstance(ev, Evaluation) and ev.vra == {"interval": None} and "ELU" in (ev.vra_note or "")
    assert isinstance(ev.era["pgd"], float) and ev.row()["VRA interval"] == "n/a"
    res = evaluate_tensors(model, x, y, 0.0, attacks="pgd", domains="interval")
    assert res["era"] == {} and res["vra"] == {}  # eps = 0: nothing to attack or verify
    # result files of older versions held strings where numbers belong: read as None, shown as n/a
    old = Evaluation.from_dict({"acc": 90.0, "n": 10, "eps": 0.1, "era": {"pgd": 50.0, "all": 50.0}, "vra": "n/a"})
    assert old.vra == {} and old.row() == {"ACC": 90.0, "ERA pgd": 50.0, "VRA": "n/a"}
    assert Evaluation.from_dict(old.to_dict()) == old
