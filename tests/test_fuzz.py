"""The bound-engine fuzzer (veritrain.bounds.fuzz): no violation beyond float tolerance on random cases of
every domain, and sensitive enough to catch small unsound mutations. The >= 100,000-case run is slow."""

from __future__ import annotations

import math

import pytest
import torch

from veritrain.bounds import DOMAINS, compute_bounds
from veritrain.bounds.fuzz import MUTANTS, TOLERANCE, check_points, fuzz, mutation_check, random_trial, violation


def test_short_fuzz_finds_no_violation():
    report = fuzz(240, seed=0, batch=8)
    assert report.cases >= 240 and report.domains == DOMAINS.names()
    assert not report.errors, report.errors[:3]
    assert not report.failures, report.failures[:3]
    assert report.worst <= TOLERANCE


def test_trials_cover_every_architecture_norm_and_spec():
    trials = [random_trial(s) for s in range(60)]
    assert {t.arch for t in trials} == {"affine", "mlp", "monotone", "narrow", "skip", "conv", "residual"}
    assert {t.norm for t in trials} == {"linf", "l2"}
    assert {t.spec is None for t in trials} == {True, False}
    assert min(float(t.eps.min()) for t in trials) < 1e-3 and max(float(t.eps.max()) for t in trials) > 0.1


def test_a_shrunk_bound_is_a_violation():
    t = random_trial(3)
    values = check_points(t)
    lo, up = compute_bounds(t.net, t.ball, t.spec, "interval")
    assert float(violation(lo, up, values).max()) <= TOLERANCE
    mid = (lo + up) / 2
    assert float(violation(mid, mid, values).max()) > TOLERANCE
    assert math.isinf(float(violation(torch.full_like(lo, math.nan), up, values).max()))


def test_every_mutant_is_killed():
    """Each seeded unsound mutation (5% shrunk bounds or input box, a ReLU's pre-activation lower bound raised by
    5%, its upper relaxation line lowered by 10%) is caught by at least one of 30 trials, for each domain."""
    res = mutation_check(30, domains=["interval", "symbolic-linear", "crown"])
    assert res["killed"] == res["total"] == 3 * 3 + 2 * 2, res["mutants"]
    assert set(res["mutants"]) == set(MUTANTS)


def test_mutants_leave_the_engine_unchanged():
    t = random_trial(5)
    before = compute_bounds(t.net, t.ball, t.spec, "symbolic-linear")
    mutation_check(2, domains=["symbolic-linear", "crown"])
    after = compute_bounds(t.net, t.ball, t.spec, "symbolic-linear")
    assert all(torch.equal(a, b) for a, b in zip(before, after))


@pytest.mark.slow
def test_fuzz_at_scale():
    """>= 100,000 random cases through every domain (about half an hour on one core)."""
    report = fuzz(100_000, seed=1_000_000, batch=32)
    print(report.as_dict())
    assert report.cases >= 100_000
    assert not report.errors and not report.failures, (report.errors[:3], report.failures[:3])
    res = mutation_check(100)
    assert res["killed"] == res["total"], res["mutants"]
