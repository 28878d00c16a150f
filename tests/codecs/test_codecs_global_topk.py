"""Global top-k: one selection over every layer, the rate budget met by the layers together."""

import numpy as np
import pytest

from flrd.codecs import GlobalTopKCodec, TopKCodec, decode
from flrd.codecs.message import decode_update, encode_update
from flrd.protocol import CompressionRequest

RNG = np.random.default_rng(11)
LAYERS = {"w1": RNG.standard_normal((200, 100)) * 0.1, "b1": RNG.uniform(2.0, 4.0, 64) * RNG.choice([-1.0, 1.0], 64),
          "w2": RNG.standard_normal((10, 64)) * 0.01, "b2": np.zeros(10)}


def kept(codecs, arrays):
    return [decode(c.encode(a)) != 0 for c, a in zip(codecs, arrays)]


@pytest.mark.parametrize("bits", [0.3, 1.0, 4.0])
def test_the_selection_is_the_global_top_k_within_the_budget(bits):
    arrays = [a.astype(np.float32) for a in LAYERS.values()]
    codecs = GlobalTopKCodec.for_bits_jointly(bits, arrays)
    masks = kept(codecs, arrays)
    n = sum(a.size for a in arrays)
    assert 8 * sum(len(c.encode(a)) for c, a in zip(codecs, arrays)) <= bits * n
    # Every kept entry beats every dropped one, except the one entry each layer always keeps.
    smallest_kept = min(np.abs(a[m]).min() if m.sum() > 1 else np.inf for a, m in zip(arrays, masks))
    largest_dropped = max(np.abs(a[~m]).max() if (~m).any() else 0.0 for a, m in zip(arrays, masks))
    assert smallest_kept >= largest_dropped
    # Maximal: also keeping the largest dropped entry would break the estimated budget.
    nxt = int(np.argmax([np.abs(a[~m]).max() if (~m).any() else -1.0 for a, m in zip(arrays, masks)]))
    more = [GlobalTopKCodec(k=c.k + (i == nxt)) for i, c in enumerate(codecs)]
    assert 8 * sum(m._payload_bytes(a.size, m.k) for m, a in zip(more, arrays)) > bits * n


def test_a_large_layer_takes_the_share_that_per_layer_top_k_spreads_evenly():
    arrays = [a.astype(np.float32) for a in LAYERS.values()]
    global_k = [c.k for c in GlobalTopKCodec.for_bits_jointly(1.0, arrays)]
    per_layer_k = [TopKCodec.for_bits(1.0, a).k for a in arrays]
    assert global_k[1] == 64 and per_layer_k[1] < 64  # the large-valued bias is kept whole
    assert global_k[2] == global_k[3] == 1  # the small layers keep only their largest entry


def test_a_message_of_global_top_k_layers_round_trips():
    request = CompressionRequest(codec="topk-global", bits=1.0, seed=5)
    sent = encode_update(LAYERS, request, node_id=2, reconstruct=True)
    got = decode_update(sent.payload, request, node_id=2, layout={k: v.shape for k, v in LAYERS.items()})
    assert 8 * len(sent.payload) <= 1.0 * sum(v.size for v in LAYERS.values())
    for name, values in got.arrays.items():
        np.testing.assert_array_equal(values, sent.reconstruction[name])
    assert np.count_nonzero(got.arrays["b1"]) == 64


def test_a_lone_array_is_plain_top_k_and_bad_budgets_name_the_bound():
    x = RNG.standard_normal(500)
    assert GlobalTopKCodec.for_bits(2.0, x).k == TopKCodec.for_bits(2.0, x).k
    with pytest.raises(ValueError, match="bits_per_coord must be > 0"):
        GlobalTopKCodec.for_bits_jointly(0.0, [x])
    assert [c.k for c in GlobalTopKCodec.for_bits_jointly(1.0, [np.zeros(0), x])][0] == 1
