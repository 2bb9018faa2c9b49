"""Mixed batches in the two-part model: depth-only images never train a segmentation head (thesis §5.5.2)."""
from pathlib import Path

import pytest
import torch

import labelreg  # noqa: F401  (before torchvision)
from depth.task import build_model, make_forward, make_losses
from labelreg.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = ("model.options={backbone: densenet67, hidden: 16, backbone_options: {growth_rate: 8, "
        "block_config: [1, 1, 1, 1], stem_channels: [8, 8, 8]}}")
C = 5
SIZE = (32, 40)


def seg_head_parameters(model):
    return [p for part in (model.part1, model.part2) for p in part.heads["seg"].parameters()]


def mixed_batch(generator):
    """Two labeled images, then two depth-only ones (all labels 255)."""
    label = torch.randint(0, C, (4, *SIZE), generator=generator)
    label[2:] = 255
    return {"image": torch.randn(4, 3, *SIZE, generator=generator), "label": label,
            "depth": 0.5 + 4 * torch.rand(4, *SIZE, generator=generator)}


def trained_tiny_twopart(config, overrides=()):
    cfg = load_config(CONFIGS / config, [TINY, *overrides])
    torch.manual_seed(0)
    model = build_model(cfg, C).train()
    forward, losses = make_forward(cfg, C), make_losses(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):  # so part two's weights on part one's outputs are no longer zero
        batch = mixed_batch(generator)
        optimizer.zero_grad()
        sum(losses(forward(model, batch), batch).values()).backward()
        optimizer.step()
    conv0 = model.part2.backbone.features.conv0.weight
    assert conv0[:, 4:].abs().sum() > 0  # the class-probability channels are read
    return cfg, model, forward, losses, mixed_batch(generator)


def per_sample_seg_gradients(model, forward, losses, batch):
    """{(sample, term): summed |gradient| over both parts' segmentation heads} for one mixed-batch forward."""
    outputs = forward(model, batch)
    params = seg_head_parameters(model)
    result = {}
    for index in range(batch["image"].shape[0]):
        one_out = {k: v[index:index + 1] for k, v in outputs.items() if k != "features"}
        one_batch = {k: v[index:index + 1] for k, v in batch.items()}
        for term, value in losses(one_out, one_batch).items():
            grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
            result[index, term] = sum(0.0 if g is None else g.abs().sum().item() for g in grads)
    return result


@pytest.mark.parametrize("config", ["twopart-densenet121_nyu40.yaml", "twopart-densenet121-single_nyu40.yaml",
                                    "twopart-densenet121-single-2xseg_nyu40.yaml"])
def test_depth_only_samples_do_not_reach_segmentation_heads(config):
    cfg, model, forward, losses, batch = trained_tiny_twopart(config, ["model.pretrained_backbone=null"])
    assert cfg.model.freeze_bn  # the recipe's setting: no batch statistics couple the samples
    grads = per_sample_seg_gradients(model, forward, losses, batch)
    terms = {term for _, term in grads}
    assert "depth" in terms and "seg" in terms
    for (index, term), norm in grads.items():
        if index >= 2:  # depth-only: every term, depth ones included, leaves the segmentation heads alone
            assert norm == 0.0, (index, term, norm)
    for index in (0, 1):  # labeled: segmentation and depth terms reach them (depth through part two's input)
        assert grads[index, "seg"] > 0 and grads[index, "depth"] > 0


def test_depth_only_samples_still_train_depth_heads_and_backbones():
    cfg, model, forward, losses, batch = trained_tiny_twopart("demo/twopart-tiny_synth-nyu40.yaml")
    outputs = forward(model, batch)
    one_out = {k: v[3:] for k, v in outputs.items() if k != "features"}
    one_batch = {k: v[3:] for k, v in batch.items()}
    total = sum(losses(one_out, one_batch).values())
    model.zero_grad()
    total.backward()
    for module in (model.part1.backbone, model.part2.backbone, model.part1.heads["depth"], model.part2.heads["depth"]):
        assert sum(p.grad.abs().sum() for p in module.parameters() if p.grad is not None) > 0


def test_training_batchnorm_couples_the_samples():
    """What the README states: with BatchNorm in training mode (the demo's random-init backbones) a depth-only
    image's loss still moves the segmentation heads, through the batch statistics it shares with labeled images."""
    cfg, model, forward, losses, batch = trained_tiny_twopart("demo/twopart-tiny_synth-nyu40.yaml")
    assert not cfg.model.freeze_bn
    grads = per_sample_seg_gradients(model, forward, losses, batch)
    assert grads[3, "depth"] > 0


def test_plain_forward_is_the_labeled_path():
    cfg, model, forward, losses, batch = trained_tiny_twopart("demo/twopart-tiny_synth-nyu40.yaml")
    model.eval()
    with torch.no_grad():
        plain = model(batch["image"])
        mixed = forward(model, batch)
    for key in ("seg", "depth", "part1_seg", "part1_depth"):
        torch.testing.assert_close(plain[key], mixed[key])  # detaching changes gradients only
