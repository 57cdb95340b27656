"""Fuzzing the bound engine: random (network, input, eps, norm) cases against sampled and attacked points.

Only the public API is used (`compute_bounds`, `DOMAINS`, `Ball`, `margin_spec`), so the check survives
any restructuring of the domains. A *trial* draws one random float64 network built from every supported
layer (Linear, Conv2d, BatchNorm eval, AvgPool2d, Normalize, Flatten, Identity, ReLU, residual sums) and a
batch of inputs, each with its own eps; every input is one *case*, bounded by every domain. The points
checked against the bounds are random points of B_eps(x) ∩ [0, 1] (half on the corners / sphere) and PGD
points that maximise and minimise each bounded output (Eqn. 5: every such value must lie in [lower, upper]).

Cases are drawn where a small unsound change would show (the mutation check below measures it):
tiny eps (ReLUs stable, the symbolic and backward domains exact), inputs on the decision boundary
(margins near zero), biases that put pre-activations near zero (many unstable neurons), monotone networks
(non-negative weights: every domain, interval included, is exact there) and single affine maps.

`mutation_check` seeds small unsound mutations (bounds shrunk by 5 %, the input box shrunk by 5 %, a ReLU's
pre-activation lower bound raised by 5 % of its width, the upper relaxation line lowered by 10 %) and
reports which share of the trials catches each; a mutant is killed when any trial catches it.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from veritrain.bounds.base import DOMAINS, Ball, compute_bounds, margin_spec
from veritrain.models.layers import Normalize, Residual
from veritrain.validation import L2, LINF, NORMS

ARCHS = ("affine", "mlp", "monotone", "narrow", "skip", "conv", "residual")
#: how often each architecture is drawn: the narrow ones (one or two unstable ReLUs whose relaxation decides
#: the bound) most, since a small unsound change in a relaxation shows there and nearly nowhere else
ARCH_WEIGHTS = (1, 2, 1, 3, 3, 2, 2)
#: relative tolerance of a violation (float64 arithmetic): |excess| / max(1, |bounds|)
TOLERANCE = 1e-7


# ----------------------------------------------------------------------------- random cases


def _bn(kind: type[nn.BatchNorm1d] | type[nn.BatchNorm2d], n: int, g: torch.Generator) -> nn.Module:
    bn = kind(n)
    bn.running_mean = torch.randn(n, generator=g, dtype=torch.float64) * 0.3
    bn.running_var = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    with torch.no_grad():
        bn.weight.copy_(torch.randn(n, generator=g))
        bn.bias.copy_(torch.randn(n, generator=g) * 0.3)
    return bn


def _init(net: nn.Module, g: torch.Generator, positive: bool) -> None:
    for m in net.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            assert m.bias is not None  # the fuzz networks' layers all have biases
            fan_in = m.weight[0].numel()
            with torch.no_grad():
                w = torch.randn(m.weight.shape, generator=g, dtype=torch.float64) / math.sqrt(fan_in)
                m.weight.copy_(w.abs() if positive else w)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g, dtype=torch.float64) * 0.1)


def random_network(arch: str, g: torch.Generator) -> tuple[nn.Module, tuple[int, ...]]:
    """A small float64 network of kind `arch` (see ARCHS) and its input shape."""
    r = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=g))  # noqa: E731
    if arch == "affine":
        shape = (1, 2, r(1, 3))
        net: nn.Module = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), r(2, 5)))
    elif arch in ("mlp", "monotone"):
        shape = (1, r(1, 3), r(1, 3))
        sizes = [math.prod(shape)] + [r(2, 8) for _ in range(r(1, 3))] + [r(2, 5)]
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        net = nn.Sequential(*layers)
    elif arch == "narrow":  # 1-2 inputs, hidden layers of 1-2 neurons: relaxations nearly decide the bound
        shape = (1, 1, r(1, 2))
        sizes = [shape[2]] + [r(1, 2) for _ in range(r(1, 2))] + [r(2, 5)]
        layers = [nn.Flatten()]
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        net = nn.Sequential(*layers)
    elif arch == "skip":  # W2 relu(W1 x + b1) + V x: a ReLU next to a linear term of the same input
        shape = (1, 1, r(1, 3))
        n, h, k = shape[2], r(1, 2), r(3, 6)  # many outputs: each weighs the ReLU against x differently
        branch = nn.Sequential(nn.Linear(n, h), nn.ReLU(), nn.Linear(h, k))
        net = nn.Sequential(nn.Flatten(), Residual(branch, nn.Linear(n, k)))
    elif arch == "conv":
        c, s = r(1, 2), 2 * r(2, 3)
        shape = (c, s, s)
        k = r(2, 4)
        net = nn.Sequential(
            Normalize([0.5] * c, [0.3] * c),
            nn.Conv2d(c, k, 3, 1, 1),
            _bn(nn.BatchNorm2d, k, g),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(k, 3, 3, r(1, 2), 1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            n_flat = net.double()(torch.zeros(1, *shape, dtype=torch.float64)).shape[1]
        net.append(nn.Linear(n_flat, r(2, 5)))
    elif arch == "residual":
        shape = (1, r(2, 3), r(2, 3))
        branch = nn.Sequential(nn.Conv2d(2, 2, 3, 1, 1), nn.ReLU(), nn.Conv2d(2, 2, 3, 1, 1))
        n = 2 * shape[1] * shape[2]
        h = r(3, 6)
        net = nn.Sequential(
            nn.Conv2d(1, 2, 3, 1, 1),
            nn.ReLU(),
            Residual(branch),
            nn.ReLU(),
            nn.Identity(),
            nn.Flatten(),
            nn.Linear(n, h),
            _bn(nn.BatchNorm1d, h, g),
            nn.ReLU(),
            nn.Linear(h, r(2, 4)),
        )
    else:
        raise ValueError(f"unknown fuzz architecture {arch!r}; choose one of: {', '.join(ARCHS)}")
    net = net.double().eval()
    _init(net, g, positive=arch == "monotone")
    return net, shape


def _centre_biases(net: nn.Module, x: Tensor) -> None:
    """Shift every bias so that the pre-activations at the first input are near zero: many unstable ReLUs."""
    hooks = []

    def shift(module: nn.Linear | nn.Conv2d, inputs: tuple[Tensor], out: Tensor) -> Tensor:
        assert module.bias is not None
        mean = out[:1].mean(0)
        if isinstance(module, nn.Conv2d):
            mean = mean.mean((1, 2))
            module.bias.sub_(mean)
            return out - mean.view(1, -1, 1, 1)
        module.bias.sub_(mean)  # in place, as `-=` (whose result torch's stubs type as a Tensor, not a Parameter)
        return out - mean

    mods = [m for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][:-1]  # not the logits
    for m in mods:
        hooks.append(m.register_forward_hook(shift))
    try:
        with torch.no_grad():
            net(x[:1])
    finally:
        for h in hooks:
            h.remove()


def _boundary_points(net: nn.Module, x: Tensor, g: torch.Generator) -> Tensor:
    """Move inputs onto the decision boundary between two classes (margins near zero), by bisection
    along the segment to another input of a different predicted class (where there is one)."""
    with torch.no_grad():
        pred = net(x).argmax(1)
        other = torch.randperm(len(x), generator=g)
        a, b = x, x[other]
        differ = pred != pred[other]
        lo, hi = torch.zeros(len(x), dtype=x.dtype), torch.ones(len(x), dtype=x.dtype)
        for _ in range(30):
            mid = (lo + hi) / 2
            p = net(a + mid.view(-1, *[1] * (x.dim() - 1)) * (b - a)).argmax(1)
            same = p == pred
            lo, hi = torch.where(same, mid, lo), torch.where(same, hi, mid)
        out = a + lo.view(-1, *[1] * (x.dim() - 1)) * (b - a)
    return torch.where(differ.view(-1, *[1] * (x.dim() - 1)), out, x).clamp(0, 1)


@dataclass
class Trial:
    """One random network and a batch of cases: inputs x (B, *shape), per-sample eps (B,), a norm, a spec."""

    net: nn.Module
    x: Tensor
    eps: Tensor
    norm: str
    spec: Tensor | None
    arch: str

    @property
    def ball(self) -> Ball:
        return Ball(self.x, self.eps, self.norm)


def random_trial(seed: int, batch: int = 8) -> Trial:
    """The trial of `seed`: architecture, eps regime (tiny, small, moderate; per sample), inputs (uniform, on
    the border of [0, 1], on the decision boundary, or clustered where biases centre the ReLUs: unstable),
    norm and specification (none or margins). The narrow and skip networks always get clustered inputs and
    centred biases, so their one or two ReLUs are unstable and the relaxation decides the bound."""
    g = torch.Generator().manual_seed(seed)
    pick = lambda n: int(torch.randint(n, (1,), generator=g))  # noqa: E731
    arch = ARCHS[int(torch.multinomial(torch.tensor(ARCH_WEIGHTS, dtype=torch.float), 1, generator=g))]
    net, shape = random_network(arch, g)
    norm = NORMS[pick(len(NORMS))]
    lo, hi = [(1e-4, 1e-3), (1e-3, 3e-2), (3e-2, 0.3)][pick(3)]
    eps = torch.exp(torch.empty(batch, dtype=torch.float64).uniform_(math.log(lo), math.log(hi), generator=g))
    probe = arch in ("narrow", "skip")
    x = torch.rand(batch, *shape, generator=g, dtype=torch.float64)
    if probe or pick(2):  # clustered within the smallest eps: centring the biases there (below) reaches all
        x = (x[:1] + lo * (x - 0.5)).clamp(0, 1)
    border = torch.rand(x.shape, generator=g, dtype=torch.float64) < 0.1
    x = torch.where(border, x.round(), x)
    if probe or (arch != "monotone" and pick(2)):
        _centre_biases(net, x)
    if not probe and pick(2):
        x = _boundary_points(net, x, g)
    if norm == L2:
        eps = eps * 3
    spec = None
    if pick(2):
        with torch.no_grad():
            k = net(x).shape[1]
        y = torch.randint(k, (batch,), generator=g)
        spec = margin_spec(y, k).double()
    return Trial(net, x, eps, norm, spec, arch)


# ----------------------------------------------------------------------------- points of the set


def _project(x: Tensor, centre: Tensor, eps: Tensor, norm: str) -> Tensor:
    e = eps.view(-1, *[1] * (x.dim() - 1))
    d = x - centre
    if norm == LINF:
        d = torch.maximum(torch.minimum(d, e), -e)
    else:
        n = d.flatten(1).norm(dim=1).clamp(min=1e-30).view_as(e)
        d = d * (e / n).clamp(max=1.0)
    return (centre + d).clamp(0.0, 1.0)


def _outputs(trial: Trial, pts: Tensor, reps: int) -> Tensor:
    out = trial.net(pts)
    if trial.spec is not None:
        out = torch.einsum("bsk,bk->bs", trial.spec.repeat_interleave(reps, 0), out)
    return out


def check_points(trial: Trial, n_random: int = 16, pgd_steps: int = 20) -> Tensor:
    """Values (B, P, S) of the bounded outputs at P points of each case's set: random points (half on the
    corners / sphere) and PGD points maximising and minimising each output."""
    g = torch.Generator().manual_seed(0)
    b, x, eps = len(trial.x), trial.x, trial.eps
    with torch.no_grad():
        s = _outputs(trial, x, 1).shape[1]
    centre = x.repeat_interleave(n_random, 0)
    e = eps.repeat_interleave(n_random)
    noise = torch.rand(centre.shape, generator=g, dtype=x.dtype) * 2 - 1
    if trial.norm == LINF:  # every other point of each sample on a corner of the box
        noise[::2] = noise[::2].sign()
        rnd = _project(centre + e.view(-1, *[1] * (x.dim() - 1)) * noise, centre, e, LINF)
    else:  # every other point on the sphere, the rest inside the ball
        noise = noise / noise.flatten(1).norm(dim=1).view(-1, *[1] * (x.dim() - 1))
        inside = torch.rand(len(e), generator=g, dtype=x.dtype)
        radius = torch.where(torch.arange(len(e)) % 2 == 0, torch.ones_like(e), inside)
        rnd = _project(centre + (e * radius).view(-1, *[1] * (x.dim() - 1)) * noise, centre, e, L2)
    reps = 2 * s
    centre = x.repeat_interleave(reps, 0)
    e = eps.repeat_interleave(reps)
    sign = torch.tensor([1.0, -1.0], dtype=x.dtype).repeat_interleave(s).repeat(b)
    which = torch.arange(s).repeat(2).repeat(b)
    start = (torch.rand(centre.shape, generator=g, dtype=x.dtype) * 2 - 1) * e.view(-1, *[1] * (x.dim() - 1))
    pts = _project(centre + start, centre, e, trial.norm)
    ev = e.view(-1, *[1] * (x.dim() - 1))
    best = pts.clone()
    best_val = torch.full((len(pts),), -math.inf, dtype=x.dtype)
    step = 2.5 * ev / pgd_steps
    for _ in range(pgd_steps + 1):
        pts = pts.detach().requires_grad_(True)
        obj = sign * _outputs(trial, pts, reps).gather(1, which.view(-1, 1)).squeeze(1)
        with torch.no_grad():
            better = obj > best_val
            best = torch.where(better.view(-1, *[1] * (x.dim() - 1)), pts, best)
            best_val = torch.where(better, obj, best_val)
        (grad,) = torch.autograd.grad(obj.sum(), pts)
        if trial.norm == LINF:
            direction = grad.sign()
        else:
            direction = grad / grad.flatten(1).norm(dim=1).clamp(min=1e-30).view(-1, *[1] * (x.dim() - 1))
        pts = _project(pts.detach() + step * direction, centre, e, trial.norm)
    with torch.no_grad():
        all_pts = torch.cat([rnd.view(b, n_random, *x.shape[1:]), best.view(b, reps, *x.shape[1:]), x.unsqueeze(1)], 1)
        flat = all_pts.reshape(-1, *x.shape[1:])
        return _outputs(trial, flat, all_pts.shape[1]).view(b, all_pts.shape[1], -1)


def violation(lower: Tensor, upper: Tensor, values: Tensor) -> Tensor:
    """Per case (B,): the largest excess of a value over its bounds, relative to max(1, |bounds|);
    > TOLERANCE means unsound. Non-finite bounds count as infinite violation."""
    lower, upper = lower.detach(), upper.detach()
    scale = torch.maximum(lower.abs().amax(1), upper.abs().amax(1)).clamp(min=1.0)
    excess = torch.maximum(lower.unsqueeze(1) - values, values - upper.unsqueeze(1)).amax((1, 2))
    bad = ~(torch.isfinite(lower).all(1) & torch.isfinite(upper).all(1))
    return torch.where(bad, torch.full_like(excess, math.inf), excess / scale)


# ----------------------------------------------------------------------------- the fuzz run


@dataclass
class FuzzReport:
    cases: int = 0
    trials: int = 0
    domains: list[str] = field(default_factory=list)
    worst: float = -math.inf  # the largest relative violation over every case and domain
    worst_case: dict[str, Any] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)  # cases over TOLERANCE
    errors: list[dict[str, Any]] = field(default_factory=list)  # domains that raised
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "cases": self.cases,
            "trials": self.trials,
            "domains": self.domains,
            "worst_violation": self.worst,
            "worst_case": self.worst_case,
            "failures": self.failures[:20],
            "failure_count": len(self.failures),
            "errors": self.errors[:20],
            "seconds": self.seconds,
            "tolerance": TOLERANCE,
        }


def run_trial(trial: Trial, domains: list[str], report: FuzzReport, seed: int) -> int:
    """Bound one trial with every domain and record violations; returns how many domains it caught."""
    values = check_points(trial)
    caught = 0
    for d in domains:
        try:
            lower, upper = compute_bounds(trial.net, trial.ball, trial.spec, d)
        except Exception as e:  # noqa: BLE001 - a domain that raises on a supported net is a finding
            report.errors.append({"seed": seed, "domain": d, "arch": trial.arch, "error": f"{type(e).__name__}: {e}"})
            caught += 1
            continue
        v = violation(lower, upper, values)
        i = int(v.argmax())
        if float(v[i]) > report.worst:
            report.worst = float(v[i])
            report.worst_case = {
                "seed": seed,
                "domain": d,
                "arch": trial.arch,
                "norm": trial.norm,
                "eps": float(trial.eps[i]),
                "sample": i,
                "spec": trial.spec is not None,
            }
        if float(v.max()) > TOLERANCE:
            caught += 1
            report.failures.append(
                {"seed": seed, "domain": d, "arch": trial.arch, "norm": trial.norm, "violation": float(v.max())}
            )
    return caught


def fuzz(
    cases: int = 1000,
    seed: int = 0,
    domains: list[str] | None = None,
    batch: int = 8,
    progress: Callable[[FuzzReport], None] | None = None,
) -> FuzzReport:
    """Run at least `cases` random cases (trials of `batch` inputs) through every domain (default: all)."""
    domains = list(domains or DOMAINS.names())
    report = FuzzReport(domains=domains)
    t0 = time.perf_counter()
    s = seed
    while report.cases < cases:
        trial = random_trial(s, batch)
        run_trial(trial, domains, report, s)
        report.cases += len(trial.x)
        report.trials += 1
        s += 1
        if progress is not None and report.trials % 100 == 0:
            report.seconds = time.perf_counter() - t0
            progress(report)
    report.seconds = time.perf_counter() - t0
    return report


# ----------------------------------------------------------------------------- mutation testing


@contextlib.contextmanager
def _patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    had = name in vars(obj)
    old = vars(obj).get(name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        if had:
            setattr(obj, name, old)
        else:
            delattr(obj, name)


def _shrink_output(which: str) -> Callable[[str], Any]:
    def make(domain: str) -> Any:
        cls = DOMAINS.get(domain)
        orig = cls.bounds

        def bounds(self: Any, ops: Any, ball: Ball) -> tuple[Tensor, Tensor]:
            lo, up = orig(self, ops, ball)
            w = 0.05 * (up - lo)
            return (lo + w, up) if which == "lower" else (lo, up - w)

        return _patched(cls, "bounds", bounds)

    return make


def _shrink_input_box(domain: str) -> Any:
    orig = Ball.box

    def box(self: Ball) -> tuple[Tensor, Tensor]:
        lo, hi = orig(self)
        w = 0.025 * (hi - lo)
        return lo + w, hi - w

    return _patched(Ball, "box", box)


#: the domains whose bounds rest on a linear ReLU relaxation (interval and symbolic do not use one)
RELAXATION_DOMAINS = ("symbolic-linear", "crown-ibp", "crown", "crown-lirpa", "dual")


def _holders(name: str) -> list[Any]:
    """Every loaded veritrain.bounds module that holds `name` (a function imported by name lives in each)."""
    return [
        m
        for k, m in list(sys.modules.items())
        if m is not None and (k == "veritrain.bounds" or k.startswith("veritrain.bounds.")) and name in vars(m)
    ]


@contextlib.contextmanager
def _patched_everywhere(name: str, value: Any) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for m in _holders(name):
            stack.enter_context(_patched(m, name, value))
        yield


def _raise_lower(lower: Tensor, upper: Tensor) -> Tensor:
    unstable = (lower < 0) & (upper > 0)
    return torch.where(unstable, lower + 0.05 * (upper - lower), lower)


def _relu_mutant(kind: str) -> Callable[[str], Any]:
    """Mutate the ReLU relaxation: kind "lower" raises the pre-activation lower bound of unstable neurons by 5 %
    of their width; kind "line" lowers the upper relaxation line's intercept by 10 %. Hooks, in order: the
    shared `relu_relaxation` (veritrain.bounds.relaxations), else symbolic-linear's `relax_relu` and the
    backward domains' `ReluRelaxation`; patched in every module that imported them."""

    def make(domain: str) -> Any:
        if domain not in RELAXATION_DOMAINS:
            return None
        shared = _holders("relu_relaxation")
        if shared:
            orig = vars(shared[0])["relu_relaxation"]

            def relaxation(lower: Tensor, upper: Tensor, *a: Any, **k: Any) -> Any:
                lines = orig(_raise_lower(lower, upper) if kind == "lower" else lower, upper, *a, **k)
                if kind == "line":
                    lines.upper_bias = torch.where(lines.unstable, 0.9 * lines.upper_bias, lines.upper_bias)
                return lines

            return _patched_everywhere("relu_relaxation", relaxation)
        if domain == "symbolic-linear" and _holders("relax_relu"):
            orig_relax = vars(_holders("relax_relu")[0])["relax_relu"]

            def relax(blocks: Any, c: Tensor, lower: Tensor, upper: Tensor, *a: Any, **k: Any) -> Any:
                if kind == "lower":
                    return orig_relax(blocks, c, _raise_lower(lower, upper), upper, *a, **k)
                (new_blocks, new_c), n = orig_relax(blocks, c, lower, upper, *a, **k)
                if n:
                    new_blocks = [*new_blocks[:-1], 0.9 * new_blocks[-1]]
                return (new_blocks, new_c), n

            return _patched_everywhere("relax_relu", relax)
        if domain != "symbolic-linear" and _holders("ReluRelaxation"):
            cls = vars(_holders("ReluRelaxation")[0])["ReluRelaxation"]
            orig_init = cls.__init__

            def init(self: Any, lower: Tensor, upper: Tensor, *a: Any, **k: Any) -> None:
                orig_init(self, _raise_lower(lower, upper) if kind == "lower" else lower, upper, *a, **k)
                if kind == "line":
                    self.upper_intercept = 0.9 * self.upper_intercept

            return _patched(cls, "__init__", init)
        return None

    return make


