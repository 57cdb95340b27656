"""The forward symbolic domains (ReluVal `symbolic`, Neurify `symbolic-linear`) and VRA evaluation."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from veritrain.bounds import DOMAINS, Ball, compute_bounds, margin_lower, margin_spec
from veritrain.bounds.ops import to_ops
from veritrain.bounds.symbolic import InputSpace, leading_chain
from veritrain.bounds.symbolic_linear import concretize_blocks, relax_relu
from veritrain.evaluation.vra import verified_mask, verified_robust_accuracy
from veritrain.models.layers import Residual

from test_bounds_common import assert_inside, pgd_points


def conv_net(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return (
        nn.Sequential(
            nn.Conv2d(1, 4, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(4, 4, 3, 1, 1),
            nn.ReLU(),
            Residual(nn.Sequential(nn.Conv2d(4, 4, 3, 1, 1), nn.ReLU(), nn.Conv2d(4, 4, 3, 1, 1))),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64, 10),
            nn.ReLU(),
            nn.Linear(10, 5),
        )
        .double()
        .eval()
    )


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 1000), eps=st.floats(0.01, 0.3), norm=st.sampled_from(["linf", "l2"]))
def test_never_looser_than_interval(seed: int, eps: float, norm: str) -> None:
    """Intersecting with interval bounds at every ReLU and at the output: margins at least as tight."""
    model = conv_net(seed)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    ball = Ball(x, eps, norm)
    y = torch.tensor([0, 2, 4])
    ref = margin_lower(model, ball, y, "interval")
    for domain in ("symbolic", "symbolic-linear"):
        assert (margin_lower(model, ball, y, domain) >= ref - 1e-9).all(), domain
    spec = margin_spec(y, 5).double()
    lo_i, up_i = compute_bounds(model, ball, spec, "interval")
    lo_s, up_s = compute_bounds(model, ball, spec, "symbolic-linear")
    assert (up_s <= up_i + 1e-9).all()


def test_symbolic_linear_tighter_than_symbolic_on_a_deep_net() -> None:
    """One form + error symbols keeps the correlations that ReluVal's concretisation loses."""
    model = conv_net(7)
    ball = Ball(torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(7), dtype=torch.float64), 0.1)
    y = torch.tensor([0, 1, 2, 3])
    sl = margin_lower(model, ball, y, "symbolic-linear")
    sym = margin_lower(model, ball, y, "symbolic")
    assert sl.sum() > sym.sum()


def test_relax_relu_is_neurify_parallel_relaxation() -> None:
    """relu(z) = lambda z + (-lambda l) e with e in [0, 1]: lower line lambda z, upper line lambda (z - l)."""
    l, u = torch.tensor([[-1.0, 0.5, -2.0, -3.0]]), torch.tensor([[3.0, 2.0, -0.5, 1.0]])
    g = torch.tensor([[[2.0, 0.75, 0.75, 2.0]]])  # z = 2 t + c over t in [0, 1], z in [l, u]
    c = l.clone()
    c[0, 1], c[0, 2] = 0.5, -2.0
    (blocks, c2), n_new = relax_relu([g], c, l, u)
    assert n_new == 2  # neurons 0 and 3 are unstable
    lam = torch.tensor([0.75, 1.0, 0.0, 0.25])
    torch.testing.assert_close(blocks[0][0, 0], g[0, 0] * lam)
    torch.testing.assert_close(blocks[1][0], torch.tensor([[0.75, 0, 0, 0], [0, 0, 0, 0.75]]))
    # soundness on a grid of t: relu(z) within the concretised relaxation for every t
    lo, hi = concretize_blocks(InputSpace(Ball(torch.zeros(1, 1), 1.0)), blocks, c2)
    t = torch.linspace(0, 1, 101).view(-1, 1)
    z = g[0, 0] * t + c
    assert (torch.relu(z) >= lo - 1e-6).all() and (torch.relu(z) <= hi + 1e-6).all()


