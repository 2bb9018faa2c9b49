"""Where a process runs: its device, its seeds and its place in a ``torchrun`` job.

``resolve_device`` / ``training_device`` pick the device for ``train.device``; ``seed_everything`` and
``epoch_seed`` give the seeds every run and every epoch start from. The rest is multi-GPU and multi-node
training through ``torchrun`` + DistributedDataParallel.

Launch any trainer with torchrun; nothing else changes::

    torchrun --nproc_per_node 4 -m labelreg.cli train-seg --config CFG           # one machine, 4 GPUs
    torchrun --nnodes 2 --node_rank R --nproc_per_node 8 --rdzv_endpoint HOST:29500 \\
        -m labelreg.cli train-seg --config CFG                                   # two machines

Conventions (the same as torchvision's references):
- ``data.batch_size`` is per process; the global batch is ``batch_size × world_size``.
- The training order depends only on ``(train.seed, epoch)``: every rank takes every
  ``world_size``-th sample of the same permutation, so a 2-process run with batch 2 sees
  the same global batches as a 1-process run with batch 4.
- Augmentation is not shared: the engine reseeds ``LoopSpec.rank_generators`` from
  ``(train.seed, epoch, rank)`` every epoch, so each rank draws its own crops and flips
  (reproducibly; rank 0 draws the single-process stream), while ``LoopSpec.generators`` (a batch
  sampler every rank must run identically) and the loader's generator get ``(train.seed, epoch)``.
- What a 2 × 2 run shares with a 1 × 4 run, and what it does not (BatchNorm statistics,
  augmentation, per-rank loss means), is spelled out in the README and tested in
  ``tests/engine/test_distributed.py``.
- Evaluation shards the data without padding (rank r takes samples r, r+W, …) and the
  metrics all-reduce their sums, so every sample counts once.
- Only rank 0 writes logs, TensorBoard, checkpoints and metrics; every rank reads the
  checkpoint to resume.
- CUDA uses NCCL, one GPU per process (``LOCAL_RANK``); CPU uses gloo (tests, debugging).
  ``train.sync_bn`` converts BatchNorm to SyncBatchNorm, which PyTorch runs on GPUs only.
"""
from __future__ import annotations

import datetime
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from labelreg.config import Config, ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current() -> DistInfo:
    """This process's place in the job (rank 0 of 1 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def resolve_device(name: str = "auto") -> torch.device:
    """``train.device``: ``auto`` is the GPU when there is one, else the CPU; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but CUDA is not available on this machine")
    return device


def setup(device_name: str = "auto", *, timeout_s: float = 1800.0) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun; return (info, this process's device).

    ``device_name``: ``train.device``. Under torchrun, ``auto``/``cuda`` mean one GPU per
    process (``cuda:LOCAL_RANK``) with NCCL; ``cpu`` (or no GPU) means gloo on CPU. ``timeout_s``
    (``train.ddp_timeout``): how long a collective waits for the other ranks before it fails, so a
    hung or stopped rank ends the job instead of blocking it for ever.
    """
    if not launched_by_torchrun():
        return DistInfo(), resolve_device(device_name)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if device_name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={device_name!r} but CUDA is not available on this machine")
    if use_cuda:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", device_id=device if use_cuda else None,
                                timeout=datetime.timedelta(seconds=timeout_s))
        _joined_timeout_s.append(timeout_s)
    return current(), device


_COLLECTIVE_FAILURES = ("timed out", "timeout", "connection closed", "connection reset", "broken pipe")
_joined_timeout_s: list[float] = []  # the timeout this process joined its group with (setup)


def collective_failure(error: BaseException) -> str | None:
    """One line for a collective that failed under torchrun (another rank hung, was stopped or died), naming
    this rank and the timeout; None for any other error. Which rank is missing is not known here (gloo
    closes a timed-out collective's connections), but torchrun's log names a rank that exited."""
    text = str(error).strip()
    if not current().enabled or not any(word in text.lower() for word in _COLLECTIVE_FAILURES):
        return None
    info = current()
    waited = f"train.ddp_timeout={_joined_timeout_s[-1]:g} s" if _joined_timeout_s else "train.ddp_timeout"
    return (f"rank {info.rank} of {info.world_size}: a collective failed waiting for the other ranks ({waited}; "
            f"one of them hung, was stopped or died): {text.splitlines()[0] if text else type(error).__name__}")


def training_device(cfg: Config) -> torch.device:
    """This process's device for ``cfg.train.device``; joins the process group under torchrun
    (collectives time out after ``cfg.train.ddp_timeout`` seconds)."""
    return setup(cfg.train.device, timeout_s=cfg.train.ddp_timeout)[1]


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (model initialisation, dropout)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of an epoch's generators; ``rank`` gives each process its own augmentation stream
    (rank 0's is the single-process stream, so single-process runs do not depend on it)."""
    return (seed * 1_000_003 + epoch * 7919 + rank * 104_729 + 17) % 2**63


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class DistributedModel(nn.parallel.DistributedDataParallel):
    """DDP that also answers the wrapped model's attributes (``num_classes``, helper methods),
    so task functions written for the plain model work unchanged. Only ``forward`` goes
    through DDP's gradient synchronisation, as it must."""

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def wrap_model(model: nn.Module, device: torch.device, *, sync_bn: bool = False,
               find_unused_parameters: bool = False) -> nn.Module:
    """DistributedDataParallel around ``model`` (already on ``device``) when distributed, else ``model``."""
    if sync_bn:
        if device.type != "cuda":
            raise ConfigError("train.sync_bn needs CUDA (PyTorch's SyncBatchNorm does not run on CPU); "
                              "set train.sync_bn=false for CPU runs")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if not current().enabled:
        return model
    return DistributedModel(model, device_ids=[device.index] if device.type == "cuda" else None,
                            find_unused_parameters=find_unused_parameters)


def all_reduce_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average a dict of floats over all ranks (identity when not distributed)."""
    if not current().enabled or not values:
        return values
    names = sorted(values)
    tensor = torch.tensor([values[name] for name in names], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    tensor /= dist.get_world_size()
    return dict(zip(names, tensor.tolist()))


def collective_device() -> torch.device:
    """Where tensors for collectives must live: this rank's GPU under NCCL, else the CPU (gloo)."""
    if current().enabled and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over all ranks, on ``tensor``'s device (``tensor`` itself when not distributed)."""
    if not current().enabled:
        return tensor
    total = tensor.to(collective_device(), copy=True)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.to(tensor.device)


def broadcast_flag(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank, so that all ranks take the same branch around a collective."""
    if not current().enabled:
        return flag
    value = torch.tensor([int(flag)], device=collective_device())
    dist.broadcast(value, src=0)
    return bool(value.item())


def all_ranks_true(flag: torch.Tensor) -> torch.Tensor:
    """Logical AND of a boolean scalar over all ranks (so every rank stops together)."""
    if not current().enabled:
        return flag
    value = flag.to(torch.int32).clone()
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return value.bool()


def barrier() -> None:
    if current().enabled:
        dist.barrier()
