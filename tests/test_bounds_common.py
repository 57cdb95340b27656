"""Property tests shared by EVERY bound domain in DOMAINS: soundness against random and PGD points, exact
ranges on tiny networks (LP per activation pattern), differentiability, Eqn. 6, unsupported layers."""

from __future__ import annotations


import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from veritrain.bounds import DOMAINS, Ball, UnsupportedLayerError, compute_bounds, margin_spec, verified_loss
from veritrain.models.layers import Normalize, Residual

from nets import exact_range, random_batchnorm as _bn, tiny_net

ALL_DOMAINS = DOMAINS.names()


FAST = settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def random_net(arch: str, seed: int) -> tuple[nn.Sequential, tuple[int, ...]]:
    """Small float64 networks covering every supported layer type."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if arch == "mlp":
        net, shape = (
            nn.Sequential(nn.Flatten(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)),
            (2, 2, 2),
        )
    elif arch == "conv":
        net = nn.Sequential(
            Normalize([0.4, 0.5], [0.3, 0.25]),
            nn.Conv2d(2, 3, 3, 1, 1),
            _bn(nn.BatchNorm2d, 3, g),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(3, 4, 3, 1, 1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(36, 4),
        )
        shape = (2, 6, 6)
    else:  # residual
        branch = nn.Sequential(nn.Conv2d(3, 3, 3, 1, 1), nn.ReLU(), nn.Conv2d(3, 3, 3, 1, 1))
        net = nn.Sequential(
            nn.Conv2d(1, 3, 3, 1, 1),
            nn.ReLU(),
            Residual(branch),
            nn.ReLU(),
            nn.Identity(),
            nn.Flatten(),
            nn.Linear(48, 6),
            _bn(nn.BatchNorm1d, 6, g),
            nn.ReLU(),
            nn.Linear(6, 3),
        )
        shape = (1, 4, 4)
    return net.double().eval(), shape


def random_ball(shape: tuple[int, ...], batch: int, eps: float, norm: str, seed: int) -> Ball:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, *shape, generator=g, dtype=torch.float64)
    x[0].view(-1)[0] = 0.0  # a pixel on the border of [0, 1]
    return Ball(x, eps if norm == "linf" else 4 * eps, norm)


def project(ball: Ball, x: torch.Tensor) -> torch.Tensor:
    """Onto B_eps(centre) ∩ [0, 1] (for L2: ball, then box; the box step keeps it inside the ball)."""
    centre = ball.x.repeat_interleave(x.shape[0] // ball.x.shape[0], 0)
    delta = x - centre
    if ball.norm == "linf":
        delta = delta.clamp(-ball.eps, ball.eps)
    else:
        norm = delta.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, *[1] * (x.dim() - 1))
        delta = delta * (ball.eps / norm).clamp(max=1.0)
    return (centre + delta).clamp(ball.lo, ball.hi)


def random_points(ball: Ball, n: int, seed: int) -> torch.Tensor:
    """(B * n) points of the set, sample-major."""
    g = torch.Generator().manual_seed(seed)
    x = ball.x.repeat_interleave(n, 0)
    noise = torch.rand(x.shape, generator=g, dtype=x.dtype) * 2 - 1
    if ball.norm == "l2":
        noise = noise / noise.flatten(1).norm(dim=1).view(-1, *[1] * (x.dim() - 1))
    corners = noise.sign() if ball.norm == "linf" else noise
    noise[: len(noise) // 2] = corners[: len(noise) // 2]  # half of them on the corners / sphere
    return project(ball, x + ball.eps * noise)


def pgd_points(model: nn.Module, ball: Ball, spec: torch.Tensor | None, steps: int = 25) -> torch.Tensor:
    """For each sample and output s: a point maximising and one minimising (spec @ f)_s; (B, 2S, *shape)."""
    b = ball.x.shape[0]
    out_dim = model(ball.x).shape[1] if spec is None else spec.shape[1]
    reps = 2 * out_dim
    sign = torch.tensor([1.0, -1.0], dtype=ball.x.dtype).repeat_interleave(out_dim).repeat(b)
    which = torch.arange(out_dim).repeat(2).repeat(b)
    x = random_points(ball, reps, seed=1)
    step = 2.5 * ball.eps / steps
    for _ in range(steps):
        x = x.detach().requires_grad_(True)
        out = model(x)
        if spec is not None:
            out = torch.einsum("bsk,bk->bs", spec.repeat_interleave(reps, 0), out)
        obj = (sign * out.gather(1, which.view(-1, 1)).squeeze(1)).sum()
        (grad,) = torch.autograd.grad(obj, x)
        if ball.norm == "linf":
            x = x + step * grad.sign()
        else:
            x = x + step * grad / grad.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, *[1] * (x.dim() - 1))
        x = project(ball, x)
    return x.detach().view(b, reps, *ball.x.shape[1:])


def assert_inside(lower: torch.Tensor, upper: torch.Tensor, values: torch.Tensor, what: str) -> None:
    """values (B, P, S) within [lower, upper] (B, S), tolerance 1e-5 of the scale."""
    lower, upper = lower.detach(), upper.detach()
    scale = max(1.0, float(lower.abs().max()), float(upper.abs().max()))
    tol = 1e-5 * scale
    assert torch.isfinite(lower).all() and torch.isfinite(upper).all()
    assert (values >= lower.unsqueeze(1) - tol).all(), f"{what}: a point lies below the lower bound"
    assert (values <= upper.unsqueeze(1) + tol).all(), f"{what}: a point lies above the upper bound"


@pytest.mark.parametrize("domain", ALL_DOMAINS)
@FAST
@given(
    arch=st.sampled_from(["mlp", "conv", "residual"]),
    seed=st.integers(0, 10_000),
    eps=st.floats(0.01, 0.3),
    norm=st.sampled_from(["linf", "l2"]),
    margins=st.booleans(),
)
def test_sound_on_random_and_pgd_points(
    domain: str, arch: str, seed: int, eps: float, norm: str, margins: bool
) -> None:
    model, shape = random_net(arch, seed)
    ball = random_ball(shape, 2, eps, norm, seed)
    k = model(ball.x).shape[1]
    spec = margin_spec(torch.tensor([0, k - 1]), k).double() if margins else None
    lower, upper = compute_bounds(model, ball, spec, domain)
    assert (lower <= upper + 1e-9).all()
    with torch.no_grad():  # verification: some rules take another path without gradients (symbolic-linear)
        bounds_no_grad = compute_bounds(model, ball, spec, domain)
    for pts in (random_points(ball, 64, seed).view(2, 64, *shape), pgd_points(model, ball, spec)):
        with torch.no_grad():
            out = model(pts.flatten(0, 1)).view(2, pts.shape[1], -1)
            if spec is not None:
                out = torch.einsum("bsk,bpk->bps", spec, out)
        assert_inside(lower, upper, out, f"{domain} {arch} {norm}")
        assert_inside(*bounds_no_grad, out, f"{domain} {arch} {norm} without gradients")


# ---- exact ranges on tiny networks: one LP per ReLU activation pattern (L-inf box input) ----


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 10_000), hidden=st.sampled_from([(3,), (4,), (3, 2), (2, 3)]), eps=st.floats(0.05, 0.5))
def test_contains_exact_range_of_tiny_networks(seed: int, hidden: tuple[int, ...], eps: float) -> None:
    """Every domain's bounds contain the exact output range (one LP per activation pattern)."""
    model = tiny_net(seed, hidden)
    ball = Ball(torch.rand(1, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), eps)
    ex_lo, ex_hi = exact_range(model, *(t[0].numpy() for t in ball.box()))
    for domain in ALL_DOMAINS:
        lower, upper = compute_bounds(model, ball, None, domain)
        assert (lower[0].detach().numpy() <= ex_lo + 1e-7).all(), f"{domain}: lower bound above the exact minimum"
        assert (upper[0].detach().numpy() >= ex_hi - 1e-7).all(), f"{domain}: upper bound below the exact maximum"


