"""The traced graph engine: any nn.Module (class forward, functional forms, DAG joins) and every operator,
for every domain: random and PGD points inside the bounds over randomly generated *graphs*, exact ranges of
tiny piecewise-linear graphs (one LP per activation pattern), never looser than interval, class forwards
bounded exactly like their nn.Sequential/Residual equivalents, one-line errors naming the op, the input
colouring with the new layers, the forward dual network, and MixTrain on a traced model through the CLI."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog
from torch import nn

from veritrain.bounds import DOMAINS, Ball, UnsupportedLayerError, check_supported, compute_bounds, margin_spec
from veritrain.bounds.ops import (
    AddOp,
    AffineOp,
    CatOp,
    Conv1dOp,
    MaxPool2dOp,
    ReLUOp,
    SeparablePoolOp,
    SShapedOp,
    run_ops,
    to_ops,
)
from veritrain.models.layers import Normalize, Residual

from nets import random_batchnorm as _bn
from test_bounds_common import assert_inside, pgd_points, random_ball, random_points

ALL_DOMAINS = DOMAINS.names()
FEW = settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---- random graphs over every supported operator ------------------------------------------------

SPATIAL = [
    "conv",
    "relu-module",
    "F.relu",
    "torch.relu",
    "x.relu",
    "leaky",
    "F.leaky",
    "sigmoid",
    "tanh",
    "bn",
    "dropout",
    "identity",
    "add",
    "cat",
    "contiguous",
]
POOL = [
    "maxpool",
    "maxpool-pad",
    "maxpool-ceil",
    "F.max_pool2d",
    "avgpool",
    "F.avg_pool2d",
    "adaptive-even",
    "adaptive-uneven",
]
FLAT = ["nn.Flatten", "torch.flatten", "view", "reshape", "x.flatten", "mean", "sum"]
DENSE = ["linear", "relu-module", "F.relu", "leaky", "sigmoid", "tanh", "bn1d", "add", "cat"]


class GraphNet(nn.Module):
    """A random DAG network: a spatial stage, a pooling, a second spatial stage, a flattening (or a spatial
    mean/sum), a dense stage and a Linear head. Each step applies one operator (as a module, a function of
    torch / torch.nn.functional, or a tensor method) to a random earlier value of its stage; `add` and `cat`
    join two earlier values."""

    def __init__(
        self,
        seed: int,
        in_shape: tuple[int, int, int] = (2, 6, 6),
        n_out: int = 3,
        kinds: list[str] | None = None,
        exclude: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.layers = nn.ModuleList()
        self.plan: list[tuple[str, tuple[int, ...], int]] = []  # (kind, inputs, layer index or -1)
        c = 3
        shapes: list[tuple[int, ...]] = [in_shape]
        self._step("conv0", (0,), nn.Conv2d(in_shape[0], c, 3, 1, 1), shapes, (c, *in_shape[1:]))

        def pick(options: list[str]) -> str:  # the next forced kind when it fits, else a random one
            options = [o for o in options if o not in exclude]
            return kinds.pop(0) if kinds and kinds[0] in options else str(rng.choice(options))

        for stage in range(2):
            for _ in range(int(rng.integers(2, 4))):
                self._spatial(pick(SPATIAL), rng, g, shapes)
            if stage == 0:
                self._pool(pick(POOL), shapes)
        self._flatten(pick(FLAT), shapes)
        width = 5
        self._step("linear", (len(shapes) - 1,), nn.Linear(shapes[-1][0], width), shapes, (width,))
        for _ in range(int(rng.integers(2, 4))):
            self._dense(pick(DENSE), rng, g, shapes)
        self._step("linear", (len(shapes) - 1,), nn.Linear(shapes[-1][0], n_out), shapes, (n_out,))

    def _step(self, kind: str, inputs: tuple[int, ...], layer: nn.Module | None, shapes: list, out: tuple) -> None:
        idx = -1
        if layer is not None:
            self.layers.append(layer)
            idx = len(self.layers) - 1
        self.plan.append((kind, inputs, idx))
        shapes.append(out)

    def _same_shape(self, rng: np.random.Generator, shapes: list, n: int) -> tuple[int, ...]:
        last = len(shapes) - 1
        same = [i for i in range(1, len(shapes)) if shapes[i] == shapes[last]]
        return (last, *[int(rng.choice(same)) for _ in range(n - 1)])

    def _spatial(self, kind: str, rng: np.random.Generator, g: torch.Generator, shapes: list) -> None:
        s = shapes[-1]
        one = (len(shapes) - 1,)
        if kind == "conv":
            self._step(kind, one, nn.Conv2d(s[0], s[0], 3, 1, 1), shapes, s)
        elif kind == "relu-module":
            self._step(kind, one, nn.ReLU(), shapes, s)
        elif kind in ("leaky", "F.leaky"):
            self._step(kind, one, nn.LeakyReLU(0.1) if kind == "leaky" else None, shapes, s)
        elif kind == "sigmoid":
            self._step(kind, one, nn.Sigmoid(), shapes, s)
        elif kind == "bn":
            self._step(kind, one, _bn(nn.BatchNorm2d, s[0], g), shapes, s)
        elif kind == "dropout":
            self._step(kind, one, nn.Dropout(0.5), shapes, s)
        elif kind == "identity":
            self._step(kind, one, nn.Identity(), shapes, s)
        elif kind == "add":
            self._step(kind, self._same_shape(rng, shapes, 2), None, shapes, s)
        elif kind == "cat":  # channels side by side, then a 1x1 conv back to the width
            ins = self._same_shape(rng, shapes, 2)
            self._step(kind, ins, None, shapes, (2 * s[0], *s[1:]))
            self._step("conv", (len(shapes) - 1,), nn.Conv2d(2 * s[0], s[0], 1), shapes, s)
        else:  # F.relu, torch.relu, x.relu, tanh, contiguous
            self._step(kind, one, None, shapes, s)

    def _pool(self, kind: str, shapes: list) -> None:
        c, h, w = shapes[-1]
        one = (len(shapes) - 1,)
        layer: nn.Module | None = {
            "maxpool": nn.MaxPool2d(2),
            "maxpool-pad": nn.MaxPool2d(3, 2, 1),
            "maxpool-ceil": nn.MaxPool2d(4, 3, ceil_mode=True),
            "avgpool": nn.AvgPool2d(2),
            "adaptive-even": nn.AdaptiveAvgPool2d(3),
            "adaptive-uneven": nn.AdaptiveAvgPool2d(4),
        }.get(kind)
        with torch.no_grad():
            out = (layer if layer is not None else (lambda x: self._op(kind, [x], None)))(torch.zeros(1, c, h, w))
        self._step(kind, one, layer, shapes, tuple(out.shape[1:]))

    def _flatten(self, kind: str, shapes: list) -> None:
        c, h, w = shapes[-1]
        one = (len(shapes) - 1,)
        out = (c,) if kind in ("mean", "sum") else (c * h * w,)
        self._step(kind, one, nn.Flatten() if kind == "nn.Flatten" else None, shapes, out)

    def _dense(self, kind: str, rng: np.random.Generator, g: torch.Generator, shapes: list) -> None:
        s = shapes[-1]
        one = (len(shapes) - 1,)
        if kind == "linear":
            self._step(kind, one, nn.Linear(s[0], s[0]), shapes, s)
        elif kind == "bn1d":
            self._step(kind, one, _bn(nn.BatchNorm1d, s[0], g), shapes, s)
        elif kind == "cat":
            ins = self._same_shape(rng, shapes, 2)
            self._step(kind, ins, None, shapes, (2 * s[0],))
            self._step("linear", (len(shapes) - 1,), nn.Linear(2 * s[0], s[0]), shapes, s)
        else:
            self._spatial(kind, rng, g, shapes)

    @staticmethod
    def _op(kind: str, xs: list[torch.Tensor], layer: nn.Module | None) -> torch.Tensor:
        x = xs[0]
        if layer is not None:
            return layer(x)
        if kind == "F.relu":
            return F.relu(x)
        if kind == "torch.relu":
            return torch.relu(x)
        if kind == "x.relu":
            return x.relu()
        if kind == "F.leaky":
            return F.leaky_relu(x, 0.2)
        if kind == "tanh":
            return torch.tanh(x)
        if kind == "contiguous":
            return x.contiguous()
        if kind == "add":
            return xs[0] + xs[1]
        if kind == "cat":
            return torch.cat([xs[0], xs[1]], dim=1)
        if kind == "F.max_pool2d":
            return F.max_pool2d(x, 2)
        if kind == "F.avg_pool2d":
            return F.avg_pool2d(x, 2)
        if kind == "torch.flatten":
            return torch.flatten(x, 1)
        if kind == "view":
            return x.view(x.size(0), -1)
        if kind == "reshape":
            return x.reshape(x.shape[0], -1)
        if kind == "x.flatten":
            return x.flatten(1)
        if kind == "mean":
            return x.mean(dim=(2, 3))
        if kind == "sum":
            return torch.sum(x, (-1, -2))
        raise AssertionError(kind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = [x]
        for kind, inputs, idx in self.plan:
            layer = self.layers[idx] if idx >= 0 else None
            values.append(self._op(kind, [values[i] for i in inputs], layer))
        return values[-1]


def graph_net(
    seed: int, kinds: list[str] | None = None, exclude: tuple[str, ...] = ()
) -> tuple[nn.Module, tuple[int, ...]]:
    return GraphNet(seed, kinds=list(kinds) if kinds else None, exclude=exclude).double().eval(), (2, 6, 6)


def test_random_graphs_cover_every_operator() -> None:
    """The generator reaches every kind (forced through `kinds`), and the traced ops reproduce the model."""
    for i, kind in enumerate(SPATIAL + POOL + FLAT + DENSE):
        model, shape = graph_net(i, [kind])
        assert kind in [k for k, _, _ in model.plan]
        x = torch.rand(3, *shape, dtype=torch.float64)
        ops = to_ops(model, shape)
        torch.testing.assert_close(run_ops(ops, x), model(x), atol=1e-12, rtol=0)
    kinds = {type(op) for s in range(30) for op in to_ops(graph_net(s)[0], (2, 6, 6))}
    assert {AddOp, CatOp, MaxPool2dOp, ReLUOp, SShapedOp, SeparablePoolOp} <= kinds


@pytest.mark.parametrize("domain", ALL_DOMAINS)
@FEW
@given(
    seed=st.integers(0, 10_000), eps=st.floats(0.01, 0.3), norm=st.sampled_from(["linf", "l2"]), margins=st.booleans()
)
def test_sound_on_random_graphs(domain: str, seed: int, eps: float, norm: str, margins: bool) -> None:
    """Random and PGD points of the ball lie inside every domain's bounds, which are never looser than
    interval bounds, on random DAG networks of every operator."""
    model, shape = graph_net(seed)
    ball = random_ball(shape, 2, eps, norm, seed)
    spec = margin_spec(torch.tensor([0, 2]), 3).double() if margins else None
    lower, upper = compute_bounds(model, ball, spec, domain)
    assert (lower <= upper + 1e-9).all()
    for pts in (random_points(ball, 32, seed).view(2, 32, *shape), pgd_points(model, ball, spec, steps=15)):
        with torch.no_grad():
            out = model(pts.flatten(0, 1)).view(2, pts.shape[1], -1)
            if spec is not None:
                out = torch.einsum("bsk,bpk->bps", spec, out)
        assert_inside(lower, upper, out, f"{domain} graph {seed} {norm}")
    if not getattr(DOMAINS.get(domain)(), "intersect", True):
        return  # crown-lirpa reproduces auto_LiRPA's policy: no interval intersection, may be looser (documented)
    ibp_l, ibp_u = compute_bounds(model, ball, spec, "interval")
    tol = 1e-7 * max(1.0, float(ibp_u.detach().abs().max()))
    assert (lower >= ibp_l - tol).all() and (upper <= ibp_u + tol).all(), f"{domain} looser than interval"


# ---- exact ranges of tiny piecewise-linear graphs -----------------------------------------------


class TinyDag(nn.Module):
    """2 inputs; Linear -> LeakyReLU / ReLU, a residual '+' and a max over pairs (MaxPool2d on a 1 x 2 map)."""

    def __init__(self, seed: int, slope: float) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.a, self.b, self.c, self.out = nn.Linear(2, 3), nn.Linear(3, 3), nn.Linear(3, 4), nn.Linear(2, 2)
        self.act = nn.LeakyReLU(slope)
        self.pool = nn.MaxPool2d((1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.a(x))
        h = F.relu(self.b(h)) + h
        h = self.c(h).view(x.size(0), 2, 1, 2)  # two channels of a 1 x 2 map
        return self.out(torch.flatten(self.pool(h), 1))


def _exact_range(model: TinyDag, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """min and max of each output over the box, enumerating the activation pattern of every LeakyReLU /
    ReLU neuron and the argmax of every max: on each region the network is affine (one LP per pattern)."""
    w = {k: getattr(model, k).weight.detach().numpy() for k in "abc"} | {"out": model.out.weight.detach().numpy()}
    b = {k: getattr(model, k).bias.detach().numpy() for k in "abc"} | {"out": model.out.bias.detach().numpy()}
    slope = model.act.negative_slope
    best_lo, best_hi = np.full(2, np.inf), np.full(2, -np.inf)
    for p1, p2, p3 in itertools.product(
        itertools.product([0, 1], repeat=3), itertools.product([0, 1], repeat=3), itertools.product([0, 1], repeat=2)
    ):
        rows, vals = [], []

        def constrain(m: np.ndarray, v: np.ndarray, pattern: Any) -> None:  # active: z >= 0, else z <= 0
            for j, on in enumerate(pattern):
                s = -1.0 if on else 1.0
                rows.append(s * m[j])
                vals.append(-s * v[j])

        m1, v1 = w["a"], b["a"]
        constrain(m1, v1, p1)
        f1 = np.where(np.array(p1), 1.0, slope)
        h_m, h_v = f1[:, None] * m1, f1 * v1
        m2, v2 = w["b"] @ h_m, w["b"] @ h_v + b["b"]
        constrain(m2, v2, p2)
        f2 = np.array(p2, dtype=float)
        h_m, h_v = f2[:, None] * m2 + h_m, f2 * v2 + h_v
        m3, v3 = w["c"] @ h_m, w["c"] @ h_v + b["c"]  # channels (0, 1) of slot 0 and 1: entries (2c, 2c + 1)
        pm, pv = [], []
        for ch, first in enumerate(p3):  # first = 1: slot 0 is the max
            i, j = (2 * ch, 2 * ch + 1) if first else (2 * ch + 1, 2 * ch)
            rows.append(m3[j] - m3[i])
            vals.append(v3[i] - v3[j])  # x_j <= x_i
            pm.append(m3[i])
            pv.append(v3[i])
        out_m, out_v = w["out"] @ np.array(pm), w["out"] @ np.array(pv) + b["out"]
        for o in range(2):
            for sgn in (1.0, -1.0):
                res = linprog(
                    sgn * out_m[o], A_ub=np.array(rows), b_ub=np.array(vals), bounds=list(zip(lo, hi)), method="highs"
                )
                if res.status == 2:
                    break
                assert res.status == 0, res.message
                val = sgn * res.fun + out_v[o]
                best_lo[o], best_hi[o] = min(best_lo[o], val), max(best_hi[o], val)
    return best_lo, best_hi


@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 1000), eps=st.floats(0.05, 0.4), slope=st.sampled_from([0.0, 0.1, 0.5]))
def test_contains_exact_range_of_tiny_graphs(seed: int, eps: float, slope: float) -> None:
    model = TinyDag(seed, slope).double().eval()
    ball = Ball(torch.rand(1, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), eps)
    ex_lo, ex_hi = _exact_range(model, *(t[0].numpy() for t in ball.box()))
    for domain in ALL_DOMAINS:
        lower, upper = compute_bounds(model, ball, None, domain)
        assert (lower[0].detach().numpy() <= ex_lo + 1e-7).all(), f"{domain}: lower bound above the exact minimum"
        assert (upper[0].detach().numpy() >= ex_hi - 1e-7).all(), f"{domain}: upper bound below the exact maximum"


@pytest.mark.parametrize("domain", ALL_DOMAINS)
def test_stable_activations_are_exact(domain: str) -> None:
    """A tiny eps around a point where no max ties and no ReLU is at 0: every domain is (nearly) exact for
    the piecewise-linear layers, and tight to first order for sigmoid/tanh."""
    model = (
        nn.Sequential(
            nn.Linear(3, 4),
            nn.LeakyReLU(0.2),
            nn.Linear(4, 4),
            nn.Tanh(),
            nn.Linear(4, 4),
            nn.Unflatten(1, (1, 2, 2)),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Sigmoid(),
            nn.Linear(1, 2),
        )
        .double()
        .eval()
    )
    x = torch.rand(2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.5 + 0.25
    eps = 1e-7
    lower, upper = compute_bounds(model, Ball(x, eps), None, domain)
    out = model(x)
    assert (upper - lower).max() < 1e-5, upper - lower
    assert (lower <= out + 1e-12).all() and (out <= upper + 1e-12).all()


# ---- class forwards, as written by users --------------------------------------------------------


class UserNet(nn.Module):
    """What auto_LiRPA users write: convolutions, a residual branch added in forward, MaxPool, torch.flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = Normalize([0.5], [0.25])
        self.conv1 = nn.Conv2d(1, 4, 3, 1, 1)
        self.conv2 = nn.Conv2d(4, 4, 3, 1, 1)
        self.conv3 = nn.Conv2d(4, 4, 3, 1, 1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(4 * 4 * 4, 10)
        self.fc2 = nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(self.norm(x)))
        y = self.conv3(torch.relu(self.conv2(x)))
        x = F.relu(y + x)  # Residual's order: branch + shortcut
        x = torch.flatten(self.pool(x), 1)
        return self.fc2(self.fc1(x).relu())


