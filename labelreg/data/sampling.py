"""Batch samplers for mixed labeled + depth-only training (thesis §5.5.2.1).

``MixedBatchSampler`` indexes a ``ConcatDataset([labeled, depth_only])``: indices
``0..n_labeled-1`` are labeled images, ``n_labeled..n_labeled+n_depth_only-1`` are
depth-only frames. Every batch holds at least one fully labeled image, so the
segmentation loss is defined for every batch.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class MixedBatchSampler(Sampler[list[int]]):
    """Batches of ``labeled_per_batch`` labeled indices plus depth-only indices.

    An epoch is one shuffled pass over the depth-only frames (each exactly once);
    every batch takes ``labeled_per_batch`` labeled indices first, then
    ``batch_size - labeled_per_batch`` depth-only ones (the last batch may hold fewer
    depth-only ones unless ``drop_last``). Labeled indices are drawn by walking
    through reshuffled permutations of the labeled set, so within an epoch the use
    counts of any two labeled images differ by at most one.

    With ``n_depth_only == 0`` the sampler degenerates to one shuffled pass over the
    labeled set in batches of ``batch_size`` (every index labeled; the last batch may
    be short unless ``drop_last``).

    The API takes a count, not a fraction: convert a ratio with
    ``max(1, round(fraction * batch_size))``. ``drop_last`` is ignored when it would
    leave no batch at all (as ``engine.make_loader`` does).

    All randomness comes from ``generator`` (a fresh one seeded from torch's global
    RNG when None): the engine reseeds it with ``manual_seed`` before each epoch, so
    an epoch's batches are a pure function of that seed, exact across resume.

    DDP: every rank builds the same epoch (all ranks must seed ``generator``
    identically) and keeps the batches ``rank, rank + num_replicas, ...``; the
    remainder is dropped so all ranks get the same number of batches. Batches are
    disjoint across ranks (so are their depth-only indices; a labeled image may
    appear on two ranks since labeled indices are reused within an epoch anyway).
    """

    def __init__(self, n_labeled: int, n_depth_only: int, batch_size: int, *,
                 labeled_per_batch: int = 1, generator: torch.Generator | None = None,
                 drop_last: bool = False, num_replicas: int = 1, rank: int = 0) -> None:
        for name, value in (("n_labeled", n_labeled), ("n_depth_only", n_depth_only),
                            ("batch_size", batch_size), ("labeled_per_batch", labeled_per_batch),
                            ("num_replicas", num_replicas), ("rank", rank)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an int, got {value!r}")
        if n_labeled < 1:
            raise ValueError(f"n_labeled must be ≥ 1 (every batch needs a labeled image), got {n_labeled}")
        if n_depth_only < 0:
            raise ValueError(f"n_depth_only must be ≥ 0, got {n_depth_only}")
        if labeled_per_batch < 1:
            raise ValueError(f"labeled_per_batch must be ≥ 1, got {labeled_per_batch}")
        if batch_size < labeled_per_batch:
            raise ValueError(f"batch_size ({batch_size}) must be ≥ labeled_per_batch ({labeled_per_batch})")
        if n_depth_only > 0 and batch_size == labeled_per_batch:
            raise ValueError(f"batch_size ({batch_size}) leaves no room for depth-only frames next to "
                             f"{labeled_per_batch} labeled per batch; increase batch_size")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"need num_replicas ≥ 1 and 0 ≤ rank < num_replicas, got {num_replicas}/{rank}")
        self.n_labeled, self.n_depth_only = n_labeled, n_depth_only
        self.batch_size, self.labeled_per_batch = batch_size, labeled_per_batch
        self.generator, self.drop_last = generator, bool(drop_last)
        self.num_replicas, self.rank = num_replicas, rank
        if len(self) == 0:
            raise ValueError(f"{self._epoch_batches()} batches per epoch cannot be shared by "
                             f"{num_replicas} replicas: every rank would get none")

    @property
    def _mixed(self) -> bool:
        return self.n_depth_only > 0

    def _epoch_batches(self) -> int:
        """Batches in the whole epoch, before splitting among replicas."""
        per_batch = self.batch_size - self.labeled_per_batch if self._mixed else self.batch_size
        pool = self.n_depth_only if self._mixed else self.n_labeled
        full, rest = divmod(pool, per_batch)
        # drop_last only when at least one full batch remains, as make_loader does
        return full if self.drop_last and full > 0 else full + (rest > 0)

    def __len__(self) -> int:
        return self._epoch_batches() // self.num_replicas

    def _labeled_stream(self, generator: torch.Generator) -> Iterator[int]:
        """Labeled indices from consecutive fresh permutations (balanced use)."""
        while True:
            yield from torch.randperm(self.n_labeled, generator=generator).tolist()

    def _all_batches(self, generator: torch.Generator) -> list[list[int]]:
        n_batches = self._epoch_batches()
        if not self._mixed:
            order = torch.randperm(self.n_labeled, generator=generator).tolist()
            return [order[i * self.batch_size:(i + 1) * self.batch_size] for i in range(n_batches)]
        per_batch = self.batch_size - self.labeled_per_batch
        depth = (torch.randperm(self.n_depth_only, generator=generator) + self.n_labeled).tolist()
        labeled = self._labeled_stream(generator)
        batches = []
        for i in range(n_batches):
            batch = [next(labeled) for _ in range(self.labeled_per_batch)]
            batches.append(batch + depth[i * per_batch:(i + 1) * per_batch])
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        generator = self.generator
        if generator is None:
            generator = torch.Generator()
            generator.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        batches = self._all_batches(generator)
        # strided slice of the first len(self)*num_replicas batches: disjoint, equal length
        yield from batches[self.rank:len(self) * self.num_replicas:self.num_replicas]

