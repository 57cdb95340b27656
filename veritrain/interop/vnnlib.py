"""VNN-LIB properties out and in, and veritrain as a VNN-COMP-style verifier.

A VNN-LIB property states what a *counterexample* satisfies: inputs X_i in a box and an output
condition (a disjunction of conjunctions of linear constraints on the Y_j). `sat` means such a point
exists (we give it), `unsat` means none does (the network is safe). The local-robustness property of
sample x with label y (`robustness_property`) is: X in B_eps(x) ∩ [0, 1] and some Y_j >= Y_y, j != y.

`solve` answers an instance the VNN-COMP way: first an attack (PGD on each disjunct over its box; a
point counts only after onnxruntime re-checks it on the ONNX file itself, constraints non-strict as
written and strict ones strictly), then sound bounds from cheap to tight domains (a disjunct is
impossible when the lower bound of some a·Y - b exceeds `PROOF_TOL`; `unsat` needs every disjunct
impossible), else `unknown` or `timeout`. Bounds run in float64 on the ONNX weights. A parse error or
an unsupported construct raises `InteropError`: it is never turned into a verdict.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from veritrain.bounds import Ball, compute_bounds
from veritrain.interop import InteropError
from veritrain.validation import LINF

#: bound domains tried after the attack, cheap to tight
DEFAULT_DOMAINS = ("interval", "crown-ibp", "symbolic-linear", "crown")
#: a disjunct is proved impossible when min(a·Y) - b exceeds this (float32 execution of the ONNX
#: model may differ from the float64 bounds by about 1e-6 on logits of size 10)
PROOF_TOL = 1e-5
RESULTS = ("sat", "unsat", "unknown", "timeout")
MAX_DISJUNCTS = 10_000


# ------------------------------------------------------------------------------------------ writing


def _num(v: float) -> str:
    """A float in VNN-LIB: its shortest round-trip decimal (exact for the float32 values we write)."""
    return repr(float(v))


def robustness_property(
    x: Tensor, y: int, eps: float, num_classes: int, comment: str = "", targets: Sequence[int] | None = None
) -> str:
    """The VNN-LIB text of local robustness at x (C, H, W) with label y: X in B_eps(x) ∩ [0, 1] (the box
    of `Ball.box()`, so exactly the set veritrain bounds) and some Y_j >= Y_y. unsat = robust.
    `targets` restricts j to those classes (one query per class, as complete verifiers often prefer)."""
    targets = [j for j in range(num_classes) if j != y] if targets is None else list(targets)
    lo, hi = (bound.flatten().tolist() for bound in Ball(x.unsqueeze(0).float(), eps).box())
    lines = [
        f"; {comment}" if comment else "; local robustness",
        f"; L-inf ball of radius {eps} around a sample of label {y}, intersected with [0, 1];",
        "; sat: some other class reaches the label's logit (a counterexample); unsat: robust",
        "",
    ]
    lines += [f"(declare-const X_{i} Real)" for i in range(len(lo))]
    lines += [""] + [f"(declare-const Y_{j} Real)" for j in range(num_classes)] + ["", "; input box"]
    for i, (a, b) in enumerate(zip(lo, hi)):
        lines += [f"(assert (<= X_{i} {_num(b)}))", f"(assert (>= X_{i} {_num(a)}))"]
    lines += ["", "; output: some class j != y with Y_j >= Y_y", "(assert (or"]
    lines += [f"    (and (>= Y_{j} Y_{y}))" for j in targets]
    lines += ["))", ""]
    return "\n".join(lines)


def write_benchmark(
    model: nn.Module,
    in_shape: Sequence[int],
    x: Tensor,
    y: Tensor,
    eps: float,
    onnx_path: str | Path,
    vnnlib_dir: str | Path,
    instances: str | Path | None = None,
    timeout: float = 60.0,
    indices: Sequence[int] | None = None,
    num_classes: int | None = None,
) -> Path:
    """The model as ONNX, one robustness property per sample (`prop_{index}_label{y}_eps{eps}.vnnlib`)
    and an `instances.csv` (onnx,vnnlib,timeout per line, paths relative to the CSV, as VNN-COMP
    benchmarks have; default `vnnlib_dir/../instances.csv`). Returns the CSV's path."""
    from veritrain.interop.onnx_export import export_onnx

    onnx_path = export_onnx(model, in_shape, onnx_path)
    vnnlib_dir = Path(vnnlib_dir)
    vnnlib_dir.mkdir(parents=True, exist_ok=True)
    csv_path = Path(instances) if instances else vnnlib_dir.parent / "instances.csv"
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    if num_classes is None:
        with torch.no_grad():
            num_classes = int(model.eval()(x[:1].float()).shape[1])
    indices = list(indices) if indices is not None else list(range(len(x)))
    rows = []
    for k, (xi, yi) in enumerate(zip(x, y)):
        name = vnnlib_dir / f"prop_{indices[k]}_label{int(yi)}_eps{eps:g}.vnnlib"
        name.write_text(
            robustness_property(xi, int(yi), eps, num_classes, f"test sample {indices[k]}, exported by veritrain"),
            encoding="utf-8",
        )
        rows.append([_rel(onnx_path, csv_path.parent), _rel(name, csv_path.parent), f"{timeout:g}"])
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return csv_path


