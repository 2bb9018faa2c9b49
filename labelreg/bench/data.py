"""Data-loading benchmark: how many images/s the NYUv2 readers (``NYUv2Labeled`` over the .mat,
``NYUv2DepthOnly`` over depth-only frames) deliver through a ``DataLoader`` with N workers, on a given
folder or on synthetic data written to a temporary folder.
"""
from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Subset

from labelreg.bench.report import cell, format_table, machine_info
from labelreg.config import DataConfig
from labelreg.data.build import NYU_MAT_NAME, nyu_mat_path
from labelreg.data.loader import pad_collate
from labelreg.data.nyu import NYUv2DepthOnly, NYUv2Labeled
from labelreg.data.synthetic import write_synthetic_dataset

DATA_COLUMNS = ("reader", "HxW", "frames", "workers", "batch", "images", "img/s (steady)", "img/s (incl. start-up)",
                "first batch s")


def nyu_sources(root: str | Path | None, depth_only: str | Path | None = None) -> dict[str, Path]:
    """``{"mat": …, "depth_only": …}`` found under ``root`` (itself or ``root/nyu``, as the trainer looks for
    the .mat); either may be missing. A given ``depth_only`` is used instead of searching ``root``."""
    found: dict[str, Path] = {}
    if root is not None:
        with contextlib.suppress(FileNotFoundError):
            found["mat"] = nyu_mat_path(DataConfig(root=str(root)))
        if depth_only is None:
            candidates = (Path(root) / "depth_only", Path(root) / "nyu" / "depth_only")
            depth_only = next((folder for folder in candidates if folder.is_dir()), None)
    if depth_only is not None:
        found["depth_only"] = Path(depth_only)
    return found


def nyu_datasets(sources: dict[str, Path], limit: int | None = None) -> dict[str, Dataset]:
    """The readers to benchmark, by name: ``nyu-mat`` (NYUv2Labeled, all frames) and ``nyu-depth-only``."""
    datasets: dict[str, Dataset] = {}
    if "mat" in sources:
        datasets["nyu-mat"] = NYUv2Labeled(sources["mat"], split="all")
    if "depth_only" in sources:
        datasets["nyu-depth-only"] = NYUv2DepthOnly(sources["depth_only"])
    if limit is not None:
        datasets = {name: Subset(d, range(min(limit, len(d)))) for name, d in datasets.items()}
    return datasets


def bench_loader(dataset: Dataset, *, workers: int, batch: int, images: int = 256, seed: int = 0) -> dict[str, Any]:
    """Draw ``images`` frames in random order (repeating the set if it is smaller) through a DataLoader.

    ``epoch_img_s`` counts from creating the iterator (worker start-up included) to the last batch;
    ``img_s`` is the steady rate over the later batches: those after the first half and after the
    2·workers batches the workers prefetch while starting up (``None`` if too few batches remain).
    """
    sampler = RandomSampler(dataset, num_samples=images, generator=torch.Generator().manual_seed(seed))
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers, collate_fn=pad_collate)
    started = time.perf_counter()
    arrivals, counts = [], []
    for sample in loader:
        arrivals.append(time.perf_counter())
        counts.append(len(sample["image"]))
    skip = min(max(len(arrivals) // 2, 2 * workers + 1), len(arrivals) - 1)
    steady_images, steady_time = sum(counts[skip + 1:]), arrivals[-1] - arrivals[skip]
    return {"workers": workers, "batch": batch, "images": sum(counts), "seconds": round(arrivals[-1] - started, 3),
            "first_batch_s": round(arrivals[0] - started, 3),
            "img_s": round(steady_images / steady_time, 1) if steady_time > 0 and steady_images else None,
            "epoch_img_s": round(sum(counts) / (arrivals[-1] - started), 1)}


def bench_data(root: str | Path | None = None, *, workers: Iterable[int] = (0, 1, 2, 4), batch: int = 8,
               images: int = 256, depth_only: str | Path | None = None, limit: int | None = None,
               synthetic: dict[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """Images/s of the NYUv2 readers through DataLoaders with each worker count.

    ``root``: a folder holding ``nyu_depth_v2_labeled.mat`` and/or ``depth_only/`` (or ``root/nyu/…``). Without
    it, a synthetic set (``synthetic``: ``write_synthetic_dataset`` keywords) is written to a temporary folder.
    """
    settings = dict(workers=workers, batch=batch, images=images, limit=limit, progress=progress)
    if root is None and depth_only is None:
        options = {"labeled": 48, "depth_only": 96, "size": (480, 640), "seed": 0, **(synthetic or {})}
        with tempfile.TemporaryDirectory(prefix="labelreg-bench-") as folder:
            if progress:
                print(f"[bench] writing synthetic NYUv2 data {options} to {folder} …", file=sys.stderr, flush=True)
            paths = write_synthetic_dataset(folder, progress=False, **options)
            rows = reader_rows({"mat": paths.nyu_mat, "depth_only": paths.depth_only_dir}, **settings)
        source: str | dict[str, str] = f"synthetic (written to a temporary folder): {options}"
    else:
        sources = nyu_sources(root, depth_only)
        if not sources:
            raise FileNotFoundError(f"no {NYU_MAT_NAME} or depth_only/ under {root} (nor {root}/nyu)")
        rows = reader_rows(sources, **settings)
        source = {key: str(value) for key, value in sources.items()}
    return {"machine": machine_info(), "source": source, "data": rows}


def reader_rows(sources: dict[str, Path], *, workers: Iterable[int], batch: int, images: int, limit: int | None,
                progress: bool) -> list[dict[str, Any]]:
    """One row per reader of ``sources`` and worker count (``bench_loader``'s numbers)."""
    rows = []
    for name, dataset in nyu_datasets(sources, limit).items():
        first = dataset[0]["image"]
        for count in workers:
            if progress:
                print(f"[bench] data: {name}, {count} workers …", file=sys.stderr, flush=True)
            rows.append({"reader": name, "frames": len(dataset), "HxW": f"{first.shape[-2]}x{first.shape[-1]}",
                         **bench_loader(dataset, workers=count, batch=batch, images=images)})
    return rows


def format_data_table(rows: list[dict[str, Any]]) -> str:
    cells = [[r["reader"], r["HxW"], str(r["frames"]), str(r["workers"]), str(r["batch"]), str(r["images"]),
              cell(r["img_s"], 1), cell(r["epoch_img_s"], 1), cell(r["first_batch_s"], 2)] for r in rows]
    return format_table(rows, DATA_COLUMNS, cells)
