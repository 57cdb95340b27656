"""Certified-training methods (ibp, crown-ibp, sabr, mtl-ibp), MixTrain's --batch-domain, the eps schedules,
the CPU budget and the frontier."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from veritrain.bounds import Ball, margin_lower, verified_loss
from veritrain.training import TrainConfig
from veritrain.training.methods import METHODS, StepContext
from veritrain.training.methods.ibp import shi_init, shi_regulariser
from veritrain.training.schedules import StepSchedule, eps_at_epoch, make_scheduler, smooth_ramp

from nets import three_class_images

SHAPE = (1, 6, 6)


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, 1, 1), nn.ReLU(), nn.Flatten(), nn.Linear(144, 16), nn.ReLU(), nn.Linear(16, 3)
    )


def synthetic(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return three_class_images(n, SHAPE, seed)


def ctx(eps: float, step: int = 10**6, num_batches: int = 10, seed: int = 0) -> StepContext:
    """A step far past the ramp by default (kappa and beta at their end values)."""
    return StepContext(
        eps=eps,
        epoch=step // num_batches,
        step=step,
        num_batches=num_batches,
        generator=torch.Generator().manual_seed(seed),
        device=torch.device("cpu"),
    )


NEW = {
    "ibp": {},
    "ibp-shi": dict(ibp_init=True, bound_reg=0.5),
    "crown-ibp": {},
    "sabr": {},
    "mtl-ibp": {},
    "mixtrain-batch": dict(batch_domain="interval", k_per_batch=2, domain="symbolic-linear"),
    "mixtrain-crown": dict(batch_domain="crown-ibp", k_per_batch=0),
}


@pytest.mark.parametrize("case", list(NEW))
def test_loss_decreases(case: str) -> None:
    method = case.split("-")[0] if case.startswith(("ibp", "mixtrain")) else case
    cfg = TrainConfig(method=method, eps=0.05, eps_ramp_epochs=0, dataset="mnist-mini", **NEW[case]).resolved()
    net = tiny_net()
    obj = METHODS.get(method)(cfg)
    obj.prepare(net, torch.Generator().manual_seed(0))
    x, y = synthetic(30)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = None
    for i in range(30):
        loss, metrics = obj.loss(net, x, y, ctx(0.05, seed=i))
        assert torch.isfinite(loss) and all(math.isfinite(v) for v in metrics.values())
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first


def test_ibp_at_kappa_zero_is_the_interval_verified_loss() -> None:
    net, (x, y) = tiny_net(), synthetic(12)
    obj = METHODS.get("ibp")(TrainConfig(method="ibp", kappa_start=0.0, kappa_end=0.0))
    loss, _ = obj.loss(net, x, y, ctx(0.05))
    torch.testing.assert_close(loss, verified_loss(net, Ball(x, 0.05), y, "interval"))


def test_kappa_ramps_per_step_and_eps_zero_is_clean() -> None:
    net, (x, y) = tiny_net(), synthetic(12)
    obj = METHODS.get("ibp")(TrainConfig(method="ibp", eps_ramp_epochs=2, clean_epochs=1))
    assert obj.kappa_at(ctx(0.0, step=5)) == 1.0  # clean epoch: the ramp has not started
    assert obj.kappa_at(ctx(0.01, step=10 + 9)) == pytest.approx(1.0 - 0.5 * 0.5)  # half-way through
    assert obj.kappa_at(ctx(0.05, step=10 + 25)) == pytest.approx(0.5)  # Gowal et al.'s end value
    loss, _ = obj.loss(net, x, y, ctx(0.0, step=0))
    torch.testing.assert_close(loss, F.cross_entropy(net(x), y))
    with pytest.raises(ValueError, match="kappa-end"):
        METHODS.get("ibp")(TrainConfig(method="ibp", kappa_end=1.5))


def test_crown_ibp_beta_mixes_the_two_bounds() -> None:
    net, (x, y) = tiny_net(), synthetic(12)
    base = dict(method="crown-ibp", kappa_start=0.0, kappa_end=0.0, eps_ramp_epochs=0)
    ball = Ball(x, 0.05)
    for beta, want in ((1.0, verified_loss(net, ball, y, "crown-ibp")), (0.0, verified_loss(net, ball, y, "interval"))):
        obj = METHODS.get("crown-ibp")(TrainConfig(**base, beta_start=beta, beta_end=beta))
        loss, _ = obj.loss(net, x, y, ctx(0.05))
        torch.testing.assert_close(loss, want)
    # CROWN-IBP is never looser than IBP, so a beta mix is never looser either
    assert (margin_lower(net, ball, y, "crown-ibp") >= margin_lower(net, ball, y, "interval") - 1e-6).all()


def test_sabr_box_lies_inside_the_ball_and_is_tighter() -> None:
    net, (x, y) = tiny_net(), synthetic(12)
    obj = METHODS.get("sabr")(TrainConfig(method="sabr", sabr_lambda=0.3, adv_steps=5))
    lower, _, small = obj.robust_lower(net, x, y, net(x), ctx(0.1))
    lo, hi = small.box()
    big_lo, big_hi = Ball(x, 0.1).box()
    assert (lo >= big_lo - 1e-7).all() and (hi <= big_hi + 1e-7).all()
    assert (lower >= margin_lower(net, Ball(x, 0.1), y, "interval") - 1e-5).all()
    with pytest.raises(ValueError, match="sabr-lambda"):
        METHODS.get("sabr")(TrainConfig(method="sabr", sabr_lambda=1.5))


def test_mtl_ibp_interpolates_adversarial_and_verified() -> None:
    net, (x, y) = tiny_net(), synthetic(12)
    one = METHODS.get("mtl-ibp")(TrainConfig(method="mtl-ibp", mtl_alpha=1.0, kappa_end=0.0))
    loss, _ = one.loss(net, x, y, ctx(0.05))
    torch.testing.assert_close(loss, verified_loss(net, Ball(x, 0.05), y, "interval"))
    zero = METHODS.get("mtl-ibp")(TrainConfig(method="mtl-ibp", mtl_alpha=0.0, kappa_end=0.0, adv_steps=5))
    adv, _ = zero.loss(net, x, y, ctx(0.05))
    assert F.cross_entropy(net(x), y) <= adv + 1e-6 <= loss + 1e-6  # clean <= adversarial <= verified


def test_mixtrain_batch_domain_keeps_the_tighter_bound_on_the_k_samples() -> None:
    net, (x, y) = tiny_net(), synthetic(12)
    common = dict(method="mixtrain", dataset="mnist-mini", alpha=1.0, batch_domain="interval", eps_ramp_epochs=0)
    with_tight = METHODS.get("mixtrain")(TrainConfig(**common, k_per_batch=12, domain="symbolic-linear"))
    without = METHODS.get("mixtrain")(TrainConfig(**common, k_per_batch=0))
    loose, _ = without.loss(net, x, y, ctx(0.05))
    tight, metrics = with_tight.loss(net, x, y, ctx(0.05))
    torch.testing.assert_close(loose, verified_loss(net, Ball(x, 0.05), y, "interval"))
    assert tight <= loose + 1e-6 and "verified" in metrics
    with pytest.raises(ValueError, match="batch-domain"):
        METHODS.get("mixtrain")(TrainConfig(method="mixtrain", dataset="mnist-mini", batch_domain="symbolic"))


def test_mixtrain_tight_weight_is_eqn8_estimate_of_the_tight_loss() -> None:
    """--tight-weight w: (1 - w) * batch mean + w * mean over the k' samples of the (tightened) margin CE."""
    net, (x, y) = tiny_net(), synthetic(12)
    common = dict(method="mixtrain", dataset="mnist-mini", alpha=1.0, batch_domain="interval", eps_ramp_epochs=0)
    ball = Ball(x, 0.05)
    lower = torch.maximum(margin_lower(net, ball, y, "interval"), margin_lower(net, ball, y, "symbolic-linear"))
    per_sample = F.cross_entropy(-lower, y, reduction="none")
    for w in (0.0, 0.3, 1.0):
        obj = METHODS.get("mixtrain")(TrainConfig(**common, k_per_batch=3, domain="symbolic-linear", tight_weight=w))
        c = ctx(0.05)
        idx = torch.randperm(12, generator=torch.Generator().manual_seed(0))[:3]  # the draw `choose` makes
        loss, _ = obj.loss(net, x, y, c)
        loose = F.cross_entropy(-margin_lower(net, ball, y, "interval"), y, reduction="none")
        batch_mean = loose.index_put((idx,), per_sample[idx]).mean()
        torch.testing.assert_close(loss, (1 - w) * batch_mean + w * per_sample[idx].mean())
    for bad, match in (
        (dict(tight_weight=0.5, batch_domain=None), "needs --batch-domain"),
        (dict(tight_weight=2.0), r"\[0, 1\]"),
    ):
        with pytest.raises(ValueError, match=match):
            METHODS.get("mixtrain")(TrainConfig(**{**common, **bad}))


