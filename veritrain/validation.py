"""Input checks shared by the public entry points (Ball, compute_bounds, verify, attacks, evaluation), and
the names and defaults they share (the norms, the default bound domain).

A wrong input must fail loudly before it produces a number: a negative eps makes an empty ball, where
every bound "proves" anything; NaN pixels give NaN bounds; float or one-hot labels index the wrong rows.
Every check raises a one-line `ValueError` that names the argument and what to pass instead.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

#: the norms of a perturbation ball (`Ball`, training, evaluation) by name; L-inf is every entry point's default
LINF, L2, L0 = "linf", "l2", "l0"
NORMS = (LINF, L2)
DEFAULT_NORM = LINF
#: the norms an attack may measure its perturbation in (the pointwise attack's L0 besides the balls' norms)
ATTACK_NORMS = (*NORMS, L0)
#: the bound domain of the paper's MixTrain: the default of training, VRA, the bound API and the experiments
DEFAULT_DOMAIN = "symbolic-linear"


def check_eps(eps: object, batch: int | None = None, what: str = "eps") -> None:
    """eps is a finite number >= 0, or a tensor of them of shape () or (batch,)."""
    if isinstance(eps, Tensor):
        if eps.dim() > 1 or (eps.dim() == 1 and batch is not None and eps.shape[0] != batch):
            raise ValueError(
                f"{what} must be a number or a tensor of shape ({batch},) (one per sample), "
                f"got shape {tuple(eps.shape)}"
            )
        if torch.is_complex(eps) or eps.dtype == torch.bool:
            raise ValueError(f"{what} must hold real numbers, got dtype {eps.dtype}")
        with torch.no_grad():
            if eps.numel() and not bool(torch.isfinite(eps).all()):
                raise ValueError(f"{what} must be finite, got a NaN or inf value")
            if eps.numel() and bool((eps < 0).any()):
                raise ValueError(f"{what} must be >= 0 (the radius of the ball), got {float(eps.min()):g}")
        return
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise ValueError(f"{what} must be a number >= 0 (or a tensor of them), got {type(eps).__name__}")
    if not math.isfinite(float(eps)):
        raise ValueError(f"{what} must be finite, got {eps}")
    if eps < 0:
        raise ValueError(f"{what} must be >= 0 (the radius of the ball), got {eps}")


def check_pixels(x: object, lo: float = 0.0, hi: float = 1.0, what: str = "x") -> None:
    """x is a batched float tensor (B, ...) of finite values inside the input domain [lo, hi]."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{what} must be a torch.Tensor of pixels, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise ValueError(f"{what} must be a float tensor of pixels in [{lo:g}, {hi:g}], got dtype {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"{what} must be batched (B, ...), got shape {tuple(x.shape)}; add a batch dimension")
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ValueError(f"the input domain [lo, hi] must be finite with lo <= hi, got [{lo}, {hi}]")
    if x.numel() == 0:
        return
    with torch.no_grad():
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{what} holds NaN or inf values; pass finite pixels in [{lo:g}, {hi:g}]")
        mn, mx = float(x.min()), float(x.max())
    if mn < lo or mx > hi:
        raise ValueError(
            f"{what} must lie in the input domain [{lo:g}, {hi:g}], got values in [{mn:g}, {mx:g}]; "
            "pass pixels (the model carries its own normalisation)"
        )


def check_labels(y: object, batch: int, num_classes: int | None = None, what: str = "y") -> None:
    """y is an integer tensor of class indices of shape (batch,), each in [0, num_classes)."""
    if not isinstance(y, Tensor):
        raise ValueError(f"{what} must be a torch.Tensor of integer class indices, got {type(y).__name__}")
    if y.dtype == torch.bool or torch.is_floating_point(y) or torch.is_complex(y):
        raise ValueError(
            f"{what} must hold integer class indices, got dtype {y.dtype}; "
            "pass y.long() (one-hot or probability labels: y.argmax(1))"
        )
    if tuple(y.shape) != (batch,):
        raise ValueError(
            f"{what} must have shape ({batch},), one class index per sample, got {tuple(y.shape)}"
            + ("; one-hot labels: pass y.argmax(1)" if y.dim() == 2 else "")
        )
    if num_classes is not None and y.numel():
        mn, mx = int(y.min()), int(y.max())
        if mn < 0 or mx >= num_classes:
            raise ValueError(
                f"{what} must hold class indices in [0, {num_classes - 1}] (the model has "
                f"{num_classes} outputs), got values in [{mn}, {mx}]"
            )


def check_model_accepts(model: torch.nn.Module, x: Tensor, y: Tensor, what: str = "the model") -> int:
    """Run `model` on one image of x: a one-line error when it does not accept x's shape or gives fewer
    logits than y's classes; returns the number of logits K."""
    try:
        with torch.no_grad():
            was_training = model.training
            model.eval()
            try:
                out = model(x[:1])
            finally:
                model.train(was_training)
    except RuntimeError as e:
        msg = " ".join(str(e).split())[:160]
        raise ValueError(
            f"{what} does not accept images of shape {tuple(x.shape[1:])} ({msg}); "
            "pick the network and data set that belong together"
        ) from None
    if out.dim() != 2:
        raise ValueError(f"{what} must return logits (B, K), got shape {tuple(out.shape)}")
    check_labels(y, x.shape[0], out.shape[1], "y")
    return int(out.shape[1])


def check_positive_int(value: object, what: str) -> None:
    """value is an int >= 1 (batch sizes, chunk sizes, steps)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{what} must be an integer >= 1, got {value!r}")


__all__ = [
    "ATTACK_NORMS",
    "DEFAULT_DOMAIN",
    "DEFAULT_NORM",
    "L0",
    "L2",
    "LINF",
    "NORMS",
    "check_eps",
    "check_labels",
    "check_model_accepts",
    "check_pixels",
    "check_positive_int",
]
