"""Local training and evaluation on numpy arrays, and weights as lists of numpy arrays.

uint8 images are normalized on the fly with MNIST's statistics,
``(x / 255 - 0.1307) / 0.3081``; float inputs are used as they are. The number of torch
threads is left to the caller.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["evaluate", "get_weights", "mean_curvature", "set_weights", "train_local"]

_MNIST_MEAN = 0.1307
_MNIST_STD = 0.3081


def get_weights(model: nn.Module) -> list[np.ndarray]:
    """float32 copies of every ``state_dict`` entry (buffers included), in its order.

    Example:
        >>> from flrd.models import build_model
        >>> [w.shape for w in get_weights(build_model("mlp"))][:2]
        [(200, 784), (200,)]
    """
    return [t.detach().cpu().numpy().astype(np.float32, copy=True)
            for t in model.state_dict().values()]


def set_weights(model: nn.Module, arrays: list[np.ndarray]) -> None:
    """Copy ``arrays`` (as from :func:`get_weights`) into ``model``, casting to each dtype.

    Raises ValueError when the number of arrays or any shape does not match.

    Example:
        >>> from flrd.models import build_model
        >>> a, b = build_model("mlp", seed=0), build_model("mlp", seed=1)
        >>> set_weights(b, get_weights(a))
        >>> torch.equal(a.fc1.weight, b.fc1.weight)
        True
    """
    state = model.state_dict()
    if len(arrays) != len(state):
        raise ValueError(f"model has {len(state)} state_dict entries, got {len(arrays)} arrays")
    for (name, tensor), array in zip(state.items(), arrays):
        if tuple(tensor.shape) != tuple(np.shape(array)):
            raise ValueError(f"{name}: model expects shape {tuple(tensor.shape)}, "
                             f"got {tuple(np.shape(array))}")
    with torch.no_grad():
        for tensor, array in zip(state.values(), arrays):
            # state_dict tensors share storage with the model, so copy_ updates it in place.
            tensor.copy_(torch.tensor(array))


def _inputs(x: np.ndarray) -> torch.Tensor:
    # torch.tensor copies, so read-only (cached) arrays are safe to pass.
    t = torch.tensor(x, dtype=torch.float32)
    if x.dtype == np.uint8:
        return (t / 255.0 - _MNIST_MEAN) / _MNIST_STD
    return t


def _targets(y: np.ndarray) -> torch.Tensor:
    return torch.tensor(y, dtype=torch.int64)


def train_local(model: nn.Module, x: np.ndarray, y: np.ndarray, *, steps: int,
                batch_size: int = 128, lr: float = 0.01, momentum: float = 0.5,
                seed: int = 0) -> float:
    """Run ``steps`` SGD-with-momentum steps on ``(x, y)``; return the mean training loss.

    Batches are drawn epoch by epoch from seeded permutations of the samples (batches of
    ``min(batch_size, len(x))``). Momentum starts from zero at every call, as for a fresh
    client. Defaults are the FedAvg paper's MNIST settings.

    Example:
        >>> from flrd.datasets import load_mnist
        >>> from flrd.models import build_model
        >>> data, model = load_mnist(), build_model("mlp")
        >>> loss = train_local(model, data.x_train[:512], data.y_train[:512], steps=4)
        >>> 0.0 < loss < 3.0
        True
    """
    x, y = np.asarray(x), np.asarray(y)
    n = len(x)
    if n == 0 or len(y) != n:
        raise ValueError(f"need as many labels as (at least one) samples, got {n} and {len(y)}")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive, got {steps}, {batch_size}")
    batch_size = min(batch_size, n)
    rng = np.random.default_rng(seed)
    epochs = -(-steps * batch_size // n)  # ceil division
    order = np.concatenate([rng.permutation(n) for _ in range(epochs)])
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    model.train()
    total_loss = 0.0
    for step in range(steps):
        idx = order[step * batch_size:(step + 1) * batch_size]
        loss = F.cross_entropy(model(_inputs(x[idx])), _targets(y[idx]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.item()
    return total_loss / steps


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray,
             batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy (fraction in [0, 1]) of ``model`` on ``(x, y)``.

    Example:
        >>> from flrd.datasets import load_mnist
        >>> from flrd.models import build_model
        >>> data = load_mnist()
        >>> loss, accuracy = evaluate(build_model("mlp"), data.x_test, data.y_test)
        >>> 0.0 <= accuracy <= 1.0
        True
    """
    x, y = np.asarray(x), np.asarray(y)
    n = len(x)
    if n == 0 or len(y) != n:
        raise ValueError(f"need as many labels as (at least one) samples, got {n} and {len(y)}")
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, n, batch_size):
            logits = model(_inputs(x[start:start + batch_size]))
            target = _targets(y[start:start + batch_size])
            loss_sum += F.cross_entropy(logits, target, reduction="sum").item()
            correct += int((logits.argmax(dim=1) == target).sum())
    model.train(was_training)
    return loss_sum / n, correct / n


def mean_curvature(model: nn.Module, x: np.ndarray, y: np.ndarray, *, probes: int = 2, seed: int = 0) -> float:
    """Hutchinson's estimate of ``tr(H) / n``, the mean curvature of the mean cross-entropy
    on ``(x, y)`` over the model's ``n`` parameters (docs/THEORY.md §16).

    Averages ``z^T H z / n`` over ``probes`` Rademacher vectors ``z`` (seeded), each by one
    double back-propagation; torch has no trace estimator, so it is written here.

    Example:
        >>> from flrd.datasets import load_mnist
        >>> from flrd.models import build_model
        >>> data = load_mnist()
        >>> curvature = mean_curvature(build_model("mlp"), data.x_train[:256], data.y_train[:256])
        >>> 0.0 < curvature < 1.0
        True
    """
    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    params = [p for p in model.parameters() if p.requires_grad]
    loss = F.cross_entropy(model(_inputs(np.asarray(x))), _targets(np.asarray(y)))
    grads = torch.autograd.grad(loss, params, create_graph=True)
    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    for _ in range(probes):
        z = [torch.randint(0, 2, p.shape, generator=generator).to(p.dtype) * 2 - 1 for p in params]
        hz = torch.autograd.grad(grads, params, grad_outputs=z, retain_graph=True)
        total += float(sum((a * b).sum() for a, b in zip(hz, z, strict=True)))
    return total / probes / sum(p.numel() for p in params)
