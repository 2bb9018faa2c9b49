"""Tags-only pretraining of the weak pipeline's backbone: weights written, used by the features, cache keyed
on them, the classifier learns, bad settings fail clearly."""
import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from labelreg.config import ConfigError, load_config
from labelreg.weak.cli import register
from labelreg.weak.features import build_extractor
from labelreg.weak.pipeline import check_config, make_log, step_features, step_pretrain
from labelreg.weak.pretrain import TagClassifier, average_precision
from labelreg.weak.store import FeatureStore, file_digest, pretrained_backbone_path, signature

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo" / "weak-tiny_synth-voc.yaml"
TINY = {"growth_rate": 12, "block_config": [2, 2, 2, 2], "stem_channels": [16, 16, 24]}


pytestmark = pytest.mark.usefixtures("one_thread")


def config(root, out, name, *extra):
    return load_config(CONFIG, [f"data.root={root}", f"output_dir={out}", f"name={name}", "weak.image_size=[32,40]",
                                "weak.feature_batch_size=4", "weak.pretrain_epochs=2", "weak.pretrain_batch_size=4",
                                *extra])


def quiet(message):
    pass


def cli(*argv):
    parser = argparse.ArgumentParser(prog="labelreg")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["weak", *argv])
    args.run(args)


def test_pretrain_writes_weights_that_the_features_use_and_key_the_cache(tiny_synthetic, tmp_path):
    cfg = config(tiny_synthetic.root, tmp_path, "pre")
    with pytest.raises(FileNotFoundError, match=r"pretrain/backbone.pt not found.*labelreg weak pretrain"):
        step_features(cfg, log=quiet, progress=False)  # pretraining is on but has not run

    summary = step_pretrain(cfg, log=make_log(cfg, echo=False), progress=False)
    path = pretrained_backbone_path(cfg)
    stored = torch.load(path, weights_only=True)
    assert set(stored) >= {"state_dict", "head", "settings", "metrics"}
    assert all(key.startswith("features.") for key in stored["state_dict"])  # the weak.pretrained layout
    assert stored["settings"]["weak.pretrain_epochs"] == 2 and len(stored["class_names"]) == 20
    metrics = json.loads((tmp_path / "pre" / "metrics.json").read_text())["pretrain"]
    assert metrics["train_images"] == 7 and metrics["val_images"] == 5 and len(metrics["history"]) == 2
    assert np.isfinite(metrics["train_bce"]) and np.isfinite(metrics["val_bce"]) and 0 <= metrics["val_map"] <= 1
    assert summary["weights"] == str(path) and "pretrain: 2 epochs on 7 train images" in (
        tmp_path / "pre" / "weak.log").read_text()

    step_features(cfg, log=quiet, progress=False)
    meta = json.loads((tmp_path / "pre" / "features" / "train.json").read_text())
    assert meta["signature"]["weights.sha256"] == file_digest(path)
    pretrained = np.load(tmp_path / "pre" / "features" / "train_zoomout.npy")
    plain = config(tiny_synthetic.root, tmp_path, "plain", "weak.pretrain_epochs=0")  # the random-init backbone
    step_features(plain, log=quiet, progress=False)
    random_init = np.load(tmp_path / "plain" / "features" / "train_zoomout.npy")
    assert pretrained.shape == random_init.shape and not np.allclose(pretrained, random_init, atol=1e-3)
    FeatureStore(cfg, "train")  # current

    # other pretraining settings: the stored weights are refused until pretraining runs again ...
    other = config(tiny_synthetic.root, tmp_path, "pre", "weak.pretrain_lr=0.01")
    with pytest.raises(ConfigError, match=r"pretrained with other settings \(weak.pretrain_lr: now 0.01"):
        FeatureStore(other, "train")
    step_pretrain(other, log=quiet, progress=False)
    # ... and then the features made with the old weights are stale
    with pytest.raises(ConfigError, match=r"other settings \(.*weights.sha256.*weak.pretrain_lr"):
        FeatureStore(other, "train")
    step_features(other, log=quiet, progress=False)
    assert not np.allclose(np.load(tmp_path / "pre" / "features" / "train_zoomout.npy"), pretrained, atol=1e-3)

    # the key is the weights' content: the same settings with other weights invalidate the cache too
    stored = torch.load(path, weights_only=True)
    stored["state_dict"]["features.conv0.weight"] *= 2
    torch.save(stored, path)
    with pytest.raises(ConfigError, match="weights.sha256"):
        FeatureStore(other, "train")

    # with pretraining off, the features are the random-init ones again: the run's backbone.pt is ignored
    off = config(tiny_synthetic.root, tmp_path, "pre", "weak.pretrain_epochs=0")
    assert pretrained_backbone_path(off).is_file() and "weights.sha256" not in signature(off)