def sequential_twin(net: UserNet) -> nn.Sequential:
    return nn.Sequential(
        net.norm,
        net.conv1,
        nn.ReLU(),
        Residual(nn.Sequential(net.conv2, nn.ReLU(), net.conv3)),
        nn.ReLU(),
        net.pool,
        nn.Flatten(),
        net.fc1,
        nn.ReLU(),
        net.fc2,
    )


@pytest.mark.parametrize("domain", ALL_DOMAINS)
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_class_forward_bounds_equal_the_sequential_twin(domain: str, norm: str) -> None:
    torch.manual_seed(0)
    net = UserNet().double().eval()
    twin = sequential_twin(net).eval()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(net(x), twin(x))
    ball = Ball(x, 0.05 if norm == "linf" else 0.3, norm)
    spec = margin_spec(torch.tensor([0, 1, 2]), 3).double()
    got, want = compute_bounds(net, ball, spec, domain), compute_bounds(twin, ball, spec, domain)
    for a, b in zip(got, want):  # the twin's Identity shortcut is one more (exact up to rounding) affine op
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_traced_ops_follow_the_layers_and_name_their_node() -> None:
    net = UserNet().double().eval()
    ops = to_ops(net, (1, 8, 8))
    assert to_ops(net, (1, 8, 8)) is ops  # cached
    add = next(op for op in ops if isinstance(op, AddOp))
    assert len(add.src) == 2 and "test_bounds_graph.py" in add.where and "forward" in add.where
    with torch.no_grad():
        net.fc2.weight.mul_(2.0)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(run_ops(ops, x), net(x))


