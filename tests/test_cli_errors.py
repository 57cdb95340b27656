"""Every error of the CLI is one line with what to do, exit status 2, and nothing already written damaged;
evaluations of a run are kept as a history; attack settings on the command line (issue 17)."""

from __future__ import annotations

import json
import os
import socket
import sys

import pytest
import torch

from veritrain.training.run_dir import RunFiles

from cli_helpers import run_main, snapshot


def one_line_error(rc: int, err: str, *words: str) -> None:
    assert rc == 2, err
    lines = [line for line in err.strip().splitlines() if not line.startswith("veritrain: warning: ")]
    assert len(lines) == 1 and lines[0].startswith("veritrain: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])


# ----------------------------------------------------------------------------- train options


@pytest.mark.parametrize(
    "argv,words",
    [
        (["--eps", "1e9"], ["--eps", "exceeds 1"]),
        (["--eps", "nan"], ["--eps", "finite"]),
        (["--eps", "-0.1"], ["--eps"]),
        (["--method", "mixtrain", "--k-per-batch", "0"], ["--k-per-batch", "--method regular"]),
        (["--method", "mixtrain", "--k", "0"], ["--k", "--method regular"]),
        (["--method", "regular", "--k-per-batch", "5"], ["--k-per-batch", "mixtrain", "--method regular"]),
        (["--method", "madry", "--alpha0", "0.5"], ["--alpha0", "mixtrain"]),
        (["--method", "mixtrain", "--pgd-steps", "5"], ["--pgd-steps", "madry"]),
        (["--resume"], ["no run to resume"]),
    ],
)
def test_train_option_errors(tmp_path, capsys, argv, words):
    rc, out, err = run_main(
        capsys, "train", "--dataset", "mnist-mini", "--out", str(tmp_path / "run"), "--no-progress", *argv
    )
    one_line_error(rc, err, *words)
    assert not (tmp_path / "run").exists()


def test_errors_leave_an_existing_run_untouched(tiny_run, capsys):
    before = snapshot(tiny_run)
    for argv in (["--eps", "1e9"], ["--method", "regular", "--domain", "crown"], ["--epochs", "0"]):
        rc, out, err = run_main(capsys, "train", "--out", str(tiny_run), "--resume", "--no-progress", *argv)
        one_line_error(rc, err)
    assert snapshot(tiny_run) == before


def test_broken_toml_config_names_the_file(tmp_path, capsys):
    bad = tmp_path / "exp.toml"
    bad.write_text("epochs = [1,\n")
    rc, out, err = run_main(capsys, "train", "--config", str(bad), "--out", str(tmp_path / "run"))
    one_line_error(rc, err, str(bad), "cannot be parsed")


# ----------------------------------------------------------------------------- evaluate


def test_evaluate_network_and_data_set_that_do_not_fit(tmp_path, capsys):
    """issue 17: `evaluate --net mnist-small --dataset cifar10` printed a traceback."""
    rc, out, err = run_main(
        capsys, "evaluate", "--net", "cifar-small", "--dataset", "mnist-mini", "--n", "10", "--no-progress"
    )
    one_line_error(rc, err, "does not accept images of shape (1, 28, 28)")


@pytest.mark.parametrize(
    "argv,words",
    [
        (["--batch-size", "0"], ["batch_size", ">= 1"]),
        (["--chunk-size", "0", "--domains", "interval"], ["chunk_size"]),
        (["--attacks", "pgd", "--attack-steps", "0"], ["steps"]),
        (["--attacks", "pointwise", "--attack-restarts", "3"], ["restarts"]),
        (["--eps", "inf", "--attacks", "pgd"], ["eps"]),
    ],
)
def test_evaluate_option_errors(tiny_run, capsys, argv, words):
    before = snapshot(tiny_run)
    rc, out, err = run_main(capsys, "evaluate", str(tiny_run), "--n", "5", "--no-progress", *argv)
    one_line_error(rc, err, *words)
    assert snapshot(tiny_run) == before


def test_refusing_a_pickle_that_would_run_code_is_one_clear_line(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"0.weight": torch.zeros(1), "x": Evil()}, path)
    rc, out, err = run_main(
        capsys,
        "evaluate",
        "--net",
        "mnist-small",
        "--dataset",
        "mnist-mini",
        "--weights",
        str(path),
        "--n",
        "5",
        "--no-progress",
    )
    one_line_error(rc, err, "refusing to load", "could run code")
    assert "truncated" not in err and "pwned" not in out


