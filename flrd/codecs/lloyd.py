"""M-weighted Lloyd–Max codebooks for generalized-normal and double-Weibull laws.

Both unit-scale laws have the form ``f(x) ∝ |x|^p exp(-|x|^r)``: gennorm(β) has
``p = 0, r = β`` and dweibull(c) has ``p = c - 1, r = c``. Their partial moments
are regularized incomplete gamma functions, so each Lloyd step is a handful of
vectorized ``gammaincc`` calls (no numerical quadrature):

    ∫_a^b x^k f(x) dx = Γ(s_k) / (2 Γ(s_0)) · [Q(s_k, a^r) - Q(s_k, b^r)],
    s_k = (p + k + 1) / r,   0 <= a < b <= ∞.

The codebook minimizes ``E[|x|^M (x - q(x))²]``: nearest-neighbour cells
(midpoint boundaries) and centroids weighted by ``|x|^M``. Designs are symmetric,
for the unit-scale law (scale ``α`` multiplies levels and boundaries), and cached.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import linalg, special

FAMILIES = ("gennorm", "dweibull")
MAX_ITER = 200
TOL = 1e-13


@dataclass(frozen=True)
class Design:
    """A symmetric scalar quantizer for a unit-scale law (arrays are read-only).

    Attributes:
        levels: ``2**bits`` reconstruction points, ascending.
        boundaries: ``2**bits - 1`` cell boundaries, ascending.
        probs: probability of each cell under the law.
        mse: ``E[(x - q(x))²]`` under the law.
        weighted_distortion: ``E[|x|^M (x - q(x))²]`` under the law.
    """

    levels: np.ndarray
    boundaries: np.ndarray
    probs: np.ndarray
    mse: float
    weighted_distortion: float


def _exponents(family: str, shape: float) -> tuple[float, float]:
    if family == "gennorm":
        return 0.0, shape
    if family == "dweibull":
        return shape - 1.0, shape
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")


def _moment(p: float, r: float, k: float, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``∫_a^b x^k f(x) dx`` for the unit law, elementwise, ``0 <= a < b <= inf``."""
    s = (p + k + 1.0) / r
    const = 0.5 * np.exp(special.gammaln(s) - special.gammaln((p + 1.0) / r))
    return const * (special.gammaincc(s, a**r) - special.gammaincc(s, b**r))


def _initial_boundaries(p: float, r: float, m: float, half: int, floor: float = 0.0) -> np.ndarray:
    """Positive boundaries at quantiles of the compander density ``(|x|^M f)^(1/3)``
    (the high-resolution optimum), which is again of the form ``x^p' exp(-x^r/3)``,
    restricted to ``[floor, inf)``."""
    s = ((p + m) / 3.0 + 1.0) / r
    quantiles = np.arange(1, half) / half
    tail = special.gammaincc(s, floor**r / 3.0)
    inner = (3.0 * special.gammainccinv(s, tail * (1.0 - quantiles))) ** (1.0 / r)
    # Far in the tail the quantiles can underflow onto the floor: keep them ordered.
    return np.maximum(inner, floor * (1.0 + 1e-9 * np.arange(1, half)) + 1e-12 * np.arange(1, half))


def _density_weight(p: float, r: float, m: float, t: np.ndarray) -> np.ndarray:
    """``|t|^M f(t)`` for the unit law."""
    log_norm = np.log(2.0 / r) + special.gammaln((p + 1.0) / r)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.exp((p + m) * np.log(t) - t**r - log_norm)


