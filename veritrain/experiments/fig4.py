"""Figure 4: verifiable robustness and accuracy conflict after the first epochs (CIFAR Small in the paper).

(a) a network trained with Wong et al.'s method is trained further with regular training: the regular loss
falls, the verifiable robust loss rises; (b) a regularly trained network is trained further with verifiably
robust training: the verifiable robust loss falls, the regular loss rises. The second phases are MixTrain
runs, which log both losses every epoch: alpha = 0 with k' = 1 is regular training (the verified loss of
one image per batch is only logged), alpha = 1 with k' = 50 is verifiably robust training of the whole batch.
"""

from __future__ import annotations

from veritrain.experiments.figures import loss_figure
from veritrain.experiments.spec import EPS_CIFAR, MNIST_CPU, Experiment, Run, paper_run

#: second phase: eps at its final value from the start, 20 epochs, lr x0.6 every 5
SECOND = dict(epochs=20, eps_ramp_epochs=0)


def _run(key: str, label: str, phase: int, method: str, **options) -> Run:
    return Run(
        key=key,
        config=paper_run("cifar-small", method, EPS_CIFAR, **options),
        labels={"Training": label, "phase": phase},
        cpu={"eps_ramp_epochs": 0} if phase == 2 else {},
    )


EXPERIMENT = Experiment(
    name="fig4",
    source="Figure 4",
    title="Regular and verifiable robust loss when one kind of training follows the other",
    runs=(
        _run("wong", "Wong et al., 60 epochs", 1, "wong"),
        _run(
            "wong+regular",
            "(a) regular training after Wong et al.",
            2,
            "mixtrain",
            alpha=0.0,
            k_per_batch=1,
            weights="@wong",
            **SECOND,
        ),
        _run("regular", "regular training, 60 epochs", 1, "regular"),
        _run(
            "regular+verified",
            "(b) verifiably robust training after regular training",
            2,
            "mixtrain",
            alpha=1.0,
            k_per_batch=50,
            weights="@regular",
            **SECOND,
        ),
    ),
    columns=("ACC", "ERA", "VRA", "train time"),
    cpu=dict(MNIST_CPU, epochs=3, eps_ramp_epochs=2, lr_step=1, train_size=2000, projections=10),
    cpu_note="MNIST Small at eps 0.1 instead of CIFAR Small, 3 epochs per phase on the first 2,000 training images "
    "(Adam 1e-3, lr x0.6 per epoch; phase 1 ramps eps over 2 epochs, phase 2 starts at the final eps), "
    "Wong et al. with 10 projections",
    figure=loss_figure,
    note="The paper shows the two losses only as curves (no numbers in the text). The verifiable robust loss is "
    "the cross-entropy on the symbolic-linear worst-case logits (Eqns. 6-7).",
)
