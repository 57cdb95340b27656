"""VNN-LIB: the parser (disjunctions, conjunctions inside disjuncts, errors), the box-as-ball bounds, and
`veritrain vnnlib` answering exported and hand-written instances (every sat re-checked, unsat sound)."""

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnx", reason="needs the extra veritrain[onnx]")
pytest.importorskip("onnxruntime", reason="needs the extra veritrain[onnx]")

from veritrain.bounds import DOMAINS, compute_bounds  # noqa: E402
from veritrain.cli import main  # noqa: E402
from veritrain.interop import InteropError  # noqa: E402
from veritrain.interop.onnx_export import export_onnx, onnx_session, run_onnx  # noqa: E402
from veritrain.interop.vnnlib import (  # noqa: E402
    box_ball,
    parse_vnnlib,
    parse_vnnlib_text,
    read_instances,
    robustness_property,
    run_instances,
    solve,
    summarise,
    write_benchmark,
)

REPO = Path(__file__).resolve().parents[1]
HEADER = "".join(f"(declare-const X_{i} Real)\n" for i in range(2)) + "".join(
    f"(declare-const Y_{j} Real)\n" for j in range(3)
)


def test_parser_disjunctions_and_conjunctions_inside_disjuncts():
    text = (
        HEADER
        + """
; a comment (with parentheses)
(assert (>= X_0 -1.0)) (assert (<= X_0 1)) (assert (and (>= X_1 0.5e0) (<= X_1 (+ 0.25 0.5))))
(assert (or
    (and (>= Y_0 Y_1) (>= Y_0 (- Y_2 1.5)))
    (and (<= (* 2 Y_1) -3))
    (<= (+ Y_2 (* -1 Y_0)) 0)))
"""
    )
    prop = parse_vnnlib_text(text)
    assert (prop.n_inputs, prop.n_outputs, len(prop.disjuncts)) == (2, 3, 3)
    d0, d1, d2 = prop.disjuncts
    assert np.allclose(d0.lower, [-1, 0.5]) and np.allclose(d0.upper, [1, 0.75])
    assert np.allclose(d0.out_a, [[-1, 1, 0], [-1, 0, 1]]) and np.allclose(d0.out_b, [0, 1.5])
    assert np.allclose(d1.out_a, [[0, 2, 0]]) and np.allclose(d1.out_b, [-3])
    assert np.allclose(d2.out_a, [[-1, 0, 1]]) and np.allclose(d2.out_b, [0])
    assert prop.holds(np.array([0, 0.6]), np.array([1.0, 0.5, 2.0]))  # d0: 1 >= 0.5 and 1 >= 0.5
    assert not prop.holds(np.array([0, 0.6]), np.array([1.0, 1.5, 3.0]))
    assert not prop.holds(np.array([2, 0.6]), np.array([1.0, 0.5, 2.0]))  # outside the box


def test_parser_distributes_and_over_or_and_handles_strict_and_equality():
    text = (
        HEADER
        + """(assert (and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1)))
(assert (and (or (> Y_0 Y_1) (> Y_0 Y_2)) (or (= Y_1 0) (< Y_2 1))))"""
    )
    prop = parse_vnnlib_text(text)
    assert len(prop.disjuncts) == 4
    assert prop.disjuncts[0].out_strict.tolist() == [True, False, False]  # Y_0 > Y_1, Y_1 = 0 (two rows)
    assert not prop.holds(np.zeros(2), np.array([1.0, 1.0, 5.0]))  # strict: 1 > 1 fails
    assert prop.holds(np.zeros(2), np.array([1.0, 0.0, 5.0]))


@pytest.mark.parametrize(
    "text, match",
    [
        ("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 1)", "unbalanced"),
        ("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 1)))", "unbalanced"),
        ("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_1 1))", "not declared"),
        (
            "(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 1))(assert (>= X_0 0))"
            "(assert (<= (* Y_0 Y_0) 1))",
            "nonlinear",
        ),
        ("(declare-const X_0 Real)(declare-const Y_0 Real)(check-sat)", "unsupported command"),
        ("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 1))(assert (<= Y_0 0))", "no lower or upper"),
        (
            "(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 1))(assert (>= X_0 0))"
            "(assert (<= Y_0 X_0))",
            "mixing inputs and outputs",
        ),
        (
            "(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 1))(assert (>= X_0 0))"
            "(assert (xor (<= Y_0 0)))",
            "unsupported operator",
        ),
        ("(declare-const X_0 Real)(declare-const Y_0 Int)", "malformed declaration"),
        ("(declare-const X_0 Real)(declare-const X_2 Real)(declare-const Y_0 Real)", "without gaps"),
    ],
)
def test_parse_errors_are_errors(text, match):
    with pytest.raises(InteropError, match=match):
        parse_vnnlib_text(text)


