"""Naive interval propagation (IBP; DiffAI's box domain)."""
from __future__ import annotations

import torch
from torch import Tensor

from veritrain.bounds.base import DOMAINS, Ball, Domain
from veritrain.bounds.ops import AffineOp, Op, ReLUOp, ReshapeOp, ResidualOp


def interval_step(op: Op, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """Propagate an element-wise box (B, *in_shape) through one op."""
    if isinstance(op, ReshapeOp):  # Flatten / Identity: exact, no centre/radius round trip
        shape = (lower.shape[0], *op.out_shape)
        return lower.reshape(shape), upper.reshape(shape)
    if isinstance(op, AffineOp):
        centre, radius = ((upper + lower) / 2).unsqueeze(1), ((upper - lower) / 2).unsqueeze(1)
        c, r = op.affine(centre).squeeze(1), op.abs_linear(radius).squeeze(1)
        return c - r, c + r
    if isinstance(op, ReLUOp):
        return lower.clamp(min=0), upper.clamp(min=0)
    if isinstance(op, ResidualOp):
        outs = [interval_ops(branch, lower, upper) for branch in op.branches]
        return sum(o[0] for o in outs), sum(o[1] for o in outs)  # type: ignore[return-value]
    raise TypeError(f"interval domain: unsupported op {type(op).__name__}")


def interval_ops(ops: list[Op], lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    for op in ops:
        lower, upper = interval_step(op, lower, upper)
    return lower, upper


@DOMAINS.register("interval")
class Interval(Domain):
    """Box propagation: centre through W, radius through |W| (Gowal et al.'s IBP form)."""

    name = "interval"

    def bounds(self, ops: list[Op], ball: Ball) -> tuple[Tensor, Tensor]:
        lower, upper = ball.box()
        first = ops[0] if ops else None
        if ball.norm == "l2" and isinstance(first, AffineOp):
            # tighter first layer over the L2 ball: exact bounds of one affine map, intersected with the box
            lower, upper = self._first_affine_l2(first, ball)
            ops = ops[1:]
        return interval_ops(ops, lower, upper)

    @staticmethod
    def _first_affine_l2(op: AffineOp, ball: Ball) -> tuple[Tensor, Tensor]:
        box_l, box_u = interval_step(op, *ball.box())
        centre = op.forward(ball.x)
        ones = torch.ones_like(ball.x).unsqueeze(1)
        row_norm = op.linear(ones, torch.square).squeeze(1).clamp(min=0).sqrt()
        radius = ball.eps_view().reshape(-1, *([1] * (row_norm.dim() - 1))) * row_norm
        return torch.maximum(box_l, centre - radius), torch.minimum(box_u, centre + radius)