def test_conv1d_and_unused_branches() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc, self.unused = nn.Conv1d(2, 3, 3, 2, 1), nn.Linear(12, 2), nn.Linear(16, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.unused(x.flatten(1))  # computed, never used: not bounded
            return self.fc(torch.tanh(self.conv(x)).flatten(1))

    net = Net().double().eval()
    ops = to_ops(net, (2, 8))
    assert isinstance(ops[0], Conv1dOp) and all(
        not (isinstance(op, AffineOp) and getattr(op, "layer", None) is net.unused) for op in ops
    )
    ball = random_ball((2, 8), 2, 0.1, "linf", 0)
    for domain in ALL_DOMAINS:
        lower, upper = compute_bounds(net, ball, None, domain)
        with torch.no_grad():
            out = net(random_points(ball, 64, 0)).view(2, 64, -1)
        assert_inside(lower, upper, out, domain)


# ---- one-line errors ----------------------------------------------------------------------------


class _Gelu(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.how, self.fc, self.act = how, nn.Linear(4, 4), nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        if self.how == "module":
            return self.act(h)
        if self.how == "function":
            return F.gelu(h)
        if self.how == "method":
            return h.exp()
        if self.how == "constant":
            return h * 2.0
        if self.how == "batch-mean":
            return h.mean(0, keepdim=True).expand_as(h)
        return h[:, :2]


@pytest.mark.parametrize(
    "how,name",
    [
        ("module", "GELU"),
        ("function", "gelu"),
        ("method", r"\.exp\(\)"),
        ("constant", "mul"),
        ("batch-mean", "batch"),
        ("slice", "getitem"),
    ],
)
def test_unsupported_operation_is_named_with_its_node_and_the_alternatives(how: str, name: str) -> None:
    with pytest.raises(UnsupportedLayerError, match=name) as info:
        compute_bounds(_Gelu(how), Ball(torch.rand(2, 4), 0.1), None, "interval")
    msg = str(info.value)
    assert "\n" not in msg and "node" in msg
    if how not in ("batch-mean",):
        assert "test_bounds_graph.py" in msg and "supported:" in msg and "ReLU" in msg


def test_untraceable_forward_and_linear_without_flatten() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) if x.sum() > 0 else -self.fc(x)

    with pytest.raises(UnsupportedLayerError, match="cannot trace Branchy.forward"):
        to_ops(Branchy(), (4,))
    with pytest.raises(UnsupportedLayerError, match="flatten first"):
        to_ops(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(2, 2)), (1, 4, 4))


