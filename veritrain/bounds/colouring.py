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


# ---- patches: each neuron's coefficients over the pixels of its own window --------------------------------


class Patches:
    """The input columns of a layer inside the local prefix as, per neuron, its coefficients over the pixels
    of its receptive field only: `p` (B, R, P, C) for a (C, H, W) layer with P = H·W positions and R = C0·Rh·Rw
    window entries (C0 input channels, the window Rh x Rw of `Window`s wh, ww: position (i, j) sees the pixels
    (wh.start + i·wh.jump + a, ww.start + j·ww.jump + b)); entries on pixels outside the image are 0.

    The same numbers as the colour columns (`Colouring`: a window holds at most one pixel of each colour, so
    colour column k at a neuron is the patch entry of its pixel of colour k) without their zeros: MNIST
    Small's first layer has 16 entries per neuron against 100 colours, its second 100 against 100. A
    convolution is a gather of the input positions it reads, one matrix product per kernel element (over
    the input channels) and a sum into the wider window (`affine`); an activation's or a channel scaling's
    factor is a product (`scale`); concretisation is a sum over the window (`neg_total`); the expansion to
    one column per pixel, fused with a following dense layer or not, is a scatter-add (`expand_linear`,
    `dense`). Only ungrouped convolutions, per-channel scalings and activations (`supports`). The coloured
    error symbols of an activation inside the local layers are carried the same way (`start` of their
    offsets: that activation's neurons are the 'pixels'; `symbolic_linear.error_block`)."""

    def __init__(self, p: Tensor, in_shape: tuple[int, ...], shape: tuple[int, ...], wh: Window, ww: Window) -> None:
        self.p, self.in_shape, self.shape, self.wh, self.ww = p, tuple(in_shape), tuple(shape), wh, ww

    @staticmethod
    def supports(ops: list[Op]) -> bool:
        return all(
            (isinstance(op, Conv2dOp) and op.layer.groups == 1) or isinstance(op, (ScaleShiftOp, ActivationOp))
            for op in ops
        )

    @classmethod
    def start(cls, scale: Tensor) -> "Patches":
        """The input variables t in [0, 1]^d, x' = lo + scale·t: one entry per pixel, its own scale."""
        b, c = scale.shape[:2]
        p = torch.diag_embed(scale.reshape(b, c, -1).transpose(1, 2)).permute(0, 2, 1, 3)  # (B, C, H·W, C)
        return cls(p, tuple(scale.shape[1:]), tuple(scale.shape[1:]), Window(), Window())

    def _like(self, p: Tensor, shape: tuple[int, ...] | None = None) -> "Patches":
        return Patches(p, self.in_shape, shape or self.shape, self.wh, self.ww)

    def scale(self, slope: Tensor) -> "Patches":
        """Times a per-neuron factor (B, C, H, W)."""
        b, c = slope.shape[0], self.shape[0]
        return self._like(self.p * slope.reshape(b, c, -1).transpose(1, 2).unsqueeze(1))

    def neg_total(self) -> tuple[Tensor, Tensor]:
        """Per neuron (B, C, H, W): the sum of min(entry, 0), and of the entries."""
        b = self.p.shape[0]
        neg, total = self.p.clamp(max=0).sum(1), self.p.sum(1)
        return neg.transpose(1, 2).reshape(b, *self.shape), total.transpose(1, 2).reshape(b, *self.shape)

    def affine(self, op: Op) -> "Patches":
        """W p for a convolution or a per-channel scaling (`supports`). The gather and the sum run along dim 0
        of 2-d tensors (batch offsets in the indices): their backward passes take PyTorch's fast CPU path."""
        if isinstance(op, ScaleShiftOp):
            return self._like(self.p * op.scale.reshape(1, 1, 1, -1))
        assert isinstance(op, Conv2dOp)
        src, dst, wh, ww = _conv_tables(self, op)
        b, r, n_pos, ci = self.p.shape
        w = op.layer.weight  # (Co, Ci, Kh, Kw)
        co, k = w.shape[0], w.shape[2] * w.shape[3]
        n_out, r_new = op.out_shape[1] * op.out_shape[2], wh.size * ww.size * self.in_shape[0]
        if b > 1:  # one flat index over the samples
            src = (torch.arange(b, device=src.device).view(b, 1) * (r * (n_pos + 1)) + src).reshape(-1)
            dst = (torch.arange(b, device=dst.device).view(b, 1, 1) * r_new + dst.view(1, k, r)).reshape(-1)
        padded = torch.cat([self.p, self.p.new_zeros(b, r, 1, ci)], 2).reshape(-1, ci)  # position P: padding
        u = padded.index_select(0, src).reshape(b, k, -1, ci)  # (B, K, R·P_out, Ci)
        m = torch.matmul(u, w.reshape(co, ci, k).permute(2, 1, 0))  # (B, K, R·P_out, Co)
        p = m.new_zeros(b * r_new, n_out * co).index_add(0, dst, m.reshape(b * k * r, n_out * co))
        return Patches(p.reshape(b, r_new, n_out, co), self.in_shape, tuple(op.out_shape), wh, ww)

    def _pixels(self) -> Tensor:
        """(P·R,) the input pixel (flat index, d = numel(in_shape) outside the image) of every entry, by
        position then entry."""
        return _pixel_table(self.in_shape, self.shape, self.wh, self.ww, self.p.device)

    def expand_linear(self, weight: Tensor) -> Tensor:
        """W · (the columns per pixel) for a dense layer W (O, C·H·W) after the flattened layer: (B, d, O)."""
        b, r, n_pos, c = self.p.shape
        out, d = weight.shape[0], math.prod(self.in_shape)
        per_pos = self.p.permute(0, 2, 1, 3)  # (B, P, R, C)
        m = torch.matmul(per_pos, weight.reshape(out, c, n_pos).permute(2, 1, 0))  # (B, P, R, O)
        idx = self._pixels()
        if b > 1:
            idx = (torch.arange(b, device=idx.device).unsqueeze(1) * (d + 1) + idx).reshape(-1)
        return m.new_zeros(b * (d + 1), out).index_add(0, idx, m.reshape(-1, out)).reshape(b, d + 1, out)[:, :d]

    def dense(self) -> Tensor:
        """The columns per pixel (B, d, C, H, W)."""
        b, r, n_pos, c = self.p.shape
        d = math.prod(self.in_shape)
        pos = torch.arange(n_pos, device=self.p.device).repeat_interleave(r)
        rows = self.p.permute(0, 2, 1, 3).reshape(b, -1, c)  # (B, P·R, C)
        full = self.p.new_zeros(b, (d + 1) * n_pos, c).index_add(1, self._pixels() * n_pos + pos, rows)
        return full.reshape(b, d + 1, n_pos, c)[:, :d].transpose(2, 3).reshape(b, d, *self.shape)


