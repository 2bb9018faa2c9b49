"""Label-space nearest-neighbour introspection (thesis §5.4.3, SPEC §5).

A region of a label map is described by the phase-one encoder's bottleneck features at
the coarse cells under it (one cell = 16×16 pixels). Every label map of a reference set
is encoded once into an on-disk index; a query region is then compared with every
region of the same size in cells, at every position of every reference image.

Pooling: the cells of a box are concatenated in row-major order (a bh·bw·K vector), not
averaged. The bottleneck is where the autoencoder keeps shape, and shape is a layout of
cells: concatenation keeps "chair back above seat" apart from "seat above chair back",
which an average cannot. ``pooling="mean"`` (the average over the box, layout-free) is
there for comparison. Distances are exact, cosine (``1 - cos``, the default) or L2,
computed for all windows of an image at once as a convolution of its feature map with
the query.

Queries may also start from an image: a phase-two segmenter with the decoder regularizer
predicts the decoder's input (``aux_code``, same grid), and an index over the reference
images' predicted codes is searched with it.

The index is a folder: ``features.bin`` (all cells, row-major per image, cells × K,
float32 or float16, read through ``numpy.memmap``) and ``index.json`` (per-image offsets,
grid and image sizes, what produced the features). It is written chunk by chunk, so the
1,449-image VOC validation set (1.1 M cells: 570 MB in float32 at 128 channels, 285 MB in
float16) never has to fit in memory, and the search reads it back one image at a time.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from labelreg.config import DataConfig
from labelreg.palette import IGNORE_INDEX
from labelreg.engine import run_directory
from labelreg.models.autoencoder import DOWNSAMPLING, LabelAutoencoder, one_hot_labels

CELL = DOWNSAMPLING  # pixels per bottleneck cell
INDEX_VERSION = 1
DTYPES = {"float32": np.float32, "float16": np.float16}


# ---------------------------------------------------------------------------- boxes
@dataclass(frozen=True)
class Cells:
    """A box on the coarse grid, half-open: rows r0..r1-1, columns c0..c1-1."""

    r0: int
    c0: int
    r1: int
    c1: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.r1 - self.r0, self.c1 - self.c0


def grid_shape(height: int, width: int) -> tuple[int, int]:
    """Cells covering an H×W image (the last row/column may be partly outside it)."""
    return math.ceil(height / CELL), math.ceil(width / CELL)


def parse_box(text: str) -> tuple[int, int, int, int]:
    """``"y0,x0,y1,x1"`` → ints (pixels, half-open)."""
    try:
        y0, x0, y1, x1 = (int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"a box looks like y0,x0,y1,x1 in pixels (e.g. 16,32,80,96), got {text!r}") from None
    return y0, x0, y1, x1


def pixel_box_to_cells(box: Sequence[int], image_size: tuple[int, int]) -> Cells:
    """Snap a pixel box (y0, x0, y1, x1; half-open) to the cells it mostly covers.

    Each edge moves to the nearest cell edge (the image border counts as the last cell's
    edge); a box thinner than half a cell still keeps one cell, the one holding its centre.
    """
    y0, x0, y1, x1 = (int(v) for v in box)
    height, width = image_size
    if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
        raise ValueError(f"box {y0},{x0},{y1},{x1} must satisfy 0 <= y0 < y1 <= {height} and 0 <= x0 < x1 <= {width} "
                         "(pixels of the query image, half-open)")
    rows, cols = grid_shape(height, width)

    def snap(low: int, high: int, cells: int, extent: int) -> tuple[int, int]:
        # cell edges clipped to the image, so a partial last cell has its own (nearer) edge
        edges = np.minimum(np.arange(cells + 1) * CELL, extent)
        start = int(np.abs(edges - low).argmin())  # ties widen the box: the first edge for the start…
        stop = cells - int(np.abs(edges - high)[::-1].argmin())  # …and the last one for the stop
        if stop <= start:  # thin box: the cell under its centre
            start = min(int((low + high) / 2 // CELL), cells - 1)
            stop = start + 1
        return start, stop

    r0, r1 = snap(y0, y1, rows, height)
    c0, c1 = snap(x0, x1, cols, width)
    return Cells(r0, c0, r1, c1)


def cells_to_pixel_box(cells: Cells, image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The pixels of ``cells`` inside an H×W image (y0, x0, y1, x1; half-open)."""
    height, width = image_size
    return (cells.r0 * CELL, cells.c0 * CELL, min(cells.r1 * CELL, height), min(cells.c1 * CELL, width))


