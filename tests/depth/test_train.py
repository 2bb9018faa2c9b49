"""Depth training end to end on tiny synthetic data: CLI, loss variants, balancing, phases, outputs."""
import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import depth.task
from depth.io import MILLIMETRES, colorize_depth, save_depth_png
from depth.task import DEPTH_TASK, checkpoint_num_classes, loss_terms, make_dynamic_weights
from labelreg.cli import main
from labelreg.config import config_from_dict
from labelreg.storage import load_checkpoint
from labelreg.tasks import TASKS, model_from_checkpoint

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

TINY = ("model.options={backbone: densenet67, hidden: 16, backbone_options: {growth_rate: 8, "
        "block_config: [1, 1, 1, 1], stem_channels: [8, 8, 8]}}")


def overrides(synthetic, out, name="tiny"):
    return [f"data.root={synthetic.root}", f"output_dir={out}", f"name={name}", "data.crop_size=[32,48]",
            "data.batch_size=4", "data.eval_batch_size=4", "train.log_every=1", "data.num_workers=0",
            f"depth.depth_only={synthetic.depth_only_dir}", "data.eval_size=[32,48]"]


def read_depth_png(path):
    """A saved depth PNG back in metres (16-bit millimetres, 0 = invalid)."""
    with Image.open(path) as picture:
        assert picture.mode == "I;16"
        return np.asarray(picture).astype(np.float32) / MILLIMETRES


def test_two_part_training_with_mixed_phases_and_evaluation(tiny_synthetic, tmp_path, capsys, monkeypatch):
    config = str(CONFIGS / "demo" / "twopart-tiny_synth-nyu40.yaml")
    args = overrides(tiny_synthetic, tmp_path) + [TINY, "train.epochs=3", "train.eval_every=3",
                                                  "depth.mixed_epochs=2", "depth.depth_only_limit=null"]
    # which samples the training loader yields in each epoch: (epoch, [sample["labeled"] per sample]) per batch
    epochs, batches = [], []
    set_epoch, collate = depth.task.PhasedBatchSampler.set_epoch, depth.task.pad_collate

    def recording_set_epoch(self, epoch):
        epochs.append(epoch)
        set_epoch(self, epoch)

    def recording_collate(samples):
        batches.append((epochs[-1] if epochs else None, [bool(sample["labeled"]) for sample in samples]))
        return collate(samples)

    monkeypatch.setattr(depth.task.PhasedBatchSampler, "set_epoch", recording_set_epoch)
    monkeypatch.setattr(depth.task, "pad_collate", recording_collate)
    assert main(["train-depth", "--config", config, *args]) == 0
    printed = capsys.readouterr().out
    assert "3 depth-only frames for 2 epochs" in printed
    assert list(dict.fromkeys(epochs)) == [0, 1, 2]  # in order (set by the engine, maybe more than once)
    for epoch in (0, 1, 2):
        flags = [flag for seen, batch in batches if seen == epoch for flag in batch]
        assert flags, epoch
        if epoch < 2:  # mixed phase: every batch has its 2 labeled images first, then depth-only frames
            assert all(batch[:2] == [True, True] and not any(batch[2:]) for seen, batch in batches if seen == epoch)
        else:  # labeled-only phase: no depth-only frame any more
            assert all(flags), epoch
    last = load_checkpoint(tmp_path / "tiny" / "checkpoints" / "last.pt")
    history = last["history"]
    assert [entry["epoch"] for entry in history] == [1, 2, 3]
    # the one rebuild-from-checkpoint function, with depth's entry merged in: 40 classes read off the weights
    model = model_from_checkpoint(last, table={**TASKS, "depth": DEPTH_TASK})
    assert model.num_classes == 40 and model.part1.backbone.features.conv0.in_channels == 3
    for key, value in model.state_dict().items():
        assert torch.equal(value, last["model"][key]), key
    # evaluation neither reads model.pretrained_backbone (nothing is downloaded) nor edits the loaded config
    cfg = config_from_dict(last["config"], ["model.pretrained_backbone=imagenet"])
    before = copy.deepcopy(cfg)
    metrics = DEPTH_TASK.evaluate_checkpoint(cfg, last, cfg.data.val_split)
    assert metrics["pixel_rmse"] == pytest.approx(history[-1]["val/pixel_rmse"], rel=1e-5) and cfg == before
    capsys.readouterr()
    terms = ["depth", "seg", "part1_depth", "part1_seg"]
    assert all(f"train/{term}" in history[0] and f"weight/{term}" in history[0] for term in terms)
    assert all(history[0][f"weight/{term}"] == 1.0 for term in terms)  # nothing to balance with yet
    # from epoch 2 on every term contributes equally: weight × previous average is the same for all
    contributions = [history[1][f"weight/{t}"] * history[0][f"train/{t}"] for t in terms]
    assert max(contributions) == pytest.approx(min(contributions), rel=1e-6)
    final = history[-1]
    assert {"val/pixel_rmse", "val/image_rmse", "val/pixel_delta1", "val/miou"} <= set(final)

    out = tmp_path / "predictions"
    assert main(["eval", "--checkpoint", str(tmp_path / "tiny" / "checkpoints" / "last.pt"),
                 "--save-predictions", str(out)]) == 0
    report = capsys.readouterr().out
    assert "pixel_rmse" in report and "miou" in report and "Eigen crop off" in report
    pngs = sorted(out.glob("nyu_*[0-9].png"))
    assert pngs and (out / f"{pngs[0].stem}_preview.png").is_file()
    assert read_depth_png(pngs[0]).shape == (32, 48)