def test_run_pretrains_first_only_when_asked(tiny_synthetic, tmp_path):
    small = [f"data.root={tiny_synthetic.root}", f"output_dir={tmp_path}", "weak.image_size=[32,40]",
             "weak.feature_batch_size=4", "weak.loc_epochs=1", "weak.loc_hidden=8", "weak.k=4", "weak.seg_hidden=8",
             "weak.seg_epochs=1", "weak.dense_baseline=false", "weak.pretrain_batch_size=4", "weak.classes=[9]"]
    cli("run", "--config", str(CONFIG), "--no-progress", "name=with", "weak.pretrain_epochs=1", *small)
    assert "pretrain" in json.loads((tmp_path / "with" / "metrics.json").read_text())
    assert (tmp_path / "with" / "pretrain" / "backbone.pt").is_file()
    cli("run", "--config", str(CONFIG), "--no-progress", "name=without", "weak.pretrain_epochs=0", *small)
    assert "pretrain" not in json.loads((tmp_path / "without" / "metrics.json").read_text())
    assert not (tmp_path / "without" / "pretrain").exists()
    with pytest.raises(ConfigError, match="pretraining is off"):
        cli("pretrain", "--config", str(CONFIG), "--no-progress", "name=without", "weak.pretrain_epochs=0", *small)


@pytest.mark.parametrize("head,pool", [("zoomout", "avg"), ("zoomout", "lse"), ("global", "avg")])
def test_tag_classifier_learns_a_tiny_problem(head, pool):
    """Tag c ⇔ a bright square in the image's c-th quadrant: the loss falls well below its start."""
    generator = torch.Generator().manual_seed(0)
    tags = torch.rand(8, 4, generator=generator) < 0.5
    images = torch.randn(8, 3, 32, 32, generator=generator) * 0.1
    for i, c in zip(*torch.nonzero(tags, as_tuple=True)):
        y, x = divmod(int(c), 2)
        images[i, :, 16 * y + 4:16 * y + 12, 16 * x + 4:16 * x + 12] += 2.0
    torch.manual_seed(0)
    extractor = build_extractor(backbone="densenet67", backbone_options=TINY, seed=0)
    extractor.requires_grad_(True)
    model = TagClassifier(extractor, 4, head=head, pool=pool).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = F.binary_cross_entropy_with_logits(model(images), tags.float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert all(p.grad is not None for p in extractor.backbone.parameters())  # the backbone itself is trained


def test_average_precision_matches_hand_computed_values():
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.1, 0.4]])
    truth = np.array([[1, 0], [0, 0], [1, 0], [1, 0]], dtype=bool)
    ap = average_precision(scores, truth)
    assert ap[0] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3) and np.isnan(ap[1])  # no positive: undefined


@pytest.mark.parametrize("override,message", [
    ("weak.pretrain_epochs=-1", "weak.pretrain_epochs must be 0"),
    ("weak.pretrain_lr=0", "weak.pretrain_lr must be positive"),
    ("weak.pretrain_weight_decay=-0.1", "weak.pretrain_weight_decay must be 0 or more"),
    ("weak.pretrain_batch_size=0", "weak.pretrain_batch_size must be at least 1"),
    ("weak.pretrain_head=resnet", "weak.pretrain_head='resnet'; choose one of zoomout, global"),
    ("weak.pretrain_pool=max", "weak.pretrain_pool='max'; choose one of avg, lse"),
    ("weak.pretrain_crop_area=[0,1]", r"weak.pretrain_crop_area must be \[lo, hi\]"),
    ("weak.pretrain_crop_area=[0.9,0.5]", r"weak.pretrain_crop_area must be \[lo, hi\]"),
    ("weak.pretrain_crop_area=[0.5]", r"weak.pretrain_crop_area must be \[lo, hi\]"),
])
def test_bad_pretrain_settings_fail_naming_the_key(tmp_path, override, message):
    cfg = load_config(CONFIG, [f"output_dir={tmp_path}", override])
    with pytest.raises(ConfigError, match=message):
        check_config(cfg)
    with pytest.raises(ConfigError, match="expected int"):
        load_config(CONFIG, ["weak.pretrain_epochs=two"])
