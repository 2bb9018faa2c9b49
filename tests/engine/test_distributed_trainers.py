"""The trainers under torchrun on CPU (gloo): per-rank augmentation, class weights counted once and shared,
2 processes × batch 2 against 1 process × batch 4 with the real segmentation trainer."""
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import h5py
import pytest
import torch

from depth import task as depth_task
from labelreg.cli import main
from labelreg.config import Config, load_config
from labelreg.data.build import build_dataset, dataset_num_classes
from labelreg.tasks import autoencoder, classification, segmentation
from labelreg.tasks.segmentation import training_frequencies
from labelreg.losses import class_frequencies, inverse_frequency_weights
from labelreg.runtime import epoch_seed
from labelreg.storage import load_checkpoint
from tests.engine.test_distributed import ROOT, assert_same_model, clean_env

SEG_WORKER = Path(__file__).with_name("ddp_seg_worker.py")


# ----------------------------------------------------------------------------- the real segmentation trainer

SEG_CONFIG = ROOT / "configs" / "demo" / "zoomout-densenet67-tiny_synth-nyu40.yaml"


def seg_overrides(root, out, batch):
    return [f"data.root={root}", f"output_dir={out}", "name=tiny", "data.crop_size=[32,48]", f"data.batch_size={batch}",
            "data.eval_batch_size=4", "data.num_workers=0", "train.epochs=2", "train.eval_every=2", "train.log_every=1",
            "train.device=cpu"]


def torchrun(arguments, processes=2, timeout=300):
    env = clean_env()
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={processes}", *map(str, arguments)],
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_each_rank_draws_its_own_augmentation_and_all_share_the_class_weights(tiny_synthetic, tmp_path):
    """`labelreg train-seg` under torchrun, random crops and flips, ``train.loss=asymmetric``: the ranks' augmentation
    generators differ (each a function of seed, epoch and rank) and every rank gets the class weights
    of the whole training set, counted once and written atomically."""
    overrides = [*seg_overrides(tiny_synthetic.root, tmp_path, batch=2), "train.loss=asymmetric"]
    torchrun([SEG_WORKER, tmp_path / "record", SEG_CONFIG, *overrides])
    ranks = [json.loads((tmp_path / "record" / f"rank{rank}.json").read_text()) for rank in range(2)]
    cfg = load_config(SEG_CONFIG, overrides)
    assert cfg.data.crop_area and cfg.data.hflip  # the augmentation is random

    # one step per epoch (7 training images, global batch 4): draw e is the first of epoch e
    assert [len(rank["next_draws"]) for rank in ranks] == [2, 2]
    for epoch in range(2):
        assert ranks[0]["next_draws"][epoch] != ranks[1]["next_draws"][epoch], f"same augmentation in epoch {epoch}"
    for rank, record in enumerate(ranks):  # reproducible: a function of (seed, epoch, rank), as resume needs
        for epoch, draws in enumerate(record["next_draws"]):
            expected = torch.rand(3, generator=torch.Generator().manual_seed(epoch_seed(cfg.train.seed, epoch, rank)),
                                  dtype=torch.float64)
            assert draws == expected.tolist(), (rank, epoch)

    train_set = build_dataset(cfg.data, cfg.data.train_split, limit=cfg.data.train_limit)
    frequencies = class_frequencies((train_set[i]["label"] for i in range(len(train_set))),
                                    dataset_num_classes(train_set))
    for record in ranks:
        torch.testing.assert_close(torch.tensor(record["class_weights"]), inverse_frequency_weights(frequencies))
    stored = tmp_path / "tiny" / "class_frequencies.json"
    torch.testing.assert_close(torch.tensor(json.loads(stored.read_text())["frequencies"], dtype=torch.float64),
                               frequencies)
    assert not list(stored.parent.glob(".class_frequencies.json.tmp*"))

    # the run itself: rank 0 wrote the plain model's weights and one log line per epoch
    checkpoint = load_checkpoint(tmp_path / "tiny" / "checkpoints" / "last.pt")
    assert checkpoint["epoch"] == 2 and 0 <= checkpoint["metrics"]["val/miou"] <= 1
    assert not any(key.startswith("module.") for key in checkpoint["model"])
    log = (tmp_path / "tiny" / "train.log").read_text().splitlines()
    assert [line.split(" (")[0] for line in log if " epoch " in line] == ["[tiny] epoch 1/2", "[tiny] epoch 2/2"]


def fully_labeled_copy(synthetic, out):
    """The synthetic NYU layout with every unlabeled pixel given a class: no ignored pixels, so each
    rank's mean loss covers as many pixels as every other rank's."""
    shutil.copytree(synthetic.root / "nyu", out / "nyu")
    with h5py.File(out / "nyu" / "nyu_depth_v2_labeled.mat", "r+") as mat:
        labels = mat["labels"][...]
        labels[labels == 0] = 1
        mat["labels"][...] = labels
    return out


