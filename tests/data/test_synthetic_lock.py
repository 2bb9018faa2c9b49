"""Two trainings synthesizing the same new data.root at once (issue 22 D11): the second waits for the first,
then uses what it wrote, instead of dying in HDF5's "unable to lock file" with no file named."""
import threading
import time

from labelreg.config import config_from_dict
from labelreg.data.build import ensure_synthetic
from labelreg.data.synthetic import dataset_exists, write_synthetic_dataset
from labelreg.data.synthetic.writer import synthetic_lock

TINY = ["data.synthesize_if_missing=true", "data.synth_labeled=2", "data.synth_depth_only=0", "data.synth_size=[16, 16]"]


def test_a_second_writer_waits_for_the_first_and_uses_its_data_set(tmp_path, capsys):
    """The lock is an flock on the folder's ownership file: a second thread's open file conflicts with the
    first's exactly as another process's does (one thread per training keeps the test fast)."""
    root = tmp_path / "data"
    second_training = threading.Thread(target=ensure_synthetic,
                                       args=(config_from_dict({}, [f"data.root={root}", *TINY]).data,))
    with synthetic_lock(root):  # the first training holds the folder while it writes
        second_training.start()
        deadline, err = time.monotonic() + 60, ""
        while "waiting for another process" not in err:  # the second says it waits ...
            assert second_training.is_alive() and time.monotonic() < deadline, err
            time.sleep(0.02)
            err += capsys.readouterr().err
        assert f"writing the synthetic data set at {root}" in err
        assert not dataset_exists(root)  # ... and has written nothing
        paths = write_synthetic_dataset(root, labeled=2, depth_only=0, size=(16, 16), progress=False)  # re-entrant
        written = paths.marker.stat().st_mtime_ns
    second_training.join(timeout=60)
    assert not second_training.is_alive()
    assert f"using the synthetic data set another process has just written at {root}" in capsys.readouterr().err
    assert paths.marker.stat().st_mtime_ns == written and dataset_exists(root)  # used as it was, not rewritten