@pytest.mark.parametrize("inputs,channels", [("seg", 40), ("rgb", 3), ("seg+rgb", 43)])
def test_seg_to_depth_trains(tiny_synthetic, tmp_path, inputs, channels):
    config = str(CONFIGS / "seg2depth-resnet50-segrgb_nyu40.yaml")
    args = overrides(tiny_synthetic, tmp_path) + ["train.epochs=1", "train.eval_every=1", f"depth.inputs={inputs}",
                                                  "model.pretrained_backbone=null", "data.val_limit=4"]
    assert main(["train-depth", "--config", config, *args]) == 0
    entry = json.loads((tmp_path / "tiny" / "metrics.json").read_text())["last"]
    assert entry["train/depth"] > 0 and "val/pixel_rmse" in entry and "val/miou" not in entry
    # the network read what depth.inputs names: one-hot NYU-40 labels, RGB, or both (thesis Table 5.5)
    checkpoint = load_checkpoint(tmp_path / "tiny" / "checkpoints" / "last.pt")
    assert checkpoint["model"]["backbone.conv1.weight"].shape[1] == channels
    cfg = config_from_dict(checkpoint["config"])
    assert cfg.depth.inputs == inputs
    assert checkpoint_num_classes(cfg, checkpoint["model"]) == (None if inputs == "rgb" else 40)


def test_loss_terms_of_each_baseline():
    def terms(**depth):
        return loss_terms(config_from_dict({"task": "depth", "model": {"name": "twopart_densenet121"},
                                            "depth": depth}))

    assert terms() == ["depth", "seg", "part1_depth", "part1_seg"]
    assert terms(supervision="final") == ["depth", "seg"]
    assert terms(supervision="final", seg_loss=False) == ["depth"]
    assert terms(supervision="final", depth_loss=False) == ["seg"]
    with pytest.raises(ValueError, match="nothing to train"):
        terms(seg_loss=False, depth_loss=False)


def test_two_x_segmentation_weight_on_top_of_balancing():
    cfg = config_from_dict({"task": "depth", "model": {"name": "twopart_densenet121"},
                            "depth": {"supervision": "final", "seg_weight": 2.0}})
    weights = make_dynamic_weights(cfg)
    assert weights([]) == {"depth": 1.0, "seg": 2.0}
    balanced = weights([{"train/depth": 2.0, "train/seg": 0.5}])
    assert balanced["depth"] * 2.0 * 2 == pytest.approx(balanced["seg"] * 0.5)  # seg counts twice


def test_depth_png_round_trip_and_preview(tmp_path):
    depth = torch.tensor([[0.0, 1.2345], [10.0, float("nan")]])
    path = save_depth_png(depth, tmp_path / "d.png")
    back = read_depth_png(path)
    assert back.dtype == np.float32 and back[0, 1] == pytest.approx(1.2345, abs=1e-3) and back[1, 1] == 0
    preview = colorize_depth(depth, 10.0)
    assert preview.shape == (2, 2, 3) and (preview[0, 0] == 0).all()