def test_error_symbols_one_per_unstable_relu() -> None:
    model = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    x = torch.rand(1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ball = Ball(x, 0.4)
    dom = DOMAINS.get("symbolic-linear")()
    dom.bounds(to_ops(model, (3,)), ball)
    ilo, iup = compute_bounds(model[:1], ball, None, "interval")  # first layer: exact for one affine op
    assert dom.error_symbols >= int(((ilo < 0) & (iup > 0)).sum())
    assert dom.error_symbols <= 6 + 4


def test_first_layer_equations_are_the_weights() -> None:
    """The leading affine ops are applied once to an identity of batch 1, then scaled by (hi - lo)."""
    conv = nn.Conv2d(1, 3, 3, 2, 1).double()
    ops = to_ops(nn.Sequential(conv, nn.ReLU()), (1, 6, 6))
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64)
    ball = Ball(x, 0.2)
    space = InputSpace(ball)
    g, c = space.start(leading_chain(ops))
    lo, hi = ball.box()
    eye = torch.eye(36, dtype=torch.float64).view(36, 1, 6, 6)
    w_dense = nn.functional.conv2d(eye, conv.weight, None, 2, 1)  # (36, 3, 3, 3): column j = W e_j
    torch.testing.assert_close(g, w_dense.unsqueeze(0) * (hi - lo).view(2, 36, 1, 1, 1))
    torch.testing.assert_close(c, conv(lo))


def test_spec_folded_like_an_affine_op() -> None:
    """Bounds of C f(x) from the symbolic form are tighter than C applied to the bounds of f(x)."""
    model = conv_net(3)
    ball = Ball(torch.rand(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3)), 0.05)
    y = torch.tensor([1, 3])
    spec = margin_spec(y, 5).double()
    lo_spec, _ = compute_bounds(model, ball, spec, "symbolic-linear")
    lo, up = compute_bounds(model, ball, None, "symbolic-linear")
    naive = torch.einsum("bsk,bk->bs", spec.clamp(min=0), lo) + torch.einsum("bsk,bk->bs", spec.clamp(max=0), up)
    assert (lo_spec >= naive - 1e-9).all()
    assert (lo_spec.gather(1, y.view(-1, 1)) == 0).all()


def test_vra_chunks_and_counts_only_correct_and_verified() -> None:
    model = conv_net(11).float()
    x = torch.rand(7, 1, 8, 8, generator=torch.Generator().manual_seed(11))
    y = model(x).argmax(1)
    y[0] = (y[0] + 1) % 5  # misclassified: never counts
    small = verified_mask(model, x, y, 1e-4, "symbolic-linear", chunk_size=2, progress=False)
    big = verified_mask(model, x, y, 1e-4, "symbolic-linear", chunk_size=50, batch_size=3, progress=False)
    assert torch.equal(small, big) and not small[0] and small[1:].all()
    res = verified_robust_accuracy(model, x, y, 0.5, ["interval", "symbolic-linear"], progress=False)
    assert (
        set(res) == {"interval", "symbolic-linear", "any"} and res["interval"] <= res["symbolic-linear"] <= 100 * 6 / 7
    )
    assert max(res["interval"], res["symbolic-linear"]) <= res["any"] <= 100 * 6 / 7  # the union of the proofs
    assert model.training is False
    with pytest.raises(ValueError, match="one label per image"):
        verified_robust_accuracy(model, x, y[:3], 0.1, ["interval"], progress=False)


# ---- the authors' checkpoint on real MNIST (Section V; reference: auto_LiRPA CROWN ~70%, interval 0%) ----


def _data_root() -> Path:
    root = os.environ.get("VERITRAIN_DATA")
    if not root:
        pytest.skip("VERITRAIN_DATA is not set: point it at a data root with mnist/ and reference/")
    root_p = Path(root)
    need = [
        root_p / "reference" / "mnist_small_mixtrain_0.3.pth",
        root_p / "mnist" / "t10k-images-idx3-ubyte.gz",
        root_p / "mnist" / "t10k-labels-idx1-ubyte.gz",
    ]
    missing = [str(p) for p in need if not p.exists()]
    if missing:
        pytest.skip(f"missing under VERITRAIN_DATA: {', '.join(missing)}")
    return root_p