@pytest.mark.parametrize("domain", ALL_DOMAINS)
@pytest.mark.parametrize("seed", [0, 1])
def test_single_affine_layer_is_exact(domain: str, seed: int) -> None:
    model = tiny_net(seed, (), n_in=3, n_out=4)
    x = torch.rand(2, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 1.2 - 0.1
    ball = Ball(x.clamp(0, 1), 0.2)
    lower, upper = compute_bounds(model, ball, None, domain)
    for b in range(2):
        ex_lo, ex_hi = exact_range(model, *(t[b].numpy() for t in ball.box()))
        np.testing.assert_allclose(lower[b].detach().numpy(), ex_lo, atol=1e-9)
        np.testing.assert_allclose(upper[b].detach().numpy(), ex_hi, atol=1e-9)
    # with a margin specification C the exact range is that of the single affine map C W x + C b
    spec = margin_spec(torch.tensor([0, 3]), 4).double()
    lower, upper = compute_bounds(model, ball, spec, domain)
    cw = torch.einsum("bsk,kn->bsn", spec, model[0].weight.detach())
    cb = torch.einsum("bsk,k->bs", spec, model[0].bias.detach())
    lo, hi = (t.unsqueeze(1) for t in ball.box())
    torch.testing.assert_close(
        lower.detach(), (cw.clamp(min=0) * lo + cw.clamp(max=0) * hi).sum(2) + cb, atol=1e-9, rtol=0
    )
    torch.testing.assert_close(
        upper.detach(), (cw.clamp(min=0) * hi + cw.clamp(max=0) * lo).sum(2) + cb, atol=1e-9, rtol=0
    )


# ---- products of the bounds ----


@pytest.mark.parametrize("domain", ALL_DOMAINS)
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_verified_loss_at_least_clean_ce(domain: str, norm: str) -> None:
    """Eqn. 6: the worst-case logits -lower(z_y - z_j) give a CE no smaller than the clean point's."""
    model, shape = random_net("conv", 3)
    ball = random_ball(shape, 4, 0.05, norm, 3)
    y = torch.tensor([0, 1, 2, 3])
    clean = F.cross_entropy(model(ball.x), y, reduction="none")
    robust = verified_loss(model, ball, y, domain, reduction="none")
    assert (robust >= clean - 1e-9).all()


@pytest.mark.parametrize("domain", ALL_DOMAINS)
def test_bounds_differentiable_in_weights(domain: str) -> None:
    """Finite-difference check of d verified_loss / d w on one weight (float64)."""
    model, shape = random_net("mlp", 5)
    ball = random_ball(shape, 2, 0.1, "linf", 5)
    y = torch.tensor([1, 2])
    w = model[3].weight
    loss = verified_loss(model, ball, y, domain)
    (grad,) = torch.autograd.grad(loss, w)
    h, (i, j) = 1e-6, (2, 1)
    with torch.no_grad():
        w[i, j] += h
        up = verified_loss(model, ball, y, domain)
        w[i, j] -= 2 * h
        down = verified_loss(model, ball, y, domain)
        w[i, j] += h
    fd = float((up - down) / (2 * h))
    assert grad.abs().sum() > 0
    assert abs(float(grad[i, j]) - fd) <= 1e-5 * max(1.0, abs(fd))


@pytest.mark.parametrize("domain", ALL_DOMAINS)
@pytest.mark.parametrize("layer", [nn.GELU(), nn.ELU()])
def test_unsupported_layer_raises_naming_it(domain: str, layer: nn.Module) -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3, 1, 1), layer, nn.Flatten(), nn.LazyLinear(2))
    model(torch.rand(1, 1, 4, 4))
    with pytest.raises(UnsupportedLayerError, match=type(layer).__name__):
        compute_bounds(model, Ball(torch.rand(1, 1, 4, 4), 0.1), None, domain)