def _rel(path: Path, base: Path) -> str:
    import os

    return os.path.relpath(Path(path).resolve(), Path(base).resolve())


# ------------------------------------------------------------------------------------------ parsing

_TOKEN = re.compile(r"\(|\)|[^\s()]+")
_VAR = re.compile(r"^([XY])_(\d+)$")


@dataclass
class Disjunct:
    """One way of satisfying the property: X in [lower, upper] (plus `in_a @ X <= in_b`, strict where
    `in_strict`, every input atom as written) and `out_a @ Y <= out_b` (strict where `out_strict`)."""

    lower: np.ndarray
    upper: np.ndarray
    out_a: np.ndarray
    out_b: np.ndarray
    out_strict: np.ndarray
    in_a: np.ndarray
    in_b: np.ndarray
    in_strict: np.ndarray

    def holds(self, x: np.ndarray, y: np.ndarray) -> bool:
        """Whether the (flat) point x with outputs y satisfies every constraint, exactly as written."""
        ok_in = _rows_hold(self.in_a, self.in_b, self.in_strict, x)
        return ok_in and _rows_hold(self.out_a, self.out_b, self.out_strict, y)


def _rows_hold(a: np.ndarray, b: np.ndarray, strict: np.ndarray, v: np.ndarray) -> bool:
    if len(a) == 0:
        return True
    lhs = a @ np.asarray(v, dtype=np.float64)
    return bool(np.all(np.where(strict, lhs < b, lhs <= b)))


@dataclass
class Property:
    """A parsed VNN-LIB property: the point is a counterexample when some disjunct holds."""

    n_inputs: int
    n_outputs: int
    disjuncts: list[Disjunct] = field(default_factory=list)

    def holds(self, x: np.ndarray, y: np.ndarray) -> bool:
        return any(d.holds(x, y) for d in self.disjuncts)


def _sexprs(text: str) -> list[Any]:
    text = re.sub(r";[^\n]*", " ", text)
    stack: list[list[Any]] = [[]]
    for tok in _TOKEN.findall(text):
        if tok == "(":
            stack.append([])
        elif tok == ")":
            if len(stack) == 1:
                raise InteropError("VNN-LIB parse error: unbalanced ')'")
            done = stack.pop()
            stack[-1].append(done)
        else:
            stack[-1].append(tok)
    if len(stack) != 1:
        raise InteropError("VNN-LIB parse error: unbalanced '(' (the file ends inside an expression)")
    return stack[0]


