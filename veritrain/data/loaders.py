"""`load_dataset`: every supported data set as a TensorDataset of float32 pixels in [0, 1] and int64 labels."""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from veritrain.data import cifar, images
from veritrain.data.download import RESOURCES, DownloadError, download as _download
from veritrain.data.errors import DataError
from veritrain.data.idx import read_idx
from veritrain.data.info import CIFAR10_CLASSES, DATASETS, DatasetInfo
from veritrain.data.paths import get_data_root
from veritrain.registry import Registry

SPLITS = ("train", "test")
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_WHERE = "or set --data-dir/VERITRAIN_DATA"

Loader = Callable[[DatasetInfo, str, Path, bool], tuple]
# name -> loader(info, split, root, download) -> (uint8 images (N, H, W[, C]), labels, source description
# [, class names when they come from the data])
LOADERS: Registry[Loader] = Registry("dataset loader")


# ---------------------------------------------------------------- conversion and checks
def to_tensor_dataset(x: np.ndarray, y: np.ndarray, info: DatasetInfo, source: str) -> TensorDataset:
    """uint8 (N, H, W) / (N, H, W, C) or float (N, C, H, W) in [0, 1] -> checked TensorDataset.

    NaN/inf, pixels outside [0, 1], labels outside [0, num_classes) or a wrong shape -> DataError.
    """
    x, y = np.asarray(x), np.asarray(y)
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{source}: {len(x)} images but labels of shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{source}: labels have dtype {y.dtype}, expected integers")
    if len(y) and (y.min() < 0 or y.max() >= info.num_classes):
        raise DataError(
            f"{source}: labels range over [{y.min()}, {y.max()}], {info.name} has {info.num_classes} classes"
        )
    if x.dtype == np.uint8:
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4:
            raise DataError(f"{source}: images of shape {x.shape}, expected (N, H, W[, C])")
        xt = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
    elif np.issubdtype(x.dtype, np.floating):
        if x.ndim == 3:
            x = x[:, None]
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if not torch.isfinite(xt).all():
            raise DataError(f"{source}: images contain NaN or inf")
        if xt.numel() and (xt.min() < 0 or xt.max() > 1):
            raise DataError(f"{source}: pixel values range over [{xt.min():.4g}, {xt.max():.4g}], expected [0, 1]")
    else:
        raise DataError(f"{source}: images have dtype {x.dtype}, expected uint8 (or floats in [0, 1])")
    if tuple(xt.shape[1:]) != tuple(info.shape):
        raise DataError(f"{source}: images of shape {tuple(xt.shape[1:])}, {info.name} needs {tuple(info.shape)}")
    ds = TensorDataset(xt, torch.from_numpy(y.astype(np.int64)))
    ds.info = info  # type: ignore[attr-defined]
    ds.source = source  # type: ignore[attr-defined]
    ds.classes = list(info.classes)  # type: ignore[attr-defined]
    return ds


def _download_note(download: bool, err: Exception | None) -> str:
    if not download:
        return "download skipped (download=False)"
    return f"download failed: {err}" if err else "no download available"


# ---------------------------------------------------------------- MNIST and Fashion-MNIST (IDX files)
_IDX_DIRS = {"mnist": ("mnist", "MNIST/raw"), "fashion-mnist": ("fashion-mnist", "FashionMNIST/raw")}
_TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}


def _find_idx(root: Path, dirs: Sequence[str], filename: str) -> Path | None:
    for d in dirs:
        for name in (filename, filename[:-3]):  # .gz or uncompressed
            p = root / d / name
            if p.is_file():
                return p
    return None


