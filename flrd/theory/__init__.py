"""Rate-distortion limits of unbiased model aggregation (THEORY.md §2-9, §11-15).

Rates are in bits per coordinate (sums over workers unless stated), distortions
per coordinate unless named ``*_tot``. Functions broadcast like numpy ufuncs where
their arguments allow it; invalid input raises ``ValueError`` naming the bound
(the checks live in :mod:`flrd.theory.checks`, public for other modules' use).

Examples
--------
>>> from flrd import theory
>>> float(theory.sum_rate(0.2, sx2=2.0, s2=1.0, K=10)) < float(theory.independent_rate(0.2, 2.0, 1.0, 10))
True
"""

from . import checks
from .calibration import (
    DeltaConstants,
    SmoothnessEstimator,
    calibrated_distortion,
    curvature_from_contraction,
    delta_constants,
    delta_contraction,
    suboptimality,
    target_eps,
)
from .convergence import DistortionChoice, choose_distortion, interior_optimum_margin, rounds_needed, total_cost
from .estimation import VarianceEstimate, estimate_variances, signal_power, winsorize
from .layers import error_free_distortion, round_cost, split_distortion
from .rates import ceo_sum_rate, independent_rate, sum_rate, sum_rate_slope
from .region import Allocation, in_rate_region, noise_weights, region_vertex, weighted_sum_allocation
from .signsgd import SignSGDModel, signsgd_distortion, signsgd_model
from .units import LocalStepGains, local_step_gains
from .waterfill import heterogeneous_independent_rate, heterogeneous_sum_rate, min_distortion, waterfill

__all__ = [
    "Allocation",
    "DeltaConstants",
    "DistortionChoice",
    "LocalStepGains",
    "SignSGDModel",
    "SmoothnessEstimator",
    "VarianceEstimate",
    "calibrated_distortion",
    "ceo_sum_rate",
    "checks",
    "choose_distortion",
    "curvature_from_contraction",
    "delta_constants",
    "delta_contraction",
    "error_free_distortion",
    "estimate_variances",
    "heterogeneous_independent_rate",
    "heterogeneous_sum_rate",
    "in_rate_region",
    "interior_optimum_margin",
    "independent_rate",
    "local_step_gains",
    "min_distortion",
    "noise_weights",
    "region_vertex",
    "round_cost",
    "rounds_needed",
    "signsgd_distortion",
    "signsgd_model",
    "split_distortion",
    "suboptimality",
    "sum_rate",
    "sum_rate_slope",
    "target_eps",
    "total_cost",
    "waterfill",
    "weighted_sum_allocation",
    "signal_power",
    "winsorize",
]
