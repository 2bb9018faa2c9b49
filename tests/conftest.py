import pytest
import torch

from labelreg.data.synthetic import write_synthetic_dataset


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
    """A small synthetic data set in the real formats, written once per test session."""
    root = tmp_path_factory.mktemp("synthetic")
    return write_synthetic_dataset(root, labeled=12, depth_only=3, size=(64, 80), seed=7, progress=False)


@pytest.fixture(autouse=True)
def _run_in_a_temporary_folder(tmp_path, monkeypatch):
    """Tests run from an empty folder, so a relative default path (data/synthetic, runs/) can never
    write into the checkout (it would also make the suite slow and order-dependent)."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def one_thread():
    """Small convolutions: on a shared 2-core CPU a second OpenMP thread costs far more than it saves."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
