"""Handwritten-digit data for the demo: scikit-learn's bundled digits (no download) or MNIST from
its IDX files.

* ``load_digits(seed, test_size=0.2)``: the 1,797 8x8 images of ``sklearn.datasets.load_digits``
  (values 0..16), scaled to [0, 1], upsampled to 28x28 (bilinear) so that they fit LeNet-5's
  1x28x28 input, with a stratified held-out split (``test_size`` of each class, drawn with
  ``seed``). scikit-learn is needed only here and is imported lazily.
* ``load_mnist(root)``: MNIST's standard files ``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (raw or
  ``.gz``; also the ``train-images.idx3-ubyte`` spelling and torchvision's ``MNIST/raw/`` folder),
  with MNIST's own train/test split.
* ``read_idx(path)``: one IDX file (raw or gzip) as a tensor.

Both loaders return a ``Dataset`` of float32 ``[N, 1, 28, 28]`` images normalised with the
training set's mean and standard deviation, and int64 labels.
"""

from __future__ import annotations

import gzip
import os
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["Dataset", "load_digits", "load_mnist", "read_idx", "MNIST_FILES"]


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor  # float32 [N, 1, 28, 28], normalised
    y_train: torch.Tensor  # int64 [N]
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int = 10

    def subset(self, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> "Dataset":
        """A random subset (the demo's ``--quick`` mode), drawn with ``seed``."""
        g = torch.Generator().manual_seed(seed)

        def pick(x, y, n):
            if n is None or n >= len(y):
                return x, y
            idx = torch.randperm(len(y), generator=g)[:n]
            return x[idx], y[idx]

        xtr, ytr = pick(self.x_train, self.y_train, n_train)
        xte, yte = pick(self.x_test, self.y_test, n_test)
        return Dataset(f"{self.name} (subset)", xtr, ytr, xte, yte, self.num_classes)

    def describe(self) -> str:
        return (f"{self.name}: {len(self.y_train)} training / {len(self.y_test)} test images, "
                f"{tuple(self.x_train.shape[1:])}, {self.num_classes} classes")


def _normalise(x_train: torch.Tensor, x_test: torch.Tensor):
    """Zero mean, unit variance with the training set's statistics (one scalar each, as MNIST's
    customary 0.1307/0.3081)."""
    mean, std = x_train.mean(), x_train.std()
    return (x_train - mean) / std, (x_test - mean) / std


def _stratified_split(y: torch.Tensor, test_size: float, seed: int):
    """Indices (train, test): ``round(test_size * n_c)`` test samples of every class ``c``."""
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = int(round(test_size * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    train, test = torch.cat(train), torch.cat(test)
    # Mix the classes (the per-class blocks above are ordered by label).
    return train[torch.randperm(len(train), generator=g)], test[torch.randperm(len(test), generator=g)]


def load_digits(seed: int = 0, test_size: float = 0.2, size: int = 28) -> Dataset:
    """scikit-learn's digits (1,797 8x8 images, bundled with scikit-learn: no download), upsampled
    to ``size`` x ``size``, with a stratified ``test_size`` held-out split drawn with ``seed``."""
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"load_digits: test_size must be in (0, 1), got {test_size}")
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as exc:
        raise ImportError("the digits data set comes with scikit-learn, which is not installed: "
                          "`pip install scikit-learn` (or `pip install fastcnn[demo]`, or `make demo`), "
                          "or pass MNIST's IDX files with --data DIR") from exc
    d = _sk_load_digits()
    x = torch.as_tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # [1797, 1, 8, 8], values 0..16
    y = torch.as_tensor(d.target, dtype=torch.int64)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    tr, te = _stratified_split(y, test_size, seed)
    x_train, x_test = _normalise(x[tr], x[te])
    return Dataset("scikit-learn digits (8x8 upsampled to 28x28)", x_train.contiguous(), y[tr], x_test.contiguous(),
                   y[te])


# ------------------------------------------------------------------------------------------------
# MNIST (IDX files)
# ------------------------------------------------------------------------------------------------

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# IDX type codes (the third byte of the magic number).
_IDX_DTYPES = {0x08: (torch.uint8, 1), 0x09: (torch.int8, 1), 0x0B: (torch.int16, 2), 0x0C: (torch.int32, 4),
               0x0D: (torch.float32, 4), 0x0E: (torch.float64, 8)}


def read_idx(path: str) -> torch.Tensor:
    """One IDX file (``.gz`` or raw) as a tensor of its type and shape.

    Format: 2 zero bytes, a type code, the number of dimensions, then each dimension as a
    big-endian int32, then the data (big-endian)."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"read_idx: cannot read {path}: {exc}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"read_idx: {path} is not an IDX file (magic bytes {data[:4].hex() or 'missing'})")
    dtype, itemsize = _IDX_DTYPES[data[2]]
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"read_idx: {path} is truncated (header of {ndim} dimensions)")
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    n = 1
    for s in shape:
        n *= s
    if len(data) - header != n * itemsize:
        raise ValueError(f"read_idx: {path} holds {len(data) - header} data bytes, its header {shape} says "
                         f"{n * itemsize}")
    if n == 0:
        return torch.empty(shape, dtype=dtype)
    raw = torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8)
    if itemsize > 1 and sys.byteorder == "little":
        raw = raw.view(-1, itemsize).flip(1).contiguous()  # big-endian file -> little-endian host
    return raw.view(dtype).reshape(shape)


def _find_mnist_file(root: str, stem: str) -> str | None:
    dotted = stem.replace("-idx", ".idx")  # train-images.idx3-ubyte (another common spelling)
    for folder in (root, os.path.join(root, "raw"), os.path.join(root, "MNIST", "raw")):
        for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
            p = os.path.join(folder, name)
            if os.path.isfile(p):
                return p
    return None


def load_mnist(root: str) -> Dataset:
    """MNIST from its four IDX files in ``root`` (raw or ``.gz``), with its own train/test split."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"--data {root}: no such directory (expected MNIST's IDX files: "
                                f"{', '.join(MNIST_FILES.values())}, raw or .gz)")
    paths, missing = {}, []
    for key, stem in MNIST_FILES.items():
        p = _find_mnist_file(root, stem)
        if p is None:
            missing.append(stem + "[.gz]")
        paths[key] = p
    if missing:
        raise FileNotFoundError(f"--data {root}: missing MNIST file(s) {', '.join(missing)} (looked in {root}, "
                                f"{root}/raw and {root}/MNIST/raw)")
    t = {k: read_idx(p) for k, p in paths.items()}
    for split in ("train", "test"):
        xi, yi = t[f"{split}_images"], t[f"{split}_labels"]
        if xi.dim() != 3 or yi.dim() != 1 or xi.shape[0] != yi.shape[0]:
            raise ValueError(f"--data {root}: {split} images {tuple(xi.shape)} and labels {tuple(yi.shape)} do not "
                             "match (expected [N, H, W] and [N])")
    x_train = t["train_images"].to(torch.float32).unsqueeze(1) / 255.0
    x_test = t["test_images"].to(torch.float32).unsqueeze(1) / 255.0
    if x_train.shape[-2:] != (28, 28):
        x_train = F.interpolate(x_train, size=(28, 28), mode="bilinear", align_corners=False)
        x_test = F.interpolate(x_test, size=(28, 28), mode="bilinear", align_corners=False)
    x_train, x_test = _normalise(x_train, x_test)
    y_train, y_test = t["train_labels"].to(torch.int64), t["test_labels"].to(torch.int64)
    num_classes = int(max(y_train.max().item(), y_test.max().item())) + 1 if len(y_train) else 10
    return Dataset(f"MNIST ({root})", x_train.contiguous(), y_train, x_test.contiguous(), y_test,
                   max(num_classes, 10))
