"""ONNX networks in: a small reader that turns the operators the bound engine supports into a plain
`nn.Sequential` of torch layers (Linear, Conv2d, ReLU, Flatten, Normalize, BatchNorm, AvgPool2d).

Read: Gemm, MatMul (+ Add: the bias), Conv, Relu, Flatten, Reshape (to a flat vector), Identity,
Dropout, Sub/Add/Mul/Div by constants (per-channel: `Normalize`; per-element: folded into the Linear
layer before or after it, else a diagonal Linear layer on a flat vector), BatchNormalization, AveragePool, and the constant
shape arithmetic exporters emit (Constant, Shape, Gather, Unsqueeze, Squeeze, Concat, Cast). The graph
must be a chain (one computed tensor flows through it); anything else is an `InteropError` naming the
operator, never a silently different network. No onnx2torch: it pulls torchvision and a new torch.
Needs the extra `veritrain[onnx]`.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from veritrain.interop import InteropError, require
from veritrain.models.layers import Normalize

#: file names `--net` treats as ONNX networks
ONNX_SUFFIXES = (".onnx", ".onnx.gz")
SUPPORTED = (
    "Gemm, MatMul, Add, Sub, Mul, Div (by constants), Conv, Relu, Flatten, Reshape (to flat), Identity, "
    "Dropout, BatchNormalization, AveragePool, Constant, Shape, Gather, Unsqueeze, Squeeze, Concat, Cast"
)


def is_onnx(path: str) -> bool:
    return str(path).lower().endswith(ONNX_SUFFIXES)


def read_onnx_proto(path: str | Path) -> Any:
    """The ModelProto of an .onnx or .onnx.gz file."""
    onnx = require("onnx", "onnx")
    path = Path(path)
    if not path.is_file():
        raise InteropError(f"ONNX file {path} does not exist")
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    try:
        return onnx.load_from_string(data)
    except Exception as e:  # DecodeError and friends
        raise InteropError(f"{path} is not a readable ONNX model ({type(e).__name__})") from None


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class _Reader:
    """Walks the nodes in order, keeping constants as numpy arrays and the one computed tensor's shape."""

    def __init__(self, proto: Any) -> None:
        from onnx import numpy_helper

        self.graph = proto.graph
        self.consts: dict[str, np.ndarray] = {
            t.name: numpy_helper.to_array(t).astype(np.float64)
            if numpy_helper.to_array(t).dtype.kind == "f"
            else numpy_helper.to_array(t)
            for t in self.graph.initializer
        }
        inputs = [i for i in self.graph.input if i.name not in self.consts]
        if len(inputs) != 1:
            raise InteropError(f"the ONNX network has {len(inputs)} inputs; exactly one is supported")
        dims = [d.dim_value if d.dim_value > 0 else 1 for d in inputs[0].type.tensor_type.shape.dim]
        if not dims:
            raise InteropError("the ONNX input has no shape")
        self.var, self.shape = inputs[0].name, tuple(dims[1:])  # per-sample shape
        self.in_shape = self.shape
        self.layers: list[nn.Module] = []
        if len(self.shape) > 1 and len([d for d in self.shape if d != 1]) <= 1:  # e.g. (1, 784): a vector
            self._append(nn.Flatten())
        self.pending: tuple[np.ndarray, np.ndarray] | None = None  # y = s * x + t on a flat vector

    # -- helpers -------------------------------------------------------------------------------
    def _append(self, layer: nn.Module) -> None:
        if self.pending is not None and isinstance(layer, nn.Flatten):  # carry it over to the flat vector
            self.pending = (self.pending[0].reshape(-1), self.pending[1].reshape(-1))
        else:
            self._flush()
        layer.eval()
        with torch.no_grad():
            self.shape = tuple(layer(torch.zeros(1, *self.shape)).shape[1:])
        self.layers.append(layer)

    def _flush(self) -> None:
        """Realise a pending per-element affine map on a flat vector as a diagonal Linear layer."""
        if self.pending is None:
            return
        if len(self.shape) != 1:
            raise InteropError(
                f"a per-pixel constant on a {self.shape} tensor must be followed by a flatten and a "
                "matrix product (it is folded into it); per-channel constants are supported anywhere"
            )
        s, t = self.pending
        self.pending = None
        n = self.shape[0]
        lin = nn.Linear(n, n)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.diag(np.broadcast_to(s, (n,)))))
            lin.bias.copy_(torch.from_numpy(np.broadcast_to(t, (n,)).copy()))
        self._append(lin)

    def _var_const(self, node: Any) -> tuple[np.ndarray, bool]:
        """(the constant operand, whether the computed tensor is the first operand)."""
        a, b = node.input[0], node.input[1]
        if a == self.var and b in self.consts:
            return self.consts[b], True
        if b == self.var and a in self.consts:
            return self.consts[a], False
        raise InteropError(
            f"{node.op_type} node {node.name!r} combines two computed tensors (e.g. a residual connection); "
            "the ONNX reader handles chains only"
        )

    def _elementwise(self, node: Any) -> None:
        """x + c, x - c, c - x, x * c, x / c with a constant c."""
        c, first = self._var_const(node)
        c = np.asarray(c, dtype=np.float64)
        op = node.op_type
        if op == "Div" and not first:
            raise InteropError(f"Div node {node.name!r} divides a constant by the network's tensor")
        scales: dict[str, np.ndarray | float] = {"Add": 1.0, "Sub": 1.0 if first else -1.0, "Mul": c, "Div": 1.0 / c}
        shifts: dict[str, np.ndarray | float] = {"Add": c, "Sub": -c if first else c, "Mul": 0.0, "Div": 0.0}
        full = (1, *self.shape)
        try:
            scale, shift = (
                np.broadcast_to(v, full)[0] if np.ndim(v) else np.full(self.shape, v) for v in (scales[op], shifts[op])
            )
        except ValueError:
            raise InteropError(f"{op} node {node.name!r}: constant of shape {c.shape} does not fit {full}") from None
        per_channel = scale.reshape(scale.shape[0], -1), shift.reshape(shift.shape[0], -1)
        uniform = all(np.all(p == p[:, :1]) for p in per_channel)
        if len(self.shape) == 1 or not uniform or self.pending is not None:  # fold into a Linear layer
            if len(self.shape) == 1 and self.layers and isinstance(self.layers[-1], nn.Linear) and self.pending is None:
                lin = self.layers[-1]
                with torch.no_grad():
                    w_scale, w_shift = torch.from_numpy(scale).to(lin.weight), torch.from_numpy(shift).to(lin.weight)
                    lin.weight.mul_(w_scale[:, None])
                    if lin.bias is None:
                        lin.bias = nn.Parameter(torch.zeros(lin.out_features))
                    lin.bias.mul_(w_scale).add_(w_shift)
                return
            ps, pt = self.pending if self.pending is not None else (np.ones(self.shape), np.zeros(self.shape))
            self.pending = (ps * scale, pt * scale + shift)
            return
        s, t = per_channel[0][:, 0], per_channel[1][:, 0]
        if np.any(s == 0):
            raise InteropError(f"{op} node {node.name!r} multiplies by zero")
        if op == "Div":
            self._append(Normalize([0.0] * len(s), (1.0 / s).tolist()))  # x / c: std = c exactly
        else:  # s * x + t = (x - (-t / s)) / (1 / s)
            self._append(Normalize((-t / s).tolist(), (1.0 / s).tolist()))

    def _linear(self, w: np.ndarray, b: np.ndarray | None) -> None:
        """A Linear layer with weight w (out, in); a pending flat affine map before it is folded in."""
        if len(self.shape) != 1:
            raise InteropError(f"a matrix product on a {self.shape} tensor: flatten it first")
        if w.shape[1] != self.shape[0]:
            raise InteropError(f"a weight of shape {w.shape} does not fit an input of {self.shape[0]} features")
        b = np.zeros(w.shape[0]) if b is None else np.broadcast_to(b.reshape(-1), (w.shape[0],))
        if self.pending is not None:
            s, t = self.pending
            self.pending = None
            b = b + w @ np.broadcast_to(t, (w.shape[1],))
            w = w * np.broadcast_to(s, (w.shape[1],))[None, :]
        lin = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.array(w, dtype=np.float64)))
            lin.bias.copy_(torch.from_numpy(np.array(b, dtype=np.float64)))
        self._append(lin)

    # -- operators -------------------------------------------------------------------------------
    def node(self, node: Any) -> None:
        op, ins, out = node.op_type, list(node.input), node.output[0]
        at = _attrs(node)
        if all(i in self.consts or i == "" for i in ins) and op not in ("Shape",):
            self.consts[out] = self._constant(node, at)
            return
        if op == "Shape":
            self.consts[out] = np.array([1, *self.shape], dtype=np.int64)
            return
        if self.var not in ins:
            raise InteropError(
                f"{op} node {node.name!r} does not read the network's running tensor: only chains are supported"
            )
        if op in ("Identity", "Dropout"):
            pass
        elif op == "Cast":
            if at.get("to") not in (1, 11):  # FLOAT, DOUBLE
                raise InteropError(f"Cast node {node.name!r} casts the network's tensor to a non-float type")
        elif op == "Relu":
            self._append(nn.ReLU())
        elif op == "Flatten":
            axis = at.get("axis", 1)
            if axis != 1:
                raise InteropError(f"Flatten with axis={axis} is not supported (axis 1 only)")
            if len(self.shape) > 1:
                self._append(nn.Flatten())
        elif op in ("Reshape", "Squeeze", "Unsqueeze"):
            self._reshape(node, at)
        elif op in ("Add", "Sub", "Mul", "Div"):  # after MatMul, Add is the bias: folded into the Linear
            self._elementwise(node)
        elif op == "Gemm":
            if ins[0] != self.var or ins[1] not in self.consts:
                raise InteropError(f"Gemm node {node.name!r} must multiply the network's tensor by a constant")
            if at.get("transA", 0):
                raise InteropError(f"Gemm node {node.name!r} with transA=1 is not supported")
            w = self.consts[ins[1]] * at.get("alpha", 1.0)
            w = w if at.get("transB", 0) else w.T
            b = self.consts[ins[2]] * at.get("beta", 1.0) if len(ins) > 2 and ins[2] else None
            self._linear(w, b)
        elif op == "MatMul":
            if ins[0] != self.var or ins[1] not in self.consts or self.consts[ins[1]].ndim != 2:
                raise InteropError(f"MatMul node {node.name!r} must multiply the network's tensor by a 2-d constant")
            self._linear(self.consts[ins[1]].T, None)
        elif op == "Conv":
            self._conv(node, at)
        elif op == "BatchNormalization":
            gamma, beta, mean, var = (self.consts[i] for i in ins[1:5])
            bn = (nn.BatchNorm2d if len(self.shape) == 3 else nn.BatchNorm1d)(len(mean), eps=at.get("epsilon", 1e-5))
            assert bn.running_mean is not None and bn.running_var is not None  # track_running_stats by default
            with torch.no_grad():
                for p, v in ((bn.weight, gamma), (bn.bias, beta), (bn.running_mean, mean), (bn.running_var, var)):
                    p.copy_(torch.from_numpy(np.asarray(v, dtype=np.float64)))
            self._append(bn)
        elif op == "AveragePool":
            k = list(at["kernel_shape"])
            pads = list(at.get("pads", [0] * 4))
            if pads[:2] != pads[2:] or at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                raise InteropError(f"AveragePool node {node.name!r} with asymmetric or automatic padding")
            self._append(
                nn.AvgPool2d(
                    tuple(k),
                    tuple(at.get("strides", [1, 1])),
                    tuple(pads[:2]),
                    ceil_mode=bool(at.get("ceil_mode", 0)),
                    count_include_pad=bool(at.get("count_include_pad", 0)),
                )
            )
        else:
            raise InteropError(f"ONNX operator {op} (node {node.name!r}) is not supported; supported: {SUPPORTED}")
        self.var = out

    def _reshape(self, node: Any, at: dict[str, Any]) -> None:
        """Reshape/Squeeze/Unsqueeze of the running tensor: only to a flat vector (or a no-op)."""
        full = [1, *self.shape]
        if node.op_type == "Reshape":
            target = [int(v) for v in self.consts[node.input[1]]]
            target = [full[i] if d == 0 and i < len(full) else d for i, d in enumerate(target)]
        else:
            axes = at.get("axes") or ([int(v) for v in self.consts[node.input[1]]] if len(node.input) > 1 else [])
            axes = [a % (len(full) + (node.op_type == "Unsqueeze") * len(axes)) for a in axes]
            if node.op_type == "Squeeze":
                target = [d for i, d in enumerate(full) if not (i in axes if axes else d == 1)]
            else:
                target = list(full)
                for a in sorted(axes):
                    target.insert(a, 1)
        numel = int(np.prod(self.shape))
        if target.count(-1) == 1:
            known = int(np.prod([d for d in target if d != -1]))
            target = [numel // max(known, 1) if d == -1 else d for d in target]
        squeezed = [d for d in target if d != 1]
        if int(np.prod(target)) != numel or not target or target[0] != 1 and squeezed == [numel]:
            raise InteropError(f"{node.op_type} node {node.name!r} to {target} changes the batch dimension")
        rest = tuple(target[1:])
        if rest == self.shape:
            return
        if len(squeezed) <= 1:  # to a vector with singleton axes: the flat vector
            if len(self.shape) > 1:
                self._append(nn.Flatten())
            return
        raise InteropError(
            f"{node.op_type} node {node.name!r} from {self.shape} to {rest}: "
            "only reshapes to a flat vector are supported"
        )

    def _conv(self, node: Any, at: dict[str, Any]) -> None:
        ins = list(node.input)
        if ins[1] not in self.consts or (len(ins) > 2 and ins[2] and ins[2] not in self.consts):
            raise InteropError(f"Conv node {node.name!r} must have constant weights")
        if len(self.shape) != 3:
            raise InteropError(f"Conv node {node.name!r} on a {self.shape} tensor: 2-d convolutions only")
        w = self.consts[ins[1]]
        b = self.consts[ins[2]] if len(ins) > 2 and ins[2] else None
        auto = at.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        pads = list(at.get("pads", [0, 0, 0, 0]))
        if auto not in ("NOTSET", "VALID") or pads[:2] != pads[2:]:
            raise InteropError(f"Conv node {node.name!r} with asymmetric or automatic padding ({auto}, {pads})")
        group = int(at.get("group", 1))
        conv = nn.Conv2d(
            w.shape[1] * group,
            w.shape[0],
            tuple(w.shape[2:]),
            tuple(at.get("strides", [1, 1])),
            tuple(pads[:2]) if auto == "NOTSET" else 0,
            tuple(at.get("dilations", [1, 1])),
            group,
            bias=b is not None,
        )
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(w))
            if b is not None and conv.bias is not None:  # conv.bias exists exactly when b does
                conv.bias.copy_(torch.from_numpy(b))
        self._append(conv)

    def _constant(self, node: Any, at: dict[str, Any]) -> np.ndarray:
        from onnx import numpy_helper

        op, vals = node.op_type, [self.consts[i] for i in node.input if i]
        if op == "Constant":
            if "value" not in at:
                raise InteropError(f"Constant node {node.name!r} without a tensor value is not supported")
            arr = numpy_helper.to_array(at["value"])
            return arr.astype(np.float64) if arr.dtype.kind == "f" else arr
        if op == "Gather":
            return np.take(vals[0], vals[1].astype(np.int64), axis=at.get("axis", 0))
        if op == "Unsqueeze":
            axes = at.get("axes") or [int(v) for v in vals[1]]
            out = vals[0]
            for a in sorted(axes):
                out = np.expand_dims(out, a)
            return out
        if op == "Squeeze":
            axes = at.get("axes") or ([int(v) for v in vals[1]] if len(vals) > 1 else None)
            return np.squeeze(vals[0], axis=tuple(axes) if axes else None)
        if op == "Concat":
            return np.concatenate(vals, axis=at.get("axis", 0))
        if op in ("Cast", "Identity"):
            return vals[0]
        if op in ("Add", "Sub", "Mul", "Div"):
            f = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op]
            return f(vals[0], vals[1])
        if op == "Transpose":
            return np.transpose(vals[0], at.get("perm"))
        raise InteropError(f"ONNX operator {op} on constants (node {node.name!r}) is not supported")

    def model(self) -> nn.Sequential:
        outs = [o.name for o in self.graph.output]
        if len(outs) != 1 or outs[0] != self.var:
            raise InteropError(f"the ONNX network must have one output computed by its last node; it has {outs}")
        if len(self.shape) != 1:
            self._append(nn.Flatten())
        self._flush()
        return nn.Sequential(*self.layers).eval()


