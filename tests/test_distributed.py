"""DDP through torchrun on CPU (gloo): what 2 processes share with 1 process of twice the batch, per-rank
augmentation, class frequencies counted once, and a killed rank stopping the job."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from labelreg.distributed import ShardSampler, current, unwrap, wrap_model
from labelreg.engine import load_checkpoint

WORKER = Path(__file__).with_name("ddp_worker.py")
ROOT = Path(__file__).resolve().parents[1]


def clean_env():
    """This environment for a fresh torchrun job (one thread per process, no inherited rank)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def launch(out, batch, epochs, processes=1, resume=False):
    command = [str(WORKER), str(out), str(batch), str(epochs), *(["--resume"] if resume else [])]
    if processes > 1:
        command = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *command]
    env = clean_env()
    done = subprocess.run([sys.executable, *command], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return load_checkpoint(Path(out) / "ddp" / "checkpoints" / "last.pt"), done


def assert_same_model(a, b):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4, msg=name)


def test_two_gloo_processes_match_one_process_on_the_same_global_batch(tmp_path, one_thread):
    """A toy model without BatchNorm, dropout or random augmentation: 2 processes × batch 2, stopped after
    one epoch and resumed, end where 1 process × batch 4 does uninterrupted."""
    from ddp_worker import main as train_toy

    train_toy(str(tmp_path / "single"), 4, 2, False)  # in this process: one start-up fewer
    single = load_checkpoint(tmp_path / "single" / "ddp" / "checkpoints" / "last.pt")
    launch(tmp_path / "double", batch=2, epochs=1, processes=2)
    double, _ = launch(tmp_path / "double", batch=2, epochs=2, processes=2, resume=True)
    assert single["step"] == double["step"] == 8  # 16 samples / global batch 4, two epochs
    assert_same_model(single["model"], double["model"])
    for one, two in zip(single["history"], double["history"], strict=True):
        assert one["train/ce"] == pytest.approx(two["train/ce"], rel=1e-4)  # loss means averaged over ranks
        assert one["val/miou"] == pytest.approx(two["val/miou"], abs=1e-6)  # sharded eval, all-reduced counts
    # only rank 0 wrote the log: one line per epoch
    log = (tmp_path / "double" / "ddp" / "train.log").read_text().splitlines()
    epochs = [line.split(" (")[0] for line in log if line.startswith("[ddp] epoch")]
    assert epochs == ["[ddp] epoch 1/1", "[ddp] epoch 2/2"]


def test_shard_sampler_covers_every_sample_once():
    shards = [list(ShardSampler(10, rank, 3)) for rank in range(3)]
    assert sorted(sum(shards, [])) == list(range(10)) and [len(s) for s in shards] == [4, 3, 3]


def test_single_process_helpers_are_identities():
    model = torch.nn.Linear(2, 2)
    assert not current().enabled and wrap_model(model, torch.device("cpu")) is model and unwrap(model) is model
    with pytest.raises(Exception, match="sync_bn needs CUDA"):
        wrap_model(model, torch.device("cpu"), sync_bn=True)


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
    from labelreg.config import load_config
    from labelreg.data.build import build_dataset, dataset_num_classes
    from labelreg.engine import epoch_seed
    from labelreg.losses import class_frequencies, inverse_frequency_weights

    overrides = [*seg_overrides(tiny_synthetic.root, tmp_path, batch=2), "train.loss=asymmetric"]
    torchrun([ROOT / "tests" / "ddp_seg_worker.py", tmp_path / "record", SEG_CONFIG, *overrides])
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
    import shutil

    import h5py

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
    from labelreg.cli import main

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


# ----------------------------------------------------------------------------- a rank that dies


def test_a_killed_rank_stops_the_whole_job_within_seconds(tmp_path):
    """SIGKILL one rank mid-training: torchrun stops the other rank and exits non-zero, leaving no process."""
    import signal
    import time

    env = clean_env()
    errors = open(tmp_path / "stderr.txt", "w")
    job = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                            str(WORKER), str(tmp_path), "2", "100000"], env=env, stdout=subprocess.DEVNULL,
                           stderr=errors)
    log = tmp_path / "ddp" / "train.log"
    started = []
    try:
        deadline = time.monotonic() + 120
        while not (log.is_file() and "epoch 1/" in log.read_text()):  # both ranks are in the training loop
            assert job.poll() is None, (tmp_path / "stderr.txt").read_text()[-3000:]
            assert time.monotonic() < deadline, "the job did not start training"
            time.sleep(0.2)
        started = descendants(job.pid)
        ranks = {rank_of(pid): pid for pid in started if rank_of(pid) is not None}
        assert sorted(ranks) == [0, 1], ranks
        os.kill(ranks[1], signal.SIGKILL)
        killed = time.monotonic()
        code = job.wait(timeout=60)
        elapsed = time.monotonic() - killed
        assert elapsed < 30, f"torchrun took {elapsed:.1f} s to stop the job"  # 1.5 s measured
        assert code != 0
        time.sleep(0.5)
        assert not [pid for pid in started if alive(pid)]  # torchrun left no process behind
    finally:  # should an assertion have failed: end what this test started, and only that
        job.kill()
        job.wait()
        for pid in started:
            if alive(pid) and str(tmp_path) in command_line(pid):
                os.kill(pid, signal.SIGKILL)
        errors.close()


