"""DDP through torchrun on CPU (gloo): two processes with half the batch match one process."""
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


def launch(out, batch, epochs, processes=1, resume=False):
    command = [str(WORKER), str(out), str(batch), str(epochs), *(["--resume"] if resume else [])]
    if processes > 1:
        command = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *command]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, *command], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return load_checkpoint(Path(out) / "ddp" / "checkpoints" / "last.pt"), done


def assert_same_model(a, b):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4, msg=name)


def test_two_gloo_processes_match_one_process_on_the_same_global_batch(tmp_path):
    single, _ = launch(tmp_path / "single", batch=4, epochs=2)
    double, run = launch(tmp_path / "double", batch=2, epochs=2, processes=2)
    assert single["step"] == double["step"] == 8  # 16 samples / global batch 4, two epochs
    assert_same_model(single["model"], double["model"])
    for one, two in zip(single["history"], double["history"]):
        assert one["train/ce"] == pytest.approx(two["train/ce"], rel=1e-4)  # loss means averaged over ranks
        assert one["val/miou"] == pytest.approx(two["val/miou"], abs=1e-6)  # sharded eval, all-reduced counts
    # only rank 0 wrote the log: one line per epoch
    assert len((tmp_path / "double" / "ddp" / "train.log").read_text().splitlines()) == 2

    # resume under DDP: one epoch, then continue to two, equals the uninterrupted run
    launch(tmp_path / "resumed", batch=2, epochs=1, processes=2)
    resumed, _ = launch(tmp_path / "resumed", batch=2, epochs=2, processes=2, resume=True)
    assert_same_model(resumed["model"], double["model"])


def test_shard_sampler_covers_every_sample_once():
    shards = [list(ShardSampler(10, rank, 3)) for rank in range(3)]
    assert sorted(sum(shards, [])) == list(range(10)) and [len(s) for s in shards] == [4, 3, 3]


def test_single_process_helpers_are_identities():
    model = torch.nn.Linear(2, 2)
    assert not current().enabled and wrap_model(model, torch.device("cpu")) is model and unwrap(model) is model
    with pytest.raises(Exception, match="sync_bn needs CUDA"):
        wrap_model(model, torch.device("cpu"), sync_bn=True)


def test_a_real_trainer_runs_under_torchrun(tiny_synthetic, tmp_path):
    overrides = [f"data.root={tiny_synthetic.root}", f"output_dir={tmp_path}", "name=tiny", "data.crop_size=[32,48]",
                 "data.batch_size=2", "data.eval_batch_size=4", "train.epochs=1", "data.num_workers=0",
                 "train.device=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "labelreg.cli", "train-ae", "--config",
                           str(ROOT / "configs" / "demo" / "ae-128_synth-nyu40.yaml"), *overrides],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint = load_checkpoint(tmp_path / "tiny" / "checkpoints" / "last.pt")
    assert checkpoint["epoch"] == 1 and 0 <= checkpoint["metrics"]["val/miou"] <= 1
    assert not any(key.startswith("module.") for key in checkpoint["model"])  # the plain model's weights
    assert len((tmp_path / "tiny" / "train.log").read_text().splitlines()) == 1
