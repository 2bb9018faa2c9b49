"""``labelreg demo --dataset camvid`` (issue 23 §3): its recipes, its refusals before any write, and the whole
path on a few real frames of ../shared/data/camvid (linked, never copied), shrunk to one epoch."""
import json
from pathlib import Path

import pytest

from labelreg.cli import main
from labelreg.config import load_config
from labelreg.demo.camvid import CAMVID, CAMVID_STAGES
from labelreg.demo.stages import decoder_of
from labelreg.demo.runs import stage_config
from tests.data.test_camvid import needs_camvid, real_camvid_layout

FRAMES = {"train": ["0001TP_006690", "0016E5_00390"], "val": ["0016E5_07959", "0016E5_07961"],
          "test": ["0001TP_008550", "Seq05VD_f00000"]}
TINY = ["train.epochs=1", "data.batch_size=2", "data.eval_batch_size=2", "ae:data.batch_size=2"]


def test_the_camvid_recipes_score_on_the_full_test_labels_and_run_directly(tmp_path):
    configs = {stage: load_config(recipe.config) for stage, recipe in CAMVID.recipes.items()}
    for stage, cfg in configs.items():
        assert cfg.data.dataset == "camvid" and cfg.data.val_split == "test" and cfg.data.eval_size is None
        assert cfg.run_dir == Path("runs/demo-direct/camvid") / stage
    assert configs["ae"].model.variant == "32" and configs["seg"].eval.short_sides == [96]
    assert Path(configs["seg_reg"].regularizer.autoencoder) == configs["ae"].run_dir / "checkpoints" / "best.pt"
    recipe = CAMVID.recipes["seg_reg"]
    wired = stage_config(recipe.config, "seg_reg", tmp_path, tmp_path / "c", recipe.wiring(tmp_path, tmp_path / "c"))
    assert wired.run_dir == tmp_path / "seg_reg" and wired.regularizer.autoencoder == str(decoder_of(tmp_path))
    assert list(CAMVID_STAGES) == ["ae", "seg", "seg_reg", "queries"]


def test_a_camvid_demo_without_its_data_or_with_a_synthetic_stage_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["demo", "--dataset", "camvid", "--out", str(out), "--data", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.strip() == f"labelreg demo: error: CamVid: folder not found: {tmp_path / 'nowhere'}"
    assert main(["demo", "--dataset", "camvid", "--out", str(out), "--stages", "weak"]) == 2
    assert "--stages: unknown stage 'weak'; the stages are ae, seg, seg_reg, queries" in capsys.readouterr().err
    assert not out.exists()


@needs_camvid
def test_the_camvid_demo_runs_every_stage_on_real_frames(tmp_path, capsys):
    data, out = real_camvid_layout(tmp_path / "data", FRAMES), tmp_path / "demo"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        assert main(["demo", "--dataset", "camvid", "--out", str(out), "--data", str(data), "--no-progress",
                     *TINY]) == 0
    stored = json.loads((out / "metrics.json").read_text())
    assert list(stored["seconds"]) == ["train_ae", "train_seg", "train_seg_reg", "queries", "total"]
    for key in ("autoencoder", "segmenter", "regularized"):  # scored on the whole test split and on Seq05VD
        assert {"miou", "Seq05VD_miou", "iou/Car"} <= set(stored[key]["val"]), key
    assert stored["regularized"]["val"]["aux_Seq05VD_miou"] >= 0
    labels_query, image_query = stored["queries"]
    assert labels_query["class"] == "Car" and labels_query["query_id"] == "0001TP_006690"
    assert {m["image_id"] for m in labels_query["matches"]} <= set(FRAMES["val"])
    report = (out / "report.md").read_text()
    assert "CamVid road scenes in" in report and "| reconstruction mIoU (test) |" in report
    assert f"mIoU (test) | {100 * stored['segmenter']['val']['miou']:.1f}, Seq05VD " in report
    assert [line for line in report.splitlines() if line.startswith("## ")] == [
        "## Phase one: label autoencoder", "## Phase two: the decoder as a regularizer", "## Label-space queries",
        "## Provenance"]
    assert "$" not in report and report.startswith("> **Reduced run")
    for name in ("ae_reconstructions.png", "ae_curves.png", "seg_predictions.png", "seg_curves.png", "queries.png"):
        assert (out / name).is_file(), name
    assert stored["provenance"]["command"][:4] == ["labelreg", "demo", "--dataset", "camvid"]
