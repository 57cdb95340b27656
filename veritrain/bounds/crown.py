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

from veritrain.bounds.base import DOMAINS, Ball, Domain
from veritrain.bounds.interval import Interval, fold_spec, interval_step
from veritrain.bounds.ops import AffineOp, Op, ReLUOp, ResidualOp, SpecOp

LayerBounds = dict[Op, tuple[Tensor, Tensor]]  # ReLUOp -> pre-activation (lower, upper), (B, *shape)
SlopeRule = Callable[[Tensor, Tensor, Tensor], Tensor]  # (l, u, upper slope) -> lower slope of unstable


def _adaptive_slope(l: Tensor, u: Tensor, upper_slope: Tensor) -> Tensor:
    """auto_LiRPA's default: slope 1 where u >= -l (the line z is closer to ReLU), else 0."""
    return (u >= -l).to(u.dtype)


def _dual_slope(l: Tensor, u: Tensor, upper_slope: Tensor) -> Tensor:
    """Wong & Kolter (2018): the lower line parallel to the upper one, d = u / (u - l)."""
    return upper_slope


LOWER_SLOPES: dict[str, SlopeRule] = {"adaptive": _adaptive_slope, "dual": _dual_slope}


class ReluRelaxation:
    """Linear lines around ReLU on [l, u]: s_lo·z <= relu(z) <= s_up·z + b_up (exact for stable neurons)."""

    def __init__(self, lower: Tensor, upper: Tensor, rule: SlopeRule) -> None:
        unstable = (lower < 0) & (upper > 0)
        active = (lower >= 0).to(upper.dtype)
        width = torch.where(unstable, upper - lower, torch.ones_like(upper))  # safe denominator
        slope = torch.where(unstable, upper / width, active)
        self.upper_slope = slope
        self.upper_intercept = torch.where(unstable, -slope * lower, torch.zeros_like(lower))
        self.lower_slope = torch.where(unstable, rule(lower, upper, slope), active)

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
        return sum(self.bias_terms + self.relu_terms, torch.zeros((), dtype=self.a_input.dtype, device=self.a_input.device))

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
    if ball.norm == "l2":
        eps = ball.eps_view().reshape(-1, 1)
        val = torch.maximum(val, _rowdot(flat, ball.x.flatten(1)) - eps * flat.norm(dim=2))
    return val


