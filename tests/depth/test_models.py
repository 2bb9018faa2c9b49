"""Depth / joint depth + segmentation models (depth.models; thesis §5.5, Tables 5.5 and 5.6)."""
import pytest
import torch

import labelreg  # noqa: F401  (before torchvision)
from depth.models import (DEPTH_MODELS, SegToDepth, TwoPartModel, ZoomOutMultiTask, adapt_input_channels,
                          build_depth_model, seg_to_depth_input)
from labelreg.models.backbones import build_backbone

TINY = {"growth_rate": 8, "block_config": [1, 1, 1, 1], "stem_channels": [8, 8, 8]}
C = 5
SIZE = (65, 81)


def tiny_twopart(**options):
    return build_depth_model("twopart_densenet121", num_classes=C, backbone="densenet67", backbone_options=TINY,
                             hidden=16, **options)


@pytest.fixture(scope="module")
def resnet_weights():
    """One random ResNet-50 state dict, so every SegToDepth test starts from the same 'pretrained' weights."""
    torch.manual_seed(0)
    return build_backbone("resnet50").state_dict()


def grad_norms(model, outputs, keys):
    """{parameter name: summed |gradient|} of every trainable parameter for the loss Σ mean(outputs[key])."""
    model.zero_grad(set_to_none=True)
    sum(outputs[key].float().mean() for key in keys).backward(retain_graph=True)
    return {name: 0.0 if p.grad is None else p.grad.abs().sum().item()
            for name, p in model.named_parameters() if p.requires_grad}


def _check_grads(model, outputs):
    """Every trainable parameter gets a non-zero gradient from the outputs (no dead, detached or unused part)."""
    norms = grad_norms(model, outputs, [key for key in outputs if key != "features"])
    assert norms
    dead = [name for name, norm in norms.items() if not norm > 0]
    assert not dead, dead


def _split(norms, prefix):
    """(norms of the parameters under ``prefix``, norms of the others)."""
    inside = {name: norm for name, norm in norms.items() if name.startswith(prefix)}
    return inside, {name: norm for name, norm in norms.items() if name not in inside}


def _check_groups(model):
    groups = model.param_groups()
    assert set(groups) == {"backbone", "head"} and groups["backbone"] and groups["head"]
    ids = [id(p) for group in groups.values() for p in group]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters()}


@pytest.mark.parametrize("inputs,channels", [("seg", C), ("rgb", 3), ("seg+rgb", C + 3)])
def test_seg_to_depth_shapes_grads_groups(inputs, channels, resnet_weights):
    torch.manual_seed(0)
    model = build_depth_model("seg2depth_resnet50", inputs=inputs, num_classes=C, pretrained_backbone=resnet_weights)
    assert isinstance(model, SegToDepth) and model.backbone.output_stride == 8
    image = torch.randn(2, 3, *SIZE)
    label = torch.randint(0, C, (2, *SIZE))
    x = model.make_input(image, label)
    assert x.shape == (2, channels, *SIZE)
    out = model(x)
    assert out["depth"].shape == (2, 1, *SIZE) and bool((out["depth"] > 0).all())
    assert out["features"]["layer4"].shape[-2:] == (9, 11)  # stride 8
    _check_grads(model, out)
    _check_groups(model)


def test_seg_to_depth_input_one_hot_and_ignore():
    image = torch.randn(1, 3, 2, 3)
    label = torch.tensor([[[0, 2, 255], [1, 1, 0]]])
    seg = seg_to_depth_input(None, label, 3, "seg")
    assert seg.shape == (1, 3, 2, 3)
    assert seg[0, :, 0, 2].eq(0).all()  # ignore → all zero
    assert seg[0, :, 0, 1].tolist() == [0, 0, 1] and seg.sum().item() == 5
    both = seg_to_depth_input(image, label, 3, "seg+rgb")
    assert torch.equal(both[:, :3], seg) and torch.equal(both[:, 3:], image)  # one-hot first, then RGB
    assert torch.equal(seg_to_depth_input(image, None, 3, "rgb"), image)
    with pytest.raises(ValueError, match="outside"):
        seg_to_depth_input(None, torch.full((1, 2, 2), 3), 3, "seg")
    with pytest.raises(ValueError, match="needs a label"):
        seg_to_depth_input(image, None, 3, "seg+rgb")
    with pytest.raises(ValueError, match="inputs must be"):
        seg_to_depth_input(image, label, 3, "depth")


