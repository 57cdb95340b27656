"""The bound-domain interface, the input set and the products built on bounds (Eqns. 5-7)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from veritrain.bounds.ops import AffineOp, LinearOp, Op, SpecOp, to_ops
from veritrain.registry import Registry
from veritrain.validation import DEFAULT_DOMAIN, DEFAULT_NORM, L2, NORMS, check_eps, check_labels, check_pixels


@dataclass
class Ball:
    """B_eps(x) ∩ [lo, hi]^d: the L-inf or L2 ball around pixels x, intersected with the valid domain.

    `eps` is a float or a per-sample tensor (B,). Pixels are in [lo, hi] before the model's normalisation.
    """

    x: Tensor
    eps: float | Tensor
    norm: str = DEFAULT_NORM
    lo: float = 0.0
    hi: float = 1.0

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; choose {' or '.join(NORMS)}")
        # a negative eps is an empty set, where every bound would "prove" anything: refuse it and NaN/inf
        check_pixels(self.x, self.lo, self.hi, "Ball: x")
        check_eps(self.eps, self.x.shape[0], "Ball: eps")

    def take(self, rows: slice) -> "Ball":
        """The ball of the samples `rows` (a slice of the batch), without re-checking the pixels."""
        e = self.eps
        if isinstance(e, Tensor) and e.dim() > 0:
            e = e[rows]
        out = object.__new__(Ball)
        out.x, out.eps, out.norm, out.lo, out.hi = self.x[rows], e, self.norm, self.lo, self.hi
        return out

    def eps_view(self) -> Tensor:
        """eps as a tensor broadcastable to x: (B, 1, ..., 1)."""
        e = torch.as_tensor(self.eps, dtype=self.x.dtype, device=self.x.device)
        if e.dim() == 0:
            e = e.expand(self.x.shape[0])
        return e.reshape(-1, *([1] * (self.x.dim() - 1)))

    def box(self) -> tuple[Tensor, Tensor]:
        """Element-wise bounds [max(x - eps, lo), min(x + eps, hi)] (the L2 ball lies inside it too)."""
        e = self.eps_view()
        return (self.x - e).clamp(self.lo, self.hi), (self.x + e).clamp(self.lo, self.hi)

    def concretize(self, a: Tensor, lower: bool = True) -> Tensor:
        """min (or max) over the set of <a_m, x'> for coefficient rows a of shape (B, M, *x.shape[1:]).

        Sound for both norms: the box bound, and for L2 also <a, x> -+ eps·||a||_2, whichever is tighter.
        """
        lo_box, hi_box = self.box()
        lo_box, hi_box = lo_box.unsqueeze(1), hi_box.unsqueeze(1)
        pos, neg = a.clamp(min=0), a.clamp(max=0)
        dims = tuple(range(2, a.dim()))
        if lower:
            val = (pos * lo_box + neg * hi_box).sum(dims)
        else:
            val = (pos * hi_box + neg * lo_box).sum(dims)
        if self.norm == L2:
            centre = (a * self.x.unsqueeze(1)).sum(dims)
            radius = self.eps_view().reshape(-1, 1) * a.flatten(2).norm(dim=2)
            val = torch.maximum(val, centre - radius) if lower else torch.minimum(val, centre + radius)
        return val


class Domain:
    """A sound abstract domain: bounds on `spec @ f(x')` for every x' in the ball (Eqn. 5).

    Subclasses implement `bounds(ops, ball)`, where the ops already end with the specification.
    Results must be differentiable with respect to the weights (training needs the gradient).
    """

    name = "domain"
    #: {op class: rule} of the shared propagation (`bounds/graph.py`); also what `check_supported` reads
    table: dict = {}

    def bounds(self, ops: list[Op], ball: Ball) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def lower(self, ops: list[Op], ball: Ball) -> Tensor:
        """The lower bounds only (what verification and the verified loss need); domains that can skip
        the upper bound's work override this."""
        return self.bounds(ops, ball)[0]

    def sample_bytes(self, ops: list[Op], in_shape: tuple[int, ...], element_size: int) -> int:
        """Rough working memory (bytes) of one sample, from which the public calls size their chunks
        (`chunk_size_for`); 0: never chunk. The default suits the domains that carry one column per input
        pixel on every neuron of a layer (symbolic domains, backward intermediate bounds)."""
        return 2 * element_size * math.prod(in_shape) * max_neurons(ops)


DOMAINS: Registry[type[Domain]] = Registry("bound domain")

