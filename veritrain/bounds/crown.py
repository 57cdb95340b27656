"""Backward linear bounds: `crown-ibp`, `crown` and `dual` (Wong & Kolter's dual network).

A bound on `A · z_out` is pushed backwards through the ops: an affine op adds `A · b` and maps
`A <- W^T A`; a ReLU is replaced by linear lines (the upper line u/(u-l) (z - l), a lower line s·z),
chosen per sign of A; a residual block pushes A through every branch and sums at the block input;
at the input the remaining linear function is minimised over the ball (`Ball.concretize`).

- `crown-ibp` (Zhang et al. 2020): intermediate ReLU bounds from interval propagation; only the
  specification is bounded backwards.
- `crown` (Zhang et al. 2018): intermediate bounds layer by layer, each by a backward pass from that
  layer's pre-activation (identity spec, neurons chunked), with auto_LiRPA's adaptive lower slope
  (1 where u >= -l, else 0).
- `dual`: the same with lower slope u/(u-l): the bound of Wong & Kolter's (2018) dual network, whose
  objective terms (`dual_objective_terms`) a Wong-et-al. trainer reuses.

Every intermediate bound is intersected with interval bounds (sound), so no domain here is ever
looser than `interval`; the final bound is intersected too.

- `crown-lirpa`: CROWN with auto_LiRPA's own intermediate-bound policy (`compute_bounds(method="CROWN")`
  with its default options `sparse_intermediate_bounds`, `sparse_intermediate_bounds_with_ibp`,
  `minimum_sparsity=0.9`, `compare_crown_with_ibp=False`), to reproduce its numbers: the reference
  of a layer is one interval step from the previous (refined) bounds; the neurons unstable under it
  for ANY sample of the batch get backward bounds that replace (are not intersected with) the
  reference, or all neurons do when more than 90 % are; the rest keep the reference; the final
  bound is not intersected. Sound, but looser than `crown` and dependent on the batch composition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from veritrain.bounds import graph
from veritrain.bounds.base import DOMAINS, Ball, Domain
from veritrain.bounds.interval import TABLE as INTERVAL, fold_spec, start_box
from veritrain.bounds.ops import (
    ActivationOp,
    AddOp,
    AffineOp,
    CatOp,
    MaxPool2dOp,
    Op,
    ReLUOp,
    SShapedOp,
    SpecOp,
)
from veritrain.bounds.relaxations import relu_relaxation, s_shaped_relaxation
from veritrain.validation import L2

LayerBounds = dict[Op, tuple[Tensor, Tensor]]  # activation / max-pool op -> input (lower, upper), (B, *shape)
SlopeRule = Callable[..., Tensor]  # (l, u, upper slope, negative slope a) -> lower slope of unstable neurons


def _adaptive_slope(l: Tensor, u: Tensor, upper_slope: Tensor, a: float = 0.0) -> Tensor:
    """auto_LiRPA's default: slope 1 where u >= -l (the line z is closer to ReLU), else 0 (a for LeakyReLU)."""
    if a == 0.0:
        return (u >= -l).to(u.dtype)
    return torch.where(u >= -l, torch.ones_like(u), torch.full_like(u, a))


def _dual_slope(l: Tensor, u: Tensor, upper_slope: Tensor, a: float = 0.0) -> Tensor:
    """Wong & Kolter (2018): the lower line parallel to the upper one, d = u / (u - l)."""
    return upper_slope


LOWER_SLOPES: dict[str, SlopeRule] = {"adaptive": _adaptive_slope, "dual": _dual_slope}