def _cells(p: float, r: float, m: float, inner: np.ndarray,
           floor: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cell bounds, weighted masses and weighted centroids for positive boundaries."""
    a, b = np.concatenate([[floor], inner]), np.concatenate([inner, [np.inf]])
    den = _moment(p, r, m, a, b)
    # Cells so far out that their mass underflows keep a nominal midpoint.
    mid = np.where(np.isfinite(b), 0.5 * (a + b), 2.0 * a + 1.0)
    levels = np.where(den > 0, _moment(p, r, m + 1.0, a, b) / np.where(den > 0, den, 1.0), mid)
    return a, b, den, levels


def _newton_step(p: float, r: float, m: float, inner: np.ndarray,
                 floor: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Residual ``t - (y_i + y_{i+1})/2`` of the Lloyd–Max conditions and the Newton
    step from its tridiagonal Jacobian (centroid derivatives in closed form)."""
    _, _, den, y = _cells(p, r, m, inner, floor)
    resid = inner - 0.5 * (y[:-1] + y[1:])
    weight = _density_weight(p, r, m, inner)
    safe = np.where(den > 0, den, np.inf)  # cells with no mass: zero derivative
    dy_up = weight * (inner - y[:-1]) / safe[:-1]  # d y_i / d t_i (t_i: upper bound of cell i)
    dy_low = weight * (y[1:] - inner) / safe[1:]  # d y_{i+1} / d t_i (lower bound of cell i+1)
    bands = np.zeros((3, inner.size))
    bands[1] = 1.0 - 0.5 * (dy_up + dy_low)
    bands[0, 1:] = -0.5 * dy_up[1:]  # d F_i / d t_{i+1}: t_{i+1} is the upper bound of cell i+1
    bands[2, :-1] = -0.5 * dy_low[:-1]  # d F_{i+1} / d t_i: t_i is the lower bound of cell i+1
    return resid, linalg.solve_banded((1, 1), bands, resid)


@functools.lru_cache(maxsize=1024)
def design(family: str, shape: float, bits: int, m: float = 0.0, floor: float = 0.0) -> Design:
    """Lloyd–Max codebook with ``2**bits`` levels for the unit-scale law, or for the
    law conditioned on ``|x| >= floor`` (what survives a top-k cut at ``floor``).

    Starts at the compander (high-resolution) boundaries and solves the Lloyd–Max
    conditions by damped Newton iterations on the boundaries, which converge in a
    few dozen steps where plain Lloyd iterations need thousands at 8 bits.

    Args:
        family: ``"gennorm"`` (shape β) or ``"dweibull"`` (shape c).
        shape: shape parameter, > 0.
        bits: 1..8.
        m: weight exponent M >= 0 of the distortion ``|x|^M (x - x̂)²``.
        floor: ``>= 0``; the law is truncated to ``|x| >= floor`` (unit scale), so no
            level is spent in the hole a top-k cut leaves around zero. Probabilities
            and distortions are then conditional on ``|x| >= floor``.

    Example (the classical Gaussian quantizer: gennorm β=2 has scale 1/√2 per σ):
        >>> d = design("gennorm", 2.0, 1)
        >>> round(float(d.levels[-1] * np.sqrt(2)), 4)
        0.7979
    """
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    if not shape > 0 or not m >= 0:
        raise ValueError(f"shape must be > 0 and m >= 0, got shape={shape}, m={m}")
    if not 0 <= floor < np.inf:
        raise ValueError(f"floor must be finite and >= 0, got {floor}")
    p, r = _exponents(family, shape)
    inner = _initial_boundaries(p, r, m, 2 ** (bits - 1), floor)
    for _ in range(MAX_ITER):
        if inner.size == 0:
            break
        resid, step = _newton_step(p, r, m, inner, floor)
        size = 1.0
        while size > 1e-6:  # damp until ordered and the residual shrinks
            trial = inner - size * step
            ordered = trial[0] > floor and np.all(np.diff(trial) > 0)
            if ordered and np.max(np.abs(_newton_step(p, r, m, trial, floor)[0])) < np.max(np.abs(resid)):
                break
            size /= 2
        else:
            break
        inner = trial
        if np.max(np.abs(size * step)) <= TOL * max(1.0, inner[-1]):
            break
    a, b, _, levels = _cells(p, r, m, inner, floor)
    kept = 2.0 * float(np.sum(_moment(p, r, 0.0, a, b)))  # P(|x| >= floor); 1 without a floor

    def distortion(weight: float) -> float:
        terms = _moment(p, r, weight + 2, a, b) - 2 * levels * _moment(p, r, weight + 1, a, b)
        return float(2.0 * np.sum(terms + levels**2 * _moment(p, r, weight, a, b))) / kept

    half_probs = _moment(p, r, 0.0, a, b) / kept
    return Design(
        levels=_frozen(np.concatenate([-levels[::-1], levels])),
        boundaries=_frozen(np.concatenate([-inner[::-1], [0.0], inner])),
        probs=_frozen(np.concatenate([half_probs[::-1], half_probs])),
        mse=distortion(0.0),
        weighted_distortion=distortion(m),
    )


def _frozen(arr: np.ndarray) -> np.ndarray:
    arr.setflags(write=False)
    return arr
