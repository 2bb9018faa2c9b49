"""The ``features`` step's files, and reading them back (:class:`FeatureStore`).

``<run_dir>/features/`` holds, per role (``train`` = ``data.train_split``, ``val`` =
``data.val_split``):

- ``<role>.json``: image names, original label sizes, tags, grid, dimensions, and the
  settings the features were made with (later steps refuse stale features);
- ``<role>_zoomout.npy``: N×D×h×w raw zoom-out features (``weak.cache_dtype``),
  only when ``weak.cache`` is true;
- ``<role>_global.npy``: N×G raw global features (float32), when ``weak.global_feature``;
- ``<role>_labels.npy``: N×h×w uint8 ground truth at the grid (nearest, at cell centres) — used only by
  the dense baseline and to score sampled points, never by the weak pipeline;

plus ``stats.pt``: per-channel mean/std of the training split (zoom-out over all
locations, global over images). Features are stored raw and standardised on read,
so one pass over the training images writes them and computes the statistics.

Why ``weak.cache: false`` exists: at the thesis' scale a cache is impractical
(4224×64×84 values per image: 45 MB in float16, ~480 GB for VOC trainaug), while
recomputing VGG-16 on a GPU takes milliseconds. Then only the small files are
written, and :class:`FeatureStore` recomputes zoom-out maps from the images.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from labelreg.config import Config, ConfigError, to_dict
from labelreg.data.build import build_dataset, dataset_class_names, dataset_num_classes
from labelreg.models.zoomout import grid_size
from labelreg.storage import load_checkpoint, save_checkpoint, write_text_atomic
from labelreg.weak.features import (ChannelStats, ZoomOutExtractor, extractor_from_config, label_to_grid,
                                    prepare_image, standardize)
from labelreg.weak.tags import tags_from_label

ROLES = ("train", "val")
# Settings that change what the features are; a mismatch with the stored ones means "extract again".
FEATURE_KEYS = ("backbone", "backbone_options", "pretrained", "taps", "image_size", "grid_stride", "global_feature",
                "cache", "cache_dtype")
DATA_KEYS = ("dataset", "root", "sbd_root", "train_split", "val_split", "train_limit", "val_limit")


# What tags-only pretraining (``labelreg weak pretrain``, pretrain.py) depends on; stored in backbone.pt and
# compared by every later step, so edited pretraining settings are never silently ignored.
PRETRAIN_KEYS = ("backbone", "backbone_options", "pretrained", "taps", "image_size", "grid_stride", "global_feature",
                 "pretrain_epochs", "pretrain_lr", "pretrain_weight_decay", "pretrain_batch_size", "pretrain_head",
                 "pretrain_pool", "pretrain_crop_area")
PRETRAIN_DATA_KEYS = ("dataset", "root", "sbd_root", "train_split", "train_limit")
# Keyed by (path, size, mtime_ns), so each weight file is hashed / read once per process.
_DIGESTS: dict[tuple[str, int, int], str] = {}
_SETTINGS: dict[tuple[str, int, int], dict[str, Any]] = {}


def features_dir(cfg: Config) -> Path:
    return cfg.run_dir / "features"


def pretrain_dir(cfg: Config) -> Path:
    return cfg.run_dir / "pretrain"


def pretrained_backbone_path(cfg: Config) -> Path:
    return pretrain_dir(cfg) / "backbone.pt"


def pretrain_signature(cfg: Config) -> dict[str, Any]:
    weak, data = to_dict(cfg.weak), to_dict(cfg.data)
    result = {**{f"weak.{k}": weak[k] for k in PRETRAIN_KEYS}, **{f"data.{k}": data[k] for k in PRETRAIN_DATA_KEYS},
              "train.seed": cfg.train.seed}  # seeds the initialisation, the head, the batches and the crops
    if cfg.weak.pretrained is not None and Path(cfg.weak.pretrained).is_file():  # pretraining started from it
        result["init_weights.sha256"] = file_digest(cfg.weak.pretrained)
    return result


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (memoised on path, size and modification time)."""
    path = Path(path)
    key = _file_key(path)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def _file_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def _stored_settings(path: Path) -> dict[str, Any]:
    key = _file_key(path)
    if key not in _SETTINGS:
        _SETTINGS[key] = load_checkpoint(path).get("settings", {})
    return _SETTINGS[key]


