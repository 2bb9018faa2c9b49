"""The demo's whole path, shrunk to seconds: ``labelreg demo`` through the command line (data generation,
phase one, phase two, joint depth, queries, weak supervision), its report and metrics, and its help text."""
import json
import re

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


def demo(root, *argv) -> int:
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        return main(["demo", *argv])


def test_cli_demo_runs_every_stage(demo_run):
    code, out = demo_run
    assert code == 0
    stored = json.loads((out / "metrics.json").read_text())
    assert list(stored["seconds"]) == ["data", "train_ae", "train_seg", "train_seg_reg", "train_twopart",
                                       "train_single", "queries", "weak", "total"]
    for stage in TRAINED:
        assert (out / stage / "config.yaml").is_file(), stage
    report = (out / "report.md").read_text()
    table = report[report.index("| stage |"):report.index("## Phase one")]  # the results table: one row per stage
    for row in ("| phase one: autoencoder-", "| baseline: zoomout_densenet67 (tiny, ", "| phase two: same + ",
                "| depth: tiny two-part model ", "| depth: single-part baseline ", "| weak supervision: tags → ",
                "| time | data / autoencoder / baseline / regularized / two-part / single-part / queries / weak "
                "/ total"):
        assert row in table, row
    headings = [line for line in report.splitlines() if line.startswith("## ")]
    assert headings == ["## Phase one: label autoencoder", "## Phase two: the decoder as a regularizer",
                        "## Joint depth and segmentation", "## Label-space queries",
                        "## Weak supervision from image tags", "## Provenance"]
    assert "$" not in report and "<!--" not in report  # every template field filled, no section markers


def test_demo_writes_report(demo_run):
    _, out = demo_run
    for name in ("report.md", "metrics.json", "ae_reconstructions.png", "ae_curves.png", "seg_predictions.png",
                 "seg_curves.png", "depth_predictions.png", "queries.png", "queries.json", "weak_points.png"):
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
    assert " demo every stage on synthetic scenes, with a report in runs/demo study " in top
    demo = _help(["demo", "--help"], capsys)
    listed = demo[demo.index("metrics.json to --out:"):demo.index("positional arguments")].split()
    for stage in ("data", "ae", "seg", "seg_reg", "twopart", "single", "queries", "weak"):
        assert stage in listed, stage
    for option in ("--stages A,B", "--skip A,B", "--fresh, --overwrite", "--no-progress", "every stage's config that reads the "
                   "section", "STAGE:section.key=value", "reads back the stages that finished with the same config"):
        assert option in demo, option


def test_demo_records_provenance_and_says_it_was_reduced(demo_run):
    _, out = demo_run
    stored = json.loads((out / "metrics.json").read_text())
    provenance = stored["provenance"]
    assert provenance["overrides"] == TINY and provenance["command"][:2] == ["labelreg", "demo"]
    commit = provenance["code"]["commit"]
    assert commit == "unknown" or re.fullmatch("[0-9a-f]{40}", commit)
    assert {"cpu", "cores", "torch", "bf16_native_cpu", "amp_auto"} <= set(provenance["machine"])
    assert set(provenance["configs"]) == set(TRAINED)
    for stage in ("ae", "seg", "seg_reg", "twopart", "single"):
        assert provenance["configs"][stage]["train"]["epochs"] == 1, stage
        assert provenance["status"][stage] == "trained"
    # train.epochs=1 shortened the weak stage too (its recipe: 6 / 5 / 10 epochs)
    weak = provenance["configs"]["weak"]["weak"]
    assert (weak["loc_epochs"], weak["seg_epochs"], weak["dense_epochs"]) == (1, 1, 1)
    assert stored["weak"]["epochs"]["loc_epochs"] == 1
    assert "fewer epochs than the recipe: ae train.epochs 1/55;" in " ".join(provenance["reduced"])
    report = (out / "report.md").read_text()
    assert report.startswith("> **Reduced run — not the demo's recipe.** overrides `data.synth_labeled=8`")
    section = report[report.index("## Provenance"):]
    assert f"commit `{commit}`" in section and "train.epochs=1 → ae, seg, seg_reg, twopart, single, weak" in section
    assert "<details><summary>seg_reg</summary>" in section and "regularizer:" in section


def test_a_rerun_reads_back_the_stages_that_finished_with_the_same_config(demo_run, capsys):
    _, out = demo_run
    weights = {stage: (out / stage / "checkpoints" / "best.pt").read_bytes() for stage in TRAINED[:-1]}
    assert demo(out.parent, "--out", str(out), "--data", str(out.parent / "data"), "--skip", "queries,weak",
                *TINY) == 0
    printed = capsys.readouterr().out
    status = json.loads((out / "metrics.json").read_text())["provenance"]["status"]
    for stage in TRAINED[:-1]:
        assert status[stage] == "finished earlier, same config", stage
        assert f"{stage}: finished earlier with the same config in {out / stage}; read back" in printed
        assert (out / stage / "checkpoints" / "best.pt").read_bytes() == weights[stage]  # not trained again
    assert status["weak"] == "not run now: an earlier run's output" and "queries" not in status
    report = (out / "report.md").read_text()
    assert "stages not run now: queries, weak" in report.splitlines()[0] and "## Label-space queries" not in report


def test_the_demo_never_writes_into_or_deletes_a_folder_it_did_not_make(demo_run, tmp_path, capsys):
    """Issue 22 D2: a user's copied run in <out>/seg and their notes in <out> survive `labelreg demo --out`."""
    _, fixture_out = demo_run
    out = tmp_path / "mine"
    (out / "seg" / "checkpoints").mkdir(parents=True)
    (out / "seg" / "checkpoints" / "best.pt").write_bytes((fixture_out / "seg/checkpoints/best.pt").read_bytes())
    (out / "seg" / "config.yaml").write_text((fixture_out / "seg" / "config.yaml").read_text())
    (out / "seg" / "NOTES.txt").write_text("my notes\n")
    (out / "notes.txt").write_text("unrelated\n")
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    data = ["--data", str(fixture_out.parent / "data")]
    assert demo(tmp_path, "--out", str(out), *data, "--stages", "seg", *TINY) == 2
    error = capsys.readouterr().err.strip()
    assert error == (f"labelreg demo: error: {out / 'seg'} is not an earlier output of labelreg demo (no "
                     ".labelreg-demo-stage in it), so the demo will not write or delete anything there; choose "
                     "another --out, or --skip seg")
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before  # nothing written
    assert demo(tmp_path, "--out", str(out), *data, "--stages", "data", *TINY) == 0  # beside them: untouched
    assert all(path.read_bytes() == content for path, content in before.items())
    assert json.loads((out / "metrics.json").read_text())["provenance"]["status"]["seg"] == "not run"
