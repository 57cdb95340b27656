"""`--fit-budget`: the schedule fitted to the CPU time of the run's first ramp epoch, and again to that of its
first epoch past the ramp (`fit_schedule`, `Trainer.fit_to_budget`), also across a resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from veritrain.errors import ConfigError
from veritrain.reporting import read_jsonl
from veritrain.training import TrainConfig, train
from veritrain.training import loop as loop_module
from veritrain.training.schedules import budget_epochs, fit_schedule

from cli_helpers import VOLATILE
from nets import tiny_data, tiny_model

#: CPU seconds every epoch of the runs below is made to cost (the fitted epochs follow from it exactly)
EPOCH_CPU = 6.0


def cfg_for(tmp_path: Path, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        dataset="mnist-mini",
        method="ibp",
        epochs=20,
        batch_size=50,
        eps=0.05,
        eps_schedule="smooth",
        clean_epochs=1,
        eps_ramp_epochs=6,
        lr=0.02,
        lr_gamma=0.5,
        lr_milestones="14,18",
        budget_minutes=1.0,
        fit_budget=True,
        out=str(tmp_path / "run"),
        progress=False,
        eval_attacks="",
        eval_domains="interval",
        monitor_n=0,
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture
def fixed_epoch_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every epoch costs EPOCH_CPU CPU seconds, whatever the machine does."""
    run_epoch = loop_module.Trainer.run_epoch

    def fixed(self: loop_module.Trainer) -> dict[str, Any]:
        row = run_epoch(self)
        row["cpu_time"] = EPOCH_CPU
        return row

    monkeypatch.setattr(loop_module.Trainer, "run_epoch", fixed)
    monkeypatch.setattr(loop_module.Trainer, "phase_cost_ratios", lambda self: (1.0, 1.0))


def half_price_after_ramp(monkeypatch: pytest.MonkeyPatch) -> None:
    """On top of `fixed_epoch_cost`: the epochs after the eps ramp cost EPOCH_CPU / 2 (as CROWN-IBP's)."""
    run_epoch = loop_module.Trainer.run_epoch  # the fixture's: EPOCH_CPU each

    def cheaper_after_ramp(self: loop_module.Trainer) -> dict[str, Any]:
        row = run_epoch(self)
        row["cpu_time"] = EPOCH_CPU if row["epoch"] <= self.cfg.ramp_end else EPOCH_CPU / 2
        return row

    monkeypatch.setattr(loop_module.Trainer, "run_epoch", cheaper_after_ramp)


# ----------------------------------------------------------------------------- the rule


def test_fit_schedule_scales_what_lies_ahead_and_keeps_what_is_done():
    cfg = TrainConfig(epochs=60, clean_epochs=1, eps_ramp_epochs=20, lr_milestones="44,54", warmup_epochs=5)
    half = fit_schedule(cfg, 30, done=2)
    assert (half.epochs, half.clean_epochs, half.eps_ramp_epochs) == (30, 1, 10)
    assert half.lr_milestones == "22,27" and half.warmup_epochs == 3
    double = fit_schedule(cfg, 120, done=2)
    assert (double.eps_ramp_epochs, double.lr_milestones, double.warmup_epochs) == (40, "88,108", 10)
    # the ramp ends no earlier than after the next epoch; milestones past the new end are dropped
    tiny = fit_schedule(cfg, 3, done=2)
    assert tiny.eps_ramp_epochs == 2 and tiny.lr_milestones is None and tiny.lr_step == 4
    # what is behind stays: a warm-up already over is not moved
    assert fit_schedule(TrainConfig(epochs=60, warmup_epochs=1), 30, done=2).warmup_epochs == 1
    # step decay: scaled while none happened; "no decay" (a step past the end) stays no decay
    assert fit_schedule(TrainConfig(epochs=60, lr_step=10), 30, done=2).lr_step == 5
    assert fit_schedule(TrainConfig(epochs=60, lr_step=1), 30, done=2).lr_step == 1
    assert fit_schedule(TrainConfig(epochs=60, lr_step=61), 90, done=2).lr_step == 91
    with pytest.raises(ValueError, match="epochs >= 1"):
        fit_schedule(cfg, 0, done=2)


def test_budget_epochs_prices_the_ramp_and_the_epochs_after_it_apart():
    cfg = TrainConfig(epochs=60, clean_epochs=1, eps_ramp_epochs=20, lr_milestones="44,54")
    # one cost: what the rest of the budget buys at it
    assert budget_epochs(cfg, 2, 100.0, 10.0, 10.0) == 12
    # 30 epochs: ramp to epoch 11 (9 more at 10 s) + 19 at 1 s = 109 s; 31: ramp to 11, 20 at 1 s = 110 s
    assert budget_epochs(cfg, 2, 109.0, 10.0, 1.0) == 30
    assert budget_epochs(cfg, 2, 110.0, 10.0, 1.0) == 31
    assert budget_epochs(cfg, 2, 5.0, 10.0, 1.0) == 2  # not even one more epoch
    assert budget_epochs(cfg, 2, 1e9, 1e-3, 1e-3) == 20 * 60  # a mismeasured cost fits at most 20x the plan
    with pytest.raises(ValueError, match="positive"):
        budget_epochs(cfg, 2, 10.0, 0.0, 1.0)


def test_fit_budget_needs_a_budget(tmp_path):
    with pytest.raises(ConfigError, match="--fit-budget"):
        train(cfg_for(tmp_path, budget_minutes=None), model=tiny_model(), train_data=tiny_data())


# ----------------------------------------------------------------------------- a run


