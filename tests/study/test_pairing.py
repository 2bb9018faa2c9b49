"""Seeds are paired across a study's arms (labelreg.study.protocol; thesis Tables 5.1/5.2 compare arms).

``labelreg.tasks.segmentation.train`` runs for real up to ``fit``, which is replaced by a probe recording
the initial segmenter weights, the training subset and order, and the first augmented batches of epoch 0
(reseeded as the engine reseeds them).
"""
from pathlib import Path

import pytest
import torch

from labelreg.tasks import segmentation
from labelreg.config import load_config
from labelreg.runtime import epoch_seed
from labelreg.models.autoencoder import LabelAutoencoder
from labelreg.study.protocol import load_protocol
from labelreg.study.runner import run_spec

PROTOCOL = Path(__file__).resolve().parents[2] / "configs" / "study" / "tiny.yml"
ARMS = {
    "baseline": [],
    "decoder": ["regularizer.kind=decoder", "regularizer.loss=ce", "regularizer.weight=0.5"],
    "unfrozen": ["regularizer.kind=decoder", "regularizer.frozen=false"],
    "random": ["regularizer.kind=decoder", "regularizer.frozen=false", "regularizer.random_init=true"],
    "encoder": ["regularizer.kind=encoder", "regularizer.loss=mse"],
}


class Captured(Exception):
    pass


def probe(cfg):
    """What one run starts from: (segmenter state, image order, first augmented batches)."""
    seen = {}

    def fake_fit(cfg, task, train_loader, val_loader, *, device, resume):
        for generator in [train_loader.generator, *task.generators]:
            if generator is not None:
                generator.manual_seed(epoch_seed(cfg.train.seed, 0))
        for generator in task.rank_generators:
            generator.manual_seed(epoch_seed(cfg.train.seed, 0, 0))
        model = task.model
        seen["state"] = {k: v.clone() for k, v in getattr(model, "segmenter", model).state_dict().items()}
        seen["names"], seen["images"], seen["labels"] = [], [], []
        for batch in train_loader:
            augmented = task.augment(batch)
            seen["names"] += list(batch["name"])
            seen["images"].append(augmented["image"])
            seen["labels"].append(augmented["label"])
        raise Captured

    original = segmentation.fit
    segmentation.fit = fake_fit
    try:
        with pytest.raises(Captured):
            segmentation.train(cfg)
    finally:
        segmentation.fit = original
    return seen


@pytest.fixture
def arm_configs(tiny_synthetic, tmp_path, one_thread):
    protocol = load_protocol(PROTOCOL)
    protocol.data["root"] = str(Path(tiny_synthetic.nyu_mat).parents[1])
    protocol.arms = ARMS
    protocol.autoencoders = {"ae128": protocol.autoencoders["ae128"]}  # the one every phase-one arm here reads
    protocol.arm_autoencoders = {}
    # augmentation on, so the pairing of the augmentation stream is checked too
    protocol.budget.update({"data.hflip": True, "data.crop_area": [0.3, 1.0], "data.crop_size": [48, 64],
                            "data.train_limit": 6, "data.batch_size": 3})
    checkpoint = tmp_path / "runs" / "autoencoders" / "ae128" / "checkpoints" / "last.pt"
    checkpoint.parent.mkdir(parents=True)
    torch.save({"model": LabelAutoencoder(40, "128").state_dict(),
                "config": {"task": "autoencoder", "model": {"variant": "128"}}}, checkpoint)

    def configs(seed):
        result = {}
        for arm in ARMS:
            spec = run_spec(protocol, tmp_path, arm, seed)
            overrides = spec["argv"][spec["argv"].index("--resume") + 1:]
            result[arm] = load_config(protocol.base, overrides)
        return result

    return configs


def test_same_seed_same_start_across_arms(arm_configs):
    probes = {arm: probe(cfg) for arm, cfg in arm_configs(3).items()}
    reference = probes["baseline"]
    assert len(reference["names"]) == 6
    for arm, seen in probes.items():
        assert seen["names"] == reference["names"], arm  # same training subset, same order
        assert seen["state"].keys() == reference["state"].keys(), arm
        for key, value in reference["state"].items():  # same initial segmenter
            assert torch.equal(seen["state"][key], value), (arm, key)
        for mine, theirs in zip(seen["images"] + seen["labels"], reference["images"] + reference["labels"]):
            assert torch.equal(mine, theirs), arm  # same augmentation stream


def test_another_seed_starts_elsewhere(arm_configs):
    first, second = probe(arm_configs(3)["baseline"]), probe(arm_configs(4)["baseline"])
    assert any(not torch.equal(first["state"][key], second["state"][key]) for key in first["state"])
    assert first["names"] != second["names"] or any(
        not torch.equal(a, b) for a, b in zip(first["images"], second["images"]))
