"""Joint batch augmentation and the CPU per-sample resizers."""
import pytest
import torch
import torch.nn.functional as F

from labelreg.data.transforms import FitPad, JointAugment, Resize, denormalize, normalize


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_batch(b=4, h=37, w=53, seed=0) -> dict:
    g = _gen(seed)
    label = torch.tensor([0, 3, 7, 255])[torch.randint(0, 4, (b, h, w), generator=g)]
    return {
        "image": torch.randint(0, 256, (b, 3, h, w), generator=g, dtype=torch.uint8),
        "label": label,
        "depth": torch.rand(b, h, w, generator=g) * 5 + 0.5,
        "name": [f"img{i}" for i in range(b)],
        "labeled": torch.ones(b, dtype=torch.bool),
    }


def _block_batch(b=4, h=48, w=64) -> dict:
    """Labels in 12×12 blocks; the red channel is 40·class and depth is 1 + class."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    label = ((ys // 12) * 3 + (xs // 12) * 5 + torch.arange(b).view(b, 1, 1)) % 6
    image = torch.full((b, 3, h, w), 90, dtype=torch.uint8)
    image[:, 0] = (40 * label).to(torch.uint8)
    return {"image": image, "label": label, "depth": 1.0 + label.float()}


CONFIGS = {
    "rrc": dict(crop_area=(0.08, 1.0)),
    "jitter": dict(crop_area=None, scale=(0.5, 1.5)),
    "plain": dict(crop_area=None, scale=None),
}


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("depth_interp", ["nearest", "masked_bilinear"])
def test_shapes_dtypes_and_label_values(config, depth_interp):
    batch = _random_batch()
    out = JointAugment((29, 31), depth_interp=depth_interp, generator=_gen(), **CONFIGS[config])(batch)
    assert out["image"].shape == (4, 3, 29, 31) and out["image"].dtype == torch.float32
    assert out["label"].shape == (4, 29, 31) and out["label"].dtype == torch.int64
    assert out["depth"].shape == (4, 29, 31) and out["depth"].dtype == torch.float32
    assert out["name"] is batch["name"] and out["labeled"] is batch["labeled"]
    # Nearest resampling: no interpolated label values, only originals (and 255 padding).
    assert set(out["label"].unique().tolist()) <= {0, 3, 7, 255}
    assert batch["image"].dtype == torch.uint8  # the input dict is not modified


def test_out_size_none_keeps_size_and_depth_optional():
    batch = _random_batch()
    del batch["depth"]
    out = JointAugment(None, generator=_gen())(batch)
    assert out["image"].shape == (4, 3, 37, 53) and out["label"].shape == (4, 37, 53)
    assert "depth" not in out


@pytest.mark.parametrize("config", ["rrc", "jitter"])
@pytest.mark.parametrize("depth_interp", ["nearest", "masked_bilinear"])
def test_geometry_is_joint(config, depth_interp):
    batch = _block_batch()
    # Jitter from s = 0.8 keeps output blocks ≥ 9.6 px, so 7×7 interiors exist.
    config = dict(CONFIGS[config], scale=(0.8, 1.5)) if config == "jitter" else CONFIGS[config]
    aug = JointAugment((40, 40), depth_interp=depth_interp, generator=_gen(1), **config)
    out = aug(batch)
    label, red = out["label"], denormalize(out["image"])[:, 0] * 255
    # Interior pixels: the 7×7 label neighbourhood is one class, so every source
    # pixel the bilinear image sample touches belongs to that class too. Windows
    # are only complete 3 pixels away from the output border.
    lf = label[:, None].float()
    uniform = torch.zeros_like(label, dtype=torch.bool)
    uniform[:, 3:-3, 3:-3] = (F.max_pool2d(lf, 7, 1) == -F.max_pool2d(-lf, 7, 1))[:, 0]
    uniform &= label != 255
    assert uniform.sum() > 400
    assert torch.allclose(red[uniform], 40.0 * label[uniform].float(), atol=0.05)
    assert torch.allclose(out["depth"][uniform], 1.0 + label[uniform].float(), atol=1e-4)
    if depth_interp == "nearest":
        # Same nearest sampling for both: depth is exactly 1 + label, and 0 only in padding.
        labelled = label != 255
        assert torch.equal(out["depth"][labelled], 1.0 + label[labelled].float())
        assert torch.all(out["depth"][~labelled] == 0)


def test_hflip_alone_is_exact():
    batch = _random_batch(b=8)
    out = JointAugment(None, crop_area=None, scale=None, generator=_gen(2))(batch)
    flipped = 0
    for i in range(8):
        if torch.equal(out["label"][i], batch["label"][i]):
            ref = lambda x: x  # noqa: E731
        else:
            ref = lambda x: x.flip(-1)  # noqa: E731
            flipped += 1
        assert torch.equal(out["label"][i], ref(batch["label"][i]))
        assert torch.equal(out["depth"][i], ref(batch["depth"][i]))
        # The crop box goes through kornia's float32 perspective solve: ~1e-5 off.
        assert torch.allclose(out["image"][i], ref(normalize(batch["image"][i])), atol=1e-4)
    assert 0 < flipped < 8


def test_masked_bilinear_never_mixes_invalid_depth():
    # Valid depth in [1, 1.5] on the left and [4, 5] on the right, a 3-pixel invalid
    # strip between them, some NaN: no bilinear footprint reaches both sides without
    # touching the strip, so every output is 0 or inside one of the two ranges.
    g = _gen(3)
    depth = torch.rand(4, 37, 53, generator=g)
    depth[..., :25] = 1 + 0.5 * depth[..., :25]
    depth[..., 28:] = 4 + depth[..., 28:]
    depth[..., 25:28] = 0
    depth[:, 5:9, 5:9] = float("nan")
    batch = {"image": torch.zeros(4, 3, 37, 53, dtype=torch.uint8), "label": torch.zeros(4, 37, 53, dtype=torch.long),
             "depth": depth}
    for config in CONFIGS.values():
        out = JointAugment((45, 61), depth_interp="masked_bilinear", generator=g, **config)(batch)["depth"]
        ok = (out == 0) | ((out >= 1) & (out <= 1.5)) | ((out >= 4) & (out <= 5))
        assert ok.all() and (out > 0).any()
        assert torch.isfinite(out).all()


def test_seeded_generator_reproducible():
    batch = _random_batch()
    runs = [JointAugment((29, 31), generator=_gen(seed))(batch) for seed in (5, 5, 6)]
    for key in ("image", "label", "depth"):
        assert torch.equal(runs[0][key], runs[1][key])
    assert not torch.equal(runs[0]["image"], runs[2]["image"])


def test_fallback_crop_is_central_and_deterministic():
    # Aspect ratio 10..20 never fits a 37×53 image, so every sample falls back to the largest box with
    # the ratio clamped to 10: full width 53, height 53/10 = 5.3, centred: y0 = (37 − 5.3)/2 = 15.85.
    # Ratio 1/20..1/10 the other way: full height 37, width 37/10 = 3.7, x0 = (53 − 3.7)/2 = 24.65.
    batch = _random_batch()
    for seed in (0, 1):
        for aspect, box in (((10, 20), [0.0, 15.85, 53.0, 5.3]), ((1 / 20, 1 / 10), [24.65, 0.0, 3.7, 37.0])):
            aug = JointAugment((8, 16), crop_area=(0.9, 1.0), crop_aspect=aspect, hflip=False, generator=_gen(seed))
            boxes = aug._sample_boxes(4, 37, 53)
            assert torch.allclose(boxes, torch.tensor([box] * 4, dtype=torch.float64))
    # Through forward, with label = 64·row + column: output pixel (i, j) samples the source at
    # y = 15.85 + (i + 0.5)·5.3/8 − 0.5 and x = (j + 0.5)·53/16 − 0.5, the nearest source pixel being
    # rows 16 16 17 18 18 19 20 20 (15.68 → 16, …, 20.32 → 20) and columns 1 4 8 11 … 51.
    rows = torch.tensor([16, 16, 17, 18, 18, 19, 20, 20])
    cols = torch.tensor([1, 4, 8, 11, 14, 18, 21, 24, 28, 31, 34, 38, 41, 44, 48, 51])
    ys, xs = torch.meshgrid(torch.arange(37), torch.arange(53), indexing="ij")
    batch["label"] = (64 * ys + xs).expand(4, 37, 53).clone()
    outs = [JointAugment((8, 16), crop_area=(0.9, 1.0), crop_aspect=(10, 20), hflip=False, generator=_gen(s))(batch)
            for s in (0, 1)]
    assert torch.equal(outs[0]["image"], outs[1]["image"])
    assert torch.equal(outs[0]["label"], (64 * rows[:, None] + cols[None, :]).expand(4, 8, 16))


def test_label_resizing_is_nearest():
    # 4×4 labels 0..15 halved: nearest-exact takes source pixel ⌊(i + 0.5)·2⌋ = 1, 3 in each direction,
    # i.e. labels 5 7 / 13 15; any averaging (bilinear, antialias) would produce 2.5 → 2 or 3 etc.
    label = torch.arange(16).view(4, 4)
    halved = torch.tensor([[5, 7], [13, 15]])
    # 2×3 labels doubled: every source pixel becomes a 2×2 block.
    small = torch.tensor([[0, 1, 2], [3, 4, 5]])
    doubled = torch.tensor([[0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2], [3, 3, 4, 4, 5, 5], [3, 3, 4, 4, 5, 5]])
    for source, size, expected in ((label, (2, 2), halved), (small, (4, 6), doubled)):
        h, w = source.shape
        sample = {"image": torch.zeros(3, h, w, dtype=torch.uint8), "label": source, "depth": 1.0 + source.float()}
        out = Resize(size)(sample)
        assert torch.equal(out["label"], expected) and torch.equal(out["depth"], 1.0 + expected.float())
        batch = {key: value[None] for key, value in sample.items()}
        out = JointAugment(size, train=False)(batch)  # eval: resize + normalise
        assert torch.equal(out["label"][0], expected) and torch.equal(out["depth"][0], 1.0 + expected.float())
    # FitPad scales a 2×3 label by min(4/2, 6/3) = 2 with the same nearest rule (no padding needed).
    out = FitPad((4, 6))({"image": torch.zeros(3, 2, 3, dtype=torch.uint8), "label": small})
    assert torch.equal(out["label"], doubled)


def test_eval_only_normalises_and_is_deterministic():
    batch = _random_batch()
    for aug in (JointAugment(None, train=False), JointAugment((37, 53), train=False),
                JointAugment((29, 31), generator=_gen()).eval()):
        size = aug.out_size or (37, 53)
        if size == (37, 53):
            out = aug(batch)
            assert torch.equal(out["image"], normalize(batch["image"]))
            assert torch.equal(out["label"], batch["label"]) and torch.equal(out["depth"], batch["depth"])
        else:
            out = aug(batch)
            assert out["image"].shape == (4, 3, 29, 31) and out["depth"].shape == (4, 29, 31)
            assert set(out["label"].unique().tolist()) <= {0, 3, 7, 255}
        again = aug(batch)
        assert all(torch.equal(out[k], again[k]) for k in ("image", "label", "depth"))
        assert out["name"] is batch["name"]


def test_normalize_round_trip():
    image = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8)
    x = normalize(image)
    assert x.dtype == torch.float32
    assert x.mean().abs() < 1.0  # roughly centred
    assert torch.allclose(denormalize(x) * 255, image.float(), atol=1e-3)


def test_scale_jitter_below_one_pads_with_ignore():
    # s = 0.5 on a 32×32 image with a 32×32 window: the source box is 64×64, so only
    # a quarter of the output (≈ 16×16 pixels) shows the image; the rest is padding.
    batch = _random_batch(b=3, h=32, w=32)
    batch["label"] = torch.zeros(3, 32, 32, dtype=torch.long)
    out = JointAugment((32, 32), crop_area=None, scale=(0.5, 0.5), hflip=False, generator=_gen())(batch)
    pad = out["label"] == 255
    assert pad.float().mean(dim=(1, 2)).tolist() == pytest.approx([0.75] * 3, abs=0.07)
    assert torch.all(out["depth"][pad] == 0)
    # Padding well away from the image border is black (raw 0).
    far = (F.max_pool2d((~pad)[:, None].float(), 3, 1, 1) == 0)[:, 0]
    assert far.any()
    assert torch.allclose(denormalize(out["image"]).permute(1, 0, 2, 3)[:, far], torch.tensor(0.0), atol=1e-6)


def _sample(h=30, w=50) -> dict:
    return {"image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8),
            "label": torch.randint(0, 21, (h, w)), "depth": torch.rand(h, w) + 1, "name": "x", "index": 3}


def test_resize():
    out = Resize((17, 23))(_sample())
    assert out["image"].shape == (3, 17, 23) and out["image"].dtype == torch.uint8
    assert out["label"].shape == (17, 23) and out["label"].dtype == torch.int64
    assert out["depth"].shape == (17, 23) and out["depth"].dtype == torch.float32
    assert out["name"] == "x" and out["index"] == 3
    sample = _sample()
    same = Resize((30, 50))(sample)
    assert torch.equal(same["image"], sample["image"])


def test_fitpad():
    # 30×50 into 40×40: scale min(40/30, 40/50) = 0.8 → 24×40, then 16 rows of padding.
    sample = _sample()
    out = FitPad((40, 40))(sample)
    assert out["image"].shape == (3, 40, 40) and out["label"].shape == (40, 40) and out["depth"].shape == (40, 40)
    assert torch.all(out["image"][:, 24:] == 0)
    assert torch.all(out["label"][24:] == 255) and torch.all(out["depth"][24:] == 0)
    assert out["label"][:24].max() < 21 and torch.all(out["depth"][:24] >= 1)
    # A tall image pads on the right instead, and small images are scaled up: 10×5 → 40×20.
    tall = FitPad((40, 40))(_sample(10, 5))
    assert torch.all(tall["label"][:, 20:] == 255) and tall["label"][:, :20].max() < 21


def test_crop_area_above_one_samples_boxes_larger_than_the_image():
    # Thesis §3.5.1: "a crop of random size in the 0.5 to 2.0 range of the original size and a random
    # aspect ratio of 3/4 to 4/3": areas above 1 must actually occur (boxes then extend past the image).
    aug = JointAugment((16, 16), crop_area=(0.5, 2.0), crop_aspect=(3 / 4, 4 / 3), generator=_gen())
    boxes = aug._sample_boxes(4000, 40, 60)
    area = boxes[:, 2] * boxes[:, 3] / (40 * 60)
    aspect = boxes[:, 2] / boxes[:, 3]
    assert area.min() >= 0.5 - 1e-9 and area.max() <= 2.0 + 1e-9
    assert area.mean().item() == pytest.approx(1.25, abs=0.03)  # uniform over the whole range
    assert (area > 1.5).float().mean().item() == pytest.approx(1 / 3, abs=0.03)
    assert aspect.min() >= 3 / 4 - 1e-9 and aspect.max() <= 4 / 3 + 1e-9
    # Every box overlaps the image, and a box larger than the image covers it in that dimension.
    x0, y0, bw, bh = boxes.unbind(1)
    assert torch.all(x0 < 60) and torch.all(x0 + bw > 0) and torch.all(y0 < 40) and torch.all(y0 + bh > 0)
    wide = bw >= 60
    assert torch.all(x0[wide] <= 1e-9) and torch.all(x0[wide] + bw[wide] >= 60 - 1e-9)
    # Through forward: the parts of a box outside the image are padding (label 255).
    batch = _random_batch(b=16, h=40, w=60)
    batch["label"].clamp_(max=7)
    out = aug(batch)
    assert (out["label"] == 255).any() and set(out["label"].unique().tolist()) <= {0, 3, 7, 255}


@pytest.mark.parametrize("config", ["rrc", "jitter"])
def test_boxes_follow_each_images_own_size_in_a_padded_batch(config):
    # pad_collate pads smaller images at the bottom/right (label 255) and records their size; crops
    # and jitter windows are drawn inside each image, never in that padding.
    b, h, w = 16, 40, 60
    sizes = torch.tensor([[20, 30], [40, 60], [20, 60], [40, 30]] * (b // 4))
    batch = _random_batch(b=b, h=h, w=w)
    batch["label"].clamp_(max=7)
    for i, (hi, wi) in enumerate(sizes.tolist()):
        batch["label"][i, hi:] = 255
        batch["label"][i, :, wi:] = 255
    batch["size"] = sizes
    options = dict(crop_area=(0.08, 1.0)) if config == "rrc" else dict(crop_area=None, scale=(1.0, 1.5))
    aug = JointAugment((12, 12), generator=_gen(), **options)
    boxes = aug._sample_boxes(b, sizes[:, 0], sizes[:, 1], (12, 12))
    x0, y0, bw, bh = boxes.unbind(1)
    assert torch.all(x0 >= 0) and torch.all(y0 >= 0)
    assert torch.all(x0 + bw <= sizes[:, 1] + 1e-9) and torch.all(y0 + bh <= sizes[:, 0] + 1e-9)
    out = aug(batch)
    assert not (out["label"] == 255).any()
    assert torch.equal(out["size"], sizes)