def test_a_domain_without_a_rule_names_the_op_and_itself() -> None:
    class Odd(MaxPool2dOp):
        pass

    from veritrain.bounds.graph import check

    ops = to_ops(nn.Sequential(nn.MaxPool2d(2), nn.Flatten()), (1, 4, 4))
    odd = Odd.__new__(Odd)
    odd.__dict__.update(ops[0].__dict__)
    table = {AffineOp: None}
    with pytest.raises(UnsupportedLayerError, match="the my-domain domain has no sound rule for Odd"):
        check([odd, *ops[1:]], table, "my-domain")  # type: ignore[dict-item]
    check_supported(UserNet(), (1, 8, 8), ALL_DOMAINS)


# ---- colouring, dual network, interval pre-activations ------------------------------------------


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 1000), variant=st.integers(0, 2), eps=st.floats(0.01, 0.3))
def test_colouring_with_new_layers_gives_the_dense_bounds(seed: int, variant: int, eps: float) -> None:
    """Per-neuron activations stay inside the coloured prefix; a MaxPool or a fork ends it: same bounds."""
    from veritrain.bounds.colouring import colouring_for
    from veritrain.bounds.symbolic import Symbolic
    from veritrain.bounds.symbolic_linear import SymbolicLinear

    torch.manual_seed(seed)
    if variant == 0:
        body: list[nn.Module] = [nn.Conv2d(1, 3, 3, 2, 1), nn.LeakyReLU(0.1), nn.Conv2d(3, 3, 3, 2, 1), nn.Sigmoid()]
    elif variant == 1:
        body = [nn.Conv2d(1, 3, 3, 1, 1), nn.Tanh(), nn.Conv2d(3, 3, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2)]
    else:
        body = [
            nn.Conv2d(1, 3, 3, 2, 1),
            nn.ReLU(),
            Residual(nn.Sequential(nn.Conv2d(3, 3, 3, 1, 1), nn.ReLU())),
            nn.ReLU(),
        ]
    with torch.no_grad():
        n = nn.Sequential(*body)(torch.zeros(1, 1, 16, 16)).numel()
    model = nn.Sequential(*body, nn.Flatten(), nn.Linear(n, 6), nn.ReLU(), nn.Linear(6, 3)).double().eval()
    ops = to_ops(model, (1, 16, 16))
    found = colouring_for(ops, (1, 16, 16), torch.zeros(1, dtype=torch.float64))
    assert found is not None and found[1] == (2 if variant == 2 else 4)
    ball = random_ball((1, 16, 16), 2, eps, "linf", seed)
    for dense, coloured in ((Symbolic(colour=False), Symbolic()), (SymbolicLinear(colour=False), SymbolicLinear())):
        for a, b in zip(compute_bounds(model, ball, None, dense), compute_bounds(model, ball, None, coloured)):
            torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)


