"""Symbolic linear relaxation (Neurify, Wang et al. NeurIPS 2018): the paper's default analysis (Section III).

Each neuron is ONE linear form z = G·v + c over the input variables v (see `symbolic.InputSpace`) and
one fresh error symbol e_k in [0, 1] per unstable ReLU met so far, carried symbolically to the output.
At an unstable ReLU with concrete bounds l < 0 < u, Neurify's parallel relaxation
    lambda·z  <=  relu(z)  <=  lambda·(z - l),    lambda = u / (u - l),
is written as relu(z) = lambda·z + (-lambda·l)·e_new with e_new in [0, 1]: one coefficient set plus an
offset, not two equation sets. Stable neurons are the identity (l >= 0) or 0 (u <= 0). Every other
activation uses its parallel lines the same way (`relaxations.py`: f(z) = k·z + lo + (hi - lo)·e_new), and
max pooling is max = x_j + gap·e_new (j: the largest lower bound of the window, gap = max(0, max_{i≠j} u_i - l_j)).

Error symbols are just more columns of G (B, d + m, *shape), kept as blocks keyed by the op that made them
('input' for the input columns): an activation appends, per sample, one column per unstable neuron (padded
to the batch maximum with zero columns), so memory grows with the number of unstable neurons; the public
calls chunk the samples (`veritrain.bounds.base.CHUNK_MEMORY`) to bound it. A fresh block has one non-zero
per column and is kept in that form (`OneHot`: the neuron and the coefficient of each column) until an op
mixes neurons: per-neuron scalings keep it, a Linear layer or a convolution applied to it is a gather of
its weight (no product with mostly-zero columns), concretising it is a scatter; any other op densifies it.
Many such columns through a convolution stay unformed (`ConvOneHot`: concretised by one convolution, taken
through the next Linear layer as a transposed product); more still (`use_colours`) are coloured and carried as
`colouring.Patches` through the local layers (`error_block`).
The numbers are those of the dense columns (the same products, without the zero terms). At a join (residual sum) the blocks of the same key are
the same variables and add up; the others are distinct variables and are kept side by side. Interval
bounds are propagated alongside and intersected with the concretised ones at every activation and at the
output: the result is never looser than the `interval` domain. The spec C (SpecOp) is applied like any
affine op.
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from veritrain.bounds.base import DOMAINS, Ball, Domain
from veritrain.bounds.colouring import Colouring, Patches, dense_head, error_colouring
from veritrain.bounds.graph import Table, forward, rule_for
from veritrain.bounds.interval import fold_spec, interval_step
from veritrain.bounds.ops import (
    ActivationOp,
    AddOp,
    AffineOp,
    CatOp,
    Conv2dOp,
    LinearOp,
    MaxPool2dOp,
    Op,
    ReLUOp,
    ReshapeOp,
    SShapedOp,
    UnsupportedLayerError,
)
from veritrain.bounds.relaxations import Lines, relu_relaxation, s_shaped_relaxation
from veritrain.bounds.symbolic import Box, InputSpace, affine_const, initial_box, leading_chain, local_colouring

Form = tuple[list["Block"], Tensor]  # (column blocks, each (B, M_i, *shape); constant c (B, *shape))
Blocks = dict[Any, "Block"]  # block key ('input' or the op that made the symbols) -> (B, M_i, *shape)
Value = tuple[Blocks, Tensor, Box]  # blocks, constant c (B, *shape), interval box
INPUT = "input"


class OneHot:
    """A block of columns with one non-zero each (fresh error symbols): column k of sample b is `val[b, k]` at
    the flat neuron `idx[b, k]` of a (B, *shape) layer; padding columns have val 0. `dense()` is the
    (B, m, *shape) tensor it stands for."""

    def __init__(self, idx: Tensor, val: Tensor, shape: tuple[int, ...]) -> None:
        self.idx, self.val, self.shape = idx, val, tuple(shape)

    @property
    def columns(self) -> int:
        return self.idx.shape[1]

    def dense(self) -> Tensor:
        b, m = self.idx.shape
        n = self.val.new_zeros(b, m, math.prod(self.shape))
        return n.scatter(2, self.idx.unsqueeze(2), self.val.unsqueeze(2)).reshape(b, m, *self.shape)

    def per_neuron(self, v: Tensor) -> Tensor:
        """The sum over columns of `v` (a function of val), per neuron: (B, *shape)."""
        out = v.new_zeros(v.shape[0], math.prod(self.shape)).scatter_add(1, self.idx, v)
        return out.reshape(v.shape[0], *self.shape)

    def __mul__(self, k: float) -> "OneHot":
        return OneHot(self.idx, self.val * k, self.shape)

    __rmul__ = __mul__

    def scale(self, slope: Tensor) -> "OneHot":
        """The columns times a per-neuron factor slope (B, *shape)."""
        return OneHot(self.idx, self.val * slope.flatten(1).gather(1, self.idx), self.shape)


#: Where autograd records (training), a `OneHot` block through a convolution stays unformed (`ConvOneHot`)
#: when it has more columns than this times the convolution's input channels x kernel elements (the cost of
#: its transposed product), else its columns are gathered. MNIST Small's second layer: 256 elements; a fresh
#: network has ~450 error symbols at the first ReLU (one sample's bound pass, forward and backward, one
#: thread: 50 -> 34 CPU ms), one trained at eps 0.3 ~30 (gathered: the unformed block would cost 23 -> 28 ms).
#: Without gradients the block always stays unformed: its product with a Linear layer then costs in
#: proportion to its columns (`ConvOneHot.linear`).
DEFER_FROM = 0.5


class ConvOneHot:
    """A `OneHot` block through an (ungrouped) convolution, times a per-neuron factor `scale` (B, *out_shape)
    or None: the columns conv(e_idx[k])·val[k]·scale, kept unformed. A column has few non-zeros (one
    kernel's reach), so the block is never formed where that can be avoided:
    - concretised (`neg_total`) by one convolution of the block's per-neuron values v = sum_k val[k]·e_idx[k]
      (the indices of a sample are distinct, as `error_block` makes them): sum_k min(w·v_k, 0) =
      min(w, 0)·max(v, 0) + max(w, 0)·min(v, 0), and a factor s: min(s·x, 0) = max(s, 0)·min(x, 0) +
      min(s, 0)·max(x, 0);
    - through the next Linear layer W (`linear`): without gradients, per column a weighted sum of the few
      columns of W its non-zeros meet (a cost in proportion to the columns; the authors' eps 0.3 checkpoint,
      1,000 images, one thread: 9.8-10.1 -> 5.0-5.2 CPU ms per image); with them, the rows of W·diag(scale)
      through the transposed convolution, gathered at the block's neurons (a cost independent of the number
      of columns, hence `DEFER_FROM`);
    - anything else densifies it (`dense`). The same sums as the formed columns, in another order."""

    def __init__(self, op: Conv2dOp, src: OneHot, scale: Tensor | None = None, shape: tuple[int, ...] | None = None):
        self.op, self.src, self.factor = op, src, scale
        self.shape = tuple(op.out_shape if shape is None else shape)

    @property
    def columns(self) -> int:
        return self.src.columns

    def dense(self) -> Tensor:
        cols = _conv_gather(self.op, self.src)
        if self.factor is not None:
            cols = cols * self.factor.unsqueeze(1)
        return cols.reshape(*cols.shape[:2], *self.shape)

    def scale(self, slope: Tensor) -> "ConvOneHot":
        """The columns times a per-neuron factor slope (B, *shape)."""
        slope = slope.reshape(slope.shape[0], *self.op.out_shape)
        return ConvOneHot(self.op, self.src, slope if self.factor is None else self.factor * slope, self.shape)

    def reshaped(self, shape: tuple[int, ...]) -> "ConvOneHot":
        return ConvOneHot(self.op, self.src, self.factor, shape)

    def neg_total(self) -> tuple[Tensor, Tensor]:
        """Per neuron (B, *shape): the sum over columns of min(column, 0), and of the columns."""
        src, layer = self.src, self.op.layer
        v = src.per_neuron(src.val)  # (B, *in_shape)
        v_pos = torch.relu(v)
        w = layer.weight
        w_pos = torch.relu(w)
        w_neg = w - w_pos
        weight = torch.cat([torch.cat([w_neg, w_pos], 1), torch.cat([w, w], 1)])  # (2 Co, 2 Ci, Kh, Kw)
        both = F.conv2d(torch.cat([v_pos, v - v_pos], 1), weight, None, layer.stride, self.op._padding, layer.dilation)
        neg, total = both.chunk(2, 1)
        s = self.factor
        if s is not None:
            s_pos = torch.relu(s)
            neg, total = s_pos * neg + (s - s_pos) * (total - neg), s * total
        b = neg.shape[0]
        return neg.reshape(b, *self.shape), total.reshape(b, *self.shape)

    def linear(self, weight: Tensor) -> Tensor:
        """W · columns for a Linear weight W (O, numel(shape)): (B, m, O).

        A column (one input neuron through the convolution) has at most Co x R_h x R_w non-zeros (R: the
        outputs one input reaches per axis, `_conv_reach`; 128 of 1,568 in MNIST Small's second layer), so
        its product with W is a weighted sum of that many columns of W: one `embedding_bag` over W^T, the
        weights being the kernel taps times val (and the factor at those outputs). Without gradients that
        is all; with them (training) its backward is slow, and where the block has many columns the
        transposed product is used instead: the rows of W·diag(scale) through the transposed convolution,
        gathered at the block's neurons (a cost independent of the number of columns, hence `DEFER_FROM`)."""
        if not _records_grad(weight, self.src.val, self.factor, self.op.layer.weight):
            return self._linear_taps(weight)
        op, src = self.op, self.src
        out = weight.shape[0]
        rows = weight.unsqueeze(0)  # (1, O, N): the rows of W diag(scale), per sample when scaled
        if self.factor is not None:
            rows = rows * self.factor.reshape(self.factor.shape[0], 1, -1)
        back = op._lin_t(rows.reshape(-1, *op.out_shape)).reshape(rows.shape[0], out, -1)  # (B or 1, O, N_in)
        b, m = src.idx.shape
        got = back.expand(b, -1, -1).gather(2, src.idx.unsqueeze(1).expand(-1, out, -1))  # (B, O, m)
        return got.transpose(1, 2) * src.val.unsqueeze(2)

    def _linear_taps(self, weight: Tensor) -> Tensor:
        """`linear` as one weighted sum of W's columns per column of the block (`embedding_bag`)."""
        op, src = self.op, self.src
        b, m = src.idx.shape
        co, ho, wo = op.out_shape
        _, h, wd = op.in_shape
        (oh, th), (ow, tw) = _conv_reach(op)  # (n_in, R) per axis: the outputs reached and the kernel index
        r1, r2 = oh.shape[1], ow.shape[1]
        taps = _kernel_taps(op, src, th, tw)  # (B, m, Co, R1, R2)
        i, j = (src.idx // wd) % h, src.idx % wd
        chan = torch.arange(co, device=src.idx.device).view(1, 1, co, 1, 1) * (ho * wo)
        pos = chan + (oh[i] * wo).view(b, m, 1, r1, 1) + ow[j].view(b, m, 1, 1, r2)  # (B, m, Co, R1, R2)
        if self.factor is not None:
            taps = taps * self.factor.reshape(b, -1).gather(1, pos.reshape(b, -1)).view(taps.shape)
        flat = pos.reshape(b * m, -1)
        got = F.embedding_bag(flat, weight.t().contiguous(), per_sample_weights=taps.reshape(flat.shape), mode="sum")
        return got.reshape(b, m, -1)


def _true_first(mask: Tensor, k: int) -> Tensor:
    """Per row of a 2-d boolean mask, the column indices of its True entries in order, then of its False ones:
    the first k, (rows, k)."""
    return torch.argsort(mask.to(torch.int8), dim=1, descending=True, stable=True)[:, :k]


def _records_grad(*ts: Tensor | None) -> bool:
    """Whether autograd records an op on these tensors."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in ts)


def _conv_reach(op: Conv2dOp) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Per spatial axis, for each input index, the R output indices it reaches and the kernel index of each
    link, (n_in, R) both (kernel index K and an arbitrary output where an input reaches fewer than R)."""
    cached = op.__dict__.get("_reach")
    dev = op.layer.weight.device
    if cached is not None and cached[0][0].device == dev:
        return cached
    found = []
    for table, k in zip(_conv_index(op), op.layer.kernel_size):
        linked = table < k  # (n_in, n_out)
        outs = _true_first(linked, max(int(linked.sum(1).max()), 1))
        found.append((outs, table.gather(1, outs)))
    op.__dict__["_reach"] = (found[0], found[1])
    return found[0], found[1]


Block = Tensor | OneHot | ConvOneHot | Patches


def dense(b: Block) -> Tensor:
    return b if isinstance(b, Tensor) else b.dense()


def _conv_index(op: Conv2dOp) -> tuple[Tensor, Tensor]:
    """Per spatial axis, the kernel index (n_in, n_out) that links input i to output o (K where none)."""
    cached = op.__dict__.get("_onehot_index")
    dev = op.layer.weight.device
    if cached is not None and cached[0].device == dev:
        return cached
    tables = []
    for axis in range(2):
        k, s, p, d = op.layer.kernel_size[axis], op.layer.stride[axis], op._padding[axis], op.layer.dilation[axis]
        i = torch.arange(op.in_shape[1 + axis], device=dev).unsqueeze(1)
        o = torch.arange(op.out_shape[1 + axis], device=dev).unsqueeze(0)
        off = i + p - o * s
        kk = torch.div(off, d, rounding_mode="floor")
        ok = (off >= 0) & (off % d == 0) & (kk < k)
        tables.append(torch.where(ok, kk, torch.full_like(kk, k)))
    op.__dict__["_onehot_index"] = (tables[0], tables[1])
    return tables[0], tables[1]


def linear_block(op: AffineOp, b: Block) -> Block:
    """W b for a block: `op.linear` on a dense block; on a `OneHot` block a gather of the weight's columns
    (Linear; an ungrouped Conv2d too, or with many columns a `ConvOneHot`: `DEFER_FROM`), the same flat
    indices (reshape), else op.linear on its dense form; on a `ConvOneHot` its reshape, its product with a
    Linear layer, else op.linear on its dense form."""
    if isinstance(b, Patches):
        return b.affine(op)
    if isinstance(b, ConvOneHot):
        if isinstance(op, ReshapeOp):
            return b.reshaped(op.out_shape)
        if isinstance(op, LinearOp) and op.in_shape == (math.prod(b.shape),):
            return b.linear(op.layer.weight)
        return op.linear(b.dense())
    if not isinstance(b, OneHot):
        return op.linear(b)
    if isinstance(op, ReshapeOp):
        return OneHot(b.idx, b.val, op.out_shape)
    bsz, m = b.idx.shape
    if isinstance(op, LinearOp):
        cols = op.layer.weight.t().index_select(0, b.idx.flatten()).reshape(bsz, m, -1)
        return cols * b.val.unsqueeze(2)
    if isinstance(op, Conv2dOp) and op.layer.groups == 1:
        defer = m > DEFER_FROM * math.prod(op.layer.weight.shape[1:]) or not _records_grad(b.val, op.layer.weight)
        return ConvOneHot(op, b) if defer else _conv_gather(op, b)
    return op.linear(b.dense())


def _conv_gather(op: Conv2dOp, b: OneHot) -> Tensor:
    """The columns (B, m, *out_shape) of an ungrouped convolution applied to a `OneHot` block: a gather of its
    weight."""
    return _kernel_taps(op, b, *_conv_index(op))


def _kernel_taps(op: Conv2dOp, src: OneHot, th: Tensor, tw: Tensor) -> Tensor:
    """w[co, c, th[i, x], tw[j, y]] · val for each column of `src` (the unit input at neuron (c, i, j)) and
    output channel co, (B, m, Co, X, Y), for per-axis kernel-index tables th (H_in, X) and tw (W_in, Y)
    (kernel index K: no link, weight 0). With `_conv_index`'s tables these are the columns of the convolution
    applied to the block (out[co, oi, oj] of the unit input at (c, i, j) is w[co, c, kh, kw])."""
    b, m = src.idx.shape
    w = op.layer.weight  # (Co, Ci, Kh, Kw)
    co, _, kh, kw = w.shape
    _, h, wd = op.in_shape
    c, i, j = src.idx // (h * wd), (src.idx // wd) % h, src.idx % wd
    flat = (c * ((kh + 1) * (kw + 1))).view(b, m, 1, 1) + th[i].unsqueeze(3) * (kw + 1) + tw[j].unsqueeze(2)
    wpad = F.pad(w, (0, 1, 0, 1)).reshape(co, -1)  # index K: a zero row and column (no link)
    taps = wpad.index_select(1, flat.flatten()).reshape(co, b, m, *flat.shape[2:]).permute(1, 2, 0, 3, 4)
    return taps * src.val.view(b, m, 1, 1, 1)


def concretize_blocks(space: InputSpace, blocks: list[Block], c: Tensor) -> tuple[Tensor, Tensor]:
    """Lower and upper bounds of a form: block 0 holds the input columns, later blocks error symbols in [0, 1]."""

    def neg_total(b: Block) -> tuple[Tensor, Tensor]:
        if isinstance(b, (ConvOneHot, Patches)):
            return b.neg_total()
        if isinstance(b, OneHot):
            return b.per_neuron(b.val.clamp(max=0)), b.per_neuron(b.val)
        return b.clamp(max=0).sum(1), b.sum(1)

    if space.unit:  # every variable in [0, 1]: lower = c + sum min(G, 0), upper = c + sum G - sum min(G, 0)
        parts = [neg_total(b) for b in blocks]
        neg = sum(p[0] for p in parts)
        total = sum(p[1] for p in parts)
        return c + neg, c + total - neg
    first = dense(blocks[0])
    lower, upper = space.concretize(first, c, True), space.concretize(first, c, False)
    for b in blocks[1:]:
        neg, total = neg_total(b)
        lower, upper = lower + neg, upper + total - neg
    return lower, upper


def use_colours(n_new: int, colouring: Colouring | None, always: bool = False) -> bool:
    """Whether `relax` gives its n_new error symbols one column per colour of `colouring`: when there
    are more than twice as many symbols as colours, because expanding the colour columns back to one per
    neuron costs about as much again (measured on MNIST and CIFAR Small), or `always`."""
    return colouring is not None and n_new > 0 and (always or n_new > 2 * colouring.n)


def error_block(
    offset: Tensor,
    mask: Tensor,
    colouring: Colouring | None = None,
    always: bool = False,
    sparse: bool = False,
    patches: bool = False,
) -> tuple[Block | None, int]:
    """New error symbols e in [0, 1] with coefficient `offset` (B, *shape) on the neurons where `mask` holds
    (offset is 0 elsewhere): one column per such neuron of each sample, zero-padded to the batch maximum
    (as a `OneHot` block with `sparse`), or (with a `colouring` and `use_colours`) one column per colour, or
    with `patches` the same symbols as `Patches` (each later neuron's coefficients over the symbols of its
    own window: through a convolution a product per kernel element instead of one convolution of every
    colour column, mostly zeros; the same numbers). Returns the block (or None) and the count."""
    flat = mask.flatten(1)
    n_new = int(flat.sum(1).max()) if flat.numel() else 0  # one host sync per layer: the new column count
    if n_new == 0:
        return None, 0
    if use_colours(n_new, colouring, always):
        return (Patches.start(offset) if patches else colouring.start(offset)), n_new  # type: ignore[union-attr]
    idx = _true_first(flat, n_new)  # (B, n_new)
    vals = offset.flatten(1).gather(1, idx)  # 0 on padding columns (offset is 0 off the masked neurons)
    block = OneHot(idx, vals, tuple(offset.shape[1:]))
    return (block if sparse else block.dense()), n_new


def relax(
    blocks: list[Block],
    c: Tensor,
    lines: Lines,
    colouring: Colouring | None = None,
    always: bool = False,
    sparse: bool = False,
    patches: bool = False,
) -> tuple[Form, int]:
    """f(z) = slope·z + lower_bias + width·e_new for z = G·v + c: the blocks scaled by the slope per neuron and
    one block of new columns appended (`error_block`); returns the form and the number of new symbols."""
    scale = lines.slope.unsqueeze(1)
    blocks = [b * scale if isinstance(b, Tensor) else b.scale(lines.slope) for b in blocks]
    c = c * lines.slope
    if lines.lower_bias is not None:
        c = c + lines.lower_bias
    new, n_new = error_block(lines.width, lines.unstable, colouring, always, sparse, patches)
    return (blocks if new is None else blocks + [new], c), n_new


def relax_relu(
    blocks: list[Block],
    c: Tensor,
    lower: Tensor,
    upper: Tensor,
    colouring: Colouring | None = None,
    always: bool = False,
    sparse: bool = False,
    patches: bool = False,
) -> tuple[Form, int]:
    """Neurify's relaxation of relu(z) for z = G·v + c in [lower, upper]; returns the form and #new symbols.

    relu(z) = lambda·z + (-lambda·l)·e_new: the existing blocks are scaled by lambda per neuron and one block
    of new columns (one per unstable neuron of each sample, zero-padded to the batch maximum) is appended.
    With a `colouring` of the ReLU's neurons (`error_colouring`) and `use_colours`, the new block has one
    column per colour instead: column k holds the offsets of the unstable neurons of colour k (or, with
    `patches`, the same symbols as `Patches`).
    """
    return relax(blocks, c, relu_relaxation(lower, upper), colouring, always, sparse, patches)


_POSITIONS: "weakref.WeakKeyDictionary[Colouring, tuple[Tensor, Tensor]]" = weakref.WeakKeyDictionary()


def _positions(colouring: Colouring) -> tuple[Tensor, Tensor]:
    """Per pixel (or neuron) q of a colouring, the output positions whose window holds q, (d, K) padded with
    position 0, and which of them are real (d, K) 0/1: the rows of `Colouring.member_mask` as index lists."""
    found = _POSITIONS.get(colouring)
    if found is not None:
        return found
    n_pos = colouring.member_mask.shape[-1]
    mask = colouring.member_mask.reshape(-1, n_pos)[colouring.slot]  # (d, P)
    k = max(int(mask.sum(1).max()), 1)
    pos = _true_first(mask, k)
    found = (pos, mask.gather(1, pos))
    _POSITIONS[colouring] = found
    return found


def expand_linear(colouring: Colouring, g: Tensor, weight: Tensor, rows: Tensor | None = None) -> Tensor:
    """`Colouring.expand_linear` (W · expand(g) for the dense layer W after the local layers), the same sums
    in a faster layout: M_p = g_p W_p^T for every output position p as one batched product over contiguous
    (P, B·n, C') and (P, C', O) operands, then per pixel the sum of M_p[colour] over the positions p whose
    window holds it: for all pixels (`rows` None) by the colouring's member mask (the same product as
    `Colouring.expand_linear`), for `rows` (B, r) (the unstable neurons of an activation, typically far
    fewer than its neurons) by gathering the K positions of each of them, so the other members are never
    formed (measured on a fresh MNIST Small, one sample: 14 -> 9 CPU ms forward and backward; all pixels
    5.4 -> 3.9)."""
    b, n = g.shape[0], g.shape[1]
    co, ho, wo = colouring.out_shape
    n_pos, out = ho * wo, weight.shape[0]
    gp = g.reshape(b * n, co, n_pos).permute(2, 0, 1).contiguous()
    wp = weight.reshape(out, co, n_pos).permute(2, 1, 0).contiguous()
    m = torch.bmm(gp, wp)  # (P, B·n, O): M_p of every colour of every sample
    if rows is None:
        per_member = torch.matmul(colouring.member_mask, m.reshape(n_pos, b, n, out).permute(1, 2, 0, 3))
        return per_member.reshape(b, -1, out).index_select(1, colouring.slot)  # (B, d, O)
    pos, real = _positions(colouring)
    base = torch.arange(b, device=g.device).view(b, 1) * n + colouring.colour[rows]  # (B, r): column of M_p
    idx = pos[rows] * (b * n) + base.unsqueeze(2)  # (B, r, K): row of M flattened to (P·B·n, O)
    got = m.reshape(-1, out).index_select(0, idx.flatten()).reshape(*idx.shape, out)
    return (got * real[rows].unsqueeze(3)).sum(2)  # (B, r, O)


def expand(colouring: Colouring, g: Block, weight: Tensor | None, rows: Tensor | None) -> Tensor:
    """Colour columns -> one column per pixel or neuron (only `rows` of them, if given), fused with the dense
    layer `weight` when there is one: `expand_linear` where autograd records (training: its backward is the
    cheaper one), `Colouring.expand_linear` otherwise (verification without gradients: 6.8-7.7 against 8.9
    CPU ms per image on the authors' eps 0.3 checkpoint, `bench/bench_speed.py --only vra`). Same sums.
    `Patches` expand themselves (all their columns, then the `rows`)."""
    if isinstance(g, Patches):
        full = g.dense() if weight is None else g.expand_linear(weight)
    else:
        g = dense(g)
        if weight is not None:
            if torch.is_grad_enabled() and (g.requires_grad or weight.requires_grad):
                return expand_linear(colouring, g, weight, rows)
            return colouring.expand_linear(g, weight, rows)
        full = colouring.expand(g)
    if rows is None:
        return full
    return full.gather(1, rows.view(*rows.shape, *[1] * (full.dim() - 2)).expand(-1, -1, *full.shape[2:]))


# ---- the table ----------------------------------------------------------------------------------


def _affine(dom: "SymbolicLinear", op: AffineOp, v: Value) -> Value:
    blocks, c, box = v
    return {k: linear_block(op, b) for k, b in blocks.items()}, affine_const(op, c), interval_step(op, *box)


def _concrete(dom: "SymbolicLinear", v: Value) -> Box:
    blocks, c, box = v
    lower, upper = concretize_blocks(dom.space, list(blocks.values()), c)
    return torch.maximum(lower, box[0]), torch.minimum(upper, box[1])


def _activation(dom: "SymbolicLinear", op: ActivationOp, v: Value) -> Value:
    blocks, c, _ = v
    lower, upper = _concrete(dom, v)
    col, always, sparse, patches = dom._colouring, bool(dom.colour_errors), dom.sparse, dom._patch_errors
    if isinstance(op, ReLUOp) and op.negative_slope == 0.0:
        (new, c), n_new = relax_relu(list(blocks.values()), c, lower, upper, col, always, sparse, patches)
        dom._unstable = (lower < 0) & (upper > 0)
    else:
        if isinstance(op, ReLUOp):
            lines = relu_relaxation(lower, upper, op.negative_slope)
        elif isinstance(op, SShapedOp):
            lines = s_shaped_relaxation(op, lower, upper)
        else:
            raise UnsupportedLayerError(f"symbolic-linear has no relaxation for {type(op).__name__}")
        (new, c), n_new = relax(list(blocks.values()), c, lines, col, always, sparse, patches)
        dom._unstable = lines.unstable
    dom.error_symbols += n_new
    out = dict(zip(blocks, new))
    if n_new:
        out[op] = new[-1]
    return out, c, (op.forward(lower), op.forward(upper))


def _maxpool(dom: "SymbolicLinear", op: MaxPool2dOp, v: Value) -> Value:
    blocks, c, _ = v
    lower, upper = _concrete(dom, v)
    idx, _, gap, _ = op.select(lower, upper)
    out: dict[Any, Block] = {k: op.gather(dense(b), idx) for k, b in blocks.items()}
    c = op.gather(c.unsqueeze(1), idx).squeeze(1)
    gap = gap.reshape(c.shape)
    new, n_new = error_block(gap, gap > 0, sparse=dom.sparse)
    dom.error_symbols += n_new
    if new is not None:
        out[op] = new
    return out, c, (op.forward(lower), op.forward(upper))


def _add(dom: "SymbolicLinear", op: AddOp, *vs: Value) -> Value:
    """Sum of branches: blocks of the same variables add up; each branch's own error symbols stay distinct."""
    out: Blocks = {}
    for blocks, _, _ in vs:
        for k, b in blocks.items():
            out[k] = dense(out[k]) + dense(b) if k in out else b
    c = sum(v[1] for v in vs)
    return out, c, (sum(v[2][0] for v in vs), sum(v[2][1] for v in vs))  # type: ignore[return-value]


def _cat(dom: "SymbolicLinear", op: CatOp, *vs: Value) -> Value:
    """Concatenation: per block key, the inputs' columns side by side (zeros where an input lacks the key)."""
    keys = list(dict.fromkeys(k for v in vs for k in v[0]))
    out: Blocks = {}
    for k in keys:
        ref = dense(next(v[0][k] for v in vs if k in v[0]))
        parts = [
            dense(v[0][k]) if k in v[0] else ref.new_zeros(ref.shape[0], ref.shape[1], *shape)
            for v, shape in zip(vs, op.in_shapes)
        ]
        b = max(p.shape[0] for p in parts)
        out[k] = op.cat([p.expand(b, *p.shape[1:]) for p in parts], 2)
    return out, op.cat([v[1] for v in vs]), (op.cat([v[2][0] for v in vs]), op.cat([v[2][1] for v in vs]))


TABLE: Table = {AffineOp: _affine, ActivationOp: _activation, MaxPool2dOp: _maxpool, AddOp: _add, CatOp: _cat}


@DOMAINS.register("symbolic-linear")
class SymbolicLinear(Domain):
    """One linear form per neuron plus one error symbol per unstable neuron (the authors' representation).

    The columns of the form are kept as blocks (the input block, then one block per activation layer), so
    appending error symbols never copies the earlier columns. After `bounds`, `error_symbols` holds the
    number of error symbols per sample (padded to the batch maximum) of the last call.
    """

    name = "symbolic-linear"
    table = TABLE

    def __init__(
        self, colour: bool = True, colour_errors: bool | None = None, sparse: bool = True, patches: bool = True
    ) -> None:
        self.error_symbols = 0
        self.sparse = sparse  # fresh error symbols as `OneHot` blocks (False: dense columns; the same numbers)
        self.colour = colour  # compress the input columns through the local layers (`colouring`)
        # error symbols of activations inside those layers by colour too (with `colour`): None = when that
        # means much fewer columns (`use_colours`), True = always, False = never
        self.colour_errors = colour_errors
        # the input columns inside those layers as `Patches` (each neuron's coefficients over its own window)
        # instead of colour columns, where every local layer allows it (`Patches.supports`; the same numbers)
        self.patches = patches
        self.space: InputSpace
        self._colouring: Colouring | None = None  # of the error symbols of the activation being relaxed
        self._patch_errors = False  # its coloured error symbols as `Patches` (`self.patches`, `Patches.supports`)
        self._unstable: Tensor | None = None  # its neurons that got error symbols

    def bounds(self, ops: list[Op], ball: Ball) -> tuple[Tensor, Tensor]:
        ops = fold_spec(ops)  # the final C W: tighter alongside interval bounds, same symbolic form
        self.space = space = InputSpace(ball)
        chain = leading_chain(ops)
        box = initial_box(chain, ball)
        self.error_symbols = 0
        found = local_colouring(ops, chain, space, self.colour)
        if found is not None:  # one column per colour through the local layers, per pixel after them
            colouring, n_local = found
            g: Block
            if self.patches and Patches.supports(ops[:n_local]):
                g, c = Patches.start(space.hi - space.lo), space.lo
                for op in chain:
                    g, c = g.affine(op), op.forward(c)
            else:
                g, c = space.start_coloured(chain, colouring)
            (blocks, c, box), coloured = self._run_local(ops[len(chain) : n_local], ({INPUT: g}, c, box))
            coloured = {INPUT: (colouring, None), **coloured}  # the input columns first, as without colouring
            head = ops[n_local : n_local + dense_head(ops[n_local:], colouring.out_shape)]
            plain = {k: b for k, b in blocks.items() if k not in coloured}
            plain, c, box = self._run(head, (plain, c, box))  # c, box, per-neuron error symbols
            last = head[-1] if head else None
            weight = last.layer.weight if isinstance(last, LinearOp) else None  # fused with the expansion
            expanded = {k: expand(col, blocks[k], weight, rows) for k, (col, rows) in coloured.items()}
            blocks, c, box = self._run(ops[n_local + len(head) :], ({**expanded, **plain}, c, box))
        else:
            g, c = space.start(chain)
            blocks, c, box = self._run(ops[len(chain) :], ({INPUT: g}, c, box))
        lower, upper = concretize_blocks(space, list(blocks.values()), c)
        return torch.maximum(lower, box[0]), torch.minimum(upper, box[1])

    def _run(self, ops: list[Op], value: Value) -> Value:
        return forward(ops, TABLE, value, self, self.name)

    def _run_local(self, ops: list[Op], value: Value) -> tuple[Value, dict[Any, tuple[Colouring, Tensor | None]]]:
        """`_run` through the local layers (a chain), where an activation's error symbols may share columns by
        colour (`error_colouring`); returns, per coloured block key, its colouring and the neurons (B, r) whose
        symbols it carries (the unstable ones, padded), so that only those are expanded."""
        coloured: dict[Any, tuple[Colouring, Tensor | None]] = {}
        for i, op in enumerate(ops):
            col = None
            if isinstance(op, ActivationOp) and self.colour_errors is not False:
                col = error_colouring(ops[i + 1 :], op.out_shape, value[1])
            before = self.error_symbols
            self._colouring = col
            self._patch_errors = col is not None and self.patches and Patches.supports(ops[i + 1 :])
            try:
                value = rule_for(TABLE, op, self.name)(self, op, value)
            finally:
                self._colouring, self._patch_errors = None, False
            if use_colours(self.error_symbols - before, col, bool(self.colour_errors)):
                mask = self._unstable.flatten(1)  # type: ignore[union-attr]
                coloured[op] = (col, _true_first(mask, int(mask.sum(1).max())))  # type: ignore[assignment]
        return value, coloured