class ReluRelaxation:
    """Linear lines around ReLU (LeakyReLU) on [l, u]: s_lo·z <= f(z) <= s_up·z + b_up (exact when stable);
    the upper line is `relu_relaxation`'s chord, the lower slope the domain's `rule`."""

    def __init__(self, lower: Tensor, upper: Tensor, rule: SlopeRule, negative_slope: float = 0.0) -> None:
        lines = relu_relaxation(lower, upper, negative_slope)
        self.upper_slope, self.upper_intercept = lines.slope, lines.upper_bias
        args = (lower, upper, lines.slope) + ((negative_slope,) if negative_slope else ())
        self.lower_slope = torch.where(lines.unstable, rule(*args), lines.slope)

    def backward(self, a: Tensor) -> tuple[Tensor, Tensor]:
        """Lower-bound rule for A · relu(z): returns (A' with A · relu(z) >= A' · z + c, c (B, M))."""
        neg = a.clamp(max=0)
        new_a = a * self.lower_slope.unsqueeze(1) + neg * (self.upper_slope - self.lower_slope).unsqueeze(1)
        const = (neg * self.upper_intercept.unsqueeze(1)).flatten(2).sum(2)
        return new_a, const


@dataclass
class BackwardTerms:
    """The parts of a backward lower bound of A · f(x): `lower(ball) = offset() + min_x a_input · x`.

    In Wong & Kolter's notation (Thm. 1) a_input is -ν̂_1, `bias_terms` the -ν_{i+1}^T b_i and
    `relu_terms` the Σ l_ij [ν_ij]_+ (per ReLU op) of the dual objective J(ν), each (B or 1, M).
    """

    a_input: Tensor
    bias_terms: list[Tensor] = field(default_factory=list)
    relu_terms: list[Tensor] = field(default_factory=list)

    def offset(self) -> Tensor:
        return sum(
            self.bias_terms + self.relu_terms, torch.zeros((), dtype=self.a_input.dtype, device=self.a_input.device)
        )

    def lower(self, ball: Ball) -> Tensor:
        """The concrete lower bound (B, M) over the ball."""
        return self.offset() + concretize_lower(ball, self.a_input)


def _rowdot(a: Tensor, v: Tensor) -> Tensor:
    """<a_m, v_b> for a (B or 1, M, d) and v (B, d) -> (B, M), as a matrix product."""
    if a.shape[0] == 1:
        return (a[0] @ v.T).T
    return torch.bmm(a, v.unsqueeze(2)).squeeze(2)


def concretize_lower(ball: Ball, a: Tensor) -> Tensor:
    """min over the ball of <a_m, x'>: the same bound as `Ball.concretize(a, lower=True)`, by products.

    Box part a·mid - |a|·rad (= a+·lo + a-·hi); for L2 also a·x - eps·||a||_2, whichever is tighter.
    """
    lo, hi = ball.box()
    flat = a.flatten(2)
    val = _rowdot(flat, ((lo + hi) / 2).flatten(1)) - _rowdot(flat.abs(), ((hi - lo) / 2).flatten(1))
    if ball.norm == L2:
        eps = ball.eps_view().reshape(-1, 1)
        val = torch.maximum(val, _rowdot(flat, ball.x.flatten(1)) - eps * flat.norm(dim=2))
    return val


@dataclass
class _Pass:
    """What the backward rules read and write: the intermediate bounds, the lower-slope rule, the terms."""

    bounds: LayerBounds
    rule: SlopeRule
    terms: BackwardTerms


def _input_bounds(p: _Pass, op: Op) -> tuple[Tensor, Tensor]:
    if op not in p.bounds:
        raise RuntimeError(f"backward bound: {op.describe()} has no intermediate bounds (compute layer_bounds first)")
    return p.bounds[op]


def _back_affine(p: _Pass, op: AffineOp, a: Tensor) -> tuple[Tensor]:
    b = op.bias()
    if b is not None:
        p.terms.bias_terms.append((a * b).flatten(2).sum(2))
    return (op.transpose(a),)


def _back_relu(p: _Pass, op: ReLUOp, a: Tensor) -> tuple[Tensor]:
    slope = (op.negative_slope,) if op.negative_slope else ()
    a, const = ReluRelaxation(*_input_bounds(p, op), p.rule, *slope).backward(a)
    p.terms.relu_terms.append(const)
    return (a,)