def _tiny(seed: int = 0, n_in: int = 2, k: int = 3) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, k)).eval()


def _grid_outputs(model, lower, upper, steps=151):
    g = [np.linspace(lo, hi, steps) for lo, hi in zip(lower, upper)]
    pts = torch.tensor(np.array(list(itertools.product(*g))), dtype=torch.float32)
    with torch.no_grad():
        return pts.numpy(), model(pts).double().numpy()


@pytest.mark.parametrize("seed", range(3))
def test_hand_written_instances_sat_rechecked_unsat_sound(seed, tmp_path):
    """A 2-input network, properties with several disjuncts and conjunctions; sat points satisfy the property in
    onnxruntime, unsat agrees with a dense grid of the box (no grid point satisfies the property)."""
    model = _tiny(seed)
    onnx_path = export_onnx(model, (2,), tmp_path / "m.onnx")
    rng = np.random.default_rng(seed)
    for t in range(3):
        lo = rng.uniform(-1, 0.5, size=2).tolist()
        hi = (np.array(lo) + rng.uniform(0.05, 0.6, size=2)).tolist()
        c = (rng.normal(size=3) * 0.3).tolist()
        text = (
            HEADER
            + "".join(f"(assert (>= X_{i} {lo[i]!r}))(assert (<= X_{i} {hi[i]!r}))" for i in range(2))
            + f"""(assert (or (and (>= Y_0 Y_1) (>= Y_0 (+ Y_2 {c[0]!r})))
                           (and (>= Y_1 (+ Y_0 {c[1]!r})) (<= Y_2 {c[2]!r}))))"""
        )
        prop_path = tmp_path / f"p{t}.vnnlib"
        prop_path.write_text(text)
        v = solve(onnx_path, prop_path, timeout=120)
        prop = parse_vnnlib(prop_path)
        pts, outs = _grid_outputs(model, lo, hi)
        grid_sat = any(prop.holds(p, o) for p, o in zip(pts, outs))
        if v.result == "sat":
            y = run_onnx(onnx_session(onnx_path), v.x[None])[0]
            assert prop.holds(v.x, y) and np.all(v.x >= lo) and np.all(v.x <= hi)
            assert "sat\n((X_0 " in v.text() and "(Y_2 " in v.text()
        elif v.result == "unsat":
            assert not grid_sat, "unsat although a grid point satisfies the property"
        else:
            assert v.result in ("unknown", "timeout")  # never a verdict without a proof or a re-checked point


