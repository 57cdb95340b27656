"""A veritrain network as ONNX, in the form VNN-COMP benchmarks ship: pixels in [0, 1] in, logits out.

Written node by node with the `onnx` helper API (no exporter tracing, no onnxscript), at a fixed opset
(`OPSET`) and with a fixed batch of 1 by default, as VNN-COMP networks have. Only operators that
complete verifiers read are emitted: Gemm, Conv, Relu, Flatten, Sub, Mul, Add, AveragePool,
BatchNormalization. The model's normalisation is folded in: a `Normalize` before a Linear layer
disappears into its weights and bias; before a Conv2d the division goes into the kernel and the
subtraction stays a `Sub` node (zero padding of (x - mean) / std equals zero padding of x - mean
scaled), so no `Div` is emitted (Marabou's ONNX parser has none). Needs the extra `veritrain[onnx]`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from veritrain.interop import InteropError, require
from veritrain.models.layers import Normalize, Residual

#: the ONNX opset of every exported network (Gemm/Conv/Relu/Flatten/Sub/Mul/Add/AveragePool/BN)
OPSET = 13
INPUT_NAME = "input"
OUTPUT_NAME = "output"


def _leaves(model: nn.Module) -> list[nn.Module]:
    """The modules of a (nested) nn.Sequential in execution order; Residual blocks stay whole."""
    if isinstance(model, nn.Sequential):
        return [leaf for child in model for leaf in _leaves(child)]
    return [model]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


class _Graph:
    """Nodes and initialisers under construction; `value` is the name of the running tensor."""

    def __init__(self, helper: Any, numpy_helper: Any) -> None:
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.count = 0

    def const(self, array: np.ndarray, hint: str) -> str:
        self.count += 1
        name = f"{hint}_{self.count}"
        self.inits.append(self.numpy_helper.from_array(np.asarray(array, dtype=np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        self.count += 1
        out = f"{op.lower()}_{self.count}"
        self.nodes.append(self.helper.make_node(op, inputs, [out], name=f"{op}_{self.count}", **attrs))
        return out


def _conv_pads(layer: nn.Conv2d) -> list[int]:
    if layer.padding_mode != "zeros":
        raise InteropError(f"Conv2d with padding_mode={layer.padding_mode!r} cannot be exported (zeros only)")
    if not isinstance(layer.padding, str):
        ph, pw = layer.padding
    elif layer.padding == "valid":
        ph, pw = 0, 0
    else:  # "same", the only other string Conv2d accepts
        tot = [layer.dilation[i] * (layer.kernel_size[i] - 1) for i in range(2)]
        if any(t % 2 for t in tot):
            raise InteropError(f"Conv2d {layer} with asymmetric 'same' padding cannot be exported")
        ph, pw = tot[0] // 2, tot[1] // 2
    return [ph, pw, ph, pw]


def _emit(g: _Graph, modules: Sequence[nn.Module], value: str, shape: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
    """Emit `modules` applied to tensor `value` of per-sample `shape`; returns the output name and shape."""
    scale: np.ndarray | None = None  # a pending per-element factor of a folded Normalize, shaped like `shape`
    shift: np.ndarray | None = None  # a pending per-element subtraction (folded into the next Linear)
    mods = list(modules)
    for i, m in enumerate(mods):
        probe = torch.zeros(1, *shape)
        out_shape = tuple(m.eval()(probe).shape[1:]) if not isinstance(m, Residual) else None
        if isinstance(m, Normalize):
            mean = np.broadcast_to(_np(m.mean), shape).copy()
            std = np.broadcast_to(_np(m.std), shape).copy()
            nxt = next((n for n in mods[i + 1 :] if not isinstance(n, (nn.Flatten, nn.Identity))), None)
            if isinstance(nxt, nn.Linear) and scale is None:
                scale, shift = 1.0 / std, mean  # both into the Linear
            elif isinstance(nxt, nn.Conv2d) and nxt.groups == 1 and scale is None and len(shape) == 3:
                value = g.node("Sub", [value, g.const(_np(m.mean).reshape(1, -1, 1, 1), "mean")])
                scale = 1.0 / std  # into the kernel
            else:
                value = g.node("Sub", [value, g.const(mean[None], "mean")])
                value = g.node("Mul", [value, g.const((1.0 / std)[None], "inv_std")])
            continue
        if isinstance(m, nn.Linear):
            w, b = _np(m.weight), (_np(m.bias) if m.bias is not None else np.zeros(m.out_features))
            if scale is not None:
                s, t = scale.reshape(-1), (shift.reshape(-1) if shift is not None else np.zeros(scale.size))
                w, b = w * s[None, :], b - (w * s[None, :]) @ t
                scale = shift = None
            value = g.node("Gemm", [value, g.const(w, "weight"), g.const(b, "bias")], transB=1)
        elif isinstance(m, nn.Conv2d):
            w = _np(m.weight)
            if scale is not None:
                per_channel = scale.reshape(scale.shape[0], -1)
                if not np.allclose(per_channel, per_channel[:, :1]):
                    raise InteropError("a per-pixel Normalize before a Conv2d cannot be folded into it")
                w = w * per_channel[:, 0][None, :, None, None]  # groups == 1 (checked at the Normalize)
                scale = None
            ins = [value, g.const(w, "weight")] + ([g.const(_np(m.bias), "bias")] if m.bias is not None else [])
            value = g.node(
                "Conv",
                ins,
                kernel_shape=list(m.kernel_size),
                strides=list(m.stride),
                pads=_conv_pads(m),
                dilations=list(m.dilation),
                group=m.groups,
            )
        elif scale is not None and isinstance(m, (nn.Flatten, nn.Identity)):
            if isinstance(m, nn.Flatten):
                scale = scale.reshape(out_shape)
                shift = shift.reshape(out_shape) if shift is not None else None
                value = g.node("Flatten", [value], axis=1)
        elif scale is not None:
            raise InteropError(f"cannot fold a Normalize into {type(m).__name__}")
        elif isinstance(m, nn.ReLU):
            value = g.node("Relu", [value])
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise InteropError(f"Flatten({m.start_dim}, {m.end_dim}) cannot be exported; flatten from dim 1")
            value = g.node("Flatten", [value], axis=1)
        elif isinstance(m, nn.Identity):
            pass
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if m.running_mean is None or m.running_var is None:
                raise InteropError(f"{m} without running statistics cannot be exported")
            c = m.num_features
            gamma = _np(m.weight) if m.weight is not None else np.ones(c)
            beta = _np(m.bias) if m.bias is not None else np.zeros(c)
            value = g.node(
                "BatchNormalization",
                [
                    value,
                    g.const(gamma, "bn_scale"),
                    g.const(beta, "bn_bias"),
                    g.const(_np(m.running_mean), "bn_mean"),
                    g.const(_np(m.running_var), "bn_var"),
                ],
                epsilon=float(m.eps),
            )
        elif isinstance(m, nn.AvgPool2d):
            pair = lambda v: [v, v] if isinstance(v, int) else list(v)  # noqa: E731
            kernel, strides, pads = pair(m.kernel_size), pair(m.stride or m.kernel_size), pair(m.padding)
            if m.divisor_override is not None:
                raise InteropError("AvgPool2d with divisor_override cannot be exported")
            value = g.node(
                "AveragePool",
                [value],
                kernel_shape=kernel,
                strides=strides,
                pads=pads + pads,
                ceil_mode=int(m.ceil_mode),
                count_include_pad=int(m.count_include_pad),
            )
        elif isinstance(m, Residual):
            branch, branch_shape = _emit(g, _leaves(m.branch), value, shape)
            shortcut, _ = _emit(g, _leaves(m.shortcut), value, shape)
            value, out_shape = g.node("Add", [branch, shortcut]), branch_shape
        else:
            raise InteropError(
                f"cannot export layer {type(m).__name__} ({m}) to ONNX; supported: Linear, Conv2d, ReLU, "
                "Flatten, Identity, Normalize, BatchNorm (eval statistics), AvgPool2d, Residual"
            )
        shape = out_shape  # type: ignore[assignment]
    if scale is not None:
        raise InteropError("a Normalize at the end of the network cannot be folded into a following layer")
    return value, shape


def to_onnx(model: nn.Module, in_shape: Sequence[int], batch: int | None = 1, name: str = "veritrain") -> Any:
    """The `onnx.ModelProto` of `model` (pixels in [0, 1] of `in_shape` = (C, H, W) in, logits out).

    `batch` fixes the batch dimension (VNN-COMP networks use 1); None makes it symbolic ("batch").
    """
    onnx = require("onnx", "onnx")
    from onnx import TensorProto, helper, numpy_helper

    model = model.eval()
    g = _Graph(helper, numpy_helper)
    with torch.no_grad():
        out, out_shape = _emit(g, _leaves(model), INPUT_NAME, tuple(in_shape))
    if not g.nodes or g.nodes[-1].output[0] != out:
        raise InteropError("the model has no layer to export")
    g.nodes[-1].output[0] = OUTPUT_NAME
    dim = batch if batch is not None else "batch"
    graph = helper.make_graph(
        g.nodes,
        name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [dim, *in_shape])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [dim, *out_shape])],
        initializer=g.inits,
    )
    proto = helper.make_model(graph, producer_name="veritrain", opset_imports=[helper.make_opsetid("", OPSET)])
    proto.ir_version = min(proto.ir_version, 8)  # readable by older runtimes and parsers
    proto.doc_string = "pixels in [0, 1] in (normalisation folded in), logits out"
    onnx.checker.check_model(proto)
    return proto


def export_onnx(model: nn.Module, in_shape: Sequence[int], path: str | Path, batch: int | None = 1) -> Path:
    """Write `to_onnx(model, in_shape, batch)` to `path` (folders created) and return the path."""
    onnx = require("onnx", "onnx")
    proto = to_onnx(model, in_shape, batch)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return path


def onnx_session(path: str | Path) -> Any:
    """An onnxruntime CPU session of the file (one thread: the machine is shared)."""
    ort = require("onnxruntime", "onnx")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_onnx(session: Any, x: np.ndarray) -> np.ndarray:
    """Outputs of the session for inputs x (N, ...) in float32, one sample at a time when the batch is fixed."""
    inp = session.get_inputs()[0]
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None
    x = np.asarray(x, dtype=np.float32).reshape(len(x), *[d for d in inp.shape[1:]])
    if fixed is None:
        return session.run(None, {inp.name: x})[0]
    if fixed != 1:
        raise InteropError(f"the ONNX input has a fixed batch of {fixed}; only 1 or a symbolic batch is supported")
    return np.concatenate([session.run(None, {inp.name: x[i : i + 1]})[0] for i in range(len(x))])


def max_difference(model: nn.Module, path: str | Path, x: torch.Tensor) -> float:
    """max |ONNX(x) - model(x)| over the logits of the samples x, with onnxruntime."""
    with torch.no_grad():
        ref = model.eval()(x.float()).double().numpy()
    got = run_onnx(onnx_session(path), x.numpy()).astype(np.float64)
    if got.shape != ref.shape:
        raise InteropError(f"the ONNX network returns shape {got.shape}, the model {ref.shape}")
    return float(np.abs(got - ref).max()) if ref.size else math.nan


__all__ = ["INPUT_NAME", "OPSET", "OUTPUT_NAME", "export_onnx", "max_difference", "onnx_session", "run_onnx", "to_onnx"]
