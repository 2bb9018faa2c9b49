"""Zoom-out features for the weak pipeline: shapes, dataset-wide standardisation, unit norm, cache, errors."""
from pathlib import Path

import numpy as np
import pytest
import torch

from labelreg.config import ConfigError, load_config
from labelreg.models.backbones import build_backbone
from labelreg.weak.features import (ChannelStats, ZoomOutExtractor, build_extractor, label_to_grid, standardize,
                                    unit_norm)
from labelreg.weak.store import FeatureStore, extract_features, split_dataset
from labelreg.weak.tags import tags_from_label

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo" / "weak-tiny_synth-voc.yaml"
TINY = {"growth_rate": 12, "block_config": [2, 2, 2, 2], "stem_channels": [16, 16, 24]}


def tiny_config(root, out, *extra):
    return load_config(CONFIG, [f"data.root={root}", f"output_dir={out}", "name=tiny", "weak.image_size=[32,40]",
                                "weak.feature_batch_size=4", "weak.pretrain_epochs=0", *extra])  # random init


def test_vgg16_zoomout_has_the_thesis_dimensions():
    with torch.device("meta"):  # architecture only
        extractor = ZoomOutExtractor(build_backbone("vgg16"))
    assert len(extractor.taps) == 13 and extractor.dim == 4224  # §4.4.1
    assert extractor.dim + extractor.global_dim == 8320  # with fc7


def test_extractor_resizes_taps_to_a_quarter():
    torch.manual_seed(0)
    extractor = build_extractor(backbone="densenet67", backbone_options=TINY, taps=["stem", "block1", "block3"])
    maps, scene = extractor(torch.randn(2, 3, 50, 66))
    assert maps.shape == (2, 24 + 48 + 48, 13, 17) and scene.shape == (2, 48)  # ⌈50/4⌉ × ⌈66/4⌉
    plain = build_extractor(backbone="densenet67", backbone_options=TINY, global_feature=False)
    assert plain(torch.randn(1, 3, 32, 32))[1] is None and plain.global_dim == 0


def test_grid_labels_are_read_at_cell_centres():
    label = torch.arange(12).repeat(6, 1)  # value = column, 12 columns → 4 cells of 3 pixels
    assert label_to_grid(label, (2, 4))[0].tolist() == [1, 4, 7, 10]  # the middle column of each cell


def test_channel_stats_do_not_depend_on_batching():
    generator = torch.Generator().manual_seed(1)
    data = torch.randn(7, 3, 4, 5, generator=generator, dtype=torch.float64) * torch.tensor([1.0, 5.0, 0.1]).view(
        1, 3, 1, 1) + torch.tensor([100.0, -3.0, 0.5]).view(1, 3, 1, 1)
    stats = ChannelStats(3)
    for part in (data[:1], data[1:5], data[5:]):
        stats.update(part)
    mean, std = stats.result()
    flat = data.transpose(0, 1).reshape(3, -1).numpy()
    assert np.allclose(mean.numpy(), flat.mean(axis=1), rtol=1e-6)
    assert np.allclose(std.numpy(), flat.std(axis=1), rtol=1e-5)
    dead = ChannelStats(1)
    dead.update(torch.ones(2, 1, 3, 3))
    assert dead.result()[1].item() == 1.0  # a constant channel is only centred


def test_standardize_then_unit_norm():
    x = torch.randn(2, 4, 3, 3) * 3 + 1
    mean, std = x.transpose(0, 1).reshape(4, -1).mean(1), x.transpose(0, 1).reshape(4, -1).std(1, unbiased=False)
    z = standardize(x, mean, std)
    assert torch.allclose(z.transpose(0, 1).reshape(4, -1).mean(1), torch.zeros(4), atol=1e-5)
    assert torch.allclose(unit_norm(z).norm(dim=1), torch.ones(2, 3, 3), atol=1e-5)


def test_extracted_features_are_standardised_over_the_training_set(tiny_synthetic, tmp_path):
    cfg = tiny_config(tiny_synthetic.root, tmp_path, "weak.cache_dtype=float32")
    summary = extract_features(cfg, device=torch.device("cpu"), log=lambda m: None, progress=False)
    assert summary["dim"] == 216 and summary["global_dim"] == 48 and summary["grid"] == [8, 10]
    store = FeatureStore(cfg, "train")
    maps = store.zoomout(list(range(len(store))))
    assert maps.shape == (len(store), 216, 8, 10)
    per_channel = maps.transpose(0, 1).reshape(216, -1)
    assert per_channel.mean(1).abs().max() < 1e-4  # zero mean per channel over all training locations
    live = per_channel.std(1, unbiased=False) > 1e-3
    assert torch.allclose(per_channel.std(1, unbiased=False)[live], torch.ones(int(live.sum())), atol=1e-3)
    assert torch.allclose(unit_norm(maps).norm(dim=1), torch.ones(len(store), 8, 10), atol=1e-5)
    scene = store.global_features(list(range(len(store))))
    assert scene.mean(0).abs().max() < 1e-4
    assert store.segmentation_input([0, 1]).shape == (2, 216 + 48, 8, 10)
    # tags come from the labels; the grid labels keep void
    dataset = split_dataset(cfg, "train")
    assert store.tags == [tags_from_label(dataset[i]["label"], 21) for i in range(len(dataset))]
    assert store.labels.shape == (len(store), 8, 10) and store.labels.dtype == np.uint8
    # validation features use the training statistics, so they are not exactly centred
    val = FeatureStore(cfg, "val")
    assert len(val) == len(split_dataset(cfg, "val")) and torch.equal(val.mean, store.mean)

    # weak.cache=false: nothing big is written and the features are recomputed identically
    uncached = tiny_config(tiny_synthetic.root, tmp_path / "live", "weak.cache=false", "weak.cache_dtype=float32")
    extract_features(uncached, device=torch.device("cpu"), log=lambda m: None, progress=False)
    assert not (uncached.run_dir / "features" / "train_zoomout.npy").exists()
    assert torch.allclose(FeatureStore(uncached, "train").zoomout([2, 4]), store.zoomout([2, 4]), atol=1e-4)

    # features made with other settings are refused, naming the setting
    with pytest.raises(ConfigError, match=r"weak.image_size"):
        FeatureStore(tiny_config(tiny_synthetic.root, tmp_path, "weak.cache_dtype=float32",
                                 "weak.image_size=[64,80]"), "train")


def test_pretrained_weights_come_from_a_local_file(tmp_path):
    torch.manual_seed(3)
    backbone = build_backbone("densenet67", **TINY).eval()
    path = tmp_path / "tiny.pth"
    torch.save(backbone.state_dict(), path)
    extractor = build_extractor(backbone="densenet67", backbone_options=TINY, pretrained=str(path))
    image = torch.randn(1, 3, 32, 40)
    expected = ZoomOutExtractor(backbone)(image)[0]
    assert torch.allclose(extractor(image)[0], expected)


def test_bad_extractor_settings():
    with pytest.raises(ConfigError, match="weak.taps"):
        build_extractor(backbone="densenet67", backbone_options=TINY, taps=["conv9_9"])
    with pytest.raises(ConfigError, match="local weight file"):
        build_extractor(backbone="densenet67", backbone_options=TINY, pretrained="imagenet")
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        build_extractor(backbone="densenet67", backbone_options=TINY, pretrained="nowhere.pth")
    with pytest.raises(ConfigError, match="weak.backbone_options"):
        build_extractor(backbone="vgg16", backbone_options={"growth_rate": 12})
    with pytest.raises(ConfigError, match="weak.backbone="):
        build_extractor(backbone="alexnet")
