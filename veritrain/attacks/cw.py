"""CW-L-inf: PGD on the Carlini-Wagner margin loss max_{j != y} z_j - z_y (Table I, Table VII "CW")."""

from __future__ import annotations

from veritrain.attacks.base import ATTACKS
from veritrain.attacks.pgd import PGD
from veritrain.validation import DEFAULT_NORM


@ATTACKS.register("cw")
class CW(PGD):
    """PGD (random start, best iterate kept) that ascends the margin max_{j != y} z_j - z_y instead of
    cross-entropy; the other logits are masked with -inf, so negative logits are handled."""

    name = "cw"

    def __init__(self, eps: float, norm: str = DEFAULT_NORM, seed: int | None = 0, **kw) -> None:
        kw.setdefault("loss", "margin")
        kw.setdefault("include_fgsm", False)
        super().__init__(eps, norm, seed, **kw)
