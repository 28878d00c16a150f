"""Counter-based randomness shared by encoder and decoder: Philox4x64-10 of (key, index).

Coordinate ``i`` of a layer with 64-bit key ``k`` gets the 64-bit word
``philox(k, i)``: word ``i % 4`` of the Philox4x64-10 block at counter ``i // 4 + 1``
with key ``(k, KEY_HI)``. This is exactly the stream of numpy's
``np.random.Philox(key=[k, KEY_HI]).random_raw(n)`` (C speed on the CPU), and
:func:`philox_torch` computes the same words with int64 tensor arithmetic on any
device, so a GPU client dithers with the bits a CPU server regenerates.
A test asserts the two are bit-identical.

Codecs split each word. On a random subset (sparse layers) word ``i`` serves
coordinate ``i``: its high 32 bits decide membership (``hi < threshold``, exact
integer comparison), its low 32 bits are the dither. Where every coordinate is
kept, word ``j`` serves two: its low 32 bits dither coordinate ``2j``, its high 32
bits coordinate ``2j + 1`` (half the Philox work).

Example:
    >>> words = philox_numpy(7, 6)
    >>> words.dtype, int(words[0]) == int(philox_numpy(7, 1)[0])
    (dtype('uint64'), True)
"""

from __future__ import annotations

from typing import Any

import numpy as np

KEY_HI = 0x666C7264  # "flrd": second key word, so flrd streams differ from plain Philox(key=k)
_M0, _M1 = 0xD2E7470EE14C6C93, 0xCA5A826395121157  # Philox4x64 multipliers (Salmon et al. 2011)
_W0, _W1 = 0x9E3779B97F4A7C15, 0xBB67AE8584CAA73B  # Weyl key increments
_ROUNDS = 10
_LO32 = 0xFFFFFFFF


def philox_numpy(key: int, n: int) -> np.ndarray:
    """The first ``n`` words (uint64) of the stream for ``key`` in ``[0, 2**64)``."""
    if not 0 <= key < 2**64:
        raise ValueError(f"key must be in [0, 2**64), got {key}")
    gen = np.random.Philox(key=np.array([key, KEY_HI], dtype=np.uint64))
    return gen.random_raw(n)


def _signed(value: int) -> int:
    """A uint64 constant as the int64 with the same bits (torch has no full uint64 math)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _shr(torch: Any, x: Any, s: int) -> Any:
    """Logical right shift of int64 bit patterns (torch's >> is arithmetic)."""
    return torch.bitwise_and(torch.bitwise_right_shift(x, s), (1 << (64 - s)) - 1)


def _mulhilo(torch: Any, a: int, b: Any) -> tuple[Any, Any]:
    """High and low 64 bits of the 128-bit product of the constant ``a`` and ``b``,
    from 32-bit limbs (every partial product wraps mod 2**64 like uint64)."""
    a0, a1 = a & _LO32, a >> 32
    b0, b1 = torch.bitwise_and(b, _LO32), _shr(torch, b, 32)
    lo_lo, mid1, mid2, hi_hi = b0 * a0, b0 * _signed(a1), b1 * a0, b1 * _signed(a1)
    carry = _shr(torch, lo_lo, 32) + torch.bitwise_and(mid1, _LO32) + torch.bitwise_and(mid2, _LO32)
    hi = hi_hi + _shr(torch, mid1, 32) + _shr(torch, mid2, 32) + _shr(torch, carry, 32)
    return hi, b * _signed(a)


def philox_torch(key: int, n: int, device: Any = "cpu", start: int = 0) -> Any:
    """Words ``start .. start + n - 1`` of :func:`philox_numpy`'s stream, as an int64
    tensor holding the uint64 bits (``start`` a multiple of 4).

    Example:
        >>> import torch
        >>> bool((philox_torch(7, 6).numpy().view(np.uint64) == philox_numpy(7, 6)).all())
        True
    """
    import torch

    if not 0 <= key < 2**64:
        raise ValueError(f"key must be in [0, 2**64), got {key}")
    if start % 4 or start < 0:
        raise ValueError(f"start must be a non-negative multiple of 4, got {start}")
    blocks = (n + 3) // 4
    c0 = torch.arange(start // 4 + 1, start // 4 + blocks + 1, dtype=torch.int64, device=device)
    zero = torch.zeros_like(c0)
    c1, c2, c3 = zero, zero, zero
    k0, k1 = key, KEY_HI
    for _ in range(_ROUNDS):
        hi0, lo0 = _mulhilo(torch, _M0, c0)
        hi1, lo1 = _mulhilo(torch, _M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ _signed(k0), lo1, hi0 ^ c3 ^ _signed(k1), lo0
        k0, k1 = (k0 + _W0) & (2**64 - 1), (k1 + _W1) & (2**64 - 1)
    return torch.stack([c0, c1, c2, c3], dim=1).reshape(-1)[:n]


def low_bits(words: np.ndarray) -> np.ndarray:
    """The low 32 bits of each word, as uint32 (the dither)."""
    return words.astype(np.uint32)


def both_halves(words: np.ndarray) -> np.ndarray:
    """Each word's low then high 32 bits, as uint32: two dithers per word (``2n``
    values, no copy on little-endian machines)."""
    return words.astype("<u8", copy=False).view("<u4")


def keep_limit(threshold: int) -> np.uint64:
    """``hi < threshold`` on a word's high 32 bits is ``word < keep_limit(threshold)``:
    one comparison on the whole word (``threshold < 2**32``)."""
    return np.uint64(threshold << 32)


def dither_unit(low: np.ndarray) -> np.ndarray:
    """Dither in units of the step, uniform on (-1/2, 1/2), from the low 32 bits
    (:func:`low_bits`), centred (2**32 levels: the bias this leaves is below
    step * 2**-33). Exact in float64."""
    u = low.astype(np.float64)
    u *= 2.0**-32
    u += 2.0**-33 - 0.5
    return u


def keep_threshold(p: float) -> int:
    """Integer threshold on the high 32 bits that keeps a coordinate with probability
    ``keep_threshold(p) / 2**32`` (exact, so both sides agree bit for bit)."""
    if not 0 < p <= 1:
        raise ValueError(f"inclusion probability must be in (0, 1], got {p}")
    return max(1, min(2**32, int(p * 2**32)))