@pytest.mark.parametrize("domain", DOMAINS.names())
def test_box_ball_contains_the_box_for_every_domain(domain):
    """Bounds over box_ball(box) contain the outputs at random points of the box: ball-like boxes (exact)
    and arbitrary ones (an enclosing ball, sound)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4)).double().eval()
    x = torch.rand(1, 1, 6, 6, dtype=torch.float64)
    cases = [((x - 0.1).clamp(0, 1), (x + 0.1).clamp(0, 1), True)]
    lo = torch.rand(1, 1, 6, 6, dtype=torch.float64) * 0.5
    cases.append((lo, lo + torch.rand_like(lo) * 0.3, False))
    for lower, upper, exact_expected in cases:
        ball, exact = box_ball(lower, upper)
        assert exact == exact_expected
        lb, ub = compute_bounds(model, ball, domain=domain)
        pts = lower + (upper - lower) * torch.rand(300, 1, 6, 6, dtype=torch.float64)
        pts = torch.cat([pts, lower, upper])
        with torch.no_grad():
            out = model(pts)
        assert (out >= lb - 1e-9).all() and (out <= ub + 1e-9).all()


def _benchmark(tmp_path, n=6, eps=0.03):
    from veritrain.data import load_dataset

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 4, stride=3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 9 * 9, 10)).eval()
    x, y = load_dataset("mnist-mini", "test").tensors
    csv_path = write_benchmark(
        model, (1, 28, 28), x[:n], y[:n], eps, tmp_path / "onnx" / "net.onnx", tmp_path / "vnnlib", timeout=20
    )
    return model, x[:n], y[:n], csv_path


def test_exported_instances_agree_with_verify_and_pgd(tmp_path):
    from veritrain.bounds import Ball, verify
    from veritrain.interop.crosscheck import recheck

    model, x, y, csv_path = _benchmark(tmp_path)
    rows = run_instances(csv_path, tmp_path / "results")
    assert len(rows) == len(x) and all(r["result"] in ("sat", "unsat", "unknown") for r in rows)
    proved = verify(model, Ball(x, 0.03), y, "crown")
    for i, r in enumerate(rows):
        text = sorted((tmp_path / "results").glob(f"{i:04d}_*.txt"))[0].read_text()
        assert text.split("\n")[0] == r["result"]
        if proved[i]:
            assert r["result"] == "unsat"  # the same ball and domains: what verify proves, vnnlib proves
        if r["result"] == "sat":
            cex = np.array([float(line.strip(" ()\n").split()[1]) for line in text.splitlines()[1:785]])
            assert recheck(model, x[i], int(y[i]), 0.03, cex).confirmed
    s = summarise(rows)
    assert s["solved"] == s["sat"] + s["unsat"] and s["instances"] == len(x)


def test_robustness_property_box_is_the_ball_of_verify():
    from veritrain.bounds import Ball

    x = torch.rand(1, 4, 4)
    prop = parse_vnnlib_text(robustness_property(x, 2, 0.1, 5))
    lo, hi = Ball(x.unsqueeze(0), 0.1).box()
    assert len(prop.disjuncts) == 4
    assert np.array_equal(prop.disjuncts[0].lower, lo.flatten().double().numpy())
    assert np.array_equal(prop.disjuncts[0].upper, hi.flatten().double().numpy())
    assert sorted(int(np.flatnonzero(d.out_a[0] == -1)[0]) for d in prop.disjuncts) == [0, 1, 3, 4]


def test_instances_runner_reports_errors_not_verdicts(tmp_path, capsys):
    _, _, _, csv_path = _benchmark(tmp_path, n=2)
    bad = tmp_path / "vnnlib" / "bad.vnnlib"
    bad.write_text("(declare-const X_0 Real)(assert (<= X_0 1)")
    with open(csv_path, "a") as f:
        f.write("onnx/net.onnx,vnnlib/bad.vnnlib,5\n")
    assert len(read_instances(csv_path)) == 3
    rc = main(["vnnlib", "--instances", str(csv_path), "--out", str(tmp_path / "res"), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and '"error": 1' in out and '"instances": 3' in out
    rc = main(
        [
            "vnnlib",
            "--onnx",
            str(tmp_path / "onnx" / "net.onnx"),
            "--vnnlib",
            str(bad),
            "--out",
            str(tmp_path / "r.txt"),
        ]
    )
    assert rc == 2 and not (tmp_path / "r.txt").exists()
    assert "unbalanced" in capsys.readouterr().err


def test_run_instance_sh_writes_a_vnncomp_result(tmp_path):
    _, _, _, csv_path = _benchmark(tmp_path, n=1)
    onnx_path, vnnlib_path, _ = read_instances(csv_path)[0]
    result = tmp_path / "out.txt"
    env = {
        "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
        "PYTHONPATH": ":".join(sys.path),
        "OMP_NUM_THREADS": "1",
    }
    script = REPO / "scripts" / "vnncomp" / "run_instance.sh"
    subprocess.run(
        [
            "bash",
            str(REPO / "scripts" / "vnncomp" / "prepare_instance.sh"),
            "v1",
            "test",
            str(onnx_path),
            str(vnnlib_path),
        ],
        check=True,
        env=env,
    )
    subprocess.run(
        ["bash", str(script), "v1", "test", str(onnx_path), str(vnnlib_path), str(result), "30"], check=True, env=env
    )
    assert result.read_text().split("\n")[0] in ("sat", "unsat", "unknown", "timeout")
