"""Interoperability with the verification community's formats (VNN-COMP): ONNX networks and VNN-LIB
properties out (`onnx_export`) and in (`onnx_import`, `vnnlib`), and an external complete verifier
(Marabou) checking veritrain's proofs (`crosscheck`).

The third-party packages are optional extras; `require` turns their absence into a one-line error
naming the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: extra (pyproject.toml) -> the packages it installs, by import name
EXTRAS: dict[str, tuple[str, ...]] = {"onnx": ("onnx", "onnxruntime"), "verify": ("maraboupy",)}


class InteropError(ValueError):
    """An ONNX model, VNN-LIB file or external verifier that cannot be used; one line saying why."""


class MissingExtraError(InteropError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def require(module: str, extra: str) -> ModuleType:
    """Import `module` or raise MissingExtraError naming `pip install 'veritrain[extra]'`."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (e.name == module or module.startswith(e.name + ".")):
            raise MissingExtraError(
                f"{module} is not installed; install the extra: pip install 'veritrain[{extra}]'"
            ) from None
        raise


__all__ = ["EXTRAS", "InteropError", "MissingExtraError", "require"]
