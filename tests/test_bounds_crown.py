"""Backward linear bound domains (`crown-ibp`, `crown`, `dual`): soundness (random and PGD points, both
norms, residual nets), exact ranges of tiny networks, tightness against interval, Wong & Kolter's dual
objective, chunking, differentiability, and the authors' MNIST checkpoint against auto_LiRPA's numbers."""

from __future__ import annotations

import gzip
import itertools
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from veritrain.bounds import Ball, compute_bounds, margin_spec, to_ops, verified_loss, verify
from veritrain.bounds.base import with_spec
from veritrain.bounds.crown import Crown, CrownIBP, CrownLirpa, Dual, dual_objective_terms
from veritrain.bounds.interval import interval_step
from veritrain.models import build_model, load_weights
from veritrain.models.layers import Normalize, Residual

from nets import exact_range, random_batchnorm as _bn, tiny_net

BACKWARD = ["crown-ibp", "crown", "dual"]
FEW = settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_net(arch: str, seed: int) -> tuple[nn.Sequential, tuple[int, ...]]:
    """Small float64 networks covering every supported layer type, residual blocks included."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if arch == "mlp":
        net = nn.Sequential(nn.Flatten(), nn.Linear(8, 7), nn.ReLU(), nn.Linear(7, 5), nn.ReLU(), nn.Linear(5, 3))
        shape = (2, 2, 2)
    elif arch == "conv":
        net = nn.Sequential(
            Normalize([0.4, 0.5], [0.3, 0.25]),
            nn.Conv2d(2, 3, 3, 1, 1),
            _bn(nn.BatchNorm2d, 3, g),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(3, 4, 3, 2, 1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16, 4),
        )
        shape = (2, 6, 6)
    else:  # Wong et al.'s residual blocks: Residual(conv, ReLU, conv; identity or 1x1 conv) then ReLU
        b1 = nn.Sequential(nn.Conv2d(3, 3, 3, 1, 1), nn.ReLU(), nn.Conv2d(3, 3, 3, 1, 1))
        b2 = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), _bn(nn.BatchNorm2d, 4, g), nn.ReLU(), nn.Conv2d(4, 4, 3, 1, 1))
        net = nn.Sequential(
            nn.Conv2d(1, 3, 3, 1, 1),
            nn.ReLU(),
            Residual(b1),
            nn.ReLU(),
            Residual(b2, nn.Conv2d(3, 4, 1, 2, 0)),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16, 3),
        )
        shape = (1, 4, 4)
    return net.double().eval(), shape


def make_ball(shape: tuple[int, ...], batch: int, eps: float, norm: str, seed: int) -> Ball:
    g = torch.Generator().manual_seed(seed)
    return Ball(torch.rand(batch, *shape, generator=g, dtype=torch.float64), eps, norm)


def project(ball: Ball, x: torch.Tensor) -> torch.Tensor:
    """A point of B_eps(x0) ∩ [0, 1] near x (L2: ball projection, then clipping keeps it in the ball)."""
    d = x - ball.x
    if ball.norm == "linf":
        d = d.clamp(-ball.eps, ball.eps)
    else:
        n = d.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, *([1] * (d.dim() - 1)))
        d = d * (ball.eps / n).clamp(max=1.0)
    return (ball.x + d).clamp(0, 1)


def random_points(ball: Ball, n: int, seed: int) -> torch.Tensor:
    """(n, B, *shape) random points of the set (half of them on corners / the sphere)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, *ball.x.shape, generator=g, dtype=ball.x.dtype)
    noise[: n // 2] = noise[: n // 2].sign() * 1e3
    scale = ball.eps if ball.norm == "linf" else ball.eps / np.sqrt(ball.x[0].numel())
    return torch.stack(
        [project(ball, ball.x + scale * z.clamp(-1, 1) * (1 if ball.norm == "linf" else 3)) for z in noise]
    )


def pgd_extremes(model: nn.Module, ball: Ball, spec: torch.Tensor | None, steps: int = 20) -> torch.Tensor:
    """(2S, B, S) outputs at PGD points that minimise / maximise each output row."""
    out = []
    n_out = spec.shape[1] if spec is not None else model(ball.x).shape[1]
    step = 2.5 * ball.eps / steps
    for row, sign in itertools.product(range(n_out), (1.0, -1.0)):
        x = project(ball, ball.x + 0.5 * ball.eps * torch.randn_like(ball.x).sign()).requires_grad_(True)
        for _ in range(steps):
            val = _apply(model, x, spec)[:, row].sum() * sign
            (grad,) = torch.autograd.grad(val, x)
            if ball.norm == "linf":
                grad = grad.sign()
            else:
                grad = grad / grad.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, *([1] * (x.dim() - 1)))
            x = project(ball, x.detach() - step * grad).requires_grad_(True)
        out.append(_apply(model, x.detach(), spec).detach())
    return torch.stack(out)


