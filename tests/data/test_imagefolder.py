"""ImageFolder data for phase zero (labelreg.data.imagefolder): folders, decoding, sizes, device augmentation."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import labelreg  # noqa: F401  (installs the torchvision guard first)
from labelreg.config import load_config
from labelreg.data.imagefolder import (ImageFolderDataset, build_cls_augmentations, build_cls_dataset, load_image,
                                       write_toy_imagefolder)
from labelreg.data.loader import pad_collate

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DEMO = CONFIGS / "demo" / "sunet64-tiny_cls.yaml"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """A 32×32 SUNet step is ~0.1 s on one thread; with more, a busy machine makes OpenMP spin for seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    """3 classes (colour + stripe direction), 6 train / 3 val images of 40×48 each, JPEG and PNG mixed."""
    return write_toy_imagefolder(tmp_path_factory.mktemp("toy") / "data", classes=3, per_class=(6, 3), size=(40, 48))


def demo_config(root, out, *overrides):
    return load_config(DEMO, [f"data.root={root}", f"output_dir={out}", "name=cls", "train.epochs=3", *overrides])


def test_dataset_samples(toy_root):
    dataset = ImageFolderDataset(toy_root, "train", size=(37, 37))
    assert dataset.class_names == ["class_0", "class_1", "class_2"] and len(dataset) == 18
    assert {p.suffix for p, _ in dataset.samples} == {".jpg", ".png"}
    sample = dataset[7]
    assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (3, 37, 37)
    assert sample["target"].dtype == torch.int64 and sample["target"].ndim == 0 and int(sample["target"]) == 1
    assert sample["index"] == 7 and sample["name"].startswith("class_1/")
    # class 0 is red: the decoded colours survive resizing
    red = dataset[0]["image"].float().mean(dim=(1, 2))
    assert red[0] > red[1] + 50 and red[0] > red[2] + 50
    # a limit is taken round-robin over classes
    limited = ImageFolderDataset(toy_root, "train", size=8, limit=4)
    assert limited.targets == [0, 0, 1, 2]


def test_load_image_keeps_aspect(tmp_path):
    # left half black, right half white, 40 high × 80 wide: short side 20 → 20×40, centre crop 20×20
    array = np.zeros((40, 80, 3), np.uint8)
    array[:, 40:] = 255
    Image.fromarray(array).save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png", (20, 20))
    assert out.shape == (20, 20, 3)
    assert out[:, :8].max() == 0 and out[:, 12:].min() == 255
    # standard eval protocol: short side 30, centre 20×20 (a 20×60 window of a 30×60 resize)
    assert load_image(tmp_path / "a.png", (20, 20), short_side=30).shape == (20, 20, 3)


def test_eval_split_size_and_augment_without_label(toy_root):
    cfg = demo_config(toy_root, "unused", "data.crop_size=[24,32]", "data.eval_size=[28,28]")
    train_set = build_cls_dataset(cfg.data, "train", train=True)
    val_set = build_cls_dataset(cfg.data, "val", train=False)
    assert train_set.size == (37, 37) and val_set.size == (28, 28) and val_set.short_side == 32
    batch = pad_collate([train_set[i] for i in range(4)])
    train_augment, eval_augment = build_cls_augmentations(cfg.data)
    augmented = train_augment(batch)
    assert "label" not in augmented and augmented["image"].shape == (4, 3, 24, 32)
    assert augmented["image"].dtype == torch.float32 and torch.equal(augmented["target"], batch["target"])
    evaluated = eval_augment(pad_collate([val_set[i] for i in range(3)]))
    assert evaluated["image"].shape == (3, 3, 28, 28) and evaluated["image"].min() < 0  # normalised


def test_empty_and_unreadable_images(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match="no images"):
        ImageFolderDataset(tmp_path, "train", size=8)
    (tmp_path / "train" / "cat" / "broken.jpg").write_bytes(b"not a jpeg")
    dataset = ImageFolderDataset(tmp_path, "train", size=8)
    with pytest.raises(RuntimeError, match=r"broken\.jpg \(index 0"):
        dataset[0]
