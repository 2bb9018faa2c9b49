"""Every segmenter in MODELS: shapes on odd sizes, gradients, strides, the zoom-out head's exact cheap form, and
the README's parameter counts."""
import re
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from labelreg.data import NYUv2Labeled, normalize
from labelreg.metrics import SegMetrics
from labelreg.models import MODELS, ZoomOutHead, build_segmenter
from labelreg.models.backbones import SUNET_CLASSIFIERS

TINY_HEADS = {"hidden": 32}  # zoom-out heads are configurable; tests use a small MLP
README = Path(__file__).resolve().parents[2] / "docs" / "training.md"  # the parameter table
PARAMETER_TABLE = "| model | parameters (21 classes, default options) |"
# One intra-op thread: when other jobs share the 2 CPU cores, OpenMP's second thread slows these convolutions
# down 5-15× (measured: zoom-out ResNet-101's forward/backward 31 s with two threads, 2 s with one).
pytestmark = pytest.mark.usefixtures("one_thread")


def build(name, num_classes=7, **options):
    if name.startswith("zoomout"):
        options = {**TINY_HEADS, **options}
    return build_segmenter(name, num_classes=num_classes, **options)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_output_shape_finite_and_every_parameter_learns(name):
    torch.manual_seed(0)
    model = build(name)
    x = torch.randn(2, 3, 97, 129)
    out = model(x)
    assert out["seg"].shape == (2, 7, 97, 129)
    assert torch.isfinite(out["seg"]).all()
    assert isinstance(out["features"], dict) and out["features"]
    loss = sum(value.float().mean() for key, value in out.items() if key != "features")
    loss.backward()
    starved = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not starved, starved
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 65, 49))["seg"].shape == (1, 7, 65, 49)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_param_groups_split_backbone_and_head(name):
    """``backbone`` holds exactly the backbone's parameters (the ones ``optim.group_lr.backbone`` and
    staged freezing act on), ``head`` everything else; neither is empty, none is in both or missing."""
    with torch.device("meta"):  # the grouping only: no weights in memory
        model = build(name, num_classes=3)
    groups = model.param_groups()
    assert set(groups) == {"backbone", "head"}
    backbone, head = ([id(p) for p in groups[key]] for key in ("backbone", "head"))
    assert backbone and head
    assert len(backbone) == len(set(backbone)) and len(head) == len(set(head))
    assert set(backbone) == {id(p) for p in model.backbone.parameters()}
    assert set(head) == {id(p) for p in model.parameters()} - set(backbone)


