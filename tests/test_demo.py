"""The demo's whole path, shrunk: data generation, phase one, report."""
import json

from labelreg.demo import run_demo
from labelreg.engine import load_checkpoint


def test_demo_writes_report(tmp_path):
    summary = run_demo(out=tmp_path / "demo", data_root=tmp_path / "data", overrides=[
        "data.synth_labeled=8", "data.synth_depth_only=2", "data.synth_size=[32,48]", "data.crop_size=[32,48]",
        "train.epochs=1", "data.batch_size=4", "data.eval_batch_size=4",
        "depth.mixed_epochs=1", "depth.depth_only_limit=4"])
    out = tmp_path / "demo"
    for name in ("report.md", "metrics.json", "ae_reconstructions.png", "ae_curves.png", "seg_predictions.png",
                 "seg_curves.png", "seg_reg_curves.png", "depth_predictions.png", "queries.png", "queries.json", "weak_points.png"):
        assert (out / name).is_file(), name
    assert (out / "ae" / "checkpoints" / "best.pt").is_file() and (out / "ae" / "config.yaml").is_file()
    stored = json.loads((out / "metrics.json").read_text())
    assert stored["autoencoder"]["val"]["miou"] == summary["autoencoder"]["val"]["miou"]
    assert 0.0 <= stored["autoencoder"]["val"]["miou"] <= 1.0
    assert 0.0 <= stored["segmenter"]["val"]["miou"] <= 1.0 and (out / "seg" / "checkpoints" / "best.pt").is_file()
    assert stored["regularized"]["regularizer"] == "decoder" and 0.0 <= stored["regularized"]["val"]["aux_miou"] <= 1
    regularized = (out / "seg_reg" / "checkpoints" / "best.pt")
    assert regularized.is_file() and "val/aux_miou" in load_checkpoint(regularized)["metrics"]
    assert stored["depth"]["twopart"]["val"]["pixel_rmse"] > 0 and 0 <= stored["depth"]["single"]["val"]["miou"] <= 1
    labels_query, image_query = stored["queries"]
    assert labels_query["source"] == "labels" and image_query["source"] == "images"
    assert labels_query["matches"] and labels_query["query_id"] not in [m["image_id"] for m in labels_query["matches"]]
    assert 0 <= stored["weak"]["point_miou"] <= 1 and set(stored["weak"]["samplers"]) >= {"diverse", "topk"}
    report = (out / "report.md").read_text()
    assert "reconstruction mIoU" in report and "zoomout_densenet67" in report and "queries.png" in report and "weak_points.png" in report
    # the autoencoder's per-class IoU next to the segmenters', one row per class present in the held-out split
    header = "| class | pixels (%) | autoencoder | baseline | regularized |"
    assert header in report and report.index(header) < report.index("## Phase two")
    shares = stored["autoencoder"]["val_class_share"]
    rows = [line for line in report[report.index(header):].splitlines()[2:] if line.startswith("| ")]
    present = [name for name, share in shares.items() if share > 0]
    assert len(rows) >= len(present) and abs(sum(shares.values()) - 1) < 1e-6
    first = rows[0].split(" | ")  # the most frequent class first, its autoencoder IoU as stored
    name = first[0].strip("|* ")
    assert name == max(shares, key=shares.get)
    assert first[2] == f"{100 * stored['autoencoder']['val'][f'iou/{name}']:.1f}"
    floor = stored["autoencoder"]["frequent_class_min_iou"]
    assert floor["share_at_least"] == 0.01 and shares[floor["class"]] >= 0.01
    # depth figure: a colour bar per scale and an error column per model, wide enough for its titles
    from PIL import Image

    with Image.open(out / "depth_predictions.png") as picture:
        assert picture.width >= 900 and picture.height >= 300
