"""Backbones: tap names/widths/strides/sizes, global features, torchvision weight loading, frozen BN, gradients.

Everything is offline: torchvision models are built with ``weights=None`` and
"pretrained" checkpoints are state dicts of those, saved to a temporary folder.
"""
from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import labelreg  # noqa: F401  (must precede torchvision: installs the import guard)
import torchvision  # noqa: E402
from torchvision.ops.misc import FrozenBatchNorm2d  # noqa: E402

from labelreg.models.backbones.common import Backbone  # noqa: E402
from labelreg.models.backbones.densenet import DENSENET_BACKBONES, densenet67_backbone  # noqa: E402
from labelreg.models.backbones.resnet import RESNET_BACKBONES, resnet50_backbone  # noqa: E402
from labelreg.models.backbones.vgg import VGG_BACKBONES, fc_to_conv, vgg16_backbone  # noqa: E402

H, W = 97, 129  # odd on purpose: exposes floor/ceil differences between networks
pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/models/test_models.py

# name → (builder, keyword arguments)
CONFIGS: dict[str, tuple[Callable[..., Backbone], dict[str, Any]]] = {
    "vgg16": (VGG_BACKBONES["vgg16"], {}),
    **{name: (builder, {}) for name, builder in DENSENET_BACKBONES.items()},
    **{f"{name}_os{os}": (builder, {"output_stride": os})
       for name, builder in RESNET_BACKBONES.items() for os in (32, 16, 8)},
}
WITH_BATCHNORM = [name for name in CONFIGS if name != "vgg16"]

VGG_TAPS = ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
            "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3"]
DENSENET_WIDTHS = {  # stem, block1..4 (torchvision definitions; 67 as designed in densenet67_features)
    "densenet121": [64, 256, 512, 1024, 1024],
    "densenet161": [96, 384, 768, 2112, 2208],
    "densenet201": [64, 256, 512, 1792, 1920],
    "densenet67": [96, 384, 576, 672, 720],
}
# Exact spatial sizes for a 97×129 input, by family and stride. VGG's 2×2 pools floor;
# ResNet pads every strided op (ceil); DenseNet's stem/max pool ceil, its 2×2 average pools floor.
SIZES = {
    "vgg": {1: (97, 129), 2: (48, 64), 4: (24, 32), 8: (12, 16), 16: (6, 8)},
    "resnet": {2: (49, 65), 4: (25, 33), 8: (13, 17), 16: (7, 9), 32: (4, 5)},
    "densenet": {2: (49, 65), 4: (25, 33), 8: (12, 16), 16: (6, 8), 32: (3, 4)},
}


def expected_layout(name: str) -> tuple[list[str], list[int], list[int]]:
    """Tap names, widths and strides each configuration must report."""
    if name == "vgg16":
        return VGG_TAPS, [64] * 2 + [128] * 2 + [256] * 3 + [512] * 6, [1] * 2 + [2] * 2 + [4] * 3 + [8] * 3 + [16] * 3
    if name.startswith("densenet"):
        return ["stem", "block1", "block2", "block3", "block4"], DENSENET_WIDTHS[name], [2, 4, 8, 16, 32]
    os = int(name.rsplit("_os", 1)[1])
    strides = {32: [2, 4, 8, 16, 32], 16: [2, 4, 8, 16, 16], 8: [2, 4, 8, 8, 8]}[os]
    return ["stem", "layer1", "layer2", "layer3", "layer4"], [64, 256, 512, 1024, 2048], strides


def family(name: str) -> str:
    return "vgg" if name == "vgg16" else "densenet" if name.startswith("densenet") else "resnet"


