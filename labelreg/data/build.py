"""Build datasets and device augmentation from the ``data`` section of a config."""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset

from labelreg.config import ConfigError, DataConfig
from labelreg.data.camvid import CamVid
from labelreg.data.loader import make_loader
from labelreg.data.nyu import NYUv2Labeled
from labelreg.data.synthetic import dataset_exists, write_synthetic_dataset
from labelreg.data.transforms import FitPad, JointAugment
from labelreg.data.voc import VOCSegmentation

NYU_MAT_NAME = "nyu_depth_v2_labeled.mat"


def ensure_synthetic(cfg: DataConfig) -> None:
    """Write the synthetic data set at ``cfg.root`` when asked to and it is not there yet."""
    if cfg.synthesize_if_missing and cfg.dataset == "camvid":
        raise ConfigError("data.synthesize_if_missing=true writes synthetic VOC/NYUv2 data, not CamVid: set it false "
                          "and point data.root at a CamVid folder")
    if cfg.synthesize_if_missing and not dataset_exists(cfg.root):
        height, width = cfg.synth_size
        print(f"writing synthetic data set to {cfg.root} ({cfg.synth_labeled} labeled, "
              f"{cfg.synth_depth_only} depth-only, {height}×{width}, seed {cfg.synth_seed})")
        write_synthetic_dataset(cfg.root, labeled=cfg.synth_labeled, depth_only=cfg.synth_depth_only,
                                size=(height, width), seed=cfg.synth_seed,
                                if_missing=True)  # another training may be writing the same root: wait, reuse


def nyu_mat_path(cfg: DataConfig) -> Path:
    """``data.mat_path``, else the labeled .mat in ``data.root`` or in ``data.root/nyu`` (the synthetic layout)."""
    if cfg.mat_path:
        return Path(cfg.mat_path)
    root = Path(cfg.root)
    for candidate in (root / NYU_MAT_NAME, root / "nyu" / NYU_MAT_NAME):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no {NYU_MAT_NAME} in {root} or {root / 'nyu'}; set data.root or data.mat_path")


def check_full_resolution_scoring(cfg: DataConfig) -> None:
    """CamVid is scored on its full 360×480 labels (``labelreg.data.camvid``'s protocol): nothing may resize them."""
    if cfg.dataset != "camvid":
        return
    for key in ("canvas", "eval_size"):
        if getattr(cfg, key) is not None:
            raise ConfigError(f"data.{key}={getattr(cfg, key)!r}: CamVid is scored on its full 360×480 labels, so "
                              f"data.{key} must be null; train at a smaller size with data.crop_size and let the "
                              "segmenter read that size at evaluation with eval.scales=[] eval.short_sides=[180] (e.g.)")


def build_dataset(cfg: DataConfig, split: str, *, limit: int | None = None) -> Dataset:
    """The labeled segmentation dataset for ``split`` (CPU samples fit-and-padded to ``data.canvas``)."""
    ensure_synthetic(cfg)
    check_full_resolution_scoring(cfg)
    transform = FitPad(tuple(cfg.canvas)) if cfg.canvas else None
    if cfg.dataset == "voc":
        dataset = VOCSegmentation(cfg.root, split, sbd_root=cfg.sbd_root, transform=transform)
    elif cfg.dataset == "nyu":
        dataset = NYUv2Labeled(nyu_mat_path(cfg), split, splits_path=cfg.splits_path, mapping_path=cfg.mapping_path,
                               transform=transform)
    elif cfg.dataset == "camvid":
        dataset = CamVid(cfg.root, split, transform=transform)
    else:
        raise ConfigError(f"data.dataset={cfg.dataset!r}; choose 'voc', 'nyu' or 'camvid'")
    if limit is not None:
        if limit <= 0:
            raise ConfigError(f"a data limit must be positive, got {limit}")
        dataset = Subset(dataset, range(min(limit, len(dataset))))
    return dataset


def unwrap_subsets(dataset: Dataset) -> tuple[Dataset, list[int] | None]:
    """The reader under any ``Subset`` wrappers, and the reader positions the wrapped set shows (None: all)."""
    positions = None
    while isinstance(dataset, Subset):
        positions = [dataset.indices[i] for i in positions] if positions is not None else list(dataset.indices)
        dataset = dataset.dataset
    return dataset, positions


def dataset_num_classes(dataset: Dataset) -> int:
    return unwrap_subsets(dataset)[0].num_classes


def dataset_class_names(dataset: Dataset) -> list[str]:
    return list(unwrap_subsets(dataset)[0].class_names)


def evaluation_subsets(dataset: Dataset) -> dict[str, frozenset[str]]:
    """Parts of an evaluation set scored on their own as well: {metric prefix: the ``sequence`` values in it}
    (CamVid test: ``{"Seq05VD": {"Seq05VD"}}``, its unseen drive); empty for readers without such parts."""
    return dict(getattr(unwrap_subsets(dataset)[0], "eval_subsets", {}))


def build_augmentations(cfg: DataConfig) -> tuple[JointAugment, JointAugment]:
    """Training and evaluation device transforms from the config.

    The training transform draws from its own generator, which the engine reseeds
    every epoch so that resumed runs repeat the same augmentation.
    """
    check_full_resolution_scoring(cfg)
    if cfg.crop_area and cfg.scale:
        raise ConfigError("set either data.crop_area (random resized crop) or data.scale (scale jitter), "
                          "not both; give the other null")
    train = JointAugment(
        tuple(cfg.crop_size) if cfg.crop_size else None,
        train=True,
        hflip=cfg.hflip,
        crop_area=tuple(cfg.crop_area) if cfg.crop_area else None,
        crop_aspect=tuple(cfg.crop_aspect),
        scale=tuple(cfg.scale) if cfg.scale else None,
        depth_interp=cfg.depth_interp,
        generator=torch.Generator().manual_seed(0),
    )
    evaluation = JointAugment(tuple(cfg.eval_size) if cfg.eval_size else None, train=False,
                              depth_interp=cfg.depth_interp)
    return train, evaluation


def build_train_val_loaders(cfg: DataConfig, *, seed: int, device: torch.device):
    """(train set, val set, shuffled train loader, val loader) for the configured splits."""
    train_set = build_dataset(cfg, cfg.train_split, limit=cfg.train_limit)
    val_set = build_dataset(cfg, cfg.val_split, limit=cfg.val_limit)
    train_loader = make_loader(train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                               num_workers=cfg.num_workers, seed=seed, device=device)
    val_loader = make_loader(val_set, batch_size=cfg.eval_batch_size, shuffle=False, num_workers=cfg.num_workers,
                             device=device)
    return train_set, val_set, train_loader, val_loader
