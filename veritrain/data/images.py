"""Image-file data sets: class folders (`<split>/<class>/*.jpg|png`), the CIFAR-10 JPEG tarball and
Tiny ImageNet (ImageNet-200). Decoded with Pillow (optional dependency) into uint8 (N, H, W, 3) arrays,
cached by `veritrain.data.cache`.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path, PurePosixPath
from typing import Iterable

import numpy as np

from veritrain.data.cache import cache_key, cached, file_signature, tree_signature
from veritrain.data.errors import DataError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm")


def _pil_image():
    try:
        from PIL import Image
    except ImportError:
        raise DataError("Pillow is needed to decode image files: pip install pillow") from None
    return Image


def decode_image(
    data: bytes | Path, name: str, size: tuple[int, int] | None = None, crop: int | None = None
) -> np.ndarray:
    """Decode one image to uint8 (H, W, 3) RGB (grey images are expanded).

    `size`: the (H, W) it must have (DataError otherwise). `crop`: centre-crop to crop x crop.
    """
    Image = _pil_image()
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as e:
        raise DataError(f"cannot decode image {name}: {e} (corrupt file? delete or replace it)") from None
    h, w = arr.shape[:2]
    if size is not None and (h, w) != tuple(size):
        raise DataError(f"image {name} is {h}x{w}, expected {size[0]}x{size[1]}")
    if crop is not None:
        if h < crop or w < crop:
            raise DataError(f"image {name} is {h}x{w}, smaller than the {crop}x{crop} crop")
        top, left = (h - crop) // 2, (w - crop) // 2
        arr = arr[top : top + crop, left : left + crop]
    return arr


#: folder layouts list images class by class; a fixed permutation (seed 0) mixes the classes so that
#: "the first N images" (--train-size, --n) is a class-balanced, reproducible sample, as in the canonical releases
ORDER_SEED = 0


def _stack(images: list[np.ndarray], labels: list[int], shape: tuple[int, int], source: str) -> dict[str, np.ndarray]:
    if not images:
        raise DataError(f"no images found in {source}")
    order = np.random.default_rng(ORDER_SEED).permutation(len(images))
    return {
        "x": np.stack(images).reshape(len(images), *shape, 3)[order],
        "y": np.asarray(labels, dtype=np.int64)[order],
    }


def _is_image(p: Path | PurePosixPath) -> bool:
    return p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and _is_image(p))


# ---------------------------------------------------------------- class folders
def folder_classes(split_dir: Path) -> list[str]:
    """Class names = the sorted sub-folder names (torchvision's ImageFolder convention)."""
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_image_folder(split_dir: Path, classes: Iterable[str], size: tuple[int, int]) -> dict[str, np.ndarray]:
    """`split_dir/<class>/*.jpg|png` -> {"x": uint8 (N, H, W, 3), "y": int64}; label = index in `classes`.

    Cached, keyed by the path, size and mtime of every image file.
    """
    classes = list(classes)
    files = [(i, f) for i, c in enumerate(classes) for f in _images_in(split_dir / c)]
    key = cache_key("folder", str(split_dir.resolve()), tuple(classes), size, tree_signature(f for _, f in files))

    def build() -> dict[str, np.ndarray]:
        imgs = [decode_image(f, str(f), size=size) for _, f in files]
        return _stack(imgs, [i for i, _ in files], size, str(split_dir))

    return cached(f"mixed-folder-{split_dir.parent.name}-{split_dir.name}", key, build)


# ---------------------------------------------------------------- class folders inside a tarball
def _tar_split_class(name: str, top: str) -> tuple[str, str] | None:
    """'top/<split>/<class>/<file>' (optionally with a leading './') -> (split, class)."""
    parts = PurePosixPath(name).parts
    if parts and parts[0] == ".":
        parts = parts[1:]
    if len(parts) != 4 or parts[0] != top or not _is_image(PurePosixPath(parts[3])):
        return None
    return parts[1], parts[2]


def load_image_tarball(
    tar_path: Path, top: str, split: str, classes: Iterable[str], size: tuple[int, int]
) -> dict[str, np.ndarray]:
    """Class folders `top/<split>/<class>/*` read straight from a .tar(.gz), never unpacked to disk.

    Only the requested split is decoded (evaluation needs just "test"); the arrays are cached, keyed by
    the tarball's path, size and mtime, in the cache dir, so the tarball may sit in a read-only folder.
    """
    classes = list(classes)
    index = {c: i for i, c in enumerate(classes)}

    def build() -> dict[str, np.ndarray]:
        items: list[tuple[int, str, np.ndarray]] = []
        try:
            with tarfile.open(tar_path, "r|*") as tar:  # streaming: sequential, fast
                for m in tar:
                    sc = _tar_split_class(m.name, top) if m.isfile() else None
                    if sc is None or sc[0] != split:
                        continue
                    if sc[1] not in index:
                        raise DataError(
                            f"{tar_path}: unexpected class folder {top}/{split}/{sc[1]}; expected {classes}"
                        )
                    f = tar.extractfile(m)
                    data = f.read() if f is not None else b""
                    items.append((index[sc[1]], m.name, decode_image(data, f"{tar_path}:{m.name}", size=size)))
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"cannot read {tar_path}: {e} (corrupt or truncated archive)") from None
        items.sort(key=lambda t: (t[0], t[1]))  # class order, then file name: the order of the folder layout
        return _stack([t[2] for t in items], [t[0] for t in items], size, f"{tar_path}:{top}/{split}")

    key = cache_key("tar", file_signature(tar_path), top, split, tuple(classes), size)
    return cached(f"mixed-tar-{top}-{split}", key, build)


