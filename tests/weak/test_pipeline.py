"""``labelreg weak`` end to end on the tiny synthetic VOC layout: steps, files, adding a class, errors, demo."""
import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from labelreg.config import ConfigError, load_config
from labelreg.weak.cli import register
from labelreg.weak.demo import run_weak_demo
from labelreg.weak.pipeline import load_points

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "demo" / "weak-tiny_synth-voc.yaml")
SMALL = ["weak.image_size=[32,40]", "weak.feature_batch_size=4", "weak.loc_epochs=2", "weak.loc_milestones=[1]",
         "weak.loc_hidden=8", "weak.k=4", "weak.seg_hidden=8", "weak.seg_epochs=2", "weak.dense_epochs=1",
         "weak.cache_dtype=float16", "weak.pretrain_epochs=1", "weak.pretrain_batch_size=4"]


pytestmark = pytest.mark.usefixtures("one_thread")


def cli(*argv):
    """What ``labelreg`` does once ``register`` is wired in: parse, then run the chosen step."""
    parser = argparse.ArgumentParser(prog="labelreg")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["weak", *argv])
    args.run(args)


def overrides(root, out, *extra):
    return [f"data.root={root}", f"output_dir={out}", "name=tiny", *SMALL, *extra]


def test_run_writes_every_step_and_adding_a_class_trains_only_that_net(tiny_synthetic, tmp_path, capsys):
    cli("run", "--config", CONFIG, "--no-progress", *overrides(tiny_synthetic.root, tmp_path, "weak.classes=[9,11]"))
    run = tmp_path / "tiny"
    assert "run directory" in capsys.readouterr().out
    for name in ("config.yaml", "weak.log", "metrics.json", "pretrain/backbone.pt", "features/stats.pt",
                 "features/train_zoomout.npy",
                 "localization/summary.json", "points_diverse.npz", "head_points_diverse.pt", "head_dense.pt"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"pretrain", "features", "localize", "sample", "train"}  # SMALL turns pretraining on
    assert 0 <= metrics["train"]["points_diverse"]["miou"] <= 1 and 0 <= metrics["train"]["dense"]["miou"] <= 1
    tags = json.loads((run / "features" / "train.json").read_text())["tags"]
    points, grid = load_points(run / "points_diverse.npz")
    assert grid == (8, 10) and len(points) == len(tags)
    for image_tags, pts in zip(tags, points):
        assert set(pts[:, 2].tolist()) <= ({9, 11} & set(image_tags)) | {0}  # only localized, present classes
        assert (pts[:, 2] == 0).sum() == 4  # k background points
        for c in {9, 11} & set(image_tags):
            assert 1 <= (pts[:, 2] == c).sum() <= 4  # k, less any location another class scored higher
    assert metrics["sample"]["diverse"]["points"] == sum(len(p) for p in points)

    # add class 16: only its net is trained; the stored nets of 9 and 11 are not rewritten
    folder = run / "localization"
    before = {c: (folder / f"class_{c:02d}.pt").read_bytes() for c in (9, 11)}
    cli("localize", "--config", CONFIG, "--no-progress", "--classes", "16", *overrides(tiny_synthetic.root, tmp_path))
    assert {c: (folder / f"class_{c:02d}.pt").read_bytes() for c in (9, 11)} == before
    assert sorted(json.loads((folder / "summary.json").read_text())) == ["11", "16", "9"]
    cli("sample", "--config", CONFIG, "--no-progress", *overrides(tiny_synthetic.root, tmp_path))
    points, _ = load_points(run / "points_diverse.npz")
    assert any(16 in pts[:, 2] for pts in points)

    # a class's net depends only on its own examples and seed: retrained alone, it is the same net
    stored = torch.load(folder / "class_09.pt", weights_only=True)["state_dict"]
    (folder / "class_09.pt").unlink()
    cli("localize", "--config", CONFIG, "--no-progress", "--classes", "9", *overrides(tiny_synthetic.root, tmp_path))
    again = torch.load(folder / "class_09.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(stored[k], again[k]) for k in stored)
    assert (folder / "class_11.pt").read_bytes() == before[11]

    cli("train", "--config", CONFIG, "--no-progress", "--no-dense", *overrides(tiny_synthetic.root, tmp_path))
    assert "dense" in json.loads((run / "metrics.json").read_text())["train"]  # the earlier entry is kept
    assert "point-supervised" in (run / "weak.log").read_text()


def test_steps_fail_clearly_on_bad_input(tiny_synthetic, tmp_path):
    args = overrides(tiny_synthetic.root, tmp_path)
    with pytest.raises(FileNotFoundError, match=r"features/train.json not found.*weak features"):
        cli("localize", "--config", CONFIG, *args)
    with pytest.raises(ConfigError, match="weak.sampler"):
        cli("sample", "--config", CONFIG, *args, "weak.sampler=random")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['kk'\] in section 'weak'"):
        cli("run", "--config", CONFIG, *args, "weak.kk=3")
    wrong_task = tmp_path / "wrong.yaml"
    wrong_task.write_text("task: segmentation\n")
    with pytest.raises(ConfigError, match="task: weak"):
        cli("features", "--config", str(wrong_task))
    with pytest.raises(FileNotFoundError, match=r"pretrain/backbone.pt not found.*weak pretrain"):
        cli("features", "--config", CONFIG, "--no-progress", *args)
    cli("pretrain", "--config", CONFIG, "--no-progress", *args)
    cli("features", "--config", CONFIG, "--no-progress", *args)
    with pytest.raises(FileNotFoundError, match="no localization nets"):
        cli("sample", "--config", CONFIG, "--no-progress", *args)
    with pytest.raises(ValueError, match=r"classes \[5\] \(bottle\) are not tagged"):
        cli("localize", "--config", CONFIG, "--no-progress", "--classes", "5", *args)
    with pytest.raises(ConfigError, match="not foreground classes"):
        cli("localize", "--config", CONFIG, "--no-progress", "--classes", "0", *args)
    with pytest.raises(FileNotFoundError, match="points_diverse.npz not found"):
        cli("train", "--config", CONFIG, "--no-progress", *args)
    with pytest.raises(SystemExit, match="^2$"):  # argparse's usage error: a step is required
        cli("--config", CONFIG)


def test_demo_hook(tiny_synthetic, tmp_path):
    result = run_weak_demo(tmp_path / "demo", Path(tiny_synthetic.root), SMALL)
    assert result["figure"].is_file() and result["figure"].suffix == ".png" and result["seconds"] > 0
    metrics = result["metrics"]
    assert 0 <= metrics["point_miou"] <= 1 and 0 <= metrics["dense_miou"] <= 1 and metrics["points_per_image"] > 0
    assert set(metrics["samplers"]) == {"diverse", "topk", "spatial", "dense"}
    assert metrics["pretrain"]["epochs"] == 1 and 0 <= metrics["pretrain"]["val_map"] <= 1
    assert set(metrics["step_seconds"]) == {"pretrain", "features", "localize", "sample", "train"}
    assert metrics["samplers"]["dense"]["points_per_image"] == 80  # every location of the 8×10 grid
    stored = json.loads((tmp_path / "demo" / "weak" / "demo.json").read_text())
    assert stored["point_miou"] == metrics["point_miou"] and np.isfinite(stored["seconds"])
    # the compared samplers do not leave their setting in the run's record (the demo report reads it back)
    assert load_config(tmp_path / "demo" / "weak" / "config.yaml").weak.sampler == metrics["sampler"] == "diverse"


def test_thesis_config_is_the_chapter_4_setup():
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "weak" / "zoomout-vgg16_voc12_weak.yaml")
    weak = cfg.weak
    assert cfg.task == "weak" and cfg.data.train_split == "trainaug" and cfg.data.val_split == "val"
    assert weak.backbone == "vgg16" and weak.pretrained.endswith(".pth") and weak.taps is None
    assert weak.image_size == [256, 336] and weak.grid_stride == 4 and weak.global_feature
    assert (weak.loc_loss, weak.loc_hidden, weak.loc_lr, weak.loc_epochs, weak.loc_milestones, weak.loc_batch_size) == \
        ("global_softmax", 1024, 1e-4, 3, [2], 1)
    assert (weak.sampler, weak.k) == ("diverse", 20)
    assert (weak.seg_hidden, weak.seg_lr, weak.seg_epochs, weak.seg_batch_size) == (512, 1e-6, 2, 100)
