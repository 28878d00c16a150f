"""THEORY.md §15: beta, eps and Corollary 3's distortion estimated on a synthetic quadratic.

``f(w) = 1/2 (w - w*)^T H (w - w*)``, ``K`` clients each running ``E`` local SGD steps with
PyTorch momentum and minibatch noise of variance ``sigma^2`` per step and coordinate,
subtractive-dithered uniform quantization (noise ``q^2/12``, unbiased), FedAvg. ``H`` is
diagonal without loss of generality: the estimator uses only inner products and every
noise is isotropic, so a rotated ``H`` gives the same distribution of estimates.

The ``beta`` the estimator recovers is the curvature along the steps taken, noise
included (THEORY.md §15): ``sum_t w_t d_t^T H d_t / sum_t w_t ||d_t||^2`` with the
estimator's own smoothing weights. With a narrow spectrum that is also within a few per
cent of the largest eigenvalue, Theorem 1's smoothness.
"""

from dataclasses import dataclass

import numpy as np
import pytest

from flrd import theory
from flrd.theory import calibration as cal

DIM, CLIENTS, SIGMA, SMOOTHING = 10_000, 10, 1.0, 0.5


@dataclass
class Run:
    estimator: cal.SmoothnessEstimator
    along_steps: float  # smoothed d^T H d / ||d||^2 over the same pairs: the recovered beta
    sx2: float  # section-8 estimates of the last round, delta units
    s2: float
    loss: float  # f(w) at the start of the last round


def simulate(eig, *, lr=0.01, steps=10, momentum=0.5, quant_step=0.3, rounds=4, seed=0,
             estimator_momentum=None, noise_correction=True):
    rng = np.random.default_rng(seed)
    error = rng.normal(size=eig.size)  # w - w*
    estimator = cal.SmoothnessEstimator(lr, steps, momentum if estimator_momentum is None else estimator_momentum,
                                        smoothing=SMOOTHING)
    quant_var = quant_step**2 / 12
    curv = moved = np.nan
    previous = None
    for _ in range(rounds):
        local, buffer = np.tile(error, (CLIENTS, 1)), np.zeros((CLIENTS, eig.size))
        for _ in range(steps):
            buffer = momentum * buffer + eig * local + SIGMA * rng.normal(size=local.shape)
            local -= lr * buffer
        deltas = local - error
        m2_k = np.mean(deltas**2, axis=1, keepdims=True)
        dither = rng.uniform(-0.5, 0.5, deltas.shape)
        aggregate = np.mean(quant_step * (np.round(deltas / quant_step + dither) - dither), axis=0)
        est = theory.estimate_variances(m2_k, np.array([aggregate @ aggregate]), np.array([eig.size]), quant_var)
        noise_sqnorm = eig.size * (est.s2[0] + quant_var) / CLIENTS
        estimator.observe(aggregate, noise_sqnorm if noise_correction else 0.0)
        if previous is not None:
            c, m = previous @ (eig * previous), previous @ previous
            curv = c if np.isnan(curv) else (1 - SMOOTHING) * curv + SMOOTHING * c
            moved = m if np.isnan(moved) else (1 - SMOOTHING) * moved + SMOOTHING * m
        loss = 0.5 * float(error @ (eig * error))
        previous, error = aggregate, error + aggregate
    return Run(estimator, curv / moved, float(est.sx2[0]), float(est.s2[0]), loss)


def narrow_spectrum(beta, seed=1):
    return np.random.default_rng(seed).uniform(0.85 * beta, beta, DIM)


LOCAL_SETTINGS = [  # (lr, steps, momentum, beta): h beta from 0.3 to 0.6, so the inversion matters
    (0.01, 10, 0.5, 3.0),
    (0.01, 20, 0.5, 1.0),  # flrd's reference local training
    (0.005, 5, 0.9, 4.0),
]


@pytest.mark.parametrize(("lr", "steps", "momentum", "beta"), LOCAL_SETTINGS)
def test_beta_is_recovered_within_20_percent_after_four_rounds(lr, steps, momentum, beta):
    run = simulate(narrow_spectrum(beta), lr=lr, steps=steps, momentum=momentum)
    assert run.estimator.beta == pytest.approx(beta, rel=0.2)  # the largest eigenvalue
    assert run.estimator.beta == pytest.approx(run.along_steps, rel=0.05)  # what it estimates


def test_wide_spectrum_gives_the_curvature_along_the_steps_not_the_largest_eigenvalue():
    eig = np.exp(np.random.default_rng(1).uniform(np.log(0.15), np.log(3.0), DIM))
    run = simulate(eig, rounds=6)
    assert run.estimator.beta == pytest.approx(run.along_steps, rel=0.2)
    assert run.estimator.beta < 0.8 * eig.max()


