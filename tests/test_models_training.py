"""flrd.models and flrd.training: architectures, seeding, weights, local SGD, evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flrd.datasets import MnistArrays, load_mnist
from flrd.models import build_model
from flrd.training import evaluate, get_weights, set_weights, train_local

PARAM_COUNTS = {"mlp": 199_210, "cnn": 28_938, "resnet20": 269_722, "resnet18": 11_173_962}


@pytest.fixture(scope="module")
def mnist() -> MnistArrays:
    return load_mnist()


def sample_input(name: str, batch: int = 4) -> torch.Tensor:
    shape = (batch, 28, 28) if name in ("mlp", "cnn") else (batch, 3, 32, 32)
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


def params_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("name", list(PARAM_COUNTS))
def test_param_counts_and_output_shape(name: str) -> None:
    model = build_model(name)  # type: ignore[arg-type]
    assert sum(p.numel() for p in model.parameters()) == PARAM_COUNTS[name]
    assert model(sample_input(name)).shape == (4, 10)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_mnist_models_accept_all_input_layouts(name: str) -> None:
    model = build_model(name)  # type: ignore[arg-type]
    x = sample_input(name)
    expected = model(x)
    for layout in (x.reshape(4, 1, 28, 28), x.reshape(4, 784)):
        torch.testing.assert_close(model(layout), expected)


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet20"])
def test_init_is_seeded_and_leaves_global_rng_alone(name: str) -> None:
    state = torch.get_rng_state()
    a, b = build_model(name, seed=5), build_model(name, seed=5)  # type: ignore[arg-type]
    assert torch.equal(torch.get_rng_state(), state)
    assert params_equal(a, b)
    assert not params_equal(a, build_model(name, seed=6))  # type: ignore[arg-type]


def test_unknown_model_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        build_model("vgg")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["mlp", "resnet20"])
def test_weights_round_trip(name: str) -> None:
    source, target = build_model(name, seed=1), build_model(name, seed=2)  # type: ignore[arg-type]
    weights = get_weights(source)
    assert [w.shape for w in weights] == [tuple(t.shape) for t in source.state_dict().values()]
    assert all(w.dtype == np.float32 for w in weights)
    set_weights(target, weights)
    assert params_equal(source, target)  # int64 BatchNorm counters included
    source.eval(), target.eval()
    x = sample_input(name)
    torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)


def test_get_weights_returns_copies() -> None:
    model = build_model("mlp")
    weights = get_weights(model)
    weights[0][...] = 0.0
    assert model.fc1.weight.abs().sum() > 0


def test_set_weights_rejects_mismatches() -> None:
    model = build_model("mlp")
    weights = get_weights(model)
    with pytest.raises(ValueError, match="6 state_dict entries, got 5"):
        set_weights(model, weights[:-1])
    weights[2] = weights[2][:, :-1]
    with pytest.raises(ValueError, match=r"fc2.weight.*\(200, 200\).*\(200, 199\)"):
        set_weights(model, weights)


def test_centralized_mlp_training_reaches_85_percent(mnist: MnistArrays) -> None:
    model = build_model("mlp", seed=0)
    _, accuracy_before = evaluate(model, mnist.x_test, mnist.y_test)
    loss = train_local(model, mnist.x_train, mnist.y_train, steps=300, seed=0)
    test_loss, accuracy = evaluate(model, mnist.x_test, mnist.y_test)
    assert accuracy_before < 0.3
    assert accuracy > 0.85
    assert test_loss < loss < math.log(10)  # late batches beat the running mean


def test_cnn_learns(mnist: MnistArrays) -> None:
    model = build_model("cnn", seed=0)
    train_local(model, mnist.x_train[:10000], mnist.y_train[:10000], steps=40, lr=0.05)
    _, accuracy = evaluate(model, mnist.x_test[:2000], mnist.y_test[:2000])
    assert accuracy > 0.8


def test_train_local_is_deterministic_given_seed(mnist: MnistArrays) -> None:
    x, y = mnist.x_train[:1000], mnist.y_train[:1000]
    runs = []
    for seed in (3, 3, 4):
        model = build_model("mlp", seed=0)
        loss = train_local(model, x, y, steps=5, batch_size=64, seed=seed)
        runs.append((loss, model))
    assert runs[0][0] == runs[1][0] and params_equal(runs[0][1], runs[1][1])
    assert runs[0][0] != runs[2][0] and not params_equal(runs[0][1], runs[2][1])


def test_train_local_on_a_partition_smaller_than_a_batch(mnist: MnistArrays) -> None:
    model = build_model("mlp")
    before = get_weights(model)
    threads = torch.get_num_threads()
    loss = train_local(model, mnist.x_train[:7], mnist.y_train[:7], steps=3)
    assert math.isfinite(loss) and torch.get_num_threads() == threads
    assert any(not np.array_equal(a, b) for a, b in zip(before, get_weights(model)))


def test_resnet20_trains_on_uint8_nchw_images() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (16, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 10, 16)
    model = build_model("resnet20")
    before = get_weights(model)
    assert math.isfinite(train_local(model, x, y, steps=2, batch_size=8))
    assert any(not np.array_equal(a, b) for a, b in zip(before, get_weights(model)))
    _, accuracy = evaluate(model, x, y)
    assert 0.0 <= accuracy <= 1.0


def test_evaluate_batching_dtype_handling_and_mode(mnist: MnistArrays) -> None:
    model = build_model("mlp", seed=0)
    x, y = mnist.x_test[:1500], mnist.y_test[:1500]
    loss, accuracy = evaluate(model, x, y)
    assert abs(loss - math.log(10)) < 0.3  # untrained: near-uniform predictions
    assert model.training  # mode restored
    loss_small_batches, accuracy_small_batches = evaluate(model, x, y, batch_size=333)
    assert accuracy_small_batches == accuracy
    assert loss_small_batches == pytest.approx(loss, rel=1e-5)
    normalized = (x.astype(np.float32) / 255 - 0.1307) / 0.3081  # floats are used as given
    assert evaluate(model, normalized, y) == pytest.approx((loss, accuracy), rel=1e-5)


def test_train_and_evaluate_reject_bad_inputs(mnist: MnistArrays) -> None:
    model = build_model("mlp")
    x, y = mnist.x_train[:10], mnist.y_train[:10]
    with pytest.raises(ValueError, match="steps"):
        train_local(model, x, y, steps=0)
    with pytest.raises(ValueError, match="labels"):
        train_local(model, x, y[:9], steps=1)
    with pytest.raises(ValueError, match="labels"):
        evaluate(model, x[:0], y[:0])


def test_mean_curvature_matches_the_exact_hessian_trace():
    """Hutchinson's estimate of tr(H)/n against the full Hessian of a small model's loss."""
    from torch import nn

    from flrd.training import mean_curvature

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 3))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 4)).astype(np.float32), rng.integers(0, 3, 32)
    params = list(model.parameters())
    shapes = [p.shape for p in params]
    flat = torch.cat([p.detach().reshape(-1) for p in params])

    def loss_of(vector):
        chunks, start = [], 0
        for shape in shapes:
            size = int(np.prod(shape))
            chunks.append(vector[start:start + size].reshape(shape))
            start += size
        hidden = torch.tanh(torch.tensor(x) @ chunks[0].T + chunks[1])
        return torch.nn.functional.cross_entropy(hidden @ chunks[2].T + chunks[3], torch.tensor(y))

    exact = float(torch.trace(torch.autograd.functional.hessian(loss_of, flat))) / flat.numel()
    assert mean_curvature(model, x, y, probes=4000, seed=1) == pytest.approx(exact, rel=0.05)
    with pytest.raises(ValueError, match="probes"):
        mean_curvature(model, x, y, probes=0)
