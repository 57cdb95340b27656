"""Symbolic interval analysis (ReluVal, Wang et al. USENIX Security 2018; paper Section III): the `symbolic` table.

Every neuron keeps two linear equations of the input, Eq_low(x) <= z(x) <= Eq_up(x). Affine ops mix
them by weight signs (W+ Eq_low + W- Eq_up for the lower equation); a ReLU whose concrete bounds
straddle zero concretises them. The input-side machinery here (`InputSpace`, the leading affine chain)
is shared with the symbolic linear relaxation (`symbolic_linear.py`).

Representation. An equation over the input is a coefficient tensor G of shape (B, M, *shape) plus a
constant c (B, *shape): z = sum_m G[:, m] v_m + c. The first d = numel(x[0]) variables v are the input:
- L-inf: v = t in [0, 1]^d with x' = lo + (hi - lo)·t, where [lo, hi] = B_eps(x) ∩ [0, 1] is a box;
  every variable then ranges over [0, 1] and concretisation is a sum of min(G, 0) / max(G, 0).
- L2: v = x' itself, concretised by `Ball.concretize` (box bound and the L2 dual norm, the tighter).
The network's leading affine ops (before the first ReLU) are applied once to an identity of batch size 1,
shared by all samples: the first layer's equations are its weight matrix, scaled column-wise by
(hi - lo) for L-inf; no identity is pushed through the first layer per sample. For L-inf balls on
networks that start with convolutions, the input columns are instead compressed by colour
(`colouring.py`) until the first dense op, where they are expanded to one per pixel.
"""

from __future__ import annotations

import torch
from torch import Tensor

from veritrain.bounds.base import DOMAINS, Ball, Domain
from veritrain.bounds.colouring import Colouring, colouring_for
from veritrain.bounds.graph import Table, forward, reads_only
from veritrain.bounds.interval import (
    FoldedSpecOp,
    fold_spec,
    first_affine_l2,
    interval_ops,
    interval_step,
)
from veritrain.bounds.ops import AddOp, AffineOp, CatOp, MaxPool2dOp, Op, ReLUOp, SShapedOp, SpecOp
from veritrain.bounds.relaxations import s_shaped_relaxation

Box = tuple[Tensor, Tensor]
Eqs = tuple[Tensor, Tensor, Tensor, Tensor]  # (G_low, c_low, G_up, c_up)


def leading_chain(ops: list[Op]) -> list[AffineOp]:
    """The sample-independent affine ops at the start of the network: a chain from the input (stops at an
    activation, a join, the spec, or an op whose output another branch also reads)."""
    chain: list[AffineOp] = []
    prev: Op | None = None
    for op in ops:
        if not isinstance(op, AffineOp) or isinstance(op, (SpecOp, FoldedSpecOp)) or op.src != (prev,):
            break
        chain.append(op)
        prev = op
    while chain and not reads_only(ops[len(chain) :], chain[-1]):
        chain.pop()  # a later op reads the input or an inner op of the chain: start the walk earlier
    return chain


def initial_box(chain: list[AffineOp], ball: Ball) -> Box:
    """Interval bounds after the leading chain, computed exactly as the `interval` domain does."""
    if not chain:
        return ball.box()
    if ball.norm == "l2":
        return interval_ops(chain[1:], *first_affine_l2(chain[0], ball))
    return interval_ops(chain, *ball.box())


class InputSpace:
    """The input variables of a symbolic form and their concretisation (see the module docstring)."""

    def __init__(self, ball: Ball) -> None:
        self.ball = ball
        self.lo, self.hi = ball.box()
        self.unit = ball.norm == "linf"  # input variables are t in [0, 1]^d
        self.batch = ball.x.shape[0]
        self.in_shape = tuple(ball.x.shape[1:])
        self.d = ball.x[0].numel()

    def start(self, chain: list[AffineOp]) -> tuple[Tensor, Tensor]:
        """(G, c) of the output of the leading affine chain: its weight matrix, not a pushed identity."""
        x = self.ball.x
        g = torch.eye(self.d, dtype=x.dtype, device=x.device).reshape(1, self.d, *self.in_shape)
        base = self.lo if self.unit else torch.zeros_like(x[:1])
        c = base
        for op in chain:
            g = op.linear(g)  # batch 1: the dense weight matrix, shared by every sample
            c = op.forward(c)
        out_dims = (1,) * (g.dim() - 2)
        if self.unit:
            g = g * (self.hi - self.lo).reshape(self.batch, self.d, *out_dims)
        else:
            g = g.expand(self.batch, *g.shape[1:])
            c = c.expand(self.batch, *c.shape[1:])
        return g, c

    def start_coloured(self, chain: list[AffineOp], colouring: Colouring) -> tuple[Tensor, Tensor]:
        """Like `start`, with one column per colour of `colouring` (L-inf only; see `colouring`)."""
        g, c = colouring.start(self.hi - self.lo), self.lo
        for op in chain:
            g, c = op.linear(g), op.forward(c)
        return g, c

    def concretize(self, g: Tensor, c: Tensor, lower: bool = True) -> Tensor:
        """min (lower) or max over all variables of G·v + c; columns past d range over [0, 1]."""
        if self.unit:
            part = g.clamp(max=0) if lower else g.clamp(min=0)
            return c + part.sum(1)
        b, shape = g.shape[0], g.shape[2:]
        rows = g[:, : self.d].flatten(2).transpose(1, 2).reshape(b, -1, *self.in_shape)
        val = self.ball.concretize(rows, lower).reshape(b, *shape)
        if g.shape[1] > self.d:
            err = g[:, self.d :]
            val = val + (err.clamp(max=0) if lower else err.clamp(min=0)).sum(1)
        return c + val