@pytest.mark.realdata
def test_authors_checkpoint_vra_at_eps_03() -> None:
    root = _data_root()
    model = nn.Sequential(
        nn.Conv2d(1, 16, 4, 2, 1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 4, 2, 1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(1568, 100),
        nn.ReLU(),
        nn.Linear(100, 10),
    )
    model.load_state_dict(torch.load(root / "reference" / "mnist_small_mixtrain_0.3.pth", weights_only=True))
    with gzip.open(root / "mnist" / "t10k-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[:100]
    with gzip.open(root / "mnist" / "t10k-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)[:100]
    x_t, y_t = torch.tensor(x / 255.0, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    res = verified_robust_accuracy(model, x_t, y_t, 0.3, ["interval", "symbolic-linear"], chunk_size=25, progress=False)
    assert res["interval"] == 0.0
    assert res["symbolic-linear"] >= 55.0, res


def _local_net(seed: int, variant: int) -> tuple[nn.Sequential, tuple[int, int, int]]:
    """Conv prefixes of several geometries (stride, padding, dilation, pooling, BN) on images big enough
    for the input colouring to apply."""
    from veritrain.models.layers import Normalize

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(4)
    bn.running_mean.uniform_(-0.2, 0.2, generator=g)
    bn.running_var.uniform_(0.5, 1.5, generator=g)
    if variant == 0:  # MNIST Small's geometry
        body = [nn.Conv2d(1, 4, 4, 2, 1), nn.ReLU(), nn.Conv2d(4, 4, 4, 2, 1), nn.ReLU()]
        shape = (1, 20, 20)
    elif variant == 1:  # normalisation, dilation, 'same' padding, BN, avg pooling, two channels
        body = [
            Normalize([0.4, 0.5], [0.3, 0.25]),
            nn.Conv2d(2, 4, 3, 1, 2, dilation=2),
            bn,
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(4, 4, 3, 1, "same"),
            nn.ReLU(),
        ]
        shape = (2, 18, 18)
    else:  # no padding, odd strides, a conv straight after a conv inside the prefix
        body = [nn.Conv2d(1, 4, 3, 3, 0), nn.ReLU(), nn.Conv2d(4, 4, 2, 1, 0), nn.Conv2d(4, 4, 2, 1, 1), nn.ReLU()]
        shape = (1, 21, 17)
    with torch.no_grad():
        probe = nn.Sequential(*body)(torch.zeros(1, *shape))
    net = nn.Sequential(*body, nn.Flatten(), nn.Linear(probe.numel(), 7), nn.ReLU(), nn.Linear(7, 4))
    return net.double().eval(), shape


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 1000), variant=st.integers(0, 2), eps=st.floats(0.01, 0.4))
def test_input_colouring_gives_the_dense_bounds(seed: int, variant: int, eps: float) -> None:
    """Colour columns through the local layers, expanded at the first dense layer: the same bounds as one
    column per pixel, and the colouring really applies to these networks."""
    from veritrain.bounds.colouring import colouring_for
    from veritrain.bounds.symbolic import Symbolic
    from veritrain.bounds.symbolic_linear import SymbolicLinear

    model, shape = _local_net(seed, variant)
    x = torch.rand(3, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x[0, 0, 0, :4] = 0.0  # pixels on the border of [0, 1]
    ball = Ball(x, eps)
    ops = to_ops(model, shape)
    found = colouring_for(ops, shape, x)
    assert found is not None and found[0].n * 2 <= x[0].numel()
    spec = margin_spec(torch.tensor([0, 1, 3]), 4).double()
    for domain in (SymbolicLinear, Symbolic):
        for dense, coloured in zip(
            compute_bounds(model, ball, spec, domain(colour=False)),
            compute_bounds(model, ball, spec, domain(colour=True)),
        ):
            assert torch.allclose(dense, coloured, rtol=1e-9, atol=1e-9), domain.name
    # the error symbols of the ReLUs inside the local layers by colour as well (forced; by default only
    # when that means fewer columns): still the same bounds
    for dense, coloured in zip(
        compute_bounds(model, ball, spec, SymbolicLinear(colour=False)),
        compute_bounds(model, ball, spec, SymbolicLinear(colour_errors=True)),
    ):
        assert torch.allclose(dense, coloured, rtol=1e-9, atol=1e-9), "coloured error symbols"
    lower, upper = compute_bounds(model, ball, None, SymbolicLinear())
    pts = (x.unsqueeze(1) + eps * (2 * torch.rand(3, 64, *shape, dtype=torch.float64) - 1)).clamp(0, 1)
    out = model(pts.flatten(0, 1)).view(3, 64, -1)
    assert (out >= lower.unsqueeze(1) - 1e-9).all() and (out <= upper.unsqueeze(1) + 1e-9).all()
    # PGD points (each margin pushed up and down) inside the coloured bounds of both domains
    pts = pgd_points(model, ball, spec, steps=15)
    with torch.no_grad():
        out = torch.einsum("bsk,bpk->bps", spec, model(pts.flatten(0, 1)).view(3, pts.shape[1], -1))
    for domain in (SymbolicLinear(colour_errors=True), SymbolicLinear(), Symbolic()):
        lower, upper = compute_bounds(model, ball, spec, domain)
        assert_inside(lower, upper, out, f"{domain.name} coloured, PGD points")


def test_vra_skips_attacked_samples_and_spot_checks_them() -> None:
    """Samples with a counterexample are not bounded (same VRA, less work); if a sound domain proves one of
    them anyway, an attack or a bound is wrong and the evaluation says so instead of printing a number."""
    from veritrain.evaluation.evaluate import evaluate_tensors

    model = conv_net(11).float()
    x = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(12))
    y = model(x).argmax(1)
    for eps in (0.02, 0.3):
        full = evaluate_tensors(model, x, y, eps, attacks=[], domains=["symbolic-linear"])
        skipped = evaluate_tensors(model, x, y, eps, attacks=["pgd"], domains=["symbolic-linear"])
        assert full["vra"] == skipped["vra"] and skipped["vra"]["symbolic-linear"] <= skipped["era"]["pgd"]
    tiny = 1e-4  # everything is provable at this eps: claiming "broken" must be caught
    assert verified_mask(model, x, y, tiny, "symbolic-linear", progress=False).all()
    with pytest.raises(RuntimeError, match="unsound"):
        verified_mask(
            model, x, y, tiny, "symbolic-linear", progress=False, candidates=torch.zeros(len(x), dtype=torch.bool)
        )


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 1000), variant=st.integers(0, 2))
def test_fused_expansion_equals_expansion_then_dense_layer(seed: int, variant: int) -> None:
    """`Colouring.expand_linear` (the expansion fused with the flatten + Linear after the local layers) gives
    the numbers of `expand` followed by those ops."""
    from veritrain.bounds.colouring import colouring_for, dense_head

    model, shape = _local_net(seed, variant)
    x = torch.rand(2, *shape, dtype=torch.float64)
    ops = to_ops(model, shape)
    colouring, n = colouring_for(ops, shape, x)
    k = dense_head(ops[n:], colouring.out_shape)
    assert k == 2  # Flatten, Linear
    g = torch.randn(
        2, colouring.n, *colouring.out_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
    )
    expected = colouring.expand(g)
    for op in ops[n : n + k]:
        expected = op.linear(expected)
    got = colouring.expand_linear(g, ops[n + k - 1].layer.weight)
    assert got.shape == expected.shape and torch.allclose(got, expected, rtol=0, atol=1e-12)
    assert dense_head(ops[n + 2 :], colouring.out_shape) == 0  # a ReLU first: nothing to fuse
    assert dense_head(ops[n:], (1, 2, 3)) == 0  # a Linear of another input size: not fused
    # symbolic-linear's own layout of the same sums: every pixel, and only some rows per sample
    from veritrain.bounds.symbolic_linear import expand_linear

    got = expand_linear(colouring, g, ops[n + k - 1].layer.weight)
    assert got.shape == expected.shape and torch.allclose(got, expected, rtol=0, atol=1e-12)
    gen = torch.Generator().manual_seed(seed + 1)
    rows = torch.stack([torch.randperm(expected.shape[1], generator=gen)[:5] for _ in range(2)])
    got = expand_linear(colouring, g, ops[n + k - 1].layer.weight, rows)
    want = expected.gather(1, rows.unsqueeze(2).expand(-1, -1, expected.shape[2]))
    assert torch.allclose(got, want, rtol=0, atol=1e-12)


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 1000), eps=st.floats(0.02, 0.4))
def test_coloured_error_symbols_before_a_residual_block(seed: int, eps: float) -> None:
    """Local layers followed by a residual block (no dense layer to fuse): the coloured input and error
    columns are expanded on their own, and the bounds equal the dense ones."""
    torch.manual_seed(seed)
    net = (
        nn.Sequential(
            nn.Conv2d(1, 4, 4, 2, 1),
            nn.ReLU(),
            nn.Conv2d(4, 4, 4, 2, 1),
            nn.ReLU(),
            Residual(nn.Sequential(nn.Conv2d(4, 4, 3, 1, 1))),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64, 5),
        )
        .double()
        .eval()
    )
    x = torch.rand(3, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    ball, spec = Ball(x, eps), margin_spec(torch.tensor([0, 1, 4]), 5).double()
    from veritrain.bounds.symbolic_linear import SymbolicLinear

    dense = compute_bounds(net, ball, spec, SymbolicLinear(colour=False))
    for domain in (SymbolicLinear(), SymbolicLinear(colour_errors=True)):
        for d, c in zip(dense, compute_bounds(net, ball, spec, domain)):
            assert torch.allclose(d, c, rtol=1e-9, atol=1e-9)


def _onehot_net(variant: int, seed: int) -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed(seed)
    if variant == 0:  # strided, dilated and padded convolutions after ReLUs, then Linear layers
        net = nn.Sequential(
            nn.Conv2d(2, 4, 3, 1, 1),
            nn.ReLU(),
            nn.Conv2d(4, 5, 3, 2, 2, dilation=2),
            nn.ReLU(),
            nn.Conv2d(5, 3, (2, 3), (1, 2), (0, 1)),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(18, 7),
            nn.ReLU(),
            nn.Linear(7, 4),
        )
        return net.double().eval(), (2, 7, 7)
    if variant == 1:  # a grouped convolution, BatchNorm, LeakyReLU, max pooling and a residual sum (densified)
        net = nn.Sequential(
            nn.Conv2d(2, 4, 3, 1, 1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(4, 4, 3, 1, 1, groups=2),
            nn.BatchNorm2d(4).eval(),
            nn.ReLU(),
            nn.MaxPool2d(2),
            Residual(nn.Sequential(nn.Conv2d(4, 4, 3, 1, 1), nn.ReLU(), nn.Conv2d(4, 4, 1))),
            nn.Tanh(),
            nn.Flatten(),
            nn.Linear(36, 4),
        )
        return net.double().eval(), (2, 6, 6)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 9), nn.ReLU(), nn.Linear(9, 8), nn.Sigmoid(), nn.Linear(8, 3))
    return net.double().eval(), (3, 2, 2)


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 1000), variant=st.integers(0, 2), eps=st.floats(0.02, 0.5), norm=st.sampled_from(["linf", "l2"])
)
def test_onehot_error_blocks_give_the_dense_bounds(seed: int, variant: int, eps: float, norm: str) -> None:
    """Fresh error symbols kept as `OneHot` blocks (gathers through Linear and convolutions, scatters when
    concretised, densified elsewhere) give the bounds of dense error columns, with and without colouring."""
    from veritrain.bounds.symbolic_linear import SymbolicLinear

    net, shape = _onehot_net(variant, seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, *shape, generator=g, dtype=torch.float64)
    ball = Ball(x, eps, norm)
    spec = torch.randn(3, 2, 4 if variant < 2 else 3, generator=g, dtype=torch.float64)
    for colour in (False, True):
        want = compute_bounds(net, ball, spec, SymbolicLinear(colour=colour, sparse=False))
        dom = SymbolicLinear(colour=colour)
        got = compute_bounds(net, ball, spec, dom)
        for a, b in zip(got, want):
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-10), (variant, colour)
    assert dom.sparse and dom.error_symbols > 0 or eps < 0.05


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 1000), variant=st.integers(0, 2), eps=st.floats(0.05, 0.5))
def test_conv_onehot_blocks_give_the_dense_bounds_and_gradients(seed: int, variant: int, eps: float) -> None:
    """Error symbols through a convolution kept unformed (`ConvOneHot`, forced on and off; with and without
    colour columns): the bounds and the weights' gradients of dense error columns."""
    from veritrain.bounds import symbolic_linear as sl

    net, shape = _onehot_net(variant, seed) if variant < 2 else _local_net(seed, 0)  # 2: MNIST Small's geometry
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, *shape, generator=g, dtype=torch.float64)
    spec = torch.randn(3, 2, 4, generator=g, dtype=torch.float64)

    def run(dom: "sl.SymbolicLinear") -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        lo, hi = compute_bounds(net, Ball(x, eps), spec, dom)
        grads = torch.autograd.grad((lo.sum() - hi.sum()), [p for p in net.parameters() if p.requires_grad])
        return lo, hi, list(grads)

    want = run(sl.SymbolicLinear(sparse=False))
    before = sl.DEFER_FROM
    try:
        for defer in (0.0, float("inf")):
            sl.DEFER_FROM = defer
            for colour in (False, True):
                got = run(sl.SymbolicLinear(colour=colour))
                for a, b in zip([*got[:2], *got[2]], [*want[:2], *want[2]]):
                    assert torch.allclose(a, b, rtol=1e-9, atol=1e-9), (defer, colour)
    finally:
        sl.DEFER_FROM = before


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 1000), stride=st.integers(1, 2), dilation=st.integers(1, 2))
def test_conv_onehot_concretises_and_multiplies_like_its_columns(seed: int, stride: int, dilation: int) -> None:
    """`ConvOneHot` with coefficients and per-neuron factors of either sign: its per-neuron sums of min(., 0)
    and of the columns, and its product with a Linear layer, equal those of its formed columns."""
    from veritrain.bounds.ops import Conv2dOp
    from veritrain.bounds.symbolic_linear import ConvOneHot, OneHot

    g = torch.Generator().manual_seed(seed)
    layer = nn.Conv2d(3, 4, 3, stride, 1, dilation=dilation).double()
    in_shape = (3, 6, 7)
    out_shape = tuple(layer(torch.zeros(1, *in_shape, dtype=torch.float64)).shape[1:])
    op = Conv2dOp(layer, in_shape, out_shape)
    idx = torch.stack([torch.randperm(126, generator=g)[:9] for _ in range(2)])  # distinct per sample
    src = OneHot(idx, torch.randn(2, 9, generator=g, dtype=torch.float64), in_shape)
    block = ConvOneHot(op, src).scale(torch.randn(2, *out_shape, generator=g, dtype=torch.float64))
    cols = block.dense()
    neg, total = block.neg_total()
    assert torch.allclose(neg, cols.clamp(max=0).sum(1), atol=1e-12) and torch.allclose(total, cols.sum(1), atol=1e-12)
    w = torch.randn(5, cols[0, 0].numel(), generator=g, dtype=torch.float64)
    flat = block.reshaped((cols[0, 0].numel(),))
    assert torch.allclose(flat.linear(w), cols.flatten(2) @ w.T, atol=1e-12)  # the kernel taps (no gradient)
    got = flat.linear(w.requires_grad_())  # with a gradient: the transposed convolution
    assert torch.allclose(got, cols.flatten(2) @ w.T, atol=1e-12)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 1000), variant=st.integers(0, 3), eps=st.floats(0.01, 0.4))
