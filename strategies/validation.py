"""Checks on what a reply carries besides its payload, and on the round as a whole.

One client must never stop, poison or steer a round (docs/threat-model.md). Payloads are
checked by :func:`~flrd.strategies.decoding.decode_reply`; this module checks the app's
own metrics before Flower's aggregation sees them, and compares each accepted reply with
the rest of its round: a reply whose metrics are laid out differently from the
majority's, whose example count is far above the round's median, or whose decoded
update is far larger than the round's median is left out with a named reason.

Example:
    >>> import numpy as np
    >>> outlying(np.array([1.0, 1.2, 0.9, 500.0]), factor=100.0).tolist()
    [False, False, False, True]
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
from flwr.app import Message

from flrd.protocol import METRICS_RECORD

__all__ = ["MAX_NUM_EXAMPLES", "app_metrics_problem", "metrics_layout", "outlying"]

#: Largest ``num-examples`` a reply may claim: far above any real client, far below
#: float overflow when Flower sums the weights.
MAX_NUM_EXAMPLES = 2.0**40


def app_metrics_problem(reply: Message, weight_key: str | None) -> str | None:
    """Why the app's own MetricRecords of ``reply`` cannot be aggregated, or None.

    Every value must be a finite number or a list of finite numbers; ``weight_key``
    (e.g. ``num-examples``), when the strategy weights by one, must sit in exactly one
    record as a number in ``(0, MAX_NUM_EXAMPLES]``.
    """
    records = {k: r for k, r in reply.content.metric_records.items() if k != METRICS_RECORD}
    for name, record in records.items():
        for key, value in record.items():
            values = value if isinstance(value, list) else [value]
            if not all(_is_number(v) and math.isfinite(v) for v in values):
                return f"metric {name}/{key} is not finite: {value!r}"
    if weight_key is None:
        return None
    weights = [r[weight_key] for r in records.values() if weight_key in r]
    if len(records) != 1 or len(weights) != 1:
        return f"expected one MetricRecord with {weight_key!r}, got {len(records)} record(s)"
    weight = weights[0]
    if not _is_number(weight) or not 0 < weight <= MAX_NUM_EXAMPLES:  # type: ignore[operator]
        return f"{weight_key} must be a number in (0, {MAX_NUM_EXAMPLES:.0f}], got {weight!r}"
    return None


def metrics_layout(reply: Message) -> tuple[object, ...]:
    """The names, keys and value kinds (scalar, or list length) of the app's metrics.

    Flower's metric aggregation needs the same layout in every reply.
    """
    records = {k: r for k, r in reply.content.metric_records.items() if k != METRICS_RECORD}
    return tuple(sorted(
        (name, tuple(sorted((key, len(v) if isinstance(v, list) else -1) for key, v in r.items())))
        for name, r in records.items()))


def majority(items: Sequence[object]) -> list[bool]:
    """Which items equal the most common one (ties: the first seen)."""
    if not items:
        return []
    common, _ = Counter(items).most_common(1)[0]
    return [item == common for item in items]


def outlying(values: np.ndarray, factor: float) -> np.ndarray:
    """``values > factor * median(values)`` (all False below three values: no majority)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 3:
        return np.zeros(values.shape, dtype=bool)
    return values > factor * np.median(values)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