def local_colouring(
    ops: list[Op], chain: list[AffineOp], space: InputSpace, enabled: bool
) -> tuple[Colouring, int] | None:
    """The input colouring of the local layers after the chain (L-inf only), or None for dense columns."""
    found = colouring_for(ops, space.in_shape, space.ball.x) if enabled and space.unit else None
    return found if found is not None and found[1] > len(chain) else None


def affine_const(op: AffineOp, c: Tensor) -> Tensor:
    """The constant of an equation through an affine op: W c + b."""
    return op.affine(c.unsqueeze(1)).squeeze(1)


# ---- the table: a value is (equations, box) ------------------------------------------------------

Value = tuple[Eqs, Box]


def _affine(dom: "Symbolic", op: AffineOp, v: Value) -> Value:
    (gl, cl, gu, cu), box = v
    box = interval_step(op, *box)
    if gl is gu and cl is cu:  # identical equations: one product (no relaxation happened yet)
        g, c = op.linear(gl), affine_const(op, cl)
        return (g, c, g, c), box
    # W+ low + W- up and W+ up + W- low, as W·centre -+ |W|·radius (two products, not four)
    g_mid, g_rad = op.linear((gl + gu) / 2), op.abs_linear((gu - gl) / 2)
    c_mid = affine_const(op, (cl + cu) / 2)
    c_rad = op.abs_linear(((cu - cl) / 2).unsqueeze(1)).squeeze(1)
    return (g_mid - g_rad, c_mid - c_rad, g_mid + g_rad, c_mid + c_rad), box


def _concrete(dom: "Symbolic", v: Value) -> Box:
    """Concrete bounds of the equations intersected with the interval box."""
    (gl, cl, gu, cu), box = v
    space = dom.space
    return torch.maximum(space.concretize(gl, cl, True), box[0]), torch.minimum(space.concretize(gu, cu, False), box[1])


def _relu(dom: "Symbolic", op: ReLUOp, v: Value) -> Value:
    """ReluVal's rule, for LeakyReLU max(z, a·z) too (a = 0: ReLU). With concrete bounds [l, u]:
    - u <= 0: both equations times a;  l >= 0: both kept (identity);
    - l < 0 < u: Eq_low -> a·Eq_low (f(z) >= a·z); Eq_up is kept if its own concrete minimum is >= 0
      (then f(z) <= f(Eq_up) = Eq_up), else it becomes the constant u (f(z) <= u)."""
    (gl, cl, gu, cu), _ = v
    space, a = dom.space, op.negative_slope
    lower, upper = _concrete(dom, v)
    active, inactive = lower >= 0, upper <= 0
    unstable = ~(active | inactive)
    up_min = space.concretize(gu, cu, True)
    keep_up = active | (unstable & (up_min >= 0))
    zero = torch.zeros_like(cl)
    if a == 0.0:
        a_low, a_up = active.to(gl.dtype).unsqueeze(1), keep_up.to(gu.dtype).unsqueeze(1)
        new_l = (gl * a_low, torch.where(active, cl, zero))
        new_u = (gu * a_up, torch.where(keep_up, cu, torch.where(unstable, upper, zero)))
        return (*new_l, *new_u), (lower.clamp(min=0), upper.clamp(min=0))
    s_low = torch.where(active, torch.ones_like(cl), torch.full_like(cl, a))
    s_up = torch.where(keep_up, torch.ones_like(cu), torch.where(unstable, zero, torch.full_like(cu, a)))
    new_l = (gl * s_low.unsqueeze(1), cl * s_low)
    new_u = (gu * s_up.unsqueeze(1), torch.where(unstable & ~keep_up, upper, cu * s_up))
    return (*new_l, *new_u), (op.forward(lower), op.forward(upper))