def _refuse_stale(current: dict[str, Any], stored: dict[str, Any], made: str, step: str) -> None:
    """Raise ConfigError naming every setting that differs from the stored one, and the step to rerun."""
    changed = {k: (v, stored.get(k)) for k, v in current.items() if stored.get(k) != v}
    if changed:
        details = ", ".join(f"{k}: now {now!r}, stored {old!r}" for k, (now, old) in changed.items())
        raise ConfigError(f"{made} with other settings ({details}); run `labelreg weak {step}` again")


def backbone_weights(cfg: Config) -> str | None:
    """The weight file the feature extractor loads: ``<run_dir>/pretrain/backbone.pt`` when
    ``weak.pretrain_epochs > 0`` (after checking it was trained with the current settings), else
    ``weak.pretrained`` (None: random init)."""
    if cfg.weak.pretrain_epochs <= 0:
        return cfg.weak.pretrained
    path = pretrained_backbone_path(cfg)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: weak.pretrain_epochs={cfg.weak.pretrain_epochs} needs "
                                "`labelreg weak pretrain --config ...` first")
    _refuse_stale(pretrain_signature(cfg), _stored_settings(path), f"{path} was pretrained", "pretrain")
    return str(path)


def make_extractor(cfg: Config) -> ZoomOutExtractor:
    """The frozen feature extractor of every step: the configured backbone with :func:`backbone_weights`."""
    return extractor_from_config(dataclasses.replace(cfg.weak, pretrained=backbone_weights(cfg)), seed=cfg.train.seed)


def signature(cfg: Config) -> dict[str, Any]:
    weak, data = to_dict(cfg.weak), to_dict(cfg.data)
    result = {**{f"weak.{k}": weak[k] for k in FEATURE_KEYS}, **{f"data.{k}": data[k] for k in DATA_KEYS},
              "train.seed": cfg.train.seed}  # seeds a random-init backbone
    weights = backbone_weights(cfg)
    if weights is not None:  # the weights' content, not just their path: retrained or replaced weights are stale
        result["weights.sha256"] = file_digest(weights)
    if cfg.weak.pretrain_epochs > 0:
        result.update({f"weak.{k}": weak[k] for k in PRETRAIN_KEYS if k.startswith("pretrain_")})
    return result


def split_dataset(cfg: Config, role: str) -> Dataset:
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    split = cfg.data.train_split if role == "train" else cfg.data.val_split
    return build_dataset(cfg.data, split, limit=cfg.data.train_limit if role == "train" else cfg.data.val_limit)


def _collate(samples: list[dict], *, size: Sequence[int], grid: Sequence[int], num_classes: int) -> dict:
    """Resize every image to ``size`` (so any VOC image batches) and derive tags and grid labels in the workers."""
    return {"image": torch.stack([prepare_image(s["image"], size) for s in samples]),
            "grid_label": torch.stack([label_to_grid(s["label"], grid) for s in samples]),
            "tags": [tags_from_label(s["label"], num_classes) for s in samples],
            "label_size": [list(s["label"].shape) for s in samples],
            "name": [str(s.get("name", s["index"])) for s in samples]}


def image_loader(cfg: Config, dataset: Dataset, indices: Sequence[int] | None = None) -> DataLoader:
    subset = dataset if indices is None else torch.utils.data.Subset(dataset, list(indices))
    size = tuple(cfg.weak.image_size)
    collate = partial(_collate, size=size, grid=grid_size(size, cfg.weak.grid_stride),
                      num_classes=dataset_num_classes(dataset))
    workers = cfg.data.num_workers if indices is None else 0  # a handful of images: workers cost more than they save
    return DataLoader(subset, batch_size=cfg.weak.feature_batch_size, shuffle=False, num_workers=workers,
                      collate_fn=collate)


