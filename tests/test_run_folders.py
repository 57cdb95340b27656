"""Run folders that cannot be lost or mixed, and reports that say what they mean (issue 17): --resume of a
folder without a run, the exclusive lock (live and stale owners), file modes, resolved options and versions
in config.json, alpha logged for its own epoch, train time across a resume."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from veritrain.reporting import read_jsonl
from veritrain.reporting.io import write_json
from veritrain.training import TrainConfig, TrainingError, train
from veritrain.training.run_dir import RunFiles
from veritrain.training.run_lock import RunLockedError, acquire, release, run_lock


def tiny_data(n: int = 120, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 4, 4, generator=g)
    y = (x[:, :, :2].mean((1, 2, 3)) > x[:, :, 2:].mean((1, 2, 3))).long()
    return TensorDataset(x, y)


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))


def cfg_for(out: Path, **kw) -> TrainConfig:
    base = dict(
        dataset="mnist-mini",
        epochs=2,
        batch_size=30,
        eps=0.0,
        out=str(out),
        progress=False,
        eval_attacks="",
        eval_domains="",
    )
    base.update(kw)
    return TrainConfig(**base)


def run(cfg: TrainConfig) -> dict:
    return train(cfg, model=tiny_model(), train_data=tiny_data(), test_data=tiny_data(40, 1))


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# ----------------------------------------------------------------------------- resume and lock


def test_resume_of_a_folder_without_a_run_is_an_error(tmp_path):
    """issue 17: `train --resume --out MISTYPED` silently started a fresh default run."""
    with pytest.raises(TrainingError, match="no run to resume") as e:
        run(cfg_for(tmp_path / "mistyped", resume=True))
    assert "\n" not in str(e.value)
    assert not (tmp_path / "mistyped").exists()
    # a run that never finished an epoch: config.json but no checkpoint
    folder = tmp_path / "started"
    folder.mkdir()
    (folder / "config.json").write_text("{}\n")
    with pytest.raises(TrainingError, match="--overwrite"):
        run(cfg_for(folder, resume=True))
    assert sorted(p.name for p in folder.iterdir()) == ["config.json"]


def test_lock_is_exclusive_and_stale_locks_are_taken_over(tmp_path):
    path = acquire(tmp_path, "test")
    info = json.loads(path.read_text())
    assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
    with pytest.raises(RunLockedError, match="already locked by this process"):
        acquire(tmp_path, "again")
    release(path)
    assert not path.exists()
    # a live owner (our parent process): refused, with its pid
    path.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "purpose": "training"}))
    with pytest.raises(RunLockedError, match=f"in use by process {os.getppid()}") as e:
        acquire(tmp_path, "test")
    assert "\n" not in str(e.value)
    # a dead owner: stale, taken over
    path.write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname(), "purpose": "training"}))
    with run_lock(tmp_path, "test") as p:
        assert json.loads(p.read_text())["pid"] == os.getpid()
    assert not path.exists()
    # another host: cannot tell, refused (the message says which file to delete)
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "purpose": "training"}))
    with pytest.raises(RunLockedError, match="delete"):
        acquire(tmp_path, "test")


def test_training_into_a_locked_folder_writes_nothing(tmp_path):
    """issue 17: two trainings into the same --out interleaved metrics.jsonl (epochs 1,1,2,2,3,3)."""
    folder = tmp_path / "run"
    folder.mkdir()
    lock = folder / RunFiles.LOCK
    lock.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "purpose": "training"}))
    with pytest.raises(RunLockedError):
        run(cfg_for(folder))
    assert sorted(p.name for p in folder.iterdir()) == [RunFiles.LOCK]
    lock.unlink()
    run(cfg_for(folder))
    assert [r["epoch"] for r in read_jsonl(folder / "metrics.jsonl")] == [1, 2]
    assert not lock.exists()  # released at the end


def test_two_concurrent_trainings_never_interleave(tmp_path):
    folder = tmp_path / "run"
    code = (
        "import sys, torch; from torch import nn; from torch.utils.data import TensorDataset\n"
        "from veritrain.training import TrainConfig, train\n"
        "g = torch.Generator().manual_seed(0); x = torch.rand(600, 1, 4, 4, generator=g)\n"
        "y = (x.mean((1, 2, 3)) > .5).long()\n"
        "cfg = TrainConfig(dataset='mnist-mini', epochs=3, batch_size=10, eps=0.0, out=sys.argv[1], progress=False,\n"
        "                  eval_attacks='', eval_domains='', overwrite=True)\n"
        "try:\n"
        "    train(cfg, model=nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), train_data=TensorDataset(x, y))\n"
        "except ValueError as e:\n"
        "    print(e, file=sys.stderr); sys.exit(2)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(folder)], stderr=subprocess.PIPE, env=env) for _ in range(2)
    ]
    results = [(p.wait(120), p.stderr.read().decode()) for p in procs]
    assert sorted(rc for rc, _ in results) in ([0, 0], [0, 2]), results
    for rc, err in results:
        if rc == 2:
            assert "in use by process" in err
    assert [r["epoch"] for r in read_jsonl(folder / "metrics.jsonl")] == [1, 2, 3]


# ----------------------------------------------------------------------------- what the files say


def test_run_files_are_0644_under_the_umask(tmp_path):
    """issue 17: run files were written 0600 (mkstemp) while metrics.jsonl was 0644."""
    old = os.umask(0o022)
    try:
        run(cfg_for(tmp_path / "a"))
        modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "a").iterdir()}
        assert set(modes.values()) == {0o644}, modes
        os.umask(0o077)
        write_json(tmp_path / "private.json", {})
        assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_config_json_holds_resolved_values_and_versions(tmp_path):
    """issue 17: config.json kept acc0: null, k_per_batch: null; nothing recorded the versions."""
    folder = tmp_path / "mix"
    summary = run(cfg_for(folder, method="mixtrain", eps=0.05, epochs=1, acc0=None, domain="interval"))
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["acc0"] == 95.0 and cfg["k_per_batch"] == 1 and cfg["alpha0"] == 0.8 and cfg["lr"] == 1e-3
    import veritrain

    for v in (cfg["versions"], summary["versions"], json.loads((folder / "summary.json").read_text())["versions"]):
        assert v["veritrain"] == veritrain.__version__ and v["torch"] == torch.__version__
        assert "git_commit" in v
    # the stored config still resumes (the versions entry is not an option)
    run(cfg_for(folder, method="mixtrain", eps=0.05, epochs=2, domain="interval", resume=True))


def test_alpha_is_logged_with_the_epoch_that_used_it(tmp_path):
    """issue 17: the alpha column showed the next epoch's alpha."""
    folder = tmp_path / "mix"
    run(
        cfg_for(folder, method="mixtrain", eps=0.05, epochs=3, alpha0=0.8, acc0=100.0, domain="interval", k_per_batch=2)
    )
    rows = read_jsonl(folder / "metrics.jsonl")
    assert [r["alpha"] for r in rows] == pytest.approx([0.8, 0.75, 0.7])  # acc never beats 100: down 0.05 each
    assert [r["alpha_next"] for r in rows] == pytest.approx([0.75, 0.7, 0.65])


