"""The small MNIST networks of the cross-check against Marabou (results/crosscheck/README.md).

Small enough for a complete verifier on a CPU: a fully connected 784-100-100-10 network and a
two-layer convolutional one (4 and 8 channels, 4x4 kernels, stride 2) with a 50-unit dense layer.
"""
from torch import nn


def mnist_fc_100x2() -> nn.Sequential:
    """784-100-100-10, ReLU (200 hidden units)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(),
                         nn.Linear(100, 10))


def mnist_conv_small() -> nn.Sequential:
    """Conv4 4x4/2 - Conv8 4x4/2 - FC50 - 10, padding 1 (784 + 392 + 50 hidden units)."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(4, 8, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 7 * 7, 50), nn.ReLU(), nn.Linear(50, 10),
    )
