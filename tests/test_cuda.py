"""The training loop and the evaluation on a GPU (marker `cuda`; they skip with a reason without CUDA).

`scripts/gpu_check.sh` runs them (`pytest -m cuda`) on a machine with a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from veritrain.device import select_device
from veritrain.evaluation.evaluate import evaluate_tensors
from veritrain.models import build_model
from veritrain.training import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
NO_CUDA = "needs a CUDA device; torch.cuda.is_available() is False on this machine"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
needs_two = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices (torchrun with NCCL)")

TINY = dict(
    net="mnist-small",
    dataset="mnist-mini",
    train_size=200,
    batch_size=50,
    eval_n=50,
    monitor_n=20,
    eval_attacks="pgd",
    eval_domains="interval,symbolic-linear",
    progress=False,
)


@pytest.mark.cuda
@needs_cuda
def test_auto_device_is_cuda_and_a_cuda_run_resumes(tmp_path: Path) -> None:
    assert select_device("auto").type == "cuda"
    run = tmp_path / "run"
    cfg = dict(TINY, method="mixtrain", domain="crown-ibp", out=str(run))  # device: the default, auto
    s = train(TrainConfig(**cfg, epochs=1))
    assert s["device"].startswith("cuda")
    s = train(TrainConfig(**cfg, epochs=2, resume=True))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all("test_vra" in r for r in rows)
    assert s["eval"]["vra"]["interval"] <= s["eval"]["era"]["pgd"] <= s["eval"]["acc"]


@pytest.mark.cuda
@needs_cuda
def test_evaluation_on_cuda_matches_cpu() -> None:
    torch.manual_seed(0)
    model = build_model("mnist-small").eval()
    x, y = torch.rand(40, 1, 28, 28), torch.randint(0, 10, (40,))
    args = dict(attacks=[], domains=["interval", "symbolic-linear", "crown"])
    cpu = evaluate_tensors(model, x, y, 0.01, **args)
    gpu = evaluate_tensors(model.cuda(), x, y, 0.01, **args)
    assert cpu["acc"] == gpu["acc"] and cpu["vra"] == gpu["vra"]


@pytest.mark.cuda
@needs_cuda
@needs_two
def test_torchrun_nccl_two_gpus(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "veritrain",
        "train",
        "--method",
        "mixtrain",
        "--domain",
        "crown-ibp",
        "--net",
        "mnist-small",
        "--dataset",
        "mnist-mini",
        "--train-size",
        "200",
        "--epochs",
        "1",
        "--eval-n",
        "20",
        "--monitor-n",
        "20",
        "--no-progress",
        "--out",
        str(tmp_path / "run"),
    ]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["device"] == "cuda:0"
