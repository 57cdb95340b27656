"""Symbolic linear relaxation (Neurify, Wang et al. NeurIPS 2018): the paper's default analysis (Section III).

Each neuron is ONE linear form z = G·v + c over the input variables v (see `symbolic.InputSpace`) and
one fresh error symbol e_k in [0, 1] per unstable ReLU met so far, carried symbolically to the output.
At an unstable ReLU with concrete bounds l < 0 < u, Neurify's parallel relaxation
    lambda·z  <=  relu(z)  <=  lambda·(z - l),    lambda = u / (u - l),
is written as relu(z) = lambda·z + (-lambda·l)·e_new with e_new in [0, 1]: one coefficient set plus an
offset, not two equation sets. Stable neurons are the identity (l >= 0) or 0 (u <= 0).

Error symbols are just more columns of G (B, d + m, *shape): a ReLU appends, per sample, one column per
unstable neuron (padded to the batch maximum with zero columns), so memory grows with the number of
unstable ReLUs; chunk the samples (`veritrain.evaluation.vra`) to bound it. Interval bounds are
propagated alongside and intersected with the concretised ones at every ReLU and at the output: the
result is never looser than the `interval` domain. The spec C (SpecOp) is applied like any affine op.
"""
from __future__ import annotations

import torch
from torch import Tensor

from veritrain.bounds.base import DOMAINS, Ball, Domain
from veritrain.bounds.interval import interval_step
from veritrain.bounds.ops import AffineOp, Op, ReLUOp, ResidualOp
from veritrain.bounds.symbolic import Box, InputSpace, affine_const, initial_box, leading_chain

Form = tuple[Tensor, Tensor]  # (G (B, M, *shape), c (B, *shape))


def relax_relu(g: Tensor, c: Tensor, lower: Tensor, upper: Tensor) -> tuple[Form, int]:
    """Neurify's relaxation of relu(z) for z = G·v + c in [lower, upper]; returns the form and #new symbols."""
    unstable = (lower < 0) & (upper > 0)
    safe = torch.where(unstable, upper - lower, torch.ones_like(upper))
    lam = torch.where(unstable, upper / safe, (lower >= 0).to(upper.dtype))
    offset = torch.where(unstable, -lam * lower, torch.zeros_like(lower))  # >= 0, carried by e_new
    g, c = g * lam.unsqueeze(1), c * lam
    mask = unstable.flatten(1)
    n_new = int(mask.sum(1).max()) if mask.numel() else 0  # one host sync per ReLU: the new column count
    if n_new == 0:
        return (g, c), 0
    b, n = mask.shape
    idx = torch.argsort(mask.to(torch.int8), dim=1, descending=True, stable=True)[:, :n_new]  # (B, n_new)
    vals = offset.flatten(1).gather(1, idx)  # 0 on padding columns (offset is 0 off unstable neurons)
    cols = torch.zeros(b, n_new, n, dtype=g.dtype, device=g.device).scatter(2, idx.unsqueeze(2), vals.unsqueeze(2))
    return (torch.cat([g, cols.reshape(b, n_new, *g.shape[2:])], dim=1), c), n_new


@DOMAINS.register("symbolic-linear")
class SymbolicLinear(Domain):
    """One linear form per neuron plus one error symbol per unstable ReLU (the authors' representation).

    After `bounds`, `error_symbols` holds the total number of error symbols of the last call (padded
    per batch), for benchmarks and memory planning.
    """

    name = "symbolic-linear"

    def __init__(self) -> None:
        self.error_symbols = 0

    def bounds(self, ops: list[Op], ball: Ball) -> tuple[Tensor, Tensor]:
        space = InputSpace(ball)
        chain = leading_chain(ops)
        box = initial_box(chain, ball)
        self.error_symbols = 0
        (g, c), box = self._run(ops[len(chain):], space.start(chain), box, space)
        lower = torch.maximum(space.concretize(g, c, True), box[0])
        upper = torch.minimum(space.concretize(g, c, False), box[1])
        return lower, upper

    def _run(self, ops: list[Op], form: Form, box: Box, space: InputSpace) -> tuple[Form, Box]:
        for op in ops:
            form, box = self._step(op, form, box, space)
        return form, box

    def _step(self, op: Op, form: Form, box: Box, space: InputSpace) -> tuple[Form, Box]:
        g, c = form
        if isinstance(op, AffineOp):
            return (op.linear(g), affine_const(op, c)), interval_step(op, *box)
        if isinstance(op, ReLUOp):
            lower = torch.maximum(space.concretize(g, c, True), box[0])
            upper = torch.minimum(space.concretize(g, c, False), box[1])
            form, n_new = relax_relu(g, c, lower, upper)
            self.error_symbols += n_new
            return form, (lower.clamp(min=0), upper.clamp(min=0))
        if isinstance(op, ResidualOp):
            return self._residual(op, form, box, space)
        raise TypeError(f"symbolic-linear domain: unsupported op {type(op).__name__}")

    def _residual(self, op: ResidualOp, form: Form, box: Box, space: InputSpace) -> tuple[Form, Box]:
        """Sum of branches: shared columns add up; each branch's new error symbols are distinct variables."""
        m = form[0].shape[1]
        outs = [self._run(branch, form, box, space) for branch in op.branches]
        shared = sum(o[0][0][:, :m] for o in outs)
        extra = [o[0][0][:, m:] for o in outs if o[0][0].shape[1] > m]
        g = torch.cat([shared, *extra], dim=1) if extra else shared
        c = sum(o[0][1] for o in outs)
        return (g, c), (sum(o[1][0] for o in outs), sum(o[1][1] for o in outs))  # type: ignore[return-value]
