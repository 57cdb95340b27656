"""Measurements that are not a training summary: attacks at equal time (Table I), ERA per attack
(Table VII), and the time and peak memory of one training batch per method in a child process (Table X).

Each returns the row's columns and caches its result as JSON (in the run folder, or DIR/training-runs for
Table X) under a name hashed from its parameters, so a finished measurement is not repeated. A measurement
of a trained network is keyed by the digest of its weights file (not its modification time, which a git
checkout resets), so a committed measurement stays valid in every clone of the results.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from veritrain.device import peak_memory_mb, reset_peak_memory, select_device, synchronize
from veritrain.reporting.io import read_json, write_json
from veritrain.training.run_dir import RunFiles
from veritrain.validation import DEFAULT_DOMAIN

if TYPE_CHECKING:
    from veritrain.models import ModelSpec
    from veritrain.training.config import TrainConfig


def _cached(path: Path, params: dict[str, Any], compute) -> dict[str, Any]:
    if path.is_file():
        saved = read_json(path)
        if saved.get("params") == json.loads(json.dumps(params, default=str)):
            return saved["result"]
    result = compute()
    write_json(path, {"params": params, "result": result})
    return result


def model_digest(run_dir: Path) -> str:
    """The first 16 hex digits of the SHA-256 of the run's weights file (RUN/model.pt)."""
    digest = hashlib.sha256()
    with open(RunFiles(run_dir).model, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _key(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:8]


def load_run_model(run_dir: Path, config: dict[str, Any]) -> torch.nn.Module:
    """The trained network of a run folder (RUN/model.pt), in eval mode."""
    from veritrain.models import load_weights, resolve_model

    model = resolve_model(config["net"], activation=config.get("activation", "relu"))
    load_weights(model, str(RunFiles(run_dir).model))
    return model.eval()


def test_images(config: dict[str, Any], n: int | None, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """n test images of the run's data set: the first n, or n drawn at random with `seed`; all when n is None."""
    from veritrain.data import load_dataset

    x, y = load_dataset(config["dataset"], "test", root=config.get("data_dir")).tensors
    if n is None or n >= len(x):
        return x, y
    if seed is None:
        return x[:n], y[:n]
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx], y[idx]


# ----------------------------------------------------------------------------- Table I


def _attack_chunks(attack, model, x, y, chunk: int) -> torch.Tensor:
    return torch.cat([attack.run(model, x[i : i + chunk], y[i : i + chunk]).success for i in range(0, len(x), chunk)])


#: PGD's and CW's step in Table I (Madry et al.'s, the paper's)
PGD_STEP = 0.01
#: the clocks an attack's time is measured with: wall (a GPU or an idle machine) or the process's CPU time
#: (a shared CPU, where the wall time of the same work varies several-fold with the load)
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _equal_time(
    name: str,
    model,
    x,
    y,
    eps: float,
    budget_s: float,
    steps: int,
    step_size: float,
    chunk: int,
    clock=time.perf_counter,
) -> tuple[torch.Tensor, int, float]:
    """Success per image of `name` (pgd or cw) restarted from fresh random points with new seeds on the
    images it has not broken yet, until `budget_s` seconds of `clock` are spent; returns (success, iterations
    per image, seconds spent)."""
    from veritrain.attacks import make_attack

    success = torch.zeros(len(x), dtype=torch.bool)
    t0, restarts = clock(), 0
    while restarts == 0 or clock() - t0 < budget_s:
        rest = (~success).nonzero().squeeze(1)
        if rest.numel() == 0:
            break
        attack = make_attack(name, eps, seed=restarts, steps=steps, step_size=step_size)
        success[rest] = _attack_chunks(attack, model, x[rest], y[rest], chunk)
        restarts += 1
    return success, restarts * steps, clock() - t0


def attack_comparison(
    exp,
    run,
    config: dict[str, Any],
    scale: str,
    run_dir: Path,
    out_dir: Path,
    *,
    n: int = 1024,
    iterations: int = 20,
    domain: str = DEFAULT_DOMAIN,
    seed: int = 0,
    chunk: int = 100,
    clock: str = "wall",
    attack: str = "interval",
    skip_verified: bool = True,
) -> dict[str, Any]:
    """Attack success rates of the interval attack and of PGD and CW given the same time (Table I).

    `attack`: `interval` or `interval-targeted`, with its `skip_verified` option. Where the attack's Line 13 PGD
    steps otherwise than PGD's 0.01, PGD-40 at that step given the same time too ("PGD at IA step")."""
    from veritrain.attacks import make_attack
    from veritrain.attacks.interval import IntervalAttack

    eps = float(config["eps"])
    ia = make_attack(attack, eps, seed=seed, iterations=iterations, domain=domain, skip_verified=skip_verified)
    if not isinstance(ia, IntervalAttack):
        raise ValueError(f"Table I compares an interval attack with PGD and CW; {attack!r} is not one")
    own_step = ia.pgd_step_size != PGD_STEP
    params = {
        "n": n,
        "iterations": iterations,
        "domain": domain,
        "seed": seed,
        "eps": eps,
        "model": model_digest(run_dir),
    }
    if clock != "wall":  # the key of a wall-clock measurement is as before
        params["clock"] = clock
    if attack != "interval":  # as is the key of the plain interval attack
        params["attack"] = attack
    if not skip_verified:
        params["skip_verified"] = False
    if own_step or ia.pgd_loss != "ce":  # Line 13 as the paper's PGD keeps the key it had
        params.update(pgd_loss=ia.pgd_loss, pgd_step_size=ia.pgd_step_size)
    tick = CLOCKS[clock]

    def compute() -> dict[str, Any]:
        model = load_run_model(run_dir, config)
        x, y = test_images(config, n, seed)
        with torch.no_grad():
            acc = 100.0 * (model(x).argmax(1) == y).float().mean().item()
        t0 = tick()
        s_ia = _attack_chunks(ia, model, x, y, chunk)
        budget = tick() - t0
        s_pgd, it_pgd, t_pgd = _equal_time("pgd", model, x, y, eps, budget, 40, PGD_STEP, chunk, tick)
        s_cw, it_cw, t_cw = _equal_time("cw", model, x, y, eps, budget, 40, PGD_STEP, chunk, tick)
        pct = lambda s: 100.0 * s.float().mean().item()  # noqa: E731
        own: dict[str, Any] = {}
        if own_step:
            s_own, _, _ = _equal_time("pgd", model, x, y, eps, budget, 40, ia.pgd_step_size, chunk, tick)
            own = {
                "PGD at IA step": pct(s_own),
                "interval / PGD at IA step": pct(s_ia) / max(pct(s_own), 1e-9),
                "IA step": ia.pgd_step_size,
            }
        return {
            "ACC": acc,
            "n": len(x),
            "attack n": len(x),
            "bound domain": domain,
            "interval attack": attack,
            "PGD": pct(s_pgd),
            "CW": pct(s_cw),
            "interval": pct(s_ia),
            "CW / PGD": pct(s_cw) / max(pct(s_pgd), 1e-9),
            "interval / PGD": pct(s_ia) / max(pct(s_pgd), 1e-9),
            "attack time s": budget,
            "PGD iterations": it_pgd,
            "CW iterations": it_cw,
            "clock": clock,
            "PGD time s": t_pgd,
            "CW time s": t_cw,
            "interval only": int((s_ia & ~s_pgd).sum()),
            "PGD only": int((s_pgd & ~s_ia).sum()),
            **own,
        }

    out = _cached(run_dir / f"table1-attacks-{_key(params)}.json", params, compute)
    out.setdefault("interval attack", attack)  # measured before the column existed
    return out


# ----------------------------------------------------------------------------- Table VII


def attack_era(
    exp, run, config: dict[str, Any], scale: str, run_dir: Path, out_dir: Path, *, n: int | None = None, seed: int = 0
) -> dict[str, Any]:
    """ERA under CW and the interval attack on the run's evaluated test images (Table VII)."""
    if n is None and not config.get("full_eval"):
        n = config.get("eval_n")
    params = {"n": n, "seed": seed, "eps": config["eps"], "model": model_digest(run_dir)}

    def compute() -> dict[str, Any]:
        from veritrain.evaluation.evaluate import evaluate_tensors

        model = load_run_model(run_dir, config)
        x, y = test_images(config, n)
        ev = evaluate_tensors(
            model, x, y, eps=float(config["eps"]), attacks=("cw", "interval"), domains=(), seed=seed, batch_size=100
        )
        return {"ERA CW": ev["era"].get("cw"), "ERA interval": ev["era"].get("interval"), "attack n": len(x)}

    return _cached(run_dir / f"table7-attacks-{_key(params)}.json", params, compute)


# ----------------------------------------------------------------------------- Table X


def _random_batch(spec: ModelSpec, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """n random pixel images of the network's input shape and random labels (fixed seeds), on `device`."""
    x = torch.rand(n, *spec.in_shape, generator=torch.Generator().manual_seed(0)).to(device)
    y = torch.randint(0, spec.num_classes, (n,), generator=torch.Generator().manual_seed(1)).to(device)
    return x, y


def _timed_steps(
    cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor, eps: float, device: torch.device, warmup: int, batches: int
) -> tuple[list[float], list[float]]:
    """`warmup` + `batches` Adam steps (lr 1e-3) of `cfg`'s method on a fresh `cfg.net` (seed 0) and the batch
    (x, y); the wall-clock and the CPU seconds of each step after the warm-up. On CUDA the peak-memory window
    starts after the model is built. The model and optimiser are freed on return."""
    from veritrain.models import build_model
    from veritrain.training.methods import METHODS, StepContext

    torch.manual_seed(0)
    model = build_model(cfg.net, activation=cfg.activation).to(device).train()
    obj = METHODS.get(cfg.method)(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator(device=device).manual_seed(0)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    reset_peak_memory(device)
    times: list[float] = []
    cpu_times: list[float] = []
    for i in range(warmup + batches):
        t0, c0 = time.perf_counter(), time.process_time()
        ctx = StepContext(eps=eps, epoch=0, step=i, num_batches=1000, generator=gen, device=device)
        loss, _ = obj.loss(model, x, y, ctx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
    return times, cpu_times


def _error(e: BaseException, length: int) -> str:
    """An exception as a table entry: its type and the first line of its message, cut at `length`."""
    return f"{type(e).__name__}: {str(e).splitlines()[0][:length] if str(e) else ''}"


def _step_child(config: dict[str, Any], batches: int, warmup: int, threads: int, queue: Any) -> None:
    """In a fresh process: `warmup` + `batches` optimiser steps of the method on random pixels; reports the
    mean step time, the peak resident memory (and its rise over the process's size before the model was
    built), and on CUDA the peak allocated GPU memory."""
    try:
        torch.set_num_threads(threads)
        from veritrain.models import MODELS
        from veritrain.training.config import TrainConfig

        cfg = TrainConfig.from_dict(config).resolved()
        device = select_device(cfg.device)
        base_rss = _rss_mb()
        x, y = _random_batch(MODELS.get(cfg.net), cfg.batch_size, device)
        times, cpu_times = _timed_steps(cfg, x, y, cfg.eps, device, warmup, batches)
        out = {
            "batch s": sum(times) / len(times),
            "batch cpu s": sum(cpu_times) / len(cpu_times),
            "peak MB": _hwm_mb(),
            "base MB": base_rss,
            "device": str(device),
        }
        if device.type == "cuda":
            out["gpu MB"] = peak_memory_mb(device)
        queue.put(out)
    except BaseException as e:  # noqa: BLE001 - reported to the parent as the row's entry
        queue.put({"error": _error(e, 200)})


def time_methods(
    net: str,
    cases: list[tuple[str, dict[str, Any]]],
    device: str = "auto",
    batches: int = 1,
    warmup: int = 1,
    eps: float | None = None,
) -> dict[str, dict[str, Any]]:
    """In this process: `warmup` + `batches` optimiser steps of every (label, TrainConfig options) case on
    `net` with random pixels; per case the mean step time and, on CUDA, the peak allocated GPU memory
    (or the error, e.g. out of memory). Used by scripts/gpu_check.sh (one child process per network)."""
    from veritrain.experiments.spec import EPS_CIFAR, EPS_IMAGENET
    from veritrain.models import MODELS
    from veritrain.training.config import TrainConfig

    spec = MODELS.get(net)
    dev = select_device(device)
    if eps is None:
        eps = {"mnist": 0.3, "cifar10": EPS_CIFAR}.get(spec.dataset, EPS_IMAGENET)
    x, y = _random_batch(spec, 50, dev)
    out: dict[str, dict[str, Any]] = {}
    for label, options in cases:
        try:
            cfg = TrainConfig.from_dict({"net": net, "dataset": spec.dataset, "eps": eps, **options}).resolved()
            times, _ = _timed_steps(cfg, x, y, eps, dev, warmup, batches)
            res: dict[str, Any] = {"batch s": sum(times) / len(times)}
            if dev.type == "cuda":
                res["gpu MB"] = peak_memory_mb(dev)
            out[label] = res
        except Exception as e:  # noqa: BLE001 - out of memory, unsupported layer: the table says which
            out[label] = {"error": _error(e, 120)}
    return out


def _status_mb(key: str, pid: int | str = "self") -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _rss_mb() -> float | None:
    return _status_mb("VmRSS")


def _hwm_mb() -> float | None:
    return _status_mb("VmHWM")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), 0 where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def measure_step(
    config: dict[str, Any],
    *,
    batches: int = 2,
    warmup: int = 1,
    threads: int = 1,
    time_limit_s: float = 300.0,
    memory_limit_mb: float | None = None,
    cpu_limit_s: float | None = None,
) -> dict[str, Any]:
    """Time and peak memory of one training batch of `config`'s method in a child process of its own, killed
    when it runs past `time_limit_s` (wall clock) or `cpu_limit_s` (its CPU time: on a loaded machine the
    fair limit), or its resident memory passes `memory_limit_mb`."""
    import multiprocessing as mp

    # CPU: a forked child (instant; its peak-RSS mark starts at the parent's size, subtracted as "base MB");
    # CUDA cannot be forked after initialisation: a spawned child
    forked = str(config.get("device", "cpu")) == "cpu" and os.name == "posix"
    ctx = mp.get_context("fork") if forked else mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_step_child, args=(config, batches, warmup, threads, queue), daemon=True)
    t0 = time.perf_counter()
    child.start()
    pid = child.pid
    assert pid is not None  # set by start()
    peak_seen = 0.0
    result: dict[str, Any] | None = None
    while result is None:
        try:
            result = queue.get(timeout=0.2)
        except Exception:  # queue.Empty
            rss = _status_mb("VmRSS", pid) or 0.0
            peak_seen = max(peak_seen, rss)
            if not child.is_alive():
                result = {"error": f"the child exited with code {child.exitcode}"}
            elif time.perf_counter() - t0 > time_limit_s:
                result = {"error": f"> {time_limit_s:.0f} s", "limit": "time", "peak MB seen": peak_seen}
            elif cpu_limit_s is not None and _cpu_seconds(pid) > cpu_limit_s:
                result = {"error": f"> {cpu_limit_s:.0f} CPU s", "limit": "time", "peak MB seen": peak_seen}
            elif memory_limit_mb is not None and rss > memory_limit_mb:
                result = {"error": f"> {memory_limit_mb / 1024:.0f} GB", "limit": "memory", "peak MB seen": peak_seen}
    if child.is_alive():
        child.kill()
    child.join(5)
    if memory_limit_mb is not None and "limit" not in result and float(result.get("peak MB", 0.0)) > memory_limit_mb:
        # a fast child can finish between two polls: its own high-water mark still tells it passed the limit
        result = {
            "error": f"> {memory_limit_mb / 1024:.0f} GB",
            "limit": "memory",
            "peak MB seen": float(result["peak MB"]),
        }
    result["wall s"] = time.perf_counter() - t0
    return result


#: Table X's methods: (column label, TrainConfig options)
STEP_METHODS = (
    ("regular", {"method": "regular"}),
    ("MixTrain", {"method": "mixtrain", "domain": DEFAULT_DOMAIN, "k_per_batch": 1}),
    ("Wong", {"method": "wong", "projections": 50}),
)


def step_costs(
    exp,
    run,
    config: dict[str, Any],
    scale: str,
    run_dir: Path,
    out_dir: Path,
    *,
    batches: int = 2,
    warmup: int = 1,
    threads: int = 1,
    time_limit_s: float = 300.0,
    memory_limit_mb: float | None = None,
    cpu_limit_s: float | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Per-batch time and peak memory of regular, MixTrain (k' = 1) and Wong et al. training (Table X),
    each in its own child process. On a CPU the time is the batch's CPU time (process time), which a
    loaded machine does not inflate; on a GPU the wall-clock time."""
    row: dict[str, Any] = {}
    for label, options in STEP_METHODS:
        cfg = {**config, **options, "device": device or config.get("device", "cpu")}
        params = {
            "config": cfg,
            "batches": batches,
            "warmup": warmup,
            "threads": threads,
            "time_limit_s": time_limit_s,
            "memory_limit_mb": memory_limit_mb,
            "cpu_limit_s": cpu_limit_s,
        }
        cache = out_dir / "training-runs" / f"table10-{scale}-{config['net']}-{label}-{_key(params)}.json"
        res = _cached(
            cache,
            params,
            lambda: measure_step(
                cfg,
                batches=batches,
                warmup=warmup,
                threads=threads,
                time_limit_s=time_limit_s,
                memory_limit_mb=memory_limit_mb,
                cpu_limit_s=cpu_limit_s,
            ),
        )
        if "error" in res:
            row[f"{label} s"] = res["error"]
            seen = res.get("peak MB seen")
            row[f"{label} MB"] = f">= {seen:,.0f} (stopped: {res['error']})" if seen else res["error"]
            continue
        row[f"{label} s"] = res["batch s"] if res.get("device", "cpu").startswith("cuda") else res["batch cpu s"]
        gpu = res.get("gpu MB")
        if gpu is not None:
            row[f"{label} MB"] = gpu
        else:  # the rise of the child's peak resident memory over its size when the batch started
            row[f"{label} MB"] = res["peak MB"] - res["base MB"]
            row[f"{label} peak RSS MB"] = res["peak MB"]
    return row
