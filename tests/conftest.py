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
