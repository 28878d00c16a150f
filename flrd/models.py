"""Models used in flrd experiments, built with a deterministic, seeded initialization.

- ``"mlp"``: 784-200-200-10 ReLU MLP, the "2NN" of McMahan et al. (2017); 199,210 params.
- ``"cnn"``: two 5x5 conv layers (16, 32 channels) + linear head for 28x28x1; 28,938 params.
- ``"resnet20"``: He et al. (2016) CIFAR ResNet-20 for 32x32x3 (parameter-free
  shortcuts); 269,722 params.
- ``"resnet18"``: torchvision's ResNet-18 with a CIFAR stem (3x3 conv, no max-pool) and
  10 classes; 11,173,962 params. torchvision is imported only when it is asked for.

MNIST models accept ``(N, 28, 28)``, ``(N, 1, 28, 28)`` or ``(N, 784)`` float input;
the ResNets take ``(N, 3, 32, 32)``. All return ``(N, 10)`` logits.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MODEL_NAMES", "build_model"]

ModelName = Literal["mlp", "cnn", "resnet20", "resnet18"]
MODEL_NAMES: tuple[str, ...] = ("mlp", "cnn", "resnet20", "resnet18")
_NUM_CLASSES = 10


def build_model(name: ModelName, seed: int = 0) -> nn.Module:
    """Build model ``name`` with weights drawn from ``seed``; the global torch RNG is untouched.

    Example:
        >>> model = build_model("mlp", seed=0)
        >>> model(torch.zeros(2, 28, 28)).shape
        torch.Size([2, 10])
        >>> sum(p.numel() for p in model.parameters())
        199210
        >>> torch.equal(model.fc1.weight, build_model("mlp", seed=0).fc1.weight)
        True
    """
    builders = {"mlp": _mlp, "cnn": _cnn, "resnet20": _ResNet20, "resnet18": _resnet18}
    if name not in builders:
        raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")
    # fork_rng restores the caller's RNG state, so building a model has no side effects.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return builders[name]()


def _mlp() -> nn.Module:
    return nn.Sequential(OrderedDict(
        flatten=nn.Flatten(),
        fc1=nn.Linear(28 * 28, 200), relu1=nn.ReLU(),
        fc2=nn.Linear(200, 200), relu2=nn.ReLU(),
        fc3=nn.Linear(200, _NUM_CLASSES),
    ))


def _cnn() -> nn.Module:
    return nn.Sequential(OrderedDict(
        # Flatten then unflatten accepts (N,28,28), (N,1,28,28) and (N,784) alike.
        flatten_in=nn.Flatten(), image=nn.Unflatten(1, (1, 28, 28)),
        conv1=nn.Conv2d(1, 16, 5, padding=2), relu1=nn.ReLU(), pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(16, 32, 5, padding=2), relu2=nn.ReLU(), pool2=nn.MaxPool2d(2),
        flatten=nn.Flatten(),
        fc=nn.Linear(32 * 7 * 7, _NUM_CLASSES),
    ))


class _BasicBlock(nn.Module):
    """3x3-3x3 residual block; the shortcut subsamples and zero-pads channels (option A)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.stride = stride
        self.extra_channels = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x[:, :, :: self.stride, :: self.stride]
        if self.extra_channels:
            half = self.extra_channels // 2
            shortcut = F.pad(shortcut, (0, 0, 0, 0, half, self.extra_channels - half))
        return F.relu(out + shortcut)


class _ResNet20(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        blocks: list[nn.Module] = []
        in_channels = 16
        for out_channels, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                blocks.append(_BasicBlock(in_channels, out_channels, stride if i == 0 else 1))
                in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, _NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.relu(self.bn(self.conv(x))))
        return self.fc(x.mean(dim=(2, 3)))


def _resnet18() -> nn.Module:
    from torchvision.models import resnet18  # lazy: optional and slow to import

    model = resnet18(weights=None, num_classes=_NUM_CLASSES)
    # ImageNet's 7x7/2 stem and max-pool would shrink 32x32 inputs to 8x8 at once.
    model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    return model
