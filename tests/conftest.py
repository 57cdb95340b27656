"""Shared test set-up."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tests use tiny tensors: intra-op threads only add overhead, and on a busy 2-core machine thread
    spinning makes them 10-100x slower. One thread for the whole session, restored at the end."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One short real run on the embedded mnist-mini (100 images, 1 epoch, ACC only), one per test module."""
    from veritrain.cli import main

    run = tmp_path_factory.mktemp("cli") / "run"
    rc = main(
        [
            "train",
            "--net",
            "mnist-small",
            "--dataset",
            "mnist-mini",
            "--train-size",
            "100",
            "--epochs",
            "1",
            "--out",
            str(run),
            "--no-progress",
            "--eps",
            "0.1",
            "--eval-attacks",
            "",
            "--eval-domains",
            "",
        ]
    )
    assert rc == 0
    return run