def _apply(model: nn.Module, x: torch.Tensor, spec: torch.Tensor | None) -> torch.Tensor:
    z = model(x)
    return z if spec is None else torch.einsum("bsk,bk->bs", spec, z)


@pytest.mark.parametrize("domain", BACKWARD)
@pytest.mark.parametrize("arch", ["mlp", "conv", "residual"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
@FEW
@given(seed=st.integers(0, 10_000), eps=st.sampled_from([0.02, 0.1, 0.3]), margins=st.booleans())
def test_sound_on_random_and_pgd_points(
    domain: str, arch: str, norm: str, seed: int, eps: float, margins: bool
) -> None:
    model, shape = make_net(arch, seed)
    ball = make_ball(shape, 2, eps, norm, seed)
    spec = None
    if margins:
        k = model(ball.x).shape[1]
        spec = margin_spec(torch.tensor([0, k - 1]), k).double()
    lower, upper = compute_bounds(model, ball, spec, domain)
    with torch.no_grad():
        values = torch.stack([_apply(model, p, spec) for p in random_points(ball, 64, seed)])
    values = torch.cat([values, pgd_extremes(model, ball, spec)])
    tol = 1e-9
    assert (values >= lower - tol).all(), f"{domain}: a point below the lower bound by {(lower - values).max():.3g}"
    assert (values <= upper + tol).all(), f"{domain}: a point above the upper bound by {(values - upper).max():.3g}"


# ----- exact ranges of tiny networks: enumerate activation patterns, one LP per pattern -------------------


@pytest.mark.parametrize("hidden", [(3,), (3, 3)])
@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 10_000), eps=st.sampled_from([0.05, 0.2, 0.5]))
def test_contains_exact_range_and_tighter_than_interval(hidden: tuple[int, ...], seed: int, eps: float) -> None:
    model = tiny_net(seed, hidden)
    ball = Ball(torch.tensor([[0.3, 0.6]], dtype=torch.float64), eps)
    lo, hi = (t[0].numpy() for t in ball.box())
    ex_lo, ex_hi = exact_range(model, lo, hi)
    ibp_l, ibp_u = compute_bounds(model, ball, domain="interval")
    got = {d: compute_bounds(model, ball, domain=d) for d in BACKWARD}
    for d, (l, u) in got.items():
        assert (l[0].detach().numpy() <= ex_lo + 1e-7).all(), d
        assert (u[0].detach().numpy() >= ex_hi - 1e-7).all(), d
        assert (l >= ibp_l - 1e-12).all() and (u <= ibp_u + 1e-12).all(), f"{d} looser than interval"
    if len(hidden) == 1:  # one hidden layer: exact first-layer bounds either way, so crown == crown-ibp
        torch.testing.assert_close(got["crown"][0], got["crown-ibp"][0])
        torch.testing.assert_close(got["crown"][1], got["crown-ibp"][1])


