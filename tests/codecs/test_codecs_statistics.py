"""Statistical contracts shared by all codecs: unbiasedness, expected_noise_var,
for_noise_var and for_bits."""

import numpy as np
import pytest

from flrd.codecs import CODECS, codec_class, decode, get

RNG = np.random.default_rng(2024)
X = (RNG.standard_t(5, 4096) * 0.01).astype(np.float32)  # gradient-like: heavy tails, small scale
CONFIGS = {
    "float32": {},
    "dithered": {"noise_var": 1e-5},
    "m22": {"bits": 3, "m": 1.0},
    "sign": {"scale": "gaussian"},
    "qsgd": {"levels": 16},
    "terngrad": {"clip_sigmas": 0.0},
    "topk": {"fraction": 0.05},
    "topk-global": {"fraction": 0.05},
    "randk": {"fraction": 0.25, "value_dtype": "float16"},
    "natural": {},
}
STOCHASTIC = {"dithered", "qsgd", "terngrad", "randk", "natural"}


def test_every_registered_codec_is_configured():
    assert set(CONFIGS) == set(CODECS)


@pytest.mark.parametrize("name", [n for n in CONFIGS if CODECS[n].unbiased and n != "float32"])
def test_unbiased_codecs_average_to_the_input(name):
    x = np.array([-1.7, -0.2, 0.0, 0.03, 0.5, 1.0, 2.5, 6.0])
    codec = get(name, **{**CONFIGS[name], **({"noise_var": 0.3} if name == "dithered" else {})})
    runs = np.stack([decode(codec.encode(x, seed=s)) for s in range(1500)])
    se = runs.std(0) / np.sqrt(len(runs))
    assert np.all(np.abs(runs.mean(0) - x) <= 4.5 * se + 1e-3 * np.abs(x))


@pytest.mark.parametrize("name", [n for n in CONFIGS if not CODECS[n].unbiased])
def test_biased_codecs_are_flagged_and_deterministic(name):
    codec = get(name, **CONFIGS[name])
    assert codec.encode(X, seed=1) == codec.encode(X, seed=2)[:0] + codec.encode(X, seed=1)
    assert not np.allclose(decode(codec.encode(X)), X)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_expected_noise_var_matches_measurement(name):
    codec = get(name, **CONFIGS[name])
    seeds = range(40) if name in STOCHASTIC else range(1)
    measured = np.mean([np.mean((decode(codec.encode(X, seed=s)).astype(float) - X) ** 2) for s in seeds])
    predicted = codec.expected_noise_var(X)
    if name in STOCHASTIC:
        assert measured == pytest.approx(predicted, rel=0.05)
    elif name == "float32":
        assert measured == predicted == 0.0
    else:
        assert measured == pytest.approx(predicted, rel=1e-6)


TARGETS = {"dithered": "noise_var", "m22": "bits", "qsgd": "levels", "topk": "k", "topk-global": "k", "randk": "k"}


@pytest.mark.parametrize("name", list(TARGETS))
@pytest.mark.parametrize("relative_target", [0.3, 0.05, 0.005])
def test_for_noise_var_meets_target_cheaply(name, relative_target):
    target = relative_target * float(np.mean(X.astype(float) ** 2))
    codec = codec_class(name).for_noise_var(target, X)
    assert codec.expected_noise_var(X) <= target
    knob = TARGETS[name]
    if knob != "noise_var" and getattr(codec, knob) > 1:  # one notch cheaper misses the target
        cheaper = codec_class(name)(**{knob: getattr(codec, knob) - 1})
        assert cheaper.expected_noise_var(X) > target


@pytest.mark.parametrize("name", list(TARGETS))
@pytest.mark.parametrize("bits", [0.5, 1.0, 2.0, 4.0])
def test_for_bits_meets_the_rate(name, bits):
    codec = codec_class(name).for_bits(bits, X)
    rate = 8 * len(codec.encode(X, seed=3)) / X.size
    assert rate <= bits * 1.02 + 0.04  # code lengths vary with the seed (sd ~0.02 at n=4096)
    assert rate > bits * (0.5 if name in ("m22", "qsgd") else 0.9)  # not wastefully low