@pytest.mark.parametrize("name,options", [("densenet67", TINY), ("resnet50", {})])
def test_adapt_input_channels_keeps_rgb_and_zero_inits_extras(name, options):
    torch.manual_seed(0)
    backbone = build_backbone(name, **options).eval()
    x = torch.randn(1, 3, 33, 41)
    with torch.no_grad():
        before = backbone(x)
    conv = backbone.features.conv0 if name == "densenet67" else backbone.conv1
    rgb = conv.weight.detach().clone()
    adapt_input_channels(backbone, 7, rgb_start=2)
    new = backbone.features.conv0 if name == "densenet67" else backbone.conv1
    assert new.in_channels == 7 and torch.equal(new.weight[:, 2:5], rgb)
    assert new.weight[:, :2].eq(0).all() and new.weight[:, 5:].eq(0).all()
    extra = torch.randn(1, 7, 33, 41)
    extra[:, 2:5] = x
    with torch.no_grad():
        after = backbone(extra)  # extra channels have zero weights: same outputs whatever they hold
    for tap in before:
        torch.testing.assert_close(after[tap], before[tap])


def test_adapt_input_channels_errors():
    with pytest.raises(ValueError, match="supports DenseNet and ResNet"):
        adapt_input_channels(build_backbone("vgg16"), 4)
    with pytest.raises(ValueError, match="do not fit"):
        adapt_input_channels(build_backbone("densenet67", **TINY), 4, rgb_start=2)


def test_multitask_shapes_and_in_channels():
    torch.manual_seed(0)
    model = ZoomOutMultiTask(build_backbone("densenet67", **TINY), C, in_channels=6, hidden=8)
    out = model(torch.randn(2, 6, *SIZE))
    assert out["seg"].shape == (2, C, *SIZE) and out["depth"].shape == (2, 1, *SIZE)
    assert bool((out["depth"] > 0).all()) and "block4" in out["features"]
    _check_grads(model, out)
    _check_groups(model)
    # the heads share only the backbone: each loss reaches its own head and the backbone, never the other head
    for task, other in (("seg", "depth"), ("depth", "seg")):
        norms = grad_norms(model, out, [task])
        others, rest = _split(norms, f"heads.{other}.")
        assert others and all(norm == 0.0 for norm in others.values()), task
        assert all(norm > 0 for norm in rest.values()), task


@pytest.mark.parametrize("depth_input", ["log", "scaled"])
def test_twopart_shapes_grads_groups(depth_input):
    torch.manual_seed(0)
    model = tiny_twopart(depth_input=depth_input)
    assert isinstance(model, TwoPartModel) and model.part2.in_channels == 4 + C
    out = model(torch.randn(2, 3, *SIZE))
    for key, channels in (("seg", C), ("part1_seg", C), ("depth", 1), ("part1_depth", 1)):
        assert out[key].shape == (2, channels, *SIZE), key
    assert bool((out["depth"] > 0).all()) and bool((out["part1_depth"] > 0).all())
    _check_grads(model, out)
    _check_groups(model)
    # part one's losses never reach part two
    part2, part1 = _split(grad_norms(model, out, ["part1_seg", "part1_depth"]), "part2.")
    assert part2 and all(norm == 0.0 for norm in part2.values())
    assert all(norm > 0 for norm in part1.values())
    # part two's weights on part one's outputs start at zero: its losses reach part one only once they move
    part1, part2 = _split(grad_norms(model, out, ["seg", "depth"]), "part1.")
    assert part1 and all(norm == 0.0 for norm in part1.values())
    assert all(norm > 0 for norm in part2.values())


def test_twopart_part_two_input_wiring():
    torch.manual_seed(0)
    model = tiny_twopart().eval()
    with torch.no_grad():  # non-zero weights on the extra inputs, so part two really uses them
        model.part2.backbone.features.conv0.weight.normal_()
    captured = {}
    model.part2.backbone.register_forward_pre_hook(lambda module, args: captured.update(x=args[0]))
    x = torch.randn(2, 3, *SIZE)
    out = model(x)
    seen = captured["x"]
    assert seen.shape == (2, 4 + C, *SIZE)
    torch.testing.assert_close(seen[:, :3], x)
    torch.testing.assert_close(seen[:, 3:4], out["part1_depth"].log())
    torch.testing.assert_close(seen[:, 4:], out["part1_seg"].softmax(dim=1))
    # Not detached: part two's depth loss reaches part one's heads through the input.
    model.zero_grad()
    out["depth"].mean().backward()
    assert model.part1.heads["depth"].first.weight.grad.abs().sum() > 0
    assert model.part1.heads["seg"].first.weight.grad.abs().sum() > 0


def test_twopart_scaled_depth_input():
    model = tiny_twopart(depth_input="scaled")
    depth = torch.full((1, 1, 2, 2), 5.0)
    assert torch.equal(model.depth_feature(depth), depth / 10)
    with pytest.raises(ValueError, match="depth_input"):
        tiny_twopart(depth_input="inverse")


def test_unknown_model_name():
    assert set(DEPTH_MODELS) == {"seg2depth_resnet50", "twopart_densenet121"}
    with pytest.raises(ValueError, match="unknown depth model 'nope'.*seg2depth_resnet50"):
        build_depth_model("nope", num_classes=C)
