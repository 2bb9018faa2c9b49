"""labelreg.regularize around segmenters labelreg does not know: torchvision's and a user's own U-Net."""
import copy
import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import labelreg
from labelreg import bench
from labelreg.cli import main
from labelreg.config import Config, ConfigError
from labelreg.losses import masked_cross_entropy, masked_one_hot_mse
from labelreg.models import LabelAutoencoder, build_segmenter
from labelreg.models.dropin import tap_stride
from labelreg.models.tvseg import TorchvisionSegmenter, build_torchvision_segmenter
from labelreg.storage import load_checkpoint, save_checkpoint
from labelreg.tasks.segmentation import build_model, default_loss_weights
from torchvision.models import mobilenet_v3_large, resnet50, segmentation  # after labelreg (labelreg._compat)

README = Path(__file__).resolve().parents[2] / "docs" / "regularizer.md"  # the training-loop example
CLASSES = 5
SIZE = (65, 97)  # odd: the code grid is ⌈65/16⌉×⌈97/16⌉ = 5×7
pytestmark = pytest.mark.usefixtures("one_thread")  # on the shared 2-core CPU a second thread mostly waits


class ToyUNet(nn.Module):
    """A user's model: four 2× downsamplings to a 1/16 bottleneck, skips, a plain tensor out."""

    def __init__(self, classes: int = CLASSES, width: int = 8) -> None:
        super().__init__()
        block = lambda i, o: nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU())  # noqa: E731
        self.down = nn.ModuleList([block(3, width)] + [block(width, width) for _ in range(3)])
        self.bottleneck = block(width, width)
        self.up = nn.ModuleList(block(2 * width, width) for _ in range(4))
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x):
        skips = []
        for layer in self.down:
            x = layer(x)
            skips.append(x)
            x = F.max_pool2d(x, 2, ceil_mode=True)
        x = self.bottleneck(x)
        for layer, skip in zip(self.up, reversed(skips)):
            x = layer(torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="bilinear"), skip], 1))
        return self.head(x)


def tv(name):
    return lambda: getattr(segmentation, name)(weights=None, weights_backbone=None, num_classes=CLASSES)


# name: (constructor, tap, parameters the aux loss must reach, parameters it must not reach, input size)
CASES = {
    "deeplabv3_resnet50": (tv("deeplabv3_resnet50"), "classifier.0", ("backbone.", "classifier.0."),
                           ("classifier.1.", "classifier.2.", "classifier.4."), SIZE),
    "fcn_resnet50": (tv("fcn_resnet50"), "backbone.layer4", ("backbone.",), ("classifier.",), (33, 49)),  # cheaper
    "lraspp_mobilenet_v3_large": (tv("lraspp_mobilenet_v3_large"), None, ("backbone.", "classifier.cbr."),
                                  ("classifier.scale.", "classifier.low_classifier.", "classifier.high_classifier."),
                                  SIZE),
    "toy_unet": (ToyUNet, None, ("down.", "bottleneck."), ("up.", "head."), SIZE),
}


@pytest.fixture(scope="module")
def autoencoder():
    torch.manual_seed(0)
    model = LabelAutoencoder(CLASSES, "32")
    with torch.no_grad():  # non-trivial running statistics, so "unchanged" means something
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model


def main_output(output):
    return output["out"] if isinstance(output, dict) else output


