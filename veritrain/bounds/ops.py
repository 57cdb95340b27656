"""Bound operators: one small class per operation (auto_LiRPA's per-operator idea, simplified).

A model is traced into a graph of ops (`bounds/trace.py`, `to_ops`): a list in topological order whose
ops name their producers in `op.src` (None = the network input), so a chain is a list whose ops each read
the previous one, and a residual block or any other DAG join is an `AddOp` (or `CatOp`) reading several.
Every affine op works on tensors of shape (B, M, *shape): B samples, M columns (M = 1 for plain values; M > 1
for the coefficient columns of symbolic domains), so domains push coefficient matrices through the network as
if they were batches of images. What an op does in each domain is a rule of that domain's table
(`bounds/graph.py`); an op no domain knows is rejected by the tracer with `UnsupportedLayerError`.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Shape = tuple[int, ...]
WeightFn = Callable[[Tensor], Tensor] | None


class UnsupportedLayerError(TypeError):
    """A module or operation the bound engine cannot propagate through soundly."""


class Op:
    """Base operator. `in_shape`/`out_shape` exclude the batch dimensions (for a join: the first input's).

    `src`: the ops whose outputs are its inputs (None = the network input); `where`: the node in the user's
    code it was traced from (for error messages)."""

    in_shape: Shape
    out_shape: Shape
    src: tuple["Op | None", ...] = (None,)
    where: str = ""

    def forward(self, *xs: Tensor) -> Tensor:
        """Concrete forward of plain batches (B, *in_shape)."""
        raise NotImplementedError

    def describe(self) -> str:
        return f"{type(self).__name__}{' at ' + self.where if self.where else ''}"


def _flat(x: Tensor, shape: Shape) -> tuple[Tensor, int, int]:
    b, m = x.shape[0], x.shape[1]
    return x.reshape(b * m, *shape), b, m


class AffineOp(Op):
    """y = W x + b. Subclasses implement `_lin(x, weight_fn)` on flat batches (N, *in_shape)."""

    def _lin(self, x: Tensor, weight_fn: WeightFn) -> Tensor:
        raise NotImplementedError

    def _lin_t(self, a: Tensor) -> Tensor:
        raise NotImplementedError

    def bias(self) -> Tensor | None:
        """Bias broadcastable to (B, M, *out_shape), or None."""
        return None

    def linear(self, x: Tensor, weight_fn: WeightFn = None) -> Tensor:
        """W x for x of shape (B, M, *in_shape); `weight_fn` maps W first (e.g. `torch.abs`)."""
        flat, b, m = _flat(x, self.in_shape)
        return self._lin(flat, weight_fn).reshape(b, m, *self.out_shape)

    def abs_linear(self, x: Tensor) -> Tensor:
        """|W| x: the radius map of interval arithmetic."""
        return self.linear(x, torch.abs)

    def transpose(self, a: Tensor) -> Tensor:
        """W^T a for a of shape (B, M, *out_shape) -> (B, M, *in_shape) (backward bounds)."""
        flat, b, m = _flat(a, self.out_shape)
        return self._lin_t(flat).reshape(b, m, *self.in_shape)

    def affine(self, x: Tensor) -> Tensor:
        """W x + b on (B, M, *in_shape)."""
        y = self.linear(x)
        bias = self.bias()
        return y if bias is None else y + bias

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return self.affine(x.unsqueeze(1)).squeeze(1)

    def interval(self, mid: Tensor, half: Tensor) -> tuple[Tensor, Tensor]:
        """Centre W mid/2 + b and radius |W| half/2 of the image of the box with centre mid/2 and radius
        half/2, inputs (B, *in_shape): interval arithmetic (IBP), the halving folded into the weights."""
        c = self.affine(mid.unsqueeze(1) * 0.5).squeeze(1)
        return c, self.abs_linear(half.unsqueeze(1) * 0.5).squeeze(1)


class LinearOp(AffineOp):
    def __init__(self, layer: nn.Linear, in_shape: Shape) -> None:
        self.layer, self.in_shape, self.out_shape = layer, in_shape, (layer.out_features,)

    def _lin(self, x: Tensor, weight_fn: WeightFn) -> Tensor:
        w = self.layer.weight
        return F.linear(x, w if weight_fn is None else weight_fn(w))

    def _lin_t(self, a: Tensor) -> Tensor:
        return a @ self.layer.weight

    def interval(self, mid: Tensor, half: Tensor) -> tuple[Tensor, Tensor]:
        # the halving on the (B, out) outputs, not on the (out, in) weight: less memory traffic
        w, b = self.layer.weight, self.layer.bias
        c = F.linear(mid, w) * 0.5 if b is None else torch.addmm(b, mid, w.t(), alpha=0.5)
        return c, F.linear(half, w.abs()) * 0.5

    def bias(self) -> Tensor | None:
        return self.layer.bias


def _conv_padding(layer: nn.Conv1d | nn.Conv2d, dims: int) -> tuple[int, ...]:
    """Explicit symmetric padding of a convolution ('same' only when it is symmetric)."""
    if layer.padding_mode != "zeros":
        raise UnsupportedLayerError(f"{type(layer).__name__} with padding_mode={layer.padding_mode!r} is not supported")
    if layer.padding == "valid":
        return (0,) * dims
    if layer.padding == "same":
        pads = [layer.dilation[i] * (layer.kernel_size[i] - 1) for i in range(dims)]
        if any(p % 2 for p in pads):
            raise UnsupportedLayerError(f"{layer} with asymmetric 'same' padding is not supported")
        return tuple(p // 2 for p in pads)
    return tuple(layer.padding)  # type: ignore[arg-type]


class ConvOp(AffineOp):
    """Conv1d / Conv2d with zero padding; the transpose is conv_transpose with the matching output padding."""

    dims = 2

    def __init__(self, layer: nn.Conv1d | nn.Conv2d, in_shape: Shape, out_shape: Shape) -> None:
        self.layer, self.in_shape, self.out_shape = layer, in_shape, out_shape
        d = self.dims
        self._padding = _conv_padding(layer, d)
        # output_padding that makes conv_transpose return exactly in_shape
        self._out_pad = tuple(
            in_shape[1 + i]
            - (
                (out_shape[1 + i] - 1) * layer.stride[i]
                - 2 * self._padding[i]
                + layer.dilation[i] * (layer.kernel_size[i] - 1)
                + 1
            )
            for i in range(d)
        )
        if any(p < 0 or p >= max(layer.stride[i], layer.dilation[i]) for i, p in enumerate(self._out_pad)):
            raise UnsupportedLayerError(f"{layer} with asymmetric 'same' padding is not supported")
        self._conv = F.conv2d if d == 2 else F.conv1d
        self._conv_t = F.conv_transpose2d if d == 2 else F.conv_transpose1d

    def _lin(self, x: Tensor, weight_fn: WeightFn) -> Tensor:
        l, w = self.layer, self.layer.weight
        return self._conv(
            x, w if weight_fn is None else weight_fn(w), None, l.stride, self._padding, l.dilation, l.groups
        )

    def interval(self, mid: Tensor, half: Tensor) -> tuple[Tensor, Tensor]:
        l, w = self.layer, self.layer.weight
        c = self._conv(mid, w * 0.5, l.bias, l.stride, self._padding, l.dilation, l.groups)
        return c, self._conv(half, w.abs() * 0.5, None, l.stride, self._padding, l.dilation, l.groups)

    def _lin_t(self, a: Tensor) -> Tensor:
        l = self.layer
        return self._conv_t(a, l.weight, None, l.stride, self._padding, self._out_pad, l.groups, l.dilation)

    def bias(self) -> Tensor | None:
        return None if self.layer.bias is None else self.layer.bias.view(-1, *(1,) * self.dims)


class Conv2dOp(ConvOp):
    dims = 2


class Conv1dOp(ConvOp):
    dims = 1


class ScaleShiftOp(AffineOp):
    """Per-channel y = scale * x + shift (Normalize, BatchNorm in eval mode).

    `params()` returns (scale, shift) from the module's current tensors and is read at every use, so a
    cached op list follows weight and running-statistics updates and every use builds a fresh graph.
    """

    def __init__(self, params: Callable[[], tuple[Tensor, Tensor]], shape: Shape) -> None:
        self._params, self._view = params, (-1,) + (1,) * (len(shape) - 1)
        self.in_shape = self.out_shape = shape

    @property
    def scale(self) -> Tensor:
        return self._params()[0].reshape(self._view)

    @property
    def shift(self) -> Tensor:
        return self._params()[1].reshape(self._view)

    def _lin(self, x: Tensor, weight_fn: WeightFn) -> Tensor:
        return x * (self.scale if weight_fn is None else weight_fn(self.scale))

    def _lin_t(self, a: Tensor) -> Tensor:
        return a * self.scale

    def bias(self) -> Tensor | None:
        return self.shift


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class AvgPool2dOp(AffineOp):
    """Average pooling as a depthwise convolution with a constant kernel."""

    def __init__(
        self,
        kernel: tuple[int, int],
        stride: tuple[int, int],
        padding: tuple[int, int],
        in_shape: Shape,
        out_shape: Shape,
        like: Tensor,
    ) -> None:
        """`like`: a tensor of the model's device and dtype, for the constant kernel."""
        c = in_shape[0]
        weight = torch.full((c, 1, *kernel), 1.0 / (kernel[0] * kernel[1]), device=like.device, dtype=like.dtype)
        conv = nn.Conv2d(c, c, kernel, stride, padding, groups=c, bias=False)
        conv.weight = nn.Parameter(weight, requires_grad=False)
        self._conv = Conv2dOp(conv, in_shape, out_shape)
        self.in_shape, self.out_shape = in_shape, out_shape

    @classmethod
    def of(cls, layer: nn.AvgPool2d, in_shape: Shape, out_shape: Shape, like: Tensor) -> "AvgPool2dOp":
        k, s, p = _pair(layer.kernel_size), _pair(layer.stride or layer.kernel_size), _pair(layer.padding)
        if layer.ceil_mode or (any(p) and not layer.count_include_pad) or layer.divisor_override:
            raise UnsupportedLayerError(
                f"{layer} (ceil_mode, count_include_pad=False or divisor_override) is not supported"
            )
        return cls(k, s, p, in_shape, out_shape, like)

    def _lin(self, x: Tensor, weight_fn: WeightFn) -> Tensor:
        return self._conv._lin(x, weight_fn)

    def _lin_t(self, a: Tensor) -> Tensor:
        return self._conv._lin_t(a)


def _adaptive_matrix(n_in: int, n_out: int, like: Tensor) -> Tensor:
    """(n_out, n_in) averaging matrix of adaptive average pooling along one axis (PyTorch's windows)."""
    m = torch.zeros(n_out, n_in, dtype=like.dtype, device=like.device)
    for i in range(n_out):
        start, end = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
        m[i, start:end] = 1.0 / (end - start)
    return m


class SeparablePoolOp(AffineOp):
    """Adaptive average pooling with uneven windows: y = P_h x P_w^T per channel (P: averaging matrices).
    A weight map (|.|, square) is applied to each factor: exact for these element-wise multiplicative maps."""

    def __init__(self, in_shape: Shape, out_shape: Shape, like: Tensor) -> None:
        self.in_shape, self.out_shape = in_shape, out_shape
        self.ph, self.pw = (
            _adaptive_matrix(in_shape[1], out_shape[1], like),
            _adaptive_matrix(in_shape[2], out_shape[2], like),
        )

    def _lin(self, x: Tensor, weight_fn: WeightFn) -> Tensor:
        ph, pw = (self.ph, self.pw) if weight_fn is None else (weight_fn(self.ph), weight_fn(self.pw))
        return ph @ x @ pw.T

    def _lin_t(self, a: Tensor) -> Tensor:
        return self.ph.T @ a @ self.pw


class ReduceOp(AffineOp):
    """Sum or mean over non-batch dimensions (`x.mean((2, 3))`, `torch.sum(x, 1, keepdim=True)`)."""

    def __init__(self, dims: tuple[int, ...], keepdim: bool, mean: bool, in_shape: Shape, out_shape: Shape) -> None:
        self.dims, self.keepdim, self.in_shape, self.out_shape = dims, keepdim, in_shape, out_shape
        self.scale = 1.0 / _prod(in_shape[d - 1] for d in dims) if mean else 1.0

    def _lin(self, x: Tensor, weight_fn: WeightFn) -> Tensor:
        s = self.scale if weight_fn is None else float(weight_fn(torch.tensor(self.scale)))
        y = x.sum(self.dims, keepdim=self.keepdim)
        return y if s == 1.0 else y * s

    def _lin_t(self, a: Tensor) -> Tensor:
        if not self.keepdim:
            for d in sorted(self.dims):
                a = a.unsqueeze(d)
        a = a.expand(a.shape[0], *self.in_shape)
        return a if self.scale == 1.0 else a * self.scale


def _prod(xs: Iterable[int]) -> int:
    out = 1
    for x in xs:
        out *= int(x)
    return out


class ReshapeOp(AffineOp):
    """Flatten / Identity / Dropout (eval) / view / reshape: a per-sample reshape, no weights."""

    def __init__(self, in_shape: Shape, out_shape: Shape) -> None:
        self.in_shape, self.out_shape = in_shape, out_shape

    def _lin(self, x: Tensor, weight_fn: WeightFn) -> Tensor:
        return x.reshape(x.shape[0], *self.out_shape)

    def _lin_t(self, a: Tensor) -> Tensor:
        return a.reshape(a.shape[0], *self.in_shape)


class SpecOp(AffineOp):
    """A per-sample specification matrix C (B, S, K) applied to the logits: y = C z."""

    def __init__(self, spec: Tensor, in_shape: Shape) -> None:
        self.spec, self.in_shape, self.out_shape = spec, in_shape, (spec.shape[1],)

    def linear(self, x: Tensor, weight_fn: WeightFn = None) -> Tensor:
        c = self.spec if weight_fn is None else weight_fn(self.spec)
        return torch.einsum("bsk,bmk->bms", c, x)

    def transpose(self, a: Tensor) -> Tensor:
        return torch.einsum("bsk,bms->bmk", self.spec, a)


class AddOp(Op):
    """Sum of its inputs (a residual join, `a + b` in a forward)."""

    def __init__(self, shape: Shape, n: int) -> None:
        self.in_shape = self.out_shape = shape
        self.n = n

    def forward(self, *xs: Tensor) -> Tensor:
        return sum(xs[1:], xs[0])


class CatOp(Op):
    """Concatenation of its inputs along the non-batch dimension `dim` (1-based, as in the traced code)."""

    def __init__(self, dim: int, in_shapes: list[Shape], out_shape: Shape) -> None:
        self.dim, self.in_shapes, self.in_shape, self.out_shape = dim, in_shapes, in_shapes[0], out_shape
        self.sizes = [s[dim - 1] for s in in_shapes]

    def forward(self, *xs: Tensor) -> Tensor:
        return torch.cat(xs, self.dim)

    def cat(self, xs: Sequence[Tensor], lead: int = 1) -> Tensor:
        """Concatenate tensors (lead batch-like dims, *in_shapes[i])."""
        return torch.cat(list(xs), self.dim - 1 + lead)

    def split(self, a: Tensor, lead: int = 1) -> tuple[Tensor, ...]:
        """The inverse of `cat` (for backward coefficients)."""
        return torch.split(a, self.sizes, self.dim - 1 + lead)


class ActivationOp(Op):
    """An element-wise monotone non-decreasing activation (its interval image is [f(l), f(u)])."""

    def __init__(self, shape: Shape) -> None:
        self.in_shape = self.out_shape = shape


class ReLUOp(ActivationOp):
    """ReLU, or LeakyReLU with 0 <= negative_slope <= 1 (max(z, a·z): convex, monotone)."""

    def __init__(self, shape: Shape, negative_slope: float = 0.0) -> None:
        super().__init__(shape)
        if not 0.0 <= negative_slope <= 1.0:
            raise UnsupportedLayerError(
                f"LeakyReLU with negative_slope={negative_slope} (only 0 <= slope <= 1 is supported)"
            )
        self.negative_slope = float(negative_slope)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return torch.relu(x) if self.negative_slope == 0.0 else F.leaky_relu(x, self.negative_slope)


class SShapedOp(ActivationOp):
    """Sigmoid or Tanh: monotone, convex below 0 and concave above; `fn` and its derivative `grad`."""

    def __init__(self, shape: Shape, kind: str) -> None:
        super().__init__(shape)
        self.kind = kind
        self.fn = {"sigmoid": torch.sigmoid, "tanh": torch.tanh}[kind]

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return self.fn(x)

    def grad(self, x: Tensor) -> Tensor:
        y = self.fn(x)
        return y * (1 - y) if self.kind == "sigmoid" else 1 - y * y


class MaxPool2dOp(Op):
    """Max pooling. `windows` lays the inputs of each output out as (N, C, k, L) (k window slots, L outputs),
    padding as -inf; `pos[s, o]` is the flat input position (h·W + w) of slot s of output o (-1: padding)."""

    def __init__(self, layer: nn.MaxPool2d, in_shape: Shape, out_shape: Shape, like: Tensor) -> None:
        self.layer, self.in_shape, self.out_shape = layer, in_shape, out_shape
        k, s, p, d = (
            _pair(v) for v in (layer.kernel_size, layer.stride or layer.kernel_size, layer.padding, layer.dilation)
        )
        c, h, w = in_shape
        self._n = h * w
        # extra bottom/right padding that ceil_mode adds
        extra = [
            max(0, (out_shape[1 + i] - 1) * s[i] + d[i] * (k[i] - 1) + 1 - ((h, w)[i] + 2 * p[i])) for i in range(2)
        ]
        pos = torch.arange(h * w, dtype=like.dtype, device=like.device).reshape(1, 1, h, w)
        pos = F.pad(pos, (p[1], p[1] + extra[1], p[0], p[0] + extra[0]), value=-1.0)
        pos = F.unfold(pos, k, dilation=d, stride=s)[0].long()  # (k, L)
        if pos.shape[1] != out_shape[1] * out_shape[2]:
            raise UnsupportedLayerError(f"{layer}: unexpected output size")
        self.pos = torch.where(pos < 0, torch.full_like(pos, h * w), pos)  # padding -> a dummy -inf slot
        self.real = pos >= 0

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return self.layer(x)

    def windows(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, k, L), padding slots -inf."""
        flat = x.flatten(2)
        flat = torch.cat([flat, flat.new_full((*flat.shape[:2], 1), float("-inf"))], 2)
        return flat[:, :, self.pos]

    def select(self, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """For input bounds (B, C, H, W): the flat input position j (B, C, L) of the largest lower bound of each
        window, whether x_j dominates (l_j >= u_i for every other i: max = x_j exactly), the gap
        max(0, max_{i != j} u_i - l_j) with max(x) - x_j in [0, gap], and max_i u_i (each (B, C, L))."""
        wl, wu = self.windows(lower), self.windows(upper)
        best = wl.argmax(2, keepdim=True)  # (B, C, 1, L)
        l_j = wl.gather(2, best).squeeze(2)
        others = wu.scatter(2, best, float("-inf")).amax(2)
        gap = (others - l_j).clamp(min=0)
        idx = self.pos.expand(*best.shape[:2], *self.pos.shape).gather(2, best).squeeze(2)
        return idx, others <= l_j, gap, wu.amax(2)

    def gather(self, g: Tensor, idx: Tensor) -> Tensor:
        """Entries idx (B, C, L) of g (B, M, C, H, W) -> (B, M, *out_shape) (rows of batch 1 are broadcast)."""
        b, m = idx.shape[0], g.shape[1]
        flat = g.flatten(3).expand(b, m, -1, -1)
        out = flat.gather(3, idx.unsqueeze(1).expand(-1, m, -1, -1))
        return out.reshape(b, m, *self.out_shape)

    def scatter(self, a: Tensor, idx: Tensor) -> Tensor:
        """Transpose of `gather`: (B, M, *out_shape) -> (B, M, *in_shape), summing where windows overlap."""
        b, m = idx.shape[0], a.shape[1]
        a = a.expand(b, *a.shape[1:]).flatten(3)
        out = a.new_zeros(b, m, a.shape[2], self._n)
        return out.scatter_add(3, idx.unsqueeze(1).expand(-1, m, -1, -1), a).reshape(b, m, *self.in_shape)


def run_ops(ops: Sequence[Op], x: Tensor) -> Tensor:
    """Concrete forward through the graph (used by tests to check the conversion)."""
    values: dict[Op | None, Tensor] = {None: x}
    for op in ops:
        values[op] = op.forward(*(values[s] for s in op.src))
    return values[ops[-1]] if ops else x


def chain(ops: list[Op]) -> list[Op]:
    """Link ops built one after the other into a chain (each reads the previous; the first the input)."""
    prev: Op | None = None
    for op in ops:
        op.src = (prev,)
        prev = op
    return ops


from veritrain.bounds.trace import to_ops  # noqa: E402  (the tracer builds these ops)

__all__ = [
    "ActivationOp",
    "AddOp",
    "AffineOp",
    "AvgPool2dOp",
    "CatOp",
    "Conv1dOp",
    "Conv2dOp",
    "LinearOp",
    "MaxPool2dOp",
    "Op",
    "ReLUOp",
    "ReduceOp",
    "ReshapeOp",
    "SShapedOp",
    "ScaleShiftOp",
    "SeparablePoolOp",
    "SpecOp",
    "UnsupportedLayerError",
    "chain",
    "run_ops",
    "to_ops",
]
