"""Successive decoding on a small Gaussian CEO instance, a hostile reply, and the
plan's WZ-versus-independent rule."""

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from flrd import theory
from flrd.sideinfo import conditional_vars, decode_successive, plan_layer, wyner_ziv

N, K, SX2, S2, D = 8192, 5, 10.0, 1.0, 0.4


def _wz(y, client, seed):
    return wyner_ziv.encode_reconstruct(y, client.step, client.cond_std, seed=seed, keep_prob=client.keep_prob,
                                        rates=client.rates)


def _round(seed, plan, hostile=None):
    """Replies of one round (WZ payloads, or plain dithered arrays standing in for
    independent coding at the plan's noise) and each reply's dithered values."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, math.sqrt(SX2), N)
    replies, recs = [], []
    for c in plan.clients:
        y = x + rng.normal(0, math.sqrt(S2), N)
        if c.coding == "wz":
            payload, rec = _wz(y, c, seed * 100 + c.position)
            replies.append(payload)
        else:
            step = math.sqrt(12 * plan.noise_var)
            rec = y + rng.uniform(-step / 2, step / 2, N)
            replies.append(rec)
        recs.append(rec)
    if hostile is not None:
        replies.insert(hostile, 1e3 * rng.standard_normal(N))
    return x, replies, recs


def _same(a, b):
    return np.array_equal(a, b, equal_nan=True)


def test_successive_decoding_reaches_planned_distortion():
    plan = plan_layer(SX2, S2, K, D, n=N)
    assert [c.coding for c in plan.clients] == ["independent"] + ["wz"] * (K - 1)
    errs = []
    for seed in range(3):
        x, replies, recs = _round(seed, plan)
        out = decode_successive(replies, s2=S2, noise_var=plan.noise_var, prior_var=SX2, expected_size=N)
        assert out.failed == [] and out.accepted.all()
        for got, want in zip(out.coded, recs):
            assert _same(got, want)  # bit-exact: the dithered test channel on the coded coordinates
        errs.append(out.aggregate() - x)
    err = np.concatenate(errs)
    assert abs(np.mean(err**2) / D - 1) < 0.05
    assert abs(np.polyfit(x, errs[-1] + x, 1)[0] - 1) < 0.05  # unbiased: slope 1


def test_retry_uses_later_replies():
    """A WZ reply placed before its side information fails at first, then decodes."""
    plan = plan_layer(SX2, S2, 2, 0.8, n=N)
    x, replies, recs = _round(7, plan)
    swapped = [replies[1], replies[0]]
    out = decode_successive(swapped, s2=S2, noise_var=plan.noise_var, prior_var=SX2, expected_size=N)
    assert out.failed == [] and _same(out.coded[0], recs[1])


def test_hostile_array_does_not_feed_side_information():
    plan = plan_layer(SX2, S2, K, D, n=N)
    x, replies, recs = _round(3, plan, hostile=1)
    out = decode_successive(replies, s2=S2, noise_var=plan.noise_var, prior_var=SX2, expected_size=N)
    assert not out.accepted[1] and np.delete(out.accepted, 1).all()
    assert out.failed == []
    honest = [v for i, v in enumerate(out.coded) if i != 1]
    assert all(_same(a, b) for a, b in zip(honest, recs))


def test_hostile_wz_payload_cannot_spoil_honest_ones():
    plan = plan_layer(SX2, S2, K, D, n=N)
    x, replies, recs = _round(4, plan)
    garbage = np.random.default_rng(9).normal(50.0, 1.0, N)  # far from the side information
    replies.insert(1, _wz(garbage, plan.clients[1], 1)[0])
    out = decode_successive(replies, s2=S2, noise_var=plan.noise_var, prior_var=SX2, expected_size=N)
    assert not out.accepted[1] and out.failed == [(1, slice(0, N))]
    honest = [v for i, v in enumerate(out.coded) if i != 1]
    assert all(_same(a, b) for a, b in zip(honest, recs))


def test_conditional_vars_match_region_vertex():
    """Ideal WZ rate at position k equals the Lemma-1 vertex rate; the sum is R_sum."""
    sq2 = K * D - S2
    ideal = 0.5 * np.log2(1 + conditional_vars(S2, sq2, K, SX2) / sq2)
    plan = plan_layer(SX2, S2, K, D)
    vertex = np.array([c.vertex_bits_per_coord for c in plan.clients])
    assert np.allclose(ideal, vertex, rtol=1e-12)
    assert math.isclose(vertex.sum(), float(theory.sum_rate(D, SX2, S2, K)), rel_tol=1e-12)
    assert np.all(np.diff(vertex) < 0)  # earlier-decoded clients pay more


@settings(derandomize=True, deadline=None, max_examples=60)
@given(
    ratio=st.floats(1e-3, 1e3), lam=st.floats(0.05, 1e3), K=st.integers(1, 40),
    n=st.sampled_from([256, 4096, 65536]), prior=st.sampled_from([None, 0.1, 1.0]),
)
def test_plan_never_chooses_wz_when_the_model_says_it_costs_more(ratio, lam, K, n, prior):
    s2 = 1.0
    plan = plan_layer(ratio * s2, s2, K, s2 * (1 + lam) / K, prior_var=None if prior is None else prior * ratio, n=n)
    per_client_independent = plan.independent_bits / K
    for c in plan.clients:
        if c.coding == "wz":
            assert c.wz_bits_per_coord < per_client_independent
        else:
            assert math.isclose(c.predicted_bits_per_coord, per_client_independent, rel_tol=1e-12)
    assert plan.predicted_bits <= plan.independent_bits * (1 + 1e-12)
    if prior is None:
        assert plan.clients[0].coding == "independent"  # no side information at position 0


def test_no_common_part_means_independent():
    plan = plan_layer(1e-4, 1.0, 10, 0.5)
    assert plan.coding == "independent"