@pytest.mark.parametrize("name", list(CASES))
def test_wrapped_model_trains_with_the_frozen_decoder_and_exports_unchanged(name, autoencoder):
    build, tap, below, above, size = CASES[name]
    torch.manual_seed(0)
    model = build()
    keys = list(model.state_dict())
    reg = labelreg.regularize(model, autoencoder, tap=tap)
    assert reg.tap == (tap or {"lraspp_mobilenet_v3_large": "classifier.cbr", "toy_unet": "bottleneck"}[name])
    assert type(reg.export()) is type(model) and list(model.state_dict()) == keys
    decoder_before = copy.deepcopy(reg.decoder.state_dict())
    model_before = copy.deepcopy(model.state_dict())
    x, label = torch.randn(2, 3, *size), torch.randint(0, CLASSES, (2, *size))
    label[:, :5] = 255

    # the auxiliary loss alone reaches the tap and everything below it, nothing above it, not the decoder
    reg.train()
    assert not reg.decoder.training and all(not m.training for m in reg.decoder.modules())
    output, aux = reg(x)
    assert aux.shape == (2, CLASSES, *size) and main_output(output).shape == (2, CLASSES, *size)
    reg.loss(aux, label).backward()
    grads = {key: p.grad for key, p in model.named_parameters()}
    reached = [key for key in grads if key.startswith(below)]
    assert reached and all(grads[key] is not None and grads[key].abs().sum() > 0 for key in reached), \
        [key for key in reached if grads[key] is None or not grads[key].abs().sum() > 0][:5]
    untouched = [key for key in grads if key.startswith(above)]
    assert untouched and all(grads[key] is None for key in untouched)
    assert all(p.grad is None and not p.requires_grad for p in reg.decoder.parameters())
    assert reg.to_code.weight.grad is not None

    # optimizer steps on everything (momentum, weight decay) after a train-mode forward: the decoder's
    # weights and BatchNorm statistics stay bit-identical, while the segmenter's own statistics moved
    optimizer = torch.optim.SGD(reg.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    optimizer.step()
    optimizer.step()
    after = reg.decoder.state_dict()
    assert all(torch.equal(decoder_before[key], after[key]) for key in decoder_before)
    assert any(not torch.equal(value, model.state_dict()[key]) for key, value in model_before.items()
               if "running_mean" in key)

    # export: the user's model, strict-loadable into a fresh copy, same outputs, no hooks left behind
    reg.eval()
    with torch.no_grad():
        wrapped_output, _ = reg(x)
        exported = reg.export()
        assert exported is model and list(exported.state_dict()) == keys
        assert not any(m._forward_hooks or m._forward_pre_hooks for m in exported.modules())
        fresh = build()
        fresh.load_state_dict(exported.state_dict(), strict=True)
        fresh.eval()  # the wrapper ran the exported model itself: its output is the exported model's
        torch.testing.assert_close(main_output(fresh(x)), main_output(wrapped_output), rtol=0, atol=0)


@pytest.fixture(scope="module")
def lraspp():
    torch.manual_seed(1)
    return tv("lraspp_mobilenet_v3_large")()


def test_tap_messages(lraspp, autoencoder):
    with pytest.raises(ValueError, match=r"not a module.*nearby names: .*backbone\.16"):
        labelreg.regularize(lraspp, autoencoder, tap="backbone.61")
    with pytest.raises(ValueError, match=r"returns a value of type OrderedDict.*\n.*1/16: .*backbone\.16"):
        labelreg.regularize(lraspp, autoencoder, tap="backbone")
    dilated = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Conv2d(4, 4, 3, stride=2, padding=1),
                            nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.Conv2d(4, CLASSES, 3, padding=2, dilation=2))
    with pytest.raises(ValueError, match=r"1/16 of the input[\s\S]*1/8: 3, 2\n  1/4: 1\n  1/2: 0"):
        labelreg.regularize(dilated, autoencoder)
    assert labelreg.regularize(dilated, autoencoder, tap="3").tap == "3"  # resized from 1/8
    with pytest.raises(ValueError, match="predicts 3 classes, the autoencoder's decoder 5"):
        labelreg.regularize(ToyUNet(classes=3), autoencoder)


