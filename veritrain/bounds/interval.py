"""Naive interval propagation (IBP; DiffAI's box domain): the `interval` table.

A value is a box (lower, upper) of shape (B, *shape). Affine ops map centre and radius (W·c + b, |W|·r);
every activation and max pooling is monotone non-decreasing, so its box is [f(l), f(u)]; a sum adds the boxes.
The other domains propagate this box alongside their own form (`interval_step`) and intersect.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from veritrain.bounds.base import DOMAINS, Ball, Domain
from veritrain.bounds.graph import Table, forward, rule_for
from veritrain.bounds.ops import (
    ActivationOp,
    AddOp,
    AffineOp,
    CatOp,
    LinearOp,
    MaxPool2dOp,
    Op,
    ReLUOp,
    ReshapeOp,
    SpecOp,
)
from veritrain.validation import L2

Box = tuple[Tensor, Tensor]


class FoldedSpecOp(AffineOp):
    """C (W z + b) as one per-sample affine op with weight C W (B, S, n) and bias C b.

    Interval arithmetic through C W is tighter than through W and then C (IBP's elision of the last
    layer, Gowal et al.; what auto_LiRPA's IBP does with a specification matrix).
    """

    def __init__(self, spec: SpecOp, last: LinearOp) -> None:
        self.weight = spec.spec @ last.layer.weight  # (B, S, n)
        b = last.layer.bias
        self._bias = None if b is None else (spec.spec @ b).unsqueeze(1)  # (B, 1, S)
        self.in_shape, self.out_shape, self.src, self.where = last.in_shape, spec.out_shape, last.src, last.where

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
    """Merge a final specification C into the Linear layer before it (see `FoldedSpecOp`) when nothing else
    reads that layer."""
    if (
        len(ops) >= 2
        and isinstance(ops[-1], SpecOp)
        and isinstance(ops[-2], LinearOp)
        and ops[-1].src == (ops[-2],)
        and not any(ops[-2] in op.src for op in ops[:-2])
    ):
        return [*ops[:-2], FoldedSpecOp(ops[-1], ops[-2])]
    return ops


# ---- the table ----------------------------------------------------------------------------------


def _affine(dom: object, op: AffineOp, box: Box) -> Box:
    lower, upper = box
    c, r = op.interval(upper + lower, upper - lower)
    return c - r, c + r


def _reshape(dom: object, op: ReshapeOp, box: Box) -> Box:
    """Flatten / Identity: exact, no centre/radius round trip."""
    shape = (box[0].shape[0], *op.out_shape)
    return box[0].reshape(shape), box[1].reshape(shape)


def _monotone(dom: object, op: ActivationOp | MaxPool2dOp, box: Box) -> Box:
    return op.forward(box[0]), op.forward(box[1])


def _add(dom: object, op: AddOp, *boxes: Box) -> Box:
    return sum(b[0] for b in boxes), sum(b[1] for b in boxes)  # type: ignore[return-value]


def _cat(dom: object, op: CatOp, *boxes: Box) -> Box:
    return op.cat([b[0] for b in boxes]), op.cat([b[1] for b in boxes])


TABLE: Table = {
    AffineOp: _affine,
    ReshapeOp: _reshape,
    ActivationOp: _monotone,
    MaxPool2dOp: _monotone,
    AddOp: _add,
    CatOp: _cat,
}


def interval_step(op: Op, lower: Tensor, upper: Tensor) -> Box:
    """Propagate an element-wise box (B, *in_shape) through one single-input op (the table's rule)."""
    return rule_for(TABLE, op, "interval")(None, op, (lower, upper))


def interval_ops(ops: Sequence[Op], lower: Tensor, upper: Tensor, record: list[Box] | None = None) -> Box:
    """Interval propagation through ops; with `record`, the input box of every ReLU (and LeakyReLU) is appended
    to it in network order, for bound regularisers (Shi et al. 2021)."""
    visit = None
    if record is not None:

        def visit(op: Op, inputs: list[Box]) -> None:
            if isinstance(op, ReLUOp):
                record.append(inputs[0])

    return forward(list(ops), TABLE, (lower, upper), None, "interval", visit)


def first_affine_l2(op: AffineOp, ball: Ball) -> Box:
    """Tighter first layer over the L2 ball: exact bounds of one affine map, intersected with the box."""
    box_l, box_u = interval_step(op, *ball.box())
    centre = op.forward(ball.x)
    ones = torch.ones_like(ball.x).unsqueeze(1)
    row_norm = op.linear(ones, torch.square).squeeze(1).clamp(min=0).sqrt()
    radius = ball.eps_view().reshape(-1, *([1] * (row_norm.dim() - 1))) * row_norm
    return torch.maximum(box_l, centre - radius), torch.minimum(box_u, centre + radius)


def start_box(ops: list[Op], ball: Ball) -> tuple[Box, int]:
    """The input box and how many ops it already covers: for L2 balls the first op when it is affine and
    reads the input (`first_affine_l2`)."""
    if (
        ball.norm == L2
        and ops
        and isinstance(ops[0], AffineOp)
        and ops[0].src == (None,)
        and not any(None in op.src for op in ops[1:])
    ):
        return first_affine_l2(ops[0], ball), 1
    return ball.box(), 0


def interval_preactivations(
    model: "torch.nn.Module", ball: Ball, spec: Tensor | None = None
) -> tuple[Tensor, Tensor, list[Box]]:
    """Interval bounds of `spec @ model(x')` over the ball (as the `interval` domain computes them) and the
    pre-activation box (lower, upper) of every ReLU, in network order: what IBP training and its
    regularisers need from one pass."""
    from veritrain.bounds.base import with_spec
    from veritrain.bounds.ops import to_ops

    ops = fold_spec(with_spec(to_ops(model, tuple(ball.x.shape[1:])), spec))
    record: list[Box] = []
    (lower, upper), first = start_box(ops, ball)
    lower, upper = interval_ops(ops[first:], lower, upper, record)
    return lower, upper, record


@DOMAINS.register("interval")
class Interval(Domain):
    """Box propagation: centre through W, radius through |W| (Gowal et al.'s IBP form)."""

    name = "interval"
    table = TABLE

    def bounds(self, ops: list[Op], ball: Ball) -> tuple[Tensor, Tensor]:
        ops = fold_spec(ops)
        (lower, upper), first = start_box(ops, ball)
        return interval_ops(ops[first:], lower, upper)

    def sample_bytes(self, ops: list[Op], in_shape: tuple[int, ...], element_size: int) -> int:
        return 0  # the memory of a forward pass: never chunked

    _first_affine_l2 = staticmethod(first_affine_l2)
