"""Verified robust accuracy (VRA, Section II): the share of test samples that are classified correctly
and proved robust by a sound bound domain over B_eps(x) ∩ [0, 1].

Memory is bounded by `chunk_size` (samples per bound computation; None: the bound engine's default, sized by
`veritrain.bounds.base.CHUNK_MEMORY`): symbolic domains carry d input columns plus one error column per
unstable ReLU per sample, so their memory grows linearly in it.
Misclassified samples are never bounded (they cannot count), nor are samples with a known counterexample
in the same ball (`candidates`, e.g. the ERA attacks' robust mask): no sound bound can prove them. As a
guard against unsound bounds or attacks, a few of those skipped samples are bounded anyway
(`spot_checks`), and proving any of them raises.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from veritrain.attacks.base import eval_mode
from veritrain.bounds import DOMAINS, Ball, to_ops, verify
from veritrain.bounds.base import chunk_size_for
from veritrain.evaluation.accuracy import model_device, percent
from veritrain.progress import progress_bar
from veritrain.validation import DEFAULT_DOMAIN, DEFAULT_NORM


@torch.no_grad()
def verified_mask(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    domain: str,
    norm: str = DEFAULT_NORM,
    batch_size: int = 500,
    chunk_size: int | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
    candidates: Tensor | None = None,
    spot_checks: int = 8,
) -> Tensor:
    """Bool per sample (on x's device): correctly classified and verified by `domain`.

    `candidates` (bool per sample): False marks samples known NOT to be robust in this very ball (an
    attack found a misclassified point in B_eps(x) ∩ [0, 1]); they are not bounded, except `spot_checks`
    of them, whose proof would expose an unsound bound or attack (RuntimeError)."""
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)}; pass one label per image")
    if (chunk_size is not None and chunk_size < 1) or batch_size < 1:
        raise ValueError(f"chunk_size and batch_size must be >= 1 (got {chunk_size}, {batch_size})")
    DOMAINS.get(domain)  # fail early with the list of domains
    dev = torch.device(device) if device is not None else model_device(model)
    with eval_mode(model):
        model.to(dev)
        ok = torch.zeros(len(x), dtype=torch.bool)
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size].to(dev), y[i : i + batch_size].to(dev)
            ok[i : i + len(xb)] = (model(xb).argmax(1) == yb).cpu()
        todo = ok.nonzero().flatten()
        if candidates is not None:
            if candidates.shape != (len(x),):
                raise ValueError(f"candidates must hold one bool per sample ({len(x)}), got {tuple(candidates.shape)}")
            broken = todo[~candidates.cpu()[todo]]
            todo = todo[candidates.cpu()[todo]]
            check = broken[torch.randperm(len(broken), generator=torch.Generator().manual_seed(0))[:spot_checks]]
            if len(check):
                proved = verify(model, Ball(x[check].to(dev), eps, norm), y[check].to(dev), domain).cpu()
                if proved.any():
                    raise RuntimeError(
                        f"domain {domain!r} proved sample(s) {check[proved].tolist()} robust at eps={eps:g}, "
                        "but an attack found a misclassified point in the same ball: a bound or an attack is unsound"
                    )
            ok[broken] = False
        size = chunk_size or 1
        if chunk_size is None and len(todo):  # the bound engine's memory-sized default (`bounds.base.CHUNK_MEMORY`)
            first = Ball(x[todo[:1]].to(dev), eps, norm)
            size = chunk_size_for(DOMAINS.get(domain)(), to_ops(model, tuple(x.shape[1:])), first)
        bar = progress_bar(total=len(x), desc=f"vra {domain} eps={eps:g}", enabled=progress)
        bar.update(len(x) - len(todo))
        for j in range(0, len(todo), size):
            idx = todo[j : j + size]
            ball = Ball(x[idx].to(dev), eps, norm)
            ok[idx] = verify(model, ball, y[idx].to(dev), domain).cpu()
            bar.update(len(idx))
        bar.close()
    return ok.to(x.device)


#: the key of the union of every domain's proofs in `verified_robust_accuracy`
ANY = "any"


def verified_robust_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    domains: Sequence[str] = (DEFAULT_DOMAIN,),
    norm: str = DEFAULT_NORM,
    batch_size: int = 500,
    chunk_size: int | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
    candidates: Tensor | None = None,
) -> dict[str, float]:
    """VRA in percent per domain: correctly classified AND verified over B_eps(x) ∩ [0, 1]
    (`candidates`: see `verified_mask`). With two or more domains, "any" is the share proved by at least
    one of them: every domain is sound, so the union of their proofs is a sound certificate too (the
    tightest VRA the given domains establish together)."""
    if len(x) == 0:
        raise ValueError("VRA of an empty set is undefined; pass at least one sample")
    if isinstance(domains, str):
        domains = [domains]
    masks = {
        d: verified_mask(
            model, x, y, eps, d, norm, batch_size, chunk_size, progress, device, candidates=candidates
        ).cpu()
        for d in domains
    }
    out = {d: percent(m) for d, m in masks.items()}
    if len(masks) > 1:
        out[ANY] = percent(torch.stack(list(masks.values())).any(0))
    return out


vra = verified_robust_accuracy

__all__ = ["verified_mask", "verified_robust_accuracy", "vra"]