#: Working memory (bytes) a public bound call (`compute_bounds`, `margin_lower`, `verify`, `verified_loss`,
#: `interval_gradient`, and through them the interval attack) aims at when it splits a batch into chunks by
#: itself (`chunk_size=None`): chunk = max(1, CHUNK_MEMORY // the domain's `sample_bytes`). 256 MiB gives 13
#: samples per chunk for `symbolic-linear` on MNIST Small (faster than 25, whose intermediates fall out of the
#: caches: 7 against 10 CPU ms per image) and 1 on CIFAR Large; the interval domain never chunks (its memory
#: is that of a forward pass). Assign `veritrain.bounds.base.CHUNK_MEMORY`
#: to change it for every call, or pass `chunk_size=N` to a call (`chunk_size=len(x)`: one pass).
CHUNK_MEMORY = 256 * 2**20


def max_neurons(ops: list[Op]) -> int:
    """The largest number of neurons (elements per sample) of any op's output."""
    return max((math.prod(op.out_shape) for op in ops), default=1)


def chunk_size_for(dom: Domain, ops: list[Op], ball: Ball, chunk_size: int | None = None) -> int:
    """Samples per bound computation: `chunk_size` if given (>= 1), else from `CHUNK_MEMORY`."""
    n = ball.x.shape[0]
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
        return chunk_size
    per = dom.sample_bytes(ops, tuple(ball.x.shape[1:]), ball.x.element_size())
    return max(n, 1) if per <= 0 else max(1, CHUNK_MEMORY // per)


def _rows(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)] or [slice(0, 0)]


def check_supported(model: nn.Module, in_shape: tuple[int, ...], domains: list[str]) -> None:
    """Raise `UnsupportedLayerError` (naming the op, its place in the code and the domain) unless every op of
    the traced model has a rule in each domain's table: what a trainer checks before its first epoch."""
    from veritrain.bounds.graph import check

    ops = to_ops(model, tuple(in_shape))
    for name in domains:
        check(ops, DOMAINS.get(name).table, name)


def with_spec(ops: list[Op], spec: Tensor | None) -> list[Op]:
    """Append the specification matrix C (B, S, K) to the ops (folded by domains that fuse affine ops)."""
    if spec is None:
        return ops
    op = SpecOp(spec, ops[-1].out_shape)
    op.src = (ops[-1],)
    return [*ops, op]


