"""ONNX out (export, checked with onnxruntime) and in (the reader, on exported and hand-built graphs)."""

import sys

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx", reason="needs the extra veritrain[onnx]")
pytest.importorskip("onnxruntime", reason="needs the extra veritrain[onnx]")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from veritrain.cli import main  # noqa: E402
from veritrain.interop import InteropError, MissingExtraError, require  # noqa: E402
from veritrain.interop.onnx_export import OPSET, export_onnx, max_difference, onnx_session, run_onnx  # noqa: E402
from veritrain.interop.onnx_import import load_onnx, onnx_model_for  # noqa: E402
from veritrain.models import build_model  # noqa: E402
from veritrain.models.layers import Normalize, Residual  # noqa: E402

#: operators complete verifiers (Marabou) read; no Div
MARABOU_OPS = {"Gemm", "Conv", "Relu", "Flatten", "Sub", "Mul", "Add", "AveragePool", "BatchNormalization"}


def _bn(n: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(n)
    bn.running_mean = torch.rand(n) * 0.3
    bn.running_var = torch.rand(n) + 0.5
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    return bn.eval()


def _nets() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    torch.manual_seed(0)
    return {
        "mnist-small": (build_model("mnist-small"), (1, 28, 28)),
        "fc-normalize": (
            nn.Sequential(Normalize([0.13], [0.31]), nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10)),
            (1, 28, 28),
        ),
        "conv-normalize-padded": (
            nn.Sequential(
                Normalize([0.4, 0.5, 0.6], [0.2, 0.25, 0.3]),
                nn.Conv2d(3, 4, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.Flatten(),
                nn.Linear(4 * 8 * 8, 10),
            ),
            (3, 16, 16),
        ),
        "pool-bn": (
            nn.Sequential(
                nn.Conv2d(1, 3, 3), nn.ReLU(), nn.AvgPool2d(2), _bn(3), nn.Flatten(), nn.Linear(3 * 6 * 6, 5)
            ),
            (1, 14, 14),
        ),
        "residual": (
            nn.Sequential(
                nn.Conv2d(1, 4, 3, padding=1),
                nn.ReLU(),
                Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))),
                nn.ReLU(),
                nn.Flatten(),
                nn.Linear(4 * 8 * 8, 3),
            ),
            (1, 8, 8),
        ),
    }


@pytest.mark.parametrize("name", list(_nets()))
def test_export_matches_pytorch_in_onnxruntime(name, tmp_path):
    model, shape = _nets()[name]
    model.eval()
    path = export_onnx(model, shape, tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version == OPSET
    assert {n.op_type for n in proto.graph.node} <= MARABOU_OPS
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [1, *shape]
    x = torch.rand(6, *shape, generator=torch.Generator().manual_seed(1))
    diff = max_difference(model, path, x)
    print(f"{name}: max |onnxruntime - pytorch| = {diff:.3g}")
    assert diff < 1e-5


def test_normalisation_is_folded(tmp_path):
    model, shape = _nets()["fc-normalize"]
    proto = onnx.load(str(export_onnx(model, shape, tmp_path / "m.onnx")))
    assert [n.op_type for n in proto.graph.node] == ["Flatten", "Gemm", "Relu", "Gemm"]
    model, shape = _nets()["conv-normalize-padded"]
    proto = onnx.load(str(export_onnx(model, shape, tmp_path / "c.onnx")))
    assert [n.op_type for n in proto.graph.node][:2] == ["Sub", "Conv"]  # 1/std went into the kernel


def test_export_refuses_unsupported_layers(tmp_path):
    with pytest.raises(InteropError, match="MaxPool2d"):
        export_onnx(nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4, 2)), (1, 4, 4), tmp_path / "m.onnx")


@pytest.mark.parametrize("name", ["mnist-small", "fc-normalize", "conv-normalize-padded", "pool-bn"])
def test_import_of_exported_networks(name, tmp_path):
    model, shape = _nets()[name]
    path = export_onnx(model.eval(), shape, tmp_path / "m.onnx")
    back, in_shape = load_onnx(path)
    assert in_shape == shape and isinstance(back, nn.Sequential)
    x = torch.rand(5, *shape)
    with torch.no_grad():
        assert torch.allclose(back(x), model(x), atol=1e-5)


