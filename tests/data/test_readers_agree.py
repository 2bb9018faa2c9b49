"""The synthetic writer and the real-format readers agree with each other."""
import numpy as np
import torch
from torch.utils.data import DataLoader

from labelreg.config import config_from_dict
from labelreg.data import NYUv2DepthOnly, NYUv2Labeled, VOCSegmentation, load_splits
from labelreg.data.build import build_augmentations, build_dataset
from labelreg.data.synthetic import RAW_TO_NYU40, RAW_TO_VOC, render_scene
from labelreg.data.synthetic.writer import STREAM_LABELED


def test_nyu_reader_returns_the_rendered_scenes(tiny_synthetic):
    train = NYUv2Labeled(tiny_synthetic.nyu_mat, "train")
    test = NYUv2Labeled(tiny_synthetic.nyu_mat, "test")
    splits = load_splits(tiny_synthetic.splits)
    assert len(train) + len(test) == 12 and len(train) == len(splits["train"])
    sample = train[0]
    assert sample["image"].shape == (3, 64, 80) and sample["image"].dtype == torch.uint8
    assert sample["label"].shape == (64, 80) and sample["depth"].shape == (64, 80)
    # Re-render the same scene and compare: orientation, class mapping and depth all survive the .mat round trip.
    scene = render_scene(np.random.default_rng([7, STREAM_LABELED, int(splits["train"][0])]), (64, 80))
    raw = scene["raw_label"].astype(np.int64)
    expected = np.where(raw == 0, 255, RAW_TO_NYU40[np.maximum(raw, 1) - 1].astype(np.int64) - 1)
    assert np.array_equal(sample["label"].numpy(), expected)
    assert np.allclose(sample["depth"].numpy(), scene["depth"])
    assert np.array_equal(sample["image"].permute(1, 2, 0).numpy(), scene["rgb"])


def test_voc_and_nyu_views_agree_away_from_void(tiny_synthetic):
    voc = VOCSegmentation(tiny_synthetic.root, "val")
    nyu = NYUv2Labeled(tiny_synthetic.nyu_mat, "test")
    assert len(voc) == len(nyu)
    for index in range(len(voc)):
        voc_label = voc[index]["label"].numpy()
        nyu_label = nyu[index]["label"].numpy()
        assert voc_label.shape == nyu_label.shape
        # background classes in NYU (wall, floor) are background in VOC too, wherever VOC is not void
        wall_or_floor = np.isin(nyu_label, [0, 1]) & (voc_label != 255)
        assert (voc_label[wall_or_floor] == 0).all()
    assert set(np.unique(RAW_TO_VOC)) <= set(range(21))


def test_depth_only_frames_read_and_batch_with_labeled(tiny_synthetic):
    frames = NYUv2DepthOnly(tiny_synthetic.depth_only_dir)
    assert len(frames) == 3
    sample = frames[0]
    assert not sample["labeled"] and (sample["label"] == 255).all() and (sample["depth"] > 0).all()
    mixed = torch.utils.data.ConcatDataset([frames, NYUv2Labeled(tiny_synthetic.nyu_mat, "train")])
    batch = next(iter(DataLoader(mixed, batch_size=5, shuffle=False)))
    assert batch["labeled"].tolist() == [False, False, False, True, True]


def test_config_built_datasets_and_augmentation(tiny_synthetic):
    cfg = config_from_dict({"data": {"dataset": "nyu", "root": str(tiny_synthetic.root), "crop_size": [32, 48],
                                     "val_split": "test"}})
    train = build_dataset(cfg.data, "train", limit=4)
    assert len(train) == 4
    augment, evaluate = build_augmentations(cfg.data)
    batch = next(iter(DataLoader(train, batch_size=4)))
    out = augment(batch)
    assert out["image"].shape == (4, 3, 32, 48) and out["label"].shape == (4, 32, 48)
    assert out["image"].dtype == torch.float32 and out["depth"].shape == (4, 32, 48)
    assert evaluate(batch)["image"].shape == (4, 3, 64, 80)


def test_synthesize_if_missing_writes_once(tmp_path):
    cfg = config_from_dict({"data": {"dataset": "voc", "root": str(tmp_path / "s"), "synthesize_if_missing": True,
                                     "synth_labeled": 4, "synth_depth_only": 1, "synth_size": [32, 48]}})
    train = build_dataset(cfg.data, "train")
    marker = tmp_path / "s" / ".complete"
    stamp = marker.stat().st_mtime_ns
    build_dataset(cfg.data, "val")
    assert marker.stat().st_mtime_ns == stamp and len(train) >= 1
