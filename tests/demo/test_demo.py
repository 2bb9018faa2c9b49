"""The demo's whole path, shrunk to seconds: ``labelreg demo`` through the command line (data generation,
phase one, phase two, joint depth, queries, weak supervision), its report and metrics, and its help text."""
import json

import pytest
from PIL import Image

from labelreg.cli import main
from labelreg.storage import load_checkpoint

TINY = ["data.synth_labeled=8", "data.synth_depth_only=2", "data.synth_size=[32,48]", "data.crop_size=[32,48]",
        "train.epochs=1", "data.batch_size=4", "data.eval_batch_size=4", "depth.mixed_epochs=1",
        "depth.depth_only_limit=4"]
TRAINED = ("ae", "seg", "seg_reg", "twopart", "single", "weak")  # stages with a run directory under --out


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One ``labelreg demo`` for this module's tests: its exit code and its --out folder."""
    root = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # a relative path can never write into the checkout
        code = main(["demo", "--out", str(root / "demo"), "--data", str(root / "data"), *TINY])
    return code, root / "demo"


def test_cli_demo_runs_every_stage(demo_run):
    code, out = demo_run
    assert code == 0
    stored = json.loads((out / "metrics.json").read_text())
    assert list(stored["seconds"]) == ["data", "train_ae", "train_seg", "train_seg_reg", "train_twopart",
                                       "train_single", "queries", "weak", "total"]
    for stage in TRAINED:
        assert (out / stage / "config.yaml").is_file(), stage
    report = (out / "report.md").read_text()
    table = report[:report.index("## Phase one")]  # the results table: one row per stage
    for row in ("| phase one: autoencoder-", "| baseline: zoomout_densenet67 (tiny, ", "| phase two: same + ",
                "| depth: tiny two-part model ", "| depth: single-part baseline ", "| weak supervision: tags → ",
                "| time | data / autoencoder / baseline / regularized / two-part / single-part / queries / weak "
                "/ total"):
        assert row in table, row
    headings = [line for line in report.splitlines() if line.startswith("## ")]
    assert headings == ["## Phase one: label autoencoder", "## Phase two: the decoder as a regularizer",
                        "## Joint depth and segmentation", "## Label-space queries",
                        "## Weak supervision from image tags"]
    assert "$" not in report  # every template field filled


def test_demo_writes_report(demo_run):
    _, out = demo_run
    for name in ("report.md", "metrics.json", "ae_reconstructions.png", "ae_curves.png", "seg_predictions.png",
                 "seg_curves.png", "seg_reg_curves.png", "depth_predictions.png", "queries.png", "queries.json",
                 "weak_points.png"):
        assert (out / name).is_file(), name
    assert (out / "ae" / "checkpoints" / "best.pt").is_file() and (out / "ae" / "config.yaml").is_file()
    stored = json.loads((out / "metrics.json").read_text())
    best_ae = load_checkpoint(out / "ae" / "checkpoints" / "best.pt")
    assert stored["autoencoder"]["val"]["miou"] == best_ae["metrics"]["val/miou"]
    assert stored["autoencoder"]["best_epoch"] == best_ae["best_epoch"]
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
    assert "reconstruction mIoU" in report and "zoomout_densenet67" in report and "queries.png" in report \
        and "weak_points.png" in report
    assert f"| reconstruction mIoU (val) | {100 * stored['autoencoder']['val']['miou']:.1f} |" in report
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
    with Image.open(out / "depth_predictions.png") as picture:
        assert picture.width >= 900 and picture.height >= 300


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal's width


def test_help_says_what_the_demo_does(capsys):
    top = _help(["--help"], capsys)
    assert "``" not in top and top.startswith("usage: labelreg")
    demo_line = top[top.index(" demo "):]
    demo_line = demo_line[:demo_line.index(" study ")]
    for stage in ("synthetic", "autoencoder", "regularized segmenters", "depth", "queries", "weak supervision",
                  "report"):
        assert stage in demo_line, stage
    demo = _help(["demo", "--help"], capsys)
    assert "every stage's config" in demo and "autoencoder config" not in demo
    listed = demo[demo.index("metrics.json to --out:"):demo.index("positional arguments")].split()
    for stage in ("data", "ae", "seg", "seg_reg", "twopart", "single", "queries", "weak"):
        assert stage in listed, stage
    study = _help(["study", "--help"], capsys)
    assert "report.md" in study and "arm × seed" in study
