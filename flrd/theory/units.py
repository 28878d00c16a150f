"""Gains of local SGD with momentum: delta statistics against per-step gradients (THEORY.md §11)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import checks


@dataclass(frozen=True)
class LocalStepGains:
    """How ``E`` local steps scale a round's delta (``delta = -eta sum_s c_s g_s``).

    ``coherent`` multiplies the variance of a gradient part shared by all steps
    (``(eta C1)^2``); ``noise`` the variance of independent per-step noise
    (``eta^2 C2``); ``step`` is ``h = eta C1``, the size of the equivalent single step.
    """

    step: float
    coherent: float
    noise: float


def local_step_gains(lr: float, steps: int, momentum: float = 0.0) -> LocalStepGains:
    """``C1 = sum_j (1 - mu^j)/(1 - mu)`` and ``C2 = sum_j ((1 - mu^j)/(1 - mu))^2``, ``j = 1..E``.

    For PyTorch's SGD with momentum (buffer ``v <- mu v + g`` from zero, ``x <- x - eta v``).

    Examples
    --------
    >>> g = local_step_gains(0.01, 20, 0.5)
    >>> round(g.step, 4), round(g.coherent, 4), round(g.noise, 5)
    (0.38, 0.1444, 0.00733)
    """
    eta = float(checks.positive("lr", lr))
    E = checks.integer("steps", steps, minimum=1)
    mu = float(checks.in_range("momentum", momentum, 0.0, 1.0, high_open=True))
    c = -np.expm1(np.arange(1, E + 1) * np.log(mu)) / (1 - mu) if mu > 0 else np.ones(E)
    return LocalStepGains(step=eta * float(c.sum()), coherent=(eta * float(c.sum())) ** 2,
                          noise=eta**2 * float(np.sum(c**2)))