# ---------------------------------------------------------------- Tiny ImageNet (ImageNet-200)
def load_tiny_imagenet(
    base: Path, split: str, crop: int = 32, num_classes: int = 200
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Tiny ImageNet: `train/<wnid>/images/*.JPEG`; `val/images/*` labelled by `val/val_annotations.txt`.

    split "test" is the labelled `val` set (the official test set has no labels). Labels index the
    sorted wnids of `wnids.txt` (ImageFolder order). Images (64x64) are centre-cropped to crop x crop,
    as the paper crops 64 -> 32 (Section V-A); train images are centre-cropped too (random crops
    would be data augmentation, which the paper's setup does not need). Returns (arrays, wnids).
    """
    wnids_file = base / "wnids.txt"
    try:
        wnids = sorted({w.strip() for w in wnids_file.read_text().split() if w.strip()})
    except OSError as e:
        raise DataError(f"cannot read {wnids_file}: {e}") from None
    if len(wnids) != num_classes:
        raise DataError(f"{wnids_file} lists {len(wnids)} classes, ImageNet-200 has {num_classes}")
    index = {w: i for i, w in enumerate(wnids)}
    if split == "train":
        files: list[tuple[int, Path]] = []
        for w in wnids:
            folder = base / "train" / w / "images"
            if not folder.is_dir():
                raise DataError(f"missing folder {folder} (Tiny ImageNet layout: train/<wnid>/images/*.JPEG)")
            files += [(index[w], f) for f in _images_in(folder)]
        extra: tuple = ()
    else:
        ann = base / "val" / "val_annotations.txt"
        try:
            lines = [ln.split("\t") for ln in ann.read_text().splitlines() if ln.strip()]
        except OSError as e:
            raise DataError(f"cannot read {ann}: {e}") from None
        files = []
        for i, parts in enumerate(lines):
            if len(parts) < 2 or parts[1].strip() not in index:
                raise DataError(f"{ann} line {i + 1}: expected '<file>\\t<wnid>\\t...' with a wnid of wnids.txt")
            f = base / "val" / "images" / parts[0].strip()
            if not f.is_file():
                raise DataError(f"{ann} line {i + 1}: image {f} is missing")
            files.append((index[parts[1].strip()], f))
        files.sort(key=lambda t: t[1].name)
        extra = (file_signature(ann),)
    key = cache_key(
        "tiny-imagenet", str(base.resolve()), split, crop, tuple(wnids), extra, tree_signature(f for _, f in files)
    )

    def build() -> dict[str, np.ndarray]:
        imgs = [decode_image(f, str(f), crop=crop) for _, f in files]
        return _stack(imgs, [i for i, _ in files], (crop, crop), str(base / split))

    return cached(f"mixed-imagenet200-{split}", key, build), wnids
