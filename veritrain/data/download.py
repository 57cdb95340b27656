"""Fetch the canonical releases (the mirrors and md5 sums torchvision uses) with urllib and a short timeout."""

from __future__ import annotations

import hashlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

TIMEOUT_S = 10.0
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Resource:
    """One file of a canonical release: its name, md5 and the mirrors it can be fetched from."""

    filename: str
    md5: str
    mirrors: tuple[str, ...]


_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
_CIFAR_MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)

RESOURCES: dict[str, dict[str, Resource]] = {
    "mnist": {
        name: Resource(name, md5, _MNIST_MIRRORS)
        for name, md5 in (
            ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
            ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
            ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
        )
    },
    "fashion-mnist": {
        name: Resource(name, md5, _FASHION_MIRRORS)
        for name, md5 in (
            ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
            ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
            ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
        )
    },
    "cifar10": {
        "cifar-10-python.tar.gz": Resource(
            "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", _CIFAR_MIRRORS
        ),
    },
}


class DownloadError(OSError):
    """Every mirror failed; the message says why (one line)."""


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _urlopen(url: str, timeout: float):  # a seam for tests
    return urllib.request.urlopen(url, timeout=timeout)


def download(res: Resource, folder: Path, timeout: float = TIMEOUT_S) -> Path:
    """Download `res` into `folder` (atomically: a temporary file renamed after the md5 check)."""
    reasons = []
    for mirror in res.mirrors:
        url = mirror + res.filename
        tmp = folder / f".{res.filename}.{os.getpid()}.part"
        try:
            try:
                with _urlopen(url, timeout) as r:  # connect first: no folder is created when offline
                    folder.mkdir(parents=True, exist_ok=True)
                    with open(tmp, "wb") as f:
                        for chunk in iter(lambda: r.read(_CHUNK), b""):
                            f.write(chunk)
                got = md5sum(tmp)
                if got != res.md5:
                    raise DownloadError(f"md5 mismatch for {url}: got {got}, expected {res.md5}")
                target = folder / res.filename
                os.replace(tmp, target)
                return target
            finally:
                tmp.unlink(missing_ok=True)
        except Exception as e:  # network, HTTP, permission or checksum: try the next mirror
            reasons.append(f"{url}: {type(e).__name__}: {' '.join(str(e).split())}")
    raise DownloadError("; ".join(reasons))