def test_loss_helper_and_checkpoint_path(autoencoder, tmp_path):
    path = tmp_path / "ae.pt"
    save_checkpoint(path, {"model": autoencoder.state_dict(), "config": {"task": "autoencoder",
                                                                         "model": {"variant": "32"}}})
    torch.manual_seed(0)
    net = ToyUNet()
    reg = labelreg.regularize(net, path, weight=0.25)
    assert all(torch.equal(a, b) for a, b in zip(reg.decoder.state_dict().values(),
                                                 autoencoder.decoder.state_dict().values()))
    x, label = torch.randn(2, 3, 33, 47), torch.randint(0, CLASSES, (2, 33, 47))
    result = reg(x)
    torch.testing.assert_close(reg.loss(result, label), 0.25 * masked_cross_entropy(result[1], label))
    mse = labelreg.regularize(net, autoencoder, loss="mse", weight=2.0)
    output, aux = mse(x)
    torch.testing.assert_close(mse.loss(aux, label), 2.0 * masked_one_hot_mse(aux, label))
    assert all(p.requires_grad for p in autoencoder.parameters())  # the caller's autoencoder is left alone


def test_feature_changed_in_place_after_the_tap(autoencoder):
    """The branch reads the tap's output as the tap returned it, and backward still works."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=16, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                        nn.Conv2d(8, CLASSES, 1), nn.Upsample(scale_factor=16))
    reg = labelreg.regularize(net, autoencoder, tap="1")
    x = torch.randn(2, 3, 64, 64)
    _, aux = reg(x)
    reg.loss(aux, torch.zeros(2, 64, 64, dtype=torch.long)).backward()
    assert net[0].weight.grad is not None and net[3].weight.grad is None
    reg.eval()
    with torch.no_grad():
        expected = reg.decoder(reg.to_code(net[1](net[0](x))))  # before the in-place ReLU
        torch.testing.assert_close(reg(x)[1], F.interpolate(expected, size=(64, 64), mode="bilinear"))


def test_torchvision_adapter_keeps_torchvision_keys_and_outputs(tmp_path):
    torch.manual_seed(0)
    adapter = build_torchvision_segmenter("tv:lraspp_mobilenet_v3_large", num_classes=CLASSES).eval()
    reference = tv("lraspp_mobilenet_v3_large")()
    assert list(adapter.state_dict()) == list(reference.state_dict())
    reference.load_state_dict(adapter.state_dict())
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        torch.testing.assert_close(adapter(x)["seg"], reference.eval()(x)["out"])
    # a backbone file (torchvision's classification layout) loads strictly; a wrong one names the keys
    classifier = mobilenet_v3_large(weights=None)
    torch.save(classifier.state_dict(), tmp_path / "mnv3.pth")
    loaded = build_torchvision_segmenter("tv:lraspp_mobilenet_v3_large", num_classes=CLASSES,
                                         pretrained_backbone=str(tmp_path / "mnv3.pth"))
    torch.testing.assert_close(loaded.backbone["0"][0].weight, classifier.features[0][0].weight, rtol=0, atol=0)
    torch.save({"features.0.0.weight": classifier.features[0][0].weight}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="bad.pth.*missing keys"):
        build_torchvision_segmenter("tv:lraspp_mobilenet_v3_large", num_classes=CLASSES,
                                    pretrained_backbone=str(tmp_path / "bad.pth"))
    with pytest.raises(ValueError, match="available: .*tv:fcn_resnet101"):
        build_segmenter("tv:nope", num_classes=CLASSES)
    frozen = build_torchvision_segmenter("tv:lraspp_mobilenet_v3_large", num_classes=CLASSES, freeze_bn=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen.backbone.modules())


def test_resnet_backbone_file_and_config_errors(tmp_path):
    classifier = resnet50(weights=None)  # its fc.* is the only part the segmenter does not have
    torch.save(classifier.state_dict(), tmp_path / "r50.pth")
    cfg = Config(task="segmentation")
    cfg.model.name, cfg.model.pretrained_backbone = "tv:fcn_resnet50", str(tmp_path / "r50.pth")
    model = build_model(cfg, CLASSES)
    torch.testing.assert_close(model.backbone.layer4[2].conv3.weight, classifier.layer4[2].conv3.weight, rtol=0, atol=0)
    assert set(model.param_groups()) == {"backbone", "head"}
    for name, kind, message in [("deeplabv3_resnet50", "none", "available segmenters"),
                                ("tv:nope", "none", "available segmenters"),
                                ("tv:lraspp_mobilenet_v3_large", "encoder", "zoom-out")]:
        cfg = Config(task="segmentation")
        cfg.model.name, cfg.regularizer.kind = name, kind
        with pytest.raises(ConfigError, match=message):
            build_model(cfg, CLASSES)
    cfg = Config(task="segmentation")
    cfg.model.name, cfg.model.options = "tv:lraspp_mobilenet_v3_large", {"aux_loss": True}
    with pytest.raises(ConfigError, match="no auxiliary classifier"):
        build_model(cfg, CLASSES)


def test_fcn_aux_classifier_becomes_the_psp_aux_term():
    fcn = build_torchvision_segmenter("tv:fcn_resnet50", num_classes=CLASSES, aux_loss=True)
    assert isinstance(fcn, TorchvisionSegmenter) and fcn.aux_head is fcn.aux_classifier
    assert default_loss_weights(Config(), fcn) == {"psp_aux": 0.5}
    with torch.no_grad():
        outputs = fcn.eval()(torch.randn(1, 3, 33, 40))
    assert outputs["seg"].shape == outputs["psp_aux_seg"].shape == (1, CLASSES, 33, 40)


def readme_loop() -> str:
    section = README.read_text().split("## Use it in your own training loop", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_training_loop_runs(autoencoder, tmp_path):
    """The README's loop, as written, on a tiny batch: no download (the backbone weights become None) and,
    for time, DeepLabV3 on MobileNetV3 instead of ResNet-50 (the same DeepLabV3 head, ASPP at ``classifier.0``)."""
    code = readme_loop()
    swaps = {'weights_backbone="IMAGENET1K_V1"': "weights_backbone=None", "num_classes=21": f"num_classes={CLASSES}",
             "deeplabv3_resnet50": "deeplabv3_mobilenet_v3_large"}
    for old, new in swaps.items():
        assert old in code, old
        code = code.replace(old, new)
    assert "for images, labels in loader:" in code
    phase_one = re.search(r'"([^"]+\.pt)"', code).group(1)  # the autoencoder checkpoint it names
    (tmp_path / phase_one).parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(tmp_path / phase_one, {"model": autoencoder.state_dict(),
                                           "config": {"task": "autoencoder", "model": {"variant": "32"}}})
    torch.manual_seed(0)
    loader = [(torch.randn(2, 3, 33, 49), torch.randint(0, CLASSES, (2, 33, 49)))]
    namespace = {"loader": loader}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - our own documentation
    model = namespace["model"]
    assert type(model).__name__ == "DeepLabV3" and not any(m._forward_hooks for m in model.modules())
    saved = [path for path in tmp_path.rglob("*.pt") if path != tmp_path / phase_one]
    assert saved and set(torch.load(saved[0], weights_only=True)) == set(model.state_dict())


def test_train_seg_with_a_torchvision_model(tiny_synthetic, tmp_path, capsys):
    """tv:lraspp through labelreg train-seg with the regularizer, then eval (--aux, and plain: the tv: model
    without the branch) and export."""
    ae = tmp_path / "ae.pt"
    save_checkpoint(ae, {"model": LabelAutoencoder(40, "32").state_dict(),
                         "config": {"task": "autoencoder", "model": {"variant": "32"}}})
    config = tmp_path / "tv.yaml"
    config.write_text(f"""task: segmentation
