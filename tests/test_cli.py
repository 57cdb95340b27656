"""The `veritrain` command: options, config files, error handling, subcommands."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from veritrain import __version__
from veritrain.cli import (
    QUICKSTART,
    QUICKSTART_PREFERENCE,
    build_parser,
    config_from_args,
    main,
    quickstart_configs,
    train_help,
)
from veritrain.training.config import TrainConfig

from cli_helpers import run_main, snapshot

REPO = Path(__file__).resolve().parents[1]


def parse_train(*argv: str) -> TrainConfig:
    return config_from_args(build_parser().parse_args(["train", *argv]))


# ----------------------------------------------------------------------------- options


def test_version_via_python_m():
    r = subprocess.run(
        [sys.executable, "-m", "veritrain", "--version"], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert r.returncode == 0 and r.stdout.strip() == f"veritrain {__version__}"


def test_every_train_option_exists_with_help():
    parser = build_parser()
    train_parser = parser._subparsers._group_actions[0].choices["train"]  # type: ignore[union-attr]
    dests = {a.dest: a for a in train_parser._actions}
    for f in dataclasses.fields(TrainConfig):
        assert f.name in dests, f"no option for {f.name}"
        assert dests[f.name].help and len(train_help(f.name)) > 10
    for name in ("alpha0", "alpha", "alpha_step", "acc0", "k", "k_per_batch", "domain"):
        assert "[mixtrain]" in train_help(name)
    assert "[madry]" in train_help("pgd_steps") and "[wrm]" in train_help("gamma")
    assert "[wong]" in train_help("projections")


def test_command_line_types_flags_and_defaults():
    cfg = parse_train(
        "--net",
        "mnist-fc1",
        "--epochs",
        "3",
        "--lr",
        "0.01",
        "--eps",
        "0.3",
        "--train-size",
        "100",
        "--no-progress",
        "--resume",
        "--method",
        "mixtrain",
        "--k-per-batch",
        "2",
        "--extra",
        "foo=3",
        "--extra",
        "bar=[1, 2]",
    )
    assert (cfg.net, cfg.epochs, cfg.lr, cfg.eps, cfg.train_size) == ("mnist-fc1", 3, 0.01, 0.3, 100)
    assert cfg.progress is False and cfg.resume is True and cfg.k_per_batch == 2
    assert cfg.extra == {"foo": 3, "bar": [1, 2]}
    d = parse_train()
    assert d == TrainConfig()


@pytest.mark.parametrize("suffix", [".yaml", ".toml"])
def test_config_file_and_command_line_override(tmp_path, suffix):
    f = tmp_path / f"opts{suffix}"
    if suffix == ".yaml":
        f.write_text(
            "method: mixtrain\nnet: mnist-large\nbatch-size: 32\nlr: 1e-3\nalpha_0: 0.5\n".replace("alpha_0", "alpha0")
            + "progress: false\neval-domains: [interval, symbolic-linear]\nk: null\n"
        )
    else:
        f.write_text(
            'method = "mixtrain"\nnet = "mnist-large"\nbatch-size = 32\nlr = 1e-3\nalpha0 = 0.5\nprogress = false\n'
            'eval-domains = ["interval", "symbolic-linear"]\n'
        )
    cfg = parse_train("--config", str(f), "--batch-size", "64")
    assert cfg.net == "mnist-large" and cfg.lr == 1e-3 and isinstance(cfg.lr, float)
    assert cfg.batch_size == 64  # the command line wins
    assert cfg.alpha0 == 0.5 and cfg.progress is False
    assert cfg.eval_domains == "interval,symbolic-linear"


def test_config_file_from_a_run_folder(tmp_path):
    """A run's config.json (the options plus a `versions` record) reads back to the same TrainConfig."""
    import json

    from veritrain.errors import ConfigError

    cfg = TrainConfig(net="mnist-small", method="ibp", eps=0.1, epochs=7, lr_milestones="5,6", holdout=10)
    f = tmp_path / "config.json"
    # config.json holds resolved values, also of options that only other methods read (alpha0)
    f.write_text(json.dumps({**cfg.to_dict(), "alpha0": 0.8, "versions": {"veritrain": "x", "torch": "y"}}))
    assert parse_train("--config", str(f)) == cfg
    assert parse_train("--config", str(f), "--epochs", "9").epochs == 9
    # a hand-written JSON file is checked like YAML: an option the method does not read is an error
    hand = tmp_path / "hand.json"
    hand.write_text(json.dumps({"method": "ibp", "acc0": 97.0}))
    with pytest.raises(ConfigError, match="--acc0 is an option of mixtrain"):
        parse_train("--config", str(hand))