def test_exact_when_every_neuron_is_stable() -> None:
    model = tiny_net(3, (4, 4))
    ball = Ball(torch.tensor([[0.3, 0.6]], dtype=torch.float64), 1e-4)
    lo, hi = (t[0].numpy() for t in ball.box())
    ex_lo, ex_hi = exact_range(model, lo, hi)
    for d in ("crown", "dual"):
        l, u = compute_bounds(model, ball, domain=d)
        np.testing.assert_allclose(l[0].detach().numpy(), ex_lo, atol=1e-9)
        np.testing.assert_allclose(u[0].detach().numpy(), ex_hi, atol=1e-9)


@pytest.mark.parametrize("arch", ["mlp", "conv", "residual"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_never_looser_than_interval(arch: str, norm: str) -> None:
    model, shape = make_net(arch, 11)
    ball = make_ball(shape, 3, 0.15, norm, 11)
    spec = margin_spec(torch.tensor([0, 1, 2]), 3 if arch != "conv" else 4).double()
    ibp_l, ibp_u = compute_bounds(model, ball, spec, "interval")
    for d in BACKWARD:
        l, u = compute_bounds(model, ball, spec, d)
        assert (l >= ibp_l - 1e-12).all() and (u <= ibp_u + 1e-12).all(), d
    # the intermediate bounds are intersected with interval ones too
    ops = with_spec(to_ops(model, shape), spec)
    crown_bounds, _ = Crown().layer_bounds(ops, ball)
    ibp_bounds, _ = CrownIBP().layer_bounds(ops, ball)
    for op, (l, u) in crown_bounds.items():
        assert (l >= ibp_bounds[op][0] - 1e-12).all() and (u <= ibp_bounds[op][1] + 1e-12).all()


def test_chunking_does_not_change_bounds() -> None:
    model, shape = make_net("residual", 5)
    ball = make_ball(shape, 2, 0.1, "linf", 5)
    ops = to_ops(model, shape)
    for cls in (Crown, Dual):
        big = cls().bounds(ops, ball)
        small = cls(max_elements=1).bounds(ops, ball)  # one neuron per chunk
        torch.testing.assert_close(big, small)


def test_lirpa_policy_per_sample_matches_one_image_batches_and_is_sound() -> None:
    """auto_LiRPA's policy: per-sample masks equal running it one image at a time; the union mask is sound."""
    model, shape = make_net("conv", 7)
    ball = make_ball(shape, 3, 0.1, "linf", 7)
    ops = to_ops(model, shape)
    per_sample = CrownLirpa(lirpa_union=False).bounds(ops, ball)
    singles = [CrownLirpa().bounds(ops, Ball(ball.x[i : i + 1], ball.eps)) for i in range(3)]
    torch.testing.assert_close(per_sample, tuple(torch.cat(t) for t in zip(*singles)))
    union_l, union_u = CrownLirpa().bounds(ops, ball)
    with torch.no_grad():
        values = torch.stack([model(p) for p in random_points(ball, 64, 7)])
    assert (values >= union_l - 1e-9).all() and (values <= union_u + 1e-9).all()


def test_lirpa_policy_keeps_reference_for_batch_stable_neurons() -> None:
    """Neurons stable (under the interval reference) for every sample keep the reference bounds; with a
    density threshold of 1 the others get plain backward bounds, as `Crown(intersect=False)` computes."""
    model, shape = make_net("mlp", 4)
    ball = make_ball(shape, 2, 0.2, "linf", 4)
    ops = to_ops(model, shape)
    lirpa, _ = CrownLirpa(lirpa_sparsity=1.0).layer_bounds(ops, ball)
    plain, _ = Crown(intersect=False).layer_bounds(ops, ball)
    first = next(iter(lirpa))
    torch.testing.assert_close(lirpa[first], plain[first])  # first layer: backward = interval, exact
    # each later layer: one interval step from the previous lirpa bounds is the reference
    relu1, relu2 = ops[2], ops[4]  # Reshape, Linear, ReLU, Linear, ReLU, Linear
    ref_l, ref_u = interval_step(ops[3], lirpa[relu1][0].clamp(min=0), lirpa[relu1][1].clamp(min=0))
    unstable = (ref_l < 0) & (ref_u > 0)
    stable = ~unstable.any(0)
    assert stable.any() and unstable.any(), "pick a seed with both kinds of neurons"
    got_l, got_u = lirpa[relu2]
    torch.testing.assert_close(got_l[:, ~stable], plain[relu2][0][:, ~stable])  # replaced, not intersected
    torch.testing.assert_close(got_u[:, ~stable], plain[relu2][1][:, ~stable])
    torch.testing.assert_close(got_l[:, stable], ref_l[:, stable])
    torch.testing.assert_close(got_u[:, stable], ref_u[:, stable])
    with pytest.raises(ValueError, match="lirpa_sparsity"):
        CrownLirpa(lirpa_sparsity=0.0)


def test_dual_matches_wong_kolter_objective() -> None:
    """J(ν) of Wong & Kolter (2018), Thm. 1, written out for one hidden layer (box well inside [0,1])."""
    model = tiny_net(7, (6,), n_in=4, n_out=3)
    x, eps = torch.tensor([[0.4, 0.5, 0.6, 0.45]], dtype=torch.float64), 0.1
    ball = Ball(x, eps)
    w1, b1, w2, b2 = model[0].weight, model[0].bias, model[2].weight, model[2].bias
    z = x @ w1.T + b1
    l, u = z - eps * w1.abs().sum(1), z + eps * w1.abs().sum(1)
    unstable = (l < 0) & (u > 0)
    d = torch.where(unstable, u / (u - l), (l >= 0).double())
    c = torch.eye(3, dtype=torch.float64)
    nu3 = -c  # rows: one objective per output
    nu2 = (nu3 @ w2) * d
    nu1_hat = nu2 @ w1
    j = -nu3 @ b2 - nu2 @ b1 - nu1_hat @ x[0] - eps * nu1_hat.abs().sum(1) + (l * unstable * nu2.clamp(min=0)).sum(1)
    terms, _ = dual_objective_terms(to_ops(model, (4,)), ball, intersect=False)
    torch.testing.assert_close(terms.lower(ball)[0], j)
    lower, _ = Dual(intersect=False).bounds(to_ops(model, (4,)), ball)
    torch.testing.assert_close(lower[0], j)
    assert len(terms.relu_terms) == 1 and len(terms.bias_terms) == 2


@pytest.mark.parametrize("domain", BACKWARD)
def test_differentiable_in_weights(domain: str) -> None:
    model, shape = make_net("residual", 2)
    ball = make_ball(shape, 2, 0.1, "linf", 2)
    y = torch.tensor([0, 2])
    loss = verified_loss(model, ball, y, domain)
    weight = model[2].branch[0].weight
    (grad,) = torch.autograd.grad(loss, weight)
    h, idx = 1e-6, (1, 0, 1, 1)
    with torch.no_grad():
        weight[idx] += h
        up = verified_loss(model, ball, y, domain)
        weight[idx] -= 2 * h
        down = verified_loss(model, ball, y, domain)
        weight[idx] += h
    assert torch.isfinite(grad).all()
    torch.testing.assert_close(grad[idx], (up - down) / (2 * h), rtol=1e-4, atol=1e-8)


# ----- the authors' MNIST Small checkpoint against auto_LiRPA's numbers (first 1,000 test images) ---------

REFERENCE = {  # eps -> domain -> VRA (%) measured with auto_LiRPA; clean accuracy 92.3 %
    0.3: {"crown-ibp": 57.9, "crown": 65.4},
    0.1: {"crown-ibp": 89.2, "crown": 89.6},
}


def _mnist_small(n: int) -> tuple[nn.Sequential, torch.Tensor, torch.Tensor]:
    root = os.environ.get("VERITRAIN_DATA")
    if not root:
        pytest.skip("VERITRAIN_DATA is not set: the real-data check needs the MNIST test set and reference checkpoint")
    base = Path(root)
    files = [
        base / "reference/mnist_small_mixtrain_0.3.pth",
        base / "mnist/t10k-images-idx3-ubyte.gz",
        base / "mnist/t10k-labels-idx1-ubyte.gz",
    ]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        pytest.skip(f"missing under VERITRAIN_DATA: {', '.join(missing)}")
    model = load_weights(build_model("mnist-small"), files[0])
    with gzip.open(files[1]) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16)[: n * 784]
    with gzip.open(files[2]) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)[:n]
    images = torch.tensor(x.reshape(n, 1, 28, 28), dtype=torch.float32) / 255.0
    return model.eval(), images, torch.tensor(y, dtype=torch.long)