@pytest.mark.slow
def test_real_trainer_two_processes_of_two_equal_one_process_of_four(tiny_synthetic, tmp_path, one_thread):
    """The zoom-out trainer with frozen BatchNorm and deterministic augmentation (resize + normalise, no
    random crop or flip), on labels without ignored pixels: 2 processes × batch 2 and 1 process × batch 4
    take the same steps (what the README claims, and no more)."""
    root = fully_labeled_copy(tiny_synthetic, tmp_path / "data")
    common = ["model.freeze_bn=true", "data.crop_area=null", "data.hflip=false", "train.eval_every=1",
              "data.synthesize_if_missing=false"]
    assert main(["train-seg", "--config", str(SEG_CONFIG), *seg_overrides(root, tmp_path / "one", batch=4),
                 *common]) == 0
    torchrun(["-m", "labelreg.cli", "train-seg", "--config", SEG_CONFIG,
              *seg_overrides(root, tmp_path / "two", batch=2), *common])
    single = load_checkpoint(tmp_path / "one" / "tiny" / "checkpoints" / "last.pt")
    double = load_checkpoint(tmp_path / "two" / "tiny" / "checkpoints" / "last.pt")
    assert single["step"] == double["step"] == 2
    for one, two in zip(single["history"], double["history"], strict=True):
        assert one["train/ce"] == pytest.approx(two["train/ce"], rel=1e-4)
        assert one["val/miou"] == pytest.approx(two["val/miou"], abs=1e-4)
    assert_same_model(single["model"], double["model"])


# ----------------------------------------------------------------------------- class frequencies on disk


class Labels(torch.utils.data.Dataset):
    def __init__(self, labels):
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return {"label": self.labels[index]}


def frequency_config(tmp_path):
    cfg = Config(name="run", task="segmentation", output_dir=str(tmp_path))
    cfg.data.eval_batch_size, cfg.data.num_workers = 2, 0
    return cfg


def test_class_frequencies_are_written_once_atomically_and_read_back(tmp_path):
    labels = [torch.tensor([[0, 0, 1], [2, 255, 0]]), torch.tensor([[1, 1, 1], [0, 255, 255]]),
              torch.zeros(2, 3).long()]
    cfg = frequency_config(tmp_path)
    weights = inverse_frequency_weights(training_frequencies(cfg, Labels(labels), 3))
    torch.testing.assert_close(weights, inverse_frequency_weights(class_frequencies(labels, 3)))
    stored = json.loads((cfg.run_dir / "class_frequencies.json").read_text())
    assert stored["pixels"] == [10, 4, 1]
    assert [path.name for path in cfg.run_dir.iterdir()] == ["class_frequencies.json"]  # no temporary file left
    # a resumed run reads the file (an empty training set would fail if it counted again)
    torch.testing.assert_close(inverse_frequency_weights(training_frequencies(cfg, Labels([]), 3)), weights)


@pytest.mark.parametrize("text", ['{"frequencies": [0.5, 0.2', '{"frequencies": [0.5, 0.5]}', '[1, 2, 3]', ''])
def test_an_unreadable_class_frequencies_file_fails_naming_the_file(tmp_path, text):
    cfg = frequency_config(tmp_path)
    path = cfg.run_dir / "class_frequencies.json"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(RuntimeError, match=f"cannot read class frequencies {path}.*delete the file"):
        training_frequencies(cfg, Labels([torch.zeros(2, 2).long()]), 3)


def test_trainers_give_augmentation_per_rank_generators_and_keep_batch_samplers_shared():
    """The augmentation generator of every trainer is reseeded per rank; the depth trainer's mixed batch
    sampler, which every rank must run identically, is not."""
    cfg, model = Config(name="x", task="segmentation"), torch.nn.Identity()
    cfg.data.crop_size = [32, 32]
    mixed = SimpleNamespace(generator=torch.Generator())  # the phased sampler's mixed batches
    tasks = {"seg": segmentation.loop_spec(cfg, model, ["a", "b"]), "ae": autoencoder.loop_spec(cfg, model, ["a"]),
             "cls": classification.loop_spec(cfg, model, 2),
             "depth": depth_task.loop_spec(cfg, model, 2, ["a", "b"], SimpleNamespace(mixed=mixed))}
    for name, task in tasks.items():
        assert len(task.rank_generators) == 1 and task.rank_generators[0] is task.augment.generator, name
        assert not any(generator is task.augment.generator for generator in task.generators), name
    assert len(tasks["depth"].generators) == 1 and tasks["depth"].generators[0] is mixed.generator
