"""What a team watches while a run trains: test metrics of every epoch on a fixed test subset, and an optional
TensorBoard log of the per-epoch metrics (the `tensorboard` extra)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import TensorDataset

from veritrain.errors import ConfigError
from veritrain.evaluation.evaluate import evaluate_tensors
from veritrain.registry import split_names
from veritrain.training.config import TrainConfig
from veritrain.training.methods import Objective

#: the attack of the per-epoch ERA (the final evaluation uses --eval-attacks)
MONITOR_ATTACK = "pgd"
TENSORBOARD_HINT = "pip install 'veritrain[tensorboard]'"


def monitor_domain(cfg: TrainConfig, objective: Objective) -> str:
    """The domain of the per-epoch VRA: the one the method trains with, else the first --eval-domains one."""
    return objective.training_domain or next(iter(split_names(cfg.eval_domains)), "interval")


class EpochMonitor:
    """ACC, ERA (PGD) and VRA (the training domain) at the final eps on the first `monitor_n` test images,
    measured after every epoch: `test_acc`, `test_era`, `test_vra` (percent), `test_n`, `monitor_time` (s)."""

    def __init__(self, cfg: TrainConfig, test_data: TensorDataset | None, objective: Objective) -> None:
        self.cfg = cfg
        n = min(cfg.monitor_n, len(test_data)) if test_data is not None else 0
        self.x = test_data.tensors[0][:n] if test_data is not None else None
        self.y = test_data.tensors[1][:n] if test_data is not None else None
        self.n = n
        self.domain = monitor_domain(cfg, objective)

    def __call__(self, model: nn.Module) -> dict[str, Any]:
        if self.n == 0 or self.x is None or self.y is None:
            return {}
        t0 = time.perf_counter()
        robust = self.cfg.eps > 0
        ev = evaluate_tensors(
            model,
            self.x,
            self.y,
            self.cfg.eps,
            attacks=[MONITOR_ATTACK] if robust else [],
            domains=[self.domain] if robust else [],
            norm=self.cfg.norm,
            seed=self.cfg.seed,
            batch_size=max(self.cfg.batch_size, 100),
            progress=False,
        )
        out: dict[str, Any] = {"test_acc": ev["acc"], "test_n": self.n}
        if robust:
            out["test_era"] = ev["era"].get(MONITOR_ATTACK)
            out["test_vra"] = ev["vra"].get(self.domain)  # None: the bound engine does not accept the model
        out["monitor_time"] = time.perf_counter() - t0
        return out


def check_tensorboard() -> None:
    """ConfigError naming the extra when the tensorboard package is missing."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise ConfigError(f"--tensorboard needs the tensorboard package: {TENSORBOARD_HINT}") from None


class TensorBoardLog:
    """Every numeric per-epoch metric as a scalar `train/<name>` or `test/<name>` in RUN/tensorboard."""

    def __init__(self, folder: str | Path) -> None:
        check_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder))

    def log(self, row: dict[str, Any]) -> None:
        epoch = int(row["epoch"])
        for key, value in row.items():
            if key == "epoch" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            tag = f"test/{key[5:]}" if key.startswith("test_") else f"train/{key}"
            self.writer.add_scalar(tag, float(value), epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


__all__ = ["EpochMonitor", "MONITOR_ATTACK", "TensorBoardLog", "check_tensorboard", "monitor_domain"]
