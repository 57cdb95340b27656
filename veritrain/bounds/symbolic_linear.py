"""Symbolic linear relaxation (Neurify, Wang et al. NeurIPS 2018): the paper's default analysis (Section III).

Each neuron is ONE linear form z = G·v + c over the input variables v (see `symbolic.InputSpace`) and
one fresh error symbol e_k in [0, 1] per unstable ReLU met so far, carried symbolically to the output.
At an unstable ReLU with concrete bounds l < 0 < u, Neurify's parallel relaxation
    lambda·z  <=  relu(z)  <=  lambda·(z - l),    lambda = u / (u - l),
is written as relu(z) = lambda·z + (-lambda·l)·e_new with e_new in [0, 1]: one coefficient set plus an
offset, not two equation sets. Stable neurons are the identity (l >= 0) or 0 (u <= 0).

Error symbols are just more columns of G (B, d + m, *shape), kept as blocks: a ReLU appends, per sample, one column per
unstable neuron (padded to the batch maximum with zero columns), so memory grows with the number of
unstable ReLUs; chunk the samples (`veritrain.evaluation.vra`) to bound it. Interval bounds are
propagated alongside and intersected with the concretised ones at every ReLU and at the output: the
result is never looser than the `interval` domain. The spec C (SpecOp) is applied like any affine op.
"""
from __future__ import annotations

import torch
from torch import Tensor

from veritrain.bounds.base import DOMAINS, Ball, Domain
from veritrain.bounds.colouring import Colouring, dense_head, error_colouring
from veritrain.bounds.interval import fold_spec, interval_step
from veritrain.bounds.ops import AffineOp, Op, ReLUOp, ResidualOp
from veritrain.bounds.symbolic import Box, InputSpace, affine_const, initial_box, leading_chain, local_colouring

Form = tuple[list[Tensor], Tensor]  # (column blocks, each (B, M_i, *shape); constant c (B, *shape))


def concretize_blocks(space: InputSpace, blocks: list[Tensor], c: Tensor) -> tuple[Tensor, Tensor]:
    """Lower and upper bounds of a form: block 0 holds the input columns, later blocks error symbols in [0, 1]."""
    if space.unit:  # every variable in [0, 1]: lower = c + sum min(G, 0), upper = c + sum G - sum min(G, 0)
        neg = sum(b.clamp(max=0).sum(1) for b in blocks)
        total = sum(b.sum(1) for b in blocks)
        return c + neg, c + total - neg  # type: ignore[operator]
    lower, upper = space.concretize(blocks[0], c, True), space.concretize(blocks[0], c, False)
    for b in blocks[1:]:
        neg = b.clamp(max=0).sum(1)
        lower, upper = lower + neg, upper + b.sum(1) - neg
    return lower, upper


def use_colours(n_new: int, colouring: Colouring | None, always: bool = False) -> bool:
    """Whether `relax_relu` gives its n_new error symbols one column per colour of `colouring`: when there
    are more than twice as many symbols as colours, because expanding the colour columns back to one per
    neuron costs about as much again (measured on MNIST and CIFAR Small), or `always`."""
    return colouring is not None and n_new > 0 and (always or n_new > 2 * colouring.n)


def relax_relu(blocks: list[Tensor], c: Tensor, lower: Tensor, upper: Tensor,
               colouring: Colouring | None = None, always: bool = False) -> tuple[Form, int]:
    """Neurify's relaxation of relu(z) for z = G·v + c in [lower, upper]; returns the form and #new symbols.

    relu(z) = lambda·z + (-lambda·l)·e_new: the existing blocks are scaled by lambda per neuron and one block
    of new columns (one per unstable neuron of each sample, zero-padded to the batch maximum) is appended.
    With a `colouring` of the ReLU's neurons (`error_colouring`) and `use_colours`, the new block has one
    column per colour instead: column k holds the offsets of the unstable neurons of colour k.
    """
    unstable = (lower < 0) & (upper > 0)
    safe = torch.where(unstable, upper - lower, torch.ones_like(upper))
    lam = torch.where(unstable, upper / safe, (lower >= 0).to(upper.dtype))
    offset = torch.where(unstable, -lam * lower, torch.zeros_like(lower))  # >= 0, carried by e_new
    scale = lam.unsqueeze(1)
    blocks, c = [b * scale for b in blocks], c * lam
    mask = unstable.flatten(1)
    n_new = int(mask.sum(1).max()) if mask.numel() else 0  # one host sync per ReLU: the new column count
    if n_new == 0:
        return (blocks, c), 0
    if use_colours(n_new, colouring, always):
        return (blocks + [colouring.start(offset)], c), n_new  # type: ignore[union-attr]
    b, n = mask.shape
    idx = torch.argsort(mask.to(torch.int8), dim=1, descending=True, stable=True)[:, :n_new]  # (B, n_new)
    vals = offset.flatten(1).gather(1, idx)  # 0 on padding columns (offset is 0 off unstable neurons)
    cols = torch.zeros(b, n_new, n, dtype=c.dtype, device=c.device).scatter(2, idx.unsqueeze(2), vals.unsqueeze(2))
    return (blocks + [cols.reshape(b, n_new, *c.shape[1:])], c), n_new


def expand(colouring: Colouring, g: Tensor, weight: Tensor | None, rows: Tensor | None) -> Tensor:
    """Colour columns -> one column per pixel or neuron (only `rows` of them, if given), fused with the dense
    layer `weight` when there is one (`Colouring.expand_linear`)."""
    if weight is not None:
        return colouring.expand_linear(g, weight, rows)
    full = colouring.expand(g)
    if rows is None:
        return full
    return full.gather(1, rows.view(*rows.shape, *[1] * (full.dim() - 2)).expand(-1, -1, *full.shape[2:]))


