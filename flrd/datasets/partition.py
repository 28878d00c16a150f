"""Split a labelled data set among federated clients: IID, Dirichlet label skew, shards."""

# Hand-written in numpy: flwr-datasets' partitioners need the HF `datasets` stack
# (pyarrow, pandas) plus matplotlib/seaborn for what is a few array operations offline.

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["DIRICHLET_MIN_SAMPLES", "partition_indices"]

Scheme = Literal["iid", "dirichlet", "shards"]

#: Fewest samples a Dirichlet partition may hold; lowered to ``n // (2 * num_partitions)``
#: (at least 1) when data are scarce, so that top-ups move at most half of the samples.
DIRICHLET_MIN_SAMPLES = 10


def partition_indices(labels: ArrayLike, num_partitions: int, scheme: Scheme = "iid", *,
                      alpha: float = 0.5, shards_per_partition: int = 2,
                      seed: int = 0) -> list[np.ndarray]:
    """Split sample indices ``0..len(labels)-1`` into ``num_partitions`` non-empty parts.

    The parts are disjoint, together cover every sample, and each is sorted ascending.

    - ``"iid"``: a seeded permutation cut into parts whose sizes differ by at most one.
    - ``"dirichlet"``: for each class, shares ``p ~ Dirichlet(alpha * 1)`` of its samples
      go to the partitions (Hsu et al., 2019); smaller ``alpha`` means stronger skew.
      Partitions left with fewer than
      ``min(DIRICHLET_MIN_SAMPLES, max(1, n // (2 * num_partitions)))`` samples are topped
      up with random samples taken from the largest partitions.
    - ``"shards"``: samples sorted by label are cut into
      ``num_partitions * shards_per_partition`` equal shards and each partition gets
      ``shards_per_partition`` random ones (McMahan et al., 2017), so most partitions
      see at most ``shards_per_partition`` classes.

    Example:
        >>> labels = np.repeat(np.arange(10), 100)
        >>> parts = partition_indices(labels, 20, "shards", seed=1)
        >>> len(parts), sum(map(len, parts)), max(len(np.unique(labels[p])) for p in parts)
        (20, 1000, 2)
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    n = labels.shape[0]
    if not 1 <= num_partitions <= n:
        raise ValueError(f"num_partitions must be in 1..{n} (one sample each at least), "
                         f"got {num_partitions}")
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        owner = np.empty(n, dtype=np.int64)
        owner[rng.permutation(n)] = _equal_split_owner(n, num_partitions)
    elif scheme == "dirichlet":
        if not alpha > 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        owner = _dirichlet_owner(labels, num_partitions, alpha, rng)
    elif scheme == "shards":
        owner = _shards_owner(labels, num_partitions, shards_per_partition, rng)
    else:
        raise ValueError(f"unknown scheme {scheme!r}; expected 'iid', 'dirichlet' or 'shards'")
    return _indices_by_owner(owner, num_partitions)


def _equal_split_owner(n: int, parts: int) -> np.ndarray:
    """Owner id of positions ``0..n-1`` when cut into ``parts`` near-equal blocks."""
    sizes = np.full(parts, n // parts)
    sizes[: n % parts] += 1
    return np.repeat(np.arange(parts), sizes)


def _indices_by_owner(owner: np.ndarray, parts: int) -> list[np.ndarray]:
    order = np.argsort(owner, kind="stable")  # stable keeps each part's indices ascending
    return np.split(order, np.cumsum(np.bincount(owner, minlength=parts))[:-1])


def _dirichlet_owner(labels: np.ndarray, parts: int, alpha: float,
                     rng: np.random.Generator) -> np.ndarray:
    n = labels.shape[0]
    owner = np.empty(n, dtype=np.int64)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        shares = rng.dirichlet(np.full(parts, alpha))
        # Cumulative rounding assigns every sample exactly once.
        cuts = np.round(np.cumsum(shares) * members.size).astype(np.int64)
        cuts[-1] = members.size
        owner[members] = np.repeat(np.arange(parts), np.diff(cuts, prepend=0))
    _top_up(owner, parts, min(DIRICHLET_MIN_SAMPLES, max(1, n // (2 * parts))), rng)
    return owner


def _top_up(owner: np.ndarray, parts: int, min_size: int, rng: np.random.Generator) -> None:
    """Move random samples from the largest partitions to those below ``min_size``, in place."""
    counts = np.bincount(owner, minlength=parts)
    deficit = np.maximum(min_size - counts, 0)
    if not deficit.any():
        return
    # Rank samples randomly inside their partition; the sample of rank r in a partition of
    # c samples has key c - r, so taking the largest keys drains the largest partitions
    # first (water-filling); keys above min_size number at least the total deficit
    # because n >= parts * min_size, so no partition is drained below min_size.
    order = np.lexsort((rng.random(owner.size), owner))
    starts = np.cumsum(counts) - counts
    rank = np.arange(owner.size) - starts[owner[order]]
    key = counts[owner[order]] - rank
    moved = order[np.argsort(-key, kind="stable")[: deficit.sum()]]
    owner[rng.permutation(moved)] = np.repeat(np.arange(parts), deficit)


def _shards_owner(labels: np.ndarray, parts: int, shards_per_partition: int,
                  rng: np.random.Generator) -> np.ndarray:
    n = labels.shape[0]
    num_shards = parts * shards_per_partition
    if not 1 <= num_shards <= n:
        raise ValueError(f"{parts} partitions x {shards_per_partition} shards needs "
                         f"1..{n} shards, got {num_shards}")
    shuffled = rng.permutation(n)  # random order within each label before the sort
    by_label = shuffled[np.argsort(labels[shuffled], kind="stable")]
    shard_owner = np.empty(num_shards, dtype=np.int64)
    shard_owner[rng.permutation(num_shards)] = np.repeat(np.arange(parts), shards_per_partition)
    owner = np.empty(n, dtype=np.int64)
    owner[by_label] = shard_owner[_equal_split_owner(n, num_shards)]
    return owner