def _back_s_shaped(p: _Pass, op: SShapedOp, a: Tensor) -> tuple[Tensor]:
    """k·z + lo <= f(z) <= k·z + hi: A f(z) >= (A k) z + A+ lo + A- hi."""
    lines = s_shaped_relaxation(op, *_input_bounds(p, op))
    assert lines.lower_bias is not None  # s-shaped lines have both biases
    pos, neg = a.clamp(min=0), a.clamp(max=0)
    const = (pos * lines.lower_bias.unsqueeze(1) + neg * lines.upper_bias.unsqueeze(1)).flatten(2).sum(2)
    p.terms.relu_terms.append(const)
    return (a * lines.slope.unsqueeze(1),)


def _back_maxpool(p: _Pass, op: MaxPool2dOp, a: Tensor) -> tuple[Tensor]:
    """DeepPoly's max relaxation: lower line x_j (j: the largest lower bound of the window); upper line x_j
    where x_j dominates the window, else the constant max_i u_i."""
    idx, dom_j, _, umax = op.select(*_input_bounds(p, op))
    keep = dom_j.reshape(idx.shape[0], 1, *op.out_shape).to(a.dtype)
    pos, neg = a.clamp(min=0), a.clamp(max=0)
    const = (neg * (1 - keep) * umax.reshape(keep.shape)).flatten(2).sum(2)
    p.terms.relu_terms.append(const)
    return (op.scatter(pos + neg * keep, idx),)


def _back_add(p: _Pass, op: AddOp, a: Tensor) -> tuple[Tensor, ...]:
    return (a,) * len(op.src)


def _back_cat(p: _Pass, op: CatOp, a: Tensor) -> tuple[Tensor, ...]:
    return op.split(a, 2)


#: the backward table: rule(pass, op, A at the op's output) -> A at each of its inputs
BACKWARD: graph.Table = {
    AffineOp: _back_affine,
    ReLUOp: _back_relu,
    SShapedOp: _back_s_shaped,
    MaxPool2dOp: _back_maxpool,
    AddOp: _back_add,
    CatOp: _back_cat,
}
NONLINEAR = (ActivationOp, MaxPool2dOp)  # the ops that need intermediate bounds


def backward_terms(
    ops: list[Op], a: Tensor, bounds: LayerBounds, rule: SlopeRule, terms: BackwardTerms | None = None
) -> BackwardTerms:
    """Push coefficients a (B or 1, M, *ops[-1].out_shape) back to the input of ops (lower-bound rule).

    `bounds` must hold the input bounds of every activation and max pooling in ops.
    """
    terms = terms if terms is not None else BackwardTerms(a)
    terms.a_input = graph.backward(ops, BACKWARD, a, _Pass(bounds, rule, terms), "backward")
    return terms


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _max_width(ops: list[Op]) -> int:
    """Largest number of elements of any coefficient A on a backward pass through ops."""
    widths = [1]
    for op in ops:
        widths += [_numel(op.in_shape), _numel(op.out_shape)]
    return max(widths)


def _split_tail(path: list[Op]) -> tuple[list[Op], list[Op]]:
    """(head, tail): tail is the chain of affine ops ending at path[-1] (sample-independent), head the ops
    up to the one the tail reads from."""
    tail: list[Op] = []
    node: Op | None = path[-1] if path else None
    while isinstance(node, AffineOp) and not isinstance(node, SpecOp) and len(node.src) == 1:
        tail.insert(0, node)
        node = node.src[0]
    if node is None:
        return [], tail
    return path[: path.index(node) + 1], tail


@dataclass
class _Walk:
    """The forward interval walk of `layer_bounds`: the domain, the graph, op positions, the ball, the bounds."""

    dom: "BackwardDomain"
    ops: list[Op]
    pos: dict[int, int]
    ball: Ball
    bounds: LayerBounds