def _helper_model(tmp_path):
    """An MLP as other tools write it: flat input, Sub/Div normalisation per pixel, Shape/Gather/Concat/Reshape
    flattening, MatMul + Add, Gemm with alpha and transB=0."""
    rng = np.random.default_rng(0)
    w1, b1 = rng.normal(size=(784, 12)).astype(np.float32) * 0.1, rng.normal(size=12).astype(np.float32)
    w2 = rng.normal(size=(12, 10)).astype(np.float32)
    mean = rng.uniform(0.1, 0.2, size=(1, 1, 28, 28)).astype(np.float32)
    std = np.float32(0.3)
    inits = [
        numpy_helper.from_array(a, n)
        for a, n in [
            (w1, "w1"),
            (b1, "b1"),
            (w2, "w2"),
            (mean, "mean"),
            (np.array(std), "std"),
            (np.array([0], dtype=np.int64), "zero"),
            (np.array([-1], dtype=np.int64), "minus1"),
        ]
    ]
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["s"]),
        helper.make_node("Div", ["s", "std"], ["d"]),
        helper.make_node("Shape", ["d"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Concat", ["batch", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["d", "target"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("Gemm", ["r", "w2"], ["y"], alpha=0.5),
    ]
    graph = helper.make_graph(
        nodes,
        "helper-mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        initializer=inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    path = tmp_path / "helper.onnx"
    onnx.save(proto, str(path))
    return path


def test_import_of_a_network_built_with_the_onnx_helper_api(tmp_path):
    path = _helper_model(tmp_path)
    model, shape = load_onnx(path)
    assert shape == (1, 28, 28)
    x = torch.rand(4, 1, 28, 28)
    ref = run_onnx(onnx_session(path), x.numpy())
    with torch.no_grad():
        assert np.abs(model(x).numpy() - ref).max() < 1e-4
    assert all(isinstance(m, (nn.Flatten, nn.Linear, nn.ReLU, Normalize)) for m in model)


def _graph(tmp_path, nodes, inits, in_shape, out_shape):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        initializer=[numpy_helper.from_array(a, n) for n, a in inits.items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "g.onnx"
    onnx.save(proto, str(path))
    return path


def test_import_refuses_unsupported_operators_by_name(tmp_path):
    path = _graph(
        tmp_path, [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2])], {}, [1, 1, 4, 4], [1, 1, 2, 2]
    )
    with pytest.raises(InteropError, match="MaxPool"):
        load_onnx(path)
    w = np.ones((4, 4), dtype=np.float32)
    path = _graph(
        tmp_path,
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "x"], ["y"])],
        {"w": w},
        [1, 4],
        [1, 4],
    )
    with pytest.raises(InteropError, match="two computed tensors"):
        load_onnx(path)


def test_vnncomp_style_flat_input_network_evaluates_on_mnist_pixels(tmp_path):
    """A network taking a (1, 784) vector is given a Flatten in front for (1, 28, 28) pixels."""
    w = np.random.default_rng(0).normal(size=(10, 784)).astype(np.float32)
    path = _graph(tmp_path, [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], {"w": w}, [1, 784], [1, 10])
    model = onnx_model_for(path, (1, 28, 28))
    x = torch.rand(3, 1, 28, 28)
    assert torch.allclose(model(x), x.flatten(1) @ torch.from_numpy(w).t(), atol=1e-4)


def test_missing_extra_is_a_one_line_error_naming_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'veritrain\[onnx\]'"):
        require("onnx", "onnx")
    with pytest.raises(MissingExtraError):
        export_onnx(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), (1, 2, 2), "unused.onnx")


def test_cli_missing_extra_exits_with_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    rc = main(["vnnlib", "--onnx", str(tmp_path / "m.onnx"), "--vnnlib", str(tmp_path / "p.vnnlib")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "veritrain[onnx]" in err


def test_cli_export_and_evaluate_an_onnx_network(tmp_path, capsys):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10))
    torch.save(model.state_dict(), tmp_path / "w.pt")
    net = tmp_path / "net.py"
    net.write_text(
        "from torch import nn\n\ndef build():\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 16), "
        "nn.ReLU(), nn.Linear(16, 10))\n"
    )
    onnx_path = tmp_path / "bench" / "onnx" / "net.onnx"
    rc = main(
        [
            "export",
            "--net",
            f"{net}:build",
            "--weights",
            str(tmp_path / "w.pt"),
            "--dataset",
            "mnist-mini",
            "--onnx",
            str(onnx_path),
            "--vnnlib",
            str(tmp_path / "bench" / "vnnlib"),
            "--n",
            "3",
            "--eps",
            "0.02",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "max |logit difference|" in out
    assert len(list((tmp_path / "bench" / "vnnlib").glob("*.vnnlib"))) == 3
    lines = (tmp_path / "bench" / "instances.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("onnx/net.onnx,vnnlib/prop_0_label")
    rc = main(
        [
            "evaluate",
            "--net",
            str(onnx_path),
            "--dataset",
            "mnist-mini",
            "--n",
            "20",
            "--eps",
            "0.02",
            "--attacks",
            "pgd",
            "--domains",
            "interval,crown",
            "--json",
            str(tmp_path / "e.json"),
            "--no-progress",
        ]
    )
    assert rc == 0
    import json

    res = json.loads((tmp_path / "e.json").read_text())
    assert res["n"] == 20 and res["vra"]["crown"] <= res["era"]["pgd"]
    with torch.no_grad():
        from veritrain.data import load_dataset

        x, y = load_dataset("mnist-mini", "test").tensors
        acc = 100.0 * (model(x[:20]).argmax(1) == y[:20]).float().mean().item()
    assert abs(res["acc"] - acc) < 1e-3
