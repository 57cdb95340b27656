"""Bound operators: one small class per layer type (auto_LiRPA's per-operator idea, simplified).

A model (an `nn.Sequential`, possibly nested, with `Residual` blocks) is turned into a list of ops by
`to_ops`. Every affine op works on tensors of shape (B, M, *shape): B samples, M columns (M = 1 for
plain values; M > 1 for the coefficient columns of symbolic domains), so domains push coefficient
matrices through the network as if they were batches of images. Modules that are not understood
raise `UnsupportedLayerError` naming them: nothing is ever skipped silently.
"""
from __future__ import annotations

import weakref
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from veritrain.models.layers import Normalize, Residual

Shape = tuple[int, ...]
WeightFn = Callable[[Tensor], Tensor] | None


class UnsupportedLayerError(TypeError):
    """A module the bound engine cannot propagate through soundly."""


class Op:
    """Base operator. `in_shape`/`out_shape` exclude the batch dimensions."""

    in_shape: Shape
    out_shape: Shape

    def forward(self, x: Tensor) -> Tensor:
        """Concrete forward of a plain batch (B, *in_shape)."""
        raise NotImplementedError


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

    def forward(self, x: Tensor) -> Tensor:
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


class Conv2dOp(AffineOp):
    def __init__(self, layer: nn.Conv2d, in_shape: Shape, out_shape: Shape) -> None:
        if layer.padding_mode != "zeros":
            raise UnsupportedLayerError(f"Conv2d with padding_mode={layer.padding_mode!r} is not supported")
        self.layer, self.in_shape, self.out_shape = layer, in_shape, out_shape
        self._padding = self._explicit_padding(layer)
        # output_padding that makes conv_transpose2d return exactly in_shape
        self._out_pad = tuple(
            in_shape[1 + i]
            - ((out_shape[1 + i] - 1) * layer.stride[i] - 2 * self._padding[i]
               + layer.dilation[i] * (layer.kernel_size[i] - 1) + 1)
            for i in range(2)
        )
        if any(p < 0 or p >= max(layer.stride[i], layer.dilation[i]) for i, p in enumerate(self._out_pad)):
            raise UnsupportedLayerError(f"Conv2d {layer} with asymmetric 'same' padding is not supported")

    @staticmethod
    def _explicit_padding(layer: nn.Conv2d) -> tuple[int, int]:
        if layer.padding == "valid":
            return (0, 0)
        if layer.padding == "same":
            pads = [layer.dilation[i] * (layer.kernel_size[i] - 1) for i in range(2)]
            if any(p % 2 for p in pads):
                raise UnsupportedLayerError(f"Conv2d {layer} with asymmetric 'same' padding is not supported")
            return (pads[0] // 2, pads[1] // 2)
        return tuple(layer.padding)  # type: ignore[return-value]

    def _lin(self, x: Tensor, weight_fn: WeightFn) -> Tensor:
        l, w = self.layer, self.layer.weight
        return F.conv2d(x, w if weight_fn is None else weight_fn(w), None, l.stride, self._padding, l.dilation, l.groups)

    def interval(self, mid: Tensor, half: Tensor) -> tuple[Tensor, Tensor]:
        l, w = self.layer, self.layer.weight
        c = F.conv2d(mid, w * 0.5, l.bias, l.stride, self._padding, l.dilation, l.groups)
        return c, F.conv2d(half, w.abs() * 0.5, None, l.stride, self._padding, l.dilation, l.groups)

    def _lin_t(self, a: Tensor) -> Tensor:
        l = self.layer
        return F.conv_transpose2d(a, l.weight, None, l.stride, self._padding, self._out_pad, l.groups, l.dilation)

    def bias(self) -> Tensor | None:
        return None if self.layer.bias is None else self.layer.bias.view(-1, 1, 1)


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


class AvgPool2dOp(AffineOp):
    """Average pooling as a depthwise convolution with a constant kernel."""

    def __init__(self, layer: nn.AvgPool2d, in_shape: Shape, out_shape: Shape, like: Tensor) -> None:
        """`like`: a tensor of the model's device and dtype, for the constant kernel."""
        pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
        k, s, p = pair(layer.kernel_size), pair(layer.stride or layer.kernel_size), pair(layer.padding)
        if layer.ceil_mode or (any(p) and not layer.count_include_pad) or layer.divisor_override:
            raise UnsupportedLayerError(f"{layer} (ceil_mode, count_include_pad=False or divisor_override) is not supported")
        c = in_shape[0]
        weight = torch.full((c, 1, *k), 1.0 / (k[0] * k[1]), device=like.device, dtype=like.dtype)
        conv = nn.Conv2d(c, c, k, s, p, groups=c, bias=False)
        conv.weight = nn.Parameter(weight, requires_grad=False)
        self._conv = Conv2dOp(conv, in_shape, out_shape)
        self.in_shape, self.out_shape = in_shape, out_shape

    def _lin(self, x: Tensor, weight_fn: WeightFn) -> Tensor:
        return self._conv._lin(x, weight_fn)

    def _lin_t(self, a: Tensor) -> Tensor:
        return self._conv._lin_t(a)


class ReshapeOp(AffineOp):
    """Flatten / Identity: a reshape, no weights."""

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


class ReLUOp(Op):
    def __init__(self, shape: Shape) -> None:
        self.in_shape = self.out_shape = shape

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x)