class _Parser:
    def __init__(self) -> None:
        self.declared: dict[str, tuple[str, int]] = {}

    def term(self, t: Any) -> tuple[dict[tuple[str, int], float], float]:
        """A linear term as ({variable: coefficient}, constant)."""
        if isinstance(t, str):
            if t in self.declared:
                return {self.declared[t]: 1.0}, 0.0
            if _VAR.match(t):
                raise InteropError(f"VNN-LIB: variable {t} is used but not declared")
            try:
                return {}, float(t)
            except ValueError:
                raise InteropError(f"VNN-LIB: unknown symbol {t!r}") from None
        if not t or not isinstance(t[0], str):
            raise InteropError(f"VNN-LIB: malformed term {_show(t)}")
        op, args = t[0], [self.term(a) for a in t[1:]]
        if op == "+" and args:
            return _lin_sum(args, [1.0] * len(args))
        if op == "-" and len(args) == 1:
            return _lin_sum(args, [-1.0])
        if op == "-" and len(args) >= 2:
            return _lin_sum(args, [1.0] + [-1.0] * (len(args) - 1))
        if op == "*" and len(args) >= 2:
            coeff, var_terms = 1.0, [a for a in args if a[0]]
            if len(var_terms) > 1:
                raise InteropError(f"VNN-LIB: nonlinear product {_show(t)} is not supported")
            for v, c in args:
                if not v:
                    coeff *= c
            if not var_terms:
                return {}, coeff
            v, c = var_terms[0]
            return {k: coeff * w for k, w in v.items()}, coeff * c
        raise InteropError(f"VNN-LIB: unsupported term {_show(t)}")

    def formula(self, f: Any) -> list[list[tuple[dict[tuple[str, int], float], float, bool]]]:
        """The formula in disjunctive normal form: a list of conjunctions of atoms (coeffs, const, strict),
        each atom meaning sum(coeffs · vars) + const <= 0 (< 0 when strict)."""
        if not isinstance(f, list) or not f or not isinstance(f[0], str):
            raise InteropError(f"VNN-LIB: malformed formula {_show(f)}")
        op = f[0]
        if op in ("and", "or"):
            parts = [self.formula(g) for g in f[1:]]
            if not parts:
                raise InteropError(f"VNN-LIB: empty ({op})")
            if op == "or":
                return [c for p in parts for c in p]
            size = math.prod(len(p) for p in parts)
            if size > MAX_DISJUNCTS:
                raise InteropError(f"VNN-LIB: the property expands to {size} disjuncts (at most {MAX_DISJUNCTS})")
            return [[a for c in combo for a in c] for combo in itertools.product(*parts)]
        if op in ("<=", ">=", "<", ">", "="):
            if len(f) != 3:
                raise InteropError(f"VNN-LIB: ({op} ...) takes two terms: {_show(f)}")
            (va, ca), (vb, cb) = self.term(f[1]), self.term(f[2])
            less = _lin_sum([(va, ca), (vb, cb)], [1.0, -1.0])  # a - b
            more = _lin_sum([(va, ca), (vb, cb)], [-1.0, 1.0])  # b - a
            if op == "=":
                return [[(*less, False), (*more, False)]]
            atom = less if op in ("<=", "<") else more
            return [[(*atom, op in ("<", ">"))]]
        raise InteropError(f"VNN-LIB: unsupported operator {op!r} in {_show(f)}")


def _lin_sum(terms: list[tuple[dict, float]], signs: list[float]) -> tuple[dict, float]:
    out: dict[tuple[str, int], float] = {}
    const = 0.0
    for (v, c), s in zip(terms, signs):
        for k, w in v.items():
            out[k] = out.get(k, 0.0) + s * w
        const += s * c
    return {k: w for k, w in out.items() if w != 0.0}, const


def _show(t: Any, limit: int = 60) -> str:
    text = t if isinstance(t, str) else "(" + " ".join(_show(a, limit) for a in t) + ")"
    return text if len(text) <= limit else text[:limit] + "..."


def read_text(path: str | Path) -> str:
    """A file's text; `.gz` files (as recent VNN-COMP benchmarks ship them) are decompressed."""
    path = Path(path)
    if not path.is_file():
        raise InteropError(f"file {path} does not exist")
    data = path.read_bytes()
    return (gzip.decompress(data) if path.suffix == ".gz" else data).decode("utf-8")


def parse_vnnlib(path: str | Path) -> Property:
    """Parse a .vnnlib (or .vnnlib.gz) file; see `parse_vnnlib_text`."""
    text = read_text(path)
    try:
        return parse_vnnlib_text(text)
    except InteropError as e:
        raise InteropError(f"{path}: {e}") from None