data: {{dataset: nyu, root: {tiny_synthetic.root}, train_split: train, val_split: test, crop_size: [32, 48],
       batch_size: 4, eval_batch_size: 4, num_workers: 0, train_limit: 4, val_limit: 4}}
model: {{name: "tv:lraspp_mobilenet_v3_large"}}
optim: {{optimizer: adam, lr: 0.001}}
train: {{epochs: 1, eval_every: 1, log_every: 1, images_to_log: 1}}
output_dir: {tmp_path}
""")
    config, common = str(config), []
    assert main(["train-seg", "--config", config, *common, "name=tvreg", "regularizer.kind=decoder",
                 f"regularizer.autoencoder={ae}"]) == 0
    best = tmp_path / "tvreg" / "checkpoints" / "best.pt"
    checkpoint = load_checkpoint(best)
    resolved = json.loads((tmp_path / "tvreg" / "resolved.json").read_text())  # what the run derived; config as given
    assert resolved["tap"] == "classifier.cbr" and resolved["loss_weights"] == {"aux": 0.5}
    assert "val/aux_miou" in checkpoint["metrics"] and "train/aux" in checkpoint["metrics"]
    assert main(["eval", "--checkpoint", str(best), "--aux"]) == 0
    assert json.loads((tmp_path / "tvreg" / "eval_test_aux.json").read_text())["metrics"]["aux_miou"] == \
        pytest.approx(checkpoint["metrics"]["val/aux_miou"], abs=1e-6)
    assert main(["eval", "--checkpoint", str(best)]) == 0  # the plain tv: model (build_model without the branch)
    exported = tmp_path / "plain.pt"
    assert main(["export", "--checkpoint", str(best), "--out", str(exported)]) == 0
    reference = segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=40)
    reference.load_state_dict(load_checkpoint(exported)["model"], strict=True)


def test_bench_times_the_dropin_wrapper():
    case = bench.Case(model="tv:lraspp_mobilenet_v3_large", batch=2, size=(32, 48), num_classes=CLASSES,
                      regularizer=True, dropin=True)
    assert case.label().endswith("+reg dropin")
    model = bench.build_model(case)
    assert type(model).__name__ == "RegularizedOutputs" and model.tap == "classifier.cbr"
    plain = bench.build_model(bench.Case(model=case.model, num_classes=CLASSES, dropin=True))
    assert isinstance(plain, TorchvisionSegmenter)  # LR-ASPP's plain row too (torchvision's own forward)
    image, label = bench.random_batch(case, torch.device("cpu"))
    decoder = copy.deepcopy(model.decoder.state_dict())
    bench.train_step_fn(model, case, image, label, torch.device("cpu"))()  # the trainer's loss and optimizer
    assert model.to_code.weight.grad is not None
    assert all(torch.equal(value, model.decoder.state_dict()[key]) for key, value in decoder.items())



def test_a_code_cell_covers_the_same_pixels_as_in_phase_one_at_any_size(autoencoder):
    """At 180×240 a floor-rounding 1/16 tap is 11×15 and the code 12×15: tap cell k is code cell k (no stretch),
    the partial last row copies its neighbour, and the decoder's output is cut to the image's top-left H×W as
    phase one crops its padded reconstruction. (Resizing the tap to the code grid shifts the middle rows.)"""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 16, stride=16), nn.BatchNorm2d(8), nn.Conv2d(8, CLASSES, 1))
    reg = labelreg.regularize(net, autoencoder, tap="1").eval()
    assert reg.tap_stride == (16.0, 16.0)
    x = torch.randn(1, 3, 180, 240)
    with torch.no_grad():
        _, aux, code = reg._run(x)
        tap = net[1](net[0](x))
        assert tap.shape[-2:] == (11, 15) and code.shape[-2:] == (12, 15)
        torch.testing.assert_close(code[..., :11, :], reg.to_code(tap))
        torch.testing.assert_close(code[..., 11, :], code[..., 10, :])
        torch.testing.assert_close(aux, reg.decoder(code)[..., :180, :240])


@pytest.mark.parametrize("size, shape, stride", [((64, 96), (4, 6), (16.0, 16.0)), ((180, 240), (11, 15), (16.0, 16.0)),
                                                 ((65, 97), (9, 13), (8.0, 8.0)), ((60, 90), (5, 7), (12.0, 90 / 7))])
def test_tap_stride_reads_the_nominal_power_of_two(size, shape, stride):
    assert tap_stride(size, torch.Size(shape)) == pytest.approx(stride)
