"""What `veritrain plot RUN`, `veritrain train` and `veritrain table` show of --holdout and --keep-best: the
held-out curves and the kept-epoch marker of the plot, the kept epoch and held-out size of the printed summary."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from veritrain.reporting import read_json, read_jsonl, run_row
from veritrain.reporting.plots import HOLDOUT_TITLE, PANEL_PARTS, PANELS, metrics_figure, metrics_plot_data
from veritrain.reporting.runs import holdout_lines, run_holdout_lines
from veritrain.training import train

from cli_helpers import run_main
from test_holdout import cfg_for, tiny_data, tiny_model

# the saboteur method (its last epoch is worse, so --keep-best keeps an earlier one) is registered by test_holdout


@pytest.fixture(scope="module")
def kept_run(tmp_path_factory) -> Path:
    """A 4-epoch --holdout 50 --keep-best run (held-out VRA in the interval domain) whose last epoch is worse."""
    tmp = tmp_path_factory.mktemp("kept")
    cfg = cfg_for(tmp, method="holdout-saboteur", epochs=4, keep_best=True)
    s = train(cfg, model=tiny_model(), train_data=tiny_data(), test_data=tiny_data(100, seed=1))
    assert s["kept_epoch"] is not None and s["kept_epoch"] < 4
    return tmp / "run"


@pytest.fixture(scope="module")
def held_run(tmp_path_factory) -> Path:
    """A 2-epoch --holdout 50 run without --keep-best."""
    tmp = tmp_path_factory.mktemp("held")
    train(cfg_for(tmp, epochs=2), model=tiny_model(), train_data=tiny_data(), test_data=tiny_data(100, seed=1))
    return tmp / "run"


def figure_of(run: Path) -> Any:
    pytest.importorskip("matplotlib")
    return metrics_figure(metrics_plot_data(run))


def lines_by_label(ax: Any) -> dict[str, Any]:
    return {line.get_label(): line for line in ax.get_lines()}


# ----------------------------------------------------------------------------- the plot's data


def test_plot_data_has_the_held_out_curves_and_the_kept_epoch(kept_run):
    rows = read_jsonl(kept_run / "metrics.jsonl")
    kept = read_json(kept_run / "summary.json")["kept_epoch"]
    data = metrics_plot_data(kept_run)
    (acc,) = [p for p in data.panels if p.key == "train_acc"]
    assert acc.title == HOLDOUT_TITLE
    assert [s.label for s in acc.series] == ["train_acc", "held-out ACC", "held-out VRA (interval)"]
    for key in ("holdout_acc", "holdout_vra"):
        s = data.series(key)
        assert s is not None and s.epochs == [1, 2, 3, 4] and s.values == [r[key] for r in rows]
    assert data.kept_epoch == kept and data.kept_label == f"kept epoch {kept}"


def test_plot_data_without_keep_best_has_no_kept_epoch(held_run):
    data = metrics_plot_data(held_run)
    assert data.kept_epoch is None and data.kept_label is None
    s = data.series("holdout_vra")
    assert s is not None and s.label == "held-out VRA (interval)" and len(s.epochs) == 2


def test_a_run_still_training_marks_the_last_epochs_kept_epoch(kept_run, tmp_path):
    """No summary.json yet: the kept epoch so far, from the last metrics row."""
    run = tmp_path / "run"
    shutil.copytree(kept_run, run)
    rows = read_jsonl(run / "metrics.jsonl")
    (run / "summary.json").unlink()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    assert metrics_plot_data(run).kept_epoch == rows[1]["kept_epoch"]


# ----------------------------------------------------------------------------- the figure


def test_figure_draws_the_held_out_curves_and_a_dashed_kept_epoch_line(kept_run):
    fig = figure_of(kept_run)
    rows = read_jsonl(kept_run / "metrics.jsonl")
    kept = read_json(kept_run / "summary.json")["kept_epoch"]
    (ax,) = [a for a in fig.axes if a.get_title() == HOLDOUT_TITLE]
    lines = lines_by_label(ax)
    assert list(lines["held-out ACC"].get_ydata()) == [r["holdout_acc"] for r in rows]
    assert list(lines["held-out VRA (interval)"].get_ydata()) == [r["holdout_vra"] for r in rows]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"held-out ACC", "held-out VRA (interval)", f"kept epoch {kept}"} <= set(legend)
    for a in fig.axes:  # the kept epoch is marked in every panel
        marker = lines_by_label(a)[f"kept epoch {kept}"]
        assert list(marker.get_xdata()) == [kept, kept] and marker.get_linestyle() == "--"
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_plot_command_writes_the_png_of_a_kept_run(kept_run, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "m.png"
    rc, out, err = run_main(capsys, "plot", str(kept_run), "--out", str(png))
    assert rc == 0 and png.stat().st_size > 1000 and str(png) in out, err


def _old_figure(run: Path) -> Any:
    """The plot of a run as `plot_metrics` drew it before held-out curves existed (the reference)."""
    import matplotlib.pyplot as plt

    rows = read_jsonl(run / "metrics.jsonl")
    epochs = [r["epoch"] for r in rows]
    old_parts = {k: v for k, v in PANEL_PARTS.items() if k != "train_acc"}
    panels = [(k, t) for k, t in PANELS if any(k in r for r in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        keys = [key] + [p for p in old_parts.get(key, ()) if any(p in r for r in rows)]
        for k in keys:
            pts = [(e, r[k]) for e, r in zip(epochs, rows) if isinstance(r.get(k), (int, float))]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, label=k)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if len(keys) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _drawn(fig: Any) -> list[Any]:
    return [
        (
            ax.get_title(),
            ax.get_xlabel(),
            [(ln.get_label(), list(ln.get_xdata()), list(ln.get_ydata()), ln.get_linestyle()) for ln in ax.get_lines()],
            None if ax.get_legend() is None else [t.get_text() for t in ax.get_legend().get_texts()],
        )
        for ax in fig.axes
    ]


def test_a_run_without_holdout_plots_as_before(tiny_run, tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    rows = read_jsonl(run / "metrics.jsonl")  # a second epoch with the loss parts, so that legends are drawn too
    extra = {**rows[-1], "epoch": 2, "regular_loss": 0.5, "verified_loss": 1.5}
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [rows[0], extra]))
    data = metrics_plot_data(run)
    assert data.kept_epoch is None and data.series("holdout_acc") is None
    new, old = figure_of(run), _old_figure(run)
    assert _drawn(new) == _drawn(old) and new.get_size_inches().tolist() == old.get_size_inches().tolist()
    assert any(d[3] for d in _drawn(new))  # the loss panel's legend
    plt.close(new)
    plt.close(old)


# ----------------------------------------------------------------------------- the printed summary and table


def test_summary_lines_name_the_kept_epoch_and_the_held_out_size(kept_run):
    rows = read_jsonl(kept_run / "metrics.jsonl")
    kept = read_json(kept_run / "summary.json")["kept_epoch"]
    held, line = run_holdout_lines(kept_run)
    vra = rows[kept - 1]["holdout_vra"]
    assert line.startswith(f"kept epoch {kept} of 4 (best held-out VRA {vra:.2f}%)")
    assert held.startswith("held out: 50 training images") and "VRA (interval, eps 0.05)" in held


def test_summary_lines_without_keep_best_or_holdout():
    rows = [{"epoch": 1, "holdout_acc": 80.0, "holdout_vra": None}, {"epoch": 2, "holdout_acc": 90.0}]
    (line,) = holdout_lines({"holdout": 50, "kept_epoch": None}, rows, {"holdout_domain": "crown-ibp", "eps": 0.1})
    assert "50 training images" in line and "last epoch: held-out ACC 90.00%" in line and "n/a" in line
    assert holdout_lines({"holdout": 0, "kept_epoch": None}, rows) == []
    assert holdout_lines({}, []) == []  # a summary from before --holdout
    # an unsound network: no VRA, the kept epoch ranked by clean accuracy
    lines = holdout_lines({"holdout": 50, "kept_epoch": 1, "epochs_trained": 2}, rows)
    assert lines[1].startswith("kept epoch 1 of 2 (held-out VRA n/a, best held-out ACC 80.00%)")


def test_train_command_prints_the_kept_epoch(tmp_path, capsys):
    run = tmp_path / "run"
    rc, out, err = run_main(
        capsys, "train", "--net", "mnist-small", "--dataset", "mnist-mini", "--train-size", "100",
        "--holdout", "50", "--keep-best", "--holdout-domain", "interval", "--epochs", "2", "--eps", "0.1",
        "--eps-ramp-epochs", "1", "--eval-attacks", "", "--eval-domains", "", "--monitor-n", "0",
        "--out", str(run), "--no-progress",
    )  # fmt: skip
    assert rc == 0, err
    kept = read_json(run / "summary.json")["kept_epoch"]
    assert kept in (1, 2)
    assert f"kept epoch {kept} of 2 (best held-out VRA " in out
    assert "held out: 50 training images" in out
    assert out.index("kept epoch") < out.index("run folder:")


def test_train_command_without_holdout_prints_no_held_out_line(tiny_run):
    assert run_holdout_lines(tiny_run) == []


def test_table_row_has_held_out_columns_only_with_holdout(kept_run, tiny_run):
    rows = read_jsonl(kept_run / "metrics.jsonl")
    kept = read_json(kept_run / "summary.json")["kept_epoch"]
    row = run_row(kept_run)
    assert row["held-out n"] == 50 and row["kept epoch"] == kept
    assert row["held-out VRA"] == rows[kept - 1]["holdout_vra"] and row["held-out ACC"] == rows[kept - 1]["holdout_acc"]
    assert not any(k.startswith(("held-out", "kept")) for k in run_row(tiny_run))
