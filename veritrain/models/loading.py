"""User networks from Python files, registry look-up, and weights from checkpoints (never running code)."""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import re
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, TypeGuard

import torch
from torch import nn

from veritrain.models.layers import Normalize
from veritrain.models.zoo import MODELS, NAME_ATTR, ModelError, build_model

_FORMAT = "path/to/file.py:build_fn"


# ---------------------------------------------------------------------------------------------
# user models


def _split_spec(spec: str) -> tuple[Path, str]:
    path_str, sep, fn_name = spec.rpartition(":")
    if not sep or not path_str or not fn_name.isidentifier():
        raise ModelError(f"model {spec!r} is neither a registered name nor of the form {_FORMAT}")
    return Path(path_str).expanduser(), fn_name


def _import_file(path: Path) -> ModuleType:
    """Import a Python file by path (its folder is on sys.path while it runs, for sibling imports)."""
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    mod_name = f"veritrain_user_{path.stem if path.stem.isidentifier() else 'model'}_{digest}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ModelError(f"cannot import {path}: not a Python file; give {_FORMAT}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(mod_name, None)
        raise ModelError(f"importing {path} failed: {type(e).__name__}: {e}") from e
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    return module


def _load_function(spec: str) -> tuple[Callable[..., Any], str]:
    path, fn_name = _split_spec(spec)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist; give an existing {_FORMAT}")
    module = _import_file(path)
    fn = getattr(module, fn_name, None)
    if fn is None or not callable(fn):
        found = sorted(
            n
            for n, v in vars(module).items()
            if inspect.isfunction(v) and v.__module__ == module.__name__ and not n.startswith("_")
        )
        what = "no function" if fn is None else "no callable"
        raise ModelError(f"{path} has {what} {fn_name!r}; functions there: {', '.join(found) or 'none'}")
    return fn, f"{path}:{fn_name}"


def _call(fn: Callable[..., Any], label: str, kwargs: dict[str, Any]) -> nn.Module:
    try:
        model = fn(**kwargs)
    except Exception as e:
        raise ModelError(f"{label}() failed: {type(e).__name__}: {e}") from e
    if not isinstance(model, nn.Module):
        raise ModelError(f"{label}() returned {type(model).__name__}, not a torch.nn.Module; return the network")
    setattr(model, NAME_ATTR, label)
    return model


def load_model_from_file(spec: str, **kwargs: Any) -> nn.Module:
    """Import `path/to/file.py` and return `build_fn(**kwargs)`, which must be an `nn.Module`.

    The network should take pixels in [0, 1] and carry its own normalisation (see `Normalize`).
    """
    fn, label = _load_function(spec)
    return _call(fn, label, kwargs)


def resolve_model(net: str, activation: str = "relu", num_classes: int | None = None) -> nn.Module:
    """A registry name (`MODELS`) or `path/to/file.py:build_fn`.

    For a file, `activation` / `num_classes` are passed only if the function takes them; asking for
    a non-default value from a function that cannot take it is an error.
    """
    if net in MODELS:
        return build_model(net, activation, num_classes)
    if ":" not in net:
        hint = f"; or give a file as {_FORMAT}"
        if net.endswith(".py"):
            raise ModelError(f"model {net!r} names a file but no function; give {_FORMAT}")
        raise ModelError(f"unknown model {net!r}; choose one of: {', '.join(MODELS.names())}{hint}")
    fn, label = _load_function(net)
    params = inspect.signature(fn).parameters
    any_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs: dict[str, Any] = {}
    for key, value, default in (("activation", activation, "relu"), ("num_classes", num_classes, None)):
        if key in params or any_kw:
            if value != default:
                kwargs[key] = value
        elif value != default:
            raise ModelError(
                f"{label}() takes no {key!r} argument, so {key}={value!r} cannot be applied; "
                f"add the argument or leave the default"
            )
    return _call(fn, label, kwargs)


# ---------------------------------------------------------------------------------------------
# weights


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(d) for d in t.shape) + (",)" if t.dim() == 1 else ")")


def _is_tensor_map(obj: object) -> TypeGuard[Mapping[str, torch.Tensor]]:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _read(path: Path) -> object:
    if not path.exists():
        raise ModelError(f"weights file {path} does not exist; give the path of a .pt/.pth checkpoint")
    if path.is_dir():
        raise ModelError(f"weights path {path} is a folder; give the checkpoint file inside it")
    try:
        with warnings.catch_warnings():  # plain-pickle files: torch warns about the protocol
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            # weights_only=True ALWAYS: unpickling a checkpoint must never run code.
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError (zip), EOFError, ValueError, ...
        raise ModelError(load_error_message(path, e, "save model.state_dict() with torch.save instead")) from None


