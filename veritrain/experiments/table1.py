"""Table I: the interval attack (Algorithm 1) against PGD and CW given the same time, on Madry-trained
MNIST FC1 and FC2 (eps = 0.3)."""
from __future__ import annotations

from veritrain.experiments.measures import attack_comparison
from dataclasses import replace

from veritrain.experiments.spec import Experiment, row

COLUMNS = ("ACC", "PGD", "CW", "interval", "interval / PGD", "attack time s", "PGD iterations")
#: net -> the paper's ACC, PGD, CW, interval attack success rates (%), and the attack time (s)
PAPER = {"mnist-fc1": (98.1, 39.2, 42.2, 56.2, 53.9), "mnist-fc2": (98.8, 34.4, 32.2, 44.4, 466.5)}


def _row(net: str, cpu: dict, cpu_measure: dict):
    acc, pgd, cw, ia, secs = PAPER[net]
    paper = {"ACC": acc, "PGD": pgd, "CW": cw, "interval": ia, "interval / PGD": round(ia / pgd, 2),
             "attack time s": secs, "PGD iterations": 7200 if net == "mnist-fc1" else 42000}
    # Table I has no VRA: the run's own evaluation is PGD only, on the 1,024 images the attacks use
    r = row(net, 0.3, "madry", paper, cpu=cpu, eval_domains="", full_eval=False, eval_n=1024)
    return replace(r, measure_options={"cpu": cpu_measure})


EXPERIMENT = Experiment(
    name="table1",
    source="Table I",
    title="Attack success rates of PGD, CW and the interval attack at equal time (Madry-trained, eps = 0.3)",
    runs=(
        _row("mnist-fc1", {"epochs": 3, "eps_ramp_epochs": 2, "lr_step": 1, "train_size": 20000, "pgd_steps": 3,
                           "pgd_step_size": 0.1, "eval_n": 200}, {"n": 200, "domain": "crown-ibp"}),
        _row("mnist-fc2", {"epochs": 1, "eps_ramp_epochs": 0, "train_size": 2000, "pgd_steps": 3,
                           "pgd_step_size": 0.1, "eval_n": 200}, {"n": 50, "domain": "crown-ibp"}),
    ),
    columns=COLUMNS,
    kind="train",
    measure=attack_comparison,
    scale_options={"paper": {"n": 1024}},
    cpu_note="Madry training with PGD-3 (step 0.1) instead of PGD-40: FC1 3 epochs on the first 20,000 images (eps "
             "ramped 0.01 -> 0.3 over 2 epochs, lr x0.6 per epoch), FC2 1 epoch on the first 2,000 at eps 0.3; the "
             "runs' own PGD evaluation on 200 test images; the attacks on 200 (FC1) and 50 (FC2) random test images "
             "(the paper: 1,024), the interval attack bounding with crown-ibp instead of symbolic-linear (symbolic-"
             "linear took 2.6 s per FC1 image for the 20 iterations here, crown-ibp 0.27 s)",
    note="ACC here: clean accuracy on the attacked images. Success rate: share of the attacked images (random test "
         "images, seed 0) misclassified after the attack, clean errors included. Interval attack: Algorithm 1 with 20 iterations, symbolic-linear bounds, then "
         "PGD-40. PGD and CW (L-inf margin loss) get the same wall-clock time as the interval attack took: PGD-40 "
         "(step 0.01) restarted from new random points on the images not yet broken until that time is spent "
         "(\"PGD iterations\": 40 x restarts; the paper: about 7,200 on FC1, 42,000 on FC2). Paper scale: Madry "
         "et al. as in the paper (PGD-40, step 0.01, 60 epochs).",
)