def test_config_file_errors(tmp_path, capsys):
    bad_key = tmp_path / "a.yaml"
    bad_key.write_text("netz: mnist-small\n")
    bad_type = tmp_path / "b.toml"
    bad_type.write_text('epochs = "many"\n')
    garbled = tmp_path / "c.yaml"
    garbled.write_text("net: [unclosed\n")
    garbled_json = tmp_path / "d.json"
    garbled_json.write_text('{"net": ')
    for f, msg in (
        (bad_key, "unknown option 'netz'"),
        (bad_type, "'epochs' expects int"),
        (garbled, "cannot be parsed"),
        (garbled_json, "cannot be parsed"),
        (tmp_path / "missing.yaml", "does not exist"),
        (tmp_path / "x.ini", "does not exist"),
    ):
        rc, out, err = run_main(capsys, "train", "--config", str(f), "--out", str(tmp_path / "run"))
        assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_usage_error_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--epochs", "three"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("veritrain: error:")


# ----------------------------------------------------------------------------- errors: one line, exit 2, RUN intact


def test_unknown_net_dataset_method_exit_2_one_line(tmp_path, capsys):
    for opt, value, word in (
        ("--net", "mnist-huge", "mnist-huge"),
        ("--dataset", "svhn", "svhn"),
        ("--method", "magic", "magic"),
    ):
        rc, out, err = run_main(capsys, "train", opt, value, "--out", str(tmp_path / "run"), "--no-progress")
        assert rc == 2, err
        assert err.startswith("veritrain: error:") and word in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_missing_data_root_is_one_line(tmp_path, capsys):
    pytest.importorskip("veritrain.data")
    rc, out, err = run_main(
        capsys,
        "train",
        "--dataset",
        "cifar10",
        "--net",
        "cifar-small",
        "--data-dir",
        str(tmp_path / "empty"),
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
    )
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_corrupt_checkpoint_exit_2_and_run_untouched(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"\x80\x02garbage" * 10)
    (run / "metrics.jsonl").write_text('{"epoch": 1, "loss": 1.0}\n{"epoch": 2, "loss": 0.5}\n')
    (run / "config.json").write_text("{}\n")
    before = snapshot(run)
    rc, out, err = run_main(capsys, "train", "--dataset", "mnist-mini", "--out", str(run), "--resume", "--no-progress")
    assert rc == 2 and "corrupt" in err and len(err.strip().splitlines()) == 1, err
    assert snapshot(run) == before


def test_train_writes_run_and_resume_of_finished_run(tiny_run, capsys):
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt", "model.pt", "summary.json"):
        assert (tiny_run / name).is_file()
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert summary["train_size"] == 100 and 0 <= summary["test_acc"] <= 100
    # another architecture on the same run folder: refused, nothing changed
    before = snapshot(tiny_run)
    rc, out, err = run_main(
        capsys,
        "train",
        "--net",
        "mnist-fc1",
        "--dataset",
        "mnist-mini",
        "--train-size",
        "100",
        "--epochs",
        "1",
        "--out",
        str(tiny_run),
        "--resume",
        "--no-progress",
    )
    assert rc == 2 and "net" in err and len(err.strip().splitlines()) == 1, err
    rc, out, err = run_main(capsys, "train", "--dataset", "mnist-mini", "--out", str(tiny_run), "--no-progress")
    assert rc == 2 and "--resume" in err
    assert snapshot(tiny_run) == before
    # README: `veritrain train --out RUN --resume` takes the other options from RUN/config.json
    cfg = parse_train("--out", str(tiny_run), "--resume", "--epochs", "2")
    assert (cfg.dataset, cfg.train_size, cfg.epochs, cfg.resume) == ("mnist-mini", 100, 2, True)
    # a run started with --overwrite resumes too: how it was started is not one of its options
    saved = json.loads((tiny_run / "config.json").read_text())
    (tiny_run / "config.json").write_text(json.dumps({**saved, "overwrite": True}))
    assert parse_train("--out", str(tiny_run), "--resume").overwrite is False
    (tiny_run / "config.json").write_text(json.dumps(saved))
    rc, out, err = run_main(capsys, "train", "--out", str(tiny_run), "--resume", "--no-progress")
    assert rc == 0, err  # already finished: evaluates again, weights unchanged
    assert (tiny_run / "model.pt").read_bytes() == before["model.pt"]
    assert (tiny_run / "checkpoint.pt").read_bytes() == before["checkpoint.pt"]