def _refining(w: _Walk, op: Op, box: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """An activation or max pooling: refine its input box by a backward pass, record it, then the interval rule."""
    lower, upper = box
    src = op.src[0]
    if w.dom.backward_intermediate and src is not None:
        path = w.ops[: w.pos[id(src)] + 1]
        lower, upper = w.dom._refine(path, w.ball, w.bounds, lower, upper, not isinstance(op, ReLUOp))
    w.bounds[op] = (lower, upper)
    if isinstance(op, ReLUOp) and op.negative_slope == 0.0:
        return lower.clamp(min=0), upper.clamp(min=0)
    return op.forward(lower), op.forward(upper)


#: the interval table with the non-linear ops refined first: the forward walk of `layer_bounds`
REFINING: graph.Table = {**INTERVAL, **{cls: _refining for cls in NONLINEAR}}


class BackwardDomain(Domain):
    """Shared machinery of the backward domains; subclasses choose intermediate bounds and lower slope.

    `max_elements` bounds the size of one coefficient tensor (B x chunk x width) of an intermediate
    pass: neurons are processed in chunks of `max_elements // (2 B width)` (at least one).
    `intersect` intersects every bound with interval propagation (sound; on by default).
    `lirpa_sparsity` (a fraction in (0, 1], or None) switches to auto_LiRPA's intermediate policy
    (see `_refine_lirpa`; auto_LiRPA's default `minimum_sparsity` is 0.9): no intersection anywhere;
    `lirpa_union` takes its unstable set over the whole batch as auto_LiRPA does (False: per sample,
    i.e. auto_LiRPA run one image at a time).
    """

    name = "backward"
    table = BACKWARD
    lower_slope = "adaptive"
    backward_intermediate = True

    def __init__(
        self,
        max_elements: int = 2**25,
        intersect: bool = True,
        lirpa_sparsity: float | None = None,
        lirpa_union: bool = True,
    ) -> None:
        if lirpa_sparsity is not None and not 0.0 < lirpa_sparsity <= 1.0:
            raise ValueError(f"lirpa_sparsity must be in (0, 1] or None (got {lirpa_sparsity}); auto_LiRPA uses 0.9")
        self.max_elements, self.intersect = max_elements, intersect and lirpa_sparsity is None
        self.lirpa_sparsity, self.lirpa_union = lirpa_sparsity, lirpa_union
        self.rule = LOWER_SLOPES[self.lower_slope]

    def sample_bytes(self, ops: list[Op], in_shape: tuple[int, ...], element_size: int) -> int:
        if self.backward_intermediate:
            return super().sample_bytes(ops, in_shape, element_size)
        # interval intermediate bounds, one backward pass of the spec rows (twice for the upper bound)
        rows = 2 * math.prod(ops[-1].out_shape) if ops else 1
        return 2 * element_size * rows * sum(math.prod(op.out_shape) for op in ops)

    # ----- intermediate bounds -------------------------------------------------------------------
    def layer_bounds(self, ops: list[Op], ball: Ball) -> tuple[LayerBounds, tuple[Tensor, Tensor]]:
        """Input bounds of every activation and max pooling (in network order) and the interval bounds of the
        output: interval propagation (the `interval` table) that refines the input of each such op by a
        backward pass (`_refine`) before its rule runs."""
        bounds: LayerBounds = {}
        ops = fold_spec(ops)  # C W in one step: the output box is the interval domain's own
        (lower, upper), first = start_box(ops, ball)  # L2: the first affine layer as the interval domain does
        walk = _Walk(self, ops, {id(op): i for i, op in enumerate(ops)}, ball, bounds)
        out = graph.forward(ops[first:], REFINING, (lower, upper), walk, self.name)
        return bounds, out

    def _refine(
        self, path: list[Op], ball: Ball, bounds: LayerBounds, lower: Tensor, upper: Tensor, every: bool = False
    ) -> tuple[Tensor, Tensor]:
        """Backward bounds of the output neurons of path, intersected with the interval ones (lower, upper).

        With `intersect`, each sample refines only its neurons unstable under (lower, upper): the
        relaxation of a stable ReLU neuron is exact whatever its bounds (auto_LiRPA does the same);
        `every`: all neurons (the relaxations of sigmoid, tanh and max pooling tighten with any bound).
        """
        if self.lirpa_sparsity is not None:
            return self._refine_lirpa(path, ball, bounds, lower, upper, self.lirpa_sparsity)
        batch = ball.x.shape[0]
        flat_l, flat_u = lower.reshape(batch, -1), upper.reshape(batch, -1)
        n = flat_l.shape[1]
        if self.intersect and not every:
            unstable = (flat_l < 0) & (flat_u > 0)
            k = int(unstable.sum(1).max())  # rows per sample (one host sync per layer)
            if k == 0:
                return lower, upper
            idx = unstable.to(torch.uint8).argsort(dim=1, descending=True, stable=True)[:, :k]
            padded = ~unstable.gather(1, idx)  # rows past a sample's own unstable count (batch padding)
        else:
            idx = torch.arange(n, device=flat_l.device).expand(batch, n)
            padded = None
        bl, bu = self._backward_bounds(path, ball, bounds, idx)
        if self.intersect:
            bl, bu = torch.maximum(flat_l.gather(1, idx), bl), torch.minimum(flat_u.gather(1, idx), bu)
        if padded is not None:  # keep a sample's bounds independent of the others in its batch (and chunk)
            bl = torch.where(padded, flat_l.gather(1, idx), bl)
            bu = torch.where(padded, flat_u.gather(1, idx), bu)
        new_l, new_u = flat_l.scatter(1, idx, bl), flat_u.scatter(1, idx, bu)
        return new_l.reshape(lower.shape), new_u.reshape(upper.shape)

    def _refine_lirpa(
        self, path: list[Op], ball: Ball, bounds: LayerBounds, lower: Tensor, upper: Tensor, sparsity: float
    ) -> tuple[Tensor, Tensor]:
        """auto_LiRPA's policy (`get_ref_intermediate_bounds`, `get_sparse_C`, `get_unstable_locations`,
        `restore_sparse_bounds` in its bound_general.py / backward_bound.py).

        The reference (lower, upper) is one interval step from the previous bounds. The neurons
        unstable under it (for any sample when `lirpa_union`) are bounded backwards, and the backward
        bounds replace the reference ones; if they are more than `sparsity` (`lirpa_sparsity`) of the layer, every
        neuron is bounded backwards (auto_LiRPA then uses an identity C and no reference at all).
        """
        batch = ball.x.shape[0]
        flat_l, flat_u = lower.reshape(batch, -1), upper.reshape(batch, -1)
        n = flat_l.shape[1]
        unstable = (flat_l < 0) & (flat_u > 0)
        if self.lirpa_union:
            unstable = unstable.any(0, keepdim=True).expand(batch, n)
        count = unstable.sum(1)
        dense = count > sparsity * n  # per sample (all alike with the union)
        chosen = unstable | dense.unsqueeze(1)
        k = int(chosen.sum(1).max())
        if k == 0:
            return lower, upper
        idx = chosen.to(torch.uint8).argsort(dim=1, descending=True, stable=True)[:, :k]
        bl, bu = self._backward_bounds(path, ball, bounds, idx)
        take = chosen.gather(1, idx)  # padding rows (samples with fewer neurons) keep the reference
        bl = torch.where(take, bl, flat_l.gather(1, idx))
        bu = torch.where(take, bu, flat_u.gather(1, idx))
        new_l, new_u = flat_l.scatter(1, idx, bl), flat_u.scatter(1, idx, bu)
        return new_l.reshape(lower.shape), new_u.reshape(upper.shape)

    def _backward_bounds(self, path: list[Op], ball: Ball, bounds: LayerBounds, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Backward lower and upper bounds (B, k) of the output neurons idx (B, k) of path.

        The trailing affine ops of path do not depend on the sample: they are applied once to the
        one-hot rows of the neurons any sample needs, then each sample gathers its own rows and
        pushes them (with their negations, for the upper bounds) through the rest of path, in chunks.
        """
        x = ball.x
        shape = path[-1].out_shape if path else tuple(x.shape[1:])
        n, batch, k = _numel(shape), x.shape[0], idx.shape[1]
        head, tail = _split_tail(path)
        chunk = max(1, min(k, self.max_elements // max(1, 2 * batch * _max_width(path))))
        basis = None
        rows, inverse = torch.unique(idx, return_inverse=True)
        if rows.numel() * _max_width(tail) <= self.max_elements:
            basis = self._tail(tail, rows, n, shape, x.dtype)
        lows, ups = [], []
        for start in range(0, k, chunk):
            sel = idx[:, start : start + chunk]
            if basis is not None:
                (a_mid, off), pos = basis, inverse[:, start : start + chunk]
            else:
                chunk_rows, pos = torch.unique(sel, return_inverse=True)
                a_mid, off = self._tail(tail, chunk_rows, n, shape, x.dtype)
            a, c = a_mid[pos], off[pos]  # (B, chunk, *mid_shape), (B, chunk)
            terms = BackwardTerms(torch.cat([a, -a], 1), [torch.cat([c, -c], 1)], [])
            lo = backward_terms(head, terms.a_input, bounds, self.rule, terms).lower(ball)
            m = sel.shape[1]
            lows.append(lo[:, :m])
            ups.append(-lo[:, m:])
        return torch.cat(lows, 1), torch.cat(ups, 1)

    def _tail(
        self, tail: list[Op], rows: Tensor, n: int, shape: tuple[int, ...], dtype: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        """W^T e_i and the bias terms of the affine ops `tail` for the neurons `rows`: ((U, *in), (U,))."""
        eye = torch.zeros(rows.numel(), n, dtype=dtype, device=rows.device)
        eye[torch.arange(rows.numel(), device=rows.device), rows] = 1.0
        terms = backward_terms(tail, eye.reshape(1, rows.numel(), *shape), {}, self.rule)
        return terms.a_input[0], terms.offset().expand(1, rows.numel())[0]

    # ----- final bounds --------------------------------------------------------------------------
    def terms(self, ops: list[Op], ball: Ball, bounds: LayerBounds, upper: bool = True) -> BackwardTerms:
        """Backward terms of the output (rows: the spec's S rows, then their negations when `upper`)."""
        last = ops[-1]
        if isinstance(last, SpecOp):
            a, ops = last.spec.to(ball.x.dtype), ops[:-1]
        else:
            k = _numel(last.out_shape)
            a = torch.eye(k, dtype=ball.x.dtype, device=ball.x.device).reshape(1, k, *last.out_shape)
        if upper:
            a = torch.cat([a, -a], 1)
        return backward_terms(ops, a, bounds, self.rule)

    def lower(self, ops: list[Op], ball: Ball) -> Tensor:
        """The lower bound alone: one backward pass of the S spec rows instead of 2 S."""
        if not ops:
            raise ValueError("bound domain: the network has no layers")
        bounds, (ibp_lower, _) = self.layer_bounds(ops, ball)
        lower = self.terms(ops, ball, bounds, upper=False).lower(ball).expand(ball.x.shape[0], -1)
        return torch.maximum(lower, ibp_lower.flatten(1)) if self.intersect else lower

    def bounds(self, ops: list[Op], ball: Ball) -> tuple[Tensor, Tensor]:
        if not ops:
            raise ValueError("bound domain: the network has no layers")
        bounds, (ibp_lower, ibp_upper) = self.layer_bounds(ops, ball)
        both = self.terms(ops, ball, bounds).lower(ball)
        s = both.shape[1] // 2
        lower, upper = both[:, :s], -both[:, s:]
        lower = lower.expand(ball.x.shape[0], -1)
        upper = upper.expand(ball.x.shape[0], -1)
        if self.intersect:
            lower = torch.maximum(lower, ibp_lower.flatten(1))
            upper = torch.minimum(upper, ibp_upper.flatten(1))
        return lower, upper


@DOMAINS.register("crown-ibp")
class CrownIBP(BackwardDomain):
    """CROWN-IBP (Zhang et al. 2020): interval bounds for hidden layers, a backward pass for the spec."""

    name = "crown-ibp"
    backward_intermediate = False


@DOMAINS.register("crown")
class Crown(BackwardDomain):
    """CROWN (Zhang et al. 2018): backward bounds for every layer, adaptive lower slope."""

    name = "crown"


@DOMAINS.register("crown-lirpa")
class CrownLirpa(BackwardDomain):
    """CROWN with auto_LiRPA's default intermediate-bound policy (batch-union unstable set, 90 % density
    switch, no interval intersection): reproduces `compute_bounds(method="CROWN")`; looser than `crown`."""

    name = "crown-lirpa"

    def __init__(self, max_elements: int = 2**25, lirpa_sparsity: float = 0.9, lirpa_union: bool = True) -> None:
        super().__init__(max_elements, intersect=False, lirpa_sparsity=lirpa_sparsity, lirpa_union=lirpa_union)


@DOMAINS.register("dual")
class Dual(BackwardDomain):
    """Wong & Kolter (2018)'s dual network: backward bounds for every layer, lower slope u/(u-l).

    `forward=True` computes the same bound forward (`dual_network.ProjectedDualNetwork`, L-inf balls; faster
    on small networks); `projections=k` (forward, L-inf) gives Wong et al.'s (2018) random-projection estimate
    with k Cauchy projections drawn from `generator`: NOT a sound bound, for training only.
    """

    name = "dual"
    lower_slope = "dual"

    def __init__(
        self,
        max_elements: int = 2**25,
        intersect: bool = True,
        *,
        forward: bool = False,
        projections: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(max_elements, intersect)
        self.forward_net = None
        if forward or projections is not None:
            from veritrain.bounds.dual_network import ProjectedDualNetwork

            self.forward_net = ProjectedDualNetwork(projections, generator, intersect)
            self.table = ProjectedDualNetwork.table

    def bounds(self, ops: list[Op], ball: Ball) -> tuple[Tensor, Tensor]:
        if self.forward_net is not None:
            return self.forward_net.bounds(ops, ball)
        return super().bounds(ops, ball)

    def sample_bytes(self, ops: list[Op], in_shape: tuple[int, ...], element_size: int) -> int:
        if self.forward_net is not None:
            return self.forward_net.sample_bytes(ops, in_shape, element_size)
        return super().sample_bytes(ops, in_shape, element_size)

    def lower(self, ops: list[Op], ball: Ball) -> Tensor:
        if self.forward_net is not None:
            return self.forward_net.bounds(ops, ball)[0]
        return super().lower(ops, ball)


def dual_objective_terms(
    ops: list[Op], ball: Ball, intersect: bool = True, max_elements: int = 2**25
) -> tuple[BackwardTerms, LayerBounds]:
    """Wong & Kolter's dual objective J(ν) for the lower bound of the ops' output, split into its terms.

    Returns the backward terms of the final specification (lower bound rows only) and the
    intermediate bounds (ReLU op -> (l, u)) they were computed with.
    """
    dom = Dual(max_elements=max_elements, intersect=intersect)
    bounds, _ = dom.layer_bounds(ops, ball)
    return dom.terms(ops, ball, bounds, upper=False), bounds


__all__ = [
    "BackwardDomain",
    "BackwardTerms",
    "Crown",
    "CrownIBP",
    "CrownLirpa",
    "Dual",
    "LOWER_SLOPES",
    "ReluRelaxation",
    "backward_terms",
    "dual_objective_terms",
]
