"""One evaluation of a model: ACC, ERA (attacks) and VRA (sound bounds), as a JSON-able dict (Section II)."""

from __future__ import annotations

import time
from typing import Any, Sequence

import torch
from torch import nn

from veritrain.evaluation.accuracy import accuracy, model_device
from veritrain.evaluation.era import estimate_robust_accuracy, robustness_curves
from veritrain.evaluation.results import EvalSettings, Evaluation, bound_engine_accepts
from veritrain.evaluation.vra import verified_robust_accuracy
from veritrain.registry import split_names
from veritrain.validation import (
    DEFAULT_DOMAIN,
    DEFAULT_NORM,
    NORMS,
    check_eps,
    check_labels,
    check_model_accepts,
    check_pixels,
    check_positive_int,
)


def _attack_norm(name: str, eps: float, settings: dict[str, Any] | None = None) -> str | None:
    """The norm of the ball an attack searches (None when it cannot be built)."""
    try:
        from veritrain.attacks import make_attack

        return make_attack(name, eps, **(settings or {})).norm
    except Exception:  # noqa: BLE001 - an unknown attack fails in the ERA step with its own message
        return None


def attack_settings(attacks: Sequence[str], norm: str, options: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Per ERA attack, its constructor options: the evaluation's `norm` for every attack that searches it (an
    attack of one other norm, e.g. cw-l2 or pointwise, keeps its own), and each of `options` (e.g. steps,
    restarts, step_size) for the attacks taking it; ValueError for an option no attack takes."""
    import inspect

    from veritrain.attacks import ATTACKS

    out: dict[str, dict[str, Any]] = {}
    used: set[str] = set()
    for a in attacks:
        cls = ATTACKS.get(a)
        params = inspect.signature(cls.__init__).parameters
        kw: dict[str, Any] = {"norm": norm} if norm in cls.norms else {}
        for k, v in (options or {}).items():
            if v is not None and k in params:
                kw[k] = v
                used.add(k)
        out[a] = kw
    unused = [k for k, v in (options or {}).items() if v is not None and k not in used]
    if unused:
        raise ValueError(f"no attack among {', '.join(attacks)} takes the option(s) {', '.join(unused)}")
    return out


def evaluate_tensors(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    attacks: str | Sequence[str] = ("pgd",),
    domains: str | Sequence[str] = (DEFAULT_DOMAIN,),
    *,
    curves: str | Sequence[str] = (),
    norm: str = DEFAULT_NORM,
    sound: bool = True,
    batch_size: int = 500,
    chunk_size: int | None = None,
    seed: int = 0,
    progress: bool = False,
    attack_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """ACC on (x, y), ERA per attack and "all" (worst case over them), VRA per bound domain, and
    robustness curves (Figure 7: minimal-perturbation attacks such as cw-l2, pointwise) for `curves`.

    Returns {"acc", "n", "eps", "norm", "era": {...}, "vra": {...}, "curves": {...}, "time_s": {...}}.
    VRA is None per domain, with the reason in "vra_note", when the bound engine does not accept the model
    (e.g. an ELU network; `sound=False` forces it). `evaluate_model` returns the same as an `Evaluation`.
    The ERA attacks search the `norm` ball (those of one other norm keep theirs) with `attack_options`
    (e.g. {"steps": 100, "restarts": 5}); "era_settings" records what each attack ran with.
    """
    check_pixels(x, 0.0, 1.0, "x")
    if len(x) == 0:
        raise ValueError("x holds no images; pass at least one")
    check_labels(y, x.shape[0], None, "y")
    check_eps(eps, what="eps")
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose {' or '.join(NORMS)}")
    check_positive_int(batch_size, "batch_size")
    if chunk_size is not None:
        check_positive_int(chunk_size, "chunk_size")
    attacks, domains, curves = split_names(attacks), split_names(domains), split_names(curves)
    device = model_device(model)
    model.eval()
    x, y = x.to(device), y.to(device)
    check_model_accepts(model, x, y)
    out: dict[str, Any] = {
        "acc": None,
        "n": len(x),
        "eps": float(eps),
        "norm": norm,
        "era": {},
        "vra": {},
        "curves": {},
        "time_s": {},
    }
    t0 = time.perf_counter()
    out["acc"] = accuracy(model, x, y, batch_size=batch_size)
    out["time_s"]["acc"] = time.perf_counter() - t0

    broken_known = None
    if attacks and eps > 0:
        # {"acc", "era": {attack: %, ..., "all": worst case over the attacks}, "n", "robust_mask"}
        per_attack = attack_settings(attacks, norm, attack_options)
        res = estimate_robust_accuracy(
            model,
            x,
            y,
            attacks,
            eps,
            batch_size=batch_size,
            seed=seed,
            progress=progress,
            device=device,
            per_attack=True,
            **per_attack,
        )
        out["era"] = dict(res["era"])
        out["era_settings"] = per_attack
        if all(_attack_norm(a, eps, per_attack[a]) == norm for a in attacks):  # counterexamples in the VRA ball
            broken_known = res.get("robust_mask")
        out["time_s"]["era"] = time.perf_counter() - t0

    if curves:
        t0 = time.perf_counter()
        out["curves"] = dict(
            robustness_curves(model, x, y, curves, batch_size=batch_size, seed=seed, progress=progress)["curves"]
        )
        out["time_s"]["curves"] = time.perf_counter() - t0

    if domains and eps > 0:
        # VRA is meaningful when the bound engine accepts the model (e.g. not for ELU networks)
        note = bound_engine_accepts(model, x.shape[1:]) if sound else "not applicable (sound=False)"
        if note is not None:
            out["vra"] = {d: None for d in domains}
            out["vra_note"] = note
        else:
            t0 = time.perf_counter()
            kw: dict[str, Any] = {"norm": norm, "progress": progress, "batch_size": batch_size}
            if chunk_size is not None:
                kw["chunk_size"] = chunk_size
            if broken_known is not None:  # samples an attack broke cannot be proved: not bounded
                kw["candidates"] = broken_known
            out["vra"] = dict(verified_robust_accuracy(model, x, y, eps, domains, **kw))
            out["time_s"]["vra"] = time.perf_counter() - t0
    return out


def evaluate_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: EvalSettings) -> Evaluation:
    """`evaluate_tensors` with its parameters in one `EvalSettings`, returning a typed `Evaluation`."""
    return Evaluation.from_dict(evaluate_tensors(model, x, y, **settings.kwargs()))


def evaluate(
    model: nn.Module,
    dataset_name: str,
    n: int | None,
    eps: float,
    attacks: str | Sequence[str] = ("pgd",),
    domains: str | Sequence[str] = (DEFAULT_DOMAIN,),
    *,
    curves: str | Sequence[str] = (),
    data_dir: str | None = None,
    random_subset: int | None = None,
    norm: str = DEFAULT_NORM,
    sound: bool = True,
    batch_size: int = 500,
    chunk_size: int | None = None,
    seed: int = 0,
    progress: bool = False,
    attack_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate on the first `n` test images of `dataset_name` (a seeded random `n` with `random_subset`;
    all with n=None) and return the dict of `evaluate_tensors` plus "dataset"."""
    from veritrain.data import load_dataset, take_subset

    ds = load_dataset(dataset_name, "test", root=data_dir)
    if n is not None:
        if n < 1:
            raise ValueError(f"--n must be at least 1, got {n}")
        ds = take_subset(ds, min(n, len(ds)), random_subset)
    x, y = ds.tensors[0], ds.tensors[1]
    if not torch.isfinite(x).all():
        raise ValueError(f"the {dataset_name} test images contain NaN or inf values; the data files are corrupt")
    res = evaluate_tensors(
        model,
        x,
        y,
        eps,
        attacks,
        domains,
        curves=curves,
        norm=norm,
        sound=sound,
        batch_size=batch_size,
        chunk_size=chunk_size,
        seed=seed,
        progress=progress,
        attack_options=attack_options,
    )
    return {"dataset": dataset_name, **res}