@DOMAINS.register("symbolic-linear")
class SymbolicLinear(Domain):
    """One linear form per neuron plus one error symbol per unstable ReLU (the authors' representation).

    The columns of the form are kept as a list of blocks (the input block, then one block per ReLU layer),
    so appending error symbols never copies the earlier columns. After `bounds`, `error_symbols` holds the
    number of error symbols per sample (padded to the batch maximum) of the last call.
    """

    name = "symbolic-linear"

    def __init__(self, colour: bool = True, colour_errors: bool | None = None) -> None:
        self.error_symbols = 0
        self.colour = colour  # compress the input columns through the local layers (`colouring`)
        # error symbols of ReLUs inside those layers by colour too (with `colour`): None = when that means
        # much fewer columns (`use_colours`), True = always, False = never
        self.colour_errors = colour_errors

    def bounds(self, ops: list[Op], ball: Ball) -> tuple[Tensor, Tensor]:
        ops = fold_spec(ops)  # the final C W: tighter alongside interval bounds, same symbolic form
        space = InputSpace(ball)
        chain = leading_chain(ops)
        box = initial_box(chain, ball)
        self.error_symbols = 0
        found = local_colouring(ops, chain, space, self.colour)
        if found is not None:  # one column per colour through the local layers, per pixel after them
            colouring, n_local = found
            g, c = space.start_coloured(chain, colouring)
            (blocks, c), box, coloured = self._run_local(ops[len(chain):n_local], ([g], c), box, space)
            coloured[0] = (colouring, None)
            head = ops[n_local:n_local + dense_head(ops[n_local:], colouring.out_shape)]
            plain = [b for i, b in enumerate(blocks) if i not in coloured]
            (plain, c), box = self._run(head, (plain, c), box, space)  # c, box, per-neuron error symbols
            weight = head[-1].layer.weight if head else None  # fuse the expansion with the dense layer
            expanded = [expand(col, blocks[i], weight, rows) for i, (col, rows) in sorted(coloured.items())]
            (blocks, c), box = self._run(ops[n_local + len(head):], ([*expanded, *plain], c), box, space)
        else:
            g, c = space.start(chain)
            (blocks, c), box = self._run(ops[len(chain):], ([g], c), box, space)
        lower, upper = concretize_blocks(space, blocks, c)
        return torch.maximum(lower, box[0]), torch.minimum(upper, box[1])

    def _run(self, ops: list[Op], form: Form, box: Box, space: InputSpace) -> tuple[Form, Box]:
        for op in ops:
            form, box = self._step(op, form, box, space)
        return form, box

    def _run_local(self, ops: list[Op], form: Form, box: Box,
                   space: InputSpace) -> tuple[Form, Box, dict[int, tuple[Colouring, Tensor | None]]]:
        """`_run` through the local layers, where a ReLU's error symbols may share columns by colour
        (`error_colouring`); returns, per coloured block index, its colouring and the neurons (B, r) whose
        symbols it carries (the unstable ones, padded), so that only those are expanded."""
        coloured: dict[int, tuple[Colouring, Tensor | None]] = {}
        for i, op in enumerate(ops):
            col = None
            if isinstance(op, ReLUOp) and self.colour_errors is not False:
                col = error_colouring(ops[i + 1:], op.out_shape, form[1])
            before = self.error_symbols
            form, box = self._step(op, form, box, space, col)
            if use_colours(self.error_symbols - before, col, bool(self.colour_errors)):
                # after the ReLU the box is [max(l, 0), max(u, 0)]: l <= 0 < u holds every unstable neuron
                mask = ((box[0] <= 0) & (box[1] > 0)).flatten(1)
                rows = torch.argsort(mask.to(torch.int8), dim=1, descending=True, stable=True)
                coloured[len(form[0]) - 1] = (col, rows[:, :int(mask.sum(1).max())])  # type: ignore[arg-type]
        return form, box, coloured

    def _step(self, op: Op, form: Form, box: Box, space: InputSpace,
              colouring: Colouring | None = None) -> tuple[Form, Box]:
        blocks, c = form
        if isinstance(op, AffineOp):
            return ([op.linear(b) for b in blocks], affine_const(op, c)), interval_step(op, *box)
        if isinstance(op, ReLUOp):
            lower, upper = concretize_blocks(space, blocks, c)
            lower, upper = torch.maximum(lower, box[0]), torch.minimum(upper, box[1])
            form, n_new = relax_relu(blocks, c, lower, upper, colouring, bool(self.colour_errors))
            self.error_symbols += n_new
            return form, (lower.clamp(min=0), upper.clamp(min=0))
        if isinstance(op, ResidualOp):
            return self._residual(op, form, box, space)
        raise TypeError(f"symbolic-linear domain: unsupported op {type(op).__name__}")

    def _residual(self, op: ResidualOp, form: Form, box: Box, space: InputSpace) -> tuple[Form, Box]:
        """Sum of branches: shared blocks add up; each branch's new error symbols are distinct variables."""
        n = len(form[0])
        outs = [self._run(branch, form, box, space) for branch in op.branches]
        blocks = [sum(o[0][0][i] for o in outs) for i in range(n)]
        blocks += [b for o in outs for b in o[0][0][n:]]
        c = sum(o[0][1] for o in outs)
        return (blocks, c), (sum(o[1][0] for o in outs), sum(o[1][1] for o in outs))  # type: ignore[return-value]
