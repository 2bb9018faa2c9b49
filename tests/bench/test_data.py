"""The data-loading benchmark (labelreg.bench.data) on small synthetic NYUv2 data."""
import json

import pytest

from labelreg.bench.cli import main
from labelreg.bench.data import bench_data, nyu_sources
from tests.bench.tiny import table_lines


def test_data_bench_on_tiny_synthetic(tiny_synthetic, tmp_path, capsys):
    out = tmp_path / "data.json"
    assert main(["--data", "nyu", "--data-root", str(tiny_synthetic.root), "--workers", "0", "--data-batch",
                 "2", "--data-images", "8", "--json", str(out)]) == 0
    rows = table_lines(capsys.readouterr().out)
    assert len(rows) == 2 and "nyu-mat" in rows[0] and "nyu-depth-only" in rows[1]
    report = json.loads(out.read_text())
    assert set(report["source"]) == {"mat", "depth_only"}
    for row in report["data"]:
        assert row["workers"] == 0 and row["images"] == 8 and row["HxW"] == "64x80"
        assert row["epoch_img_s"] > 0 and row["img_s"] > 0
        # all images over the whole time; "seconds" is rounded to the millisecond, so bound the rate by it
        low, high = 8 / (row["seconds"] + 0.0005), 8 / max(row["seconds"] - 0.0005, 1e-9)
        assert low - 0.05 <= row["epoch_img_s"] <= high + 0.05
    assert [row["frames"] for row in report["data"]] == [12, 3]  # the set's labeled and depth-only frames


def test_data_bench_on_written_synthetic_data():
    synthetic = {"labeled": 2, "depth_only": 2, "size": (32, 48)}
    report = bench_data(workers=[0], batch=2, images=4, synthetic=synthetic, progress=False)
    assert report["source"].startswith("synthetic") and [r["reader"] for r in report["data"]] == ["nyu-mat",
                                                                                                  "nyu-depth-only"]
    assert all(row["HxW"] == "32x48" and row["images"] == 4 for row in report["data"])


def test_nyu_sources_search_root_and_nyu(tiny_synthetic, tmp_path):
    assert nyu_sources(tiny_synthetic.root) == {"mat": tiny_synthetic.nyu_mat,
                                                "depth_only": tiny_synthetic.depth_only_dir}
    assert nyu_sources(tiny_synthetic.root, depth_only=tmp_path)["depth_only"] == tmp_path
    assert nyu_sources(tmp_path) == {}


def test_data_bench_without_data_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="nyu_depth_v2_labeled.mat"):
        bench_data(tmp_path, workers=[0])