def _vra(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, domain: str, batch: int = 100) -> float:
    ok = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb, yb = x[i : i + batch], y[i : i + batch]
            ok += int((verify(model, Ball(xb, eps), yb, domain) & (model(xb).argmax(1) == yb)).sum())
    return 100.0 * ok / len(x)


@pytest.mark.realdata
def test_reference_checkpoint_first_200() -> None:
    """Fast check on 200 images (easier than the first 1,000, hence the loose tolerance)."""
    torch.set_num_threads(2)
    model, x, y = _mnist_small(200)
    for eps, ref in REFERENCE.items():
        got = _vra(model, x, y, eps, "crown-ibp")
        assert abs(got - ref["crown-ibp"]) <= 8.0, (eps, got)
        assert got >= _vra(model, x, y, eps, "interval")
    assert _vra(model, x[:10], y[:10], 0.3, "crown") >= _vra(model, x[:10], y[:10], 0.3, "crown-ibp")


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("eps", [0.3, 0.1])
@pytest.mark.parametrize("domain", ["crown-ibp", "crown", "crown-lirpa"])
def test_reference_checkpoint_matches_auto_lirpa(eps: float, domain: str) -> None:
    """`crown-lirpa` (auto_LiRPA's own intermediate policy, batches of 100) reproduces its CROWN numbers
    (measured 65.3 / 89.6); `crown` intersects every bound with interval bounds and verifies more (70.8 at
    eps=0.3), which is sound: auto_LiRPA replaces the interval reference by the backward bound instead."""
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model, x, y = _mnist_small(1000)
    with torch.no_grad():
        assert abs(100.0 * float((model(x).argmax(1) == y).double().mean()) - 92.3) <= 0.05
    got = _vra(model, x, y, eps, domain)
    if domain == "crown":
        assert got >= REFERENCE[eps][domain] - 1.0
    else:
        assert abs(got - REFERENCE[eps][domain.replace("-lirpa", "")]) <= 1.0


@pytest.mark.parametrize("arch", ["mlp", "conv", "residual"])
@pytest.mark.parametrize("domain", [*BACKWARD, "crown-lirpa"])
def test_lower_only_path_equals_the_lower_of_both_bounds(arch: str, domain: str) -> None:
    """`margin_lower`/`verify`/`verified_loss` push only the S spec rows backwards (`Domain.lower`); the bound is
    the lower half of `compute_bounds`, whose soundness the property tests above check."""
    from veritrain.bounds import margin_lower

    net, shape = make_net(arch, 3)
    x = torch.rand(6, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    y = torch.arange(6) % 3
    ball = Ball(x, 0.05)
    k = net(x).shape[1]
    lower, _ = compute_bounds(net, ball, margin_spec(y, k).to(x.dtype), domain)
    torch.testing.assert_close(margin_lower(net, ball, y, domain), lower, rtol=1e-9, atol=1e-9)
