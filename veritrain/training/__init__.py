"""Training: one shared loop (`train`), methods as objectives (`METHODS`), options (`TrainConfig`)."""

from veritrain.training.config import TrainConfig
from veritrain.training.loop import TrainingError, read_metrics, train
from veritrain.training.methods import METHODS, EpochContext, Objective, StepContext
from veritrain.training.schedules import eps_at_epoch

__all__ = [
    "METHODS",
    "EpochContext",
    "Objective",
    "StepContext",
    "TrainConfig",
    "TrainingError",
    "eps_at_epoch",
    "read_metrics",
    "train",
]