def test_mixtrain_batch_share_bounds_a_uniform_share_holding_the_tight_samples() -> None:
    """--batch-share f: the batch domain bounds ceil(f * batch) samples, the k' tight ones first and the rest a
    uniform draw of the others; the verified loss is the CE over that share (Eqn. 8's estimate of the batch's)."""
    net, (x, y) = tiny_net(), synthetic(12)
    common = dict(method="mixtrain", dataset="mnist-mini", alpha=1.0, batch_domain="interval", eps_ramp_epochs=0)
    obj = METHODS.get("mixtrain")(TrainConfig(**common, k_per_batch=2, domain="symbolic-linear", batch_share=0.4))
    g = torch.Generator().manual_seed(0)  # the draws `choose`, then `share`, make
    idx = torch.randperm(12, generator=g)[:2]
    perm = torch.randperm(12, generator=g)
    share = torch.cat([idx, perm[~torch.isin(perm, idx)]])[:5]
    assert len(set(share.tolist())) == 5
    ball = Ball(x[share], 0.05)
    lower = margin_lower(net, ball, y[share], "interval")
    tight = margin_lower(net, Ball(x[idx], 0.05), y[idx], "symbolic-linear")
    lower[:2] = torch.maximum(lower[:2], tight)
    loss, metrics = obj.loss(net, x, y, ctx(0.05))
    torch.testing.assert_close(loss, F.cross_entropy(-lower, y[share]))
    # k' = 0: a share of the batch under the batch domain alone
    obj = METHODS.get("mixtrain")(TrainConfig(**common, k_per_batch=0, batch_share=0.25))
    g = torch.Generator().manual_seed(0)
    torch.randperm(12, generator=g)  # `choose` draws its k' = 0 samples
    share = torch.randperm(12, generator=g)[:3]
    loss, _ = obj.loss(net, x, y, ctx(0.05))
    torch.testing.assert_close(
        loss, F.cross_entropy(-margin_lower(net, Ball(x[share], 0.05), y[share], "interval"), y[share])
    )
    for bad, match in (
        (dict(batch_share=0.5, batch_domain=None), "needs --batch-domain"),
        (dict(batch_share=0.0), r"\(0, 1\]"),
        (dict(batch_share=1.5), r"\(0, 1\]"),
    ):
        with pytest.raises(ValueError, match=match):
            METHODS.get("mixtrain")(TrainConfig(**{**common, **bad}))


