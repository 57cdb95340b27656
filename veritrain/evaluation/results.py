"""Typed results: the settings of an evaluation, one `Evaluation` (ACC, ERA, VRA) and one run's `RunSummary`.

They are what `summary.json` and `evaluation.json` hold (`to_dict` writes the same JSON as before; `from_dict`
also reads older files, whose "n/a" / "not available (...)" strings become None), and the one place that
renders them as table rows (`Evaluation.row`, `RunSummary.row`). Numbers are percent (Section II); None means
"not measured" or "not applicable", with the reason in `vra_note`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

from torch import nn

from veritrain.bounds import UnsupportedLayerError, to_ops
from veritrain.registry import split_names
from veritrain.validation import DEFAULT_DOMAIN, DEFAULT_NORM

#: how a VRA that cannot be computed (the bound engine does not accept the model) shows in tables
NOT_APPLICABLE = "n/a"


def _number(v: Any) -> float | None:
    """A percentage from a result file: numbers pass, the strings older files held ("n/a", ...) become None."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _numbers(d: Any) -> dict[str, float | None]:
    return {str(k): _number(v) for k, v in d.items()} if isinstance(d, dict) else {}


@dataclass
class EvalSettings:
    """The parameters of one evaluation, shared by `veritrain evaluate`, the end of training and experiments."""

    eps: float
    norm: str = DEFAULT_NORM
    attacks: list[str] = field(default_factory=lambda: ["pgd"])
    domains: list[str] = field(default_factory=lambda: [DEFAULT_DOMAIN])
    curves: list[str] = field(default_factory=list)
    batch_size: int = 500
    chunk_size: int | None = None
    seed: int = 0
    progress: bool = False

    def __post_init__(self) -> None:
        self.attacks = split_names(self.attacks)
        self.domains = split_names(self.domains)
        self.curves = split_names(self.curves)

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `evaluate_tensors` (after the model and the data)."""
        return {
            "eps": self.eps,
            "attacks": self.attacks,
            "domains": self.domains,
            "curves": self.curves,
            "norm": self.norm,
            "batch_size": self.batch_size,
            "chunk_size": self.chunk_size,
            "seed": self.seed,
            "progress": self.progress,
        }


def bound_engine_accepts(model: nn.Module, in_shape: Sequence[int]) -> str | None:
    """None when the bound engine can bound `model` on inputs of `in_shape` (C, H, W); else the one-line reason
    (`UnsupportedLayerError`, e.g. an ELU layer). Whether VRA is meaningful is decided here, not by the
    training method: a WRM network with ReLUs is bounded like any other."""
    try:
        to_ops(model, tuple(in_shape))
    except UnsupportedLayerError as e:
        return str(e)
    return None


@dataclass
class Evaluation:
    """ACC, ERA per attack (and "all": the worst case over them), VRA per bound domain, robustness curves."""

    acc: float | None
    n: int
    eps: float
    norm: str = DEFAULT_NORM
    era: dict[str, float | None] = field(default_factory=dict)
    vra: dict[str, float | None] = field(default_factory=dict)
    vra_note: str | None = None  # why VRA is None (the bound engine does not accept the model)
    curves: dict[str, Any] = field(default_factory=dict)
    time_s: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # keys this class does not model, kept as they are

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Evaluation":
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        vra_raw = d.get("vra")
        note = d.get("vra_note")
        if isinstance(vra_raw, str) or (
            isinstance(vra_raw, dict) and any(isinstance(v, str) for v in vra_raw.values())
        ):
            note = note or "not applicable"
        return cls(
            acc=_number(d.get("acc")),
            n=int(d.get("n") or 0),
            eps=float(d.get("eps") or 0.0),
            norm=str(d.get("norm", DEFAULT_NORM)),
            era=_numbers(d.get("era")),
            vra=_numbers(vra_raw),
            vra_note=note,
            curves=dict(d.get("curves") or {}) if isinstance(d.get("curves"), dict) else {},
            time_s=_numbers(d.get("time_s")),  # type: ignore[arg-type]
            extra={k: v for k, v in d.items() if k not in names},
        )

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        if out["vra_note"] is None:
            del out["vra_note"]
        return {**self.extra, **out}

    def attacks(self) -> list[str]:
        return [a for a in self.era if a != "all"]

    def vra_value(self, domain: str) -> float | str | None:
        """VRA of a domain for a table: the number, "n/a" when the bound engine does not accept the model."""
        if self.vra_note is not None:
            return NOT_APPLICABLE
        return self.vra.get(domain)

    def row(
        self, attacks: Sequence[str] | None = None, domains: Sequence[str] | None = None, acc: bool = True
    ) -> dict[str, Any]:
        """The one rendering as a table row: "ACC", "ERA <attack>" per attack, "ERA" (worst case) when there
        are several, "VRA <domain>" per domain (default: those measured)."""
        attacks = list(attacks) if attacks is not None else self.attacks()
        domains = list(domains) if domains is not None else list(self.vra)
        row: dict[str, Any] = {"ACC": self.acc} if acc else {}
        for a in attacks:
            row[f"ERA {a}"] = self.era.get(a)
        if len(attacks) > 1:
            row["ERA"] = self.era.get("all")
        for d in domains:
            row[f"VRA {d}"] = self.vra_value(d)
        if not domains and self.vra_note is not None:
            row["VRA"] = NOT_APPLICABLE
        return row


@dataclass
class RunSummary:
    """A finished training run (RUN/summary.json): what was trained, the final epoch, the evaluation, times."""

    net: str | None = None
    dataset: str | None = None
    method: str | None = None
    eps: float | None = None
    epochs: int | None = None
    seed: int | None = None
    device: str | None = None
    train_size: int | None = None
    final: dict[str, Any] = field(default_factory=dict)
    test_acc: float | None = None  # ACC on the whole test set (None: no test data)
    test_n: int | None = None
    eval: Evaluation | None = None  # ERA / VRA on the first eval_n test images
    time_s: dict[str, float] = field(default_factory=dict)
    resumed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # keys this class does not model, kept as they are

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunSummary":
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kw = {k: d[k] for k in names if k in d and k not in ("eval", "test_acc", "time_s")}
        ev = d.get("eval")
        return cls(
            **kw,
            test_acc=_number(d.get("test_acc")),
            eval=Evaluation.from_dict(ev) if isinstance(ev, dict) and ev else None,
            time_s={k: float(v) for k, v in (d.get("time_s") or {}).items() if _number(v) is not None},
            extra={k: v for k, v in d.items() if k not in names},
        )

    @classmethod
    def read(cls, run_dir: str | os.PathLike[str]) -> "RunSummary":
        """RUN/summary.json; FileNotFoundError naming the folder when the run has not finished."""
        from veritrain.reporting.io import read_json
        from veritrain.training.run_dir import RunFiles

        files = RunFiles(run_dir)
        if not files.summary.exists():
            raise FileNotFoundError(f"{files.dir} has no {files.SUMMARY} (not a finished veritrain run)")
        return cls.from_dict(read_json(files.summary))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            v = getattr(self, f.name)
            if f.name == "eval":
                if v is not None:
                    out["eval"] = v.to_dict()
            elif f.name in ("test_n",) and v is None:
                continue
            else:
                out[f.name] = v
        return {**self.extra, **out}

    def row(self, attacks: Sequence[str] | None = None, domains: Sequence[str] | None = None) -> dict[str, Any]:
        """ACC on the whole test set, then the evaluation's ERA and VRA columns (`Evaluation.row`)."""
        row: dict[str, Any] = {"ACC": self.test_acc}
        if self.eval is not None:
            row.update(self.eval.row(attacks, domains, acc=False))
        return row


__all__ = ["NOT_APPLICABLE", "EvalSettings", "Evaluation", "RunSummary", "bound_engine_accepts"]
