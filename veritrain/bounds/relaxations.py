"""Linear relaxations of the activations on [l, u], shared by every domain that needs lines.

`Lines`: per neuron, lower_slope·z + lower_bias <= f(z) <= upper_slope·z + upper_bias for z in [l, u]
(exact for stable ReLU neurons). Forward domains that carry one form per neuron (symbolic-linear, the
dual network) need parallel lines (lower_slope == upper_slope): f(z) = slope·z + lower_bias + e·width,
e in [0, 1], width = upper_bias - lower_bias. The backward domains may pick another lower slope.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from veritrain.bounds.ops import ReLUOp, SShapedOp


@dataclass
class Lines:
    """Per-neuron lines around an activation; a bias None is 0. `unstable`: where the lines are not exact."""

    slope: Tensor  # the upper line's slope (and the lower one's, for parallel lines)
    upper_bias: Tensor
    unstable: Tensor
    lower_bias: Tensor | None = None

    @property
    def width(self) -> Tensor:
        """upper_bias - lower_bias: the range of the error term of parallel lines."""
        return self.upper_bias if self.lower_bias is None else self.upper_bias - self.lower_bias


def relu_relaxation(lower: Tensor, upper: Tensor, negative_slope: float = 0.0) -> Lines:
    """The chord of max(z, a·z) on [l, u] as the upper line, the parallel line through 0 as the lower one:
    Neurify's (Wang et al. 2018) and Wong & Kolter's (2018) relaxation, for ReLU (a = 0) and LeakyReLU.

    Unstable (l < 0 < u): slope s = (u - a·l)/(u - l), upper bias (a - s)·l >= 0 (for a = 0: s = u/(u - l),
    bias -s·l); stable: slope 1 (l >= 0) or a (u <= 0), bias 0."""
    unstable = (lower < 0) & (upper > 0)
    width = torch.where(unstable, upper - lower, torch.ones_like(upper))  # safe denominator
    if negative_slope == 0.0:  # the ReLU formulas exactly as the domains always computed them
        slope = torch.where(unstable, upper / width, (lower >= 0).to(upper.dtype))
        bias = torch.where(unstable, -slope * lower, torch.zeros_like(lower))
    else:
        a = negative_slope
        stable = torch.where(lower >= 0, torch.ones_like(upper), torch.full_like(upper, a))
        slope = torch.where(unstable, (upper - a * lower) / width, stable)
        bias = torch.where(unstable, (a - slope) * lower, torch.zeros_like(lower))
    return Lines(slope, bias, unstable)


def s_shaped_relaxation(op: SShapedOp, lower: Tensor, upper: Tensor) -> Lines:
    """Parallel lines around sigmoid / tanh on [l, u] (DeepZ, Singh et al. 2018): slope k = min(f'(l), f'(u)),
    a lower bound of f' on [l, u] (f' is unimodal with its peak at 0), so f(z) - k·z is non-decreasing there
    and lies in [f(l) - k·l, f(u) - k·u]."""
    k = torch.minimum(op.grad(lower), op.grad(upper))
    lo = op.fn(lower) - k * lower
    hi = torch.maximum(op.fn(upper) - k * upper, lo)
    return Lines(k, hi, upper > lower, lo)


def activation_lines(op: ReLUOp | SShapedOp, lower: Tensor, upper: Tensor) -> Lines:
    """Parallel lines of any element-wise activation op."""
    if isinstance(op, ReLUOp):
        return relu_relaxation(lower, upper, op.negative_slope)
    return s_shaped_relaxation(op, lower, upper)


__all__ = ["Lines", "activation_lines", "relu_relaxation", "s_shaped_relaxation"]