def _shorten(text: str, limit: int = 120) -> str:
    """One line of at most `limit` characters, cut at a word boundary, without terminal escape codes."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", text).split())
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " ..."


def load_error_message(path: str | os.PathLike[str], e: BaseException, fix: str) -> str:
    """One line for a `torch.load(weights_only=True)` failure: a file that references code is *refused* (naming
    the object), anything else is unreadable (torch's reason without escape codes, shortened at a word)."""
    msg = str(e)
    for marker in ("Unsupported global:", "Unsupported class", "unsupported GLOBAL"):  # wordings of torch versions
        if marker in msg:
            what = msg.split(marker, 1)[1].strip().split(" was not an allowed global")[0].split(" whose module")[0]
            return (
                f"refusing to load {path}: it holds Python objects other than tensors ({_shorten(what, 80)}), "
                f"which could run code; {fix}"
            )
    detail = msg.split("WeightsUnpickler error:", 1)[-1].strip() or type(e).__name__
    if "Unsupported operand" in msg:
        what = msg.split("Unsupported operand", 1)[1].split()[0].strip(".,")
        detail = f"a plain pickle with an instruction the weights-only loader does not run: opcode {what}"
    return f"cannot read {path}: truncated, corrupt or not a PyTorch checkpoint ({_shorten(detail)}); {fix}"


def _state_dict_of(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """A plain state_dict, or one under "model" / "state_dict" (also Wong et al.'s [state_dict])."""
    if _is_tensor_map(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, (list, tuple)) and len(inner) == 1:
                inner = inner[0]
            if _is_tensor_map(inner):
                return dict(inner)
        keys = ", ".join(repr(k) for k in list(obj)[:6])
        raise ModelError(
            f"{path} holds no state_dict (top-level keys: {keys or 'none'}); expected a state_dict "
            f"or a dict with one under 'model' or 'state_dict'"
        )
    raise ModelError(f"{path} holds a {type(obj).__name__}, not a state_dict; save model.state_dict()")


def _own_buffers(model: nn.Module) -> set[str]:
    """State entries the model defines itself and never takes from a checkpoint (Normalize mean/std)."""
    own: set[str] = set()
    for prefix, module in model.named_modules():
        if isinstance(module, Normalize):
            for name, _ in module.named_buffers(recurse=False):
                own.add(f"{prefix}.{name}" if prefix else name)
    return own


def _is_norm_stat(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in ("mean", "std")


def _pairs(
    target: Mapping[str, torch.Tensor], ckpt: Mapping[str, torch.Tensor], own: set[str]
) -> tuple[list[tuple[str, str]], bool]:
    """(model key, checkpoint key) pairs: by name when every needed key is there, else by order."""
    need = [k for k in target if k not in own]
    extra = [k for k in ckpt if k not in target and not _is_norm_stat(k)]
    if all(k in ckpt for k in need) and not extra:
        return [(k, k) for k in need], False
    ck_keys = [k for k in ckpt if not _is_norm_stat(k)]
    return list(zip(need, ck_keys)), True


def load_weights(model: nn.Module, path: str | Path, name: str | None = None) -> nn.Module:
    """Load weights from `path` into `model` (in place; returned for chaining).

    Accepts a plain state_dict, a dict holding one under "model" / "state_dict", or a state_dict of
    the same parameterised layers under other names (e.g. a Sequential without our Normalize at
    index 0, or without Flatten): tensors are then matched by order and shape. Normalize's mean/std
    are the model's own and are kept. On any error the model is left unchanged.
    """
    path = Path(path).expanduser()
    label = name or getattr(model, NAME_ATTR, None) or "the model"
    ckpt = _state_dict_of(_read(path), path)
    target = model.state_dict()
    own = _own_buffers(model)
    pairs, by_order = _pairs(target, ckpt, own)
    need = [k for k in target if k not in own]
    for mk, ck in pairs:
        if target[mk].shape != ckpt[ck].shape:
            where = f" (its key {ck!r}, matched by order)" if mk != ck else ""
            raise ModelError(
                f"checkpoint does not fit {label}: layer {mk} has shape {_shape(target[mk])} in the "
                f"model but {_shape(ckpt[ck])} in {path}{where}; load weights saved from this architecture"
            )
    n_ck = sum(1 for k in ckpt if not _is_norm_stat(k)) if by_order else len(pairs)
    if len(pairs) != len(need) or n_ck != len(need):
        missing = need[len(pairs)] if len(pairs) < len(need) else None
        detail = f" (first unmatched: model layer {missing})" if missing else ""
        raise ModelError(
            f"checkpoint does not fit {label}: the model has {len(need)} weight tensors but {path} "
            f"has {n_ck}{detail}; load weights saved from this architecture"
        )
    new_state = {k: v for k, v in target.items()}  # the model's own tensors for unmatched entries
    for mk, ck in pairs:
        new_state[mk] = ckpt[ck]
    backup = {k: v.detach().clone() for k, v in target.items()}
    try:
        model.load_state_dict(new_state, strict=True)
    except Exception as e:  # shapes were checked; restore anything half-copied before reporting
        model.load_state_dict(backup, strict=True)
        raise ModelError(f"cannot load {path} into {label}: {str(e).splitlines()[0]}") from e
    return model
