"""The paper's networks (Appendix B), user networks from files, and weight loading."""

from veritrain.models.layers import Normalize, Residual
from veritrain.models.loading import load_model_from_file, load_weights, resolve_model
from veritrain.models.zoo import (
    MODELS,
    ModelError,
    ModelSpec,
    build_model,
    count_hidden_units,
    count_parameters,
)

__all__ = [
    "MODELS",
    "ModelError",
    "ModelSpec",
    "Normalize",
    "Residual",
    "build_model",
    "count_hidden_units",
    "count_parameters",
    "load_model_from_file",
    "load_weights",
    "resolve_model",
]
