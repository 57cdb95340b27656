"""Per-epoch test metrics on a fixed subset, the plot of them, and the optional TensorBoard log (issue 16)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from veritrain.cli import main
from veritrain.errors import ConfigError
from veritrain.training import TrainConfig, train
from veritrain.training.monitor import TensorBoardLog, monitor_domain
from veritrain.training.methods import METHODS

TINY = dict(
    net="mnist-small",
    dataset="mnist-mini",
    train_size=100,
    batch_size=50,
    epochs=2,
    eval_n=20,
    eval_attacks="pgd",
    eval_domains="interval",
    progress=False,
    device="cpu",
)


def test_every_epoch_logs_acc_era_vra_on_a_fixed_test_subset(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(TrainConfig(**TINY, method="mixtrain", domain="crown-ibp", monitor_n=30, out=str(run)))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        assert r["test_n"] == 30 and 0 <= r["test_vra"] <= r["test_era"] <= r["test_acc"] <= 100
    pytest.importorskip("matplotlib")
    from veritrain.reporting.plots import PANEL_PARTS, plot_metrics

    assert PANEL_PARTS["test_acc"] == ("test_era", "test_vra")
    assert plot_metrics(run).stat().st_size > 0


def test_monitor_off_and_its_domain(tmp_path: Path) -> None:
    train(TrainConfig(**{**TINY, "epochs": 1}, method="regular", monitor_n=0, out=str(tmp_path / "r")))
    row = json.loads((tmp_path / "r" / "metrics.jsonl").read_text())
    assert "test_acc" not in row
    cfg = TrainConfig(**TINY, method="mixtrain", domain="symbolic")
    assert monitor_domain(cfg, METHODS.get("mixtrain")(cfg)) == "symbolic"  # the training domain
    cfg = TrainConfig(**TINY, method="regular")
    assert monitor_domain(cfg, METHODS.get("regular")(cfg)) == "interval"  # none: the first eval domain
    cfg = TrainConfig(**TINY, method="crown-ibp")
    assert monitor_domain(cfg, METHODS.get("crown-ibp")(cfg)) == "crown-ibp"


def test_tensorboard_absent_is_a_one_line_error_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    with pytest.raises(ConfigError, match=r"veritrain\[tensorboard\]"):
        train(TrainConfig(**TINY, method="regular", tensorboard=True, out=str(tmp_path / "r")))
    assert not (tmp_path / "r").exists()
    rc = main(
        [
            "train",
            "--dataset",
            "mnist-mini",
            "--train-size",
            "50",
            "--epochs",
            "1",
            "--tensorboard",
            "--out",
            str(tmp_path / "r2"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "pip install 'veritrain[tensorboard]'" in err


def test_tensorboard_log_writes_train_and_test_scalars() -> None:
    class Writer:
        def __init__(self) -> None:
            self.scalars: list[tuple[str, float, int]] = []

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            self.scalars.append((tag, value, step))

        def flush(self) -> None:
            pass

    log = TensorBoardLog.__new__(TensorBoardLog)
    log.writer = Writer()  # type: ignore[assignment]
    row: dict[str, Any] = {"epoch": 3, "loss": 0.5, "test_vra": 40.0, "test_era": None, "note": "x"}
    log.log(row)
    assert log.writer.scalars == [("train/loss", 0.5, 3), ("test/vra", 40.0, 3)]  # type: ignore[attr-defined]