def parse_vnnlib_text(text: str) -> Property:
    """Parse VNN-LIB text into a Property; InteropError on anything malformed or unsupported (nonlinear
    terms, constraints mixing inputs and outputs, an input without bounds, unknown commands)."""
    p = _Parser()
    conj: list[list[list[tuple[dict, float, bool]]]] = []
    for form in _sexprs(text):
        if not isinstance(form, list) or not form:
            raise InteropError(f"VNN-LIB: unexpected {_show(form)} at the top level")
        head = form[0]
        if head == "declare-const":
            if len(form) != 3 or form[2] != "Real" or not isinstance(form[1], str):
                raise InteropError(f"VNN-LIB: malformed declaration {_show(form)} (expected (declare-const X_0 Real))")
            m = _VAR.match(form[1])
            if not m:
                raise InteropError(f"VNN-LIB: variable {form[1]!r} is neither X_i nor Y_j")
            p.declared[form[1]] = (m.group(1), int(m.group(2)))
        elif head == "assert":
            if len(form) != 2:
                raise InteropError(f"VNN-LIB: malformed assertion {_show(form)}")
            conj.append(p.formula(form[1]))
        else:
            raise InteropError(f"VNN-LIB: unsupported command {head!r}")
    n_in, n_out = (sum(1 for k, _ in p.declared.values() if k == kind) for kind in ("X", "Y"))
    for kind, n in (("X", n_in), ("Y", n_out)):
        idx = sorted(i for k, i in p.declared.values() if k == kind)
        if idx != list(range(n)):
            raise InteropError(f"VNN-LIB: the {kind} variables must be {kind}_0 ... {kind}_{n - 1}, without gaps")
    if not n_in or not n_out:
        raise InteropError("VNN-LIB: the property declares no input (X_i) or no output (Y_j) variables")
    size = math.prod(len(c) for c in conj) if conj else 1
    if size > MAX_DISJUNCTS:
        raise InteropError(f"VNN-LIB: the property expands to {size} disjuncts (at most {MAX_DISJUNCTS})")
    prop = Property(n_in, n_out)
    for combo in itertools.product(*conj):
        d = _disjunct([a for c in combo for a in c], n_in, n_out)
        if d is not None:
            prop.disjuncts.append(d)
    return prop