def randomize_batchnorm(module: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so eval-mode BN is not the identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in module.modules():
            if isinstance(bn, nn.BatchNorm2d):
                n = bn.num_features
                bn.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                bn.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                bn.weight.copy_(1 + 0.1 * torch.randn(n, generator=gen))
                bn.bias.copy_(0.1 * torch.randn(n, generator=gen))
    return module


@pytest.fixture(scope="module", params=list(CONFIGS))
def built(request) -> tuple[str, Backbone]:
    # Module scope + params: pytest groups the tests by configuration, so each model is built once.
    torch.manual_seed(0)
    builder, kwargs = CONFIGS[request.param]
    return request.param, builder(**kwargs)


# --------------------------------------------------------------------------- every builder

def test_taps_layout_sizes_and_global_feature(built):
    name, model = built
    names, widths, strides = expected_layout(name)
    assert list(model.tap_channels) == names and list(model.tap_channels.values()) == widths
    assert list(model.tap_strides) == names and list(model.tap_strides.values()) == strides
    assert model.tap_names == names

    model.eval()
    with torch.no_grad():
        taps = model(torch.randn(1, 3, H, W))
        glob = model.global_feature(taps)
    assert list(taps) == names
    for tap, x in taps.items():
        stride = model.tap_strides[tap]
        assert x.shape[:2] == (1, model.tap_channels[tap]), tap
        assert tuple(x.shape[2:]) == SIZES[family(name)][stride], (tap, x.shape)
        assert abs(x.shape[2] - H / stride) <= 1 and abs(x.shape[3] - W / stride) <= 1, tap
        assert torch.isfinite(x).all(), tap
    assert glob.shape == (1, model.global_channels)
    assert torch.isfinite(glob).all()


def test_every_parameter_gets_a_gradient(built):
    name, model = built
    # Eval mode: which parameters get gradients does not depend on the mode, and eval allows a
    # tiny input (train-mode BN cannot normalise the 1×1 deepest maps of a 32×32 image).
    model.eval()
    model.zero_grad(set_to_none=True)
    gen = torch.Generator().manual_seed(1)
    taps = model(torch.randn(2, 3, 32, 32, generator=gen))
    outputs = [*taps.values(), model.global_feature(taps)]
    assert outputs[-1].shape == (2, model.global_channels)
    # A random projection rather than a plain mean, so no gradient can cancel by symmetry.
    loss = sum((y * torch.randn(y.shape, generator=gen)).sum() for y in outputs)
    loss.backward()
    without = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    model.zero_grad(set_to_none=True)
    assert without == []


@pytest.mark.parametrize("name", WITH_BATCHNORM)
def test_freeze_bn_keeps_eval_outputs(name):
    builder, kwargs = CONFIGS[name]
    state = randomize_batchnorm(builder(**kwargs)).state_dict()
    reference = builder(**kwargs, pretrained=state).eval()
    frozen = builder(**kwargs, pretrained=state, freeze_bn=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in frozen.modules())
    x = torch.randn(1, 3, 33, 47)
    with torch.no_grad():
        expected = reference(x)
        for mode in (False, True):  # frozen statistics: train mode must not change anything
            got = frozen.train(mode)(x)
            for tap, want in expected.items():
                # FrozenBatchNorm2d folds the statistics differently: compare relative to the tap's scale.
                torch.testing.assert_close(got[tap], want, rtol=0, atol=1e-5 * want.abs().max().item())


def test_builders_are_keyword_only():
    for builder, _ in CONFIGS.values():
        with pytest.raises(TypeError, match="positional argument"):
            builder(None)


# --------------------------------------------------------------------------- torchvision weights

def _save(model: nn.Module, tmp_path) -> str:
    path = tmp_path / "weights.pth"
    torch.save(model.state_dict(), path)
    return str(path)


def test_vgg16_loads_torchvision_weights(tmp_path):
    tv = torchvision.models.vgg16(weights=None).eval()
    model = vgg16_backbone(pretrained=_save(tv, tmp_path)).eval()
    x = torch.randn(1, 3, H, W)
    with torch.no_grad():
        taps = model(x)
        torch.testing.assert_close(taps["conv5_3"], tv.features[:30](x), rtol=0, atol=1e-6)
        pools = model.features_with_pools(x)
        torch.testing.assert_close(pools["pool5"], tv.features(x), rtol=0, atol=1e-6)
        fc7 = tv.classifier[:5](torch.flatten(tv.avgpool(tv.features(x)), 1))
        torch.testing.assert_close(model.global_feature(taps), fc7, rtol=0, atol=1e-6)
    assert list(pools) == [*VGG_TAPS[:2], "pool1", *VGG_TAPS[2:4], "pool2", *VGG_TAPS[4:7], "pool3",
                           *VGG_TAPS[7:10], "pool4", *VGG_TAPS[10:], "pool5"]
    assert tuple(pools["pool3"].shape[1:]) == (256, 12, 16) and tuple(pools["pool4"].shape[1:]) == (512, 6, 8)
    assert sum(model.tap_channels.values()) == 4224 and model.global_channels == 4096

    # fc6/fc7 as convolutions compute the same as the Linear layers on a 7×7 pool5.
    p5 = torch.randn(1, 512, 7, 7)
    with torch.no_grad():
        conv6 = fc_to_conv(model.fc6, in_channels=512, kernel_size=7)
        conv7 = fc_to_conv(model.fc7, in_channels=4096, kernel_size=1)
        torch.testing.assert_close(conv6(p5).flatten(1), model.fc6(p5.flatten(1)), rtol=1e-4, atol=1e-5)
        h = torch.randn(1, 4096, 2, 3)
        torch.testing.assert_close(conv7(h)[..., 1, 2], model.fc7(h[..., 1, 2]), rtol=1e-4, atol=1e-5)

    # Once FCN has taken fc6/fc7 over, the backbone drops them and still loads full checkpoints.
    model.drop_global_feature()
    assert model.global_channels == 0 and not any(k.startswith("classifier.") for k in model.state_dict())
    with pytest.raises(RuntimeError, match=r"fc6/fc7 were removed by drop_global_feature"):
        model.global_feature(taps)
    model.load_pretrained(tmp_path / "weights.pth")


# Thesis Table 3.1, "Unit RF size" of zoom-out levels 1-13 (VGG-16 on a 256×256 input).
VGG_TABLE_3_1_RF = [3, 5, 10, 14, 24, 32, 40, 60, 76, 92, 132, 164, 196]


def test_vgg16_taps_are_the_unpooled_conv_outputs_of_table_3_1():
    """Each tap is a conv's ReLU output before the block's max pool: its receptive field is Table 3.1's.

    Tapping the last conv of a block after its pool would give 6, 16, 44, 100, 212 for levels 2, 4, 7, 10, 13.
    """
    with torch.device("meta"):
        model = vgg16_backbone()
    # Walk the network the way the taps are produced and record (receptive field, stride) at each tap.
    rf, jump, at_tap = 1, 1, {}
    for index, module in enumerate(model.features):
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d)):
            k = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
            s = module.stride if isinstance(module.stride, int) else module.stride[0]
            rf, jump = rf + (k - 1) * jump, jump * s
        if index in model._tap_at:
            at_tap[model._tap_at[index]] = (rf, jump)
    assert list(at_tap) == VGG_TAPS
    assert [at_tap[name][0] for name in VGG_TAPS] == VGG_TABLE_3_1_RF
    assert [at_tap[name][1] for name in VGG_TAPS] == [model.tap_strides[name] for name in VGG_TAPS]
    # And the forward pass returns exactly those modules' outputs (conv1_2 at full resolution, not pool1).
    x = torch.randn(1, 3, 16, 20)
    small = vgg16_backbone().eval()
    with torch.no_grad():
        taps = small(x)
        for name in ("conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3"):
            index = next(i for i, n in small._tap_at.items() if n == name)
            torch.testing.assert_close(taps[name], small.features[:index + 1](x), rtol=0, atol=0)
    assert taps["conv1_2"].shape[-2:] == (16, 20) and taps["conv5_3"].shape[-2:] == (1, 1)


