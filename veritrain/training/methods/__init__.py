"""Training methods: each module registers its `Objective` in METHODS (Section IV, V-A baselines)."""

from veritrain.training.methods.base import METHODS, EpochContext, Objective, StepContext
from veritrain.training.methods import regular  # noqa: F401  (registers "regular")
from veritrain.training.methods import mixtrain  # noqa: F401,E402  (registers "mixtrain", Section IV)
from veritrain.training.methods import madry, wrm, wong, diffai  # noqa: F401,E402  (baselines, Section V-B)
from veritrain.training.methods import ibp, crown_ibp, sabr, mtl_ibp  # noqa: F401,E402  (certified training)

__all__ = ["METHODS", "EpochContext", "Objective", "StepContext"]
