"""veritrain.data: file formats and layouts on tiny generated files; real data behind `realdata`."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from veritrain.data import (
    CIFAR10_CLASSES,
    DATASETS,
    DataError,
    get_cache_dir,
    get_data_root,
    load_dataset,
    make_loader,
    read_idx,
    take_subset,
    to_tensor_dataset,
    write_idx,
)
from veritrain.data import download as dl
from veritrain.data import images

try:
    from PIL import Image
except ImportError:  # Pillow is optional: only the image-file layouts need it
    Image = None
needs_pil = pytest.mark.skipif(Image is None, reason="Pillow is not installed (pip install pillow)")


@pytest.fixture(autouse=True)
def _isolated(request, tmp_path, monkeypatch):
    """Every test but the real-data ones gets its own cache dir and no data root from the environment."""
    if request.node.get_closest_marker("realdata"):
        return
    monkeypatch.setenv("VERITRAIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VERITRAIN_DATA", raising=False)


def _no_network(monkeypatch):
    def refuse(url, timeout):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(dl, "_urlopen", refuse)


# ---------------------------------------------------------------- registry and paths
def test_registry_and_normalisation():
    assert set(DATASETS) == {"mnist", "fashion-mnist", "cifar10", "imagenet200", "mnist-mini"}
    for name in ("mnist", "fashion-mnist", "mnist-mini"):
        info = DATASETS.get(name)
        assert (info.shape, info.num_classes, info.mean, info.std) == ((1, 28, 28), 10, (0.0,), (1.0,))
    for name, k in (("cifar10", 10), ("imagenet200", 200)):
        info = DATASETS.get(name)
        assert info.shape == (3, 32, 32) and info.num_classes == k
        assert info.mean == (0.485, 0.456, 0.406) and info.std == (0.225, 0.225, 0.225)
    assert list(CIFAR10_CLASSES) == sorted(CIFAR10_CLASSES)  # canonical order == folder order
    with pytest.raises(KeyError, match="choose one of"):
        load_dataset("svhn")
    with pytest.raises(DataError, match="split"):
        load_dataset("mnist-mini", split="val")


def test_data_root_and_cache_dir(monkeypatch, tmp_path):
    assert get_data_root("/x/y") == Path("/x/y")
    assert get_data_root(None) == Path("~/.cache/veritrain").expanduser()
    monkeypatch.setenv("VERITRAIN_DATA", str(tmp_path))
    assert get_data_root(None) == tmp_path and get_data_root("/x") == Path("/x")
    assert get_cache_dir(None) == tmp_path / "cache"


# ---------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, dtype, suffix):
    a = (np.arange(2 * 3 * 4) % 100).astype(dtype).reshape(2, 3, 4)
    path = tmp_path / f"a-idx3{suffix}"
    write_idx(path, a)
    b = read_idx(path)
    assert b.dtype == a.dtype and b.shape == a.shape and np.array_equal(a, b)


def _mnist_files(folder: Path, n_train=12, n_test=5, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n).astype(np.uint8)
        ext = ".gz" if gz else ""
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", x)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", y)
        out[prefix] = (x, y)
    return out


@pytest.mark.parametrize("layout,gz", [("mnist", True), ("mnist", False), ("MNIST/raw", True)])
def test_mnist_layouts(tmp_path, layout, gz):
    ref = _mnist_files(tmp_path / layout, gz=gz)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ds = load_dataset("mnist", split, root=tmp_path, download=False)
        x, y = ds.tensors
        assert x.shape == (len(ref[prefix][0]), 1, 28, 28) and x.dtype == torch.float32
        assert y.dtype == torch.int64
        assert torch.equal(x[:, 0], torch.from_numpy(ref[prefix][0]).float() / 255)
        assert torch.equal(y, torch.from_numpy(ref[prefix][1]).long())


def test_fashion_mnist_layout_and_env_root(tmp_path, monkeypatch):
    ref = _mnist_files(tmp_path / "fashion-mnist", seed=1)
    monkeypatch.setenv("VERITRAIN_DATA", str(tmp_path))
    ds = load_dataset("fashion-mnist", "test", download=False)
    assert torch.equal(ds.tensors[1], torch.from_numpy(ref["t10k"][1]).long())
    assert ds.classes[9] == "Ankle boot"
    with pytest.raises(DataError, match="MNIST not found"):  # MNIST files are not Fashion-MNIST's
        load_dataset("mnist", "test", download=False)


def test_idx_corrupt_files(tmp_path):
    folder = tmp_path / "mnist"
    _mnist_files(folder, gz=False)
    img = folder / "train-images-idx3-ubyte"
    good = img.read_bytes()

    img.write_bytes(good[:-7])  # truncated
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte is truncated"):
        load_dataset("mnist", root=tmp_path, download=False)
    img.write_bytes(good + b"\0")  # trailing bytes
    with pytest.raises(DataError, match="too long"):
        load_dataset("mnist", root=tmp_path, download=False)
    img.write_bytes(b"\x12\x34" + good[2:])  # bad magic number
    with pytest.raises(DataError, match="bad magic"):
        load_dataset("mnist", root=tmp_path, download=False)

    # a gzip file cut in the middle
    img.unlink()
    gz = folder / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(good)[:100])
    with pytest.raises(DataError, match=r"cannot read .*train-images-idx3-ubyte.gz"):
        load_dataset("mnist", root=tmp_path, download=False)
    gz.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        load_dataset("mnist", root=tmp_path, download=False)
    gz.unlink()
    img.write_bytes(good)

    labels = folder / "train-labels-idx1-ubyte"
    write_idx(labels, np.full(12, 10, np.uint8))  # label 10 of 10 classes
    with pytest.raises(DataError, match="labels range"):
        load_dataset("mnist", root=tmp_path, download=False)
    write_idx(labels, np.zeros(11, np.uint8))  # one label short
    with pytest.raises(DataError, match="labels for 12 images"):
        load_dataset("mnist", root=tmp_path, download=False)


def test_float_data_is_checked():
    info = DATASETS.get("mnist")
    y = np.zeros(2, np.int64)
    x = np.zeros((2, 28, 28), np.float32)
    assert to_tensor_dataset(x, y, info, "ok").tensors[0].shape == (2, 1, 28, 28)
    for bad, msg in ((np.nan, "NaN or inf"), (np.inf, "NaN or inf"), (1.5, "expected \\[0, 1\\]"), (-0.1, "expected")):
        x[1, 3, 4] = bad
        with pytest.raises(DataError, match=msg):
            to_tensor_dataset(x, y, info, "src")
        x[1, 3, 4] = 0
    with pytest.raises(DataError, match="needs \\(1, 28, 28\\)"):
        to_tensor_dataset(np.zeros((2, 27, 28), np.uint8), y, info, "src")


def test_missing_files_message(tmp_path, monkeypatch):
    with pytest.raises(DataError) as e:
        load_dataset("mnist", "test", root=tmp_path, download=False)
    msg = str(e.value)
    assert "\n" not in msg
    assert "t10k-images-idx3-ubyte.gz" in msg and "t10k-labels-idx1-ubyte.gz" in msg
    assert str(tmp_path / "mnist") in msg and "VERITRAIN_DATA" in msg and "download skipped" in msg

    _no_network(monkeypatch)
    with pytest.raises(DataError, match="download failed: .*no network in tests") as e:
        load_dataset("mnist", "test", root=tmp_path)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "mnist").exists()  # nothing is created when offline
    for name, hint in (
        ("cifar10", "cifar-10-python.tar.gz"),
        ("imagenet200", "tiny-imagenet-200"),
        ("fashion-mnist", "fashion-mnist"),
    ):
        with pytest.raises(DataError, match=hint) as e:
            load_dataset(name, "test", root=tmp_path)
        assert "\n" not in str(e.value)


def test_download_checks_md5(tmp_path, monkeypatch):
    src = tmp_path / "server"
    _mnist_files(src)
    served = []

    def fake_urlopen(url, timeout):
        served.append(url)
        return io.BytesIO((src / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(dl, "_urlopen", fake_urlopen)
    res = dict(dl.RESOURCES["mnist"])
    for n in res:
        res[n] = dl.Resource(n, dl.md5sum(src / n), ("http://mirror-a/", "http://mirror-b/"))
    monkeypatch.setitem(dl.RESOURCES, "mnist", res)
    root = tmp_path / "root"
    ds = load_dataset("mnist", "test", root=root)
    assert len(ds) == 5 and (root / "mnist" / "t10k-images-idx3-ubyte.gz").is_file()
    assert not any(p.name.endswith(".part") for p in (root / "mnist").iterdir())

    # a corrupt mirror is rejected by the md5 check, the next mirror is used
    bad = dl.Resource("train-images-idx3-ubyte.gz", "0" * 32, ("http://mirror-a/",))
    with pytest.raises(dl.DownloadError, match="md5 mismatch"):
        dl.download(bad, tmp_path / "x")
    assert not (tmp_path / "x" / "train-images-idx3-ubyte.gz").exists()


# ---------------------------------------------------------------- CIFAR-10: canonical pickles
def _cifar_batches(folder: Path, n=4, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ref = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        (folder / name).write_bytes(pickle.dumps({"batch_label": name, "data": data, "labels": labels}, protocol=2))
        ref[name] = (data, labels)
    return ref


def test_cifar_python_pickles(tmp_path):
    ref = _cifar_batches(tmp_path / "cifar-10-batches-py")
    ds = load_dataset("cifar10", "train", root=tmp_path, download=False)
    x, y = ds.tensors
    assert x.shape == (20, 3, 32, 32) and y.tolist() == sum((ref[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    data = ref["data_batch_1"][0]
    # row layout: 1024 red, 1024 green, 1024 blue values, each row-major 32x32
    assert x[0, 1, 2, 3] == data[0, 1024 + 2 * 32 + 3] / 255
    assert torch.equal(x[:4], torch.from_numpy(data.reshape(4, 3, 32, 32)).float() / 255)
    test = load_dataset("cifar10", "test", root=tmp_path, download=False)
    assert len(test) == 4 and test.classes == list(CIFAR10_CLASSES)


def test_cifar_python_tarball_and_unsafe_pickle(tmp_path):
    src = tmp_path / "src"
    ref = _cifar_batches(src / "cifar-10-batches-py")
    root = tmp_path / "root"
    root.mkdir()
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    test = load_dataset("cifar10", "test", root=root, download=False)
    assert torch.equal(test.tensors[0], torch.from_numpy(ref["test_batch"][0].reshape(-1, 3, 32, 32)).float() / 255)
    assert not (root / "cifar-10-batches-py").exists()  # read in place, the root may be read-only

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (src / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({"data": Evil(), "labels": []}))
    with pytest.raises(DataError, match="refusing to load"):
        load_dataset("cifar10", "test", root=src, download=False)


# ---------------------------------------------------------------- CIFAR-10: image folders (+ cache)
def _png_tree(base: Path, classes, per_class=2, size=32, seed=0, mode="RGB"):
    """base/<class>/<i>.png; returns {path: array}."""
    rng = np.random.default_rng(seed)
    out = {}
    for c in classes:
        (base / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = (size, size, 3) if mode == "RGB" else (size, size)
            a = rng.integers(0, 256, shape, dtype=np.uint8)
            p = base / c / f"{i:04d}.png"
            Image.fromarray(a, mode).save(p)
            out[p] = a
    return out


def _forbid_decoding(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("decoded again: the cache was not used")

    monkeypatch.setattr(images, "decode_image", boom)


@needs_pil
def test_cifar_image_folders_and_cache(tmp_path, monkeypatch):
    root = tmp_path / "root"
    files = _png_tree(root / "cifar10" / "train", CIFAR10_CLASSES)
    _png_tree(root / "cifar10" / "test", CIFAR10_CLASSES, per_class=1, seed=1)
    ds = load_dataset("cifar10", "train", root=root, download=False)
    x, y = ds.tensors
    # folder order (class by class) mixed by the fixed permutation, so the first N images span the classes
    order = np.random.default_rng(images.ORDER_SEED).permutation(20)
    assert x.shape == (20, 3, 32, 32) and y.tolist() == [[i for i in range(10) for _ in range(2)][j] for j in order]
    assert len(set(y[:10].tolist())) > 3
    first = files[root / "cifar10" / "train" / "airplane" / "0000.png"]
    assert torch.equal(x[order.tolist().index(0)], torch.from_numpy(first).permute(2, 0, 1).float() / 255)
    cached = list((tmp_path / "cache" / "decoded").glob("*.npz"))
    assert len(cached) == 1

    with monkeypatch.context() as m:  # second load: served from the cache, nothing decoded
        _forbid_decoding(m)
        again = load_dataset("cifar10", "train", root=root, download=False)
        assert torch.equal(again.tensors[0], x)

    # an edited file changes the key: decoded again
    p = root / "cifar10" / "train" / "truck" / "0001.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(p)
    os.utime(p, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    changed = load_dataset("cifar10", "train", root=root, download=False)
    assert changed.tensors[0][order.tolist().index(19)].abs().sum() == 0

    (root / "cifar10" / "test" / "unicorn").mkdir()
    with pytest.raises(DataError, match="class folders"):
        load_dataset("cifar10", "test", root=root, download=False)


@needs_pil
def test_cifar_jpeg_tarball_read_only_root(tmp_path, monkeypatch):
    src = tmp_path / "src"
    files = _png_tree(src / "cifar10" / "test", CIFAR10_CLASSES, per_class=1)
    _png_tree(src / "cifar10" / "train", CIFAR10_CLASSES, per_class=1, seed=3)
    root = tmp_path / "ro"
    root.mkdir()
    with tarfile.open(root / "cifar10-jpeg.tar.gz", "w:gz") as tar:
        tar.add(src / "cifar10", arcname="cifar10")
    root.chmod(0o555)
    try:
        ds = load_dataset("cifar10", "test", root=root, download=False)
        assert sorted(os.listdir(root)) == ["cifar10-jpeg.tar.gz"]  # nothing written next to the tarball
        x, y = ds.tensors
        order = np.random.default_rng(images.ORDER_SEED).permutation(10).tolist()
        assert y.tolist() == order  # one image per class, mixed by the fixed permutation
        assert torch.equal(
            x[order.index(3)],
            torch.from_numpy(files[src / "cifar10" / "test" / "cat" / "0000.png"]).permute(2, 0, 1) / 255,
        )
        with monkeypatch.context() as m:
            _forbid_decoding(m)
            assert torch.equal(load_dataset("cifar10", "test", root=root, download=False).tensors[0], x)
    finally:
        root.chmod(0o755)


def test_missing_pillow_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "PIL", None)
    with pytest.raises(DataError, match="Pillow is needed.*pip install pillow"):
        images.decode_image(b"", "x.png")


# ---------------------------------------------------------------- ImageNet-200 (Tiny ImageNet layout)
@needs_pil
def test_imagenet200_layout(tmp_path):
    base = tmp_path / "tiny-imagenet-200"
    wnids = [f"n{i:08d}" for i in range(200)][::-1]  # wnids.txt is not sorted; labels follow sorted order
    base.mkdir()
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for w in wnids:
        (base / "train" / w / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(a).save(base / "train" / "n00000007" / "images" / "n00000007_0.JPEG", format="PNG")
    g = rng.integers(0, 256, (64, 64), dtype=np.uint8)  # Tiny ImageNet has some greyscale images
    Image.fromarray(g, "L").save(base / "train" / "n00000199" / "images" / "n00000199_0.JPEG", format="PNG")
    (base / "val" / "images").mkdir(parents=True)
    ann = []
    for i, w in enumerate(["n00000003", "n00000150"]):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
            base / "val" / "images" / f"val_{i}.JPEG", format="PNG"
        )
        ann.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(ann) + "\n")

    train = load_dataset("imagenet200", "train", root=tmp_path, download=False)
    x, y = train.tensors
    assert x.shape == (2, 3, 32, 32) and y.tolist() == [7, 199]
    assert torch.equal(x[0], torch.from_numpy(a[16:48, 16:48]).permute(2, 0, 1).float() / 255)  # centre crop
    assert torch.equal(x[1, 0], x[1, 2]) and torch.equal(x[1, 0], torch.from_numpy(g[16:48, 16:48]).float() / 255)
    assert train.classes == sorted(wnids)
    test = load_dataset("imagenet200", "test", root=tmp_path, download=False)
    assert test.tensors[1].tolist() == [3, 150]

    (base / "wnids.txt").write_text("\n".join(wnids[:10]))
    with pytest.raises(DataError, match="lists 10 classes"):
        load_dataset("imagenet200", "train", root=tmp_path, download=False)


# ---------------------------------------------------------------- mnist-mini (embedded)
def test_mnist_mini_embedded(tmp_path, monkeypatch):
    monkeypatch.setenv("VERITRAIN_DATA", str(tmp_path / "does-not-exist"))
    for split, n in (("train", 5000), ("test", 1000)):
        ds = load_dataset("mnist-mini", split)
        x, y = ds.tensors
        assert x.shape == (n, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert 0 <= x.min() and x.max() <= 1 and x.max() == 1
        assert torch.equal(y.bincount(minlength=10), torch.full((10,), n // 10))
        assert 0.1 < x.mean() < 0.15  # MNIST's mean pixel is about 0.13
    path = Path(__file__).resolve().parents[1] / "veritrain" / "data" / "embedded" / "mnist_mini.npz"
    assert path.stat().st_size < 1_500_000
    with np.load(path) as z:
        assert len(np.unique(z["train_indices"])) == 5000 and z["train_indices"].max() < 60000
        assert "CC BY-SA 3.0" in str(z["license"])


# ---------------------------------------------------------------- subsets and loaders
def test_take_subset_and_loader():
    ds = load_dataset("mnist-mini", "test")
    first = take_subset(ds, 10)
    assert torch.equal(first.tensors[0], ds.tensors[0][:10]) and first.info is ds.info
    a, b, c = take_subset(ds, 50, seed=1), take_subset(ds, 50, seed=1), take_subset(ds, 50, seed=2)
    assert torch.equal(a.tensors[1], b.tensors[1]) and len(a) == 50
    assert not torch.equal(a.tensors[0], c.tensors[0])
    ids = take_subset(torch.utils.data.TensorDataset(torch.arange(100)), 60, seed=3).tensors[0]
    assert len(ids.unique()) == 60 and ids.tolist() != list(range(60))  # drawn without replacement
    assert take_subset(ds, 10**6) is ds and take_subset(ds, None) is ds
    with pytest.raises(ValueError, match="positive"):
        take_subset(ds, 0)
    loader = make_loader(a, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    batches = [xb.shape[0] for xb, _ in loader]
    assert batches == [16, 16, 16, 2]


# ---------------------------------------------------------------- real data (VERITRAIN_DATA)
def _real_root(*need: str) -> Path:
    env = os.environ.get("VERITRAIN_DATA")
    if not env:
        pytest.skip("real data: set VERITRAIN_DATA to a data root")
    root = Path(env)
    missing = [n for n in need if not (root / n).exists()]
    if missing:
        pytest.skip(f"real data: {root} lacks {', '.join(missing)}")
    return root


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_real_mnist(name):
    root = _real_root(f"{name}/train-images-idx3-ubyte.gz", f"{name}/t10k-images-idx3-ubyte.gz")
    train = load_dataset(name, "train", root=root, download=False)
    test = load_dataset(name, "test", root=root, download=False)
    assert train.tensors[0].shape == (60000, 1, 28, 28) and test.tensors[0].shape == (10000, 1, 28, 28)
    assert train.tensors[1].bincount().min() > 5000 and test.tensors[1].max() == 9
    if name == "mnist":
        assert train.tensors[1][:5].tolist() == [5, 0, 4, 1, 9]  # canonical order
        mini = load_dataset("mnist-mini", "train")
        with np.load(Path(__file__).resolve().parents[1] / "veritrain/data/embedded/mnist_mini.npz") as z:
            idx = torch.from_numpy(z["train_indices"]).long()
        assert torch.equal(train.tensors[0][idx], mini.tensors[0])


def _cifar_counts(split: str, n: int):
    root = _real_root("cifar10-jpeg.tar.gz")
    t = time.perf_counter()
    ds = load_dataset("cifar10", split, root=root, download=False)
    x, y = ds.tensors
    assert x.shape == (n, 3, 32, 32) and torch.equal(y.bincount(), torch.full((10,), n // 10))
    assert 0.3 < x.mean() < 0.6
    print(f"cifar10 {split}: {time.perf_counter() - t:.1f}s (cache dir {get_cache_dir()})")


@needs_pil
@pytest.mark.realdata
def test_real_cifar10_jpeg_test_split():
    """Decodes 10,000 JPEGs on the first run (a few seconds), then reads the cache."""
    _cifar_counts("test", 10000)


@needs_pil
@pytest.mark.realdata
@pytest.mark.slow
def test_real_cifar10_jpeg_train_split():
    """Decodes 50,000 JPEGs on the first run (~15 s), then reads the cache (~1 s)."""
    _cifar_counts("train", 50000)


def test_augmentation_shifts_and_flips_within_pixels_and_keeps_input() -> None:
    from veritrain.data.augment import augment, random_crop

    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 8, 8)
    before = x.clone()
    out = augment(x, "crop-flip", g)
    assert out.shape == x.shape and torch.equal(x, before)
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, x)
    assert augment(x, "none", g) is x
    # a crop is a shift: every kept pixel comes from the image at an offset of at most `pad`
    one = torch.arange(64.0).view(1, 1, 8, 8)
    c = random_crop(one, 2, torch.Generator().manual_seed(3))[0, 0]
    inside = c[c > 0]
    assert len(inside) >= 36 and torch.all(inside.diff() > 0)  # order kept row by row
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment(x, "mixup", g)


def test_crop_pad_bounds_the_shift() -> None:
    """`--augment-pad P`: every crop is the image shifted by at most P pixels in each direction."""
    from veritrain.data.augment import augment
    from veritrain.training.config import ConfigError, TrainConfig
    from veritrain.training.loop import validate_config

    img = torch.arange(1.0, 101.0).view(1, 1, 10, 10).expand(32, 1, 10, 10)
    for pad in (1, 3):
        out = augment(img, "crop", torch.Generator().manual_seed(pad), pad)
        for o in out:
            r, c = (o[0] > 0).nonzero()[0].tolist()  # the first kept pixel gives the shift
            v = int(o[0, r, c].item()) - 1
            dy, dx = v // 10 - r, v % 10 - c
            assert max(abs(dy), abs(dx)) <= pad
            assert torch.equal(o[0], torch.roll(img[0, 0], (-dy, -dx), (0, 1)) * (o[0] > 0))
    with pytest.raises(ConfigError, match="--augment-pad"):
        validate_config(TrainConfig(dataset="mnist", augment="crop", augment_pad=0))


def test_augmentation_defaults_per_dataset() -> None:
    from veritrain.training.config import TrainConfig

    assert TrainConfig(dataset="mnist").resolved().augment == "none"
    assert TrainConfig(dataset="cifar10").resolved().augment == "crop-flip"