def test_shi_init_and_regulariser() -> None:
    net = tiny_net()
    last = net[-1].weight.clone()
    shi_init(net, torch.Generator().manual_seed(0))
    conv, fc = net[0], net[3]
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 * math.pi) / 9, rel=0.3)
    assert fc.weight.std().item() == pytest.approx(math.sqrt(2 * math.pi) / 144, rel=0.1)
    assert (conv.bias == 0).all() and torch.equal(net[-1].weight, last)
    from veritrain.bounds.interval import interval_preactivations

    x, _ = synthetic(8)
    ball = Ball(x, 0.1)
    _, _, pre = interval_preactivations(net, ball)
    reg = shi_regulariser(ball, pre)
    assert torch.isfinite(reg) and reg >= 0
    reg.backward()  # differentiable in the weights
    assert net[0].weight.grad is not None


def test_step_schedules() -> None:
    assert smooth_ramp(0.0) == 0.0 and smooth_ramp(1.0) == pytest.approx(1.0)
    ps = [i / 100 for i in range(101)]
    vals = [smooth_ramp(p) for p in ps]
    assert all(b >= a for a, b in zip(vals, vals[1:]))  # monotone, continuous at the joint
    assert abs(smooth_ramp(0.25 + 1e-9) - smooth_ramp(0.25 - 1e-9)) < 1e-6
    paper = StepSchedule(0.3, 0.01, 10, 7)
    assert [paper.eps_at(e, e * 7) for e in range(12)] == [eps_at_epoch(e, 0.3, 0.01, 10) for e in range(12)]
    lin = StepSchedule(0.2, None, 2, 10, "linear", clean_epochs=1)
    assert lin.eps_at(0, 9) == 0.0 and lin.eps_at(1, 10) == 0.0
    assert lin.eps_at(1, 20) == pytest.approx(0.1) and lin.eps_at(5, 50) == pytest.approx(0.2)
    assert lin.progress(9) == 0.0 and lin.progress(29) == 1.0