def class_box(label: torch.Tensor | np.ndarray, class_id: int) -> tuple[int, int, int, int]:
    """Bounding box of the largest connected region of ``class_id`` in an H×W label map."""
    from scipy import ndimage

    mask = np.asarray(label) == class_id
    if not mask.any():
        raise ValueError(f"class {class_id} does not occur in this label map")
    components, count = ndimage.label(mask)
    sizes = np.bincount(components.ravel())[1:]
    ys, xs = np.nonzero(components == 1 + int(sizes.argmax()))
    return int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1


# ---------------------------------------------------------------------------- feature sources
class LabelFeatures:
    """Ground-truth label map → the encoder's bottleneck (K × ⌈H/16⌉ × ⌈W/16⌉)."""

    kind = "labels"

    def __init__(self, autoencoder: LabelAutoencoder, device: torch.device, *, name: str = "autoencoder") -> None:
        self.model, self.device, self.name = autoencoder.to(device).eval(), device, name

    @torch.inference_mode()
    def __call__(self, sample: dict) -> torch.Tensor:
        label = sample["label"].to(self.device)
        height, width = label.shape[-2:]
        rows, cols = grid_shape(height, width)
        # the encoder needs multiples of 16: pad with "ignore", which one-hot encodes to all-zero
        padded = F.pad(label[None], (0, cols * CELL - width, 0, rows * CELL - height), value=IGNORE_INDEX)
        return self.model.encoder(one_hot_labels(padded, self.model.num_classes))[0].float()


class ImageFeatures:
    """Image → a decoder-regularized segmenter's predicted decoder input (``aux_code``)."""

    kind = "images"

    def __init__(self, model: nn.Module, device: torch.device, *, name: str = "segmenter") -> None:
        self.model, self.device, self.name = model.to(device).eval(), device, name

    @torch.inference_mode()
    def _outputs(self, sample: dict) -> dict[str, torch.Tensor]:
        from labelreg.data.transforms import normalize

        # normalisation only, no resizing: pixels must keep their cells
        return self.model(normalize(sample["image"][None].to(self.device)))

    def __call__(self, sample: dict) -> torch.Tensor:
        code = self._outputs(sample)["aux_code"][0].float()
        rows, cols = grid_shape(*sample["image"].shape[-2:])
        if tuple(code.shape[-2:]) != (rows, cols):
            raise RuntimeError(f"the segmenter's aux_code is {tuple(code.shape[-2:])}, expected {(rows, cols)} cells")
        return code

    def predict(self, sample: dict) -> torch.Tensor:
        """The segmenter's predicted label map (H×W, int64) — what the query's features were read from."""
        return self._outputs(sample)["seg"][0].argmax(0).cpu()


FeatureSource = Callable[[dict], torch.Tensor]