def test_evaluate_run_and_weights_of_another_architecture(tiny_run, tmp_path, capsys):
    out_json = tmp_path / "ev.json"
    rc, out, err = run_main(capsys, "evaluate", str(tiny_run), "--n", "50", "--json", str(out_json), "--no-progress")
    assert rc == 0, err
    res = json.loads(out_json.read_text())
    assert res["n"] == 50 and 0 <= res["acc"] <= 100 and res["era"] == {} and res["vra"] == {}
    assert "ACC" in out
    rc, out, err = run_main(
        capsys,
        "evaluate",
        "--net",
        "mnist-fc1",
        "--weights",
        str(tiny_run / "model.pt"),
        "--dataset",
        "mnist-mini",
        "--n",
        "10",
        "--no-progress",
    )
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    rc, out, err = run_main(capsys, "evaluate", str(tmp_path / "nothing"), "--no-progress")
    assert rc == 2 and "not a training run folder" in err


def test_evaluate_with_attack_and_domain(tiny_run, tmp_path, capsys):
    pytest.importorskip("veritrain.evaluation.era")
    pytest.importorskip("veritrain.evaluation.vra")
    rc, out, err = run_main(
        capsys,
        "evaluate",
        str(tiny_run),
        "--n",
        "8",
        "--attacks",
        "fgsm",
        "--domains",
        "interval",
        "--json",
        str(tmp_path / "e.json"),
        "--no-progress",
    )
    assert rc == 0, err
    res = json.loads((tmp_path / "e.json").read_text())
    assert set(res["era"]) >= {"fgsm", "all"} and "interval" in res["vra"]
    assert res["vra"]["interval"] <= res["era"]["all"] + 1e-9 <= res["acc"] + 1e-9  # VRA <= ERA <= ACC


def test_plot(tiny_run, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "m.png"
    rc, out, err = run_main(capsys, "plot", str(tiny_run), "--out", str(png))
    assert rc == 0 and png.stat().st_size > 1000


# ----------------------------------------------------------------------------- models, quickstart


def test_models_json_lists_the_eight_networks(capsys):
    rc, out, err = run_main(capsys, "models", "--json")
    rows = json.loads(out)
    assert rc == 0 and len(rows) == 8
    assert {"name", "dataset", "parameters", "hidden_units"} <= set(rows[0])
    assert "mnist-small" in {r["name"] for r in rows}
    rc, out, err = run_main(capsys, "models")
    assert "mnist-small" in out and "hidden units" in out


def test_quickstart_picks_the_strongest_available_method(tmp_path):
    from veritrain.training.methods import METHODS

    configs = quickstart_configs(tmp_path, fast=True)
    methods = [c.method for c in configs]
    expected = next((m for m in QUICKSTART_PREFERENCE if m in METHODS), None)
    assert methods == ["regular"] + ([expected] if expected else [])
    for c in configs:
        assert c.net == "mnist-small" and c.dataset == "mnist-mini" and c.eps == QUICKSTART["common"]["eps"]
        assert c.data_dir is None and Path(c.out).parent == tmp_path
    full = quickstart_configs(tmp_path)
    assert full[0].train_size is None and full[0].epochs == QUICKSTART["regular"]["epochs"]


@pytest.mark.slow
def test_quickstart_fast_end_to_end(tmp_path, capsys):
    rc, out, err = run_main(capsys, "quickstart", "--fast", "--out", str(tmp_path), "--no-progress")
    assert rc == 0, err
    assert "ERA (PGD)" in out and "VRA (symbolic-linear)" in out
    assert (tmp_path / "quickstart.json").is_file()


def test_table_of_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`veritrain table` puts finished runs side by side and writes CSV/JSON; a non-run is a one-line error."""
    for name, method, vra in (("a", "regular", {"interval": 0.0}), ("b", "wrm", "n/a")):
        run = tmp_path / name
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"method": method, "net": "mnist-small", "eps": 0.00784}))
        (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "batch_time": 0.01, "peak_mem_mb": 700}) + "\n")
        (run / "summary.json").write_text(
            json.dumps(
                {
                    "test_acc": 98.5,
                    "eval": {"n": 10, "era": {"pgd": 12.0, "all": 12.0}, "vra": vra},
                    "time_s": {"train": 60},
                }
            )
        )
    assert (
        main(
            [
                "table",
                str(tmp_path / "a"),
                str(tmp_path / "b"),
                "--markdown",
                "--csv",
                str(tmp_path / "t.csv"),
                "--json",
                str(tmp_path / "t.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| regular |" in out and "n/a" in out and "98.50" in out and "10.00" in out  # batch ms
    assert "| 0.00784 |" in out and "| 0.00 |" in out  # eps 2/255 is not rounded to 0.01; VRA 0 stays 0.00
    assert len(json.loads((tmp_path / "t.json").read_text())) == 2 and (tmp_path / "t.csv").exists()
    assert main(["table", str(tmp_path)]) == 2