_TABLES: dict[tuple, tuple[Tensor, Tensor, Window, Window]] = {}


def _conv_tables(x: Patches, op: Conv2dOp) -> tuple[Tensor, Tensor, Window, Window]:
    """For `Patches.affine` through a convolution: per kernel element, window entry and output position the
    row of the (entry, input position + a padding position) rows that it reads, per kernel element and
    window entry its entry of the wider window, and the wider windows."""
    l = op.layer
    key = (x.in_shape, x.shape, x.wh, x.ww, tuple(op.out_shape), l.kernel_size, l.stride, op._padding, l.dilation)
    found = _TABLES.get((key, x.p.device))
    if found is not None:
        return found
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = l.kernel_size, l.stride, op._padding, l.dilation
    _, hi, wi = x.shape
    _, ho, wo = op.out_shape
    dev = x.p.device
    wh, ww = x.wh.through(kh, sh, ph, dh), x.ww.through(kw, sw, pw, dw)
    ky, kx = torch.arange(kh, device=dev).view(kh, 1, 1, 1), torch.arange(kw, device=dev).view(1, kw, 1, 1)
    oy, ox = torch.arange(ho, device=dev).view(1, 1, ho, 1), torch.arange(wo, device=dev).view(1, 1, 1, wo)
    iy, ix = oy * sh - ph + ky * dh, ox * sw - pw + kx * dw  # (Kh, Kw, Ho, Wo) after broadcasting
    inside = (iy >= 0) & (iy < hi) & (ix >= 0) & (ix < wi)
    pos = torch.where(inside, iy * wi + ix, torch.full_like(iy * ix, hi * wi)).reshape(kh * kw, 1, ho * wo)
    c0 = x.in_shape[0]
    r = c0 * x.wh.size * x.ww.size
    src = (torch.arange(r, device=dev).view(1, r, 1) * (hi * wi + 1) + pos).reshape(-1)  # (K·R·P_out)
    # the entry (c0, a, b) of an input window sits at (c0, a + ky·dh·jump, b + kx·dw·jump) of the wider one
    a = torch.arange(x.wh.size, device=dev).view(1, 1, 1, x.wh.size, 1)
    bb = torch.arange(x.ww.size, device=dev).view(1, 1, 1, 1, x.ww.size)
    ch = torch.arange(c0, device=dev).view(1, 1, c0, 1, 1)
    shift_h = (torch.arange(kh, device=dev) * dh * x.wh.jump).view(kh, 1, 1, 1, 1)
    shift_w = (torch.arange(kw, device=dev) * dw * x.ww.jump).view(1, kw, 1, 1, 1)
    dst = ch * (wh.size * ww.size) + (a + shift_h) * ww.size + (bb + shift_w)  # (Kh, Kw, C0, Rh, Rw)
    found = (src, dst.reshape(-1), wh, ww)
    _TABLES[(key, x.p.device)] = found
    return found


@functools.lru_cache(maxsize=8)
def _pixel_table(
    in_shape: tuple[int, ...], shape: tuple[int, ...], wh: Window, ww: Window, device: torch.device
) -> Tensor:
    """`Patches._pixels`."""
    c0, h0, w0 = in_shape
    _, h, w = shape
    oy = (
        wh.start
        + wh.jump * torch.arange(h, device=device).view(h, 1, 1, 1, 1)
        + torch.arange(wh.size, device=device).view(1, 1, 1, -1, 1)
    )
    ox = (
        ww.start
        + ww.jump * torch.arange(w, device=device).view(1, w, 1, 1, 1)
        + torch.arange(ww.size, device=device).view(1, 1, 1, 1, -1)
    )
    ch = torch.arange(c0, device=device).view(1, 1, c0, 1, 1)
    inside = (oy >= 0) & (oy < h0) & (ox >= 0) & (ox < w0)
    flat = ch * (h0 * w0) + oy * w0 + ox
    return torch.where(inside, flat, torch.full_like(flat, c0 * h0 * w0)).reshape(-1)  # (P·C0·Rh·Rw)


__all__ = ["Colouring", "Patches", "Window", "colouring_for", "dense_head", "error_colouring", "local_prefix"]