def descendants(pid):
    children = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            children += [int(child) for child in (task / "children").read_text().split()]
    except OSError:  # gone meanwhile
        pass
    return children + [grandchild for child in children for grandchild in descendants(child)]


def command_line(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def rank_of(pid):
    """The ``RANK`` in a process's environment (None for a process torchrun did not start as a rank)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    values = [entry.split(b"=", 1)[1] for entry in environ if entry.startswith(b"RANK=")]
    return int(values[0]) if values else None


def alive(pid):
    """Running (a zombie awaiting its parent's wait counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# ----------------------------------------------------------------------------- class frequencies on disk


class Labels(torch.utils.data.Dataset):
    def __init__(self, labels):
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return {"label": self.labels[index]}


def frequency_config(tmp_path):
    from labelreg.config import Config

    cfg = Config(name="run", task="segmentation", output_dir=str(tmp_path))
    cfg.data.eval_batch_size, cfg.data.num_workers = 2, 0
    return cfg


def test_class_frequencies_are_written_once_atomically_and_read_back(tmp_path):
    from labelreg.losses import class_frequencies, inverse_frequency_weights
    from labelreg.train_seg import asymmetric_weights

    labels = [torch.tensor([[0, 0, 1], [2, 255, 0]]), torch.tensor([[1, 1, 1], [0, 255, 255]]),
              torch.zeros(2, 3).long()]
    cfg = frequency_config(tmp_path)
    weights = asymmetric_weights(cfg, Labels(labels), 3)
    torch.testing.assert_close(weights, inverse_frequency_weights(class_frequencies(labels, 3)))
    stored = json.loads((cfg.run_dir / "class_frequencies.json").read_text())
    assert stored["pixels"] == [10, 4, 1]
    assert [path.name for path in cfg.run_dir.iterdir()] == ["class_frequencies.json"]  # no temporary file left
    # a resumed run reads the file (an empty training set would fail if it counted again)
    torch.testing.assert_close(asymmetric_weights(cfg, Labels([]), 3), weights)


@pytest.mark.parametrize("text", ['{"frequencies": [0.5, 0.2', '{"frequencies": [0.5, 0.5]}', '[1, 2, 3]', ''])
def test_an_unreadable_class_frequencies_file_fails_naming_the_file(tmp_path, text):
    from labelreg.train_seg import asymmetric_weights

    cfg = frequency_config(tmp_path)
    path = cfg.run_dir / "class_frequencies.json"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(RuntimeError, match=f"cannot read class frequencies {path}.*delete the file"):
        asymmetric_weights(cfg, Labels([torch.zeros(2, 2).long()]), 3)


def test_trainers_give_augmentation_per_rank_generators_and_keep_batch_samplers_shared():
    """The augmentation generator of every trainer is reseeded per rank; the depth trainer's mixed batch
    sampler, which every rank must run identically, is not."""
    from types import SimpleNamespace

    from depth.train import depth_task
    from labelreg import train_ae, train_cls, train_seg
    from labelreg.config import Config

    cfg, model = Config(name="x", task="segmentation"), torch.nn.Identity()
    cfg.data.crop_size = [32, 32]
    mixed = SimpleNamespace(generator=torch.Generator())  # the phased sampler's mixed batches
    tasks = {"seg": train_seg.segmentation_task(cfg, model, ["a", "b"]), "ae": train_ae.build_task(cfg, model, ["a"]),
             "cls": train_cls.build_task(cfg, model, 2),
             "depth": depth_task(cfg, model, 2, ["a", "b"], SimpleNamespace(mixed=mixed))}
    for name, task in tasks.items():
        assert len(task.rank_generators) == 1 and task.rank_generators[0] is task.augment.generator, name
        assert not any(generator is task.augment.generator for generator in task.generators), name
    assert len(tasks["depth"].generators) == 1 and tasks["depth"].generators[0] is mixed.generator
