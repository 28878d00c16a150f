"""Image-classification arrays: the MNIST copy shipped with flrd, and torchvision sets.

Images are uint8 and labels int64 so that they index and partition cheaply; models
and :mod:`flrd.training` normalize on the fly.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = ["ImageArrays", "MnistArrays", "load_mnist", "load_torchvision"]

_MNIST_RESOURCE = "mnist.npz"


@dataclass(frozen=True)
class ImageArrays:
    """Train/test split of an image-classification data set.

    ``x_*`` are uint8 images with the sample axis first, ``y_*`` int64 class labels.
    The arrays are read-only because loaders cache and share them.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.dtype != np.uint8 or y.dtype != np.int64:
                raise ValueError(f"{split}: expected uint8 images and int64 labels, "
                                 f"got {x.dtype} and {y.dtype}")
            if y.ndim != 1 or x.shape[0] != y.shape[0]:
                raise ValueError(f"{split}: {x.shape[0]} images but labels of shape {y.shape}")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"train images {self.x_train.shape[1:]} and test images "
                             f"{self.x_test.shape[1:]} differ in shape")


@dataclass(frozen=True)
class MnistArrays(ImageArrays):
    """MNIST: ``x_train (60000, 28, 28)``, ``x_test (10000, 28, 28)`` uint8, labels 0..9."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.x_train.shape != (60000, 28, 28) or self.x_test.shape != (10000, 28, 28):
            raise ValueError(f"not MNIST-shaped: {self.x_train.shape}, {self.x_test.shape}")


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@functools.cache
def load_mnist() -> MnistArrays:
    """Load the MNIST copy shipped inside the package (offline, cached).

    Example:
        >>> data = load_mnist()
        >>> data.x_train.shape, data.x_train.dtype, data.y_train.dtype
        ((60000, 28, 28), dtype('uint8'), dtype('int64'))
    """
    # as_file gives a real path even when the package is installed as a zip.
    with resources.as_file(resources.files(__package__) / _MNIST_RESOURCE) as path:
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    for key in ("y_train", "y_test"):  # stored as uint8 to keep the file small
        arrays[key] = arrays[key].astype(np.int64)
    return MnistArrays(**{k: _read_only(v) for k, v in arrays.items()})


def _torchvision_split(name: str, root: Path, train: bool, download: bool) -> tuple[np.ndarray, np.ndarray]:
    import torchvision  # lazy: an optional dependency (flrd[sim]) that is slow to import

    if name == "cifar10":
        ds = torchvision.datasets.CIFAR10(str(root), train=train, download=download)
        images = np.asarray(ds.data).transpose(0, 3, 1, 2)  # NHWC on disk -> NCHW for torch
        labels = np.asarray(ds.targets)
    else:
        ds = torchvision.datasets.SVHN(str(root), split="train" if train else "test",
                                       download=download)
        images, labels = np.asarray(ds.data), np.asarray(ds.labels)  # already NCHW, 0..9
    return np.ascontiguousarray(images, dtype=np.uint8), labels.astype(np.int64)


def load_torchvision(name: Literal["cifar10", "svhn"], root: str | Path,
                     download: bool = False) -> ImageArrays:
    """Load CIFAR-10 or SVHN through torchvision as uint8 NCHW ``(N, 3, 32, 32)`` arrays.

    Nothing is downloaded unless ``download=True``; a missing data set raises
    :class:`FileNotFoundError` saying how to get it.

    Example:
        >>> load_torchvision("cifar10", "/nonexistent")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: cifar10 was not found under /nonexistent...
    """
    if name not in ("cifar10", "svhn"):
        raise ValueError(f"unknown data set {name!r}; expected 'cifar10' or 'svhn'")
    try:
        import torchvision  # noqa: F401  (checked here to give an install hint)
    except ImportError as err:
        raise ImportError("load_torchvision needs torchvision: pip install 'flrd[sim]'") from err
    root = Path(root)
    try:
        x_train, y_train = _torchvision_split(name, root, True, download)
        x_test, y_test = _torchvision_split(name, root, False, download)
    except RuntimeError as err:  # torchvision's "Dataset not found or corrupted"
        raise FileNotFoundError(
            f"{name} was not found under {root}. Download it once on a machine with network "
            f"access with flrd.datasets.load_torchvision({name!r}, {str(root)!r}, download=True), "
            f"or copy torchvision's files for {name} into that folder.") from err
    return ImageArrays(*(_read_only(a) for a in (x_train, y_train, x_test, y_test)))
