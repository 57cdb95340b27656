"""Data sets for veritrain: MNIST, Fashion-MNIST, CIFAR-10, ImageNet-200 and the embedded mnist-mini.

Images are float32 pixels in [0, 1], shape (N, C, H, W); models carry their own normalisation
(`DatasetInfo.mean/std`, Section V-A of the paper).
"""

from veritrain.data.errors import DataError
from veritrain.data.idx import read_idx, write_idx
from veritrain.data.info import CIFAR10_CLASSES, DATASETS, DatasetInfo
from veritrain.data.loaders import LOADERS, load_dataset, make_loader, take_subset, to_tensor_dataset
from veritrain.data.paths import get_cache_dir, get_data_root

__all__ = [
    "CIFAR10_CLASSES",
    "DATASETS",
    "DataError",
    "DatasetInfo",
    "LOADERS",
    "get_cache_dir",
    "get_data_root",
    "load_dataset",
    "make_loader",
    "read_idx",
    "take_subset",
    "to_tensor_dataset",
    "write_idx",
]