# ---------------------------------------------------------------------------- the index
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
        for position in tqdm(range(len(dataset)), desc=f"indexing {path.name}", disable=not progress,
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


# ---------------------------------------------------------------------------- queries
@dataclass
class QueryResult:
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


# ---------------------------------------------------------------------------- pictures
PANEL = (144, 192)  # every panel is letterboxed into H×W so images of any size line up
QUERY_COLOUR, MATCH_COLOUR = (0, 200, 0), (255, 215, 0)


def _panel(sample: dict, box: Sequence[int], colour: tuple[int, int, int], caption: str, border: bool,
           labels: torch.Tensor) -> np.ndarray:
    from PIL import Image, ImageDraw

    from labelreg.viz import overlay, to_uint8_image

    image = to_uint8_image(sample["image"])
    picture = Image.fromarray(overlay(image, labels.numpy(), alpha=0.45))
    draw = ImageDraw.Draw(picture)
    y0, x0, y1, x1 = box
    for inset in range(2):
        draw.rectangle([x0 + inset, y0 + inset, x1 - 1 - inset, y1 - 1 - inset], outline=colour)
    height, width = PANEL[0] - 14, PANEL[1]
    scale = min(height / picture.height, width / picture.width)
    picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                             Image.NEAREST)
    canvas = Image.new("RGB", (PANEL[1], PANEL[0]), colour if border else (255, 255, 255))
    inner = Image.new("RGB", (PANEL[1] - 6, PANEL[0] - 6), (255, 255, 255))
    canvas.paste(inner, (3, 3))
    canvas.paste(picture, ((PANEL[1] - picture.width) // 2, (height - picture.height) // 2 + 2))
    ImageDraw.Draw(canvas).text((4, PANEL[0] - 14), caption[:30], fill=(0, 0, 0))
    return np.asarray(canvas)


def query_figure(results: Sequence[tuple[QueryResult, dict]], reference: Dataset, path: str | Path,
                 titles: Sequence[str] | None = None,
                 labels_of: Callable[[dict], torch.Tensor] | None = None) -> Path:
    """PNG grid like thesis Fig. 5.7: per row the query image with its box (green frame), then its
    matches from ``reference`` with their boxes; label overlays in the VOC palette.

    ``results``: (result, query sample) pairs; ``titles``: a caption per row (e.g. the feature source);
    ``labels_of``: the label map to overlay for a sample (default its ground truth; e.g.
    ``ImageFeatures.predict`` shows what the segmenter saw in each region).
    """
    from labelreg.viz import image_grid, save_png

    labels_of = labels_of or (lambda sample: sample["label"])
    rows = []
    for row, (result, sample) in enumerate(results):
        caption = f"{titles[row]}: " if titles else ""
        panels = [_panel(sample, result.box, QUERY_COLOUR, f"{caption}{result.query_id}", border=True,
                         labels=labels_of(sample))]
        for match in result.matches:
            match_sample = reference[match.dataset_index]
            panels.append(_panel(match_sample, match.box, MATCH_COLOUR, f"{match.image_id}  d={match.distance:.3f}",
                                 border=False, labels=labels_of(match_sample)))
        rows.append(panels)
    columns = max(len(row) for row in rows)
    blank = np.full((*PANEL, 3), 255, np.uint8)
    rows = [row + [blank] * (columns - len(row)) for row in rows]
    return save_png(image_grid(rows, titles=["query (green box)", *(f"match {i}" for i in range(1, columns))]), path)


# ---------------------------------------------------------------------------- from checkpoints
def label_source(checkpoint_path: str | Path, device: torch.device, num_classes: int | None = None) -> LabelFeatures:
    """The encoder of a ``train-ae`` checkpoint as a feature source."""
    from labelreg.config import ConfigError, config_from_dict
    from labelreg.engine import load_checkpoint
    from labelreg.train_ae import autoencoder_from_checkpoint

    checkpoint = load_checkpoint(checkpoint_path)
    cfg = config_from_dict(checkpoint["config"])
    if cfg.task != "autoencoder":
        raise ConfigError(f"{checkpoint_path} is a {cfg.task!r} checkpoint; --autoencoder takes a train-ae checkpoint")
    model = autoencoder_from_checkpoint(checkpoint, str(checkpoint_path), num_classes)
    return LabelFeatures(model, device, name=str(checkpoint_path))


def image_source(checkpoint_path: str | Path, device: torch.device, num_classes: int) -> ImageFeatures:
    """A decoder-regularized ``train-seg`` checkpoint as a feature source (its predicted decoder input)."""
    from labelreg.config import ConfigError, config_from_dict
    from labelreg.engine import load_checkpoint
    from labelreg.evaluation import segmenter_from_checkpoint

    checkpoint = load_checkpoint(checkpoint_path)
    cfg = config_from_dict(checkpoint["config"])
    if cfg.task != "segmentation" or cfg.regularizer.kind != "decoder":
        raise ConfigError(f"{checkpoint_path}: --segmenter needs a train-seg checkpoint trained with "
                          f"regularizer.kind=decoder (it predicts the decoder's input); this one has task={cfg.task!r}"
                          f", regularizer.kind={cfg.regularizer.kind!r}")
    model = segmenter_from_checkpoint(cfg, checkpoint, num_classes, with_regularizer=True)
    return ImageFeatures(model, device, name=str(checkpoint_path))


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


def find_sample(dataset: Dataset, image: str) -> tuple[int, dict]:
    """The sample whose id is ``image`` (or, failing that, at integer position ``image``)."""
    ids = _dataset_ids(dataset)
    if image in ids:
        position = ids.index(image)
    elif image.lstrip("-").isdigit() and -len(dataset) <= int(image) < len(dataset):
        position = int(image) % len(dataset)
    else:
        shown = ", ".join(ids[:5]) + (", …" if len(ids) > 5 else "")
        raise ValueError(f"image {image!r} is not in this split ({len(ids)} images: {shown}); give an id or a position")
    return position, dataset[position]


def _dataset_ids(dataset: Dataset) -> list[str]:
    """Image ids without reading the images (VOC/NYU readers keep them in ``ids``)."""
    from torch.utils.data import Subset

    positions = None
    while isinstance(dataset, Subset):
        positions = [dataset.indices[i] for i in positions] if positions is not None else list(dataset.indices)
        dataset = dataset.dataset
    ids = [str(name) for name in getattr(dataset, "ids", range(len(dataset)))]
    return [ids[i] for i in positions] if positions is not None else ids
