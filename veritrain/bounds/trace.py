"""Any `nn.Module` -> the bound engine's op graph, by `torch.fx` symbolic tracing.

Why torch.fx (and not torch.export): fx records the user's own modules as `call_module` nodes, so an op
keeps a reference to the live layer (weights, BatchNorm statistics) and the cached graph follows training
without re-tracing; it keeps the functional and tensor-method forms (`F.relu`, `x.view`, `+`) as written,
which map one-to-one onto bound operators; it traces in milliseconds with no example input and needs no
compiler stack. torch.export lowers to ATen (convolution, `_native_batch_norm_legit_no_training`, ...),
lifts parameters to graph inputs (the ops would hold copies) and costs seconds per model.

Shapes are read by running the traced graph on a probe batch of 2 zeros (BatchNorm is not called: in
train mode it would update its statistics); every op must keep the batch dimension. A node that reads the
input and has no rule raises `UnsupportedLayerError` naming the operation, the node and the line of the
user's code, and listing what is supported: nothing is ever skipped.

Adding a layer: one converter here (`MODULES`, `FUNCTIONS` or `METHODS`), one rule per domain table.
"""

from __future__ import annotations

import operator
import weakref
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from veritrain.bounds.ops import (
    AddOp,
    AvgPool2dOp,
    CatOp,
    Conv1dOp,
    Conv2dOp,
    LinearOp,
    MaxPool2dOp,
    Op,
    ReduceOp,
    ReLUOp,
    ReshapeOp,
    ScaleShiftOp,
    SeparablePoolOp,
    Shape,
    SShapedOp,
    UnsupportedLayerError,
)
from veritrain.models.layers import Normalize

PROBE = 2  # batch of the shape probe
ALIAS = object()  # a converter's answer for an exact no-op (x.contiguous()): the node is its input


class Site:
    """What a converter sees of one traced node: the concrete probe arguments, the input shapes and output."""

    def __init__(self, args: tuple, kwargs: dict, shapes: list[Shape], out: Any, like: Tensor) -> None:
        self.args, self.kwargs, self.shapes, self.out, self.like = args, kwargs, shapes, out, like

    @property
    def shape(self) -> Shape:
        return self.shapes[0]

    @property
    def out_shape(self) -> Shape:
        return tuple(self.out.shape[1:])

    def arg(self, i: int, name: str, default: Any = None) -> Any:
        return self.args[i] if len(self.args) > i else self.kwargs.get(name, default)


Converter = Callable[..., Any]  # (module or None, Site) -> Op | ALIAS


