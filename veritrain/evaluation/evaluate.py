"""One evaluation of a model: ACC, ERA (attacks) and VRA (sound bounds), as a JSON-able dict (Section II)."""
from __future__ import annotations

import importlib
import time
from typing import Any, Callable, Sequence

import torch
from torch import nn

from veritrain.evaluation.accuracy import accuracy, model_device
from veritrain.registry import split_names
from veritrain.validation import check_eps, check_labels, check_model_accepts, check_pixels, check_positive_int

NOT_AVAILABLE = "not available"
# Sinha et al.'s WRM needs smooth activations (ELU); the sound domains here bound ReLU networks only,
# so for objectives with `sound = False` VRA is reported as n/a, never as 0.
NOT_APPLICABLE = "n/a"


def _optional(module: str, name: str) -> Callable[..., Any] | str:
    """The function, or a "not available (...)" string when its module is not installed/importable."""
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as e:
        if e.name and (e.name == module or module.startswith(e.name + ".")):
            return f"{NOT_AVAILABLE} ({module} is missing)"
        raise


def _attack_norm(name: str, eps: float) -> str | None:
    """The norm of the ball an attack searches (None when it cannot be built)."""
    try:
        from veritrain.attacks import make_attack

        return make_attack(name, eps).norm
    except Exception:  # noqa: BLE001 - an unknown attack fails in the ERA step with its own message
        return None


def evaluate_tensors(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    attacks: str | Sequence[str] = ("pgd",),
    domains: str | Sequence[str] = ("symbolic-linear",),
    *,
    curves: str | Sequence[str] = (),
    norm: str = "linf",
    sound: bool = True,
    batch_size: int = 500,
    chunk_size: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """ACC on (x, y), ERA per attack and "all" (worst case over them), VRA per bound domain, and
    robustness curves (Figure 7: minimal-perturbation attacks such as cw-l2, pointwise) for `curves`.

    Returns {"acc", "n", "eps", "norm", "era": {...}, "vra": {...}, "curves": {...}, "time_s": {...}}.
    A part whose module is missing is reported as "not available (...)"; VRA is "n/a" when `sound`
    is False (models trained with smooth activations, e.g. WRM with ELU).
    """
    check_pixels(x, 0.0, 1.0, "x")
    if len(x) == 0:
        raise ValueError("x holds no images; pass at least one")
    check_labels(y, x.shape[0], None, "y")
    check_eps(eps, what="eps")
    if norm not in ("linf", "l2"):
        raise ValueError(f"unknown norm {norm!r}; choose linf or l2")
    check_positive_int(batch_size, "batch_size")
    if chunk_size is not None:
        check_positive_int(chunk_size, "chunk_size")
    attacks, domains, curves = split_names(attacks), split_names(domains), split_names(curves)
    device = model_device(model)
    model.eval()
    x, y = x.to(device), y.to(device)
    check_model_accepts(model, x, y)
    out: dict[str, Any] = {"acc": None, "n": len(x), "eps": float(eps), "norm": norm,
                           "era": {}, "vra": {}, "curves": {}, "time_s": {}}
    t0 = time.perf_counter()
    out["acc"] = accuracy(model, x, y, batch_size=batch_size)
    out["time_s"]["acc"] = time.perf_counter() - t0

    broken_known = None
    if attacks and eps > 0:
        era_fn = _optional("veritrain.evaluation.era", "estimate_robust_accuracy")
        t0 = time.perf_counter()
        if isinstance(era_fn, str):
            out["era"] = era_fn
        else:
            # {"acc", "era": {attack: %, ..., "all": worst case over the attacks}, "n", "robust_mask"}
            res = era_fn(model, x, y, attacks, eps, batch_size=batch_size, seed=seed, progress=progress)
            out["era"] = dict(res["era"])
            if all(_attack_norm(a, eps) == norm for a in attacks):  # counterexamples in the VRA ball itself
                broken_known = res.get("robust_mask")
        out["time_s"]["era"] = time.perf_counter() - t0

    if curves:
        curves_fn = _optional("veritrain.evaluation.era", "robustness_curves")
        t0 = time.perf_counter()
        if isinstance(curves_fn, str):
            out["curves"] = curves_fn
        else:
            out["curves"] = dict(curves_fn(model, x, y, curves, batch_size=batch_size, seed=seed,
                                           progress=progress)["curves"])
        out["time_s"]["curves"] = time.perf_counter() - t0

    if domains and eps > 0:
        if not sound:
            out["vra"] = {d: NOT_APPLICABLE for d in domains}
        else:
            vra_fn = _optional("veritrain.evaluation.vra", "verified_robust_accuracy")
            t0 = time.perf_counter()
            if isinstance(vra_fn, str):
                out["vra"] = vra_fn
            else:
                kw: dict[str, Any] = {"norm": norm, "progress": progress, "batch_size": batch_size}
                if chunk_size is not None:
                    kw["chunk_size"] = chunk_size
                if broken_known is not None:  # samples an attack broke cannot be proved: not bounded
                    kw["candidates"] = broken_known
                out["vra"] = dict(vra_fn(model, x, y, eps, domains, **kw))
            out["time_s"]["vra"] = time.perf_counter() - t0
    return out


def evaluate(
    model: nn.Module,
    dataset_name: str,
    n: int | None,
    eps: float,
    attacks: str | Sequence[str] = ("pgd",),
    domains: str | Sequence[str] = ("symbolic-linear",),
    *,
    curves: str | Sequence[str] = (),
    data_dir: str | None = None,
    random_subset: int | None = None,
    norm: str = "linf",
    sound: bool = True,
    batch_size: int = 500,
    chunk_size: int | None = None,
    seed: int = 0,
    progress: bool = False,
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
    res = evaluate_tensors(model, x, y, eps, attacks, domains, curves=curves, norm=norm, sound=sound,
                           batch_size=batch_size,
                           chunk_size=chunk_size, seed=seed, progress=progress)
    return {"dataset": dataset_name, **res}
