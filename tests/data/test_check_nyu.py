"""The NYUv2 checks (labelreg.data.download.nyu_check), through scripts/check_nyu.py's command line."""
import runpy
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from labelreg.data.download import nyu_check as check_nyu
from labelreg.data.synthetic import write_synthetic_dataset

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_nyu.py"


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("check_nyu")
    return write_synthetic_dataset(root, labeled=6, depth_only=2, size=(32, 48), seed=0, progress=False)


@pytest.fixture
def copy(synth, tmp_path):
    """A private copy of the synthetic NYUv2 folder, safe to corrupt."""
    return Path(shutil.copytree(synth.nyu_mat.parent, tmp_path / "nyu"))


def run(capsys, *argv):
    code = check_nyu.main([str(a) for a in argv])
    return code, capsys.readouterr().out


def test_clean_synthetic_set_passes(synth, capsys):
    code, out = run(capsys, "--mat", synth.nyu_mat, "--splits", synth.splits, "--mapping", synth.mapping,
                    "--depth-only", synth.depth_only_dir, "--sample", 4)
    assert code == 0, out
    assert "6 labeled images" in out and "train 4, test 2" in out and "2 depth-only frames" in out
    assert "795/654" in out  # warned, not failed
    assert "✗" not in out and "0 error(s)" in out


def test_defaults_beside_the_mat(synth, capsys):
    code, out = run(capsys, "--mat", synth.nyu_mat)
    assert code == 0, out
    assert "train 4, test 2" in out and "covers every id" in out


def test_split_index_beyond_n_fails(copy, capsys):
    splits = scipy.io.loadmat(copy / "splits.mat")
    train = splits["trainNdxs"].copy()
    train[0, 0] = 7  # N + 1
    scipy.io.savemat(copy / "splits.mat", {"trainNdxs": train, "testNdxs": splits["testNdxs"]})
    code, out = run(capsys, "--mat", copy / "nyu_depth_v2_labeled.mat")
    assert code == 1
    assert "outside 1..6" in out and "e.g. 7" in out


def test_overlapping_splits_fail(copy, capsys):
    splits = scipy.io.loadmat(copy / "splits.mat")
    test = np.concatenate([splits["testNdxs"], splits["trainNdxs"][:1]])
    scipy.io.savemat(copy / "splits.mat", {"trainNdxs": splits["trainNdxs"], "testNdxs": test})
    code, out = run(capsys, "--mat", copy / "nyu_depth_v2_labeled.mat")
    assert code == 1 and "share 1 image" in out


def test_label_id_beyond_mapping_fails(copy, capsys):
    mapping = scipy.io.loadmat(copy / "classMapping40.mat")
    with h5py.File(copy / "nyu_depth_v2_labeled.mat", "r") as f:
        top = int(np.asarray(f["labels"]).max())
    scipy.io.savemat(copy / "classMapping40.mat", {"mapClass": mapping["mapClass"][:, :top - 1],
                                                   "className": mapping["className"]})
    code, out = run(capsys, "--mat", copy / "nyu_depth_v2_labeled.mat", "--sample", 100)
    assert code == 1
    assert f"raw label id(s) [{top}]" in out and "beyond" in out


def test_wrong_dtype_and_missing_file_fail(copy, capsys, tmp_path):
    mat = copy / "nyu_depth_v2_labeled.mat"
    with h5py.File(mat, "a") as f:
        depths = f["depths"][()]
        del f["depths"]
        f["depths"] = (depths * 1000).astype(np.uint16)  # millimetres, as some exports store them
    code, out = run(capsys, "--mat", mat)
    assert code == 1 and "depths" in out and "float32" in out
    code, out = run(capsys, "--mat", tmp_path / "missing.mat")
    assert code == 1 and "not found" in out


def test_depth_in_millimetres_fails(copy, capsys):
    mat = copy / "nyu_depth_v2_labeled.mat"
    with h5py.File(mat, "a") as f:
        f["depths"][...] = f["depths"][()] * 1000
    code, out = run(capsys, "--mat", mat)
    assert code == 1 and "millimetres" in out


def test_depth_only_size_mismatch_and_bad_frame_fail(copy, capsys):
    frames = sorted((copy / "depth_only").glob("*.h5"))
    with h5py.File(frames[0], "w") as f:
        f["rgb"] = np.zeros((3, 16, 16), np.uint8)
        f["depth"] = np.ones((16, 16), np.float32)
    with h5py.File(frames[1], "w") as f:
        f["rgb"] = np.zeros((3, 32, 48), np.uint8)  # no depth dataset
    code, out = run(capsys, "--mat", copy / "nyu_depth_v2_labeled.mat", "--depth-only", copy / "depth_only")
    assert code == 1
    assert "(16, 16)" in out and "'depth' missing" in out


def test_the_script_is_a_wrapper_of_the_module(synth, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["check_nyu.py", "--mat", str(synth.nyu_mat), "--sample", "2"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "6 labeled images" in out and "OK: 0 error(s)" in out
