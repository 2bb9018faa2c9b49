"""Zoom-out feature normalisation in the two-part model (thesis §5.4.1): option, calibration, recipes, resume."""
from pathlib import Path

import pytest
import torch

import labelreg  # noqa: F401  (before torchvision)
from labelreg.cli import main
from labelreg.config import load_config
from labelreg.models.zoomout import grid_size
from labelreg.storage import load_checkpoint
from tests.depth.test_models import tiny_twopart  # the same tiny two-part model

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SIZE = (32, 40)


def heads(model):
    return [part.heads[task] for part in (model.part1, model.part2) for task in ("seg", "depth")]


def normalised_features(part, x):
    taps = part.backbone(x)
    head = part.heads["seg"]
    features = head.concatenated_features(taps, grid_size(x.shape[-2:], part.grid_stride))
    return (features - head.feature_mean[:, None, None]) / head.feature_std[:, None, None]


def test_normalisation_is_an_option_off_by_default_and_on_in_the_imagenet_recipes():
    assert not any(head.normalize for head in heads(tiny_twopart()))
    assert all(head.normalize for head in heads(tiny_twopart(normalize=True)))
    for config in sorted(CONFIGS.glob("twopart-*.yaml")):
        cfg = load_config(config)
        assert cfg.model.pretrained_backbone == "imagenet" and cfg.model.options.get("normalize") is True, config
    for config in sorted((CONFIGS / "demo").glob("twopart-*.yaml")):  # random-init tiny backbones: off
        assert not load_config(config).model.options.get("normalize", False), config


def test_calibration_standardises_both_parts_features():
    torch.manual_seed(0)
    model = tiny_twopart(normalize=True).train()
    with torch.no_grad():  # part two reads part one's outputs, so its statistics depend on them
        model.part2.backbone.features.conv0.weight.normal_()
    images = [torch.randn(3, 3, *SIZE) * 2 + 1 for _ in range(2)]
    model.calibrate(images)
    assert model.training  # restored
    for part in (model.part1, model.part2):  # both heads of a part read the same taps: the same statistics
        torch.testing.assert_close(part.heads["seg"].feature_mean, part.heads["depth"].feature_mean)
        torch.testing.assert_close(part.heads["seg"].feature_std, part.heads["depth"].feature_std)
    model.eval()
    with torch.no_grad():
        first = [model.part1(x) for x in images]
        part2_inputs = [model.part2_input(x, out["depth"], out["seg"]) for x, out in zip(images, first)]
        for part, inputs in ((model.part1, images), (model.part2, part2_inputs)):
            features = torch.cat([normalised_features(part, x) for x in inputs]).double()
            per_channel = features.transpose(0, 1).flatten(1)
            live = part.heads["seg"].feature_std > 0.1  # var ≫ eps (1e-5); dead channels (after a ReLU) stay 0
            assert live.float().mean() > 0.5
            assert per_channel.mean(1).abs().max() < 1e-4
            torch.testing.assert_close(per_channel[live].std(1, unbiased=False),
                                       torch.ones(int(live.sum()), dtype=torch.float64), atol=1e-3, rtol=0)
        assert not torch.equal(model.part2.heads["seg"].feature_mean, torch.zeros_like(model.part2.heads["seg"].feature_mean))


def test_training_calibrates_once_and_resume_keeps_the_statistics(tiny_synthetic, tmp_path, capsys):
    config = str(CONFIGS / "demo" / "twopart-tiny_synth-nyu40.yaml")
    args = [f"data.root={tiny_synthetic.root}", f"output_dir={tmp_path}", "name=norm", "data.crop_size=[32,48]",
            "data.eval_size=[32,48]", "data.batch_size=4", "data.eval_batch_size=4", "data.num_workers=0",
            "depth.mixed_epochs=0", "model.calibration_batches=2", "train.eval_every=5",
            "model.options={backbone: densenet67, hidden: 16, normalize: true, backbone_options: {growth_rate: 8, "
            "block_config: [1, 1, 1, 1], stem_channels: [8, 8, 8]}}"]
    assert main(["train-depth", "--config", config, *args, "train.epochs=1"]) == 0
    assert "feature normalisation estimated from 2 batches" in capsys.readouterr().out
    last = tmp_path / "norm" / "checkpoints" / "last.pt"
    before = {k: v for k, v in load_checkpoint(last)["model"].items() if k.endswith(("feature_mean", "feature_std"))}
    assert len(before) == 8 and not torch.equal(before["part2.heads.seg.feature_std"],
                                                torch.ones_like(before["part2.heads.seg.feature_std"]))
    assert main(["train-depth", "--config", config, *args, "train.epochs=2", "--resume"]) == 0
    assert "feature normalisation estimated" not in capsys.readouterr().out
    after = load_checkpoint(last)
    assert after["epoch"] == 2
    for key, value in before.items():
        assert torch.equal(after["model"][key], value), key


@pytest.mark.parametrize("normalize", [False, True])
def test_forward_matches_the_literal_form(normalize):
    torch.manual_seed(0)
    model = tiny_twopart(normalize=normalize).eval()
    x = torch.randn(2, 3, *SIZE)
    if normalize:
        model.calibrate([x])
    with torch.no_grad():
        taps = model.part1.backbone(x)
        grid = grid_size(SIZE, model.part1.grid_stride)
        for head in model.part1.heads.values():
            torch.testing.assert_close(head(taps, grid), head.forward_literal(taps, grid), atol=1e-4, rtol=1e-4)