def _load_idx_dataset(info: DatasetInfo, split: str, root: Path, download: bool):
    dirs = _IDX_DIRS[info.name]
    names = IDX_FILES[split]
    found = {n: _find_idx(root, dirs, n) for n in names}
    missing = [n for n, p in found.items() if p is None]
    err: Exception | None = None
    if missing and download:
        try:
            for n in missing:
                found[n] = _download(RESOURCES[info.name][n], root / dirs[0])
            missing = []
        except DownloadError as e:
            err = e
    if missing:
        raise DataError(
            f"{_TITLES[info.name]} not found: put {', '.join(missing)} in {root / dirs[0]} "
            f"(or {root / dirs[1]}) {_WHERE}; {_download_note(download, err)}"
        )
    images, labels = found[names[0]], found[names[1]]
    assert images is not None and labels is not None  # found or downloaded: the missing ones raised above
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or x.shape[1:] != info.shape[1:]:
        raise DataError(f"{images}: images of shape {x.shape}, expected (N, 28, 28)")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{labels} has {y.shape} labels for {len(x)} images in {images}")
    return x, y, str(images.parent)


LOADERS.add("mnist", _load_idx_dataset)
LOADERS.add("fashion-mnist", _load_idx_dataset)


# ---------------------------------------------------------------- CIFAR-10
def _load_cifar10(info: DatasetInfo, split: str, root: Path, download: bool):
    """Looks, in order, for: the canonical python release (`cifar-10-batches-py/`, then
    `cifar-10-python.tar.gz`), class folders `cifar10/{train,test}/<class>/`, `cifar10-jpeg.tar.gz`;
    else downloads the canonical tarball into `root`."""
    size = info.shape[1:]
    batches = root / cifar.BATCHES_DIR
    if batches.is_dir() and not cifar.missing_batches(batches, split):
        d = cifar.load_batches_dir(batches, split)
        return d["x"], d["y"], str(batches)
    tar = root / cifar.TARBALL
    if tar.is_file():
        d = cifar.load_tarball(tar, split)
        return d["x"], d["y"], str(tar)
    folder = root / "cifar10" / split
    if folder.is_dir():
        classes = images.folder_classes(folder)
        if tuple(classes) != CIFAR10_CLASSES:
            raise DataError(f"{folder} has class folders {classes}; CIFAR-10 needs {list(CIFAR10_CLASSES)}")
        d = images.load_image_folder(folder, classes, size)
        return d["x"], d["y"], str(folder)
    jpeg_tar = root / "cifar10-jpeg.tar.gz"
    if jpeg_tar.is_file():
        d = images.load_image_tarball(jpeg_tar, "cifar10", split, CIFAR10_CLASSES, size)
        return d["x"], d["y"], str(jpeg_tar)
    err: Exception | None = None
    if download:
        try:
            tar = _download(RESOURCES["cifar10"][cifar.TARBALL], root)
            d = cifar.load_tarball(tar, split)
            return d["x"], d["y"], str(tar)
        except DownloadError as e:
            err = e
    raise DataError(
        f"CIFAR-10 not found: put {cifar.BATCHES_DIR}/ or {cifar.TARBALL} (canonical release), or "
        f"cifar10/{{train,test}}/<class>/*.png|jpg or cifar10-jpeg.tar.gz in {root} {_WHERE}; "
        f"{_download_note(download, err)}"
    )


LOADERS.add("cifar10", _load_cifar10)


# ---------------------------------------------------------------- ImageNet-200 (Tiny ImageNet)
def _load_imagenet200(info: DatasetInfo, split: str, root: Path, download: bool):
    base = root / "tiny-imagenet-200"
    if not (base / "wnids.txt").is_file():
        raise DataError(
            f"ImageNet-200 not found: unpack tiny-imagenet-200.zip (http://cs231n.stanford.edu/tiny-imagenet-200.zip) "
            f"so that {base / 'wnids.txt'} exists, {_WHERE}; it is never downloaded automatically"
        )
    d, wnids = images.load_tiny_imagenet(base, split, crop=info.shape[1], num_classes=info.num_classes)
    return d["x"], d["y"], str(base), wnids


LOADERS.add("imagenet200", _load_imagenet200)


# ---------------------------------------------------------------- mnist-mini (embedded)
EMBEDDED_MNIST = "mnist_mini.npz"


