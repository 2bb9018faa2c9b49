import pytest

from labelreg.data.synthetic import write_synthetic_dataset


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
    """A small synthetic data set in the real formats, written once per test session."""
    root = tmp_path_factory.mktemp("synthetic")
    return write_synthetic_dataset(root, labeled=12, depth_only=3, size=(64, 80), seed=7, progress=False)