def test_forward_dual_network_equals_the_dual_domain_on_graphs() -> None:
    """The forward dual network (exact) gives the dual domain's bound on DAGs with LeakyReLU, sigmoid and tanh
    (the same parallel lines); with max pooling both are sound (their max relaxations differ)."""
    from veritrain.bounds.crown import Dual

    for seed in range(4):
        model, shape = graph_net(
            seed,
            ["leaky", "add", "tanh", "avgpool", "sigmoid", "cat", "conv", "mean", "leaky", "add", "cat"],
            exclude=("maxpool", "maxpool-pad", "maxpool-ceil", "F.max_pool2d"),
        )
        ball = random_ball(shape, 2, 0.05, "linf", seed)
        spec = margin_spec(torch.tensor([0, 1]), 3).double()
        fwd = compute_bounds(model, ball, spec, Dual(forward=True))
        bwd = compute_bounds(model, ball, spec, Dual())
        for a, b in zip(fwd, bwd):
            torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7)


def test_interval_preactivations_on_a_graph() -> None:
    from veritrain.bounds.interval import interval_preactivations

    net = UserNet().double().eval()
    ball = random_ball((1, 8, 8), 2, 0.1, "linf", 0)
    lower, upper, pre = interval_preactivations(net, ball)
    ref = compute_bounds(net, ball, None, "interval")
    torch.testing.assert_close(lower, ref[0])
    torch.testing.assert_close(upper, ref[1])
    assert [tuple(p[0].shape[1:]) for p in pre] == [(4, 8, 8), (4, 8, 8), (4, 8, 8), (10,)]
    (lower.sum() + sum(p[0].sum() for p in pre)).backward()  # differentiable
    assert net.conv1.weight.grad is not None