def test_lr_milestones() -> None:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = make_scheduler(opt, TrainConfig(lr_milestones="2,3", lr_gamma=0.1))
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1.0, 1.0, 0.1, 0.01])
    with pytest.raises(ValueError, match="lr-milestones"):
        make_scheduler(opt, TrainConfig(lr_milestones="3,2"))


def test_budget_stops_training_and_ibp_trains_end_to_end(tmp_path) -> None:
    from veritrain.training import train

    x, y = synthetic(60)
    cfg = TrainConfig(
        method="ibp",
        dataset="mnist-mini",
        epochs=50,
        batch_size=20,
        eps=0.05,
        eps_ramp_epochs=2,
        eps_schedule="smooth",
        clean_epochs=1,
        ibp_init=True,
        bound_reg=0.5,
        l1_reg=1e-5,
        budget_minutes=1e-6,
        lr_milestones="2",
        out=str(tmp_path / "run"),
        progress=False,
    )
    summary = train(cfg, model=tiny_net(), train_data=TensorDataset(x, y))
    assert summary["epochs_trained"] == 1 and summary["stopped_by_budget"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["cpu_time"] > 0


def test_frontier_scales_the_recipes() -> None:
    from veritrain.experiments.frontier import RECIPES, SETTINGS, epochs_for_budget, scaled_config

    setting = SETTINGS["mnist-0.3"]
    cfg = scaled_config(RECIPES["ibp"], setting, 30)
    assert cfg.eps_ramp_epochs == 10 and cfg.clean_epochs == 1 and cfg.lr_milestones == "22,27"
    paper = scaled_config(RECIPES["mixtrain-paper"], setting, 60)
    assert paper.eps_ramp_epochs == 10 and paper.lr_step == 5 and paper.acc0 == setting.acc0
    short = [epochs_for_budget(RECIPES["ibp"], setting, m, (0.04, 0.02, 600)) for m in (1, 5, 20)]
    assert short[0] >= 1 and short == sorted(short) and short[2] > short[0]


def test_frontier_collects_every_finished_run(tmp_path) -> None:
    from veritrain.experiments.frontier import collect_rows, write_frontier

    for name, vra in (
        ("ibp-4m", {"crown": 70.0, "symbolic-linear": 71.0, "any": 72.0}),
        ("mixtrain-8m", {"crown": 80.0}),
        ("unknown-4m", {"crown": 1.0}),
    ):
        run = tmp_path / name
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"epochs": 5}))
        (run / "summary.json").write_text(
            json.dumps(
                {
                    "test_acc": 95.0,
                    "epochs_trained": 5,
                    "train_cpu_s": 120.0,
                    "eval": {"n": 500, "vra": vra, "era": {"pgd": 90.0, "all": 90.0}},
                }
            )
        )
    (tmp_path / "sabr-4m").mkdir()  # started, not finished: not a row
    rows = collect_rows("mnist-0.3", tmp_path)
    assert [(r.recipe, r.budget_min, r.vra, r.vra_domain) for r in rows] == [
        ("mixtrain", 8.0, 80.0, "crown"),
        ("ibp", 4.0, 72.0, "any"),
    ]
    assert rows[0].cpu_min == 2.0 and rows[0].era == 90.0
    write_frontier(rows, tmp_path)
    assert (tmp_path / "frontier.md").read_text().count("\n") == 4 and (tmp_path / "frontier.csv").exists()