def _load_mnist_mini(info: DatasetInfo, split: str, root: Path, download: bool):
    """The real MNIST subset shipped inside the package (scripts/make_embedded.py); needs no data root."""
    res = importlib.resources.files("veritrain.data") / "embedded" / EMBEDDED_MNIST
    try:
        with importlib.resources.as_file(res) as path, np.load(path, allow_pickle=False) as z:
            x, y = z[f"x_{split}"], z[f"y_{split}"]
    except Exception as e:
        raise DataError(f"the embedded {EMBEDDED_MNIST} is missing or corrupt ({e}); reinstall veritrain") from None
    return x, y, f"veritrain/data/embedded/{EMBEDDED_MNIST}"


LOADERS.add("mnist-mini", _load_mnist_mini)


# ---------------------------------------------------------------- public API
def load_dataset(
    name: str, split: str = "train", root: str | os.PathLike | None = None, download: bool = True
) -> TensorDataset:
    """Load `name` (see `DATASETS`) as float32 images (N, C, H, W) in [0, 1] and int64 labels.

    `root` defaults to `get_data_root()`. Missing MNIST / Fashion-MNIST / CIFAR-10 files are
    downloaded from the canonical mirrors (md5-checked) unless `download=False`. The result carries
    `.info` (DatasetInfo), `.classes` (label names) and `.source` (where it was read from).
    """
    info = DATASETS.get(name)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use 'train' or 'test'")
    out = LOADERS.get(name)(info, split, get_data_root(root), download)
    x, y, source = out[:3]
    ds = to_tensor_dataset(x, y, info, source)
    if len(out) > 3:
        ds.classes = list(out[3])  # type: ignore[attr-defined]
    return ds


def _carry_attributes(source: Dataset, part: TensorDataset) -> TensorDataset:
    """`part` with the attributes `.info`, `.classes`, `.source` of the set it was taken from."""
    for attr in ("info", "classes", "source"):
        if hasattr(source, attr):
            setattr(part, attr, getattr(source, attr))
    return part


def take_subset(ds: Dataset, n: int | None, seed: int | None = None) -> TensorDataset:
    """The first `n` samples (seed None: deterministic) or `n` drawn without replacement with `seed`
    (kept in dataset order). `n` None or >= len(ds): the whole set, returned as is (the count is in
    `len()` for reports). Attributes `.info`, `.classes`, `.source` are carried over.
    """
    total = len(ds)  # type: ignore[arg-type]
    if n is None or n >= total:
        return ds  # type: ignore[return-value]
    if n <= 0:
        raise ValueError(f"subset size must be positive, got {n}")
    if seed is None:
        idx = torch.arange(n)
    else:
        idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].sort().values
    if isinstance(ds, TensorDataset):
        sub = TensorDataset(*(t[idx] for t in ds.tensors))
    else:
        items = [ds[int(i)] for i in idx]
        sub = TensorDataset(*(torch.stack([torch.as_tensor(it[j]) for it in items]) for j in range(len(items[0]))))
    return _carry_attributes(ds, sub)


def split_holdout(ds: TensorDataset, n: int, seed: int) -> tuple[TensorDataset, TensorDataset]:
    """(the rest, n held-out samples): the n drawn without replacement with `seed`, both kept in dataset order,
    so a run and its resumption split alike. Attributes `.info`, `.classes`, `.source` go to both."""
    total = len(ds)
    if not 0 < n < total:
        raise ValueError(f"a held-out split needs 0 < n < {total} (the set's size), got {n}")
    held = torch.zeros(total, dtype=torch.bool)
    held[torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]] = True
    parts = []
    for mask in (~held, held):
        parts.append(_carry_attributes(ds, TensorDataset(*(t[mask] for t in ds.tensors))))
    return parts[0], parts[1]


def make_loader(
    ds: Dataset, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None, **kwargs
) -> DataLoader:
    """A DataLoader; pass a seeded `generator` for a reproducible shuffle order."""
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=generator, **kwargs)
