"""Compressed input columns for the local layers at the start of a network (Jacobian colouring).

A symbolic form carries one column per input pixel (d = C·H·W of them). Through convolutions, average
pooling, per-channel scaling and ReLU relaxations, a neuron depends only on the pixels of its receptive
field, a window of R_h x R_w pixels. Pixels of the same channel whose rows differ by a multiple of R_h or
whose columns differ by a multiple of R_w never share a window, so they can share one column (a
*colour*, Curtis, Powell & Reid 1974): C·R_h·R_w columns instead of C·H·W (MNIST Small: 100 instead of
784; CIFAR Small: 300 instead of 3,072). Every operation the symbolic domains apply in this prefix is
per-neuron or linear, so it acts on a colour column exactly as on the sum of its pixels' columns; and
as each window holds at most one pixel of each colour, a sum of |G| over columns is unchanged, so the
unit-box concretisation (`InputSpace`, L-inf) is the same number. At the first non-local op (a
flatten, a dense layer, a residual sum, the specification) the columns are expanded back to one per
pixel: pixel p gets its colour's column on the neurons whose window holds p, and 0 elsewhere.

The error symbols of `symbolic-linear` (variables in [0, 1], one per unstable neuron) are coloured the same
way when a ReLU inside the local layers has many of them (`error_colouring`): a symbol is used by one
neuron, so symbols one window of the later local layers apart share a column.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from veritrain.bounds.graph import reads_only
from veritrain.bounds.ops import ActivationOp, AvgPool2dOp, Conv2dOp, LinearOp, Op, ReshapeOp, ScaleShiftOp


@dataclass(frozen=True)
class Window:
    """Receptive field along one spatial axis: output index i sees inputs [start + i·jump, ... + size)."""

    size: int = 1
    jump: int = 1
    start: int = 0

    def through(self, kernel: int, stride: int, padding: int, dilation: int) -> "Window":
        return Window(
            self.size + (kernel - 1) * dilation * self.jump, self.jump * stride, self.start - padding * self.jump
        )

    def mask(self, n_in: int, n_out: int, device: torch.device | None) -> Tensor:
        """(n_in, n_out) bool: input position inside the window of each output position."""
        pos = torch.arange(n_in, device=device).unsqueeze(1)
        first = self.start + self.jump * torch.arange(n_out, device=device).unsqueeze(0)
        return (pos >= first) & (pos < first + self.size)


Axis = tuple[int, int, int, int]  # (kernel, stride, padding, dilation) along one spatial axis


def _conv_geometry(op: Conv2dOp | AvgPool2dOp) -> tuple[Axis, Axis]:
    """The geometry of a convolution or an average pooling along the height and the width."""
    conv = op._conv if isinstance(op, AvgPool2dOp) else op
    l = conv.layer
    gh, gw = ((l.kernel_size[i], l.stride[i], conv._padding[i], l.dilation[i]) for i in range(2))
    return gh, gw


def local_prefix(ops: list[Op]) -> tuple[int, Window, Window]:
    """Length of the leading chain of spatially local ops on (C, H, W) tensors, and its receptive field.

    Local: convolutions, average pooling, per-channel scaling and element-wise activations (each relaxed per
    neuron). Anything else (max pooling, a join, a fork: an op read by a later op off the chain) ends it."""
    wh, ww = Window(), Window()
    n = 0
    prev = ops[0].src[0] if ops else None
    for op in ops:
        if len(op.in_shape) != 3 or len(op.out_shape) != 3 or op.src != (prev,):
            break
        if isinstance(op, (Conv2dOp, AvgPool2dOp)):
            gh, gw = _conv_geometry(op)
            wh, ww = wh.through(*gh), ww.through(*gw)
        elif not isinstance(op, (ScaleShiftOp, ActivationOp)):
            break
        n += 1
        prev = op
    while n and not reads_only(ops[n:], ops[n - 1]):  # a later op reads inside the prefix: stop before it
        n, wh, ww = _shorter(ops, n - 1)
    return n, wh, ww


def _shorter(ops: list[Op], n: int) -> tuple[int, Window, Window]:
    """The receptive field of the first n ops of a local prefix."""
    wh, ww = Window(), Window()
    for op in ops[:n]:
        if isinstance(op, (Conv2dOp, AvgPool2dOp)):
            gh, gw = _conv_geometry(op)
            wh, ww = wh.through(*gh), ww.through(*gw)
    return n, wh, ww


class Colouring:
    """The colour of each input pixel and the expansion back to one column per pixel (module docstring)."""

    def __init__(
        self, in_shape: tuple[int, int, int], out_shape: tuple[int, ...], wh: Window, ww: Window, like: Tensor
    ) -> None:
        c, h, w = in_shape
        rh, rw = min(wh.size, h), min(ww.size, w)  # period per axis; the whole axis when the window covers it
        dev = like.device
        ch = torch.arange(c, device=dev).view(c, 1, 1)
        ys, xs = torch.arange(h, device=dev).view(1, h, 1), torch.arange(w, device=dev).view(1, 1, w)
        self.colour = (ch * rh * rw + (ys % rh) * rw + xs % rw).reshape(-1)  # (d,)
        self.n = c * rh * rw
        self.onehot = (self.colour.unsqueeze(0) == torch.arange(self.n, device=dev).unsqueeze(1)).to(like.dtype)
        self.onehot = self.onehot.reshape(self.n, *in_shape)
        # (d, *out_shape) 0/1: pixel (c, y, x) inside the window of output neuron (c', i, j)
        co, ho, wo = out_shape
        inside = wh.mask(h, ho, dev).view(1, h, 1, 1, ho, 1) & ww.mask(w, wo, dev).view(1, 1, w, 1, 1, wo)
        self._inside, self._dtype, self.in_shape = inside, like.dtype, (c, h, w)
        # for `expand_linear`: the pixels of each colour (padded with the dummy index d), the window mask of
        # those pixels over the output positions, and where each pixel sits in the (colour, member) order
        d, n_pos = c * h * w, ho * wo
        counts = torch.bincount(self.colour, minlength=self.n)
        order = torch.argsort(self.colour, stable=True)
        rank = torch.arange(d, device=dev) - (torch.cumsum(counts, 0) - counts)[self.colour[order]]
        width = int(counts.max())
        members = torch.full((self.n, width), d, dtype=torch.long, device=dev)
        members[self.colour[order], rank] = order
        spatial = inside[0, :, :, 0].reshape(h * w, n_pos)  # pixel (y, x) inside the window of position (i, j)
        spatial = torch.cat([spatial.repeat(c, 1), spatial.new_zeros(1, n_pos)])  # + the dummy pixel's row
        self.member_mask = spatial[members].to(like.dtype)  # (n, width, positions)
        slot = torch.empty(d, dtype=torch.long, device=dev)
        real = members.reshape(-1) < d
        slot[members.reshape(-1)[real]] = torch.arange(self.n * width, device=dev)[real]
        self.slot = slot  # pixel -> its row in the (n * width) member order
        self.out_shape = tuple(out_shape)

    @functools.cached_property
    def inside(self) -> Tensor:
        """(d, *out_shape) 0/1: pixel (c, y, x) inside the window of output neuron (c', i, j); built on first
        use only (`expand`), as it is d x neurons large and `expand_linear` does not need it."""
        c, h, w = self.in_shape
        co, ho, wo = self.out_shape
        return self._inside.expand(c, h, w, co, ho, wo).reshape(c * h * w, co, ho, wo).to(self._dtype)

    def start(self, scale: Tensor) -> Tensor:
        """Columns (B, n, C, H, W) of the input variables t in [0, 1]^d, x' = lo + scale·t."""
        return self.onehot.unsqueeze(0) * scale.unsqueeze(1)

    def expand(self, g: Tensor) -> Tensor:
        """(B, n, *shape) colour columns -> (B, d, *shape) pixel columns."""
        return g.index_select(1, self.colour) * self.inside

    def expand_linear(self, g: Tensor, weight: Tensor, rows: Tensor | None = None) -> Tensor:
        """W · expand(g) for a dense layer W (O, C'·H'·W') applied to the flattened prefix output, without
        forming the (B, d, C', H', W') pixel columns: per output position p, M_p = W_p g_p (the layer's slice
        times the colour columns), then pixel q of colour k gets the sum of M_p[k] over the positions p whose
        window holds q. The same numbers as `expand` followed by the layer (up to rounding), in about
        d·P·O + n·C'·P·O instead of d·C'·P·O multiply-adds (CIFAR Small: 8x fewer). `rows` (B, r): only
        these pixel columns of each sample, (B, r, O)."""
        b, n = g.shape[0], g.shape[1]
        co, ho, wo = self.out_shape
        out = weight.shape[0]
        m = torch.einsum("ocp,bncp->bnpo", weight.reshape(out, co, ho * wo), g.reshape(b, n, co, ho * wo))
        per_member = torch.matmul(self.member_mask, m).reshape(b, -1, out)  # (B, n * width, O)
        if rows is None:
            return per_member.index_select(1, self.slot)  # (B, d, O)
        return per_member.gather(1, self.slot[rows].unsqueeze(2).expand(-1, -1, out))


@functools.lru_cache(maxsize=4)  # the masks are d x (neurons): a few MB for MNIST/CIFAR Small
def _colouring(
    in_shape: tuple[int, int, int],
    out_shape: tuple[int, ...],
    wh: Window,
    ww: Window,
    device: torch.device,
    dtype: torch.dtype,
) -> Colouring:
    return Colouring(in_shape, out_shape, wh, ww, torch.empty(0, device=device, dtype=dtype))


def _coloured(
    shape: tuple[int, int, int], out_shape: tuple[int, ...], wh: Window, ww: Window, like: Tensor
) -> Colouring | None:
    """The (cached) colouring of a (C, H, W) grid under windows wh x ww, or None when it would not at least
    halve the columns."""
    c, h, w = shape
    if c * min(wh.size, h) * min(ww.size, w) * 2 > c * h * w:
        return None
    return _colouring((c, h, w), tuple(out_shape), wh, ww, like.device, like.dtype)


def dense_head(ops: list[Op], shape: tuple[int, ...]) -> int:
    """Length of a leading [reshape..., Linear] run of `ops` applied to a `shape` output (0 if none): the
    ops `Colouring.expand_linear` can fuse with the expansion."""
    i = 0
    prev = ops[0].src[0] if ops else None
    while i < len(ops) and isinstance(ops[i], ReshapeOp) and ops[i].src == (prev,):
        prev = ops[i]
        i += 1
    if (
        i < len(ops)
        and isinstance(ops[i], LinearOp)
        and ops[i].in_shape == (math.prod(shape),)
        and ops[i].src == (prev,)
        and reads_only(ops[i + 1 :], ops[i])
    ):
        return i + 1
    return 0


def error_colouring(rest: list[Op], shape: tuple[int, ...], like: Tensor) -> Colouring | None:
    """The colouring of the error symbols of a ReLU with output `shape` inside the local prefix, `rest` being
    the local ops after it: each symbol is a variable in [0, 1] used by one neuron, just like an input pixel,
    so symbols one window of `rest` apart share a column. None when `rest` holds no convolution or pooling,
    or the colours would not halve the neurons."""
    if len(shape) != 3 or not rest:
        return None
    n, wh, ww = local_prefix(rest)
    if n != len(rest):
        return None
    return _coloured(shape, rest[-1].out_shape, wh, ww, like)


def colouring_for(ops: list[Op], in_shape: tuple[int, ...], like: Tensor) -> tuple[Colouring, int] | None:
    """The colouring of the local prefix of `ops` and the prefix length; None when it saves less than half
    the columns or the prefix holds no ReLU (nothing to gain over the shared weight matrix)."""
    if len(in_shape) != 3:
        return None
    n, wh, ww = local_prefix(ops)
    if not any(isinstance(op, ActivationOp) for op in ops[:n]):
        return None
    found = _coloured(in_shape, ops[n - 1].out_shape, wh, ww, like)
    return None if found is None else (found, n)


__all__ = ["Colouring", "Window", "colouring_for", "dense_head", "error_colouring", "local_prefix"]