def compute_bounds(
    model: nn.Module,
    ball: Ball,
    spec: Tensor | None = None,
    domain: str | Domain = DEFAULT_DOMAIN,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Lower and upper bounds of `spec @ model(x')` over the ball; shapes (B, S) (or (B, K) without spec).

    The batch is bounded `chunk_size` samples at a time (None: sized by `CHUNK_MEMORY`), so the working
    memory stays bounded whatever the batch size; the results are those of one pass (every domain bounds
    each sample on its own, except `crown-lirpa`, whose unstable set is the union over the samples of a pass
    as in auto_LiRPA). Under autograd, the graphs of all chunks are kept for the backward pass."""
    ops = to_ops(model, tuple(_checked(ball).x.shape[1:]))
    if spec is not None:
        check_spec(spec, ball.x.shape[0], math.prod(ops[-1].out_shape))
    dom = _domain(domain)
    size = chunk_size_for(dom, ops, ball, chunk_size)
    if ball.x.shape[0] <= size:
        return _bounds_of_ops(ops, ball, spec, dom)
    parts = [
        _bounds_of_ops(ops, ball.take(r), None if spec is None else spec[r], dom) for r in _rows(ball.x.shape[0], size)
    ]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _domain(domain: str | Domain) -> Domain:
    return DOMAINS.get(domain)() if isinstance(domain, str) else domain


def _checked(ball: Ball) -> Ball:
    if not isinstance(ball, Ball):
        raise ValueError(f"ball must be a veritrain.bounds.Ball, got {type(ball).__name__}")
    return ball


def check_spec(spec: Tensor, batch: int, num_outputs: int) -> None:
    """spec is a finite float tensor (B, S, K) matching the batch and the model's K outputs."""
    if not isinstance(spec, Tensor) or not torch.is_floating_point(spec):
        raise ValueError(f"spec must be a float tensor (B, S, K), got {getattr(spec, 'dtype', type(spec).__name__)}")
    if spec.dim() != 3 or spec.shape[0] != batch or spec.shape[2] != num_outputs:
        raise ValueError(
            f"spec must have shape ({batch}, S, {num_outputs}) (batch, rows, model outputs), got {tuple(spec.shape)}"
        )
    if not bool(torch.isfinite(spec.detach()).all()):
        raise ValueError("spec holds NaN or inf values")


def _bounds_of_ops(ops: list[Op], ball: Ball, spec: Tensor | None, domain: str | Domain) -> tuple[Tensor, Tensor]:
    return _domain(domain).bounds(with_spec(ops, spec), ball)


def margin_spec(y: Tensor, num_classes: int) -> Tensor:
    """C with rows e_y - e_j (B, K, K); row y is zero, so its bound is exactly 0."""
    eye = torch.eye(num_classes, device=y.device)
    return eye[y].unsqueeze(1) - eye.unsqueeze(0)


def margin_lower(
    model: nn.Module, ball: Ball, y: Tensor, domain: str | Domain = DEFAULT_DOMAIN, chunk_size: int | None = None
) -> Tensor:
    """Lower bounds of z_y - z_j over the ball, (B, K); column y is 0 (chunked as `compute_bounds`)."""
    ops = to_ops(model, tuple(_checked(ball).x.shape[1:]))  # converted once: the spec needs the number of classes
    num_classes = math.prod(ops[-1].out_shape)
    check_labels(y, ball.x.shape[0], num_classes)
    dom = _domain(domain)
    size = chunk_size_for(dom, ops, ball, chunk_size)

    def lower(b: Ball, yb: Tensor) -> Tensor:
        return dom.lower(with_spec(ops, margin_spec(yb, num_classes).to(b.x.dtype)), b)

    if ball.x.shape[0] <= size:
        return lower(ball, y)
    return torch.cat([lower(ball.take(r), y[r]) for r in _rows(ball.x.shape[0], size)])


def target_margin_lower(
    model: nn.Module, ball: Ball, y: Tensor, target: Tensor, domain: str | Domain = DEFAULT_DOMAIN
) -> Tensor:
    """Lower bounds of z_y - z_target over the ball, (B,): one spec row per sample (unchunked)."""
    ops = to_ops(model, tuple(_checked(ball).x.shape[1:]))
    num_classes = math.prod(ops[-1].out_shape)
    check_labels(y, ball.x.shape[0], num_classes)
    check_labels(target, ball.x.shape[0], num_classes)
    rows = torch.arange(y.numel(), device=y.device)
    spec = margin_spec(y, num_classes)[rows, target].unsqueeze(1).to(ball.x.dtype)  # row e_y - e_target
    return _domain(domain).lower(with_spec(ops, spec), ball).view(-1)


def verified_loss(
    model: nn.Module,
    ball: Ball,
    y: Tensor,
    domain: str | Domain = DEFAULT_DOMAIN,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> Tensor:
    """The verified robust loss L(d(x), y) (Eqns. 6-7): CE on the worst-case logits -lower(z_y - z_j)
    (chunked as `compute_bounds`)."""
    return F.cross_entropy(-margin_lower(model, ball, y, domain, chunk_size), y, reduction=reduction)


@torch.no_grad()
def verify(
    model: nn.Module, ball: Ball, y: Tensor, domain: str | Domain = DEFAULT_DOMAIN, chunk_size: int | None = None
) -> Tensor:
    """Per-sample proof of robustness: every margin z_y - z_j (j != y) has a positive lower bound
    (chunked as `compute_bounds`)."""
    lower = margin_lower(model, ball, y, domain, chunk_size)
    lower = lower.scatter(1, y.view(-1, 1), float("inf"))
    return (lower > 0).all(dim=1)


def interval_gradient(
    model: nn.Module,
    ball: Ball,
    y: Tensor,
    domain: str | Domain = DEFAULT_DOMAIN,
    chunk_size: int | None = None,
    target: Tensor | None = None,
) -> Tensor:
    """d L(d_eps(x), y) / d x: the slope of the symbolic bound equations w.r.t. the centre (Section III).
    With `target` (B,), L is -lower(z_y - z_target) instead: the bound of the margin to that one class.

    One backward pass per chunk (`chunk_size`, as `compute_bounds`), so the memory stays bounded; the
    weights' gradients are neither computed nor recorded."""
    dom = _domain(domain)
    ops = to_ops(model, tuple(_checked(ball).x.shape[1:]))
    size = chunk_size_for(dom, ops, ball, chunk_size)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = []
    try:
        for p in params:  # only d/dx is wanted: keep autograd off the weights
            p.requires_grad_(False)
        for r in _rows(ball.x.shape[0], size):
            part = ball.take(r)
            x = part.x.detach().requires_grad_(True)
            moved = Ball(x, part.eps, part.norm, part.lo, part.hi)
            with torch.enable_grad():
                if target is None:
                    loss = verified_loss(model, moved, y[r], dom, reduction="sum", chunk_size=x.shape[0])
                else:
                    loss = -target_margin_lower(model, moved, y[r], target[r], dom).sum()
                (grad,) = torch.autograd.grad(loss, x)
            grads.append(grad)
    finally:
        for p in params:
            p.requires_grad_(True)
    return torch.cat(grads)


__all__ = [
    "AffineOp",
    "Ball",
    "CHUNK_MEMORY",
    "DOMAINS",
    "Domain",
    "LinearOp",
    "check_supported",
    "chunk_size_for",
    "compute_bounds",
    "interval_gradient",
    "margin_lower",
    "target_margin_lower",
    "margin_spec",
    "verified_loss",
    "verify",
    "with_spec",
]