def _batchnorm_params(bn: nn.BatchNorm1d | nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """(scale, shift) of BatchNorm with its running statistics (eval-mode semantics)."""
    assert bn.running_mean is not None and bn.running_var is not None
    scale = bn.running_var.add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def _linear(m: nn.Linear, s: Site) -> Op:
    if len(s.shape) != 1:
        raise UnsupportedLayerError(
            f"Linear applied to a {len(s.shape) + 1}-d input {s.shape}: flatten first "
            "(nn.Flatten() or torch.flatten(x, 1))"
        )
    return LinearOp(m, s.shape)


def _batchnorm(m: nn.BatchNorm1d | nn.BatchNorm2d, s: Site) -> Op:
    if m.running_mean is None or m.running_var is None:
        raise UnsupportedLayerError(f"{m} without running statistics is not supported (track_running_stats=True)")
    return ScaleShiftOp(lambda: _batchnorm_params(m), s.shape)


def _adaptive_avg(m: nn.AdaptiveAvgPool2d | None, s: Site) -> Op:
    (_, h, w), (_, ho, wo) = s.shape, s.out_shape
    if h % ho == 0 and w % wo == 0:  # even windows: an AvgPool2d (and a convolution for the colouring)
        k = (h // ho, w // wo)
        return AvgPool2dOp(k, k, (0, 0), s.shape, s.out_shape, s.like)
    return SeparablePoolOp(s.shape, s.out_shape, s.like)


def _reshape(m: Any, s: Site) -> Op:
    return ReshapeOp(s.shape, s.out_shape)


def _maxpool(m: nn.MaxPool2d, s: Site) -> Op:
    if m.return_indices:
        raise UnsupportedLayerError(f"{m} with return_indices=True is not supported")
    return MaxPool2dOp(m, s.shape, s.out_shape, s.like)


MODULES: dict[type, Converter] = {
    nn.Linear: _linear,
    nn.Conv2d: lambda m, s: Conv2dOp(m, s.shape, s.out_shape),
    nn.Conv1d: lambda m, s: Conv1dOp(m, s.shape, s.out_shape),
    nn.ReLU: lambda m, s: ReLUOp(s.shape),
    nn.LeakyReLU: lambda m, s: ReLUOp(s.shape, m.negative_slope),
    nn.Sigmoid: lambda m, s: SShapedOp(s.shape, "sigmoid"),
    nn.Tanh: lambda m, s: SShapedOp(s.shape, "tanh"),
    nn.Flatten: _reshape,
    nn.Unflatten: _reshape,
    nn.Identity: _reshape,
    nn.Dropout: _reshape,  # bounds are of the network in eval mode, where dropout is the identity
    nn.Dropout1d: _reshape,
    nn.Dropout2d: _reshape,
    Normalize: lambda m, s: ScaleShiftOp(lambda: (1.0 / m.std, -m.mean / m.std), s.shape),
    nn.BatchNorm1d: _batchnorm,
    nn.BatchNorm2d: _batchnorm,
    nn.AvgPool2d: lambda m, s: AvgPool2dOp.of(m, s.shape, s.out_shape, s.like),
    nn.AdaptiveAvgPool2d: _adaptive_avg,
    nn.MaxPool2d: _maxpool,
}


def _dims(s: Site, dim: Any) -> tuple[int, ...]:
    """Non-batch dimensions (1-based) of a reduction; the batch dimension is refused."""
    n = len(s.shape) + 1
    if dim is None:
        raise UnsupportedLayerError("a sum/mean over all dimensions mixes the samples of a batch; pass dim=")
    dims = tuple(sorted(d % n for d in ((dim,) if isinstance(dim, int) else dim)))
    if 0 in dims:
        raise UnsupportedLayerError("a sum/mean over the batch dimension (dim 0) mixes the samples of a batch")
    return dims


def _reduce(mean: bool) -> Converter:
    def conv(m: Any, s: Site) -> Op:
        if s.arg(2, "dtype") is not None or s.kwargs.get("dtype") is not None:
            raise UnsupportedLayerError("sum/mean with dtype= is not supported")
        return ReduceOp(_dims(s, s.arg(1, "dim")), bool(s.arg(2, "keepdim", False)), mean, s.shape, s.out_shape)

    return conv


def _add(m: Any, s: Site) -> Op:
    if s.kwargs.get("alpha", 1) != 1:
        raise UnsupportedLayerError("torch.add with alpha != 1 is not supported")
    if len(s.shapes) != 2 or s.shapes[0] != s.shapes[1]:
        raise UnsupportedLayerError(
            f"'+' of tensors of shapes {s.shapes} (both operands must come from the input "
            "and have the same shape; constants and broadcasting are not supported)"
        )
    return AddOp(s.shape, 2)


def _cat(m: Any, s: Site) -> Op:
    dim = s.arg(1, "dim", 0)
    if dim % (len(s.shape) + 1) == 0:
        raise UnsupportedLayerError("torch.cat along the batch dimension (dim 0) mixes samples")
    return CatOp(dim % (len(s.shape) + 1), s.shapes, s.out_shape)


def _functional(module: type[nn.Module], names: tuple[str, ...]) -> Converter:
    """A functional form (F.max_pool2d(x, 2)) converted as its module (nn.MaxPool2d(2))."""

    def conv(m: Any, s: Site) -> Op:
        kw = {n: v for n, v in zip(names, s.args[1:])} | {k: v for k, v in s.kwargs.items() if k != "input"}
        return MODULES[module](module(**kw), s)

    return conv


def _leaky(m: Any, s: Site) -> Op:
    return ReLUOp(s.shape, float(s.arg(1, "negative_slope", 0.01)))


_RELU = lambda m, s: ReLUOp(s.shape)  # noqa: E731
_SIGMOID = lambda m, s: SShapedOp(s.shape, "sigmoid")  # noqa: E731
_TANH = lambda m, s: SShapedOp(s.shape, "tanh")  # noqa: E731

FUNCTIONS: dict[Any, Converter] = {
    F.relu: _RELU,
    torch.relu: _RELU,
    torch.relu_: _RELU,
    F.leaky_relu: _leaky,
    torch.sigmoid: _SIGMOID,
    F.sigmoid: _SIGMOID,
    torch.tanh: _TANH,
    F.tanh: _TANH,
    torch.flatten: _reshape,
    torch.reshape: _reshape,
    F.dropout: _reshape,
    operator.add: _add,
    torch.add: _add,
    torch.cat: _cat,
    torch.concat: _cat,
    torch.mean: _reduce(True),
    torch.sum: _reduce(False),
    F.max_pool2d: _functional(nn.MaxPool2d, ("kernel_size", "stride", "padding", "dilation", "ceil_mode")),
    F.avg_pool2d: _functional(nn.AvgPool2d, ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad")),
    F.adaptive_avg_pool2d: lambda m, s: _adaptive_avg(None, s),
}

METHODS: dict[str, Converter] = {
    "relu": _RELU,
    "sigmoid": _SIGMOID,
    "tanh": _TANH,
    "view": _reshape,
    "reshape": _reshape,
    "flatten": _reshape,
    "mean": _reduce(True),
    "sum": _reduce(False),
    "add": _add,
    "__add__": _add,
    "contiguous": lambda m, s: ALIAS,
}

#: reading these from a traced tensor gives plain Python values (shapes), not a tensor to bound
SHAPE_READS = {"size", "dim", "shape", "dtype", "device"}


def supported() -> str:
    """The supported operations, for error messages."""
    mods = ", ".join(sorted(t.__name__ for t in MODULES))
    funcs = ", ".join(sorted({_name(f) for f in FUNCTIONS}))
    meths = ", ".join(f".{m}()" for m in sorted(METHODS) if not m.startswith("_"))
    return f"modules {mods}; functions {funcs}; tensor methods {meths}"


def _name(target: Any) -> str:
    if isinstance(target, str):
        return target
    mod = getattr(target, "__module__", None) or ""
    mod = {"torch._C._nn": "torch.nn.functional", "torch._C": "torch", "_operator": "operator"}.get(mod, mod)
    if mod.startswith("torch.nn.functional") or mod == "torch.functional":
        mod = "torch.nn.functional" if mod.startswith("torch.nn") else "torch"
    return f"{mod}.{getattr(target, '__name__', repr(target))}" if mod else getattr(target, "__name__", repr(target))


def _where(node: fx.Node) -> str:
    """'node NAME (file.py:LINE, in fn)': the first frame of the node's stack trace outside torch."""
    place = ""
    for line in (node.stack_trace or "").splitlines():
        line = line.strip()
        if line.startswith("File ") and "/torch/" not in line:
            try:
                path, rest = line[6:].split('", line ', 1)
                lineno, fn = rest.split(", in ", 1)
                place = f" ({path.rsplit('/', 1)[-1]}:{lineno}, in {fn})"
            except ValueError:
                place = f" ({line})"
            break
    return f"node {node.target if node.op == 'call_module' else node.name!r}{place}"


class _Tracer(fx.Tracer):
    """Leaves: the modules the engine converts (Normalize included) and every torch.nn module (to name it)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return type(m) in MODULES or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.Graph:
    """The fx graph of model.forward (a bare converted layer is traced as a one-layer network)."""
    tracer = _Tracer()
    tracer.record_stack_traces = True
    root = nn.Sequential(model) if type(model) in MODULES else model
    try:
        return tracer.trace(root)
    except Exception as e:  # fx raises many types (TraceError, TypeError, RuntimeError) for untraceable code
        msg = " ".join(str(e).split())[:300]
        raise UnsupportedLayerError(
            f"cannot trace {type(model).__name__}.forward with torch.fx ({type(e).__name__}: {msg}); the bound "
            "engine needs a forward without control flow that depends on the input values"
        ) from None


def _qualname(node: fx.Node) -> str:
    """The target of a call_module, call_method or get_attr node: fx records a name, not a callable."""
    assert isinstance(node.target, str), node.target
    return node.target


def _describe(node: fx.Node, root: nn.Module) -> str:
    if node.op == "call_module":
        m = root.get_submodule(_qualname(node))
        text = " ".join(repr(m).split())
        return f"layer {type(m).__name__} ({text[:120]})"
    if node.op == "call_method":
        return f"tensor method .{node.target}()"
    if node.op == "get_attr":
        return f"attribute {node.target}"
    return f"function {_name(node.target)}"


def build_ops(model: nn.Module, in_shape: Shape, like: Tensor) -> list[Op]:
    """Trace `model` and convert every node that reads the input into an op (topological order)."""
    root = nn.Sequential(model) if type(model) in MODULES else model
    graph = trace(model)
    env: dict[fx.Node, Any] = {}
    op_of: dict[fx.Node, Op | None] = {}  # traced tensors: the op producing them (None: the input itself)
    ops: list[Op] = []
    seen_input = False
    output: fx.node.Argument = None
    node: fx.Node
    for node in graph.nodes:
        if node.op == "placeholder":
            if seen_input:
                if node.args:  # an optional argument: its default
                    env[node] = node.args[0]
                    continue
                raise UnsupportedLayerError(
                    f"{type(model).__name__}.forward takes more than one input ({node.name}); "
                    "the bound engine bounds functions of one input tensor"
                )
            seen_input = True
            env[node], op_of[node] = torch.zeros(PROBE, *in_shape, dtype=like.dtype, device=like.device), None
            continue
        if node.op == "output":
            output = node.args[0]
            break
        args = fx.node.map_arg(node.args, lambda n: env[n])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
        if node.op == "get_attr":
            env[node] = _attr(root, _qualname(node))
            continue
        traced = [n for n in node.all_input_nodes if n in op_of]
        target = root.get_submodule(_qualname(node)) if node.op == "call_module" else None
        if not traced:  # a constant (no dependence on the input)
            env[node] = _run(node, target, args, kwargs)
            continue
        if (
            node.op == "call_method"
            and node.target in SHAPE_READS
            or node.op == "call_function"
            and node.target is getattr
            and args[1] in SHAPE_READS
        ):
            env[node] = _run(node, target, args, kwargs)
            continue
        if node.op == "call_module":
            conv = MODULES.get(type(target))
        elif node.op == "call_method":
            conv = METHODS.get(_qualname(node))
        else:
            conv = FUNCTIONS.get(node.target)
        if conv is None:
            raise UnsupportedLayerError(
                f"the bound engine does not support {_describe(node, root)} at {_where(node)}; supported: {supported()}"
            )
        traced_args = [n for n in _flat_args(node) if n in op_of]
        shapes = [tuple(env[n].shape[1:]) for n in traced_args]
        with torch.no_grad():
            out = args[0] if isinstance(target, (nn.BatchNorm1d, nn.BatchNorm2d)) else _run(node, target, args, kwargs)
        if not isinstance(out, Tensor) or out.dim() == 0 or out.shape[0] != PROBE:
            raise UnsupportedLayerError(
                f"{_describe(node, root)} at {_where(node)} does not keep the batch "
                "dimension (it would mix samples); keep dim 0 as the batch"
            )
        try:
            op = conv(target, Site(args, kwargs, shapes, out, like))
        except UnsupportedLayerError as e:
            raise UnsupportedLayerError(f"{e} ({_where(node)})") from None
        env[node] = out
        if op is ALIAS:
            op_of[node] = op_of[traced_args[0]]
            continue
        op.src, op.where = tuple(op_of[n] for n in traced_args), _where(node)
        op_of[node] = op
        ops.append(op)
    if output is None or not isinstance(output, fx.Node) or output not in op_of:
        raise UnsupportedLayerError(f"{type(model).__name__}.forward must return one tensor computed from its input")
    last = op_of[output]
    if last is None:  # the identity network
        return [ReshapeOp(tuple(in_shape), tuple(in_shape))]
    return _live(ops, last)


def _flat_args(node: fx.Node) -> list[fx.Node]:
    """The node's tensor arguments in call order (the list of torch.cat flattened)."""
    out: list[fx.Node] = []

    def add(n: fx.Node) -> fx.Node:
        out.append(n)
        return n

    fx.node.map_arg((node.args, node.kwargs), add)
    return out


def _live(ops: list[Op], last: Op) -> list[Op]:
    """The ops `last` depends on (computed but unused branches dropped), in order, ending with `last`."""
    need = {id(last)}
    for op in reversed(ops):
        if id(op) in need:
            need.update(id(s) for s in op.src if s is not None)
    kept = [op for op in ops if id(op) in need]
    return kept[: kept.index(last) + 1]


def _attr(root: nn.Module, target: str) -> Any:
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _run(node: fx.Node, module: nn.Module | None, args: tuple, kwargs: dict) -> Any:
    with torch.no_grad():
        if module is not None:  # call_module: build_ops passes the called layer
            return module(*args, **kwargs)
        if isinstance(node.target, str):  # call_method: the target names the method
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        return node.target(*args, **kwargs)


_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, list[Op]]]" = weakref.WeakKeyDictionary()


def to_ops(model: nn.Module, in_shape: Shape) -> list[Op]:
    """Turn `model` (pixels (C, H, W) in) into bound operators; raises UnsupportedLayerError.

    Ops read the layers' tensors at every use, so the list is cached per model and reused while the input
    shape, the device and dtype and the module objects (`model.modules()`, by identity) are unchanged:
    converting costs more than a forward pass of a small network. Treat the list as read-only.
    """
    p: Tensor | None = next(iter(model.parameters()), None)
    if p is None:
        p = next(iter(model.buffers()), None)
    device, dtype = (p.device, p.dtype) if p is not None else (None, torch.get_default_dtype())
    # the sub-modules, not the model itself: the cached value must not keep its weak key alive
    key = (tuple(in_shape), device, dtype, tuple(model.modules())[1:])
    hit = _CACHE.get(model)
    if hit is not None and hit[0] == key:  # modules compare by identity
        return hit[1]
    ops = build_ops(model, tuple(in_shape), torch.empty(0, device=device, dtype=dtype))
    if key[3]:  # a bare layer as the model would be referenced by its own ops: not cached
        _CACHE[model] = (key, ops)
    return ops


__all__ = ["FUNCTIONS", "METHODS", "MODULES", "build_ops", "supported", "to_ops", "trace"]
