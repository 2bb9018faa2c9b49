"""Label-space queries from checkpoints: through the CLI, and docs/queries.md's Python example."""
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from labelreg.cli import main
from labelreg.config import load_config, to_dict
from labelreg.data.synthetic import write_synthetic_dataset
from labelreg.data.voc import VOCSegmentation
from labelreg.models import LabelAutoencoder
from labelreg.storage import load_checkpoint, save_checkpoint
from labelreg.tasks.segmentation import build_model

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


# ---------------------------------------------------------------------------- through the CLI
def write_checkpoints(root, out):
    """A phase-one autoencoder and a decoder-regularized tiny segmenter, saved as train-ae / train-seg do."""
    tiny = ["data.dataset=voc", "data.val_split=val", f"data.root={root}", f"output_dir={out}"]
    ae_cfg = load_config(CONFIGS / "demo" / "ae-128_synth-nyu40.yaml", [*tiny, "name=ae", "model.variant=32"])
    torch.manual_seed(0)
    autoencoder = LabelAutoencoder(21, "32")
    ae_path = ae_cfg.run_dir / "checkpoints" / "best.pt"
    save_checkpoint(ae_path, {"model": autoencoder.state_dict(), "config": to_dict(ae_cfg)})
    seg_cfg = load_config(CONFIGS / "demo" / "zoomout-densenet67-tiny_dec128_synth-nyu40.yaml",
                          [*tiny, "name=seg", f"regularizer.autoencoder={ae_path}", "model.options.hidden=16"])
    model = build_model(seg_cfg, 21)
    seg_path = seg_cfg.run_dir / "checkpoints" / "best.pt"
    save_checkpoint(seg_path, {"model": model.state_dict(), "config": to_dict(seg_cfg)})
    return ae_path, seg_path


def test_cli_queries_from_labels_and_from_images_on_a_voc_layout(tiny_synthetic, tmp_path, capsys):
    ae_path, seg_path = write_checkpoints(tiny_synthetic.root, tmp_path / "runs")
    train_ids = VOCSegmentation(tiny_synthetic.root, "train").ids
    out = tmp_path / "q"
    assert main(["query", "--autoencoder", str(ae_path), "--image", train_ids[0], "--box", "16,16,48,64",
                 "--k", "2", "--json", str(out / "labels.json"), "--figure", str(out / "labels.png")]) == 0
    printed = capsys.readouterr().out
    assert (out / "labels.png").is_file()
    record = json.loads((out / "labels.json").read_text())
    assert record["reference_split"] == "val" and record["reference_from"] == "labels"
    matches = record["results"][0]["matches"]
    assert len(matches) == 2 and matches[0]["distance"] <= matches[1]["distance"]
    ranked = [line.split() for line in printed.splitlines() if line.strip().startswith(("1 ", "2 "))]
    assert [(row[1], float(row[3])) for row in ranked] == [(m["image_id"], round(m["distance"], 4)) for m in matches]
    assert record["results"][0]["box"] == [16, 16, 48, 64] and record["results"][0]["cells"] == [1, 1, 3, 4]
    assert list((ae_path.parents[1] / "index").glob("labels-*/index.json"))  # kept next to the checkpoint

    # --json elsewhere without --figure: the picture goes next to the JSON (as --help says), not into the run
    elsewhere = tmp_path / "elsewhere"
    assert main(["query", "--autoencoder", str(ae_path), "--image", train_ids[0], "--json",
                 str(elsewhere / "mine.json")]) == 0
    assert sorted(path.name for path in elsewhere.iterdir()) == ["mine.json", "mine.png"]
    assert not (ae_path.parents[1] / "queries").exists()

    # from an image, searching its own split: the query's own image never comes back
    assert main(["query", "--segmenter", str(seg_path), "--image", "0", "--reference-split", "train", "--k", "3",
                 "--json", str(out / "images.json"), "--figure", str(out / "images.png")]) == 0
    record = json.loads((out / "images.json").read_text())
    assert record["reference_from"] == "images" and len(record["results"][0]["matches"]) == 3
    assert train_ids[0] not in [m["image_id"] for m in record["results"][0]["matches"]]
    assert (out / "images.png").is_file()

    # the same figure coloured by the segmenter's predictions instead of the ground truth
    assert main(["query", "--segmenter", str(seg_path), "--image", "0", "--reference-split", "train", "--k", "3",
                 "--overlay", "predictions", "--json", str(out / "pred.json"), "--figure", str(out / "pred.png")]) == 0
    with Image.open(out / "images.png") as truth, Image.open(out / "pred.png") as predicted:
        # the same grid (the legends under it list the classes each shows, so the heights may differ)
        assert truth.width == predicted.width and not np.array_equal(np.asarray(truth), np.asarray(predicted))


