"""Combining decoded client updates, and applying the result to the global model.

Example:
    >>> import numpy as np
    >>> inverse_variance_weights(np.array([[1.0], [3.0]]), s2=np.array([1.0]))
    array([[0.66666667],
           [0.33333333]])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from flwr.app import Array, ArrayRecord

from flrd.codecs import majority_vote

from .decoding import ClientUpdate

__all__ = [
    "apply_update",
    "example_weights",
    "inverse_variance_weights",
    "majority_update",
    "to_record",
    "weighted_mean",
]

Arrays = dict[str, np.ndarray]


def example_weights(updates: Sequence[ClientUpdate], num_layers: int) -> np.ndarray:
    """FedAvg's weights ``(K, L)``: each update by its client's share of the examples."""
    examples = np.array([u.report.num_examples for u in updates], dtype=np.float64)
    return np.repeat((examples / examples.sum())[:, None], num_layers, axis=1)


def inverse_variance_weights(targets: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """Weights ``(K, L)`` proportional to ``1 / (s2 + target_kl)``, columns summing to 1.

    ``s2`` is the gradient-noise variance per layer ``(L,)`` or per client and layer ``(K, L)``.

    The minimum-variance unbiased combination of unbiased estimates whose errors have
    those variances (gradient noise plus the quantization noise each client was given).
    """
    inverse = 1.0 / (np.asarray(s2, dtype=np.float64) + targets)
    return inverse / inverse.sum(axis=0, keepdims=True)


def weighted_mean(updates: Sequence[ClientUpdate], weights: np.ndarray,
                  exact: bool = False) -> Arrays:
    """``sum_k weights[k, l] * update_k,l`` per layer ``l`` (the exact updates if asked)."""
    mean = {}
    for index, name in enumerate(updates[0].update):
        parts = [(u.exact if exact else u.update)[name] for u in updates]  # type: ignore[index]
        mean[name] = sum(w * np.asarray(p, np.float64) for w, p in zip(weights[:, index], parts))
    return mean


def majority_update(updates: Sequence[ClientUpdate]) -> Arrays:
    """SignSGD-MV: the majority sign, scaled by the clients' mean magnitude per layer."""
    combined = {}
    for name in updates[0].update:
        layer = [u.update[name] for u in updates]
        scale = float(np.mean([np.mean(np.abs(v)) for v in layer]))
        combined[name] = scale * majority_vote(layer)
    return combined


def apply_update(global_arrays: Mapping[str, np.ndarray], update: Arrays) -> Arrays:
    """``global + update`` per layer, in the global dtypes (integers rounded)."""
    new = {}
    for name, current in global_arrays.items():
        values = current.astype(np.float64) + update[name]
        if np.issubdtype(current.dtype, np.integer):
            values = np.rint(values)
        new[name] = values.astype(current.dtype)
    return new


def to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """An ArrayRecord of numpy Arrays, in the mapping's order."""
    return ArrayRecord({name: Array(np.asarray(values)) for name, values in arrays.items()})
