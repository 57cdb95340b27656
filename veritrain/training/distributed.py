"""Multi-process data-parallel training under `torchrun` (`torchrun --nproc_per_node N -m veritrain train ...`).

Every process holds the whole model and the same random states; each global batch of `--batch-size` images
(the one a single-process run would draw) is split into N contiguous-stride shares, one per process. A
process scales its loss by its share of the batch and the gradients are summed over the processes, so one
step equals the step of a single process on the whole batch (up to the order of float additions). This is
DistributedDataParallel's arithmetic (an all-reduce of the gradients after backward, parameters broadcast
from rank 0 at the start); the loop does it itself because the bound engine walks the plain `nn.Module`
(`bounds.to_ops`) and a robust loss uses each weight several times per step (clean forward, bounds, attacks),
which DDP's wrapper and its once-per-step gradient hooks do not allow.

Methods that bound k' samples of a batch (MixTrain) bound k' per process. At the end of an epoch every
process runs the objective's `end_epoch` and rank 0's state (e.g. MixTrain's alpha) is broadcast, so the
schedule is decided once. Rank 0 alone writes the run folder and evaluates; `--resume` loads the same
checkpoint in every process. CPU runs use the gloo backend, CUDA runs NCCL with one GPU per process.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from veritrain.device import select_device
from veritrain.errors import ConfigError

T = TypeVar("T")

#: how long a process waits for the others in one collective (rank 0 evaluates while the others wait)
TIMEOUT = datetime.timedelta(hours=6)


@dataclass(frozen=True)
class Processes:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: writes the run folder, evaluates, prints."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def current() -> Processes:
    """The torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK); a single process without it."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Processes()
    return Processes(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def setup(device_name: str) -> torch.device:
    """The device of this process (`select_device`; cuda:LOCAL_RANK for cuda/auto under torchrun), and the
    process group joined when running under torchrun (gloo on CPU, NCCL on CUDA)."""
    procs = current()
    device = select_device(device_name)
    if not procs.active:
        return device
    if device.type == "cuda":
        if device.index not in (None, procs.local_rank) and device_name not in ("auto", "cuda"):
            raise ConfigError(
                f"--device {device_name} under torchrun: each process takes cuda:LOCAL_RANK; "
                "pass --device cuda (or auto)"
            )
        if procs.local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"torchrun started {procs.world} processes on this node but only "
                f"{torch.cuda.device_count()} CUDA device(s) exist; lower --nproc_per_node"
            )
        device = torch.device("cuda", procs.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=TIMEOUT)
    return device


def shutdown() -> None:
    """Leave the process group (end of a torchrun training)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def share(batch: int, procs: Processes) -> slice:
    """This process's rows of a global batch of `batch` rows: every world-th row from its rank."""
    return slice(procs.rank, batch, procs.world)


def broadcast_parameters(model: nn.Module) -> None:
    """Every process starts from rank 0's weights and buffers (as DistributedDataParallel does)."""
    if dist.is_initialized():
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, 0)


def sum_gradients(model: nn.Module, bad_loss: bool) -> bool:
    """Sum the gradients of all processes (each scaled its loss by its share of the batch) in one flat
    all-reduce; parameters without a gradient contribute zeros. Returns whether any process had a
    non-finite loss (carried in the same all-reduce, so that every process stops together)."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    dev = params[0].device if params else torch.device("cpu")
    flat = torch.cat(
        [g.reshape(-1) for g in grads]
        + [torch.tensor([float(bad_loss)], device=dev, dtype=grads[0].dtype if grads else torch.float32)]
    )
    dist.all_reduce(flat)
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n
    return bool(flat[-1].item() > 0)


def sum_floats(values: dict[str, float]) -> dict[str, float]:
    """Per key, the sum over the processes (every process must pass the same keys, in any order)."""
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


def all_keys(keys: set[str]) -> set[str]:
    """The union of a set of names over the processes."""
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, sorted(keys))
    return set().union(*out)


def from_main(obj: T) -> T:
    """Rank 0's `obj` in every process (a picklable object)."""
    box = [obj]
    dist.broadcast_object_list(box, 0)
    return box[0]


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


__all__ = [
    "Processes",
    "barrier",
    "broadcast_parameters",
    "current",
    "from_main",
    "setup",
    "share",
    "shutdown",
    "sum_floats",
    "sum_gradients",
]
