"""What each data set looks like: shape, classes and the normalisation the paper uses (Section V-A)."""
from __future__ import annotations

from dataclasses import dataclass

from veritrain.registry import Registry


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a data set.

    `mean`/`std` are the per-channel constants of the model's `Normalize` layer; images themselves are
    always pixels in [0, 1]. `classes` is the label order (label i is `classes[i]`); empty when the
    names come from the data (ImageNet-200: the sorted wnids, see `load_dataset(...).classes`).
    """

    name: str
    shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] = ()

    @property
    def channels(self) -> int:
        return self.shape[0]


DATASETS: Registry[DatasetInfo] = Registry("dataset")

MNIST_CLASSES = tuple(str(i) for i in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
# The canonical CIFAR-10 label order (batches.meta); it is also alphabetical, i.e. the sorted folder names.
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
# Section V-A: MNIST inputs in [0, 1] without normalisation; CIFAR-10 and ImageNet-200 normalised with
# mu = (0.485, 0.456, 0.406), sigma = (0.225, 0.225, 0.225).
_NO_NORM = ((0.0,), (1.0,))
_IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.225, 0.225, 0.225))

for _info in (
    DatasetInfo("mnist", (1, 28, 28), 10, *_NO_NORM, MNIST_CLASSES),
    DatasetInfo("fashion-mnist", (1, 28, 28), 10, *_NO_NORM, FASHION_MNIST_CLASSES),
    DatasetInfo("cifar10", (3, 32, 32), 10, *_IMAGENET_NORM, CIFAR10_CLASSES),
    DatasetInfo("imagenet200", (3, 32, 32), 200, *_IMAGENET_NORM, ()),
    DatasetInfo("mnist-mini", (1, 28, 28), 10, *_NO_NORM, MNIST_CLASSES),
):
    DATASETS.add(_info.name, _info)
