"""`labelreg study` on real label maps: the pre-registered CamVid protocols load as registered, and a cut-down
copy of `camvid` runs end to end on frames of ../shared/data/camvid (slow: three training subprocesses)."""
import json
from pathlib import Path

import pytest
import yaml

from labelreg.cli import main
from labelreg.config import load_config
from labelreg.study import load_protocol
from labelreg.study.runner import autoencoder_spec, run_spec

PROTOCOLS = Path(__file__).resolve().parents[2] / "configs" / "study"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "camvid"


@pytest.mark.parametrize("name, train_limit, epochs", [("camvid", None, 12), ("camvid_label_rich", 60, 74)])
def test_the_camvid_protocols_run_what_they_register(name, train_limit, epochs, tmp_path):
    protocol = load_protocol(PROTOCOLS / f"{name}.yml")
    assert protocol.seeds == [0, 1, 2, 3, 4] and protocol.score_split == "test" and protocol.score_subsets == ["Seq05VD"]
    variants = {}
    for phase_one in protocol.autoencoders_needed():  # phase one always reads all 367 training label maps
        spec = autoencoder_spec(protocol, tmp_path, phase_one)
        cfg = load_config(spec["argv"][5], spec["overrides"])
        assert cfg.data.dataset == "camvid" and cfg.data.train_limit is None and cfg.data.crop_size == [180, 240]
        variants[phase_one.name] = cfg.model.variant
    assert variants == {"dagger32": "32", "ce128": "128"}
    arms = {}
    for arm in protocol.arms:
        spec = run_spec(protocol, tmp_path, arm, 3)
        cfg = load_config(spec["argv"][5], spec["overrides"])
        assert (cfg.data.dataset, cfg.data.val_split, cfg.data.train_limit, cfg.train.epochs) == \
            ("camvid", "test", train_limit, epochs)
        assert cfg.data.crop_size == [180, 240] and cfg.data.crop_area is None and not cfg.data.hflip  # no augmentation
        assert cfg.train.loss == "ce" and cfg.train.seed == 3
        arms[arm] = (cfg.regularizer.kind, cfg.regularizer.loss, cfg.regularizer.weight, cfg.regularizer.frozen,
                     cfg.regularizer.diagnostics, Path(cfg.regularizer.autoencoder or ".").parent.parent.name)
    assert arms == {"baseline": ("none", "ce", None, True, False, ""),
                    "dagger": ("decoder", "mse", 1.0, True, True, "dagger32"),
                    "ce": ("decoder", "ce", 0.5, True, True, "ce128")}


@pytest.mark.slow
def test_a_cut_down_camvid_study_runs_on_real_frames(tmp_path):
    raw = yaml.safe_load((PROTOCOLS / "camvid.yml").read_text())
    raw["base"] = str(PROTOCOLS / raw["base"])
    for entry in raw["autoencoders"].values():
        entry["config"] = str(PROTOCOLS / entry["config"])
        entry["overrides"] = ["train.epochs=1", "train.max_steps=1", "data.train_limit=4", "data.val_limit=4",
                              "data.crop_size=[48,64]", "train.device=cpu"]
    raw["data"]["root"] = str(SHARED)
    raw["budget"].update({"train.epochs": 1, "train.max_steps": 1, "data.train_limit": 4, "data.val_limit": 4,
                          "data.crop_size": [48, 64], "eval.short_sides": [48], "data.eval_batch_size": 4})
    raw["seeds"] = [0]
    raw["arms"] = {"baseline": [], "dagger": raw["arms"]["dagger"]}
    protocol = tmp_path / "camvid-cut.yml"
    protocol.write_text(yaml.safe_dump(raw))
    assert main(["study", str(protocol), "--out", str(tmp_path / "out"), "--jobs", "2"]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    runs = {run["name"]: run for run in results["runs"]}
    assert {name for name, run in runs.items() if run["status"] == "ok"} >= {"baseline/seed0", "dagger/seed0"}
    # the first 4 test frames are 0001TP's: the Seq05VD part is empty there and reported as such (NaN / null)
    metrics = runs["dagger/seed0"]["metrics"]
    assert 0 <= metrics["miou"] <= 1 and 0 <= metrics["aux_miou"] <= 1
    assert (tmp_path / "out" / "runs" / "dagger" / "seed0" / "diagnostics.json").is_file()
    assert "Seq05VD" in (tmp_path / "out" / "report.md").read_text()
