"""Devices: which one to run on (`select_device`), synchronisation and peak memory."""

from __future__ import annotations

import resource
import sys

import torch

from veritrain.errors import ConfigError

#: the values `--device` accepts, for help texts
DEVICE_CHOICES = "auto (cuda when available, else cpu), cpu, cuda or cuda:N"


def select_device(name: str) -> torch.device:
    """`cpu`, `cuda`, `cuda:N` or `auto` (cuda when available, else cpu); a clear error when cuda is absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {name!r} requested but CUDA is not available in this torch build/machine; "
                "use --device cpu (or auto)"
            )
        index = device.index if device.index is not None else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif device.type != "cpu":
        backend = getattr(torch.backends, device.type, None)
        if backend is None or not getattr(backend, "is_available", lambda: False)():
            raise ConfigError(f"device {name!r} is not available here; use cpu, cuda, cuda:N or auto")
    return device


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window (cuda only; a process's peak RSS cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels (cuda), so that wall-clock step times are real."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated (cuda) or the process's peak resident set size (cpu), in MB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:  # Linux: this process's own high-water mark (ru_maxrss of a forked child starts at the parent's)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


#: the most CPU threads veritrain uses by default: its networks are small, more threads mostly add overhead
MAX_DEFAULT_THREADS = 8


def default_threads() -> int:
    """CPU threads for torch when neither --threads nor OMP_NUM_THREADS says: the CPUs this process may use
    minus the load already on them (at least 1, at most MAX_DEFAULT_THREADS). torch's own default (one per
    core) oversubscribes a shared machine: on a busy 2-core machine the quickstart took 8.5 minutes with
    it instead of about 40 s with one thread."""
    import os

    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        busy = int(round(os.getloadavg()[0]))
    except (AttributeError, OSError):
        busy = 0
    return max(1, min(cpus - busy, cpus, MAX_DEFAULT_THREADS))


def configure_threads(threads: int | None) -> int:
    """Set torch's intra-op threads: `threads` if given, else OMP_NUM_THREADS if set, else `default_threads()`;
    returns the number used."""
    import os

    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {threads}")
        n = threads
    elif os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        n = max(1, int(os.environ["OMP_NUM_THREADS"]))
    else:
        n = default_threads()
    torch.set_num_threads(n)
    return n


__all__ = [
    "DEVICE_CHOICES",
    "configure_threads",
    "default_threads",
    "peak_memory_mb",
    "reset_peak_memory",
    "select_device",
    "synchronize",
]
