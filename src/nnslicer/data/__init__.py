"""Dataset readers (embedded MNIST digits, Fashion-MNIST, CIFAR-10 binary, samples)."""

from nnslicer.data.datasets import (
    DATASETS,
    DEFAULT_DATASET,
    ArrayDataset,
    DatasetFormatError,
    DatasetNotFound,
    load_dataset,
    read_cifar10_binary,
    read_idx,
)

__all__ = [
    "DATASETS",
    "DEFAULT_DATASET",
    "ArrayDataset",
    "DatasetFormatError",
    "DatasetNotFound",
    "load_dataset",
    "read_cifar10_binary",
    "read_idx",
]
