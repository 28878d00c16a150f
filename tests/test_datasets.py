"""flrd.datasets: the shipped MNIST copy, torchvision loading, client partitions."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flrd.datasets import DIRICHLET_MIN_SAMPLES, MnistArrays, load_mnist, load_torchvision, partition_indices

SCHEMES = ("iid", "dirichlet", "shards")


@pytest.fixture(scope="module")
def mnist() -> MnistArrays:
    return load_mnist()


def label_distributions(labels: np.ndarray, parts: list[np.ndarray]) -> np.ndarray:
    """(num_partitions, num_classes) rows of per-partition class frequencies."""
    counts = np.stack([np.bincount(labels[p], minlength=10) for p in parts])
    return counts / counts.sum(axis=1, keepdims=True)


def mean_tv_to_global(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean total-variation distance between partition and global label distributions."""
    global_dist = np.bincount(labels, minlength=10) / labels.size
    return float(0.5 * np.abs(label_distributions(labels, parts) - global_dist).sum(1).mean())


def assert_valid_partition(parts: list[np.ndarray], n: int, num_partitions: int) -> None:
    assert len(parts) == num_partitions
    assert all(p.size > 0 for p in parts)
    assert all(np.issubdtype(p.dtype, np.integer) for p in parts)
    assert all(np.all(np.diff(p) > 0) for p in parts)  # sorted, hence no repeats inside
    merged = np.sort(np.concatenate(parts))
    np.testing.assert_array_equal(merged, np.arange(n))  # disjoint and covering


def test_mnist_shapes_dtypes_and_labels(mnist: MnistArrays) -> None:
    assert mnist.x_train.shape == (60000, 28, 28) and mnist.x_test.shape == (10000, 28, 28)
    assert mnist.x_train.dtype == mnist.x_test.dtype == np.uint8
    assert mnist.y_train.shape == (60000,) and mnist.y_test.shape == (10000,)
    assert mnist.y_train.dtype == mnist.y_test.dtype == np.int64
    for y in (mnist.y_train, mnist.y_test):
        counts = np.bincount(y)
        assert counts.size == 10 and counts.min() > 0.08 * y.size  # all ten digits, roughly even
    assert mnist.x_train.max() == 255 and mnist.x_train.min() == 0
    assert 30 < mnist.x_train.mean() < 36  # MNIST's mean pixel is ~33.3


def test_mnist_is_cached_read_only_package_data(mnist: MnistArrays) -> None:
    assert load_mnist() is mnist
    with pytest.raises(ValueError):
        mnist.x_train[0, 0, 0] = 1
    data_file = resources.files("flrd.datasets") / "mnist.npz"
    assert data_file.is_file()
    with resources.as_file(data_file) as path:
        assert Path(path).stat().st_size < 15 * 2**20
        with np.load(path) as npz:
            assert npz["y_train"].dtype == np.uint8  # the compact on-disk form


def test_mnist_arrays_validate_shapes(mnist: MnistArrays) -> None:
    with pytest.raises(ValueError, match="labels"):
        MnistArrays(mnist.x_train, mnist.y_train[:10], mnist.x_test, mnist.y_test)
    with pytest.raises(ValueError, match="int64"):
        MnistArrays(mnist.x_train, mnist.y_train.astype(np.uint8), mnist.x_test, mnist.y_test)
    with pytest.raises(ValueError, match="MNIST"):
        MnistArrays(mnist.x_train[:5], mnist.y_train[:5], mnist.x_test, mnist.y_test)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("num_partitions", [100, 500, 1000])
