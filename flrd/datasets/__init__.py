"""Data for flrd experiments: the shipped MNIST copy, torchvision sets, client partitions.

Example:
    >>> from flrd.datasets import load_mnist, partition_indices
    >>> parts = partition_indices(load_mnist().y_train, 100, "dirichlet", alpha=0.5)
    >>> len(parts), min(map(len, parts)) >= 10
    (100, True)
"""

from .mnist import ImageArrays, MnistArrays, load_mnist, load_torchvision
from .partition import DIRICHLET_MIN_SAMPLES, partition_indices

__all__ = [
    "DIRICHLET_MIN_SAMPLES",
    "ImageArrays",
    "MnistArrays",
    "load_mnist",
    "load_torchvision",
    "partition_indices",
]
