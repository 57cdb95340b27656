"""What each data set looks like (shape, classes, normalisation) and its training defaults (Section V-A).

`DATASETS` is the one table of per-data-set facts and defaults: the models' normalisation, the config's
optimiser, eps start and augmentation, MixTrain's alpha0 and acc0, and the help texts all read it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from veritrain.registry import Registry


@dataclass(frozen=True)
class TrainingDefaults:
    """What `veritrain train` uses for a data set when the option is not given (Section V-A).

    `optimizer`: the paper's (Adam for MNIST-like data, SGD for colour data; MixTrain uses Adam everywhere,
    see `veritrain.training.config`). `eps_start`: the first eps of the ramp. `augment`: the training-image
    augmentation. `alpha0`: MixTrain's initial alpha (Eqn. 9). `acc0`: MixTrain's target training accuracy in
    percent; the paper gives none, these are just under its MixTrain accuracies after 60 epochs (None: the
    user must pass --acc0).
    """

    optimizer: str
    eps_start: float
    augment: str
    alpha0: float
    acc0: float | None = None


#: MNIST-like (gray) and color data sets differ in every default but acc0
GRAY_DEFAULTS = TrainingDefaults(optimizer="adam", eps_start=0.01, augment="none", alpha0=0.8)
COLOR_DEFAULTS = TrainingDefaults(optimizer="sgd", eps_start=0.001, augment="crop-flip", alpha0=0.5)


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
    defaults: TrainingDefaults = COLOR_DEFAULTS

    @property
    def channels(self) -> int:
        return self.shape[0]

    @property
    def gray(self) -> bool:
        """MNIST-like (one channel): the gray training defaults apply."""
        return self.channels == 1


DATASETS: Registry[DatasetInfo] = Registry("dataset")

MNIST_CLASSES = tuple(str(i) for i in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# The canonical CIFAR-10 label order (batches.meta); it is also alphabetical, i.e. the sorted folder names.
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
# Section V-A: MNIST inputs in [0, 1] without normalisation; CIFAR-10 and ImageNet-200 normalised with
# mu = (0.485, 0.456, 0.406), sigma = (0.225, 0.225, 0.225).
_NO_NORM = ((0.0,), (1.0,))
_IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.225, 0.225, 0.225))

for _info in (
    DatasetInfo("mnist", (1, 28, 28), 10, *_NO_NORM, MNIST_CLASSES, replace(GRAY_DEFAULTS, acc0=95.0)),
    DatasetInfo("fashion-mnist", (1, 28, 28), 10, *_NO_NORM, FASHION_MNIST_CLASSES, replace(GRAY_DEFAULTS, acc0=80.0)),
    DatasetInfo("cifar10", (3, 32, 32), 10, *_IMAGENET_NORM, CIFAR10_CLASSES, replace(COLOR_DEFAULTS, acc0=65.0)),
    DatasetInfo("imagenet200", (3, 32, 32), 200, *_IMAGENET_NORM, (), replace(COLOR_DEFAULTS, acc0=25.0)),
    DatasetInfo("mnist-mini", (1, 28, 28), 10, *_NO_NORM, MNIST_CLASSES, replace(GRAY_DEFAULTS, acc0=95.0)),
):
    DATASETS.add(_info.name, _info)


def training_defaults(dataset: str) -> TrainingDefaults:
    """The defaults of a registered data set; the color ones (without acc0) for a data set of one's own."""
    return DATASETS.get(dataset).defaults if dataset in DATASETS else COLOR_DEFAULTS


def defaults_text(field: str) -> str:
    """A `TrainingDefaults` field per data set, for help texts: "0.01 (mnist, ...), 0.001 (cifar10, ...)"."""
    by_value: dict[str, list[str]] = {}
    for name in DATASETS:
        value = getattr(DATASETS.get(name).defaults, field)
        if value is not None:
            by_value.setdefault(f"{value:g}" if isinstance(value, float) else str(value), []).append(name)
    return ", ".join(f"{value} ({', '.join(names)})" for value, names in by_value.items())
