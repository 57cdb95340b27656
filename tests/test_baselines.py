"""The paper's baselines as training objectives (Section V-B): madry, wrm, wong, diffai."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from veritrain.bounds import Ball, compute_bounds, margin_spec, verified_loss
from veritrain.bounds.base import with_spec
from veritrain.bounds.ops import to_ops
from veritrain.models.layers import Residual
from veritrain.training.config import TrainConfig
from veritrain.training.methods import METHODS, StepContext
from veritrain.training.methods.madry import madry_examples
from veritrain.training.methods.wong import ProjectedDualNetwork
from veritrain.training.methods.wrm import penalised_objective, wrm_examples

from nets import three_class_images

SHAPE = (1, 4, 4)


def tiny_net(act: type[nn.Module] = nn.ReLU, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 32), act(), nn.Linear(32, 16), act(), nn.Linear(16, 3))


def conv_res_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, 2, 1),
        nn.ReLU(),
        Residual(nn.Sequential(nn.Conv2d(4, 4, 3, 1, 1), nn.ReLU(), nn.Conv2d(4, 4, 3, 1, 1))),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64, 20),
        nn.ReLU(),
        nn.Linear(20, 5),
    )


def synthetic(n: int = 60, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return three_class_images(n, SHAPE, seed)


def ctx(eps: float, seed: int = 0) -> StepContext:
    return StepContext(
        eps=eps,
        epoch=0,
        step=0,
        num_batches=1,
        generator=torch.Generator().manual_seed(seed),
        device=torch.device("cpu"),
    )


CASES = {
    "madry": dict(pgd_steps=5, pgd_step_size=0.02),
    "wrm": dict(activation="elu", wrm_steps=5, gamma=2.0),
    "wong": dict(),
    "wong-projected": dict(projections=20),
    "diffai": dict(),
    "diffai-mixed": dict(diffai_kappa=0.5),
}


@pytest.mark.parametrize("case", list(CASES))
def test_loss_decreases(case: str) -> None:
    opts = CASES[case]
    cfg = TrainConfig(method=case.split("-")[0], eps=0.05, **opts)
    net = tiny_net(nn.ELU if opts.get("activation") == "elu" else nn.ReLU)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obj = METHODS.get(cfg.method)(cfg)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, y = synthetic()
    c = ctx(0.05)
    losses = []
    for _ in range(30):
        loss, metrics = obj.loss(net, x, y, c)
        assert torch.isfinite(loss) and all(isinstance(v, float) for v in metrics.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) < 0.7 * sum(losses[:3]), losses


def test_wong_exact_equals_dual_domain() -> None:
    net = conv_res_net()
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    ball = Ball(x, 0.05)
    spec = margin_spec(y, 5)
    lower, upper = compute_bounds(net, ball, spec, "dual")
    mine_l, mine_u = ProjectedDualNetwork(None).bounds(with_spec(to_ops(net, (1, 8, 8)), spec), ball)
    torch.testing.assert_close(mine_l, lower, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mine_u, upper, atol=1e-5, rtol=1e-5)
    # the objective without projections is the verified loss of the dual domain
    obj = METHODS.get("wong")(TrainConfig(method="wong", eps=0.05))
    loss, _ = obj.loss(net, x, y, ctx(0.05))
    torch.testing.assert_close(loss, verified_loss(net, ball, y, "dual"))
    obj = METHODS.get("wong")(TrainConfig(method="wong", eps=0.3, norm="l2"))
    loss, _ = obj.loss(net, x, y, ctx(0.3))
    torch.testing.assert_close(loss, verified_loss(net, Ball(x, 0.3, "l2"), y, "dual"))


def test_wong_projection_estimate_converges() -> None:
    net = conv_res_net()
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    ball = Ball(x, 0.05)
    ops = with_spec(to_ops(net, (1, 8, 8)), margin_spec(y, 5))
    exact, _ = ProjectedDualNetwork(None).bounds(ops, ball)

    def rel_err(k: int) -> float:
        g = torch.Generator().manual_seed(0)
        est, _ = ProjectedDualNetwork(k, g).bounds(ops, ball)
        return ((est - exact).norm() / exact.norm()).item()

    e10, e1000 = rel_err(10), rel_err(1000)
    assert e1000 < e10 and e1000 < 0.1, (e10, e1000)


def test_wong_projection_gradient_flows_and_options() -> None:
    net = tiny_net()
    x, y = synthetic(12)
    obj = METHODS.get("wong")(TrainConfig(method="wong", projections=8))
    loss, _ = obj.loss(net, x, y, ctx(0.05))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    with pytest.raises(ValueError, match="linf"):
        METHODS.get("wong")(TrainConfig(method="wong", projections=8, norm="l2"))
    with pytest.raises(ValueError, match="projections"):
        METHODS.get("wong")(TrainConfig(method="wong", projections=0))


def test_wrm_inner_loop_increases_penalised_objective() -> None:
    net = tiny_net(nn.ELU)
    x, y = synthetic(30)
    gamma = 0.385
    x_adv = wrm_examples(net, x, y, gamma, steps=15)
    with torch.no_grad():
        before = penalised_objective(net, x, x, y, gamma)
        after = penalised_objective(net, x_adv, x, y, gamma)
    assert (after >= before - 1e-6).all() and after.sum() > before.sum() + 1e-3
    assert not torch.equal(x_adv, x)
    clipped = wrm_examples(net, x, y, gamma, steps=3, clip=True)
    assert clipped.min() >= 0 and clipped.max() <= 1


def test_wrm_soundness_flag_and_warning() -> None:
    assert METHODS.get("wrm")(TrainConfig(method="wrm", activation="elu")).sound is False
    with pytest.warns(UserWarning, match="elu"):
        relu = METHODS.get("wrm")(TrainConfig(method="wrm"))
    assert relu.sound is True
    with pytest.raises(ValueError, match="gamma"):
        METHODS.get("wrm")(TrainConfig(method="wrm", activation="elu", gamma=0.0))


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5)])
def test_madry_examples_in_ball_and_pixel_domain(norm: str, eps: float) -> None:
    net = tiny_net()
    x, y = synthetic(20)
    x[:5] = 0.0
    x[5:10] = 1.0
    x_adv = madry_examples(
        net, x, y, eps, steps=5, step_size=eps / 2, norm=norm, generator=torch.Generator().manual_seed(1)
    )
    d = (x_adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert (size <= eps + 1e-6).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not torch.equal(x_adv, x)
    with torch.no_grad():  # the attack raises the loss
        assert F.cross_entropy(net(x_adv), y) > F.cross_entropy(net(x), y)


def test_diffai_is_the_interval_verified_loss() -> None:
    net = tiny_net()
    x, y = synthetic(10)
    obj = METHODS.get("diffai")(TrainConfig(method="diffai", eps_ramp_epochs=0))
    loss, _ = obj.loss(net, x, y, ctx(0.05))
    torch.testing.assert_close(loss, verified_loss(net, Ball(x, 0.05), y, "interval"))


def test_diffai_kappa_ramps_with_eps() -> None:
    """kappa grows linearly over the eps-ramp steps: clean CE first, the box loss after (Gowal et al.)."""
    net = tiny_net()
    x, y = synthetic(10)
    obj = METHODS.get("diffai")(TrainConfig(method="diffai", eps_ramp_epochs=2, diffai_kappa=0.8))
    first = StepContext(
        eps=0.05, epoch=0, step=0, num_batches=5, generator=torch.Generator(), device=torch.device("cpu")
    )
    assert obj.kappa_at(first) == pytest.approx(0.92)  # ibp's kappa: the weight of the clean CE
    loss, metrics = obj.loss(net, x, y, first)
    clean, robust = F.cross_entropy(net(x), y), verified_loss(net, Ball(x, 0.05), y, "interval")
    torch.testing.assert_close(loss, 0.92 * clean + 0.08 * robust)
    later = StepContext(
        eps=0.05, epoch=3, step=15, num_batches=5, generator=torch.Generator(), device=torch.device("cpu")
    )
    assert obj.kappa_at(later) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="kappa"):
        METHODS.get("diffai")(TrainConfig(method="diffai", diffai_kappa=2.0))


@pytest.mark.parametrize(
    "method,opts",
    [
        ("madry", dict(pgd_steps=3)),
        ("wrm", dict(activation="elu", wrm_steps=3)),
        ("wong", dict(projections=10)),
        ("diffai", dict()),
    ],
)
def test_through_train(method: str, opts: dict, tmp_path) -> None:
    train = pytest.importorskip("veritrain.training.loop").train
    x, y = synthetic(40)
    act = nn.ELU if opts.get("activation") == "elu" else nn.ReLU
    cfg = TrainConfig(
        method=method,
        dataset="mnist-mini",
        epochs=2,
        batch_size=20,
        eps=0.05,
        eps_ramp_epochs=1,
        out=str(tmp_path / method),
        progress=False,
        **opts,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = train(cfg, model=tiny_net(act), train_data=TensorDataset(x, y))
    assert summary["method"] == method and summary["sound"] == (method != "wrm")
    assert len(summary["final"]) > 0 and (tmp_path / method / "summary.json").exists()
