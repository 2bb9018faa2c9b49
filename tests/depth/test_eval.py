"""NYUv2 evaluation protocol: the model reads the training resolution, metrics use the full-size ground truth."""
import math

import pytest
import torch
from torch import nn

from depth.task import evaluate_depth, make_forward
from labelreg.config import ConfigError, config_from_dict
from labelreg.data.build import build_augmentations

C = 3
GT = (16, 24)
TRAIN = (8, 12)


class Recorder(nn.Module):
    """Constant 2 m depth and class-1 logits at its input size; remembers the sizes it was given."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def forward(self, x, labeled=None):
        self.sizes.append(tuple(x.shape[-2:]))
        b, _, h, w = x.shape
        seg = torch.zeros(b, C, h, w)
        seg[:, 1] = 1.0
        return {"depth": torch.full((b, 1, h, w), 2.0), "seg": seg, "part1_seg": seg,
                "part1_depth": torch.full((b, 1, h, w), 2.0), "features": {}}


def cfg_for(**depth):
    return config_from_dict({"task": "depth", "model": {"name": "twopart_densenet121"},
                             "data": {"dataset": "nyu", "crop_size": list(TRAIN), "eval_size": None},
                             "depth": depth})


def batches():
    depth = torch.linspace(0.5, 6.0, GT[0] * GT[1]).view(1, *GT).repeat(2, 1, 1)
    depth[1, :4] = 0  # invalid
    label = torch.ones(2, *GT, dtype=torch.long)
    label[:, :, :6] = 2
    return [{"image": torch.randint(0, 256, (2, 3, *GT), dtype=torch.uint8), "label": label, "depth": depth,
             "name": ["a", "b"], "size": torch.tensor([GT, GT])}], depth, label


def run(cfg, capsys):
    model = Recorder()
    loader, depth, label = batches()
    _, eval_augment = build_augmentations(cfg.data)
    metrics = evaluate_depth(model, loader, torch.device("cpu"), cfg=cfg, num_classes=C, preprocess=eval_augment,
                             forward=make_forward(cfg, C), class_names=["a", "b", "c"])
    return model, metrics, depth, label, capsys.readouterr().out


def test_default_protocol_reads_training_size_and_scores_full_ground_truth(capsys):
    cfg = cfg_for()
    assert cfg.depth.eval_protocol == "train_size"
    model, metrics, depth, label, printed = run(cfg, capsys)
    assert model.sizes == [TRAIN]
    valid = depth > 0
    rmse = math.sqrt(((depth[valid] - 2.0) ** 2).mean().item())  # every full-size valid pixel counts
    assert metrics["pixel_rmse"] == pytest.approx(rmse, rel=1e-5)
    assert metrics["pixel_acc"] == pytest.approx((label == 1).float().mean().item())  # seg argmax at full size
    assert (metrics["protocol/input_height"], metrics["protocol/input_width"]) == TRAIN
    assert (metrics["protocol/target_height"], metrics["protocol/target_width"]) == GT
    assert "train_size" in printed and "8×12" in printed and "16×24" in printed


def test_full_protocol_reads_the_evaluation_image(capsys):
    model, metrics, depth, _, printed = run(cfg_for(eval_protocol="full"), capsys)
    assert model.sizes == [GT]
    assert (metrics["protocol/input_height"], metrics["protocol/input_width"]) == GT and "full" in printed
    valid = depth > 0
    assert metrics["pixel_rmse"] == pytest.approx(math.sqrt(((depth[valid] - 2.0) ** 2).mean().item()), rel=1e-5)


def test_unknown_protocol(capsys):
    with pytest.raises(ConfigError, match="eval_protocol"):
        run(cfg_for(eval_protocol="half"), capsys)