def test_train_time_counts_every_epoch_across_a_resume(tmp_path):
    """issue 17: summary.json's train time was wrong for resumed runs."""
    folder = tmp_path / "run"
    first = run(cfg_for(folder, epochs=2))
    resumed = run(cfg_for(folder, epochs=4, resume=True))
    rows = read_jsonl(folder / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert resumed["time_s"]["train"] == pytest.approx(sum(r["epoch_time"] for r in rows))
    assert resumed["time_s"]["train"] > first["time_s"]["train"]
    assert resumed["time_s"]["train_this_process"] < resumed["time_s"]["train"] + 1.0
    assert resumed["resumed"] is True


def test_a_resume_with_no_epoch_left_still_writes_the_weights(tmp_path):
    """A resume whose checkpoint already holds every epoch (a kill between the last checkpoint and model.pt, or
    a folder copied without its weights) trains nothing but evaluates the checkpoint: its model.pt must be
    written too, equal to the checkpoint's weights."""
    folder = tmp_path / "run"
    run(cfg_for(folder, epochs=2))
    (folder / "model.pt").unlink()
    run(cfg_for(folder, epochs=2, resume=True))
    weights = torch.load(folder / "model.pt", weights_only=True)
    ckpt = torch.load(folder / "checkpoint.pt", weights_only=False)
    assert weights.keys() == ckpt["model"].keys()
    assert all(torch.equal(weights[k], ckpt["model"][k]) for k in weights)


def test_progress_bars_only_on_a_terminal(tmp_path, capfd):
    """issue 17: progress bars flooded log files when output was not a terminal; a plain line per epoch instead."""
    from veritrain.progress import on_terminal, progress_bar

    assert not on_terminal()  # pytest captures stderr
    assert progress_bar(range(3), enabled=True).disable
    run(cfg_for(tmp_path / "run", progress=True, epochs=2))
    err = capfd.readouterr().err
    assert "\r" not in err and "it/s" not in err
    assert [line.split(":")[0] for line in err.strip().splitlines()] == ["epoch 1/2", "epoch 2/2"]


def test_train_refuses_labels_that_are_not_class_indices(tmp_path):
    x, y = tiny_data().tensors
    for bad in (y.float(), torch.nn.functional.one_hot(y, 2), y.view(-1, 1)):
        with pytest.raises(TrainingError, match="labels") as e:
            train(cfg_for(tmp_path / "run"), model=tiny_model(), train_data=TensorDataset(x, bad))
        assert "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()


def test_ema_keeps_the_average_resumes_it_and_checks_its_decay(tmp_path):
    """--ema: RUN/model.pt and the final evaluation are the moving average of the weights (the checkpoint keeps
    the raw ones to train on), a resumed run continues the same average, and the decay must lie in (0, 1)."""
    from veritrain.training.config import ConfigError

    whole = tmp_path / "whole"
    run(cfg_for(whole, epochs=3, ema=0.9))
    weights = torch.load(whole / "model.pt", weights_only=True)
    ckpt = torch.load(whole / "checkpoint.pt", weights_only=False)
    averaged = {k.removeprefix("module."): v for k, v in ckpt["ema"].items() if k.startswith("module.")}
    assert weights.keys() == ckpt["model"].keys() == averaged.keys()
    assert all(torch.equal(weights[k], averaged[k]) for k in weights)
    assert not all(torch.equal(weights[k], ckpt["model"][k]) for k in weights)  # not the raw weights
    assert int(ckpt["ema"]["n_averaged"]) == 3 * 4  # one update per step: 120 images in batches of 30
    parted = tmp_path / "parted"
    run(cfg_for(parted, epochs=2, ema=0.9))
    run(cfg_for(parted, epochs=3, ema=0.9, resume=True))
    resumed = torch.load(parted / "model.pt", weights_only=True)
    assert all(torch.equal(resumed[k], weights[k]) for k in weights)
    for bad in (0.0, 1.0, float("nan")):
        with pytest.raises(ConfigError, match="--ema"):
            run(cfg_for(tmp_path / "bad", ema=bad))


def test_alpha_min_is_a_floor_of_the_rule(tmp_path):
    """--alpha-min: the rule lowers alpha to the floor and no further (acc0 100 is never beaten); outside
    [0, 1] it is an error."""
    folder = tmp_path / "floor"
    opts = dict(method="mixtrain", eps=0.05, alpha0=0.2, acc0=100.0, domain="interval", k_per_batch=2)
    run(cfg_for(folder, epochs=4, alpha_min=0.1, **opts))
    assert [r["alpha"] for r in read_jsonl(folder / "metrics.jsonl")] == pytest.approx([0.2, 0.15, 0.1, 0.1])
    with pytest.raises(ValueError, match="--alpha-min"):
        run(cfg_for(tmp_path / "bad", alpha_min=1.5, **opts))