def test_patches_give_the_colour_bounds_and_gradients(seed: int, variant: int, eps: float) -> None:
    """The input columns of the local layers as `Patches` (each neuron's coefficients over its own window):
    the bounds and the weights' gradients of colour columns (and of one column per pixel); networks with a
    layer patches do not support (average pooling) keep colour columns."""
    from veritrain.bounds.colouring import Patches, colouring_for
    from veritrain.bounds.symbolic_linear import SymbolicLinear

    if variant == 3:  # three channels, normalisation, dilation, a stride-1 and a strided convolution
        from veritrain.models.layers import Normalize

        torch.manual_seed(seed)
        body = [Normalize([0.4, 0.5, 0.6], [0.3, 0.25, 0.2]), nn.Conv2d(3, 4, 3, 1, 2, dilation=2), nn.ReLU()]
        body += [nn.Conv2d(4, 3, 4, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 8 * 8, 6), nn.ReLU()]
        model, shape = nn.Sequential(*body, nn.Linear(6, 4)).double().eval(), (3, 16, 16)
    else:
        model, shape = _local_net(seed, variant)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, *shape, generator=g, dtype=torch.float64)
    ops = to_ops(model, shape)
    found = colouring_for(ops, shape, x)
    assert found is not None and Patches.supports(ops[: found[1]]) == (variant != 1)
    spec = torch.randn(3, 2, 4, generator=g, dtype=torch.float64)
    params = [p for p in model.parameters() if p.requires_grad]

    def run(dom: SymbolicLinear) -> list[torch.Tensor]:
        lo, hi = compute_bounds(model, Ball(x, eps), spec, dom)
        return [lo, hi, *torch.autograd.grad(lo.sum() - 2 * hi.sum(), params)]

    want = run(SymbolicLinear(patches=False))
    for dom in (SymbolicLinear(), SymbolicLinear(colour_errors=True), SymbolicLinear(colour=False)):
        for a, b in zip(run(dom), want):
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-9)
    with torch.no_grad():  # verification's path (no autograd) too
        for a, b in zip(compute_bounds(model, Ball(x, eps), spec, SymbolicLinear()), want):
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_patch_error_symbols_are_their_colour_columns(seed: int) -> None:
    """Coloured error symbols as `Patches` (`error_block(..., patches=True)`): through a convolution and a
    per-neuron factor, one column per symbol equals the colour columns expanded; concretised the same."""
    from veritrain.bounds.colouring import Patches, error_colouring
    from veritrain.bounds.symbolic_linear import error_block, linear_block

    torch.manual_seed(seed)
    conv = nn.Conv2d(3, 4, 3, 2, 1).double()
    op = to_ops(nn.Sequential(conv), (3, 8, 8))[0]
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(2, 3, 8, 8, generator=g) < 0.6
    offset = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64) * mask
    col = error_colouring([op], (3, 8, 8), offset)
    assert col is not None
    patches, n = error_block(offset, mask, col, always=True, patches=True)
    coloured, m = error_block(offset, mask, col, always=True)
    assert isinstance(patches, Patches) and n == m
    slope = torch.rand(2, *op.out_shape, generator=g, dtype=torch.float64) - 0.3
    got = linear_block(op, patches).scale(slope)
    want = linear_block(op, coloured) * slope.unsqueeze(1)
    assert torch.allclose(got.dense(), col.expand(want), atol=1e-12)
    neg, total = got.neg_total()
    assert torch.allclose(neg, want.clamp(max=0).sum(1), atol=1e-12)
    assert torch.allclose(total, want.sum(1), atol=1e-12)
