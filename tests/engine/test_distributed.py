"""DDP through torchrun on CPU (gloo): what 2 processes share with 1 process of twice the batch, the
sharding of evaluation, a killed rank stopping the job and a stopped rank ending it after
train.ddp_timeout (the trainers under torchrun: test_distributed_trainers.py)."""
import datetime
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from labelreg import runtime
from labelreg.config import config_from_dict
from labelreg.data.loader import ShardSampler
from labelreg.runtime import current, training_device, wrap_model
from labelreg.storage import load_checkpoint
from tests.engine.ddp_worker import main as train_toy

WORKER = Path(__file__).with_name("ddp_worker.py")
ROOT = Path(__file__).resolve().parents[2]


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
    assert not current().enabled and wrap_model(model, torch.device("cpu")) is model
    with pytest.raises(Exception, match="sync_bn needs CUDA"):
        wrap_model(model, torch.device("cpu"), sync_bn=True)


# ----------------------------------------------------------------------------- a rank that hangs


def test_train_ddp_timeout_reaches_init_process_group(monkeypatch):
    """Under torchrun the process group is joined with the config's timeout (torch's default is 30 min for
    gloo and 10 min for NCCL, and an earlier version passed none)."""
    joined = {}
    monkeypatch.setattr(runtime, "launched_by_torchrun", lambda: True)
    monkeypatch.setattr(runtime.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(runtime.dist, "init_process_group",
                        lambda backend, **options: joined.update(options, backend=backend))
    device = training_device(config_from_dict({}, ["train.device=cpu", "train.ddp_timeout=42.5"]))
    assert device == torch.device("cpu") and joined["backend"] == "gloo"
    assert joined["timeout"] == datetime.timedelta(seconds=42.5)


STOPPED_RANK = """
import os, signal, sys
import torch
from labelreg.config import config_from_dict
from labelreg.runtime import all_reduce_sum, collective_failure, current, training_device
training_device(config_from_dict({}, ["train.device=cpu", "train.ddp_timeout=5"]))
if current().rank == 1:
    os.kill(os.getpid(), signal.SIGSTOP)  # as `kill -STOP`: alive, holding its connections, never answering
try:
    all_reduce_sum(torch.ones(1))
except RuntimeError as error:
    print(collective_failure(error), file=sys.stderr)
    sys.exit(2)
"""


@pytest.mark.slow
def test_a_stopped_rank_ends_the_run_after_the_timeout_naming_the_rank(tmp_path):
    """Two gloo processes; rank 1 stops itself (SIGSTOP). Rank 0's collective fails after train.ddp_timeout=5 s
    with one line naming its rank, where it used to wait for ever."""
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**clean_env(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2"}
    ranks = [subprocess.Popen([sys.executable, "-c", STOPPED_RANK], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}, text=True) for rank in (0, 1)]
    try:
        _, errors = ranks[0].communicate(timeout=120)
        assert ranks[0].returncode == 2, errors[-3000:]
        message = errors.strip().splitlines()[-1]
        assert message.startswith("rank 0 of 2: a collective failed waiting for the other ranks "
                                  "(train.ddp_timeout=5 s; one of them hung, was stopped or died)"), errors[-3000:]
    finally:
        for process in ranks:
            process.kill()  # SIGKILL ends a stopped process too
            process.wait()


# ----------------------------------------------------------------------------- a rank that dies


def test_a_killed_rank_stops_the_whole_job_within_seconds(tmp_path):
    """SIGKILL one rank mid-training: torchrun stops the other rank and exits non-zero, leaving no process."""
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
