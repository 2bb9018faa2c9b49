"""From datasets to batches: collate (padding to a common size), loaders, epoch-wise shuffling, the device.

A batch is a dict like the sample dicts of :mod:`labelreg.data` with a leading batch dimension, plus
``size`` (the images' sizes before padding). Under ``torchrun`` a shuffled loader gives each rank its
share of every global batch, and an unshuffled (evaluation) loader a disjoint shard of the samples
(:mod:`labelreg.runtime` spells out the conventions).
"""
from __future__ import annotations

from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, default_collate

from labelreg.palette import IGNORE_INDEX
from labelreg.runtime import current

Batch = dict[str, Any]


class ShardSampler(Sampler[int]):
    """Rank r of W takes samples r, r+W, r+2W, … — disjoint, covering, no padding (evaluation)."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


PAD_VALUES = {"image": 0, "label": IGNORE_INDEX, "depth": 0.0}


def pad_collate(samples: list[Batch]) -> Batch:
    """Collate sample dicts, padding images of different sizes to the largest at bottom/right.

    Padding: image 0, label 255 (ignored by losses and metrics), depth 0 (invalid).
    Every batch gets ``size``: B×2 int64 original (H, W), so predictions can be cropped back.
    """
    if "image" not in samples[0]:
        return default_collate(samples)
    sizes = [tuple(sample["image"].shape[-2:]) for sample in samples]
    height, width = max(h for h, _ in sizes), max(w for _, w in sizes)
    if any(size != (height, width) for size in sizes):
        padded = []
        for sample in samples:
            sample = dict(sample)
            for key, value in PAD_VALUES.items():
                if key in sample:
                    tensor = sample[key]
                    pad = (0, width - tensor.shape[-1], 0, height - tensor.shape[-2])
                    sample[key] = torch.nn.functional.pad(tensor, pad, value=value)
            padded.append(sample)
        samples = padded
    batch = default_collate(samples)
    batch["size"] = torch.tensor(sizes, dtype=torch.int64)
    return batch


def make_loader(dataset: Dataset, *, batch_size: int, shuffle: bool, num_workers: int, drop_last: bool = False,
                seed: int = 0, device: torch.device | None = None) -> DataLoader:
    """A DataLoader with ``pad_collate``, pinned memory on CUDA and persistent workers.

    Shuffled loaders draw a permutation from ``(seed, epoch)`` (``fit`` calls ``set_epoch``) and,
    under torchrun, each rank takes every ``world_size``-th sample of it, so the global batches
    do not depend on the number of processes. Unshuffled loaders are sharded without padding
    when distributed (``ShardSampler``; see :mod:`labelreg.runtime`).
    """
    if len(dataset) == 0:
        raise ValueError(f"{type(dataset).__name__} is empty: nothing to load")
    info = current()
    if shuffle:
        sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed,
                                     drop_last=drop_last and len(dataset) >= info.world_size)
    else:
        sampler = ShardSampler(len(dataset), info.rank, info.world_size) if info.enabled else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last and len(sampler if sampler is not None else dataset) >= batch_size,
        pin_memory=device is not None and device.type == "cuda",
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed),  # worker seeds
        collate_fn=pad_collate,
    )


def set_loader_epoch(loader: DataLoader, epoch: int) -> None:
    """Tell the loader's sampler (or batch sampler) which epoch starts, for its shuffling order."""
    for sampler in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)


def to_device(batch: Batch, device: torch.device) -> Batch:
    """Every tensor of ``batch`` on ``device`` (asynchronously from pinned memory); other values as they are."""
    return {key: value.to(device, non_blocking=True) if torch.is_tensor(value) else value for key, value in batch.items()}

