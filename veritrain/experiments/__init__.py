"""The paper's experiments as data (`EXPERIMENTS`: one spec per table or figure) and `reproduce`, which
trains their runs and writes our numbers beside the paper's (`veritrain reproduce NAME`)."""

from __future__ import annotations

from veritrain.experiments.runner import plan, reproduce
from veritrain.experiments.spec import SCALES, Experiment, Run
from veritrain.registry import Registry

#: name -> Experiment, in the paper's order
EXPERIMENTS: Registry[Experiment] = Registry("experiment")


def _register() -> None:
    from veritrain.experiments import fig4, fig8, table1, table3, table4, table5, table6, table7, table8, table10

    for exp in (
        table1.EXPERIMENT,
        table3.EXPERIMENT,
        table4.EXPERIMENT,
        table5.EXPERIMENT,
        table6.EXPERIMENT,
        table7.EXPERIMENT,
        table8.EXPERIMENT,
        fig8.TABLE9_EXPERIMENT,
        table10.EXPERIMENT,
        fig4.EXPERIMENT,
        fig8.FIG8,
    ):
        EXPERIMENTS.add(exp.name, exp)


_register()

__all__ = ["EXPERIMENTS", "SCALES", "Experiment", "Run", "plan", "reproduce"]
