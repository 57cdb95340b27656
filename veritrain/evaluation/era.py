"""Estimated robust accuracy (ERA, Section II): share of samples classified correctly on the clean
input AND not broken by any of the attacks run; and the L2 / L0 robustness curves of Figure 7."""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from veritrain.attacks import ATTACKS, make_attack, robust_curve
from veritrain.attacks.base import eval_mode, flat_norm
from veritrain.evaluation.accuracy import percent
from veritrain.progress import progress_bar
from veritrain.validation import NORMS

#: default radii of `robustness_curves` (Figure 7a: L2; Figure 7b: L0 in pixels)
DEFAULT_RADII: dict[str, list[float]] = {
    "cw-l2": [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0],
    "pointwise": [0, 10, 25, 50, 100, 150, 200, 250],
}


def _device(model: nn.Module, x: Tensor, device: torch.device | str | None) -> torch.device:
    p = next(model.parameters(), None)
    if device is None:
        return p.device if p is not None else x.device
    device = torch.device(device)
    if p is not None and p.device.type != device.type:
        raise ValueError(f"the model is on {p.device} but device={device}; move it with model.to({str(device)!r})")
    return device


def _attack_kwargs(attacks: Sequence[str], attack_kwargs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Split kwargs: a key naming an attack holds a dict for that attack only (it may set `eps`);
    every other key goes to each attack whose constructor takes it (and must fit at least one)."""
    per = {a: dict(attack_kwargs.get(a) or {}) for a in attacks}
    shared = {k: v for k, v in attack_kwargs.items() if k not in ATTACKS}
    for k, v in shared.items():
        takers = [a for a in attacks if k in inspect.signature(ATTACKS.get(a).__init__).parameters]
        if not takers:
            raise TypeError(f"no attack among {list(attacks)} takes the option {k!r}")
        for a in takers:
            per[a].setdefault(k, v)
    return per


def _check_inputs(x: Tensor, y: Tensor, attacks: Sequence[str]) -> None:
    if len(attacks) == 0:
        raise ValueError("give at least one attack, e.g. attacks=['pgd']")
    for a in attacks:
        ATTACKS.get(a)  # one-line error listing the known names
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"x and y must hold the same, non-zero number of samples, got {x.shape[0]} and {y.shape[0]}")


def estimate_robust_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    attacks: Sequence[str],
    eps: float | None,
    batch_size: int = 100,
    seed: int = 0,
    progress: bool = True,
    device: torch.device | str | None = None,
    per_attack: bool = True,
    **attack_kwargs: Any,
) -> dict[str, Any]:
    """ERA under each attack and under all of them: `{"acc": %, "era": {name: %, ..., "all": %}, "n": n,
    "robust_mask": bool per sample, robust to every attack}`.

    A sample counts as robust for an attack iff it is correctly classified clean and the attack's
    x_adv is not misclassified (checked here with a fresh forward; points outside the attack's ball are
    a bug and raise). "all" is the per-sample worst case: robust only if no attack broke it.
    per_attack=True: each attack runs on all clean-correct samples, so its own number is what it
    alone achieves. per_attack=False (faster): only samples no earlier attack broke go on to the next
    one, and only "all" is reported. Batch b uses seed + b. Options: `pgd={"steps": 100}` for one
    attack (may set its own `eps`, e.g. `pointwise={"eps": 25}`), `steps=100` for every attack taking it.
    """
    _check_inputs(x, y, attacks)
    dev = _device(model, x, device)
    per = _attack_kwargs(attacks, attack_kwargs)
    n = x.shape[0]
    correct = torch.zeros(n, dtype=torch.bool)
    robust = {a: torch.zeros(n, dtype=torch.bool) for a in attacks}
    worst = torch.zeros(n, dtype=torch.bool)
    starts = list(range(0, n, batch_size))
    bar = progress_bar(total=len(starts) * len(attacks), desc="ERA", enabled=progress)
    for b, s in enumerate(starts):
        xb = x[s : s + batch_size].to(dev)
        yb = y[s : s + batch_size].to(dev).long()
        with eval_mode(model), torch.no_grad():
            ok = (model(xb).argmax(1) == yb).cpu()
        correct[s : s + len(ok)] = ok
        alive = ok.clone()
        for a in attacks:
            kw = dict(per[a])
            a_eps = kw.pop("eps", eps)
            sub = (ok if per_attack else alive).nonzero().squeeze(1)
            if sub.numel():
                attack = make_attack(a, a_eps, seed=seed + b, **kw)
                xs, ys = xb[sub.to(dev)], yb[sub.to(dev)]
                res = attack.run(model, xs, ys)
                _check_in_ball(a, res.x_adv, xs, a_eps, attack.norm)
                with eval_mode(model), torch.no_grad():
                    kept = (model(res.x_adv).argmax(1) == ys).cpu()
                robust[a][s + sub] = kept
                alive[sub] = alive[sub] & kept
            bar.update(1)
        worst[s : s + len(ok)] = alive
    bar.close()
    era = {a: percent(robust[a]) for a in attacks} if per_attack else {}
    era["all"] = percent(worst)
    return {"acc": percent(correct), "era": era, "n": n, "robust_mask": worst}


def _check_in_ball(name: str, x_adv: Tensor, x: Tensor, eps: float | None, norm: str) -> None:
    bad = x_adv.shape != x.shape or bool((x_adv < 0).any() or (x_adv > 1).any())
    if not bad and eps is not None and norm in NORMS:
        bad = bool((flat_norm(x_adv - x, norm) > eps * (1 + 1e-5) + 1e-6).any())
    if bad:
        raise RuntimeError(f"attack {name!r} returned points outside B_eps(x) and [0, 1]; this is a bug")


def robustness_curves(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    attacks: Sequence[str] = ("cw-l2", "pointwise"),
    radii: dict[str, Sequence[float]] | None = None,
    batch_size: int = 100,
    seed: int = 0,
    progress: bool = True,
    device: torch.device | str | None = None,
    cross_check: bool = True,
    **attack_kwargs: Any,
) -> dict[str, Any]:
    """Percent robust vs radius for minimal-perturbation attacks (Figure 7: CW-L2, L0 Pointwise):
    `{"curves": {name: {"radii": [...], "robust": [...]}}}`. Each attack runs once with eps=None;
    a sample is robust at radius r iff it is correct clean and no adversarial example with
    distance <= r was found. With `cross_check` an L2 curve also counts the adversarial examples PGD-L2 finds
    at each radius (`robust_attack_only` keeps the attack's own curve), so it is never weaker than PGD-L2."""
    _check_inputs(x, y, attacks)
    radii = dict(radii or {})
    for a in attacks:
        if a not in radii and a not in DEFAULT_RADII:
            raise ValueError(f"give radii for attack {a!r}, e.g. radii={{{a!r}: [0.5, 1.0]}}")
    dev = _device(model, x, device)
    per = _attack_kwargs(attacks, attack_kwargs)
    starts = list(range(0, x.shape[0], batch_size))
    dist: dict[str, list[Tensor]] = {a: [] for a in attacks}
    bar = progress_bar(total=len(starts) * len(attacks), desc="curves", enabled=progress)
    for b, s in enumerate(starts):
        xb = x[s : s + batch_size].to(dev)
        yb = y[s : s + batch_size].to(dev).long()
        for a in attacks:
            res = make_attack(a, None, seed=seed + b, **per[a]).run(model, xb, yb)
            if res.distance is None:
                raise ValueError(
                    f"attack {a!r} reports no distance; use a minimal-perturbation attack (cw-l2, pointwise)"
                )
            dist[a].append(res.distance.detach().float().cpu())
            bar.update(1)
    bar.close()
    curves: dict[str, dict[str, Any]] = {}
    for a in attacks:
        r = [float(v) for v in radii.get(a, DEFAULT_RADII.get(a, []))]
        d = torch.cat(dist[a])
        curves[a] = {"radii": r, "robust": robust_curve(d, r)}
        if cross_check and ATTACKS.get(a).norms == ("l2",):
            checked = _pgd_l2_check(model, x, y, d, r, batch_size, seed, dev)
            curves[a] = {
                "radii": r,
                "robust": robust_curve(checked, r),
                "robust_attack_only": curves[a]["robust"],
                "checked_with": "pgd-l2",
            }
    return {"curves": curves}


def _pgd_l2_check(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    dist: Tensor,
    radii: Sequence[float],
    batch_size: int,
    seed: int,
    dev: torch.device,
) -> Tensor:
    """Per sample, the smaller of the attack's minimal distance and the distance of a PGD-L2 adversarial example
    found at any radius of the curve: an L2 robustness curve is then never weaker than PGD-L2 (same seed)."""
    dist = dist.clone()
    for r in sorted({float(v) for v in radii if v > 0}):
        todo = (dist > r).nonzero().squeeze(1)
        for b, s in enumerate(range(0, len(todo), batch_size)):
            idx = todo[s : s + batch_size]
            sel = idx.to(x.device)
            res = make_attack("pgd-l2", r, seed=seed + b).run(model, x[sel].to(dev), y[sel].to(dev).long())
            found = res.success.cpu()
            assert res.distance is not None  # PGD reports the distance of every result
            dist[idx[found]] = torch.minimum(dist[idx[found]], res.distance.detach().float().cpu()[found])
    return dist
