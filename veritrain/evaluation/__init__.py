"""Evaluation: clean accuracy (ACC), attacks (ERA, `era`), sound bounds (VRA, `vra`), composed by `evaluate`."""

from veritrain.evaluation.accuracy import accuracy, correct, predict
from veritrain.evaluation.evaluate import evaluate, evaluate_tensors

__all__ = ["accuracy", "correct", "evaluate", "evaluate_tensors", "predict"]
