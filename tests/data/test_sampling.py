from collections import Counter

import pytest
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from labelreg.data.sampling import MixedBatchSampler

# (n_labeled, n_depth_only, batch_size, labeled_per_batch)
COMBOS = [
    (1, 10, 2, 1), (3, 10, 4, 1), (5, 17, 4, 2), (10, 3, 4, 1), (50, 7, 3, 2),
    (4, 0, 1, 1), (5, 0, 2, 1), (7, 0, 3, 3), (2, 9, 5, 4), (6, 6, 6, 1), (13, 100, 8, 3),
]


def epoch(sampler, seed=0):
    sampler.generator.manual_seed(seed)
    return list(sampler)


def make(n_l, n_d, bs, k, **kw):
    return MixedBatchSampler(n_l, n_d, bs, labeled_per_batch=k, generator=torch.Generator(), **kw)


@pytest.mark.parametrize("n_l,n_d,bs,k", COMBOS)
@pytest.mark.parametrize("drop_last", [False, True])
def test_guarantee_coverage_balance_and_len(n_l, n_d, bs, k, drop_last):
    sampler = make(n_l, n_d, bs, k, drop_last=drop_last)
    batches = epoch(sampler)
    assert len(batches) == len(sampler) > 0
    for batch in batches:
        assert 0 < len(batch) <= bs
        n_lab = sum(i < n_l for i in batch)
        assert n_lab >= min(k, len(batch)) and n_lab >= 1
        assert all(0 <= i < n_l + n_d for i in batch)
    flat = [i for b in batches for i in b]
    depth = [i for i in flat if i >= n_l]
    if n_d:
        assert all(sum(i < n_l for i in b) == k for b in batches)
        assert len(depth) == len(set(depth))  # never twice
        if not drop_last or n_d < bs - k:
            assert sorted(depth) == list(range(n_l, n_l + n_d))  # each exactly once
    else:
        assert len(flat) == len(set(flat)) and all(len(b) == bs for b in batches[:-1])
        if not drop_last:
            assert sorted(flat) == list(range(n_l))
    counts = Counter(i for i in flat if i < n_l)
    if sum(counts.values()) >= n_l:
        assert max(counts[i] for i in range(n_l)) - min(counts[i] for i in range(n_l)) <= 1


def test_len_exact_examples():
    assert len(make(3, 10, 4, 1)) == 4  # 3 depth-only per batch: 3+3+3+1
    assert len(make(3, 10, 4, 1, drop_last=True)) == 3
    assert len(make(5, 0, 2, 1)) == 3
    assert len(make(5, 0, 2, 1, drop_last=True)) == 2
    assert len(make(3, 2, 4, 1, drop_last=True)) == 1  # drop_last never empties the epoch


def test_determinism_and_reseeding():
    a, b = make(7, 30, 5, 2), make(7, 30, 5, 2)
    assert epoch(a, 3) == epoch(b, 3)
    assert epoch(a, 3) == epoch(a, 3)  # reseeding replays the epoch exactly (resume)
    assert epoch(a, 3) != epoch(a, 4)


def test_ddp_ranks_disjoint_equal_length():
    n_l, n_d, bs, k, reps = 4, 23, 4, 1, 3
    full = epoch(make(n_l, n_d, bs, k), seed=5)
    shards = [epoch(make(n_l, n_d, bs, k, num_replicas=reps, rank=r), seed=5) for r in range(reps)]
    assert {len(s) for s in shards} == {len(full) // reps}
    assert all(len(make(n_l, n_d, bs, k, num_replicas=reps, rank=r)) == len(full) // reps for r in range(reps))
    taken = [tuple(b) for s in shards for b in s]
    assert len(taken) == len(set(taken)) and set(taken) <= {tuple(b) for b in full}
    depth = [i for s in shards for b in s for i in b if i >= n_l]
    assert len(depth) == len(set(depth))
    assert all(sum(i < n_l for i in b) >= k for s in shards for b in s)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_labeled=0, n_depth_only=5, batch_size=4), "n_labeled"),
    (dict(n_labeled=2, n_depth_only=5, batch_size=1, labeled_per_batch=2), "batch_size"),
    (dict(n_labeled=2, n_depth_only=5, batch_size=2, labeled_per_batch=2), "no room"),
    (dict(n_labeled=2, n_depth_only=5, batch_size=2, labeled_per_batch=0), "labeled_per_batch"),
    (dict(n_labeled=2, n_depth_only=-1, batch_size=2), "n_depth_only"),
    (dict(n_labeled=2, n_depth_only=5, batch_size=2, num_replicas=2, rank=2), "rank"),
    (dict(n_labeled=2, n_depth_only=2, batch_size=4, num_replicas=2), "replicas"),
    (dict(n_labeled=2.0, n_depth_only=2, batch_size=4), "int"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MixedBatchSampler(**kwargs)


class Tiny(Dataset):
    def __init__(self, n, labeled, offset):
        self.n, self.labeled, self.offset = n, labeled, offset

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"x": torch.tensor(float(self.offset + i)), "labeled": self.labeled}


def test_with_dataloader_over_concat_dataset():
    labeled, depth_only = Tiny(3, True, 0), Tiny(11, False, 100)
    sampler = MixedBatchSampler(len(labeled), len(depth_only), 4, labeled_per_batch=2,
                                generator=torch.Generator().manual_seed(0))
    loader = DataLoader(ConcatDataset([labeled, depth_only]), batch_sampler=sampler)
    batches = list(loader)
    assert len(batches) == len(loader) == len(sampler) == 6  # 11 depth-only, 2 per batch
    for batch in batches:
        assert batch["labeled"].sum() >= 2
    seen = sorted(int(x) for b in batches for x, lab in zip(b["x"], b["labeled"]) if not lab)
    assert seen == list(range(100, 111))
