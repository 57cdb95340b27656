"""What every attack shares: the calling convention, the result type, projections and small helpers.

Conventions (ARCHITECTURE.md): pixels in [0, 1], the model carries its own normalisation; an attack
never mutates `x`, runs the model in eval mode (restoring every module's previous mode afterwards),
takes gradients w.r.t. the input only (`torch.autograd.grad`), and returns points inside the
perturbation set B_eps(x) intersected with [0, 1]. Randomness comes from a local `torch.Generator`
on the input's device seeded with `seed`, so the same seed gives the same result.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from veritrain.registry import Registry
from veritrain.validation import ATTACK_NORMS, DEFAULT_NORM, L0, L2, LINF, NORMS, check_eps, check_labels, check_pixels

#: name -> Attack subclass (filled by the modules of this package)
ATTACKS: Registry[type["Attack"]] = Registry("attack")


@dataclass
class AttackResult:
    """x_adv: perturbed inputs; success: BoolTensor (B,), the attack found an adversarial example
    within its budget; distance: (B,) size of the perturbation in the attack's norm (inf where none
    was found), or None where it is not meaningful; info: extra per-attack diagnostics."""

    x_adv: Tensor
    success: Tensor
    distance: Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module in eval mode; restore each module's own previous mode afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def make_generator(seed: int | None, device: torch.device | str) -> torch.Generator:
    """A local generator on `device`: seeded with `seed`, or non-deterministically when None."""
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed))
    return gen


def check_norm(norm: str, allowed: Sequence[str] = NORMS) -> str:
    if norm not in allowed:
        raise ValueError(f"unsupported norm {norm!r}; use one of: {', '.join(allowed)}")
    return norm


def check_inputs(x: Tensor, y: Tensor, num_classes: int | None = None) -> None:
    """One-line ValueErrors for the usual mistakes: wrong dtypes or shapes, NaN/inf, pixels outside [0, 1],
    labels that are not class indices in [0, num_classes)."""
    check_pixels(x, 0.0, 1.0, "x")
    check_labels(y, x.shape[0], num_classes, "y")


def flat_norm(d: Tensor, norm: str) -> Tensor:
    """Per-sample norm of a batch of perturbations: linf, l2, or l0 (number of non-zero values)."""
    d = d.flatten(1)
    if norm == LINF:
        return d.abs().amax(1) if d.shape[1] else d.new_zeros(d.shape[0])
    if norm == L2:
        return d.norm(dim=1)
    if norm == L0:
        return (d != 0).sum(1).to(d.dtype)
    raise ValueError(f"unsupported norm {norm!r}; use one of: {', '.join(ATTACK_NORMS)}")


def _view(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def project(x_adv: Tensor, x: Tensor, eps: float | Tensor, norm: str) -> Tensor:
    """Project onto B_eps(x), then clip to [0, 1]. Clipping after the ball projection stays in the
    ball: since x is in [0, 1], clipping moves every coordinate towards x's."""
    d = x_adv - x
    if norm == LINF:
        if isinstance(eps, Tensor):
            e = _view(eps, x)
            d = torch.maximum(torch.minimum(d, e), -e)
        else:
            d = d.clamp(-eps, eps)
    elif norm == L2:
        n = d.flatten(1).norm(dim=1)
        scale = (eps / n.clamp_min(1e-12)).clamp(max=1.0)
        d = d * _view(scale, d)
    else:
        raise ValueError(f"cannot project onto an {norm!r} ball; use linf or l2")
    return (x + d).clamp(0.0, 1.0)


def random_in_ball(x: Tensor, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    """A uniform random point of B_eps(x) (linf: per coordinate; l2: uniform in the ball), clipped to [0, 1]."""
    if norm == LINF:
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        d = (2 * u - 1) * eps
    elif norm == L2:
        g = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        g = g / _view(g.flatten(1).norm(dim=1).clamp_min(1e-12), g)
        dim = x[0].numel()
        r = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
        d = g * _view(eps * r.pow(1.0 / dim), g)
    else:
        raise ValueError(f"unsupported norm {norm!r} for a random start; use linf or l2")
    return project(x + d, x, eps, norm)


def ascent_direction(g: Tensor, norm: str) -> Tensor:
    """Steepest-ascent direction of unit size: sign(g) for linf, g / ||g||_2 for l2."""
    if norm == LINF:
        return g.sign()
    return g / _view(g.flatten(1).norm(dim=1).clamp_min(1e-12), g)


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """Carlini-Wagner margin max_{j != y} z_j - z_y (> 0 iff misclassified). The other logits are
    masked with -inf (not multiplied by 0), so it is right when logits are negative."""
    z_y = logits.gather(1, y.view(-1, 1)).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return other.amax(1) - z_y


#: the losses `per_sample_loss` takes without a target class
UNTARGETED_LOSSES = ("ce", "margin")


def per_sample_loss(logits: Tensor, y: Tensor, loss: str, target: Tensor | None = None) -> Tensor:
    """The loss an attack ascends, per sample: "ce", "margin" (`margin`), or "target": z_target - z_y, the
    margin to the given class `target` (B,) alone (> 0 implies misclassified)."""
    if loss == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    if loss == "margin":
        return margin(logits, y)
    if loss == "target":
        if target is None:
            raise ValueError("the 'target' attack loss needs a target class per sample")
        return (logits.gather(1, target.view(-1, 1)) - logits.gather(1, y.view(-1, 1))).squeeze(1)
    raise ValueError(f"unknown attack loss {loss!r}; use 'ce', 'margin' or 'target'")


def robust_curve(distances: Tensor, radii: Sequence[float]) -> list[float]:
    """Percent of samples still robust at each radius r: no adversarial example found with distance <= r.
    `distances` holds the minimal perturbation found per sample (0 for clean-misclassified, inf where
    none was found), e.g. from CW-L2 (Figure 7a) or Pointwise (Figure 7b)."""
    d = torch.as_tensor(distances).flatten().double()
    if d.numel() == 0:
        raise ValueError("robust_curve needs at least one distance")
    return [100.0 * (d > float(r)).double().mean().item() for r in radii]


class Attack:
    """Base class. Subclasses implement `_run(model, x, y) -> AttackResult` on detached inputs."""

    name = "attack"
    norms: tuple[str, ...] = NORMS

    def __init__(self, eps: float | None, norm: str = DEFAULT_NORM, seed: int | None = 0) -> None:
        check_norm(norm, self.norms)
        if eps is not None:
            check_eps(eps, what=f"{self.name}: eps")
        self.eps = eps
        self.norm = norm
        self.seed = seed

    def generator(self, device: torch.device) -> torch.Generator:
        return make_generator(self.seed, device)

    def run(self, model: nn.Module, x: Tensor, y: Tensor) -> AttackResult:
        check_inputs(x, y)
        x = x.detach()
        y = y.detach().to(device=x.device, dtype=torch.long)
        with eval_mode(model), torch.enable_grad():
            if len(x):
                with torch.no_grad():
                    check_labels(y, x.shape[0], model(x[:1]).shape[-1], "y")
            return self._run(model, x, y)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return self.run(model, x, y).x_adv

    def _run(self, model: nn.Module, x: Tensor, y: Tensor) -> AttackResult:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eps={self.eps}, norm={self.norm!r}, seed={self.seed})"


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, chunk: int | None = None) -> Tensor:
    """argmax of the logits, optionally in chunks."""
    if chunk is None or x.shape[0] <= chunk:
        return model(x).argmax(1)
    return torch.cat([model(c).argmax(1) for c in x.split(chunk)])
