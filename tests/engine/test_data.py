"""Dataset readers and ArrayDataset."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from nnslicer.data import (
    DATASETS,
    DEFAULT_DATASET,
    ArrayDataset,
    DatasetFormatError,
    DatasetNotFound,
    load_dataset,
    read_cifar10_binary,
    read_idx,
)
from nnslicer.data.datasets import FASHION_MNIST_DIR, foolbox_data_dir

torch.set_num_threads(1)

IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D}


def idx_bytes(arr: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, IDX_CODES[arr.dtype.type], arr.ndim)
    header += struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


# --- IDX ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_read_idx_round_trip(tmp_path: Path, compress: bool, dtype: type) -> None:
    arr = (np.arange(2 * 3 * 4) * 7 - 20).reshape(2, 3, 4).astype(dtype)
    if dtype is np.uint8:
        arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    data = idx_bytes(arr)
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    path.write_bytes(gzip.compress(data) if compress else data)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


def test_read_idx_detects_gzip_by_content(tmp_path: Path) -> None:
    arr = np.array([3, 1, 4], dtype=np.uint8)
    (tmp_path / "labels").write_bytes(gzip.compress(idx_bytes(arr)))
    np.testing.assert_array_equal(read_idx(tmp_path / "labels"), arr)


@pytest.mark.parametrize(
    ("damage", "pattern"),
    [
        (lambda d: d[:-5], "truncated: header says"),
        (lambda d: d[:6], "truncated inside its IDX header"),
        (lambda d: d + b"\x00", "longer than its header says"),
        (lambda d: b"\x01\x02" + d[2:], "not an IDX file"),
        (lambda d: b"", "not an IDX file"),
        (lambda d: gzip.compress(d)[:-12], r"truncated \(the gzip stream ends early\)"),
        (lambda d: gzip.compress(d)[:10] + b"\xff" * 30, "corrupt gzip"),
    ],
)
def test_read_idx_errors(tmp_path: Path, damage, pattern: str) -> None:
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(damage(idx_bytes(np.zeros((4, 28, 28), dtype=np.uint8))))
    with pytest.raises(DatasetFormatError, match=pattern) as info:
        read_idx(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def _write_fashion(folder: Path, prefix: str, n: int, compress: bool) -> np.ndarray:
    folder.mkdir(parents=True, exist_ok=True)
    images = np.random.default_rng(0).integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
        data = idx_bytes(arr)
        name = f"{prefix}-{kind}-ubyte"
        if compress:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return images


def test_fashion_mnist_from_root(tmp_path: Path) -> None:
    images = _write_fashion(tmp_path, "train", 12, compress=True)
    _write_fashion(tmp_path / "fashion-mnist", "t10k", 5, compress=False)
    train = load_dataset("fashion-mnist", "train", root=tmp_path)
    assert train.x.shape == (12, 1, 28, 28) and train.x.dtype == torch.float32
    np.testing.assert_allclose(train.x[:, 0].numpy(), images / 255.0, rtol=1e-6)
    assert train.y.tolist() == [i % 10 for i in range(12)]
    assert train.classes[0] == "T-shirt/top" and train.classes[9] == "Ankle boot"
    assert len(load_dataset("fashion-mnist", "test", root=tmp_path)) == 5
    assert len(load_dataset("fashion-mnist", "train", root=tmp_path, limit=3)) == 3


def test_fashion_mnist_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFound, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", root=tmp_path)
    _write_fashion(tmp_path, "train", 4, compress=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(3, dtype=np.uint8)))
    with pytest.raises(DatasetFormatError, match="expected 4 labels"):
        load_dataset("fashion-mnist", root=tmp_path)


@pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist is not installed",
)
def test_fashion_mnist_installed() -> None:
    test = load_dataset("fashion-mnist", "test")
    assert test.x.shape == (10000, 1, 28, 28)
    assert torch.bincount(test.y).tolist() == [1000] * 10
    assert 0.0 <= float(test.x.min()) and float(test.x.max()) == 1.0
    assert len(load_dataset("fashion-mnist", "train", limit=100)) == 100


# --- CIFAR-10 binary --------------------------------------------------------------------------


def _cifar_records(labels: list[int], seed: int) -> tuple[bytes, np.ndarray]:
    images = np.random.default_rng(seed).integers(0, 256, (len(labels), 3, 32, 32), np.uint8)
    rows = [bytes([lab]) + img.tobytes() for lab, img in zip(labels, images, strict=True)]
    return b"".join(rows), images


def test_read_cifar10_binary(tmp_path: Path) -> None:
    data, images = _cifar_records([3, 9, 0], seed=1)
    (tmp_path / "test_batch.bin").write_bytes(data)
    x, y = read_cifar10_binary(tmp_path / "test_batch.bin")
    assert y.tolist() == [3, 9, 0]
    np.testing.assert_array_equal(x, images)
    # The record layout is label, 1024 red, 1024 green, 1024 blue bytes (row-major).
    assert x[1, 1, 0, 5] == data[3073 + 1 + 1024 + 5]
    assert read_cifar10_binary(tmp_path / "test_batch.bin", max_records=2)[1].tolist() == [3, 9]


def test_cifar10_dataset(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-bin"  # the folder the official tarball extracts to
    folder.mkdir()
    for i in range(1, 6):
        (folder / f"data_batch_{i}.bin").write_bytes(_cifar_records([i, i, i], seed=i)[0])
    test_data, test_images = _cifar_records([7, 2], seed=9)
    (folder / "test_batch.bin").write_bytes(test_data)

    train = load_dataset("cifar10", "train", root=tmp_path)
    assert (
        train.x.shape == (15, 3, 32, 32)
        and train.y.tolist() == [1] * 3 + [2] * 3 + [3] * 3 + [4] * 3 + [5] * 3
    )
    test = load_dataset("cifar10", "test", root=folder)
    np.testing.assert_allclose(test.x.numpy(), test_images / 255.0, rtol=1e-6)
    assert test.classes[test.y[0]] == "horse"
    assert load_dataset("cifar10", "train", root=tmp_path, limit=4).y.tolist() == [1, 1, 1, 2]


def test_cifar10_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFound, match="--data-root DIR with the CIFAR-10 \\*binary\\*"):
        load_dataset("cifar10", "test")
    with pytest.raises(DatasetNotFound, match="test_batch.bin not in"):
        load_dataset("cifar10", "test", root=tmp_path)
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"pickle")
    with pytest.raises(DatasetNotFound, match="never unpickles"):
        load_dataset("cifar10", "train", root=tmp_path)

    data, _ = _cifar_records([1, 2], seed=0)
    (tmp_path / "test_batch.bin").write_bytes(data[:-100])
    with pytest.raises(DatasetFormatError, match="truncated") as info:
        load_dataset("cifar10", "test", root=tmp_path)
    assert "\n" not in str(info.value)
    (tmp_path / "test_batch.bin").write_bytes(bytes([42]) + data[1:])
    with pytest.raises(DatasetFormatError, match="label 42"):
        load_dataset("cifar10", "test", root=tmp_path)


# --- embedded datasets ------------------------------------------------------------------------


def test_mnist_digits() -> None:
    assert DEFAULT_DATASET == "mnist-digits"
    train, test = load_dataset("mnist-digits", "train"), load_dataset("mnist-digits", "test")
    assert train.x.shape == (4000, 1, 28, 28) and test.x.shape == (1000, 1, 28, 28)
    assert train.x.dtype == torch.float32 and train.y.dtype == torch.int64
    assert float(train.x.min()) == 0.0 and float(train.x.max()) == 1.0
    assert torch.bincount(train.y).tolist() == [400] * 10
    assert torch.bincount(test.y).tolist() == [100] * 10
    assert train.classes == [str(i) for i in range(10)] and train.name == "mnist-digits"
    assert (train.in_channels, train.input_size, train.num_classes) == (1, 28, 10)
    # Pixels are k/255 for integer k: the values were scaled, not normalised.
    np.testing.assert_allclose((train.x * 255).round(), train.x * 255, atol=1e-4)
    # The training order is mixed, not sorted by class.
    assert len(set(train.y[:30].tolist())) >= 8

    again = load_dataset("mnist-digits", "train")
    assert torch.equal(again.x, train.x) and torch.equal(again.y, train.y)
    train_rows = {row.numpy().tobytes() for row in train.x}
    assert not any(row.numpy().tobytes() in train_rows for row in test.x)

    limited = load_dataset("mnist-digits", "test", limit=50)
    assert torch.equal(limited.x, test.x[:50])


def test_loaded_tensors_are_independent_copies() -> None:
    first = load_dataset("mnist-digits", "test", limit=10)
    first.x.fill_(0.5)
    assert float(load_dataset("mnist-digits", "test", limit=10).x.max()) == 1.0


def test_sklearn_digits() -> None:
    train, test = load_dataset("sklearn-digits", "train"), load_dataset("sklearn-digits", "test")
    assert len(train) + len(test) == 1797
    assert train.x.shape[1:] == (1, 8, 8) and float(train.x.max()) == 1.0
    assert float(train.x.min()) == 0.0
    assert set(torch.bincount(test.y).tolist()) <= {35, 36, 37}


@pytest.mark.skipif(foolbox_data_dir() is None, reason="foolbox is not installed")
def test_foolbox_samples() -> None:
    mnist = load_dataset("foolbox-mnist", "test")
    assert mnist.x.shape == (20, 1, 28, 28) and float(mnist.x.max()) <= 1.0
    # foolbox names its files <dataset>_<index>_<label>.png; these are its first labels.
    assert mnist.y[:5].tolist() == [7, 2, 1, 0, 4]
    cifar = load_dataset("foolbox-cifar10", "test")
    assert cifar.x.shape == (20, 3, 32, 32) and cifar.y[:3].tolist() == [3, 8, 8]
    assert cifar.classes[3] == "cat"
    # The RGB channels are not identical copies of one grey channel.
    assert not torch.equal(cifar.x[:, 0], cifar.x[:, 1])
    with pytest.raises(ValueError, match="no split 'train'"):
        load_dataset("foolbox-mnist", "train")


def test_unknown_dataset_and_bad_arguments() -> None:
    with pytest.raises(ValueError, match="known: mnist-digits, fashion-mnist, cifar10"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="no split 'val'"):
        load_dataset("mnist-digits", "val")
    with pytest.raises(ValueError, match="limit"):
        load_dataset("mnist-digits", limit=0)
    assert set(DATASETS) == {
        "mnist-digits",
        "fashion-mnist",
        "cifar10",
        "foolbox-mnist",
        "foolbox-cifar10",
        "sklearn-digits",
    }


# --- ArrayDataset -----------------------------------------------------------------------------


def _toy(n: int = 10) -> ArrayDataset:
    x = torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1) / n
    return ArrayDataset(x, torch.arange(n) % 3, "toy", ["a", "b", "c"])


def test_array_dataset_batches() -> None:
    data = _toy(10)
    sizes = [len(y) for _, y in data.batches(4)]
    assert sizes == [4, 4, 2]
    assert torch.equal(torch.cat([x for x, _ in data.batches(4)]), data.x)

    order = [torch.cat([y for _, y in data.batches(3, shuffle=True, seed=s)]) for s in (1, 1, 2)]
    assert torch.equal(order[0], order[1]) and not torch.equal(order[0], order[2])
    xs = torch.cat([x for x, _ in data.batches(3, shuffle=True, seed=5)])
    assert sorted(xs.flatten().tolist()) == data.x.flatten().tolist()
    with pytest.raises(ValueError, match="batch_size"):
        next(data.batches(0))


def test_array_dataset_subset_and_filter() -> None:
    data = _toy(10)
    sub = data.subset([9, 0, 3])
    assert sub.y.tolist() == [0, 0, 0]
    assert sub.x.flatten().tolist() == pytest.approx([0.9, 0.0, 0.3])
    assert sub.name == "toy" and sub.classes == data.classes
    assert len(data.subset(np.array([1, 2]))) == 2
    assert len(data.subset(torch.tensor([True, False] * 5))) == 5

    assert data.filter_classes([1]).y.tolist() == [1, 1, 1]
    assert data.filter_classes(["a", "c"]).y.tolist() == [0, 2, 0, 2, 0, 2, 0]
    with pytest.raises(ValueError, match="unknown class 'z'"):
        data.filter_classes(["z"])
    with pytest.raises(ValueError, match="out of range"):
        data.filter_classes([3])


def test_array_dataset_validation() -> None:
    with pytest.raises(ValueError, match="float32 NCHW"):
        ArrayDataset(torch.zeros(2, 4), torch.zeros(2, dtype=torch.int64), "t", ["a"])
    with pytest.raises(ValueError, match="int64"):
        ArrayDataset(torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.int32), "t", ["a"])
    with pytest.raises(ValueError, match="2 samples but y has 3"):
        ArrayDataset(torch.zeros(2, 1, 2, 2), torch.zeros(3, dtype=torch.int64), "t", ["a"])
