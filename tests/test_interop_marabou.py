"""Marabou (an external complete verifier) checks veritrain's proofs on exported networks and properties."""

import os

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnx", reason="needs the extra veritrain[onnx]")
pytest.importorskip("onnxruntime", reason="needs the extra veritrain[onnx]")
pytest.importorskip("maraboupy", reason="needs the extra veritrain[verify]")

from veritrain.bounds import Domain  # noqa: E402
from veritrain.cli import main  # noqa: E402
from veritrain.data import load_dataset  # noqa: E402
from veritrain.interop.crosscheck import crosscheck, recheck  # noqa: E402
from veritrain.interop.vnnlib import solve  # noqa: E402

DOMAINS = ["interval", "crown-ibp", "symbolic-linear", "crown"]


def _tiny_nets():
    torch.manual_seed(0)
    fc = nn.Sequential(nn.Flatten(), nn.Linear(784, 12), nn.ReLU(), nn.Linear(12, 10)).eval()
    conv = nn.Sequential(nn.Conv2d(1, 2, 4, stride=3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 9 * 9, 10)).eval()
    return {"fc": fc, "conv": conv}


def _fit(model, x, y, steps=150):
    """A few hundred Adam steps on mnist-mini: confident enough that some samples are robust at eps 0.02."""
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def data():
    x, y = load_dataset("mnist-mini", "train").tensors
    xt, yt = load_dataset("mnist-mini", "test").tensors
    return x[:1000], y[:1000], xt[:8], yt[:8]


@pytest.mark.parametrize("name", ["fc", "conv"])
def test_marabou_agrees_with_every_domain_and_pgd(name, data, tmp_path):
    x, y, xt, yt = data
    model = _fit(_tiny_nets()[name], x, y)
    cc = crosscheck(model, xt, yt, 0.02, DOMAINS, tmp_path, timeout=120, name=name)
    row = cc.row()
    print(row)
    assert cc.failures == [] and row["soundness failures"] == 0
    assert cc.marabou_disagreements == []
    assert row["Marabou errors"] == 0
    for i, r in enumerate(cc.marabou):  # a timeout (a loaded machine) is neither robust nor a counterexample
        assert not any(cc.proved[d][i] for d in DOMAINS) or r in ("unsat", "timeout")
        assert r != "unsat" or cc.pgd_robust[i]
    assert row["Marabou RA"] <= row["PGD ERA"]
    assert row["VRA crown"] > 0  # something was proved, so the comparison means something
    for i, r in enumerate(cc.marabou):
        if r == "sat":
            assert cc.rechecks[i]["confirmed"], cc.rechecks[i]
            assert (tmp_path / "counterexamples" / f"sample{i}.npz").is_file()
    assert (tmp_path / "instances.csv").read_text().count("\n") == len(xt)


def test_veritrain_vnnlib_never_unsat_where_marabou_is_sat(data, tmp_path):
    """veritrain as a VNN-COMP verifier on its own exported instances: sat/unsat match Marabou's."""
    x, y, xt, yt = data
    model = _fit(_tiny_nets()["fc"], x, y)
    cc = crosscheck(model, xt, yt, 0.02, ["crown"], tmp_path, timeout=120)
    props = sorted((tmp_path / "vnnlib").glob("*.vnnlib"), key=lambda p: int(p.name.split("_")[1]))
    for i, prop in enumerate(props):
        v = solve(tmp_path / "model.onnx", prop, timeout=120)
        if cc.marabou[i] == "sat":
            assert v.result != "unsat"
        if cc.marabou[i] == "unsat":
            assert v.result != "sat"
        if v.result == "sat":
            assert recheck(model, xt[i], int(yt[i]), 0.02, v.x).confirmed


class _Unsound(Domain):
    """A deliberately unsound domain: claims every margin is positive."""

    name = "unsound"

    def bounds(self, ops, ball):
        k = ops[-1].out_shape[0] if ops[-1].out_shape else 1
        big = torch.full((ball.x.shape[0], k), 1e6, dtype=ball.x.dtype)
        return big, big


def test_an_unsound_domain_is_caught_with_a_saved_rechecked_counterexample(data, tmp_path):
    x, y, xt, yt = data
    model = _fit(_tiny_nets()["fc"], x, y)  # classifies most samples, few of them robust at eps 0.15
    cc = crosscheck(model, xt, yt, 0.15, ["crown", _Unsound()], tmp_path, timeout=120)
    fails = cc.failures
    assert fails and all(f["domain"] == "unsound" for f in fails)
    f = fails[0]
    assert f["confirmed"] and f["margin"] <= 1e-6
    saved = np.load(tmp_path / "counterexamples" / f"sample{f['sample']}.npz")
    assert saved["counterexample"].shape == (1, 28, 28) and bool(saved["confirmed"])


def test_cli_crosscheck_exits_nonzero_on_a_soundness_failure(data, monkeypatch, tmp_path, capsys):
    torch.manual_seed(0)
    net = tmp_path / "net.py"
    net.write_text(
        "from torch import nn\n\ndef build():\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 8), "
        "nn.ReLU(), nn.Linear(8, 10))\n"
    )
    from veritrain.models import load_model_from_file

    x, y, _, _ = data
    torch.save(_fit(load_model_from_file(f"{net}:build"), x, y).state_dict(), tmp_path / "w.pt")
    args = [
        "crosscheck",
        "--net",
        f"{net}:build",
        "--weights",
        str(tmp_path / "w.pt"),
        "--dataset",
        "mnist-mini",
        "--n",
        "4",
        "--eps",
        "0.1",
        "--domains",
        "crown",
        "--timeout",
        "20",
        "--out",
        str(tmp_path / "out"),
        "--no-progress",
    ]
    assert main(args) == 0
    assert (tmp_path / "out" / "crosscheck.md").is_file() and (tmp_path / "out" / "crosscheck.csv").is_file()
    import veritrain.interop.crosscheck as cc

    monkeypatch.setattr(cc, "verify", lambda model, ball, y, d: torch.ones(len(y), dtype=torch.bool))
    assert main(args) == 1
    assert "SOUNDNESS FAILURE" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.realdata
def test_committed_mixtrain_network_checked_by_marabou(tmp_path):
    """The MixTrain MNIST network of results/crosscheck, its exported properties solved by Marabou."""
    if not os.environ.get("VERITRAIN_DATA"):
        pytest.skip("needs VERITRAIN_DATA with MNIST")
    from pathlib import Path

    run = Path(__file__).resolve().parents[1] / "results" / "crosscheck" / "mnist-fc-mixtrain-eps0.1"
    from veritrain.models import load_model_from_file, load_weights

    model = load_weights(load_model_from_file(str(run.parent / "nets.py") + ":mnist_fc_100x2"), run / "model.pt")
    x, y = load_dataset("mnist", "test").tensors
    cc = crosscheck(model.eval(), x[:10], y[:10], 0.1, DOMAINS, tmp_path, timeout=120)
    assert cc.failures == [] and cc.marabou_disagreements == []
