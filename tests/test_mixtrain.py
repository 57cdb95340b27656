"""MixTrain objective (Section IV): sample counts (Eqn. 8), mixed loss (Eqn. 9), dynamic alpha (Section V-A)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from veritrain.bounds import Ball, verified_loss
from veritrain.training.config import TrainConfig
from veritrain.training.methods.base import METHODS, EpochContext, StepContext
from veritrain.training.methods.mixtrain import MixTrain, SamplePlan, update_alpha


def tiny_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))


def data(n: int = 60, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = (0.2 * torch.rand(n, 1, 4, 4, generator=g) + 0.25 * y.view(-1, 1, 1, 1)).clamp(0, 1)
    return x, y


def cfg(**kw) -> TrainConfig:
    base = dict(method="mixtrain", dataset="mnist", domain="interval", eps=0.05)
    base.update(kw)
    return TrainConfig(**base)


def ctx(
    epoch: int = 0, step: int = 0, num_batches: int = 1, gen: torch.Generator | None = None, eps: float = 0.05
) -> StepContext:
    return StepContext(
        eps=eps,
        epoch=epoch,
        step=step,
        num_batches=num_batches,
        generator=gen if gen is not None else torch.Generator().manual_seed(1),
        device=torch.device("cpu"),
    )


def test_registered():
    assert METHODS.get("mixtrain") is MixTrain


# ------------------------------------------------------------------ Eqn. 8: how many samples per batch
@pytest.mark.parametrize("k,num_batches", [(17, 7), (3, 10), (1, 4), (20, 5), (1000, 1200)])
def test_k_per_epoch_is_exact_and_spread(k, num_batches):
    obj = MixTrain(cfg(k=k))
    g = torch.Generator().manual_seed(3)
    for epoch in range(2):
        sizes = [obj.choose(50, ctx(epoch, num_batches=num_batches, gen=g)).numel() for _ in range(num_batches)]
        assert sum(sizes) == k
        assert set(sizes) <= {k // num_batches, k // num_batches + 1}


@pytest.mark.parametrize("option", ["k", "k_per_batch"])
def test_zero_sound_samples_is_an_error_not_regular_training(option):
    """issue 17: --k-per-batch 0 silently trained as regular."""
    with pytest.raises(ValueError, match="--method regular"):
        MixTrain(cfg(**{option: 0}))


def test_k_short_last_batch_passes_deficit_on():
    plan = SamplePlan(3, 25, 1, torch.Generator().manual_seed(0))  # shares 9, 8, 8 (remainder off the last)
    assert plan.counts is not None and sum(plan.counts) == 25 and plan.counts[-1] == 8
    assert [plan.take(10), plan.take(10), plan.take(5)] in ([9, 8, 5], [8, 9, 5])
    # the last batch alone can be short: a short middle batch owes its deficit to the next one
    plan = SamplePlan(3, 24, 1, torch.Generator().manual_seed(0))
    assert [plan.take(10), plan.take(3), plan.take(10)] == [8, 3, 10]


def test_k_per_batch_and_distinct_indices():
    obj = MixTrain(cfg(k_per_batch=4))
    g = torch.Generator().manual_seed(0)
    for step in range(5):
        idx = obj.choose(10, ctx(step=step, num_batches=5, gen=g))
        assert idx.numel() == 4 and idx.unique().numel() == 4 and int(idx.max()) < 10
    assert MixTrain(cfg()).choose(50, ctx()).numel() == 1  # default k' = 1
    assert MixTrain(cfg(k_per_batch=80)).choose(50, ctx()).numel() == 50  # at most the batch


def test_counting_through_loss_and_end_epoch():
    x, y = data(60)
    obj, model = MixTrain(cfg(k=7)), tiny_net()
    g = torch.Generator().manual_seed(0)
    for b in range(6):
        obj.loss(model, x[b * 10 : (b + 1) * 10], y[b * 10 : (b + 1) * 10], ctx(step=b, num_batches=6, gen=g))
    out = obj.end_epoch(model, EpochContext(0.05, 0, TensorDataset(x, y), g, torch.device("cpu")))
    assert out["verified_samples"] == 7


def test_bad_options():
    with pytest.raises(ValueError, match="not both"):
        MixTrain(cfg(k=10, k_per_batch=1))
    with pytest.raises(ValueError, match="percentage"):
        MixTrain(cfg(acc0=0.97))
    with pytest.raises(ValueError, match="percentage"):
        MixTrain(cfg(acc0=101))
    with pytest.raises(ValueError, match="alpha"):
        MixTrain(cfg(alpha=1.5))
    with pytest.raises(KeyError, match="bound domain"):
        MixTrain(cfg(domain="nope"))
    with pytest.raises(ValueError, match="exceed"):
        MixTrain(cfg(k=100)).choose(10, ctx(num_batches=3))


# ------------------------------------------------------------------ Eqn. 9
@pytest.mark.parametrize("alpha", [0.3, 0.5, 1.0])
def test_loss_is_the_mixture_on_the_chosen_samples(alpha):
    x, y = data(20)
    model = tiny_net()
    obj = MixTrain(cfg(alpha=alpha, k_per_batch=3))
    g = torch.Generator().manual_seed(5)
    twin = torch.Generator().manual_seed(5)
    loss, m = obj.loss(model, x, y, ctx(gen=g, eps=0.07))
    idx = torch.randperm(20, generator=twin)[:3]  # the same draw, independently
    ce = F.cross_entropy(model(x), y)
    ver = verified_loss(model, Ball(x[idx], 0.07), y[idx], "interval")
    assert torch.allclose(loss, (1 - alpha) * ce + alpha * ver, atol=1e-6)
    assert m["regular_loss"] == pytest.approx(ce.item(), abs=1e-6)
    assert m["verified_loss"] == pytest.approx(ver.item(), abs=1e-6)
    assert m["alpha"] == alpha


def test_alpha_zero_is_exactly_regular_training():
    x, y = data(20)
    model = tiny_net()
    loss, m = MixTrain(cfg(alpha=0.0, k_per_batch=5)).loss(model, x, y, ctx())
    assert torch.equal(loss, F.cross_entropy(model(x), y))
    assert math.isfinite(m["verified_loss"])  # still logged


def test_gradient_only_through_the_chosen_samples():
    x, y = data(10)
    model = tiny_net()
    xg = x.clone().requires_grad_(True)
    obj = MixTrain(cfg(alpha=1.0, k_per_batch=2))
    g, twin = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    loss, _ = obj.loss(model, xg, y, ctx(gen=g))
    loss.backward()
    idx = torch.randperm(10, generator=twin)[:2]
    touched = (xg.grad.flatten(1).abs().sum(1) > 0).nonzero().flatten()
    assert set(touched.tolist()) <= set(idx.tolist())


def test_symbolic_linear_default_domain_runs():
    x, y = data(10)
    loss, m = MixTrain(cfg(domain="symbolic-linear", alpha=0.5)).loss(tiny_net(), x, y, ctx())
    loss.backward()
    assert math.isfinite(m["verified_loss"]) and m["verified_loss"] >= 0


def test_few_steps_decrease_the_mixed_loss():
    x, y = data(40)
    model = tiny_net()
    obj = MixTrain(cfg(alpha=0.5, k_per_batch=40, eps=0.05))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    g = torch.Generator().manual_seed(0)
    first = None
    for step in range(40):
        loss, _ = obj.loss(model, x, y, ctx(step=step, num_batches=40, gen=g))
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first


# ------------------------------------------------------------------ Section V-A: dynamic alpha
def test_update_rule():
    assert update_alpha(0.8, 99.0, 95.0, 0.05) == pytest.approx(0.85)
    assert update_alpha(0.8, 90.0, 95.0, 0.05) == pytest.approx(0.75)
    assert update_alpha(0.8, 95.0, 95.0, 0.05) == pytest.approx(0.75)  # acc <= acc0 lowers alpha
    assert update_alpha(0.98, 100.0, 50.0, 0.05) == 1.0
    assert update_alpha(0.02, 0.0, 50.0, 0.05) == 0.0
    assert update_alpha(0.12, 0.0, 50.0, 0.05, low=0.1) == pytest.approx(0.1)  # --alpha-min: never below it
    assert update_alpha(0.1, 99.0, 50.0, 0.05, low=0.1) == pytest.approx(0.15)
    a = 0.8
    for _ in range(16):
        a = update_alpha(a, 0.0, 50.0, 0.05)
    assert a == 0.0


def _epoch(obj: MixTrain, model: nn.Module, n: int = 60) -> dict:
    x, y = data(n)
    return obj.end_epoch(
        model, EpochContext(0.05, 0, TensorDataset(x, y), torch.Generator().manual_seed(0), torch.device("cpu"))
    )


def test_end_epoch_moves_alpha_by_subsample_accuracy():
    model = tiny_net()
    hi = MixTrain(cfg(alpha0=0.8, acc0=0.0, acc_subsample=30))  # any accuracy beats 0 ... unless it is 0
    lo = MixTrain(cfg(alpha0=0.8, acc0=100.0, acc_subsample=30))  # nothing beats 100%
    out_lo = _epoch(lo, model)
    assert out_lo["alpha_next"] == pytest.approx(0.75) and out_lo["alpha"] == 0.8  # logged: the epoch's own
    out_hi = _epoch(hi, model)
    assert out_hi["alpha_next"] == pytest.approx(0.85 if out_hi["subsample_acc"] > 0 else 0.75)
    assert 0 <= out_hi["subsample_acc"] <= 100
    assert model.training  # mode restored


def test_subsample_accuracy_is_measured_in_eval_mode_on_the_subsample():
    x, y = data(50)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3), nn.Dropout(p=0.999))
    obj = MixTrain(cfg(acc_subsample=20))
    acc = obj.subsample_accuracy(model, TensorDataset(x, y), torch.Generator().manual_seed(0), torch.device("cpu"))
    idx = torch.randperm(50, generator=torch.Generator().manual_seed(0))[:20]
    model.eval()
    assert acc == pytest.approx(100.0 * (model(x[idx]).argmax(1) == y[idx]).float().mean().item())


def test_fixed_alpha_does_not_move():
    obj = MixTrain(cfg(alpha=0.5, acc0=100.0))
    assert _epoch(obj, tiny_net())["alpha"] == 0.5 and obj.alpha == 0.5


def test_warmup_epochs_are_regular_training_and_freeze_alpha():
    model = tiny_net()
    x, y = data(20)
    obj = MixTrain(cfg(alpha0=0.8, acc0=100.0, warmup_epochs=2, k_per_batch=5))
    for epoch in range(2):  # warm-up: the loss is the batch cross-entropy, alpha stays at alpha0
        loss, m = obj.loss(model, x, y, ctx(epoch))
        assert loss.item() == pytest.approx(F.cross_entropy(model(x), y).item())
        assert m["alpha"] == 0.0 and "verified_loss" in m  # still logged
        out = obj.end_epoch(
            model, EpochContext(0.05, epoch, TensorDataset(x, y), torch.Generator().manual_seed(0), torch.device("cpu"))
        )
        assert out["alpha"] == 0.0 and out["alpha_next"] == 0.8 and obj.alpha == 0.8  # logged: the alpha used
    loss, m = obj.loss(model, x, y, ctx(2))  # then Eqn. 9 with alpha0, and alpha moves
    assert m["alpha"] == 0.8 and loss.item() != pytest.approx(F.cross_entropy(model(x), y).item())
    out = obj.end_epoch(
        model, EpochContext(0.05, 2, TensorDataset(x, y), torch.Generator().manual_seed(0), torch.device("cpu"))
    )
    assert out["alpha"] == 0.8 and out["alpha_next"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="warmup_epochs"):
        MixTrain(cfg(warmup_epochs=-1))


def test_default_alpha0_and_acc0_per_dataset():
    assert MixTrain(cfg(dataset="mnist")).alpha == 0.8
    assert MixTrain(cfg(dataset="cifar10")).alpha == 0.5
    assert MixTrain(cfg(dataset="mnist")).acc0 == 95.0
    assert MixTrain(cfg(dataset="cifar10")).acc0 == 65.0
    assert MixTrain(cfg(dataset="cifar10", acc0=70)).acc0 == 70.0


def test_state_dict_round_trip():
    x, y = data(20)
    obj = MixTrain(cfg(acc0=100.0, k=5))
    _epoch(obj, tiny_net())
    obj.loss(tiny_net(), x[:10], y[:10], ctx(epoch=1, num_batches=2))
    state = obj.state_dict()
    other = MixTrain(cfg(acc0=100.0, k=5))
    other.load_state_dict(state)
    assert other.alpha == pytest.approx(0.75) and other.state_dict() == state
    # the rest of the epoch continues the restored plan: 5 samples in all
    g = torch.Generator().manual_seed(9)
    assert obj.choose(10, ctx(epoch=1, num_batches=2, gen=g)).numel() == 5 - state["verified_count"]
    torch.save(state, buf := __import__("io").BytesIO())
    buf.seek(0)
    assert torch.load(buf, weights_only=True) == state


def test_through_the_shared_loop(tmp_path):
    loop = pytest.importorskip("veritrain.training.loop")
    if not hasattr(loop, "Trainer"):
        pytest.skip("the shared loop has no Trainer")
    x, y = data(40)
    c = cfg(
        epochs=2,
        batch_size=10,
        k=3,
        acc0=0.0,
        out=str(tmp_path / "run"),
        progress=False,
        eps_start=0.01,
        eps_ramp_epochs=2,
    ).resolved()
    trainer = loop.Trainer(c, tiny_net(), TensorDataset(x, y), None, torch.device("cpu"))
    trainer.fit()
    rows = trainer.metrics
    assert len(rows) == 2 and rows[0]["verified_samples"] == 3
    assert {"alpha", "alpha_next", "subsample_acc", "regular_loss", "verified_loss", "eps"} <= set(rows[0])
    assert rows[1]["alpha"] == rows[0]["alpha_next"]  # each row logs the alpha its epoch was trained with
    assert rows[0]["alpha"] == c.alpha0


def test_alpha_after_ramp_holds_alpha0_until_eps_is_reached():
    model = tiny_net()
    x, y = data(20)
    obj = MixTrain(cfg(alpha0=0.5, acc0=100.0, alpha_after_ramp=True, clean_epochs=1, eps_ramp_epochs=3, k_per_batch=5))
    assert obj.first_rule_epoch == 3  # epochs 0 (clean), 1-3 (ramp): the rule first moves alpha after epoch 3
    for epoch in range(4):
        obj.loss(model, x, y, ctx(epoch))
        out = obj.end_epoch(
            model, EpochContext(0.05, epoch, TensorDataset(x, y), torch.Generator().manual_seed(0), torch.device("cpu"))
        )
        assert out["alpha"] == 0.5
        assert out["alpha_next"] == (0.5 if epoch < 3 else pytest.approx(0.45))  # acc0 = 100 is never beaten
    assert MixTrain(cfg(alpha_after_ramp=True, warmup_epochs=6, eps_ramp_epochs=3)).first_rule_epoch == 6
    assert MixTrain(cfg(eps_ramp_epochs=3)).first_rule_epoch == 0  # the paper: from the first epoch