def extract_features(cfg: Config, *, device: torch.device, log: Callable[[str], None] = print,
                     progress: bool = True) -> dict[str, Any]:
    """Run the backbone over both splits and write ``<run_dir>/features`` (see the module docstring)."""
    if cfg.weak.cache_dtype not in ("float16", "float32"):
        raise ConfigError(f"weak.cache_dtype={cfg.weak.cache_dtype!r}; choose 'float16' or 'float32'")
    if len(cfg.weak.image_size) != 2 or min(cfg.weak.image_size) < cfg.weak.grid_stride:
        raise ConfigError(f"weak.image_size must be [H, W] of at least grid_stride, got {cfg.weak.image_size}")
    folder = features_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    extractor = make_extractor(cfg).to(device)
    stats = {"zoomout": ChannelStats(extractor.dim)}
    if extractor.global_dim:
        stats["global"] = ChannelStats(extractor.global_dim)
    weights = backbone_weights(cfg)
    summary: dict[str, Any] = {"dim": extractor.dim, "global_dim": extractor.global_dim, "taps": extractor.taps,
                               "weights": weights}
    log(f"features: backbone {cfg.weak.backbone} with "
        f"{'random-init weights (seed ' + str(cfg.train.seed) + ')' if weights is None else 'weights ' + weights}")
    for role in ROLES:  # train first: its statistics are the ones every split is standardised with
        meta = _write_role(cfg, role, extractor, device, folder, stats if role == "train" else None, progress)
        summary[role] = {"images": len(meta["names"]), "split": meta["split"]}
        log(f"features: {role} ({meta['split']}) {len(meta['names'])} images, grid {meta['grid']}, "
            f"D={meta['dim']}, G={meta['global_dim']}{'' if meta['cached'] else ' (not cached: recomputed on use)'}")
        if role == "train":
            save_checkpoint(folder / "stats.pt",
                            {name: dict(zip(("mean", "std"), s.result())) for name, s in stats.items()})
    summary["grid"] = meta["grid"]
    return summary


def _write_role(cfg: Config, role: str, extractor: ZoomOutExtractor, device: torch.device, folder: Path,
                stats: dict[str, ChannelStats] | None, progress: bool) -> dict[str, Any]:
    dataset = split_dataset(cfg, role)
    n, grid = len(dataset), grid_size(tuple(cfg.weak.image_size), cfg.weak.grid_stride)
    if n == 0:
        raise ValueError(f"split {role!r} of {cfg.data.root} is empty")
    dtype = np.float16 if cfg.weak.cache_dtype == "float16" else np.float32
    zoomout = (np.lib.format.open_memmap(folder / f"{role}_zoomout.npy", mode="w+", dtype=dtype,
                                         shape=(n, extractor.dim, *grid)) if cfg.weak.cache else None)
    scene = np.zeros((n, extractor.global_dim), np.float32) if extractor.global_dim else None
    labels = np.zeros((n, *grid), np.uint8)
    meta: dict[str, Any] = {"role": role, "split": cfg.data.train_split if role == "train" else cfg.data.val_split,
                            "names": [], "label_sizes": [], "tags": [], "grid": list(grid), "dim": extractor.dim,
                            "global_dim": extractor.global_dim, "cached": cfg.weak.cache,
                            "num_classes": dataset_num_classes(dataset), "class_names": dataset_class_names(dataset),
                            "signature": signature(cfg)}
    start = 0
    for batch in tqdm(image_loader(cfg, dataset), desc=f"features {role}", disable=not progress, leave=False):
        maps, vectors = extractor(batch["image"].to(device))
        stop = start + len(maps)
        if stats is not None:
            stats["zoomout"].update(maps)
            if vectors is not None:
                stats["global"].update(vectors)
        if zoomout is not None:
            values = maps.cpu().numpy().astype(dtype)
            if not np.isfinite(values).all():
                raise ValueError(f"features of {role} images {start}..{stop - 1} overflow {cfg.weak.cache_dtype}; "
                                 "set weak.cache_dtype=float32")
            zoomout[start:stop] = values
        if scene is not None:
            scene[start:stop] = vectors.cpu().numpy()
        labels[start:stop] = batch["grid_label"].numpy()
        for key, stored in (("name", "names"), ("label_size", "label_sizes"), ("tags", "tags")):
            meta[stored].extend(batch[key])
        start = stop
    if zoomout is not None:
        zoomout.flush()
        del zoomout
    if scene is not None:
        np.save(folder / f"{role}_global.npy", scene)
    np.save(folder / f"{role}_labels.npy", labels)
    write_text_atomic(folder / f"{role}.json", json.dumps(meta))  # compact: one name per image
    return meta


