"""Building blocks of the random test networks shared by the bound tests."""
import torch
from torch import nn


def random_batchnorm(kind: type[nn.Module], n: int, g: torch.Generator) -> nn.Module:
    """A BatchNorm in eval mode with random statistics and affine parameters."""
    bn = kind(n)
    bn.running_mean = torch.randn(n, generator=g) * 0.3
    bn.running_var = torch.rand(n, generator=g) + 0.5
    with torch.no_grad():
        bn.weight.copy_(torch.randn(n, generator=g))
        bn.bias.copy_(torch.randn(n, generator=g) * 0.3)
    return bn.eval()