def _disjunct(atoms: list[tuple[dict, float, bool]], n_in: int, n_out: int) -> Disjunct | None:
    """A conjunction of atoms as a Disjunct; None when a constant atom is false (it can never hold)."""
    lower, upper = np.full(n_in, -np.inf), np.full(n_in, np.inf)
    ins: list[tuple[np.ndarray, float, bool]] = []
    outs: list[tuple[np.ndarray, float, bool]] = []
    for coeffs, const, strict in atoms:
        kinds = {k for k, _ in coeffs}
        if not kinds:
            if const > 0 or (strict and const == 0):
                return None
            continue
        if kinds == {"X", "Y"}:
            raise InteropError("VNN-LIB: a constraint mixing inputs and outputs is not supported")
        kind = kinds.pop()
        row = np.zeros(n_in if kind == "X" else n_out)
        for (_, i), w in coeffs.items():
            row[i] = w
        (ins if kind == "X" else outs).append((row, -const, strict))
        if kind == "X" and len(coeffs) == 1:
            (((_, i), w),) = coeffs.items()
            bound = -const / w
            if w > 0:
                upper[i] = min(upper[i], bound)
            else:
                lower[i] = max(lower[i], bound)
    missing = np.flatnonzero(~np.isfinite(lower) | ~np.isfinite(upper))
    if len(missing):
        raise InteropError(f"VNN-LIB: input X_{missing[0]} has no lower or upper bound (in some disjunct)")
    if not outs:
        raise InteropError("VNN-LIB: a disjunct constrains no output; such properties are not supported")

    def stack(rows: list[tuple[np.ndarray, float, bool]], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not rows:
            return np.zeros((0, n)), np.zeros(0), np.zeros(0, dtype=bool)
        return (
            np.stack([r[0] for r in rows]),
            np.array([r[1] for r in rows]),
            np.array([r[2] for r in rows], dtype=bool),
        )

    return Disjunct(lower, upper, *stack(outs, n_out), *stack(ins, n_in))


# ------------------------------------------------------------------------------------------ solving


@dataclass
class Verdict:
    """The answer to one instance; `x`/`y` are the re-checked counterexample of a `sat`."""

    result: str
    time_s: float
    detail: str = ""
    x: np.ndarray | None = None
    y: np.ndarray | None = None

    def text(self) -> str:
        """The VNN-COMP result file: the verdict, and for sat the assignment ((X_0 v) ... (Y_0 v) ...)."""
        if self.result != "sat" or self.x is None or self.y is None:
            return self.result + "\n"
        pairs = [f"(X_{i} {_num(v)})" for i, v in enumerate(self.x)] + [
            f"(Y_{j} {_num(v)})" for j, v in enumerate(self.y)
        ]
        return "sat\n(" + "\n ".join(pairs) + ")\n"


def _float32_box(d: Disjunct) -> tuple[np.ndarray, np.ndarray] | None:
    """The float32 points inside [lower, upper] (rounded inwards); None when a side holds none."""
    lo = d.lower.astype(np.float32)
    lo = np.where(lo.astype(np.float64) < d.lower, np.nextafter(lo, np.float32(np.inf)), lo)
    hi = d.upper.astype(np.float32)
    hi = np.where(hi.astype(np.float64) > d.upper, np.nextafter(hi, np.float32(-np.inf)), hi)
    return None if np.any(lo > hi) else (lo, hi)


class Instance:
    """An ONNX network and a property: the model for attacks (float32) and bounds (float64), and the
    onnxruntime session every counterexample is re-checked with."""

    def __init__(self, onnx_path: str | Path, prop: Property) -> None:
        from veritrain.interop.onnx_export import onnx_session
        from veritrain.interop.onnx_import import load_onnx

        self.model, self.in_shape = load_onnx(onnx_path)
        self.model64 = load_onnx(onnx_path, torch.float64)[0]
        self.session = onnx_session(onnx_path)
        self.prop = prop
        self.enlarged = False  # some box was bounded through an enclosing ball (see box_ball)
        n_in = math.prod(self.in_shape)
        if n_in != prop.n_inputs:
            raise InteropError(f"the property has {prop.n_inputs} inputs, the ONNX network {n_in}")
        with torch.no_grad():
            k = self.model(torch.zeros(1, *self.in_shape)).shape[1]
        if k != prop.n_outputs:
            raise InteropError(f"the property has {prop.n_outputs} outputs, the ONNX network {k}")

    def recheck(self, x: np.ndarray) -> np.ndarray | None:
        """The ONNX outputs at the float32 point x when some disjunct holds there exactly, else None."""
        from veritrain.interop.onnx_export import run_onnx

        x = np.asarray(x, dtype=np.float32).reshape(-1)
        y = run_onnx(self.session, x[None])[0].astype(np.float64)
        inside = any(np.all(x >= d.lower) and np.all(x <= d.upper) and d.holds(x, y) for d in self.prop.disjuncts)
        return y if inside else None

    def attack(
        self, deadline: float, steps: int = 100, restarts: int = 8, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """PGD on every disjunct over its float32 box: minimise max_rows(a·Y - b); a re-checked point or None."""
        boxes = [(d, box) for d in self.prop.disjuncts if (box := _float32_box(d)) is not None]
        if not boxes:
            return None
        gen = torch.Generator().manual_seed(seed)
        lo = torch.from_numpy(np.stack([b[0] for _, b in boxes])).repeat(restarts, 1)
        hi = torch.from_numpy(np.stack([b[1] for _, b in boxes])).repeat(restarts, 1)
        s = max(len(d.out_b) for d, _ in boxes)
        a = (
            torch.from_numpy(
                np.stack([np.pad(d.out_a, ((0, s - len(d.out_b)), (0, 0)), mode="edge") for d, _ in boxes])
            )
            .float()
            .repeat(restarts, 1, 1)
        )
        b = (
            torch.from_numpy(np.stack([np.pad(d.out_b, (0, s - len(d.out_b)), mode="edge") for d, _ in boxes]))
            .float()
            .repeat(restarts, 1)
        )
        width = hi - lo
        x = lo + width * torch.rand(lo.shape, generator=gen)
        x[: len(boxes)] = (lo[: len(boxes)] + hi[: len(boxes)]) / 2  # the first restart starts at the centres
        shape = (-1, *self.in_shape)
        for t in range(steps + 1):
            x = x.detach().requires_grad_(True)
            with torch.enable_grad():
                out = self.model(x.reshape(shape))
                viol = (torch.einsum("nsk,nk->ns", a, out) - b).amax(1)
                (grad,) = torch.autograd.grad(viol.sum(), x)
            if t % 10 == 0 or t == steps:
                for i in torch.argsort(viol.detach())[:4].tolist():
                    if viol[i] <= 0:
                        y = self.recheck(x[i].detach().numpy())
                        if y is not None:
                            return x[i].detach().numpy().astype(np.float32), y
                if time.perf_counter() > deadline:
                    return None
            step = width * (0.25 * (1 - t / steps) + 0.005)
            x = torch.minimum(torch.maximum(x.detach() - step * grad.sign(), lo), hi)
        return None

    def prove(self, domain: str, pending: list[int]) -> list[int]:
        """The disjuncts of `pending` (indices) that bounds from `domain` cannot rule out. Disjuncts with
        the same input box share one bound computation (a robustness property has one box)."""
        groups: dict[bytes, list[int]] = {}
        for i in pending:
            d = self.prop.disjuncts[i]
            if not np.any(d.lower > d.upper):  # an empty box holds no counterexample
                groups.setdefault(d.lower.tobytes() + d.upper.tobytes(), []).append(i)
        left: list[int] = []
        for idx in groups.values():
            ds = [self.prop.disjuncts[i] for i in idx]
            shape = (1, *self.in_shape)
            ball, exact = box_ball(
                torch.from_numpy(ds[0].lower).reshape(shape), torch.from_numpy(ds[0].upper).reshape(shape)
            )
            self.enlarged |= not exact
            spec = torch.from_numpy(np.concatenate([d.out_a for d in ds]))[None]
            b = np.concatenate([d.out_b for d in ds])
            owner = np.repeat(np.arange(len(ds)), [len(d.out_b) for d in ds])
            lower, _ = compute_bounds(self.model64, ball, spec=spec, domain=domain)
            impossible = lower[0].detach().numpy() - b > PROOF_TOL
            left += [i for k, i in enumerate(idx) if not impossible[owner == k].any()]
        return left


def box_ball(lower: Tensor, upper: Tensor) -> tuple[Ball, bool]:
    """(a Ball whose `box()` contains the box [lower, upper] (1, *shape), whether it equals it).

    A box is an L-inf ball ∩ [lo, hi] (lo, hi: its smallest lower and largest upper end) when every
    side is 2·eps wide (up to 1e-6 relative: float32 rounding) or touches lo or hi, as
    `robustness_property` boxes do: then the ball is exact up to that rounding. Other boxes get the smallest enclosing ball: still sound,
    looser. Containment is checked, never assumed."""
    lo, hi = float(lower.min()), float(upper.max())
    half = (upper - lower) / 2
    eps = float(half.max())
    full = half >= eps * (1 - 1e-6)  # float32 boxes written from x -+ eps differ in width by rounding
    at_lo, at_hi = lower <= lo, upper >= hi
    centre = (lower + upper) / 2
    x = torch.where(full, centre, torch.where(at_lo, upper - eps, torch.where(at_hi, lower + eps, centre)))
    ball = Ball(x.clamp(lo, hi), eps * (1 + 1e-9) + 1e-12, LINF, lo, hi)
    got_lo, got_hi = ball.box()
    if not (bool((got_lo <= lower).all()) and bool((got_hi >= upper).all())):
        raise RuntimeError("box_ball: the ball does not contain the box (a bug; no bound was computed)")
    exact = (
        bool((full | at_lo | at_hi).all())
        and float((lower - got_lo).abs().max()) < 1e-6
        and float((got_hi - upper).abs().max()) < 1e-6
    )
    return ball, exact


def solve(
    onnx_path: str | Path,
    vnnlib_path: str | Path,
    timeout: float = 60.0,
    domains: Sequence[str] = DEFAULT_DOMAINS,
    attack_steps: int = 100,
    restarts: int = 8,
    seed: int = 0,
    instance: Instance | None = None,
) -> Verdict:
    """Answer one VNN-COMP instance: attack (sat, re-checked), then bounds (unsat), else unknown/timeout.
    Parsing and loading errors raise InteropError; they are not verdicts."""
    t0 = time.perf_counter()
    deadline = t0 + timeout
    if instance is None:
        instance = Instance(onnx_path, parse_vnnlib(vnnlib_path))
    if not instance.prop.disjuncts:
        return Verdict("unsat", time.perf_counter() - t0, "no disjunct can hold (constant constraints)")
    found = instance.attack(deadline, attack_steps, restarts, seed)
    if found is not None:
        return Verdict("sat", time.perf_counter() - t0, "attack (re-checked with onnxruntime)", *found)
    pending = list(range(len(instance.prop.disjuncts)))
    for domain in domains:
        if time.perf_counter() > deadline:
            return Verdict("timeout", time.perf_counter() - t0, f"after the attack, before {domain}")
        pending = instance.prove(domain, pending)
        if not pending:
            return Verdict("unsat", time.perf_counter() - t0, f"proved by {domain}")
    note = " (input box enlarged to an L-inf ball)" if instance.enlarged else ""
    late = time.perf_counter() > deadline
    return Verdict(
        "timeout" if late else "unknown",
        time.perf_counter() - t0,
        f"{len(pending)} of {len(instance.prop.disjuncts)} disjuncts not refuted by {', '.join(domains)}{note}",
    )


def write_result(verdict: Verdict, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(verdict.text(), encoding="utf-8")


def read_instances(csv_path: str | Path) -> list[tuple[Path, Path, float]]:
    """(onnx, vnnlib, timeout) per line of a VNN-COMP instances.csv; paths relative to the CSV's folder."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise InteropError(f"instances file {csv_path} does not exist")
    out = []
    with open(csv_path, newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.reader(f), 1):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 3:
                raise InteropError(f"{csv_path}:{n}: expected onnx,vnnlib,timeout, got {len(row)} fields")
            try:
                timeout = float(row[2])
            except ValueError:
                raise InteropError(f"{csv_path}:{n}: timeout {row[2]!r} is not a number") from None
            out.append((csv_path.parent / row[0].strip(), csv_path.parent / row[1].strip(), timeout))
    return out


def run_instances(
    csv_path: str | Path,
    out_dir: str | Path | None = None,
    timeout: float | None = None,
    domains: Sequence[str] = DEFAULT_DOMAINS,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Solve every instance of an instances.csv; one row per instance (result "error: ..." for an
    instance that cannot be read, which is never counted as solved). Result files go to out_dir."""
    rows = []
    for k, (onnx_path, vnnlib_path, t_csv) in enumerate(read_instances(csv_path)):
        t = timeout if timeout is not None else t_csv
        t0 = time.perf_counter()
        try:
            v = solve(onnx_path, vnnlib_path, t, domains)
        except InteropError as e:
            rows.append(
                {
                    "onnx": onnx_path.name,
                    "vnnlib": vnnlib_path.name,
                    "result": "error",
                    "time_s": round(time.perf_counter() - t0, 3),
                    "detail": str(e),
                }
            )
            continue
        if out_dir is not None:
            write_result(v, Path(out_dir) / f"{k:04d}_{vnnlib_path.name.split('.')[0]}.txt")
        rows.append(
            {
                "onnx": onnx_path.name,
                "vnnlib": vnnlib_path.name,
                "result": v.result,
                "time_s": round(v.time_s, 3),
                "detail": v.detail,
            }
        )
        if progress:
            print(f"{k + 1}: {vnnlib_path.name}: {v.result} ({v.time_s:.2f} s)", flush=True)
    return rows


def summarise(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Counts per result, solved (sat + unsat) and the mean time per instance."""
    rows = list(rows)
    counts = {r: sum(1 for x in rows if x["result"] == r) for r in (*RESULTS, "error")}
    times = [x["time_s"] for x in rows]
    return {
        "instances": len(rows),
        **counts,
        "solved": counts["sat"] + counts["unsat"],
        "mean_time_s": round(sum(times) / len(times), 3) if times else None,
    }


__all__ = [
    "DEFAULT_DOMAINS",
    "Disjunct",
    "Instance",
    "PROOF_TOL",
    "Property",
    "Verdict",
    "box_ball",
    "parse_vnnlib",
    "parse_vnnlib_text",
    "read_instances",
    "robustness_property",
    "run_instances",
    "solve",
    "summarise",
    "write_benchmark",
    "write_result",
]
