"""The paper's networks (Appendix B, Table II; FC1/FC2 from Table I) as plain `nn.Sequential`s.

Every network takes pixels in [0, 1] and returns logits. MNIST networks have no normalisation layer
(the paper trains them on [0, 1] inputs, Section V-A); CIFAR and ImageNet-200 networks start with
`Normalize(mean=(0.485, 0.456, 0.406), std=(0.225,) * 3)`. Only modules that `veritrain.bounds`
understands are used: Linear, Conv2d, ReLU (or ELU, for WRM, which has no sound bounds), Flatten,
Normalize and Residual (a sum of a conv branch and an identity or 1x1-conv shortcut).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from veritrain.data.info import DATASETS
from veritrain.models.layers import Normalize, Residual
from veritrain.registry import Registry, UnknownNameError


def _normalize(dataset: str) -> Normalize:
    """The data set's normalisation (Section V-A; `DatasetInfo.mean/std`) as the model's first layer."""
    info = DATASETS.get(dataset)
    return Normalize(info.mean, info.std)


class ModelError(ValueError):
    """A network, model file or weights file that cannot be used; the message says what to do."""


ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "elu": nn.ELU}
NAME_ATTR = "veritrain_name"  # set on built models so that weight-loading errors can name them


@dataclass(frozen=True)
class ModelSpec:
    """A registered network.

    `build(activation, num_classes)` returns a fresh `nn.Sequential`; `hidden_units` (ReLU outputs
    for one input) and `parameters` (all weights and biases) are the counts of what `build` returns.
    `paper_hidden_units` / `paper_parameters` are the numbers printed in Table II (Table I for FC1/FC2);
    `description` says where ours differ from them and why.
    """

    name: str
    dataset: str
    build: Callable[[str, int], nn.Sequential]
    hidden_units: int
    parameters: int
    description: str
    in_shape: tuple[int, int, int] = (1, 28, 28)
    num_classes: int = 10
    paper_hidden_units: int | None = None
    paper_parameters: int | None = None


MODELS: Registry[ModelSpec] = Registry("model")


def _act(activation: str) -> nn.Module:
    try:
        return ACTIVATIONS[activation]()
    except KeyError:
        raise ModelError(f"unknown activation {activation!r}; choose one of: {', '.join(ACTIVATIONS)}") from None


def _fc(sizes: Sequence[int], activation: str) -> list[nn.Module]:
    """Linear layers sizes[0] -> sizes[1] -> ... with an activation between (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(_act(activation))
    return layers


def _fc_net(widths: Sequence[int]) -> Callable[[str, int], nn.Sequential]:
    def build(activation: str, num_classes: int) -> nn.Sequential:
        return nn.Sequential(nn.Flatten(), *_fc([28 * 28, *widths, num_classes], activation))

    return build


def _small(channels: int, side: int, normalize: bool) -> Callable[[str, int], nn.Sequential]:
    """Conv16 4x4/2 - Conv32 4x4/2 - FC100 (Wong & Kolter's small net), padding 1."""

    def build(activation: str, num_classes: int) -> nn.Sequential:
        pre = [_normalize("cifar10")] if normalize else []
        return nn.Sequential(
            *pre,
            nn.Conv2d(channels, 16, 4, stride=2, padding=1),
            _act(activation),
            nn.Conv2d(16, 32, 4, stride=2, padding=1),
            _act(activation),
            nn.Flatten(),
            *_fc([32 * (side // 4) ** 2, 100, num_classes], activation),
        )

    return build


def _large(channels: int, side: int, normalize: bool) -> Callable[[str, int], nn.Sequential]:
    """Conv32 3x3/1 - Conv32 4x4/2 - Conv64 3x3/1 - Conv64 4x4/2 - FC512 - FC512, padding 1."""

    def build(activation: str, num_classes: int) -> nn.Sequential:
        pre = [_normalize("cifar10")] if normalize else []
        return nn.Sequential(
            *pre,
            nn.Conv2d(channels, 32, 3, stride=1, padding=1),
            _act(activation),
            nn.Conv2d(32, 32, 4, stride=2, padding=1),
            _act(activation),
            nn.Conv2d(32, 64, 3, stride=1, padding=1),
            _act(activation),
            nn.Conv2d(64, 64, 4, stride=2, padding=1),
            _act(activation),
            nn.Flatten(),
            *_fc([64 * (side // 4) ** 2, 512, 512, num_classes], activation),
        )

    return build


def res_block(c_in: int, c_out: int, stride: int, activation: str) -> list[nn.Module]:
    """Wong et al.'s residual module: conv3x3/stride - act - conv3x3/1 plus a skip connection, then act.

    The shortcut is the identity when the shape is kept, else a 1x1 convolution with the same stride.
    """
    branch = nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1),
        _act(activation),
        nn.Conv2d(c_out, c_out, 3, stride=1, padding=1),
    )
    shortcut = None if (c_in == c_out and stride == 1) else nn.Conv2d(c_in, c_out, 1, stride=stride)
    return [Residual(branch, shortcut), _act(activation)]


def _resnet(dataset: str, side: int, conv1_stride: int, strides: Sequence[int]) -> Callable[[str, int], nn.Sequential]:
    """Conv16 3x3 - Res16 - Res32 - Res32 - Res64 - Res64 - FC1000 (Appendix B) with the given strides."""
    widths = (16, 32, 32, 64, 64)

    def build(activation: str, num_classes: int) -> nn.Sequential:
        layers: list[nn.Module] = [
            _normalize(dataset),
            nn.Conv2d(3, 16, 3, stride=conv1_stride, padding=1),
            _act(activation),
        ]
        c, s = 16, -(-side // conv1_stride)
        for width, stride in zip(widths, strides):
            layers += res_block(c, width, stride, activation)
            c, s = width, -(-s // stride)
        layers += [nn.Flatten(), *_fc([c * s * s, 1000, num_classes], activation)]
        return nn.Sequential(*layers)

    return build


def _add(
    name: str,
    dataset: str,
    build: Callable[[str, int], nn.Sequential],
    in_shape: tuple[int, int, int],
    num_classes: int,
    counts: tuple[int, int],
    paper_counts: tuple[int, int],
    description: str,
) -> None:
    """Register a network; `counts` = (hidden units, parameters) of `build` (checked by the tests),
    `paper_counts` the same from Table II / Table I. Counting here would build every net at import."""
    MODELS.add(
        name,
        ModelSpec(
            name=name,
            dataset=dataset,
            build=build,
            hidden_units=counts[0],
            parameters=counts[1],
            description=description,
            in_shape=in_shape,
            num_classes=num_classes,
            paper_hidden_units=paper_counts[0],
            paper_parameters=paper_counts[1],
        ),
    )


def count_parameters(model: nn.Module, biases: bool = True) -> int:
    """Number of trainable scalars (weights and, unless `biases=False`, biases).

    Table I counts FC1/FC2 weights only (668,672 and 18,403,328): use `biases=False` to compare.
    """
    return sum(p.numel() for n, p in model.named_parameters() if biases or not n.endswith("bias"))


def count_hidden_units(model: nn.Module, in_shape: Sequence[int]) -> int:
    """Hidden units as in Table II: the outputs of every ReLU (or ELU) module, summed, for one input."""
    acts = (nn.ReLU, nn.ELU)
    total = 0

    def hook(_m: nn.Module, _inp: object, out: torch.Tensor) -> None:
        nonlocal total
        total += out[0].numel()

    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, acts)]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *in_shape, device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
    return total


def build_model(name: str, activation: str = "relu", num_classes: int | None = None) -> nn.Sequential:
    """A fresh, randomly initialised network from `MODELS` (pixels in [0, 1] in, logits out).

    `activation="elu"` swaps every ReLU for an ELU (smooth, for WRM); the bound engine has no sound
    relaxation for ELU. `num_classes` overrides the number of outputs.
    """
    try:
        spec = MODELS.get(name)
    except UnknownNameError as e:
        raise ModelError(f"{e}; or give a file as path/to/file.py:build_fn") from None
    if activation not in ACTIVATIONS:
        _act(activation)  # raises the one-line error
    k = spec.num_classes if num_classes is None else int(num_classes)
    if k < 2:
        raise ModelError(f"num_classes must be at least 2, got {num_classes}")
    model = spec.build(activation, k)
    setattr(model, NAME_ATTR, name)
    return model


_MNIST = (1, 28, 28)
_CIFAR = (3, 32, 32)

#    name, dataset, build, in_shape, classes, (units, params) ours, (units, params) in the paper
_add(
    "mnist-fc1",
    "mnist",
    _fc_net([512, 512]),
    _MNIST,
    10,
    (1_024, 669_706),
    (1_024, 668_672),
    "MNIST FC1 (Table I): FC512-FC512. Table I counts weights only (668,672); "
    "with biases the network has 669,706 parameters.",
)
_add(
    "mnist-fc2",
    "mnist",
    _fc_net([2048] * 5),
    _MNIST,
    10,
    (10_240, 18_413_578),
    (10_240, 18_403_328),
    "MNIST FC2 (Table I): 5 x FC2048. Table I counts weights only (18,403,328); "
    "with biases the network has 18,413,578 parameters.",
)
_add(
    "mnist-small",
    "mnist",
    _small(1, 28, normalize=False),
    _MNIST,
    10,
    (4_804, 166_406),
    (4_804, 166_406),
    "MNIST Small (Table II): Conv16 4x4/2 - Conv32 4x4/2 - FC100, padding 1; no normalisation "
    "(same layout and state_dict keys as the authors' checkpoints).",
)
_add(
    "mnist-large",
    "mnist",
    _large(1, 28, normalize=False),
    _MNIST,
    10,
    (48_064, 1_974_762),
    (28_064, 1_974_762),
    "MNIST Large (Table II): Conv32 3x3/1 - Conv32 4x4/2 - Conv64 3x3/1 - Conv64 4x4/2 - FC512 - "
    "FC512, padding 1. Parameters match Table II; hidden units are 48,064, not the 28,064 printed "
    "there (no padding/stride choice matching the parameter count gives 28,064: the table looks wrong).",
)
_add(
    "cifar-small",
    "cifar10",
    _small(3, 32, normalize=True),
    _CIFAR,
    10,
    (6_244, 214_918),
    (6_244, 214_918),
    "CIFAR Small (Table II): as MNIST Small with 3 input channels, after Normalize.",
)
_add(
    "cifar-large",
    "cifar10",
    _large(3, 32, normalize=True),
    _CIFAR,
    10,
    (62_464, 2_466_858),
    (62_464, 2_466_858),
    "CIFAR Large (Table II): as MNIST Large with 3 input channels, after Normalize.",
)
_add(
    "cifar-resnet",
    "cifar10",
    _resnet("cifar10", 32, 2, (1, 2, 1, 1, 2)),
    _CIFAR,
    10,
    (31_720, 1_208_578),
    (31_720, 1_145_410),
    "CIFAR Resnet (Table II): Conv16 3x3/2 - Res16 - Res32/2 - Res32 - Res64 - Res64/2 - FC1000; "
    "Res = conv3x3-ReLU-conv3x3 + identity (1x1 conv when the shape changes), then ReLU. "
    "Hidden units match Table II (31,720); parameters are 1,208,578, 5.5% above its 1,145,410: "
    "no choice we searched (strides, padding 0/1, 3x3 or 4x4 first convs, identity/1x1/strided "
    "conv shortcuts, one or two ReLUs per module) gives both counts; this is the closest.",
)
_add(
    "imagenet-resnet",
    "imagenet200",
    _resnet("imagenet200", 32, 1, (1, 1, 2, 2, 2)),
    _CIFAR,
    200,
    (142_312, 1_399_824),
    (172_544, 2_310_664),
    "ImageNet-200 Resnet (Table II): 32x32 crops, 200 classes; Conv16 3x3/1 - Res16 - Res32 - "
    "Res32/2 - Res64/2 - Res64/2 - FC1000, same modules as cifar-resnet. Table II's counts "
    "(172,544 units, 2,310,664 parameters) are reproduced by no choice we searched on 32x32 inputs "
    "(nor on 64x64); this is the closest (142,312 units, 1,399,824 parameters).",
)