def test_a_run_is_fitted_once_after_its_first_ramp_epoch(tmp_path, fixed_epoch_cost):
    """60 s at 6 s per epoch: after epochs 1-2 (12 s) 8 more fit, so the 20 planned become 10 and the ramp
    and the learning-rate drops move with them; the run ends its schedule exactly at its budget."""
    data = tiny_data()
    s = train(cfg_for(tmp_path), model=tiny_model(), train_data=data, test_data=data)
    assert (s["epochs"], s["planned_epochs"], s["epochs_trained"], s["stopped_by_budget"]) == (10, 20, 10, False)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["epochs"], config["eps_ramp_epochs"], config["lr_milestones"]) == (10, 3, "7,9")
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == list(range(1, 11))
    assert rows[0]["eps"] == 0.0 and rows[3]["eps"] < 0.05 and rows[4]["eps"] == pytest.approx(0.05)
    lrs = [r["lr"] for r in rows]  # the lr an epoch trained with: halved after epochs 7 and 9
    assert lrs[:7] == [0.02] * 7 and lrs[7:9] == [0.01] * 2 and lrs[9] == pytest.approx(0.005)
    # without --fit-budget the same budget cuts the planned 20 epochs at 10, before either drop
    s_plain = train(
        cfg_for(tmp_path, fit_budget=False, out=str(tmp_path / "plain")), model=tiny_model(), train_data=data
    )
    assert (s_plain["epochs"], s_plain["planned_epochs"], s_plain["epochs_trained"]) == (20, None, 10)
    assert s_plain["stopped_by_budget"]


def test_cheaper_epochs_after_the_ramp_buy_more_epochs(tmp_path, fixed_epoch_cost, monkeypatch):
    """As CROWN-IBP after its beta ramp: later epochs at half the cost. 48 s left after epochs 1-2 buy 15
    epochs (the ramp scaled to 4 ends after epoch 5: 3 more at 6 s, then 10 at 3 s), where one cost gives 10."""
    monkeypatch.setattr(loop_module.Trainer, "phase_cost_ratios", lambda self: (1.0, 0.5))
    half_price_after_ramp(monkeypatch)
    s = train(cfg_for(tmp_path), model=tiny_model(), train_data=tiny_data())
    assert (s["epochs"], s["planned_epochs"], s["epochs_trained"], s["stopped_by_budget"]) == (15, 20, 15, False)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["eps_ramp_epochs"], config["lr_milestones"]) == (4, "10,14")


def test_a_run_priced_high_in_its_ramp_is_refitted_after_it(tmp_path, fixed_epoch_cost, monkeypatch):
    """The first fit prices every epoch at the ramp's 6 s (10 epochs, ramp ending after epoch 4); the first
    epoch past the ramp costs 3 s, so the second fit, after it, spends the 33 s left on 11 more epochs (16) and
    moves the learning-rate drops (7, 9 of 10) with them; the ramp, behind, stays."""
    half_price_after_ramp(monkeypatch)
    s = train(cfg_for(tmp_path), model=tiny_model(), train_data=tiny_data())
    assert (s["epochs"], s["planned_epochs"], s["epochs_trained"], s["stopped_by_budget"]) == (16, 20, 16, False)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["eps_ramp_epochs"], config["lr_milestones"]) == (3, "11,14")
    ckpt = loop_module.load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert ckpt["fitted"] == {"from": 20, "to": 16, "epoch": 2, "refit": 5}
    assert sum(r["cpu_time"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")) == 60.0


def test_phase_cost_ratios_leave_the_run_untouched():
    cfg = cfg_for(Path("unused"), method="crown-ibp").resolved()
    data = tiny_data()
    trainer = loop_module.Trainer(cfg, tiny_model(), data, None, torch.device("cpu"))
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    generator = trainer.method_gen.get_state()
    ramp, post = trainer.phase_cost_ratios()
    assert ramp > 0 and post > 0
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in weights.items())
    assert torch.equal(generator, trainer.method_gen.get_state())
    assert all(p.grad is None for p in trainer.model.parameters())


def test_resume_keeps_the_fitted_schedule(tmp_path, fixed_epoch_cost, monkeypatch):
    """A run killed after its fit and resumed with the options it was started with trains the fitted
    schedule: the same epochs as an uninterrupted run."""
    data = tiny_data()
    train(cfg_for(tmp_path, out=str(tmp_path / "full")), model=tiny_model(), train_data=data, test_data=data)
    fit = loop_module.Trainer.fit_to_budget

    def kill_after_epoch_4(self: loop_module.Trainer, row: dict[str, Any]) -> None:
        fit(self, row)
        if self.epoch == 5:  # epoch 5 trained but not checkpointed: killed
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(loop_module.Trainer, "fit_to_budget", kill_after_epoch_4)
        with pytest.raises(KeyboardInterrupt):
            train(cfg_for(tmp_path, out=str(tmp_path / "part")), model=tiny_model(), train_data=data)
    ckpt = loop_module.load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    assert ckpt["epoch"] == 4 and ckpt["fitted"] == {"from": 20, "to": 10, "epoch": 2}
    s = train(cfg_for(tmp_path, out=str(tmp_path / "part"), resume=True), model=tiny_model(), train_data=data)
    assert (s["epochs"], s["planned_epochs"], s["epochs_trained"]) == (10, 20, 10)
    full, part = (read_jsonl(tmp_path / d / "metrics.jsonl") for d in ("full", "part"))
    assert [{k: v for k, v in r.items() if k not in VOLATILE} for r in part] == [
        {k: v for k, v in r.items() if k not in VOLATILE} for r in full
    ]
    assert json.loads((tmp_path / "part" / "config.json").read_text())["epochs"] == 10