def _s_shaped(dom: "Symbolic", op: SShapedOp, v: Value) -> Value:
    """Parallel lines k·z + lo <= f(z) <= k·z + hi (k >= 0), applied to Eq_low and Eq_up."""
    (gl, cl, gu, cu), _ = v
    lower, upper = _concrete(dom, v)
    lines = s_shaped_relaxation(op, lower, upper)
    assert lines.lower_bias is not None  # s-shaped relaxations are parallel lines with both biases
    k = lines.slope
    new = (gl * k.unsqueeze(1), cl * k + lines.lower_bias, gu * k.unsqueeze(1), cu * k + lines.upper_bias)
    return new, (op.forward(lower), op.forward(upper))


def _maxpool(dom: "Symbolic", op: MaxPool2dOp, v: Value) -> Value:
    """DeepPoly's max relaxation: max >= x_j (j: the largest lower bound of the window), so Eq_low_j; the
    upper equation is Eq_up_j where x_j dominates the window, else the constant max_i u_i."""
    (gl, cl, gu, cu), _ = v
    lower, upper = _concrete(dom, v)
    idx, dom_j, _, umax = op.select(lower, upper)
    pick = lambda g: op.gather(g, idx)  # noqa: E731
    pick_c = lambda c: op.gather(c.unsqueeze(1), idx).squeeze(1)  # noqa: E731
    keep = dom_j.reshape(idx.shape[0], *op.out_shape)
    umax = umax.reshape(keep.shape)
    new_gu = pick(gu) * keep.to(gu.dtype).unsqueeze(1)
    new_cu = torch.where(keep, pick_c(cu), umax)
    return (pick(gl), pick_c(cl), new_gu, new_cu), (op.forward(lower), op.forward(upper))


def _add(dom: "Symbolic", op: AddOp, *vs: Value) -> Value:
    eqs = tuple(sum(v[0][i] for v in vs) for i in range(4))
    return eqs, (sum(v[1][0] for v in vs), sum(v[1][1] for v in vs))  # type: ignore[return-value]


def _cat(dom: "Symbolic", op: CatOp, *vs: Value) -> Value:
    eqs = tuple(op.cat([v[0][i] for v in vs], 2 if i % 2 == 0 else 1) for i in range(4))
    return eqs, (op.cat([v[1][0] for v in vs]), op.cat([v[1][1] for v in vs]))  # type: ignore[return-value]


TABLE: Table = {
    AffineOp: _affine,
    ReLUOp: _relu,
    SShapedOp: _s_shaped,
    MaxPool2dOp: _maxpool,
    AddOp: _add,
    CatOp: _cat,
}


@DOMAINS.register("symbolic")
class Symbolic(Domain):
    """ReluVal symbolic intervals: separate lower/upper equations, concretised at unstable ReLUs.

    Interval bounds are propagated alongside and intersected at every activation and at the output, so the
    result is never looser than the `interval` domain. Rules: see the table above (`_relu`, `_maxpool`, ...).
    """

    name = "symbolic"
    table = TABLE

    def __init__(self, colour: bool = True) -> None:
        self.colour = colour  # compress the input columns through the local layers (`colouring`)
        self.space: InputSpace

    def bounds(self, ops: list[Op], ball: Ball) -> tuple[Tensor, Tensor]:
        ops = fold_spec(ops)  # the final C W: tighter alongside interval bounds, same symbolic form
        self.space = space = InputSpace(ball)
        chain = leading_chain(ops)
        box = initial_box(chain, ball)
        found = local_colouring(ops, chain, space, self.colour)
        if found is not None:
            colouring, n_local = found
            g, c = space.start_coloured(chain, colouring)
            (gl, cl, gu, cu), box = self._run(ops[len(chain) : n_local], ((g, c, g, c), box))
            gl_px = colouring.expand(gl)
            gu_px = gl_px if gu is gl else colouring.expand(gu)  # keep the one-product shortcut
            (gl, cl, gu, cu), box = self._run(ops[n_local:], ((gl_px, cl, gu_px, cu), box))
        else:
            g, c = space.start(chain)
            (gl, cl, gu, cu), box = self._run(ops[len(chain) :], ((g, c, g, c), box))
        lower = torch.maximum(space.concretize(gl, cl, True), box[0])
        upper = torch.minimum(space.concretize(gu, cu, False), box[1])
        return lower, upper

    def _run(self, ops: list[Op], value: Value) -> Value:
        return forward(ops, TABLE, value, self, self.name)