def load_onnx(path: str | Path, dtype: torch.dtype = torch.float32) -> tuple[nn.Sequential, tuple[int, ...]]:
    """(an `nn.Sequential` computing the ONNX network, its per-sample input shape).

    The input shape is the ONNX one without the batch dimension, e.g. (1, 28, 28) or (784,); the
    sequential takes (B, *shape) and returns (B, K). Raises InteropError for what it cannot read.
    """
    proto = read_onnx_proto(path)
    reader = _Reader(proto)
    for node in reader.graph.node:
        reader.node(node)
    return reader.model().to(dtype), reader.in_shape


def onnx_model_for(path: str | Path, in_shape: tuple[int, ...]) -> nn.Sequential:
    """The ONNX network as a model taking pixels of `in_shape` (a data set's (C, H, W)). A network whose
    input is a vector of as many values (VNN-COMP's MNIST networks) gets a Flatten in front."""
    model, onnx_shape = load_onnx(path)
    if tuple(onnx_shape) == tuple(in_shape):
        return model
    flat = len([d for d in onnx_shape if d != 1]) <= 1
    if flat and int(np.prod(onnx_shape)) == int(np.prod(in_shape)):
        return model if isinstance(model[0], nn.Flatten) else nn.Sequential(nn.Flatten(), *model).eval()
    raise InteropError(
        f"the ONNX network takes inputs of shape {tuple(onnx_shape)}, the data set has {tuple(in_shape)}"
    )


__all__ = ["ONNX_SUFFIXES", "is_onnx", "load_onnx", "onnx_model_for", "read_onnx_proto"]
