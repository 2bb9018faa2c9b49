"""Phase zero: SUNet classification pretraining on a tiny ImageFolder (train_cls)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import labelreg  # noqa: F401  (installs the torchvision guard first)
from labelreg.config import ConfigError, config_from_dict, load_config, to_dict
from labelreg.engine import load_checkpoint, pad_collate
from labelreg.models.backbones.sunet import SUNET_BACKBONES, SUNET_CLASSIFIERS
from labelreg.train_cls import (ImageFolderDataset, build_classifier, build_cls_augmentations, build_cls_dataset,
                                evaluate_classifier, evaluate_classifier_checkpoint, load_image, topk_names, train,
                                write_toy_imagefolder)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
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


@pytest.fixture(scope="module")
def trained(toy_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    cfg = demo_config(toy_root, out)
    result = train(cfg)
    return cfg, result


# ----------------------------------------------------------------------------- data


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


class FixedLogits(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, image):
        return {"logits": self.logits[: len(image)]}


def test_topk_metrics():
    assert topk_names(1000) == [("top1", 1), ("top5", 5)]
    assert topk_names(3) == [("top1", 1), ("top3", 3)] and topk_names(1) == [("top1", 1)]
    logits = torch.tensor([[9.0, 8, 7, 6, 5, 4], [0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0], [1, 0.5, 0, 0, 0, 0]])
    batch = {"image": torch.zeros(4, 3, 2, 2), "target": torch.tensor([0, 0, 4, 1])}
    metrics = evaluate_classifier(FixedLogits(logits), [batch], torch.device("cpu"), num_classes=6,
                                  preprocess=lambda b: b)
    assert metrics["top1"] == 0.25 and metrics["top5"] == 0.75  # sample 1 ranks class 0 last
    expected = torch.nn.functional.cross_entropy(logits, batch["target"]).item()
    assert metrics["loss"] == pytest.approx(expected, rel=1e-6)


# ----------------------------------------------------------------------------- training


def test_train_writes_checkpoints_and_learns(trained):
    cfg, result = trained
    run = cfg.run_dir
    assert (run / "checkpoints" / "best.pt").is_file() and (run / "checkpoints" / "last.pt").is_file()
    assert json.loads((run / "classes.json").read_text()) == ["class_0", "class_1", "class_2"]
    summary = json.loads((run / "metrics.json").read_text())
    history = summary["history"]
    assert summary["best_metric"] == "top1" and [entry["epoch"] for entry in history] == [1, 2, 3]
    for entry in history:
        assert 0.0 <= entry["val/top1"] <= 1.0 and entry["val/top3"] == 1.0 and entry["val/loss"] > 0
    assert history[-1]["train/ce"] < 0.7 * history[0]["train/ce"]  # the loss went down
    assert result["best_value"] > 1 / 3 + 0.2  # better than chance on the easy colour task
    assert result["class_names"] == ["class_0", "class_1", "class_2"]


def test_best_checkpoint_loads_as_dilated_backbone(trained):
    cfg, result = trained
    best = cfg.run_dir / "checkpoints" / "best.pt"
    classifier = build_classifier(cfg, 3)
    classifier.load_state_dict(load_checkpoint(best)["model"])
    classifier.eval()
    image = torch.randn(2, 3, 40, 56, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = classifier.forward_taps(image)
        dilated = SUNET_BACKBONES[cfg.model.name](pretrained=best, output_stride=8).eval()
        taps = dilated(image)
        plain = SUNET_BACKBONES[cfg.model.name](pretrained=str(best), output_stride=32).eval()(image)
    for name in ("stem", "block1", "block2"):  # undilated part of the OS-8 network: identical features
        torch.testing.assert_close(taps[name], expected[name], rtol=1e-5, atol=1e-5)
    assert taps["block3"].shape[-2:] == taps["block4"].shape[-2:] == (5, 7)  # stride 8 from there on
    for name in expected:  # at output stride 32 the backbone is the classifier without its FC
        torch.testing.assert_close(plain[name], expected[name], rtol=1e-5, atol=1e-5)


def test_evaluate_checkpoint_reproduces_stored_metrics(trained):
    cfg, _ = trained
    checkpoint = load_checkpoint(cfg.run_dir / "checkpoints" / "best.pt")
    stored = config_from_dict(checkpoint["config"])
    metrics = evaluate_classifier_checkpoint(stored, checkpoint, "val")
    for name in ("top1", "top3", "loss"):
        assert metrics[name] == pytest.approx(checkpoint["metrics"][f"val/{name}"], abs=1e-5)


def test_resume_continues(trained, tmp_path):
    cfg, _ = trained
    shutil.copytree(cfg.run_dir, tmp_path / "cls")
    values = to_dict(cfg)
    values["output_dir"] = str(tmp_path)
    values["train"]["epochs"] = 4
    result = train(config_from_dict(values), resume=tmp_path / "cls" / "checkpoints" / "last.pt")
    assert result["epoch"] == 4 and [entry["epoch"] for entry in result["history"]] == [1, 2, 3, 4]


# ----------------------------------------------------------------------------- errors and configs


def test_missing_split_folder_is_named(toy_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="'valid'.*valid"):
        train(demo_config(toy_root, tmp_path, "data.val_split=valid"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageFolderDataset(tmp_path / "nowhere", "train", size=8)


def test_class_mismatch_between_splits(toy_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(toy_root, root)
    (root / "val" / "class_2").rename(root / "val" / "class_9")
    with pytest.raises(ValueError, match=r"missing in 'val': \['class_2'\].*not in 'train': \['class_9'\]"):
        train(demo_config(root, tmp_path / "runs"))


def test_empty_and_unreadable_images(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match="no images"):
        ImageFolderDataset(tmp_path, "train", size=8)
    (tmp_path / "train" / "cat" / "broken.jpg").write_bytes(b"not a jpeg")
    dataset = ImageFolderDataset(tmp_path, "train", size=8)
    with pytest.raises(RuntimeError, match=r"broken\.jpg \(index 0"):
        dataset[0]


def test_config_errors(toy_root, tmp_path):
    with pytest.raises(ConfigError, match="task"):
        train(demo_config(toy_root, tmp_path, "task=autoencoder"))
    with pytest.raises(ConfigError, match="sunet64"):
        build_classifier(demo_config(toy_root, tmp_path, "model.name=resnet50"), 3)
    with pytest.raises(ConfigError, match="num_classes"):
        build_classifier(demo_config(toy_root, tmp_path, "model.num_classes=5"), 3)


@pytest.mark.parametrize("name,batch", [("sunet64", 256), ("sunet128", 256), ("sunet7128", 212)])
def test_imagenet_configs_follow_the_paper(name, batch):
    cfg = load_config(CONFIGS / f"{name}_imagenet_224.yaml")
    assert cfg.task == "classification" and cfg.model.name == name and name in SUNET_CLASSIFIERS
    assert cfg.data.root == "data/imagenet" and cfg.data.crop_size == [224, 224] and cfg.data.eval_size == [224, 224]
    assert (cfg.optim.optimizer, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == ("sgd", 0.01, 0.9, 5e-4)
    assert cfg.optim.schedule == "step" and cfg.optim.milestones == [30, 60, 90] and cfg.optim.gamma == 0.1
    assert cfg.train.epochs == 100 and cfg.data.batch_size == batch and cfg.train.best_metric == "top1"