def test_conversion_leaves_batchnorm_statistics_alone() -> None:
    """Bounds use BatchNorm's running statistics; converting a model in train mode must not update them."""
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, 1, 1),
        _bn(nn.BatchNorm2d, 3, g),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(48, 4),
        _bn(nn.BatchNorm1d, 4, g),
        nn.ReLU(),
        nn.Linear(4, 2),
    ).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    compute_bounds(model, Ball(torch.rand(2, 1, 4, 4), 0.1), None, "interval")
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_cached_conversion_follows_weights_statistics_and_layer_swaps() -> None:
    """`to_ops` caches per model: updated weights and BatchNorm statistics and replaced layers must show."""
    import gc
    import weakref

    from veritrain.bounds.ops import to_ops

    g = torch.Generator().manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4), _bn(nn.BatchNorm1d, 4, g), nn.ReLU(), nn.Linear(4, 2)).eval()
    ball = Ball(torch.rand(2, 3), 0.1)

    def fresh() -> tuple[torch.Tensor, torch.Tensor]:
        clone = nn.Sequential(*[m for m in model]).eval()  # noqa: F821  (a new container: converted from scratch)
        return compute_bounds(clone, ball, None, "symbolic-linear")

    assert to_ops(model, (3,)) is to_ops(model, (3,))
    compute_bounds(model, ball, None, "symbolic-linear")
    with torch.no_grad():
        model[0].weight.mul_(2.0)
        model[1].running_var.mul_(3.0)
    for got, want in zip(compute_bounds(model, ball, None, "symbolic-linear"), fresh()):
        assert torch.allclose(got, want)
    model[3] = nn.Linear(4, 5)
    lower, _ = compute_bounds(model, ball, None, "interval")
    assert lower.shape == (2, 5)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None  # the cache does not keep models alive


