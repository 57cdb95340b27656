"""Building blocks of the random test networks shared by the bound tests, and the synthetic images of the
training-method tests."""

import itertools

import numpy as np
import torch
from scipy.optimize import linprog
from torch import nn
from torch.utils.data import TensorDataset


def random_batchnorm(kind: type[nn.Module], n: int, g: torch.Generator) -> nn.Module:
    """A BatchNorm in eval mode with random statistics and affine parameters."""
    bn = kind(n)
    bn.running_mean = torch.randn(n, generator=g) * 0.3
    bn.running_var = torch.rand(n, generator=g) + 0.5
    with torch.no_grad():
        bn.weight.copy_(torch.randn(n, generator=g))
        bn.bias.copy_(torch.randn(n, generator=g) * 0.3)
    return bn.eval()


def three_class_images(n: int, shape: tuple[int, int, int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n images of `shape` in [0, 1], labels 0, 1, 2 in turn: bright top two rows, bright bottom two rows, dark."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = 0.3 * torch.rand(n, *shape, generator=g)
    x[y == 0, :, :2] += 0.6
    x[y == 1, :, -2:] += 0.6
    return x.clamp(0, 1), y


def tiny_data(n: int = 300, seed: int = 0) -> TensorDataset:
    """A separable 2-class problem on 1x6x6 'images' in [0, 1] (the training-loop tests' data set)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 6, 6, generator=g)
    y = (x[:, :, :3].mean((1, 2, 3)) > x[:, :, 3:].mean((1, 2, 3))).long()
    return TensorDataset(x, y)


def tiny_model(seed: int = 0) -> nn.Module:
    """A 36-16-2 ReLU network for `tiny_data`."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, 2))


def tiny_net(seed: int, hidden: tuple[int, ...], n_in: int = 2, n_out: int = 2) -> nn.Sequential:
    torch.manual_seed(seed)
    sizes = (n_in, *hidden, n_out)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).double().eval()


def exact_range(model: nn.Sequential, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """min and max of every output over the box [lo, hi], by enumerating activation patterns."""
    linears = [m for m in model if isinstance(m, nn.Linear)]
    ws = [m.weight.detach().numpy() for m in linears]
    bs = [m.bias.detach().numpy() for m in linears]
    hidden = [w.shape[0] for w in ws[:-1]]
    n_out = ws[-1].shape[0]
    best_lo, best_hi = np.full(n_out, np.inf), np.full(n_out, -np.inf)
    for pattern in itertools.product([0, 1], repeat=sum(hidden)):
        a_mat, a_vec = np.eye(len(lo)), np.zeros(len(lo))  # current layer = a_mat x + a_vec
        ub_rows, ub_vals, pos = [], [], 0
        for w, b, n in zip(ws[:-1], bs[:-1], hidden):
            z_mat, z_vec = w @ a_mat, w @ a_vec + b
            act = np.array(pattern[pos : pos + n], dtype=float)
            pos += n
            for j in range(n):  # active: z >= 0  <=>  -z <= 0; inactive: z <= 0
                s = -1.0 if act[j] else 1.0
                ub_rows.append(s * z_mat[j])
                ub_vals.append(-s * z_vec[j])
            a_mat, a_vec = act[:, None] * z_mat, act * z_vec
        out_mat, out_vec = ws[-1] @ a_mat, ws[-1] @ a_vec + bs[-1]
        for o in range(n_out):
            for sgn in (1.0, -1.0):
                res = linprog(
                    sgn * out_mat[o],
                    A_ub=np.array(ub_rows) if ub_rows else None,
                    b_ub=np.array(ub_vals) if ub_rows else None,
                    bounds=list(zip(lo, hi)),
                    method="highs",
                )
                if res.status == 2:  # infeasible pattern
                    break
                assert res.status == 0, res.message
                val = sgn * res.fun + out_vec[o]
                best_lo[o], best_hi[o] = min(best_lo[o], val), max(best_hi[o], val)
    return best_lo, best_hi
