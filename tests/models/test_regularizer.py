"""Phase two: the auxiliary branch through the frozen decoder (and the encoder variant)."""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import labelreg

from labelreg.config import ConfigError, load_config
from labelreg.losses import masked_cross_entropy, masked_one_hot_mse
from labelreg.models import LabelAutoencoder, build_segmenter
from labelreg.models.regularizer import (DecoderRegularized, EncoderRegularized, align_to_code_grid, aux_target,
                                         choose_tap, plain_segmenter_state, probe_features)
from labelreg.storage import save_checkpoint
from labelreg.tasks.segmentation import build_model, default_loss_weights, model_from_checkpoint, train

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/models/test_models.py
TINY = {"hidden": 16, "backbone_options": {"growth_rate": 8, "block_config": [1, 1, 1, 1],
                                            "stem_channels": [8, 8, 8]}}


def tiny_segmenter(num_classes=5):
    return build_segmenter("zoomout_densenet67", num_classes=num_classes, **TINY)


def trained_autoencoder(num_classes=5):
    torch.manual_seed(1)
    autoencoder = LabelAutoencoder(num_classes, "32")
    with torch.no_grad():  # give BatchNorm non-trivial running statistics, as phase one would
        for module in autoencoder.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return autoencoder


def test_decoder_stays_bit_identical_while_the_segmenter_trains():
    torch.manual_seed(0)
    model = DecoderRegularized(tiny_segmenter(), trained_autoencoder())
    before = {k: v.clone() for k, v in model.decoder.state_dict().items()}  # weights and BN statistics
    segmenter_before = {k: v.clone() for k, v in model.segmenter.state_dict().items()}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    assert not model.decoder.training  # BatchNorm in eval mode even in train mode
    x, label = torch.randn(2, 3, 64, 80), torch.randint(0, 5, (2, 64, 80))
    for _ in range(3):
        out = model(x)
        loss = masked_cross_entropy(out["seg"], label) + 0.5 * masked_cross_entropy(out["aux_seg"], label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for key, value in model.decoder.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not all(torch.equal(v, segmenter_before[k]) for k, v in model.segmenter.state_dict().items())


def test_auxiliary_loss_alone_reaches_the_segmenter_through_the_decoder():
    torch.manual_seed(0)
    model = DecoderRegularized(tiny_segmenter(), trained_autoencoder())
    assert model.tap == "block3"  # the deepest 1/16 feature, as the decoder expects
    label = torch.randint(0, 5, (2, 64, 80))
    masked_cross_entropy(model(torch.randn(2, 3, 64, 80))["aux_seg"], label).backward()
    assert all(p.grad is None for p in model.decoder.parameters())
    assert model.to_code.weight.grad.abs().sum() > 0
    upstream = [n for n, p in model.segmenter.backbone.named_parameters() if n.startswith("features.")
                and not n.startswith(("features.denseblock4", "features.norm5", "features.transition3"))]
    starved = [n for n, p in model.segmenter.backbone.named_parameters()
               if n in upstream and (p.grad is None or not p.grad.any())]
    assert upstream and not starved, starved
    assert all(p.grad is None for p in model.segmenter.head.parameters())  # the primary head is not on this path


@pytest.mark.parametrize("wrapper", ["decoder_regularized", "regularize"])
def test_the_auxiliary_branch_runs_the_decoder_channels_last(wrapper):
    """Both wrappers decode through ``decode_to``: every decoder layer sees a channels-last map (the layout its
    full-resolution convolutions are fast in, docs/bench.md), and ``aux_seg`` has the image's odd size."""
    torch.manual_seed(0)
    autoencoder = trained_autoencoder()
    model = (DecoderRegularized(tiny_segmenter(), autoencoder) if wrapper == "decoder_regularized"
             else labelreg.regularize(tiny_segmenter(), autoencoder, tap="backbone.features.denseblock3"))
    decoder = model.decoder
    layouts = []
    for module in decoder.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_pre_hook(lambda _m, args: layouts.append(
                args[0].is_contiguous(memory_format=torch.channels_last)))
    output = model(torch.randn(1, 3, 65, 97))
    aux = output["aux_seg"] if isinstance(output, dict) else output[1]
    assert aux.shape == (1, 5, 65, 97)
    assert layouts == [True] * 5


@pytest.mark.parametrize("size, feature_size", [((180, 240), (11, 15)), ((37, 45), (2, 3))])
def test_a_code_cell_covers_the_same_pixels_as_in_phase_one_at_any_size(size, feature_size):
    """At 180×240 (CamVid at half resolution) the backbone's 1/16 map is 11×15 and the code 12×15: feature cell k
    is code cell k (no stretch) and the partial last row copies its neighbour; the decoder's 16h×16w output is cut
    to the image's top-left H×W, as phase one crops its padded reconstruction (no resize)."""
    torch.manual_seed(0)
    model = DecoderRegularized(tiny_segmenter(), trained_autoencoder()).eval()
    assert model.tap_stride == (16, 16)
    taps = []
    model.segmenter.backbone.features.denseblock3.register_forward_hook(lambda _m, _i, out: taps.append(out))
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
        assert taps[0].shape[-2:] == feature_size  # rounded by the backbone's pooling
        code = model.to_code(taps[0])
        assert out["aux_code"].shape[-2:] == (-(-size[0] // 16), -(-size[1] // 16)) == (feature_size[0] + 1,
                                                                                        feature_size[1])
        torch.testing.assert_close(out["aux_code"][..., :-1, :], code, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out["aux_code"][..., -1, :], out["aux_code"][..., -2, :])  # the copied row
        assert out["aux_seg"].shape[-2:] == size
        torch.testing.assert_close(out["aux_seg"], model.decoder(out["aux_code"])[..., :size[0], :size[1]])


def test_taps_at_other_strides_are_resampled_with_cell_centres_matched():
    """Rows of a 1/8 map (5 rows at H = 37) → the 3 code rows: code cell i (pixels 16i..16i+15, centre 16i + 8)
    sits between feature rows 2i and 2i + 1; the partial third row copies the second. A 1/32 map's 2 rows →
    source rows (i + 0.5)/2 − 0.5 = −0.25 (clamped), 0.25, 0.75."""
    rows = torch.arange(5, dtype=torch.float64).view(1, 1, 5, 1).expand(1, 1, 5, 2)
    eighth = align_to_code_grid(rows, (8, 8), (3, 1))
    assert eighth[0, 0, :, 0].tolist() == [0.5, 2.5, 2.5]
    coarse = torch.tensor([0.0, 4.0], dtype=torch.float64).view(1, 1, 2, 1)
    assert align_to_code_grid(coarse, (32, 32), (3, 1))[0, 0, :, 0].tolist() == [0.0, 1.0, 3.0]
    same = torch.randn(1, 2, 3, 4)
    assert torch.equal(align_to_code_grid(same, (16, 16), (3, 4)), same)


@pytest.mark.parametrize("size", [(128, 160), (100, 130)])
def test_aux_crop_decodes_a_window_and_matches_the_full_decode_inside_it(size):
    torch.manual_seed(0)
    model = DecoderRegularized(tiny_segmenter(), trained_autoencoder(), aux_crop=6)
    x, label = torch.randn(1, 3, *size), torch.randint(0, 5, (1, *size))
    model.eval()
    full = model(x)
    assert "aux_window" not in full and full["aux_seg"].shape[-2:] == size  # evaluation decodes everything
    rows, cols = full["aux_code"].shape[-2:]
    model.train()
    model.segmenter.eval()  # same segmenter outputs as above (BatchNorm statistics, no dropout)
    for _ in range(4):
        out = model(x)
        y0, x0, y1, x1 = out["aux_window"]
        assert 0 <= y0 < y1 <= size[0] and 0 <= x0 < x1 <= size[1]
        assert out["aux_seg"].shape[-2:] == (y1 - y0, x1 - x0) == aux_target(out, label).shape[-2:]
        assert torch.equal(aux_target(out, label), label[:, y0:y1, x0:x1])
        # the window is whole cells (16 px each, as in the full decode), 6×6 of the code, cut at the image's edge
        assert y0 % 16 == 0 and x0 % 16 == 0
        assert (y1, x1) == (min(y0 + 96, size[0]), min(x0 + 96, size[1]))
        # away from the window's edges the decoder sees the same code: same logits as the full decode
        inner = (slice(None), slice(None), slice(32, (y1 - y0) - 32), slice(32, (x1 - x0) - 32))
        torch.testing.assert_close(out["aux_seg"][inner], full["aux_seg"][:, :, y0:y1, x0:x1][inner],
                                   atol=1e-5, rtol=1e-5)
    assert (rows, cols) == ((8, 10) if size == (128, 160) else (7, 9))


def test_aux_crop_loss_reaches_the_segmenter_and_a_large_crop_is_the_whole_code():
    torch.manual_seed(0)
    model = DecoderRegularized(tiny_segmenter(), trained_autoencoder(), aux_crop=2)
    label = torch.randint(0, 5, (2, 64, 80))
    out = model(torch.randn(2, 3, 64, 80))
    masked_cross_entropy(out["aux_seg"], aux_target(out, label)).backward()
    assert model.to_code.weight.grad.abs().sum() > 0
    assert model.segmenter.backbone.features.conv0.weight.grad.abs().sum() > 0
    whole = DecoderRegularized(tiny_segmenter(), trained_autoencoder(), aux_crop=5)(torch.randn(2, 3, 64, 80))
    assert "aux_window" not in whole and whole["aux_seg"].shape[-2:] == (64, 80)  # 4×5 code fits in 5 cells
    with pytest.raises(ValueError, match="aux_crop"):
        DecoderRegularized(tiny_segmenter(), trained_autoencoder(), aux_crop=0)


def test_unfrozen_decoder_ablation_trains_the_decoder():
    model = DecoderRegularized(tiny_segmenter(), trained_autoencoder(), frozen=False).train()
    assert model.decoder.training
    masked_cross_entropy(model(torch.randn(2, 3, 64, 80))["aux_seg"], torch.randint(0, 5, (2, 64, 80))).backward()
    assert all(p.grad is not None for p in model.decoder.parameters())


@pytest.mark.parametrize("name, expected", [("zoomout_vgg16", "conv5_3"), ("pspnet_resnet50", "ppm"),
                                            ("zoomout_resnet50", "layer3"), ("fcn8s_vgg16", "conv5_3")])
def test_tap_choice(name, expected):
    options = {"hidden": 16} if name.startswith("zoomout") else {}
    model = DecoderRegularized(build_segmenter(name, num_classes=5, **options), trained_autoencoder())
    assert model.tap == expected
    out = model.eval()(torch.randn(1, 3, 65, 97))
    assert out["aux_seg"].shape == out["seg"].shape == (1, 5, 65, 97)
    assert out["aux_code"].shape == (1, 32, 5, 7)


def test_encoder_variant_regresses_conv1_and_conv3():
    torch.manual_seed(0)
    autoencoder = trained_autoencoder()
    model = EncoderRegularized(tiny_segmenter(), autoencoder)
    label = torch.randint(0, 5, (2, 64, 80))
    out = model(torch.randn(2, 3, 64, 80))
    target = model.encoder_targets(label, (16, 20))
    assert out["aux_features"].shape == target.shape == (2, 64, 16, 20)  # 32 (conv1) + 32 (conv3)
    features = autoencoder.encoder.eval().forward_features(
        torch.nn.functional.one_hot(label, 5).permute(0, 3, 1, 2).float())
    torch.testing.assert_close(target[:, 32:], features["conv3"])  # conv3 is already on the 1/4 grid
    torch.testing.assert_close(target[:, :32], torch.nn.functional.avg_pool2d(features["conv1"], 4))
    torch.nn.functional.mse_loss(out["aux_features"], target).backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    with pytest.raises(ValueError, match="zoom-out segmenter"):
        EncoderRegularized(build_segmenter("pspnet_resnet50", num_classes=5), autoencoder)


def test_encoder_regularizer_has_its_own_layer_on_the_zoom_out_features():
    # Fig. 5.4: an auxiliary layer on the zoom-out features; the primary classifier gets no gradient
    torch.manual_seed(0)
    segmenter = build_segmenter("zoomout_densenet67", num_classes=5, normalize=True, scene=True, **TINY)
    with torch.no_grad():  # non-trivial normalisation statistics, as calibration would set
        segmenter.head.feature_mean.uniform_(-1, 1)
        segmenter.head.feature_std.uniform_(0.5, 2)
    model = EncoderRegularized(segmenter, trained_autoencoder()).train()
    label = torch.randint(0, 5, (2, 64, 80))
    out = model(torch.randn(2, 3, 64, 80))
    torch.nn.functional.mse_loss(out["aux_features"], model.encoder_targets(label, (16, 20))).backward()
    head = model.segmenter.head
    assert all(p.grad is None or not p.grad.any() for p in [*head.first.parameters(), *head.rest.parameters()])
    assert model.to_encoder.conv.weight.grad.abs().sum() > 0
    assert model.segmenter.backbone.features.conv0.weight.grad.abs().sum() > 0
    # the projected form equals a 1×1 conv over the literal, normalised concatenation
    model = model.double().eval()
    x = torch.randn(2, 3, 61, 77, dtype=torch.float64)
    with torch.no_grad():
        taps, grid, scene = model.segmenter.head_inputs(x)
        concatenated = head.concatenated_features(taps, grid, scene)
        normalised = (concatenated - head.feature_mean[:, None, None]) / head.feature_std[:, None, None]
        literal = torch.nn.functional.conv2d(normalised, model.to_encoder.conv.weight, model.to_encoder.conv.bias)
        assert concatenated.shape[1] == head.in_channels and literal.shape[-2:] == (16, 20)
        torch.testing.assert_close(model(x)["aux_features"], literal, rtol=1e-10, atol=1e-10)


def test_unfrozen_encoder_is_refused():
    # the regression target would get gradients too: the encoder could collapse to zero activations
    with pytest.raises(ValueError, match="regularizer.frozen"):
        EncoderRegularized(tiny_segmenter(), trained_autoencoder(), frozen=False)


def test_mse_auxiliary_loss_known_value():
    # two pixels, two classes; logits 0 → softmax (0.5, 0.5): squared error 0.25 per class, summed → 0.5
    logits = torch.zeros(1, 2, 1, 3)
    target = torch.tensor([[[0, 1, 255]]])
    assert masked_one_hot_mse(logits, target).item() == pytest.approx(0.5)
    # a confident correct pixel costs ~0
    sure = torch.tensor([[[[20.0]], [[-20.0]]]])
    assert masked_one_hot_mse(sure, torch.tensor([[[0]]])).item() < 1e-12


@pytest.mark.parametrize("kind, loss, weight, expected", [("decoder", "ce", None, 0.5), ("decoder", "mse", None, 1.0),
                                                          ("encoder", "ce", None, 0.5), ("decoder", "mse", 2.5, 2.5)])
def test_auxiliary_weight_defaults_per_loss(kind, loss, weight, expected):
    cfg = load_config(CONFIGS / "zoomout-densenet67_voc12_256.yaml",
                      [f"regularizer.kind={kind}", f"regularizer.loss={loss}", f"regularizer.weight={weight}"
                       if weight is not None else "regularizer.weight=null"])
    assert default_loss_weights(cfg, tiny_segmenter())["aux"] == expected


def test_exported_segmenter_gives_the_same_primary_logits():
    torch.manual_seed(0)
    model = DecoderRegularized(tiny_segmenter(), trained_autoencoder()).eval()
    plain = tiny_segmenter()
    plain.load_state_dict(plain_segmenter_state(model.state_dict()))
    plain.eval()
    x = torch.randn(2, 3, 61, 77)
    with torch.no_grad():
        assert torch.equal(model(x)["seg"], plain(x)["seg"])
    assert not any(key.startswith(("decoder.", "to_code.")) for key in plain.state_dict())


def test_tap_prefers_a_1_16_feature_over_a_coarser_pyramid_pooling_output():
    # zoom-out ResNet-50 at output stride 32 with pyramid pooling: ppm sits on layer4 (1/32);
    # layer3 is at the decoder input's 1/16 and wins
    shapes = probe_features(build_segmenter("zoomout_resnet50", num_classes=5, hidden=16, pyramid_pooling=True))
    assert tuple(shapes["ppm"][-2:]) == (4, 4) and tuple(shapes["layer3"][-2:]) == (8, 8)
    assert choose_tap(shapes) == "layer3"
    # PSPNet (output stride 8): nothing at 1/16, the pyramid-pooling output is the thesis' choice (§5.4.2)
    psp = {"layer1": (1, 256, 32, 32), "layer2": (1, 512, 16, 16), "layer3": (1, 1024, 16, 16),
           "layer4": (1, 2048, 16, 16), "ppm": (1, 4096, 16, 16)}
    assert choose_tap({k: torch.Size(v) for k, v in psp.items()}) == "ppm"
    # a pyramid-pooling output at 1/16 (output stride 16) is the deepest 1/16 feature
    os16 = {"layer2": (1, 512, 16, 16), "layer3": (1, 1024, 8, 8), "layer4": (1, 2048, 8, 8),
            "ppm": (1, 4096, 8, 8), "zoomout_hidden": (1, 16, 32, 32)}
    assert choose_tap({k: torch.Size(v) for k, v in os16.items()}) == "ppm"


# ---------------------------------------------------------------------------- Table 5.2's random decoder
def _thesis_tables():
    spec = importlib.util.spec_from_file_location("thesis_tables", CONFIGS.parent / "scripts" / "thesis_tables.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script executes
    spec.loader.exec_module(module)
    return module


def test_random_init_row_trains_an_unfrozen_random_decoder():
    # §5.4.2: "if we skip the first phase, and train from scratch with an unfrozen, randomly initialized
    # decoder, the accuracy gain disappears"
    tables = _thesis_tables()
    row = next(row for row in tables.TABLES["5.2"] if row.regularizer == "Random Init. Decoder")
    cfg = load_config(tables.CONFIGS / row.config, list(row.overrides))
    assert cfg.regularizer.random_init and not cfg.regularizer.frozen and row.variant is None


def test_a_frozen_random_decoder_is_refused_before_training():
    cfg = load_config(CONFIGS / "zoomout-densenet67_voc12_256.yaml",
                      ["regularizer.kind=decoder", "regularizer.random_init=true", "data.root=/nonexistent"])
    with pytest.raises(ConfigError, match=r"regularizer\.random_init.*regularizer\.frozen"):
        train(cfg)  # refused before any data is read


@pytest.mark.parametrize("random_init", [False, True])
def test_regularized_checkpoints_rebuild_for_evaluation(random_init, tmp_path):
    # evaluation rebuilds the branch from the checkpoint's own weights (no phase-one file is read) whatever
    # `frozen` says: both a phase-one run (frozen) and the random-decoder ablation (unfrozen) must load
    overrides = ["regularizer.kind=decoder", "regularizer.variant=32", "model.options.hidden=16",
                 "model.options.backbone_options={growth_rate: 8, block_config: [1, 1, 1, 1], stem_channels: [8, 8, 8]}"]
    overrides += (["regularizer.random_init=true", "regularizer.frozen=false"] if random_init
                  else [f"regularizer.autoencoder={tmp_path / 'ae.pt'}"])
    if not random_init:
        save_checkpoint(tmp_path / "ae.pt", {"model": trained_autoencoder(21).state_dict(),
                                             "config": {"task": "autoencoder", "model": {"variant": "32"}}})
    cfg = load_config(CONFIGS / "zoomout-densenet67_voc12_256.yaml", overrides)
    model = build_model(cfg, 21)
    checkpoint = {"model": model.state_dict()}
    for with_regularizer in (True, False):
        rebuilt = model_from_checkpoint(checkpoint, with_regularizer=with_regularizer, num_classes=21,
                                        cfg=load_config(CONFIGS / "zoomout-densenet67_voc12_256.yaml", overrides))
        assert isinstance(rebuilt, DecoderRegularized) == with_regularizer


def test_dagger_rows_use_the_mse_loss_and_its_own_weight_and_the_table_says_what_differs():
    tables = _thesis_tables()
    dagger = [row for row in tables.TABLES["5.1"] if row.regularizer.startswith("Decoder") and "†" in row.regularizer]
    assert len(dagger) == 2
    for row in dagger:
        cfg = load_config(tables.CONFIGS / row.config, [*row.overrides, "regularizer.autoencoder=x.pt"])
        assert cfg.regularizer.loss == "mse" and default_loss_weights(cfg, None)["aux"] == 1.0
        assert "Fig. 5.5" in row.differs
    table = tables.format_table("5.1", [(row, None) for row in dagger], demo=False)
    assert table.splitlines()[2].endswith("| differs from the thesis |")
    assert table.splitlines()[4].endswith(f"| {tables.MSE_WEIGHT} |")