#: name -> (what it does, factory(domain) -> context manager, or None where it does not apply)
MUTANTS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "output-lower+5%": ("the final lower bound raised by 5% of the bound width", _shrink_output("lower")),
    "output-upper-5%": ("the final upper bound lowered by 5% of the bound width", _shrink_output("upper")),
    "input-box-5%": ("the input box B_eps(x) ∩ [0, 1] shrunk by 5% of its width", _shrink_input_box),
    "relu-lower+5%": ("an unstable ReLU's pre-activation lower bound raised by 5% of its width", _relu_mutant("lower")),
    "relu-upper-line-10%": (
        "the upper relaxation line of unstable ReLUs lowered by 10% of its intercept",
        _relu_mutant("line"),
    ),
}


def mutation_check(
    trials: int = 30, seed: int = 10_000, domains: list[str] | None = None, batch: int = 8
) -> dict[str, Any]:
    """For every mutant and domain it applies to: the share of `trials` random trials that catch it.
    Returns {"mutants": {mutant: {domain: {"caught": c, "trials": n}}}, "killed": k, "total": m,
    "case_rate": caught trials / all trials}."""
    domains = list(domains or DOMAINS.names())
    trial_list = [random_trial(seed + i, batch) for i in range(trials)]
    values = [check_points(t) for t in trial_list]
    out: dict[str, dict[str, dict[str, int]]] = {}
    killed = total = caught_all = trials_all = 0
    for name, (_, factory) in MUTANTS.items():
        for d in domains:
            ctx = factory(d)
            if ctx is None:
                continue
            caught = 0
            with ctx:
                for t, v in zip(trial_list, values):
                    try:
                        lo, up = compute_bounds(t.net, t.ball, t.spec, d)
                    except Exception:  # noqa: BLE001 - a crash counts as caught
                        caught += 1
                        continue
                    caught += int(float(violation(lo, up, v).max()) > TOLERANCE)
            out.setdefault(name, {})[d] = {"caught": caught, "trials": trials}
            killed += int(caught > 0)
            total += 1
            caught_all += caught
            trials_all += trials
    return {
        "mutants": out,
        "killed": killed,
        "total": total,
        "case_rate": caught_all / trials_all if trials_all else float("nan"),
    }


__all__ = [
    "ARCHS",
    "ARCH_WEIGHTS",
    "FuzzReport",
    "MUTANTS",
    "RELAXATION_DOMAINS",
    "TOLERANCE",
    "Trial",
    "check_points",
    "fuzz",
    "mutation_check",
    "random_network",
    "random_trial",
    "run_trial",
    "violation",
]
