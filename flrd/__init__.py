"""flrd: rate-distortion-optimal communication for federated learning with Flower.

The core (`flrd.theory`, `flrd.codecs`, `flrd.policy`, datasets, models) is pure
Python/numpy/scipy/torch. The Flower parts install as `flrd.clients`,
`flrd.strategies` and `flrd.simulations`. Importing this package imports nothing heavy.
"""

__version__ = "0.1.0"
