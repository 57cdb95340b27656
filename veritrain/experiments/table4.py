"""Table IV: MixTrain against verifiably robust training (Wong et al., DIFFAI) with 12 hours each."""

from __future__ import annotations

from veritrain.experiments.spec import DNC, EPS_CIFAR, Experiment, paper_numbers, row

#: k' of MixTrain in Table IV: 20 on the small networks, 10 on CIFAR Large / Resnet, 1 on MNIST Large
K = {"mnist-small": 20, "cifar-small": 20, "cifar-large": 10, "cifar-resnet": 10, "mnist-large": 1}

#: (net, eps, method, batch s, (ACC, ERA, VRA) or DNC) as printed in Table IV (training time 12 h each)
PAPER = [
    ("mnist-small", 0.1, "diffai", 0.013, (97.8, 93.1, 60.6)),
    ("mnist-small", 0.1, "wong", 0.078, (98.6, 96.9, 95.7)),
    ("mnist-small", 0.1, "mixtrain", 0.026, (99.5, 98.0, 97.1)),
    ("mnist-small", 0.3, "diffai", 0.012, (98.2, 82.9, 0)),
    ("mnist-small", 0.3, "wong", 0.079, (91.2, 83.1, 57.8)),
    ("mnist-small", 0.3, "mixtrain", 0.028, (94.0, 86.1, 60.1)),
    ("mnist-large", 0.1, "diffai", 0.022, DNC),
    ("mnist-large", 0.1, "wong", 0.687, (99.2, 98.3, 96.4)),
    ("mnist-large", 0.1, "mixtrain", 0.051, (99.5, 98.2, 95.2)),
    ("mnist-large", 0.3, "diffai", 0.023, DNC),
    ("mnist-large", 0.3, "wong", 0.689, (86.6, 71.7, 53.1)),
    ("mnist-large", 0.3, "mixtrain", 0.054, (96.6, 89.4, 58.4)),
    ("cifar-small", EPS_CIFAR, "diffai", 0.015, (66.3, 41.9, 4.0)),
    ("cifar-small", EPS_CIFAR, "wong", 0.248, (62.5, 52.3, 47.5)),
    ("cifar-small", EPS_CIFAR, "mixtrain", 0.087, (69.4, 56.5, 48.2)),
    ("cifar-large", EPS_CIFAR, "diffai", 0.025, DNC),
    ("cifar-large", EPS_CIFAR, "wong", 2.157, (61.9, 56.4, 49.4)),
    ("cifar-large", EPS_CIFAR, "mixtrain", 0.268, (74.1, 62.7, 50.2)),
    ("cifar-resnet", EPS_CIFAR, "diffai", 0.035, (75.6, 35.8, 0.0)),
    ("cifar-resnet", EPS_CIFAR, "wong", 1.914, (58.1, 51.7, 43.9)),
    ("cifar-resnet", EPS_CIFAR, "mixtrain", 0.281, (71.3, 60.5, 50.4)),
]


def _row(net, eps, method, batch, nums):
    k = {"k_per_batch": K[net]} if method == "mixtrain" else {}
    labels = {"k": K[net]} if method == "mixtrain" else {}
    return row(
        net,
        eps,
        method,
        paper_numbers(nums, batch, "12h"),
        labels=labels,
        cpu_skip=None if net == "mnist-small" else "large network: for a GPU",
        **k,
    )


EXPERIMENT = Experiment(
    name="table4",
    source="Table IV",
    title="MixTrain vs verifiably robust training (Wong et al., DIFFAI), 12 hours each in the paper",
    runs=tuple(_row(*r) for r in PAPER),
    cpu=dict(
        epochs=4, eps_ramp_epochs=2, lr_step=2, train_size=5000, full_eval=False, eval_n=500, acc0=90.0, projections=10
    ),
    cpu_note="MNIST Small rows only; 4 epochs on the first 5,000 training images, Wong et al. with 10 random "
    "projections instead of 50, acc0 90; ERA/VRA on the first 500 test images",
    note="The paper trains every method for 12 hours (GTX 1080 Ti) with MixTrain k' = 20 on the small networks, "
    "10 on CIFAR Large/Resnet and 1 on MNIST Large; veritrain's run is bounded by epochs, not by time, so "
    "the paper scale trains 60 epochs and reports the time it took. DIFFAI trains with the box domain; its "
    "VRA here is measured with the symbolic linear relaxation (the paper tests DIFFAI with hybrid zonotopes).",
)
