"""Sound bound propagation: interchangeable domains behind one interface (see ARCHITECTURE.md)."""

from veritrain.bounds.base import (
    DOMAINS,
    Ball,
    Domain,
    check_supported,
    compute_bounds,
    interval_gradient,
    margin_lower,
    margin_spec,
    target_margin_lower,
    verified_loss,
    verify,
)
from veritrain.bounds.ops import UnsupportedLayerError, to_ops

# domain modules register themselves in DOMAINS on import
from veritrain.bounds import interval  # noqa: E402,F401  isort: skip
from veritrain.bounds import symbolic, symbolic_linear  # noqa: E402,F401  isort: skip
from veritrain.bounds import crown  # noqa: E402,F401  isort: skip

__all__ = [
    "DOMAINS",
    "Ball",
    "Domain",
    "UnsupportedLayerError",
    "check_supported",
    "compute_bounds",
    "interval_gradient",
    "margin_lower",
    "margin_spec",
    "target_margin_lower",
    "to_ops",
    "verified_loss",
    "verify",
]
