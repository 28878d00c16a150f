"""encode_reconstruct returns exactly what the decoder will produce, for every codec."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flrd import codecs

CASES = [("float32", {}), ("dithered", {"noise_var": 1e-3}), ("dithered", {"noise_var": 0.5}), ("m22", {"bits": 3}),
         ("sign", {}), ("qsgd", {"levels": 8}), ("terngrad", {}), ("topk", {"fraction": 0.1}),
         ("randk", {"fraction": 0.1}), ("natural", {})]


@pytest.mark.parametrize(("name", "params"), CASES)
@settings(max_examples=25, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32), size=st.integers(0, 3000), scale=st.sampled_from([1e-6, 1.0, 1e3]),
       dtype=st.sampled_from([np.float16, np.float32, np.float64]), outlier=st.booleans())
def test_reconstruction_equals_decode(name, params, seed, size, scale, dtype, outlier):
    x = np.random.default_rng(seed).standard_t(3, size) * scale
    if outlier and size:
        x[0] = 5e4 * scale  # forces the dithered codec's escape window at fine steps
    x = x.astype(dtype)
    if not np.all(np.isfinite(x)):
        return
    payload, reconstruction = codecs.get(name, **params).encode_reconstruct(x, seed=seed)
    decoded = codecs.decode(payload)
    assert reconstruction.dtype == decoded.dtype and reconstruction.shape == decoded.shape
    assert np.array_equal(reconstruction, decoded)
