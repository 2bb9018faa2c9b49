"""Every shipped config loads, and the thesis recipes keep the thesis' data, optimiser and inference settings.

The recipes (README "Configs for the thesis' rows"):

- §3.5.1 (Tables 3.8, 3.9): VOC trainaug, ImageNet backbone with frozen BatchNorm, Adam, classifier 1e-4 /
  backbone 1e-5 for 60 epochs then ÷10 for 40, batch 12 at 256² and 8 at 384²; "a random horizontal flip
  and a crop of random size in the 0.5 to 2.0 range of the original size and a random aspect ratio of 3/4
  to 4/3"; multi-scale inference at shorter sides 256, 384 and the original, with flips.
- §5.4.1 (Tables 5.1, 5.3): VOC train; from scratch: Adam, batch 12, 1e-4 for 80 epochs then 1e-5 for 20;
  ImageNet: classifier alone 10 epochs at 1e-4, then end to end 40 at 1e-5; "a random horizontal flip and
  a crop of random size in the (0.08 to 1.0) of the original size and a random aspect ratio of 3/4 to
  4/3 ..., which is finally resized to create a 256×256 image", when augmentation is used.

A failing test here means a config edit moved a recipe away from the thesis: fix the config, or, if the
change is deliberate, the expectation and the README's "differs from the thesis" column together.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from labelreg.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ALL = sorted(p for p in CONFIGS.rglob("*.yaml") if "_base_" not in p.relative_to(CONFIGS).parts)

ASPECT = (3 / 4, 4 / 3)

SEC_3_5_1 = {  # config → crop side, batch size, multi-scale + flip inference
    "zoomout-densenet121_voc12aug_256": (256, 12, False),
    "zoomout-densenet201_voc12aug_256": (256, 12, False),
    "zoomout-densenet201_voc12aug_384_ms": (384, 8, True),
    "pspnet-resnet101_voc12aug_256": (256, 12, False),
    "zoomout-resnet101_voc12aug_256": (256, 12, False),
    "zoomout-resnet101-os8_voc12aug_256": (256, 12, False),
    "zoomout-resnet101-os8_voc12aug_384": (384, 8, False),
}
SCRATCH = {  # §5.4.1 from scratch (Table 5.1): config → augmentation used
    "zoomout-vgg16_voc12_256": False,
    "zoomout-vgg16_voc12_256_flipcrop": True,
    "fcn8s-vgg16_voc12_256_flipcrop": True,
    "zoomout-densenet67_voc12_256": False,
    "zoomout-densenet67_voc12_256_flipcrop": True,
}
IMAGENET = {  # §5.4.1 with ImageNet pretraining (Table 5.3): config → augmentation used
    "zoomout-vgg16_voc12_256_imagenet": False,
    "zoomout-densenet121_voc12_256_imagenet_flipcrop": True,
    "pspnet-resnet101_voc12_256_imagenet_flipcrop": True,
}
AUTOENCODERS = ["ae-32_voc12aug_256", "ae-128_voc12aug_256", "ae-256_voc12aug_256"]


def _load(name: str):
    return load_config(CONFIGS / f"{name}.yaml")


def test_every_config_loads_and_base_files_are_only_bases():
    assert len(ALL) >= 30
    for path in ALL:
        cfg = load_config(path)
        if path.parent == CONFIGS:  # (demo/ and weak/ name their runs their own way)
            assert cfg.name == path.stem, f"{path}: name {cfg.name!r} differs from the file name"
    named = {p.stem for p in ALL}
    assert set(SEC_3_5_1) | set(SCRATCH) | set(IMAGENET) | set(AUTOENCODERS) <= named
    for base in (CONFIGS / "_base_").glob("*.yaml"):
        assert "name:" not in base.read_text(), f"{base} is a base (no run name of its own)"


def _assert_random_resized_crop(data, area, side):
    assert data.crop_area == pytest.approx(area)
    assert data.crop_aspect == pytest.approx(ASPECT, rel=1e-6)
    assert data.scale is None
    assert data.hflip is True
    assert data.crop_size == [side, side]
    assert data.canvas is None  # crops are drawn from each image's own extent, not a fit-and-pad canvas


@pytest.mark.parametrize("name", SEC_3_5_1)
def test_section_3_5_1_recipes(name):
    side, batch, multiscale = SEC_3_5_1[name]
    cfg = _load(name)
    _assert_random_resized_crop(cfg.data, (0.5, 2.0), side)
    assert cfg.data.batch_size == batch
    assert (cfg.data.dataset, cfg.data.train_split, cfg.data.val_split) == ("voc", "trainaug", "val")
    assert cfg.data.eval_size is None  # predictions at the original size
    assert cfg.model.freeze_bn is True and cfg.model.freeze_backbone_epochs == 0
    if name.startswith("zoomout") or name.startswith("pspnet"):
        assert cfg.model.pretrained_backbone == "imagenet"
    assert cfg.optim.optimizer == "adam"
    assert cfg.optim.group_lr == {"backbone": pytest.approx(1e-5), "head": pytest.approx(1e-4)}
    assert (cfg.optim.schedule, cfg.optim.milestones, cfg.optim.gamma) == ("step", [60], pytest.approx(0.1))
    assert cfg.train.epochs == 100
    if multiscale:
        assert (sorted(cfg.eval.short_sides), cfg.eval.scales, cfg.eval.flip) == ([256, 384], [1.0], True)
    else:
        assert (cfg.eval.short_sides, cfg.eval.scales, cfg.eval.flip) == ([], [1.0], False)


@pytest.mark.parametrize("name", [*SCRATCH, *IMAGENET])
def test_section_5_4_1_recipes(name):
    augmented = {**SCRATCH, **IMAGENET}[name]
    cfg = _load(name)
    if augmented:
        _assert_random_resized_crop(cfg.data, (0.08, 1.0), 256)
    else:  # "We work with 256×256 input" (§5.3.2): fitted into a 256² canvas, no randomness
        assert (cfg.data.crop_area, cfg.data.scale, cfg.data.hflip) == (None, None, False)
        assert cfg.data.canvas == [256, 256]
    assert cfg.data.batch_size == 12
    assert (cfg.data.dataset, cfg.data.train_split, cfg.data.val_split) == ("voc", "train", "val")
    assert cfg.optim.optimizer == "adam" and cfg.optim.lr == pytest.approx(1e-4) and not cfg.optim.group_lr
    assert (cfg.optim.schedule, cfg.optim.gamma) == ("step", pytest.approx(0.1))
    assert (cfg.eval.short_sides, cfg.eval.scales, cfg.eval.flip) == ([], [1.0], False)
    if name in SCRATCH:
        assert cfg.model.pretrained_backbone is None
        assert (cfg.optim.milestones, cfg.train.epochs) == ([80], 100)
        assert cfg.model.freeze_backbone_epochs == 0
    else:
        assert cfg.model.pretrained_backbone == "imagenet"
        assert (cfg.optim.milestones, cfg.train.epochs) == ([10], 50)
        assert cfg.model.freeze_backbone_epochs == 10
        if name.startswith("zoomout"):
            assert cfg.model.options.get("normalize") is True  # zero mean, unit variance zoom-out features


@pytest.mark.parametrize("name", AUTOENCODERS)
def test_autoencoder_recipes(name):
    cfg = _load(name)
    assert cfg.data.crop_area == pytest.approx((0.08, 1.0))
    assert cfg.data.crop_aspect == pytest.approx(ASPECT, rel=1e-6)
    assert (cfg.data.scale, cfg.data.hflip, cfg.data.crop_size) == (None, True, [256, 256])
    assert cfg.model.variant == name.split("_")[0].split("-")[1]
    assert (cfg.optim.optimizer, cfg.optim.milestones, cfg.train.epochs, cfg.data.batch_size) == ("adam", [80], 100, 12)


CAMVID = sorted((CONFIGS / "camvid").glob("*.yaml"))


@pytest.mark.parametrize("path", CAMVID, ids=lambda p: p.stem)
def test_camvid_recipes_score_full_labels_at_their_training_size(path):
    """configs/camvid: SegNet's split (train, monitored on val), no resize of the labels anywhere, segmenters read
    their training height at evaluation (labelreg.data.camvid's protocol) and train with median frequency
    balancing; augmentation only where the name says flipcrop (Table 5.1's two regimes)."""
    cfg = load_config(path)
    data = cfg.data
    assert cfg.name == f"camvid/{path.stem}" and data.dataset == "camvid" and data.root == "../shared/data/camvid"
    assert (data.train_split, data.val_split) == ("train", "val")
    assert data.canvas is None and data.eval_size is None and data.scale is None
    height, width = data.crop_size
    assert 3 * width == 4 * height  # the frames' 480×360 aspect
    if cfg.task == "autoencoder":
        assert cfg.model.variant in ("32", "128") and data.crop_area == [0.25, 1.0] and data.hflip
        return
    assert cfg.task == "segmentation" and cfg.train.loss == "median_frequency"
    assert cfg.eval.scales == [] and cfg.eval.short_sides == [height] and not cfg.eval.flip
    if "flipcrop" in path.stem:
        assert data.crop_area == [0.08, 1.0] and data.crop_aspect == pytest.approx([1.0, 16 / 9]) and data.hflip
    elif "tiny" not in path.stem:
        assert data.crop_area is None and not data.hflip
        assert (cfg.optim.optimizer, cfg.optim.lr, data.batch_size) == ("adam", 1e-4, 12)
        assert cfg.optim.milestones == [int(0.8 * cfg.train.epochs)]


def test_the_camvid_recipe_set():
    names = {path.stem for path in CAMVID}
    assert {"ae-32_camvid", "ae-128_camvid", "zoomout-densenet67_camvid_180", "zoomout-densenet67_camvid_180_flipcrop",
            "zoomout-vgg16_camvid_180", "zoomout-vgg16_camvid_180_flipcrop", "deeplabv3-resnet50_camvid_180_flipcrop",
            "zoomout-densenet67-tiny_camvid_72", "zoomout-densenet67_camvid_180_flipcrop_dec128"} == names
    assert load_config(CONFIGS / "camvid" / "deeplabv3-resnet50_camvid_180_flipcrop.yaml").model.name.startswith("tv:")
    regularized = load_config(CONFIGS / "camvid" / "zoomout-densenet67_camvid_180_flipcrop_dec128.yaml")
    assert regularized.regularizer.autoencoder == "runs/camvid/ae-128_camvid/checkpoints/best.pt"