# ---- the CLI trains such a model ----------------------------------------------------------------

NET_FILE = """
import torch
import torch.nn.functional as F
from torch import nn
from veritrain.models.layers import Normalize


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = Normalize([0.1307], [0.3081])
        self.conv1 = nn.Conv2d(1, 4, 4, 2, 1)
        self.conv2 = nn.Conv2d(4, 4, 3, 1, 1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 7 * 7, 10)

    def forward(self, x):
        x = F.relu(self.conv1(self.norm(x)))
        x = torch.relu(self.conv2(x) + x)
        return self.fc(torch.flatten(self.pool(x), 1))


def build():
    return Net()


def build_gelu():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10), torch.nn.GELU(), torch.nn.Linear(10, 10))
"""


def test_cli_trains_and_evaluates_a_class_model_with_mixtrain(tmp_path, capsys) -> None:
    import json

    from veritrain.cli import main

    (tmp_path / "mynet.py").write_text(NET_FILE)
    run = tmp_path / "run"
    rc = main(
        [
            "train",
            "--net",
            f"{tmp_path / 'mynet.py'}:build",
            "--dataset",
            "mnist-mini",
            "--method",
            "mixtrain",
            "--domain",
            "symbolic-linear",
            "--train-size",
            "100",
            "--epochs",
            "1",
            "--eps",
            "0.05",
            "--out",
            str(run),
            "--no-progress",
            "--eval-attacks",
            "",
            "--eval-domains",
            "interval,crown",
            "--eval-n",
            "10",
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    summary = json.loads((run / "summary.json").read_text())
    assert json.dumps(summary).count("crown") >= 1
    # a network whose layers have no sound rule: refused before training when the method bounds it
    bad = tmp_path / "bad"
    rc = main(
        [
            "train",
            "--net",
            f"{tmp_path / 'mynet.py'}:build_gelu",
            "--dataset",
            "mnist-mini",
            "--method",
            "mixtrain",
            "--train-size",
            "100",
            "--epochs",
            "1",
            "--out",
            str(bad),
            "--no-progress",
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 2 and "GELU" in err and len(err.strip().splitlines()) == 1, err
    assert not (bad / "metrics.jsonl").exists() and not (bad / "config.json").exists()