def backward_terms(ops: list[Op], a: Tensor, bounds: LayerBounds, rule: SlopeRule,
                   terms: BackwardTerms | None = None) -> BackwardTerms:
    """Push coefficients a (B or 1, M, *ops[-1].out_shape) back to the input of ops (lower-bound rule).

    `bounds` must hold the pre-activation bounds of every ReLU in ops (nested ones included).
    """
    terms = terms if terms is not None else BackwardTerms(a)
    for op in reversed(ops):
        if isinstance(op, AffineOp):
            b = op.bias()
            if b is not None:
                terms.bias_terms.append((a * b).flatten(2).sum(2))
            a = op.transpose(a)
        elif isinstance(op, ReLUOp):
            if op not in bounds:
                raise RuntimeError("backward bound: a ReLU has no intermediate bounds (compute layer_bounds first)")
            a, const = ReluRelaxation(*bounds[op], rule).backward(a)
            terms.relu_terms.append(const)
        elif isinstance(op, ResidualOp):
            total = None
            for branch in op.branches:
                sub = backward_terms(branch, a, bounds, rule, BackwardTerms(a, terms.bias_terms, terms.relu_terms))
                total = sub.a_input if total is None else total + sub.a_input
            a = total  # type: ignore[assignment]
        else:
            raise TypeError(f"backward bound: unsupported op {type(op).__name__}")
    terms.a_input = a
    return terms


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _max_width(ops: list[Op]) -> int:
    """Largest number of elements of any coefficient A on a backward pass through ops."""
    widths = [1]
    for op in ops:
        widths += [_numel(op.in_shape), _numel(op.out_shape)]
        if isinstance(op, ResidualOp):
            widths += [_max_width(b) for b in op.branches]
    return max(widths)


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
    lower_slope = "adaptive"
    backward_intermediate = True

    def __init__(self, max_elements: int = 2 ** 25, intersect: bool = True,
                 lirpa_sparsity: float | None = None, lirpa_union: bool = True) -> None:
        if lirpa_sparsity is not None and not 0.0 < lirpa_sparsity <= 1.0:
            raise ValueError(f"lirpa_sparsity must be in (0, 1] or None (got {lirpa_sparsity}); auto_LiRPA uses 0.9")
        self.max_elements, self.intersect = max_elements, intersect and lirpa_sparsity is None
        self.lirpa_sparsity, self.lirpa_union = lirpa_sparsity, lirpa_union
        self.rule = LOWER_SLOPES[self.lower_slope]

    # ----- intermediate bounds -------------------------------------------------------------------
    def layer_bounds(self, ops: list[Op], ball: Ball) -> tuple[LayerBounds, tuple[Tensor, Tensor]]:
        """Pre-activation bounds of every ReLU (in network order) and the interval bounds of the output."""
        bounds: LayerBounds = {}
        ops = fold_spec(ops)  # C W in one step: the output box is the interval domain's own
        lower, upper = ball.box()
        first = 0
        if ball.norm == "l2" and ops and isinstance(ops[0], AffineOp):
            lower, upper = Interval._first_affine_l2(ops[0], ball)  # as the interval domain does
            first = 1
        out = self._walk(ops, first, [], lower, upper, ball, bounds)
        return bounds, out

    def _walk(self, ops: list[Op], start: int, prefix: list[Op], lower: Tensor, upper: Tensor,
              ball: Ball, bounds: LayerBounds) -> tuple[Tensor, Tensor]:
        """Interval propagation through ops[start:] that refines each ReLU input by a backward pass."""
        for i in range(start, len(ops)):
            op = ops[i]
            if isinstance(op, ReLUOp):
                if self.backward_intermediate:
                    lower, upper = self._refine([*prefix, *ops[:i]], ball, bounds, lower, upper)
                bounds[op] = (lower, upper)
                lower, upper = lower.clamp(min=0), upper.clamp(min=0)
            elif isinstance(op, ResidualOp):
                outs = [self._walk(b, 0, [*prefix, *ops[:i]], lower, upper, ball, bounds) for b in op.branches]
                lower, upper = sum(o[0] for o in outs), sum(o[1] for o in outs)  # type: ignore[assignment]
            else:
                lower, upper = interval_step(op, lower, upper)
        return lower, upper

    def _refine(self, path: list[Op], ball: Ball, bounds: LayerBounds, lower: Tensor,
                upper: Tensor) -> tuple[Tensor, Tensor]:
        """Backward bounds of the output neurons of path, intersected with the interval ones (lower, upper).

        With `intersect`, each sample refines only its neurons unstable under (lower, upper): the
        relaxation of a stable neuron is exact whatever its bounds (auto_LiRPA does the same).
        """
        if self.lirpa_sparsity is not None:
            return self._refine_lirpa(path, ball, bounds, lower, upper)
        batch = ball.x.shape[0]
        flat_l, flat_u = lower.reshape(batch, -1), upper.reshape(batch, -1)
        n = flat_l.shape[1]
        if self.intersect:
            unstable = (flat_l < 0) & (flat_u > 0)
            k = int(unstable.sum(1).max())  # rows per sample (one host sync per layer)
            if k == 0:
                return lower, upper
            idx = unstable.to(torch.uint8).argsort(dim=1, descending=True, stable=True)[:, :k]
        else:
            idx = torch.arange(n, device=flat_l.device).expand(batch, n)
        bl, bu = self._backward_bounds(path, ball, bounds, idx)
        if self.intersect:
            bl, bu = torch.maximum(flat_l.gather(1, idx), bl), torch.minimum(flat_u.gather(1, idx), bu)
        new_l, new_u = flat_l.scatter(1, idx, bl), flat_u.scatter(1, idx, bu)
        return new_l.reshape(lower.shape), new_u.reshape(upper.shape)

    def _refine_lirpa(self, path: list[Op], ball: Ball, bounds: LayerBounds, lower: Tensor,
                      upper: Tensor) -> tuple[Tensor, Tensor]:
        """auto_LiRPA's policy (`get_ref_intermediate_bounds`, `get_sparse_C`, `get_unstable_locations`,
        `restore_sparse_bounds` in its bound_general.py / backward_bound.py).

        The reference (lower, upper) is one interval step from the previous bounds. The neurons
        unstable under it (for any sample when `lirpa_union`) are bounded backwards, and the backward
        bounds replace the reference ones; if they are more than `lirpa_sparsity` of the layer, every
        neuron is bounded backwards (auto_LiRPA then uses an identity C and no reference at all).
        """
        batch = ball.x.shape[0]
        flat_l, flat_u = lower.reshape(batch, -1), upper.reshape(batch, -1)
        n = flat_l.shape[1]
        unstable = (flat_l < 0) & (flat_u > 0)
        if self.lirpa_union:
            unstable = unstable.any(0, keepdim=True).expand(batch, n)
        count = unstable.sum(1)
        dense = count > self.lirpa_sparsity * n  # per sample (all alike with the union)
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

    def _backward_bounds(self, path: list[Op], ball: Ball, bounds: LayerBounds,
                         idx: Tensor) -> tuple[Tensor, Tensor]:
        """Backward lower and upper bounds (B, k) of the output neurons idx (B, k) of path.

        The trailing affine ops of path do not depend on the sample: they are applied once to the
        one-hot rows of the neurons any sample needs, then each sample gathers its own rows and
        pushes them (with their negations, for the upper bounds) through the rest of path, in chunks.
        """
        x = ball.x
        shape = path[-1].out_shape if path else tuple(x.shape[1:])
        n, batch, k = _numel(shape), x.shape[0], idx.shape[1]
        cut = len(path)
        while cut > 0 and isinstance(path[cut - 1], AffineOp):
            cut -= 1
        head, tail = path[:cut], path[cut:]
        chunk = max(1, min(k, self.max_elements // max(1, 2 * batch * _max_width(path))))
        basis = None
        rows, inverse = torch.unique(idx, return_inverse=True)
        if rows.numel() * _max_width(tail) <= self.max_elements:
            basis = self._tail(tail, rows, n, shape, x.dtype)
        lows, ups = [], []
        for start in range(0, k, chunk):
            sel = idx[:, start:start + chunk]
            if basis is not None:
                (a_mid, off), pos = basis, inverse[:, start:start + chunk]
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

    def _tail(self, tail: list[Op], rows: Tensor, n: int, shape: tuple[int, ...],
              dtype: torch.dtype) -> tuple[Tensor, Tensor]:
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

    def __init__(self, max_elements: int = 2 ** 25, lirpa_sparsity: float = 0.9, lirpa_union: bool = True) -> None:
        super().__init__(max_elements, intersect=False, lirpa_sparsity=lirpa_sparsity, lirpa_union=lirpa_union)


@DOMAINS.register("dual")
class Dual(BackwardDomain):
    """Wong & Kolter (2018)'s dual network: backward bounds for every layer, lower slope u/(u-l)."""

    name = "dual"
    lower_slope = "dual"


def dual_objective_terms(ops: list[Op], ball: Ball, intersect: bool = True,
                         max_elements: int = 2 ** 25) -> tuple[BackwardTerms, LayerBounds]:
    """Wong & Kolter's dual objective J(ν) for the lower bound of the ops' output, split into its terms.

    Returns the backward terms of the final specification (lower bound rows only) and the
    intermediate bounds (ReLU op -> (l, u)) they were computed with.
    """
    dom = Dual(max_elements=max_elements, intersect=intersect)
    bounds, _ = dom.layer_bounds(ops, ball)
    return dom.terms(ops, ball, bounds, upper=False), bounds


__all__ = [
    "BackwardDomain", "BackwardTerms", "Crown", "CrownIBP", "CrownLirpa", "Dual", "LOWER_SLOPES", "ReluRelaxation",
    "backward_terms", "dual_objective_terms",
]
