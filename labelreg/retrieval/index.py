"""The on-disk index of a reference set and its exhaustive search (thesis §5.4.3).

Every label map (or image) of a reference set is encoded once by a feature source; a query region
is then compared with every region of the same size in cells, at every position of every
reference image.

Pooling: the cells of a box are concatenated in row-major order (a bh·bw·K vector), not
averaged. The bottleneck is where the autoencoder keeps shape, and shape is a layout of
cells: concatenation keeps "chair back above seat" apart from "seat above chair back",
which an average cannot. ``pooling="mean"`` (the average over the box, layout-free) is
there for comparison. Distances are exact, cosine (``1 - cos``, the default) or L2,
computed for all windows of an image at once as a convolution of its feature map with
the query.

The index is a folder: ``features.bin`` (all cells, row-major per image, cells × K,
float32 or float16, read through ``numpy.memmap``) and ``index.json`` (per-image offsets,
grid and image sizes, what produced the features). It is written chunk by chunk, so the
1,449-image VOC validation set (1.1 M cells: 570 MB in float32 at 128 channels, 285 MB in
float16) never has to fit in memory, and the search reads it back one image at a time.
``open_index`` keeps it next to the checkpoint and rebuilds it only when the checkpoint or
the data change.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm import tqdm

from labelreg.cli_args import progress_wanted  # off after --no-progress
from labelreg.config import DataConfig
from labelreg.engine import run_directory
from labelreg.retrieval.geometry import CELL, Cells, cells_to_pixel_box, grid_shape, pixel_box_to_cells
from labelreg.retrieval.sources import FeatureSource, ImageFeatures, LabelFeatures

INDEX_VERSION = 1
DTYPES = {"float32": np.float32, "float16": np.float16}


@dataclass
class ImageEntry:
    id: str
    height: int
    width: int
    rows: int
    cols: int
    offset: int  # first cell in features.bin


@dataclass
class Match:
    image_id: str
    dataset_index: int  # position in the indexed reference data set
    cells: Cells
    box: tuple[int, int, int, int]
    distance: float

    def as_dict(self) -> dict:
        return {"image_id": self.image_id, "dataset_index": self.dataset_index, "box": list(self.box),
                "cells": list(asdict(self.cells).values()), "distance": self.distance}


@dataclass
class RegionIndex:
    """Bottleneck features of every cell of a reference set, memory-mapped from ``path``."""

    path: Path
    channels: int
    dtype: str
    images: list[ImageEntry]
    meta: dict = field(default_factory=dict)

    @property
    def num_cells(self) -> int:
        return sum(entry.rows * entry.cols for entry in self.images)

    def features(self) -> np.memmap:
        return np.memmap(self.path / "features.bin", dtype=DTYPES[self.dtype], mode="r",
                         shape=(self.num_cells, self.channels))

    def image_features(self, position: int, array: np.ndarray | None = None) -> torch.Tensor:
        """K×rows×cols float32 features of the ``position``-th indexed image."""
        entry = self.images[position]
        array = self.features() if array is None else array
        block = np.array(array[entry.offset:entry.offset + entry.rows * entry.cols], dtype=np.float32)  # a copy: memmaps are read-only
        return torch.from_numpy(block).reshape(entry.rows, entry.cols, self.channels).permute(2, 0, 1)

    @classmethod
    def load(cls, path: str | Path) -> "RegionIndex":
        path = Path(path)
        meta_path = path / "index.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path} does not exist: build the index first (labelreg query builds it)")
        meta = json.loads(meta_path.read_text())
        if meta.get("version") != INDEX_VERSION:
            raise ValueError(f"{meta_path} has index version {meta.get('version')}, this labelreg reads "
                             f"{INDEX_VERSION}; rebuild it (labelreg query --rebuild)")
        index = cls(path, meta["channels"], meta["dtype"], [ImageEntry(**entry) for entry in meta.pop("images")], meta)
        expected = index.num_cells * index.channels * np.dtype(DTYPES[index.dtype]).itemsize
        size = (path / "features.bin").stat().st_size if (path / "features.bin").is_file() else -1
        if size != expected:
            raise ValueError(f"{path / 'features.bin'} holds {size} bytes, index.json describes {expected}: "
                             "the index is incomplete or corrupt; rebuild it (labelreg query --rebuild)")
        return index

    def search(self, query: torch.Tensor, *, k: int = 2, metric: str = "cosine", pooling: str = "concat",
               exclude_ids: Iterable[str] = (), per_image: int | None = 1,
               device: torch.device | str = "cpu") -> list[Match]:
        """The ``k`` nearest regions of the query's size (K×bh×bw features) over the whole index.

        ``per_image``: at most this many regions from one image (1, like the thesis' figure, so
        that overlapping windows of one good image do not fill the list; None: no limit).
        Images listed in ``exclude_ids`` are skipped (the query's own image).
        """
        if query.dim() != 3 or query.shape[0] != self.channels:
            raise ValueError(f"query features must be K×bh×bw with K={self.channels}, got {tuple(query.shape)}")
        if metric not in ("cosine", "l2") or pooling not in ("concat", "mean"):
            raise ValueError(f"metric must be 'cosine' or 'l2' (got {metric!r}); pooling 'concat' or 'mean' "
                             f"(got {pooling!r})")
        excluded, device = set(exclude_ids), torch.device(device)
        query = query.float().to(device)
        candidates: list[Match] = []
        array = self.features()
        for position, entry in enumerate(self.images):  # one image's features in memory at a time
            if entry.id in excluded or entry.rows < query.shape[1] or entry.cols < query.shape[2]:
                continue
            distances = window_distances(self.image_features(position, array).to(device), query, metric, pooling)
            count = distances.numel() if per_image is None else min(per_image, distances.numel())
            values, flat = torch.topk(distances.flatten(), min(count, k), largest=False)
            for value, where in zip(values.tolist(), flat.tolist()):
                r0, c0 = divmod(where, distances.shape[1])
                cells = Cells(r0, c0, r0 + query.shape[1], c0 + query.shape[2])
                candidates.append(Match(entry.id, position, cells,
                                        cells_to_pixel_box(cells, (entry.height, entry.width)), value))
            candidates = sorted(candidates, key=lambda match: match.distance)[:k]
        return candidates


def window_distances(features: torch.Tensor, query: torch.Tensor, metric: str = "cosine",
                     pooling: str = "concat") -> torch.Tensor:
    """Distance of the K×bh×bw ``query`` to every bh×bw window of K×h×w ``features``:
    an (h-bh+1)×(w-bw+1) map (concatenated or averaged cells, cosine or L2)."""
    window = query.shape[-2:]
    if pooling == "mean":
        features = F.avg_pool2d(features[None], window, stride=1)[0]
        query = query.mean(dim=(1, 2), keepdim=True)
        window = (1, 1)
    dots = F.conv2d(features[None], query[None])[0, 0]
    window_sq = F.conv2d(features.pow(2).sum(0)[None, None], features.new_ones(1, 1, *window))[0, 0]
    query_sq = query.pow(2).sum()
    if metric == "cosine":
        return 1 - dots / (window_sq.clamp_min(0).sqrt() * query_sq.sqrt()).clamp_min(1e-12)
    return (query_sq + window_sq - 2 * dots).clamp_min(0).sqrt()


def build_index(source: FeatureSource, dataset: Dataset, path: str | Path, *, chunk_size: int = 64,
                dtype: str = "float32", meta: dict | None = None, progress: bool = True) -> RegionIndex:
    """Encode every sample of ``dataset`` with ``source`` and write the index folder ``path``.

    Features are appended to ``features.bin`` ``chunk_size`` images at a time (one image per
    forward pass: images differ in size, and a padded batch would change the border cells).
    ``index.json`` is written last, so an interrupted build is never mistaken for a finished one.
    """
    if dtype not in DTYPES:
        raise ValueError(f"index dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "index.json").unlink(missing_ok=True)
    entries, offset, channels = [], 0, None
    pending: list[np.ndarray] = []
    with open(path / "features.bin", "wb") as out:
        for position in tqdm(range(len(dataset)), desc=f"indexing {path.name}",
                             disable=not (progress and progress_wanted()),
                             unit="image"):
            sample = dataset[position]
            code = source(sample)
            height, width = sample["label"].shape[-2:] if "label" in sample else sample["image"].shape[-2:]
            rows, cols = grid_shape(int(height), int(width))
            if tuple(code.shape[-2:]) != (rows, cols):
                raise RuntimeError(f"sample {position}: features are {tuple(code.shape[-2:])}, expected {(rows, cols)}")
            channels = code.shape[0] if channels is None else channels
            pending.append(code.permute(1, 2, 0).reshape(-1, channels).cpu().numpy().astype(DTYPES[dtype]))
            entries.append(ImageEntry(str(sample.get("name", position)), int(height), int(width), rows, cols, offset))
            offset += rows * cols
            if len(pending) >= chunk_size:
                out.write(np.concatenate(pending).tobytes())
                pending = []
        if pending:
            out.write(np.concatenate(pending).tobytes())
        out.flush()
        os.fsync(out.fileno())
    if channels is None:
        raise ValueError("the reference data set is empty: nothing to index")
    record = {"version": INDEX_VERSION, "channels": int(channels), "dtype": dtype, "cell": CELL,
              **(meta or {}), "images": [asdict(entry) for entry in entries]}
    temporary = path / "index.json.tmp"
    temporary.write_text(json.dumps(record))
    temporary.replace(path / "index.json")
    return RegionIndex.load(path)


def fingerprint(*parts: object) -> str:
    """Short stable hash naming an index folder after what produced it."""
    return hashlib.sha1(json.dumps([str(part) for part in parts]).encode()).hexdigest()[:10]


def index_description(data: DataConfig, split: str, limit: int | None = None) -> str:
    """What an index was built from, for its fingerprint: the same for the CLI, the demo and notebooks,
    so one index serves them all."""
    return f"{data.dataset}:{Path(data.root).resolve()}:{split}:{limit}:canvas={data.canvas}"


def open_index(source: LabelFeatures | ImageFeatures, dataset: Dataset, checkpoint_path: str | Path, *,
               description: str, folder: str | Path | None = None, rebuild: bool = False, dtype: str = "float32",
               chunk_size: int = 64, progress: bool = True) -> RegionIndex:
    """The index of ``dataset`` under ``source``, built once and kept next to the checkpoint
    (``<run>/index/<kind>-<fingerprint>``). It is rebuilt when the checkpoint file, the data
    (``description``: data set, root and split) or the dtype changed, or when ``rebuild``."""
    stat = Path(checkpoint_path).stat()
    key = fingerprint(source.kind, Path(checkpoint_path).resolve(), stat.st_size, stat.st_mtime_ns, description,
                      len(dataset), dtype)
    folder = Path(folder) if folder else run_directory(checkpoint_path) / "index" / f"{source.kind}-{key}"
    if not rebuild and (folder / "index.json").is_file():
        index = RegionIndex.load(folder)
        if index.meta.get("fingerprint") == key:
            return index
    meta = {"fingerprint": key, "source": source.kind, "checkpoint": str(checkpoint_path), "data": description}
    return build_index(source, dataset, folder, chunk_size=chunk_size, dtype=dtype, meta=meta, progress=progress)


@dataclass
class QueryResult:
    """One query region and its matches, nearest first."""

    query_id: str
    query_index: int
    cells: Cells
    box: tuple[int, int, int, int]
    source: str
    matches: list[Match]

    def as_dict(self) -> dict:
        return {"query_id": self.query_id, "query_index": self.query_index, "box": list(self.box),
                "cells": list(asdict(self.cells).values()), "source": self.source,
                "matches": [match.as_dict() for match in self.matches]}

    def table(self) -> str:
        lines = [f"query {self.query_id} box {','.join(map(str, self.box))} ({self.source} features, "
                 f"{self.cells.shape[0]}×{self.cells.shape[1]} cells)",
                 f"{'rank':>4}  {'image id':24s} {'box y0,x0,y1,x1':20s} {'distance':>9}"]
        for rank, match in enumerate(self.matches, start=1):
            lines.append(f"{rank:>4}  {match.image_id:24s} {','.join(map(str, match.box)):20s} {match.distance:9.4f}")
        return "\n".join(lines)


def run_query(index: RegionIndex, source: FeatureSource, sample: dict, box: Sequence[int], *, k: int = 2,
              metric: str = "cosine", pooling: str = "concat", exclude_self: bool = True,
              device: torch.device | str = "cpu") -> QueryResult:
    """Search ``index`` with the region ``box`` (pixels) of ``sample`` described by ``source``."""
    size = tuple(int(v) for v in sample["image"].shape[-2:])
    cells = pixel_box_to_cells(box, size)
    features = source(sample)[:, cells.r0:cells.r1, cells.c0:cells.c1]
    query_id = str(sample.get("name", sample.get("index", "?")))
    matches = index.search(features, k=k, metric=metric, pooling=pooling, device=device,
                           exclude_ids=[query_id] if exclude_self else [])
    return QueryResult(query_id, int(sample.get("index", -1)), cells, cells_to_pixel_box(cells, size),
                       getattr(source, "kind", "features"), matches)