def test_partitions_are_disjoint_covering_non_empty(mnist: MnistArrays, scheme: str,
                                                    num_partitions: int) -> None:
    parts = partition_indices(mnist.y_train, num_partitions, scheme, seed=7)
    assert_valid_partition(parts, 60000, num_partitions)
    if scheme == "dirichlet":
        assert min(p.size for p in parts) >= DIRICHLET_MIN_SAMPLES
    else:  # 60000 divides evenly for these counts
        assert {p.size for p in parts} == {60000 // num_partitions}


@pytest.mark.parametrize("scheme", SCHEMES)
def test_partitions_are_seeded(mnist: MnistArrays, scheme: str) -> None:
    a = partition_indices(mnist.y_train, 100, scheme, seed=3)
    b = partition_indices(mnist.y_train, 100, scheme, seed=3)
    c = partition_indices(mnist.y_train, 100, scheme, seed=4)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not all(np.array_equal(p, q) for p, q in zip(a, c))


def test_dirichlet_is_skewed_and_iid_is_not(mnist: MnistArrays) -> None:
    y = mnist.y_train
    iid = mean_tv_to_global(y, partition_indices(y, 100, "iid"))
    dirichlet = mean_tv_to_global(y, partition_indices(y, 100, "dirichlet", alpha=0.5))
    strong = mean_tv_to_global(y, partition_indices(y, 100, "dirichlet", alpha=0.05))
    mild = mean_tv_to_global(y, partition_indices(y, 100, "dirichlet", alpha=100.0))
    assert iid < 0.08  # ~600 samples per partition: only sampling noise
    assert dirichlet > 0.35 and dirichlet > 5 * iid
    assert strong > dirichlet > mild  # smaller alpha, stronger skew


def test_dirichlet_tops_up_when_samples_are_scarce() -> None:
    labels = np.repeat(np.arange(10), 300)  # 3000 samples for 1000 partitions
    parts = partition_indices(labels, 1000, "dirichlet", alpha=0.1, seed=0)
    assert_valid_partition(parts, 3000, 1000)
    assert min(p.size for p in parts) == 1  # max(1, 3000 // 2000): half the data stays put
    assert max(p.size for p in parts) > 3  # still unequal, not flattened


@pytest.mark.parametrize("num_partitions", [100, 1000])
def test_shards_give_few_labels_per_partition(mnist: MnistArrays, num_partitions: int) -> None:
    parts = partition_indices(mnist.y_train, num_partitions, "shards", shards_per_partition=2)
    labels_per_part = np.array([np.unique(mnist.y_train[p]).size for p in parts])
    # Only a shard straddling one of the 9 label boundaries can add a third label.
    assert np.sum(labels_per_part > 2) <= 9
    assert labels_per_part.max() <= 4
    assert mean_tv_to_global(mnist.y_train, parts) > 0.7


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 400), num_classes=st.integers(1, 12), data=st.data(),
       scheme=st.sampled_from(SCHEMES), seed=st.integers(0, 2**32 - 1))
def test_partition_invariants_on_small_inputs(n: int, num_classes: int, data: st.DataObject,
                                             scheme: str, seed: int) -> None:
    labels = np.random.default_rng(seed).integers(0, num_classes, n)
    num_partitions = data.draw(st.integers(1, n))
    spp = data.draw(st.integers(1, max(1, n // num_partitions)))
    alpha = data.draw(st.floats(0.01, 100.0))
    parts = partition_indices(labels, num_partitions, scheme, alpha=alpha,
                              shards_per_partition=spp, seed=seed)
    assert_valid_partition(parts, n, num_partitions)


def test_partition_rejects_bad_arguments() -> None:
    labels = np.zeros(100, dtype=np.int64)
    with pytest.raises(ValueError, match="scheme"):
        partition_indices(labels, 10, "pathological")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_partitions"):
        partition_indices(labels, 0)
    with pytest.raises(ValueError, match="num_partitions"):
        partition_indices(labels, 101)
    with pytest.raises(ValueError, match="alpha"):
        partition_indices(labels, 10, "dirichlet", alpha=0.0)
    with pytest.raises(ValueError, match="shards"):
        partition_indices(labels, 60, "shards", shards_per_partition=2)
    with pytest.raises(ValueError, match="1-D"):
        partition_indices(labels.reshape(10, 10), 2)


def test_load_torchvision_without_data_explains_how_to_get_it(tmp_path: Path) -> None:
    for name in ("cifar10", "svhn"):
        with pytest.raises(FileNotFoundError, match="download=True"):
            load_torchvision(name, tmp_path)  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())  # nothing downloaded or created
    with pytest.raises(ValueError, match="unknown"):
        load_torchvision("imagenet", tmp_path)  # type: ignore[arg-type]


def test_core_modules_import_no_torchvision_or_matplotlib() -> None:
    code = ("import sys, flrd.datasets, flrd.models, flrd.training; "
            "print(sorted({'torchvision', 'matplotlib'} & set(sys.modules)))")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"