class FeatureStore:
    """Standardised features of one split, read from the cache or recomputed (``weak.cache: false``).

    Attributes: ``names``, ``tags`` (per image, sorted foreground classes), ``grid`` (h, w),
    ``dim`` (D), ``global_dim`` (G), ``labels`` (N×h×w uint8 grid ground truth, for the
    baseline and for scoring), ``num_classes``, ``class_names``.
    """

    def __init__(self, cfg: Config, role: str, *, device: torch.device | None = None) -> None:
        folder = features_dir(cfg)
        path = folder / f"{role}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run `labelreg weak features --config ...` first")
        meta = json.loads(path.read_text())
        _refuse_stale(signature(cfg), meta["signature"], f"{folder} holds features made", "features")
        self.cfg, self.role, self.device = cfg, role, device or torch.device("cpu")
        self.names: list[str] = meta["names"]
        self.tags: list[list[int]] = meta["tags"]
        self.grid: tuple[int, int] = tuple(meta["grid"])
        self.dim, self.global_dim = meta["dim"], meta["global_dim"]
        self.num_classes, self.class_names = meta["num_classes"], meta["class_names"]
        self.labels = np.load(folder / f"{role}_labels.npy")
        stats = load_checkpoint(folder / "stats.pt")
        self.mean, self.std = stats["zoomout"]["mean"], stats["zoomout"]["std"]
        self.global_mean = stats["global"]["mean"] if "global" in stats else None
        self.global_std = stats["global"]["std"] if "global" in stats else None
        self._zoomout = np.load(folder / f"{role}_zoomout.npy", mmap_mode="r") if meta["cached"] else None
        self._global = np.load(folder / f"{role}_global.npy") if self.global_dim else None
        self._live: tuple[ZoomOutExtractor, Dataset] | None = None

    def __len__(self) -> int:
        return len(self.names)

    def _raw(self, indices: Sequence[int]) -> torch.Tensor:
        if self._zoomout is not None:
            return torch.from_numpy(np.stack([self._zoomout[i] for i in indices]).astype(np.float32))
        if self._live is None:  # built on first use: the backbone is only needed in this mode
            self._live = (make_extractor(self.cfg).to(self.device),
                          split_dataset(self.cfg, self.role))
        extractor, dataset = self._live
        maps = [extractor(batch["image"].to(self.device))[0].float().cpu()
                for batch in image_loader(self.cfg, dataset, indices)]
        return torch.cat(maps)

    def zoomout(self, indices: Sequence[int]) -> torch.Tensor:
        """B×D×h×w zoom-out features, standardised with the training statistics (float32, CPU)."""
        return standardize(self._raw(indices), self.mean, self.std)

    def global_features(self, indices: Sequence[int]) -> torch.Tensor | None:
        """B×G standardised global features, or None without ``weak.global_feature``."""
        if self._global is None:
            return None
        return standardize(torch.from_numpy(self._global[list(indices)]), self.global_mean, self.global_std)

    def segmentation_input(self, indices: Sequence[int]) -> torch.Tensor:
        """B×(D+G)×h×w: zoom-out features with the global feature replicated at every location (§4.4.1)."""
        maps = self.zoomout(indices)
        scene = self.global_features(indices)
        if scene is None:
            return maps
        return torch.cat([maps, scene[:, :, None, None].expand(-1, -1, *maps.shape[-2:])], dim=1)
