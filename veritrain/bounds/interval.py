"""Naive interval propagation (IBP; DiffAI's box domain)."""
from __future__ import annotations

import torch
from torch import Tensor

from veritrain.bounds.base import DOMAINS, Ball, Domain
from veritrain.bounds.ops import AffineOp, LinearOp, Op, ReLUOp, ReshapeOp, ResidualOp, SpecOp


class FoldedSpecOp(AffineOp):
    """C (W z + b) as one per-sample affine op with weight C W (B, S, n) and bias C b.

    Interval arithmetic through C W is tighter than through W and then C (IBP's elision of the last
    layer, Gowal et al.; what auto_LiRPA's IBP does with a specification matrix).
    """

    def __init__(self, spec: SpecOp, last: LinearOp) -> None:
        self.weight = spec.spec @ last.layer.weight  # (B, S, n)
        b = last.layer.bias
        self._bias = None if b is None else (spec.spec @ b).unsqueeze(1)  # (B, 1, S)
        self.in_shape, self.out_shape = last.in_shape, spec.out_shape

    def interval(self, mid: Tensor, half: Tensor) -> tuple[Tensor, Tensor]:
        c = torch.bmm(self.weight, mid.unsqueeze(2)).squeeze(2) * 0.5
        if self._bias is not None:
            c = c + self._bias.squeeze(1)
        return c, torch.bmm(self.weight.abs(), half.unsqueeze(2)).squeeze(2) * 0.5

    def linear(self, x: Tensor, weight_fn=None) -> Tensor:
        w = self.weight if weight_fn is None else weight_fn(self.weight)
        return torch.einsum("bsn,bmn->bms", w, x)

    def transpose(self, a: Tensor) -> Tensor:
        return torch.einsum("bsn,bms->bmn", self.weight, a)

    def bias(self) -> Tensor | None:
        return self._bias


def fold_spec(ops: list[Op]) -> list[Op]:
    """Merge a final specification C into the Linear layer before it (see `FoldedSpecOp`)."""
    if len(ops) >= 2 and isinstance(ops[-1], SpecOp) and isinstance(ops[-2], LinearOp):
        return [*ops[:-2], FoldedSpecOp(ops[-1], ops[-2])]
    return ops


def interval_step(op: Op, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """Propagate an element-wise box (B, *in_shape) through one op."""
    if isinstance(op, ReshapeOp):  # Flatten / Identity: exact, no centre/radius round trip
        shape = (lower.shape[0], *op.out_shape)
        return lower.reshape(shape), upper.reshape(shape)
    if isinstance(op, AffineOp):
        c, r = op.interval(upper + lower, upper - lower)
        return c - r, c + r
    if isinstance(op, ReLUOp):
        return torch.relu(lower), torch.relu(upper)
    if isinstance(op, ResidualOp):
        outs = [interval_ops(branch, lower, upper) for branch in op.branches]
        return sum(o[0] for o in outs), sum(o[1] for o in outs)  # type: ignore[return-value]
    raise TypeError(f"interval domain: unsupported op {type(op).__name__}")


def interval_ops(ops: list[Op], lower: Tensor, upper: Tensor,
                 record: list[tuple[Tensor, Tensor]] | None = None) -> tuple[Tensor, Tensor]:
    """Interval propagation through ops; with `record`, the input box of every ReLU is appended to it
    (network order, nested blocks included) for bound regularisers (Shi et al. 2021)."""
    for op in ops:
        if record is not None and isinstance(op, ReLUOp):
            record.append((lower, upper))
        if record is not None and isinstance(op, ResidualOp):
            outs = [interval_ops(branch, lower, upper, record) for branch in op.branches]
            lower, upper = sum(o[0] for o in outs), sum(o[1] for o in outs)  # type: ignore[assignment]
            continue
        lower, upper = interval_step(op, lower, upper)
    return lower, upper


def interval_preactivations(
    model: "torch.nn.Module", ball: Ball, spec: Tensor | None = None
) -> tuple[Tensor, Tensor, list[tuple[Tensor, Tensor]]]:
    """Interval bounds of `spec @ model(x')` over the ball (as the `interval` domain computes them) and the
    pre-activation box (lower, upper) of every ReLU, in network order: what IBP training and its
    regularisers need from one pass."""
    from veritrain.bounds.base import with_spec
    from veritrain.bounds.ops import to_ops

    ops = fold_spec(with_spec(to_ops(model, tuple(ball.x.shape[1:])), spec))
    record: list[tuple[Tensor, Tensor]] = []
    lower, upper = ball.box()
    if ball.norm == "l2" and ops and isinstance(ops[0], AffineOp):
        lower, upper = Interval._first_affine_l2(ops[0], ball)
        ops = ops[1:]
    lower, upper = interval_ops(ops, lower, upper, record)
    return lower, upper, record


@DOMAINS.register("interval")
class Interval(Domain):
    """Box propagation: centre through W, radius through |W| (Gowal et al.'s IBP form)."""

    name = "interval"

    def bounds(self, ops: list[Op], ball: Ball) -> tuple[Tensor, Tensor]:
        ops = fold_spec(ops)
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
