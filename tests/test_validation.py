"""Every public entry point refuses invalid inputs with a one-line ValueError (issue 17): property tests
draw invalid eps, pixels and labels and assert the error, never a number."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from veritrain.attacks import ATTACKS, make_attack
from veritrain.bounds import DOMAINS, Ball, compute_bounds, verified_loss, verify
from veritrain.evaluation.accuracy import accuracy
from veritrain.evaluation.evaluate import evaluate_tensors

PROPS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

BAD_EPS = st.one_of(
    st.floats(max_value=-1e-12, allow_nan=False, allow_infinity=True),  # negative, -inf
    st.just(math.nan),
    st.just(math.inf),
)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).eval()


def _data(b: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(b, 1, 2, 2, generator=g), torch.randint(0, 3, (b,), generator=g)


def _one_line(e: pytest.ExceptionInfo) -> None:
    assert "\n" not in str(e.value) and str(e.value)


# ----------------------------------------------------------------------------- Ball


@PROPS
@given(eps=BAD_EPS)
def test_ball_refuses_bad_eps(eps: float) -> None:
    x, _ = _data()
    with pytest.raises(ValueError, match="eps") as e:
        Ball(x, eps)
    _one_line(e)
    with pytest.raises(ValueError, match="eps"):
        Ball(x, torch.full((5,), eps, dtype=torch.float64))


@PROPS
@given(bad=st.sampled_from([math.nan, math.inf, -math.inf]), where=st.integers(0, 19))
def test_ball_refuses_non_finite_pixels(bad: float, where: int) -> None:
    x, _ = _data()
    x.view(-1)[where] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        Ball(x, 0.1)


@PROPS
@given(value=st.one_of(st.floats(-10, -1e-6), st.floats(1 + 1e-6, 10)), where=st.integers(0, 19))
def test_ball_refuses_pixels_outside_the_domain(value: float, where: int) -> None:
    x, _ = _data()
    x.view(-1)[where] = value
    with pytest.raises(ValueError, match="input domain"):
        Ball(x, 0.1)


def test_ball_refuses_wrong_types_and_shapes() -> None:
    x, _ = _data()
    for bad in (
        lambda: Ball((x * 255).long(), 1.0),
        lambda: Ball(x[0, 0, 0], 0.1),
        lambda: Ball(x, torch.full((4,), 0.1)),
        lambda: Ball(x, "0.1"),
        lambda: Ball(x, True),
        lambda: Ball(x.tolist(), 0.1),
        lambda: Ball(x, 0.1, lo=1.0, hi=0.0),
    ):
        with pytest.raises(ValueError):
            bad()


def test_valid_balls_still_pass() -> None:
    x, _ = _data()
    Ball(x, 0.0)
    Ball(x, torch.tensor(0.2))
    Ball(x, torch.linspace(0, 0.3, 5), "l2")
    Ball(x.double(), 3)
    Ball(x[:0], 0.1)


# ----------------------------------------------------------------------------- labels in the bound API


def _bad_labels(y: torch.Tensor) -> list[torch.Tensor]:
    return [y.float(), torch.nn.functional.one_hot(y, 3), y[:-1], y.view(-1, 1), y + 3, y - 3, y.bool()]


@pytest.mark.parametrize("domain", DOMAINS.names())
def test_verify_and_loss_refuse_bad_labels(domain: str) -> None:
    net, (x, y) = _net(), _data()
    ball = Ball(x, 0.05)
    for bad in _bad_labels(y):
        with pytest.raises(ValueError, match="y") as e:
            verify(net, ball, bad, domain)
        _one_line(e)
        with pytest.raises(ValueError, match="y"):
            verified_loss(net, ball, bad, domain)


def test_compute_bounds_refuses_bad_specs_and_balls() -> None:
    net, (x, _) = _net(), _data()
    ball = Ball(x, 0.05)
    for spec in (
        torch.ones(5, 2, 4),
        torch.ones(4, 2, 3),
        torch.ones(5, 3),
        torch.ones(5, 2, 3, dtype=torch.long),
        torch.full((5, 2, 3), math.nan),
    ):
        with pytest.raises(ValueError, match="spec"):
            compute_bounds(net, ball, spec, "interval")
    with pytest.raises(ValueError, match="Ball"):
        compute_bounds(net, x, None, "interval")


def test_the_false_proof_of_the_issue_is_refused() -> None:
    """issue 17: verify(model, Ball(x, eps=-0.05), wrong labels) proved 200 of 200 wrong labels."""
    net, (x, y) = _net(), _data()
    with pytest.raises(ValueError, match="eps must be >= 0"):
        verify(net, Ball(x, -0.05), (y + 1) % 3, "crown")


# ----------------------------------------------------------------------------- attacks


@pytest.mark.parametrize("name", ATTACKS.names())
@settings(max_examples=6, deadline=None)
@given(eps=BAD_EPS)
def test_attacks_refuse_bad_eps(name: str, eps: float) -> None:
    with pytest.raises(ValueError, match="eps"):
        make_attack(name, eps)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_attacks_refuse_bad_inputs(name: str) -> None:
    net, (x, y) = _net(), _data()
    attack = make_attack(name, 0.1 if name not in ("cw-l2", "pointwise") else None)
    nan_x = x.clone()
    nan_x[0, 0, 0, 0] = math.nan
    for bad_x, bad_y in [(nan_x, y), (x * 2, y), (x.long(), y)] + [(x, b) for b in _bad_labels(y)]:
        with pytest.raises(ValueError) as e:
            attack.run(net, bad_x, bad_y)
        _one_line(e)


# ----------------------------------------------------------------------------- evaluation


def test_evaluate_tensors_refuses_bad_inputs() -> None:
    net, (x, y) = _net(), _data()
    cases = [
        dict(eps=-0.1),
        dict(eps=math.nan),
        dict(eps=math.inf),
        dict(batch_size=0),
        dict(chunk_size=0),
        dict(norm="l1"),
        dict(x=x * 3),
        dict(x=x[:0], y=y[:0]),
        dict(x=torch.rand(5, 3, 8, 8)),
    ]
    cases += [dict(y=b) for b in _bad_labels(y)]
    for case in cases:
        kw = dict(x=x, y=y, eps=0.1, attacks="pgd", domains="interval")
        kw.update(case)
        with pytest.raises(ValueError) as e:
            evaluate_tensors(net, kw.pop("x"), kw.pop("y"), kw.pop("eps"), **kw)
        _one_line(e)


def test_percentages_are_exact_counts() -> None:
    """96 of 100 correct is 96.0, not a float32 mean x 100 (95.99999785), for ACC, ERA and VRA alike."""
    from veritrain.evaluation.accuracy import percent

    x = torch.rand(100, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(100, dtype=torch.long)
    y[:4] = 1
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        net[1].weight.zero_()
        net[1].bias.copy_(torch.tensor([1.0, 0.0]))
    assert accuracy(net, x, y) == 96.0
    res = evaluate_tensors(net, x, y, 0.05, "pgd", "interval")
    assert res["acc"] == res["era"]["pgd"] == res["vra"]["interval"] == 96.0
    assert percent(torch.arange(3) < 1) == 100.0 / 3