@pytest.mark.parametrize("name, options, stride", [
    ("zoomout_resnet50", {"output_stride": 8}, 8),
    ("zoomout_resnet50", {"output_stride": 16}, 16),
    ("pspnet_resnet50", {}, 8),
    ("dsunet64", {"output_stride": 8}, 8),
    ("dsunet64", {"output_stride": 16}, 16),
    ("dsunet64", {"output_stride": 32}, 32),
])
def test_dilated_output_stride(name, options, stride):
    model = build(name, **options).eval()
    with torch.no_grad():
        features = model(torch.randn(1, 3, 128, 160))["features"]
    deepest = features[model.backbone.tap_names[-1]]
    assert deepest.shape[-2:] == (128 // stride, 160 // stride)


def test_zoomout_vgg16_feature_widths():
    assert build("zoomout_vgg16").head.in_channels == 4224
    assert build("zoomout_vgg16", scene=True).head.in_channels == 8320


def test_pspnet_features_include_pyramid_pooling():
    model = build("pspnet_resnet50").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out["features"]["ppm"].shape[1] == 4096 and "psp_aux_seg" not in out
    model.train()
    assert "psp_aux_seg" in model(torch.randn(2, 3, 64, 64))


def test_unknown_names_and_taps_are_clear_errors():
    with pytest.raises(ValueError, match="unknown model 'zoomout_vgg19'"):
        build_segmenter("zoomout_vgg19", num_classes=3)
    with pytest.raises(ValueError, match=r"unknown tap\(s\) \['layer9'\]"):
        build("zoomout_resnet50", taps=["layer1", "layer9"])


# ----------------------------------------------------------------------------- the zoom-out head's cheap form


@pytest.mark.parametrize("grid_stride", [4, 8])
@pytest.mark.parametrize("normalize", [False, True])
def test_projected_head_equals_concatenate_then_convolve(grid_stride, normalize):
    torch.manual_seed(0)
    channels = {"fine": 8, "same": 16, "coarse": 32, "coarsest": 24}
    head = ZoomOutHead(channels, 5, grid_stride=grid_stride, global_channels=6, hidden=20, normalize=normalize).eval()
    head.feature_mean.normal_()
    head.feature_std.uniform_(0.5, 2.0)
    grid = (-(-97 // grid_stride), -(-129 // grid_stride))
    taps = {"fine": torch.randn(2, 8, 97, 129), "same": torch.randn(2, 16, *grid),
            "coarse": torch.randn(2, 32, 13, 17), "coarsest": torch.randn(2, 24, 4, 5)}
    scene = torch.randn(2, 6)
    fast, literal = head(taps, grid, scene), head.forward_literal(taps, grid, scene)
    assert fast.shape == (2, 5, *grid)
    torch.testing.assert_close(fast, literal, atol=1e-5, rtol=1e-4)


def test_projected_form_on_a_real_backbone():
    # float64: with ~8000 normalised channels float32 rounding alone reaches 1e-4; the forms are exactly equal
    torch.manual_seed(0)
    model = build("zoomout_resnet50", normalize=True, scene=True, pyramid_pooling=True).eval().double()
    x = torch.randn(1, 3, 97, 129, dtype=torch.float64)
    with torch.no_grad():
        model.calibrate([x])
        taps, grid, scene = model.head_inputs(x)
        fast, literal = model.head(taps, grid, scene), model.head.forward_literal(taps, grid, scene)
    torch.testing.assert_close(fast, literal, atol=1e-9, rtol=1e-9)


def test_calibration_normalises_features():
    torch.manual_seed(0)
    model = build("zoomout_densenet67", normalize=True).eval()
    images = [torch.randn(2, 3, 64, 64) * 3 + 1 for _ in range(2)]
    model.calibrate(images)
    with torch.no_grad():
        taps, grid, scene = model.head_inputs(torch.cat(images))
        features = model.head.concatenated_features(taps, grid, scene)
        normalised = (features - model.head.feature_mean[:, None, None]) / model.head.feature_std[:, None, None]
    per_channel = normalised.transpose(0, 1).flatten(1)
    assert per_channel.mean(1).abs().max() < 1e-3
    # channels that barely vary (dead ReLUs) are damped by the eps in the std; the rest get unit variance
    live = features.transpose(0, 1).flatten(1).std(1) > 0.05
    assert live.sum() > 100 and (per_channel.std(1)[live] - 1).abs().max() < 1e-2


def test_tiny_zoomout_overfits_synthetic_images(tiny_synthetic):
    torch.manual_seed(0)
    batch = next(iter(DataLoader(NYUv2Labeled(tiny_synthetic.nyu_mat, "train"), batch_size=4)))
    images, labels = normalize(batch["image"]), batch["label"]
    model = build("zoomout_densenet67", num_classes=40, hidden=64,
                  backbone_options={"growth_rate": 8, "block_config": [2, 2, 2, 2], "stem_channels": [16, 16, 16]})
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(model(images)["seg"], labels, ignore_index=255)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    metrics = SegMetrics(40)
    with torch.no_grad():
        metrics.update(model(images)["seg"], labels)
    assert metrics.compute()["pixel_acc"] > 0.9 and metrics.compute()["miou"] > 0.5


def _dropout_masks_vary_within_channels(modules):
    """Every dropout module drops single elements: within one channel, some locations are kept and some
    dropped (Dropout2d would keep or drop a whole channel of the map)."""
    modules = [m for m in modules if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
    assert modules
    for module in modules:
        module.train()
        torch.manual_seed(0)
        kept = module(torch.ones(2, 16, 8, 8)) != 0
        per_channel = kept.flatten(2)
        assert (per_channel.any(-1) & ~per_channel.all(-1)).all(), type(module).__name__


def test_zoomout_head_dropout_is_per_location():
    model = build("zoomout_densenet67", dropout=0.5, backbone_options={
        "growth_rate": 8, "block_config": [1, 1, 1, 1], "stem_channels": [8, 8, 8]})
    _dropout_masks_vary_within_channels(model.head.rest)
    keys = [key for key in model.head.rest.state_dict()]
    assert keys == ["2.weight", "2.bias", "5.weight", "5.bias"]  # checkpoints keep loading


def test_fcn_fc6_fc7_dropout_is_per_location():
    with torch.device("meta"):  # the dropout module only: no VGG weights in memory
        model = build("fcn8s_vgg16", dropout=0.5)
    _dropout_masks_vary_within_channels([model.dropout])


# ----------------------------------------------------------------------------- the README's numbers


def readme_parameter_table(text: str) -> dict[str, str]:
    """The README's Segmenters table: {model name: its parameter count as written, e.g. "20.0M"}."""
    lines = text.splitlines()
    start = lines.index(PARAMETER_TABLE) + 2  # the header, then the |---| rule
    rows = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        match = re.fullmatch(r"\| `([a-z0-9_]+)` \| (\d+\.\d)M \|", line.strip())
        assert match, f"unreadable row of the README's parameter table: {line!r}"
        rows[match[1]] = match[2] + "M"
    return rows


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_readme_parameter_table_matches_the_models():
    """Every model of MODELS is in the README's table, built with 21 classes and default options (on the meta
    device: shapes only), and its count rounds to the number written there; so do the SUNet classifiers'."""
    text = README.read_text()
    table = readme_parameter_table(text)
    assert sorted(table) == sorted(MODELS)
    counted = {}
    for name in table:
        with torch.device("meta"):
            counted[name] = f"{n_params(build_segmenter(name, num_classes=21)) / 1e6:.1f}M"
    assert counted == table
    written = re.search(r"SUNet-64\s+([\d.]+)M,\s+SUNet-128\s+([\d.]+)M,\s+SUNet-7-128\s+([\d.]+)M\s+parameters", text)
    assert written, "the README no longer states the SUNet classifiers' parameter counts"
    for name, value in zip(("sunet64", "sunet128", "sunet7128"), written.groups()):
        with torch.device("meta"):
            assert f"{n_params(SUNET_CLASSIFIERS[name]()) / 1e6:.2f}" == value, name
