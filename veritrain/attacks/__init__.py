"""Attacks for estimated robust accuracy (ERA): PGD/FGSM, CW (L-inf margin and L2), the interval
attack (Section III, Algorithm 1) and its per-target variant and the L0 Pointwise attack (Figure 7).

One calling convention: `Attack(eps, norm, seed, ...)`, `attack.run(model, x, y) -> AttackResult`,
`attack(model, x, y) -> x_adv`. See `veritrain.attacks.base` for the rules every attack keeps.
"""

from __future__ import annotations

from typing import Any

from veritrain.attacks.base import ATTACKS, Attack, AttackResult, robust_curve
from veritrain.attacks.cw import CW
from veritrain.attacks.cw_l2 import CWL2
from veritrain.attacks.interval import IntervalAttack, TargetedIntervalAttack
from veritrain.attacks.pgd import FGSM, PGD, PGDL2, pgd_attack
from veritrain.attacks.pointwise import Pointwise


def make_attack(name: str, eps: float | None, **kw: Any) -> Attack:
    """Build the attack registered as `name` (see `ATTACKS.names()`) with budget `eps`."""
    return ATTACKS.get(name)(eps=eps, **kw)


__all__ = [
    "ATTACKS",
    "Attack",
    "AttackResult",
    "CW",
    "CWL2",
    "FGSM",
    "IntervalAttack",
    "PGD",
    "PGDL2",
    "Pointwise",
    "TargetedIntervalAttack",
    "make_attack",
    "pgd_attack",
    "robust_curve",
]