class ResidualOp(Op):
    """Sum of branches, each a list of ops (the shortcut is usually an empty list = identity)."""

    def __init__(self, branches: list[list[Op]], in_shape: Shape, out_shape: Shape) -> None:
        self.branches, self.in_shape, self.out_shape = branches, in_shape, out_shape

    def forward(self, x: Tensor) -> Tensor:
        return sum(run_ops(b, x) for b in self.branches)  # type: ignore[return-value]


def run_ops(ops: Sequence[Op], x: Tensor) -> Tensor:
    """Concrete forward through ops (used by tests to check the conversion)."""
    for op in ops:
        x = op.forward(x)
    return x


def _batchnorm_params(bn: nn.BatchNorm1d | nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """(scale, shift) of BatchNorm with its running statistics (eval-mode semantics)."""
    assert bn.running_mean is not None and bn.running_var is not None
    scale = bn.running_var.add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def _convert(module: nn.Module, shape: Shape, probe: Tensor) -> tuple[list[Op], Shape, Tensor]:
    """Convert one module given its input shape; `probe` is an empty (0, *shape) batch to read output
    shapes (cheap: no arithmetic). BatchNorm is not called: in train mode it would update its running
    statistics, and it keeps the shape anyway."""
    with torch.no_grad():
        if isinstance(module, nn.Sequential):
            out = None
        elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
            out = probe
        else:
            out = module(probe)
    if isinstance(module, nn.Sequential):
        ops: list[Op] = []
        for child in module:
            sub, shape, probe = _convert(child, shape, probe)
            ops.extend(sub)
        return ops, shape, probe
    assert out is not None
    out_shape = tuple(out.shape[1:])
    if isinstance(module, nn.Linear):
        if len(shape) != 1:
            raise UnsupportedLayerError(f"Linear applied to a {len(shape) + 1}-d input {shape}: flatten first")
        return [LinearOp(module, shape)], out_shape, out
    if isinstance(module, nn.Conv2d):
        return [Conv2dOp(module, shape, out_shape)], out_shape, out
    if isinstance(module, nn.ReLU):
        return [ReLUOp(shape)], out_shape, out
    if isinstance(module, (nn.Flatten, nn.Identity)):
        return [ReshapeOp(shape, out_shape)], out_shape, out
    if isinstance(module, Normalize):
        return [ScaleShiftOp(lambda: (1.0 / module.std, -module.mean / module.std), shape)], out_shape, out
    if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
        if module.running_mean is None or module.running_var is None:
            raise UnsupportedLayerError(f"{module} without running statistics is not supported")
        return [ScaleShiftOp(lambda: _batchnorm_params(module), shape)], out_shape, out
    if isinstance(module, nn.AvgPool2d):
        return [AvgPool2dOp(module, shape, out_shape, probe)], out_shape, out
    if isinstance(module, Residual):
        branches = []
        for part in (module.branch, module.shortcut):
            sub, sub_shape, _ = _convert(part, shape, probe)
            if sub_shape != out_shape:
                raise UnsupportedLayerError(f"Residual branches of shapes {sub_shape} and {out_shape} cannot be summed")
            branches.append(sub)
        return [ResidualOp(branches, shape, out_shape)], out_shape, out
    raise UnsupportedLayerError(
        f"the bound engine does not support layer {type(module).__name__} ({module}); supported: Linear, Conv2d, "
        "ReLU, Flatten, Identity, Normalize, BatchNorm (eval statistics), AvgPool2d, Residual"
    )


_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, list[Op]]]" = weakref.WeakKeyDictionary()


def to_ops(model: nn.Module, in_shape: Shape) -> list[Op]:
    """Turn `model` (pixels (C, H, W) in) into bound operators; raises UnsupportedLayerError.

    Ops read the layers' tensors at every use, so the list is cached per model and reused while the input
    shape, the device and dtype and the module objects (`model.modules()`, by identity) are unchanged:
    converting costs as much as a third of a forward pass of a small network. Treat the list as read-only.
    """
    p = next(iter(model.parameters()), None)
    device, dtype = (p.device, p.dtype) if p is not None else (None, None)
    # the sub-modules, not the model itself: the cached value must not keep its weak key alive
    key = (tuple(in_shape), device, dtype, tuple(model.modules())[1:])
    hit = _CACHE.get(model)
    if hit is not None and hit[0] == key:  # modules compare by identity
        return hit[1]
    probe = torch.zeros(0, *in_shape, device=device, dtype=dtype)
    ops, _, _ = _convert(model, tuple(in_shape), probe)
    if key[3]:  # a bare layer as the model would be referenced by its own ops: not cached
        _CACHE[model] = (key, ops)
    return ops
