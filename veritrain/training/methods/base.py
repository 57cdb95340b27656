"""A training method is an objective plugged into the shared loop (`veritrain.training.loop`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from veritrain.registry import Registry
from veritrain.training.config import TrainConfig


@dataclass
class StepContext:
    """What an objective may need at one optimisation step."""

    eps: float  # the eps of the current epoch (after the ramp)
    epoch: int  # 0-based
    step: int  # global step
    num_batches: int  # batches per epoch
    generator: torch.Generator  # the method's own seeded randomness (saved in checkpoints)
    device: torch.device


@dataclass
class EpochContext:
    """What an objective may need at the end of an epoch (e.g. MixTrain's alpha update, Section V-A)."""

    eps: float
    epoch: int
    train_data: Any  # the training TensorDataset (for sub-sampled accuracy)
    generator: torch.Generator
    device: torch.device
    extra: dict[str, Any] = field(default_factory=dict)


class Objective:
    """Base class: regular training's cross-entropy. Subclasses override `loss` (and maybe `end_epoch`)."""

    name = "objective"
    #: whether sound bounds (VRA) are meaningful for models trained this way (informative only: evaluation
    #: decides by whether the bound engine accepts the model, `veritrain.evaluation.results.bound_engine_accepts`)
    sound = True
    #: the sound bound domain the objective trains with (None: it trains with none); the per-epoch test VRA
    #: of the loop is measured with it
    training_domain: str | None = None

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext
    ) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def prepare(self, model: nn.Module, generator: torch.Generator) -> None:
        """Called once on the fresh model before training (a resumed run then loads its weights over it).
        With `ibp_init`, re-initialises the model as Shi et al. (2021) do for IBP-based training."""
        if self.cfg.ibp_init:
            from veritrain.training.methods.ibp import shi_init

            shi_init(model, generator)

    def end_epoch(self, model: nn.Module, ctx: EpochContext) -> dict[str, float]:
        """Called after each epoch; returns metrics to log (e.g. alpha)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


METHODS: Registry[type[Objective]] = Registry("training method")