def test_ignoring_momentum_in_the_unit_conversion_misses_beta():
    run = simulate(narrow_spectrum(3.0), estimator_momentum=0.0)  # clients use 0.5
    assert not run.estimator.beta == pytest.approx(3.0, rel=0.2)
    assert run.estimator.beta > 1.5 * 3.0


def test_contraction_itself_is_not_beta():
    # Delta units without the local-step gains: kappa ~ h beta, h = 0.18 here.
    run = simulate(narrow_spectrum(3.0))
    assert run.estimator.contraction < 0.2 * 3.0


def test_without_the_noise_correction_beta_is_biased_up():
    run = simulate(narrow_spectrum(3.0), quant_step=1.0, rounds=6, noise_correction=False)
    assert run.estimator.beta > 1.5 * 3.0


def test_eps_from_the_loss_gap_and_the_optimal_distortion_match_the_true_constants():
    lr, steps, momentum, beta, loss_target = 0.01, 10, 0.5, 3.0, 20.0
    run = simulate(narrow_spectrum(beta), lr=lr, steps=steps, momentum=momentum)
    est = run.estimator
    gap = cal.suboptimality(DIM * run.sx2, beta=est.beta, step=est.effective_step)
    eps = cal.target_eps(run.loss, loss_target, gap)
    assert eps == pytest.approx(loss_target, rel=0.2)  # f* = 0, so the true eps is the target loss
    stats = ([DIM], [run.sx2], [run.s2], CLIENTS)
    true_step = float(cal.delta_contraction(beta, lr, steps, momentum)) / beta
    truth = cal.calibrated_distortion(*stats, beta=beta, eps=loss_target, step=true_step)
    estimated = cal.calibrated_distortion(*stats, beta=est.beta, eps=eps, step=est.effective_step)
    assert truth.lambda_ < 100  # interior optimum: the comparison is not cap against cap
    assert estimated.lambda_ == pytest.approx(truth.lambda_, rel=0.2)
    assert estimated.distortion_total == pytest.approx(truth.distortion_total, rel=0.2)
    # Negative: gradient-unit constants fed straight to delta statistics (no conversion).
    raw = theory.choose_distortion(*stats, R0=1.0, beta=beta, eps=loss_target, lambda_cap=1e6)
    assert not raw.lambda_ == pytest.approx(truth.lambda_, rel=0.2)


@pytest.mark.parametrize(("lr", "steps", "momentum"), [(0.01, 20, 0.5), (0.1, 5, 0.9), (0.05, 7, 0.0)])
def test_contraction_is_h_beta_to_first_order_and_inverts(lr, steps, momentum):
    h = theory.local_step_gains(lr, steps, momentum).step
    assert float(cal.delta_contraction(1e-7, lr, steps, momentum)) == pytest.approx(h * 1e-7, rel=1e-5)
    for curvature in [0.1 / h, 0.5 / h]:
        kappa = float(cal.delta_contraction(curvature, lr, steps, momentum))
        assert cal.curvature_from_contraction(kappa, lr, steps, momentum) == pytest.approx(curvature, rel=1e-9)
    assert cal.curvature_from_contraction(-0.1, lr, steps, momentum) == 0.0


def test_layer_lists_give_the_same_estimate_as_one_array():
    rng = np.random.default_rng(3)
    whole, layered = cal.SmoothnessEstimator(0.01, 10, 0.5), cal.SmoothnessEstimator(0.01, 10, 0.5)
    for _ in range(3):
        d = rng.normal(size=30)
        whole.observe(d, 1.0)
        layered.observe([d[:10].reshape(2, 5), d[10:]], 1.0)
    assert layered.contraction == pytest.approx(whole.contraction, rel=1e-12)
    assert np.isnan(cal.SmoothnessEstimator(0.01, 10).beta)


def test_invalid_arguments_name_the_bound():
    est = cal.SmoothnessEstimator(0.01, 10)
    est.observe(np.ones(4), 0.0)
    with pytest.raises(ValueError, match="same layer sizes"):
        est.observe(np.ones(5), 0.0)
    with pytest.raises(ValueError, match="noise_sqnorm must be >= 0"):
        est.observe(np.ones(4), -1.0)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
        cal.SmoothnessEstimator(0.01, 10, 1.0)
    with pytest.raises(ValueError, match="loss_target must be >"):
        cal.target_eps(loss=1.0, loss_target=0.1, gap=0.5)
