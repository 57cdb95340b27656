"""Table X: time and peak memory of one training batch of regular, MixTrain (k' = 1) and Wong et al.
training on every network of the paper."""

from __future__ import annotations

from veritrain.experiments.measures import STEP_METHODS, step_costs
from veritrain.experiments.spec import EPS_CIFAR, EPS_IMAGENET, NET_DATASET, NET_LABELS, Experiment, Run

#: net -> the paper's GPU memory (MB) of regular, MixTrain, Wong et al. (Table X; CIFAR Resnet's Wong
#: entry is printed "3,7784", read as 37,784)
PAPER = {
    "mnist-small": (533, 837, 5474),
    "mnist-large": (629, 6383, 32626),
    "cifar-small": (553, 869, 17960),
    "cifar-large": (621, 5335, 39840),
    "cifar-resnet": (589, 3475, 37784),
}
EPS = {"mnist": 0.3, "cifar10": EPS_CIFAR, "imagenet200": EPS_IMAGENET}

COLUMNS = tuple(c for label, _ in STEP_METHODS for c in (f"{label} MB", f"{label} s"))


#: the networks whose MixTrain (k' = 1) or Wong et al. batch takes more than a few CPU seconds: at the cpu scale
#: each method runs one batch without a warm-up batch (a warm-up would double the cost of a batch of up to a minute)
LARGE = ("mnist-fc2", "mnist-large", "cifar-large", "cifar-resnet", "imagenet-resnet")
#: the cpu scale's limits of a child: CPU seconds (one thread; 10 children of the large networks at most 10
#: CPU-minutes together) and resident memory (6 GB: a stopped child shows the peak it reached). One batch without
#: warm-up, measured for issue 12 (CPU s / peak resident GB): MixTrain FC2 6.6 / 1.4, MNIST Large 20-25 / 4.8-5.5,
#: CIFAR Large 14 / 4.3, CIFAR Resnet 12 / 3.0, ImageNet Resnet > 6 GB; Wong FC2 15 / 1.6, MNIST Large 22 / 3.7,
#: CIFAR Large 30 / 4.4, CIFAR Resnet 35 / 5.1, ImageNet Resnet > 6 GB
CPU_LIMIT_S = 60.0
MEMORY_LIMIT_MB = 6144.0


def _run(net: str) -> Run:
    dataset = NET_DATASET[net]
    paper = dict(zip((f"{label} MB" for label, _ in STEP_METHODS), PAPER.get(net, ())))
    return Run(
        key=net,
        config={"net": net, "dataset": dataset, "eps": EPS[dataset], "batch_size": 50},
        labels={"Network": NET_LABELS[net], "eps": "2/255" if dataset == "cifar10" else EPS[dataset]},
        paper=paper,
        measure_options={"cpu": {"warmup": 0}} if net in LARGE else {},
    )


EXPERIMENT = Experiment(
    name="table10",
    source="Table X",
    title="Memory (and time) of one training batch: regular, MixTrain (k' = 1), Wong et al. (50 projections)",
    runs=tuple(_run(net) for net in NET_LABELS),
    columns=COLUMNS,
    kind="measure",
    measure=step_costs,
    scale_options={
        "paper": {"batches": 3, "warmup": 1, "time_limit_s": 600.0, "device": "auto"},
        "cpu": {
            "batches": 1,
            "warmup": 1,
            "threads": 1,
            "time_limit_s": 3600.0,
            "cpu_limit_s": CPU_LIMIT_S,
            "memory_limit_mb": MEMORY_LIMIT_MB,
            "device": "cpu",
        },
    },
    cpu_note="each method's batch (50 random images) in a forked child process with one thread: 1 warm-up batch, then "
    "1 timed (MNIST FC2, MNIST Large, CIFAR Large and the ResNets: 1 batch, no warm-up); 's' is the batch's "
    "CPU time (process time, which other jobs on the machine do not inflate); a child is stopped past 60 "
    "CPU seconds or 6 GB resident memory (shown as '> 60 CPU s' / '> 6 GB', with the peak memory seen until "
    "then: a lower bound of what the batch needs)",
    note="MB: on a GPU the peak allocated GPU memory (the paper's measure, GTX 1080 Ti); on a CPU the rise of the "
    "forked child's peak resident memory (VmHWM) over its size when the batch started, and for a child stopped "
    "at its limit the peak resident memory seen until then (absolute, including about 150 MB inherited from the "
    "parent: a lower bound of what the batch needs). eps 0.3 (MNIST), 2/255 (CIFAR), 0.0017 "
    "(ImageNet-200, pixel space), as in the paper. MNIST FC1/FC2 and ImageNet Resnet have no paper numbers.",
)