def test_plot_without_matplotlib_is_one_line(tiny_run, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    rc, out, err = run_main(capsys, "plot", str(tiny_run))
    one_line_error(rc, err, "pip install 'veritrain[plot]'")


def test_evaluations_are_kept_as_a_history(tiny_run, capsys):
    """issue 17: `evaluate RUN` without --attacks/--domains overwrote an evaluation.json that held ERA/VRA."""
    files = RunFiles(tiny_run)
    rc, out, err = run_main(
        capsys,
        "evaluate",
        str(tiny_run),
        "--n",
        "20",
        "--attacks",
        "pgd",
        "--domains",
        "interval",
        "--attack-steps",
        "5",
        "--attack-restarts",
        "2",
        "--no-progress",
    )
    assert rc == 0, err
    rc, out, err = run_main(capsys, "evaluate", str(tiny_run), "--n", "20", "--no-progress")
    assert rc == 0, err
    history = [json.loads(line) for line in files.evaluations.read_text().splitlines()]
    assert len(history) >= 2 and history[-2]["era"] and history[-2]["vra"] and not history[-1]["era"]
    assert history[-2]["era_settings"]["pgd"] == {"norm": "linf", "steps": 5, "restarts": 2}
    assert json.loads(files.evaluation.read_text())["evaluated_at"] == history[-1]["evaluated_at"]
    assert files.evaluation.stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert not files.lock.exists()


def test_era_through_an_attack_name_follows_norm(tiny_run, tmp_path, capsys):
    """issue 17: ERA through an attack name ignored --norm."""
    out_json = tmp_path / "ev.json"
    rc, out, err = run_main(
        capsys,
        "evaluate",
        str(tiny_run),
        "--n",
        "10",
        "--norm",
        "l2",
        "--eps",
        "1.0",
        "--attacks",
        "pgd",
        "--json",
        str(out_json),
        "--no-progress",
    )
    assert rc == 0, err
    res = json.loads(out_json.read_text())
    assert res["norm"] == "l2" and res["era_settings"]["pgd"]["norm"] == "l2"


def test_evaluating_a_run_that_is_training_is_refused(tiny_run, capsys):
    files = RunFiles(tiny_run)
    files.lock.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "purpose": "training"}))
    try:
        before = snapshot(tiny_run)
        rc, out, err = run_main(capsys, "evaluate", str(tiny_run), "--n", "5", "--no-progress")
        one_line_error(rc, err, "in use by process")
        assert snapshot(tiny_run) == before
    finally:
        files.lock.unlink()


def test_threads_option_and_default(capsys, monkeypatch):
    from veritrain.device import MAX_DEFAULT_THREADS, configure_threads, default_threads

    before = torch.get_num_threads()
    try:
        assert 1 <= default_threads() <= MAX_DEFAULT_THREADS
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert 1 <= configure_threads(None) <= MAX_DEFAULT_THREADS
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert configure_threads(None) == 3 and torch.get_num_threads() == 3
        assert configure_threads(2) == 2
        rc, out, err = run_main(capsys, "--threads", "0", "models")
        one_line_error(rc, err, "--threads")
    finally:
        torch.set_num_threads(before)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_quickstart_row_states_settings_epochs_and_image_counts():
    """issue 17: the quickstart's summary did not say that MixTrain ran with crown-ibp and k' = 10, for how many
    epochs each method trained, or that ACC and ERA/VRA use different image counts."""
    from veritrain.cli import QUICKSTART, quickstart_configs, quickstart_row

    cfg = next(c for c in quickstart_configs("runs/x") if c.method == "mixtrain")
    summary = {
        "epochs": 6,
        "epochs_trained": 6,
        "train_size": 5000,
        "test_acc": 96.0,
        "test_n": 1000,
        "eval": {"acc": 96.0, "n": 300, "eps": 0.1, "era": {"pgd": 80.0}, "vra": {"symbolic-linear": 60.0}},
        "time_s": {"train": 40.0},
    }
    row = quickstart_row(cfg, summary)
    for key, value in QUICKSTART["mixtrain"].items():  # e.g. domain=crown-ibp, k_per_batch=...
        assert (f"{key}={value}" in row["settings"]) == (key != "epochs"), (key, row["settings"])
    assert (row["epochs"], row["train images"], row["ACC n"], row["ERA/VRA n"]) == (6, 5000, 1000, 300)
    assert (row["ACC"], row["ERA (PGD)"], row["VRA (symbolic-linear)"]) == (96.0, 80.0, 60.0)
