"""ErrorFeedback: residual bookkeeping, telescoping sums and state round trips."""

import numpy as np
import pytest

from flrd.codecs import CODECS, ErrorFeedback, codec_class, decode, get

RNG = np.random.default_rng(17)
STEPS = [RNG.standard_normal((8, 16)).astype(np.float32) for _ in range(6)]


def make(name):
    if name in ("dithered", "m22", "qsgd", "topk", "topk-global", "randk"):
        return codec_class(name).for_bits(2.0, STEPS[0])
    return get(name)


@pytest.mark.parametrize("name", sorted(CODECS))
def test_residual_is_exact_and_sums_telescope(name):
    ef = ErrorFeedback(make(name))
    sent = np.zeros((8, 16))
    for t, x in enumerate(STEPS):
        before = np.zeros_like(x) if ef.residual is None else ef.residual.copy()
        payload = ef.encode(x, seed=t)
        decoded = decode(payload)
        assert decoded.dtype == np.float32 and decoded.shape == x.shape
        np.testing.assert_array_equal(ef.residual, (x + before) - decoded)
        sent += decoded
    # Everything fed in has been sent, up to what is still carried.
    np.testing.assert_allclose(sent + ef.residual, np.sum(STEPS, axis=0), atol=1e-4)


def test_feedback_recovers_what_topk_dropped():
    x = np.array([3.0, 1.0, 0.5])
    ef = ErrorFeedback(get("topk", k=1))
    outputs = [decode(ef.encode(x)) for _ in range(12)]
    assert np.all(np.sum(outputs, axis=0)[1:] > 0)  # dropped coordinates are sent eventually
    assert outputs[0].tolist() == [3.0, 0.0, 0.0]


@pytest.mark.parametrize("name", ["topk", "sign", "m22", "dithered"])
def test_state_dict_round_trip_continues_identically(name):
    a = ErrorFeedback(make(name))
    assert a.state_dict() == {}
    for t, x in enumerate(STEPS[:3]):
        a.encode(x, seed=t)
    state = a.state_dict()
    assert set(state) == {"residual"} and isinstance(state["residual"], np.ndarray)
    b = ErrorFeedback(make(name))
    b.load_state_dict(state)
    for t, x in enumerate(STEPS[3:], start=3):
        assert a.encode(x, seed=t) == b.encode(x, seed=t)
    b.load_state_dict({})
    assert b.residual is None


def test_feedback_validation():
    ef = ErrorFeedback(get("sign"))
    ef.encode(np.ones(4))
    with pytest.raises(ValueError, match="differs from the residual"):
        ef.encode(np.ones(5))
    with pytest.raises(ValueError, match="finite float32/float64"):
        ef.load_state_dict({"residual": np.array([np.nan])})
    with pytest.raises(TypeError, match="flrd Codec"):
        ErrorFeedback("sign")


def test_float16_inputs_keep_a_float32_residual():
    ef = ErrorFeedback(get("topk", k=2))
    payload = ef.encode(np.linspace(-1, 1, 8).astype(np.float16))
    assert decode(payload).dtype == np.float16 and ef.residual.dtype == np.float32