def test_cli_query_errors_are_clear(tiny_synthetic, tmp_path, capsys):
    ae_path, seg_path = write_checkpoints(tiny_synthetic.root, tmp_path / "runs")
    assert main(["query", "--image", "0"]) == 2
    assert "--autoencoder" in capsys.readouterr().err
    assert main(["query", "--autoencoder", str(ae_path), "--image", "no_such_id"]) == 2
    assert "no_such_id" in capsys.readouterr().err
    assert main(["query", "--autoencoder", str(ae_path), "--image", "0", "--class", "aeroplane_xyz"]) == 2
    assert "not a class" in capsys.readouterr().err
    assert main(["query", "--autoencoder", str(ae_path), "--image", "0", "--box", "0,0,16,9999"]) == 2
    assert "<= " in capsys.readouterr().err  # the box must lie inside the query image
    assert not (ae_path.parents[1] / "index").exists()  # all refused before an index was built
    assert main(["query", "--segmenter", str(ae_path), "--image", "0"]) == 2
    assert (f"{ae_path} is an autoencoder checkpoint (task=autoencoder); --segmenter wants a segmentation checkpoint"
            in capsys.readouterr().err)
    plain = ae_path.parent / "plain.pt"  # a segmenter without the decoder branch predicts no code to search with
    save_checkpoint(plain, {**load_checkpoint(seg_path), "config": {**load_checkpoint(seg_path)["config"],
                                                                    "regularizer": {"kind": "none"}}})
    assert main(["query", "--segmenter", str(plain), "--image", "0"]) == 2
    assert "regularizer.kind=decoder" in capsys.readouterr().err
    assert main(["query", "--segmenter", str(seg_path), "--image", "0", "--reference-from", "labels"]) == 2
    assert "--autoencoder" in capsys.readouterr().err
    assert main(["query", "--autoencoder", str(ae_path), "--image", "0", "--overlay", "predictions"]) == 2
    assert "--overlay predictions needs --segmenter" in capsys.readouterr().err


# ---------------------------------------------------------------------------- the documented example
README = Path(__file__).resolve().parents[2] / "docs" / "queries.md"


def readme_python_example(section: str = "## Label-space queries") -> str:
    """The fenced Python block of docs/queries.md's section on label-space queries."""
    text = README.read_text()
    start = text.index(section)
    end = text.find("\n## ", start + len(section))
    body = text[start:end if end >= 0 else len(text)]
    opening = body.index("```python\n") + len("```python\n")
    return body[opening:body.index("```", opening)]


def test_the_readme_python_example_runs(tmp_path, capsys, monkeypatch):
    # the example runs as printed, from a folder laid out like the repository after `make demo`:
    # the demo's configs, its synthetic data (a few scenes at the demo's 128×160) and a phase-one checkpoint
    example = readme_python_example()
    assert "label_source(" in example and "runs/demo/ae/checkpoints/best.pt" in example
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(CONFIGS)
    write_synthetic_dataset(tmp_path / "data" / "synthetic", labeled=6, depth_only=1, size=(128, 160), seed=0,
                            progress=False)
    cfg = load_config(CONFIGS / "demo" / "ae-128_synth-nyu40.yaml", ["model.variant=32"])
    torch.manual_seed(0)
    checkpoint = tmp_path / "runs" / "demo" / "ae" / "checkpoints" / "best.pt"
    save_checkpoint(checkpoint, {"model": LabelAutoencoder(40, "32").state_dict(), "config": to_dict(cfg)})

    exec(compile(example, str(README), "exec"), {})

    printed = capsys.readouterr().out.splitlines()
    header = next(number for number, line in enumerate(printed) if line.startswith("query nyu_0003 box "))
    ranked = [line.split() for line in printed[header + 2:] if line.strip()]
    assert [row[0] for row in ranked] == ["1", "2"]  # k=2 matches, nearest first, from the test split
    assert {row[1] for row in ranked} <= {"nyu_0002", "nyu_0004"} and float(ranked[0][3]) <= float(ranked[1][3])
    assert list((checkpoint.parents[1] / "index").glob("labels-*/index.json"))  # kept next to the checkpoint
    with Image.open(tmp_path / "query.png") as picture:
        assert picture.width > 3 * 150
