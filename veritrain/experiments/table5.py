"""Table V: the training time verifiably robust methods need to reach MixTrain's Table IV VRA (24 h cap)."""

from __future__ import annotations

from veritrain.experiments import table4
from veritrain.experiments.spec import Experiment, Run

#: (net, eps, method) -> (training time, ratio to MixTrain, ACC) as printed in Table V
PAPER = {
    ("mnist-small", 0.1, "diffai"): (">24h", ">36x", None),
    ("mnist-small", 0.1, "wong"): (">24h", ">36x", None),
    ("mnist-small", 0.1, "mixtrain"): ("39m26s", "-", 99.5),
    ("mnist-small", 0.3, "diffai"): (">24h", ">28x", None),
    ("mnist-small", 0.3, "wong"): (">24h", ">28x", None),
    ("mnist-small", 0.3, "mixtrain"): ("50m12s", "-", 94.0),
    ("mnist-large", 0.1, "diffai"): (">24h", ">26x", None),
    ("mnist-large", 0.1, "wong"): ("3h59m", "4x", 98.9),
    ("mnist-large", 0.1, "mixtrain"): ("55m12s", "-", 99.5),
    ("mnist-large", 0.3, "diffai"): (">24h", ">24x", None),
    ("mnist-large", 0.3, "wong"): (">24h", ">24x", None),
    ("mnist-large", 0.3, "mixtrain"): ("58m35s", "-", 96.6),
    ("cifar-small", None, "diffai"): (">24h", ">16x", None),
    ("cifar-small", None, "wong"): ("3h35m", "3x", 61.3),
    ("cifar-small", None, "mixtrain"): ("1h25m", "-", 69.4),
    ("cifar-large", None, "diffai"): (">24h", ">5x", None),
    ("cifar-large", None, "wong"): ("13h14m", "3x", 64.9),
    ("cifar-large", None, "mixtrain"): ("4h28m", "-", 74.1),
    ("cifar-resnet", None, "diffai"): (">24h", ">5x", None),
    ("cifar-resnet", None, "wong"): ("15h53m", "3x", 60.2),
    ("cifar-resnet", None, "mixtrain"): ("4h36m", "-", 71.3),
}


def _runs() -> tuple[Run, ...]:
    out = []
    for r in table4.EXPERIMENT.runs:
        net, eps, method = r.config["net"], r.config["eps"], r.config["method"]
        time, ratio, acc = PAPER[(net, eps if net.startswith("mnist") else None, method)]
        out.append(
            Run(
                key=r.key,
                config=r.config,
                labels=r.labels,
                cpu=r.cpu,
                cpu_skip=r.cpu_skip,
                paper={"train time": time, "time ratio": ratio, "ACC": acc, "VRA": r.paper.get("VRA")},
            )
        )
    return tuple(out)


EXPERIMENT = Experiment(
    name="table5",
    source="Table V",
    title="Training time to reach MixTrain's VRA of Table IV",
    runs=_runs(),
    columns=("train time", "ACC", "VRA"),
    cpu=table4.EXPERIMENT.cpu,
    cpu_note=table4.EXPERIMENT.cpu_note,
    note="The runs are Table IV's (same folders). The paper trains Wong et al. and DIFFAI until they reach "
    "MixTrain's VRA or 24 hours pass; veritrain's loop does not measure VRA after every epoch, so this "
    "table reports each run's training time with the VRA it reached (paper's VRA column: MixTrain's target "
    "from Table IV), not the time at which the target was first met.",
)