def test_densenet121_loads_torchvision_weights(tmp_path):
    tv = randomize_batchnorm(torchvision.models.densenet121(weights=None)).eval()
    model = DENSENET_BACKBONES["densenet121"](pretrained=_save(tv, tmp_path)).eval()
    x = torch.randn(1, 3, H, W)
    with torch.no_grad():
        taps = model(x)
        torch.testing.assert_close(taps["block4"], F.relu(tv.features(x)), rtol=0, atol=1e-6)
        torch.testing.assert_close(taps["block1"], tv.features[:5](x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("output_stride", [32, 8])
def test_resnet50_loads_torchvision_weights(tmp_path, output_stride):
    # An undilated checkpoint loads into a dilated model: dilation changes no parameter shape.
    tv_plain = randomize_batchnorm(torchvision.models.resnet50(weights=None))
    model = resnet50_backbone(output_stride=output_stride, pretrained=_save(tv_plain, tmp_path)).eval()
    dilation = {32: [False, False, False], 8: [False, True, True]}[output_stride]
    tv = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=dilation)
    tv.load_state_dict(tv_plain.state_dict())
    tv.eval()
    x = torch.randn(1, 3, H, W)
    with torch.no_grad():
        taps = model(x)
        y = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        y = tv.layer4(tv.layer3(tv.layer2(tv.layer1(y))))
        torch.testing.assert_close(taps["layer4"], y, rtol=0, atol=1e-6)
        torch.testing.assert_close(model.global_feature(taps), torch.flatten(tv.avgpool(y), 1), rtol=0, atol=1e-6)


def test_checkpoint_mismatch_names_the_key(tmp_path):
    model = densenet67_backbone()
    state = model.state_dict()
    with pytest.raises(ValueError, match="features.extra.weight"):
        model.load_pretrained({**state, "features.extra.weight": torch.zeros(1)})
    missing = dict(state)
    del missing["features.norm5.weight"]
    with pytest.raises(ValueError, match="features.norm5.weight"):
        densenet67_backbone(pretrained=missing)
    # The dropped classifier's keys are ignored, and a path works like a dict.
    torch.save({**state, "classifier.weight": torch.zeros(10, 720)}, tmp_path / "d67.pth")
    densenet67_backbone(pretrained=tmp_path / "d67.pth")
    with pytest.raises(FileNotFoundError, match="pretrained weights not found: .*absent.pth"):
        densenet67_backbone(pretrained=tmp_path / "absent.pth")


# --------------------------------------------------------------------------- model-specific

def test_densenet67_design():
    model = densenet67_backbone()
    assert model.tap_channels == {"stem": 96, "block1": 384, "block2": 576, "block3": 672, "block4": 720}
    assert model.tap_strides == {"stem": 2, "block1": 4, "block2": 8, "block3": 16, "block4": 32}
    # 3 stem convs + 2·(6+8+8+8) bottleneck convs + 3 transition convs = 66, + the classifier = 67.
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 66
    stem_convs = [model.features.conv0, model.features.conv1, model.features.conv2]
    assert [c.kernel_size for c in stem_convs] == [(3, 3)] * 3
    assert [c.stride for c in stem_convs] == [(2, 2), (1, 1), (1, 1)]
    # Same counting rule gives 121 for torchvision's DenseNet-121 (one 7×7 stem conv).
    tv121 = torchvision.models.densenet121(weights=None)
    assert sum(isinstance(m, nn.Conv2d) for m in tv121.modules()) + 1 == 121
    with pytest.raises(ValueError, match="DenseNet-67 has no ImageNet weights"):
        densenet67_backbone(pretrained="imagenet")


def test_resnet_rejects_unknown_output_stride():
    with pytest.raises(ValueError, match=r"output_stride must be one of \[8, 16, 32\], got 4"):
        resnet50_backbone(output_stride=4)