@pytest.mark.parametrize("domain", ALL_DOMAINS)
def test_public_calls_chunk_a_large_batch_with_the_unchunked_results(domain: str, monkeypatch) -> None:
    """compute_bounds, margin_lower, verify, verified_loss and interval_gradient split a batch into chunks
    (`chunk_size`, or sized by CHUNK_MEMORY) with the results of one pass. crown-lirpa takes its unstable set
    over the samples of a pass (auto_LiRPA's policy), so its chunks are compared per sample (chunk_size=1)."""
    import veritrain.bounds.base as base
    from veritrain.bounds import interval_gradient, margin_lower, verify

    net, shape = random_net("conv", 3)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(23, *shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (23,), generator=g)
    ball = Ball(x, torch.rand(23, generator=g, dtype=torch.float64) * 0.1)  # per-sample eps, sliced per chunk
    spec = torch.randn(23, 3, 4, generator=g, dtype=torch.float64)
    whole = 1 if domain == "crown-lirpa" else 23
    ref = compute_bounds(net, ball, spec, domain, chunk_size=whole)
    for size in (5, 23, None):
        for got, want in zip(compute_bounds(net, ball, spec, domain, chunk_size=size), ref):
            assert torch.allclose(got, want, rtol=1e-9, atol=1e-9), (domain, size)
    monkeypatch.setattr(base, "CHUNK_MEMORY", 1)  # the memory-sized default: one sample per chunk
    assert base.chunk_size_for(DOMAINS.get(domain)(), base.to_ops(net, shape), ball) in (1, 23)
    for got, want in zip(compute_bounds(net, ball, spec, domain), ref):
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-9), domain
    low = margin_lower(net, ball, y, domain, chunk_size=whole)
    assert torch.allclose(margin_lower(net, ball, y, domain, chunk_size=4), low, rtol=1e-9, atol=1e-9)
    assert torch.equal(verify(net, ball, y, domain, chunk_size=4), verify(net, ball, y, domain, chunk_size=whole))
    assert torch.allclose(
        verified_loss(net, ball, y, domain, chunk_size=4),
        verified_loss(net, ball, y, domain, chunk_size=whole),
        rtol=1e-9,
        atol=1e-9,
    )
    grad = interval_gradient(net, ball, y, domain, chunk_size=whole)
    assert torch.allclose(interval_gradient(net, ball, y, domain, chunk_size=4), grad, rtol=1e-9, atol=1e-9)
    assert all(p.requires_grad for p in net.parameters())  # the weights are left as they were
    with pytest.raises(ValueError, match="chunk_size"):
        compute_bounds(net, ball, spec, domain, chunk_size=0)
