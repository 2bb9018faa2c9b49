"""Phase zero: SUNet classification pretraining on a tiny ImageFolder (labelreg.tasks.classification)."""
import copy
import json
import shlex
import shutil

import pytest
import torch

import labelreg  # noqa: F401  (installs the torchvision guard first)
from labelreg.cli import main
from labelreg.config import ConfigError, config_from_dict, load_config, to_dict
from labelreg.data.imagefolder import ImageFolderDataset
from labelreg.engine import RunDirectoryError
from labelreg.models.backbones.sunet import SUNET_BACKBONES, SUNET_CLASSIFIERS
from labelreg.storage import load_checkpoint
from labelreg.tasks import TASKS
from labelreg.tasks.classification import (build_classifier, evaluate_checkpoint, evaluate_classifier,
                                           model_from_checkpoint, topk_names, train)
from tests.data.test_imagefolder import CONFIGS, DEMO, demo_config, one_thread, toy_root  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def trained(toy_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    cfg = demo_config(toy_root, out)
    result = train(cfg)
    return cfg, result


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
    metrics = evaluate_checkpoint(stored, checkpoint, "val")
    for name in ("top1", "top3", "loss"):
        assert metrics[name] == pytest.approx(checkpoint["metrics"][f"val/{name}"], abs=1e-5)
    # the segmentation default best_metric is read as top1 on a copy: the loaded config stays as it was
    default = config_from_dict(checkpoint["config"], ["train.best_metric=miou"])
    before = copy.deepcopy(default)
    assert evaluate_checkpoint(default, checkpoint, "val") == metrics and default == before


def test_model_from_checkpoint_is_the_table_entry(trained):
    cfg, _ = trained
    checkpoint = load_checkpoint(cfg.run_dir / "checkpoints" / "best.pt")
    entry = TASKS["classification"]
    assert (entry.train, entry.evaluate_checkpoint, entry.model_from_checkpoint) == (
        train, evaluate_checkpoint, model_from_checkpoint)
    model = entry.model_from_checkpoint(checkpoint)  # its config and K (read off fc) from the checkpoint alone
    assert model.fc.out_features == 3
    for key, value in model.state_dict().items():
        assert torch.equal(value, checkpoint["model"][key]), key
    with pytest.raises(ValueError, match="3 classes, not 4"):
        model_from_checkpoint(checkpoint, num_classes=4)
    with pytest.raises(ConfigError, match="no regularizer"):
        model_from_checkpoint(checkpoint, with_regularizer=True)
    stored = config_from_dict(checkpoint["config"])
    with pytest.raises(ConfigError, match="--save-predictions"):
        evaluate_checkpoint(stored, checkpoint, "val", save_predictions="out")
    with pytest.raises(ConfigError, match="--aux"):
        evaluate_checkpoint(stored, checkpoint, "val", aux=True)


def test_the_demo_configs_recipe_runs_as_written(capsys):
    """The commands in the header of configs/demo/sunet64-tiny_cls.yaml: write the toy ImageFolder, train
    (one epoch here), then ``labelreg eval`` on the run's best checkpoint (tests run in an empty folder)."""
    lines = [line[1:].strip() for line in DEMO.read_text().splitlines() if line.startswith("#")]
    write = shlex.split(next(line for line in lines if line.startswith("python -c")))
    exec(write[2], {})  # noqa: S102  (the documented one-liner)
    command = shlex.split(next(line for line in lines if line.startswith("labelreg train-cls")))
    command[command.index("--config") + 1] = str(CONFIGS.parent / command[command.index("--config") + 1])
    assert main([*command[1:], "train.epochs=1"]) == 0
    best = load_config(DEMO).run_dir / "checkpoints" / "best.pt"
    assert best.is_file()
    assert main(["eval", "--checkpoint", str(best)]) == 0
    printed = capsys.readouterr().out
    assert "classification on imagefolder val" in printed and "top1" in printed and "top3" in printed


def test_resume_continues(trained, tmp_path):
    cfg, _ = trained
    shutil.copytree(cfg.run_dir, tmp_path / "cls")
    values = to_dict(cfg)
    values["output_dir"] = str(tmp_path)
    values["train"]["epochs"] = 4
    result = train(config_from_dict(values), resume=tmp_path / "cls" / "checkpoints" / "last.pt")
    assert result["epoch"] == 4 and [entry["epoch"] for entry in result["history"]] == [1, 2, 3, 4]


def test_a_second_run_into_a_finished_folder_is_refused_before_it_writes(trained, tmp_path):
    cfg, _ = trained
    shutil.copytree(cfg.run_dir, tmp_path / "cls")
    (tmp_path / "cls" / "classes.json").write_text('["written by the finished run"]')
    values = to_dict(cfg)
    values["output_dir"] = str(tmp_path)
    with pytest.raises(RunDirectoryError, match="already holds checkpoints"):
        train(config_from_dict(values))
    assert (tmp_path / "cls" / "classes.json").read_text() == '["written by the finished run"]'


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
