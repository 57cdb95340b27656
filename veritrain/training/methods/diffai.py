"""DiffAI (Mirman et al. 2018) trained with the box domain, the paper's DiffAI baseline (Section V-B).

The box domain is interval propagation, so DiffAI is `ibp` (one implementation) with DiffAI's own weights:
loss (1 - kappa) * CE(f(x), y) + kappa * L(d_box(x), y), L the verified robust loss (Eqns. 6-7) of the
`interval` domain over B_eps(x) ∩ [0, 1]. The paper trains DiffAI "with box domains": `--diffai-kappa` 1.0
(the default) is that pure box loss; a smaller value mixes in the clean loss (later DiffAI versions mix losses).
The box weight ramps linearly from 0 to its value over the eps ramp (Gowal et al.'s schedule): box training
of a freshly initialised network at eps = 0.01 collapses to a constant classifier (measured: MNIST Small,
10 epochs, ACC 11.35%, loss ln 10); learning the clean task first avoids it. `--eps-ramp-epochs 0` disables
the ramp. In `ibp`'s terms: kappa_start 1, kappa_end 1 - diffai_kappa. Testing is not done with the training
domain: the paper tests DiffAI with its strongest domain (hybrid zonotope); here VRA uses the evaluation
domains (`--eval-domains`), which are sound and at least as tight as the box.
"""

from __future__ import annotations

from veritrain.training.config import TrainConfig
from veritrain.training.methods.base import METHODS
from veritrain.training.methods.ibp import IBP, check_unit, verified_metrics

__all__ = ["DiffAI", "verified_metrics"]


@METHODS.register("diffai")
class DiffAI(IBP):
    """Box-domain (interval) verified loss, mixed with the clean CE while its weight ramps up."""

    name = "diffai"

    def __init__(self, cfg: TrainConfig) -> None:
        box = check_unit("diffai_kappa", cfg.diffai_kappa)
        self.default_kappa = (1.0, 1.0 - box)
        super().__init__(cfg)
