"""The steps of ``labelreg weak`` (four, and the optional ``pretrain``), each reading the previous step's files
from ``cfg.run_dir``.

::

    pretrain   → pretrain/backbone.pt  (only with weak.pretrain_epochs > 0: the backbone trained from tags)
    features   → features/  (store.py: cached zoom-out + global features, tags, grid labels, statistics)
    localize   → localization/class_XX.pt, localization/summary.json
    sample     → points_<sampler>.npz  (image, y, x, class per point, at the feature grid)
    train      → head_points_<sampler>.pt, head_dense.pt

Every step appends to ``weak.log``, rewrites ``config.yaml`` and merges its numbers
into ``metrics.json`` under its own key, so steps can be rerun one at a time (e.g.
``localize --classes 7`` then ``sample`` and ``train`` to add a class).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from labelreg.config import Config, ConfigError, save_config
from labelreg.runtime import resolve_device, seed_everything
from labelreg.storage import write_json
from labelreg.weak.features import unit_norm
from labelreg.weak.localization import (LocalizationNet, image_log_probs, load_localizers, sampling_scores,
                                        save_localizer, train_localizer, write_summary)
from labelreg.weak.pretrain import HEADS as PRETRAIN_HEADS
from labelreg.weak.pretrain import POOLS as PRETRAIN_POOLS
from labelreg.weak.pretrain import percent, pretrain_backbone
from labelreg.weak.sampling import STRATEGIES, sample_points
from labelreg.weak.store import FeatureStore, extract_features, split_dataset
from labelreg.weak.tags import tag_matrix
from labelreg.weak.train import (PointHead, evaluate, fit_dense, fit_points, gather_points, point_accuracy,
                                 save_head)

Log = Callable[[str], None]


def make_log(cfg: Config, *, echo: bool = True) -> Log:
    """Print (optionally) and append to ``<run_dir>/weak.log`` with a timestamp."""
    path = cfg.run_dir / "weak.log"

    def log(message: str) -> None:
        if echo:
            print(message)
        path.parent.mkdir(parents=True, exist_ok=True)  # on first use: a config that fails its check writes nothing
        with path.open("a") as handle:
            handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
    return log


def record_metrics(cfg: Config, step: str, values: dict[str, Any]) -> dict[str, Any]:
    """Merge ``values`` into ``<run_dir>/metrics.json`` under ``step`` (other steps' entries are kept)."""
    path = cfg.run_dir / "metrics.json"
    stored = json.loads(path.read_text()) if path.is_file() else {}
    stored[step] = {**stored.get(step, {}), **values}
    write_json(path, stored)
    return stored


def check_config(cfg: Config) -> None:
    """Fail early, naming the key, on settings no step could use."""
    weak = cfg.weak
    if cfg.task != "weak":
        raise ConfigError(f"task={cfg.task!r}; `labelreg weak` needs a config with task: weak")
    if weak.sampler not in STRATEGIES:
        raise ConfigError(f"weak.sampler={weak.sampler!r}; choose one of {', '.join(STRATEGIES)}")
    for key in ("k", "loc_hidden", "loc_epochs", "loc_batch_size", "seg_epochs", "seg_batch_size",
                "feature_batch_size", "dense_batch_size", "pretrain_batch_size"):
        if getattr(weak, key) < 1:
            raise ConfigError(f"weak.{key} must be at least 1, got {getattr(weak, key)}")
    if weak.pretrain_epochs < 0:
        raise ConfigError(f"weak.pretrain_epochs must be 0 (off) or more, got {weak.pretrain_epochs}")
    if not weak.pretrain_lr > 0:
        raise ConfigError(f"weak.pretrain_lr must be positive, got {weak.pretrain_lr}")
    if not weak.pretrain_weight_decay >= 0:
        raise ConfigError(f"weak.pretrain_weight_decay must be 0 or more, got {weak.pretrain_weight_decay}")
    if weak.pretrain_head not in PRETRAIN_HEADS:
        raise ConfigError(f"weak.pretrain_head={weak.pretrain_head!r}; choose one of {', '.join(PRETRAIN_HEADS)}")
    if weak.pretrain_pool not in PRETRAIN_POOLS:
        raise ConfigError(f"weak.pretrain_pool={weak.pretrain_pool!r}; choose one of {', '.join(PRETRAIN_POOLS)}")
    area = weak.pretrain_crop_area
    if len(area) != 2 or not 0 < area[0] <= area[1] <= 1:
        raise ConfigError(f"weak.pretrain_crop_area must be [lo, hi] with 0 < lo <= hi <= 1 (fractions of the "
                          f"image area), got {area}")


def _start(cfg: Config, name: str, log: Log | None) -> tuple[Log, torch.device, float]:
    check_config(cfg)
    log = log or make_log(cfg)
    save_config(cfg, cfg.run_dir / "config.yaml")
    seed_everything(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    log(f"== weak {name}: {cfg.name} on {cfg.data.dataset} ({cfg.data.root}), device {device}")
    return log, device, time.perf_counter()


def step_pretrain(cfg: Config, *, log: Log | None = None, progress: bool = True) -> dict[str, Any]:
    """Train the backbone from the training split's image tags (pretrain.py); later steps then use its weights."""
    if cfg.weak.pretrain_epochs < 1:
        check_config(cfg)
        raise ConfigError(f"weak.pretrain_epochs={cfg.weak.pretrain_epochs}: pretraining is off; set "
                          "weak.pretrain_epochs to a positive number of epochs to run `labelreg weak pretrain`")
    log, device, started = _start(cfg, "pretrain", log)
    summary = pretrain_backbone(cfg, device=device, log=log, progress=progress)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    record_metrics(cfg, "pretrain", summary)
    return summary


def step_features(cfg: Config, *, log: Log | None = None, progress: bool = True) -> dict[str, Any]:
    log, device, started = _start(cfg, "features", log)
    summary = extract_features(cfg, device=device, log=log, progress=progress)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    record_metrics(cfg, "features", summary)
    return summary


def _validation_rates(nets: dict[int, LocalizationNet], store: FeatureStore, kind: str, device: torch.device,
                      batch: int = 8) -> dict[int, dict]:
    """Image-level classification on the validation split: recall on tagged images, specificity on the rest.

    All ``nets`` share one pass over the split: with ``weak.cache: false`` every pass reruns the backbone.
    """
    tags = tag_matrix(store.tags, store.num_classes)
    said = {c: [] for c in nets}
    for net in nets.values():
        net.to(device)
    with torch.no_grad():
        for start in range(0, len(store), batch):
            maps = store.zoomout(list(range(start, min(start + batch, len(store))))).to(device)
            for c, net in nets.items():
                said[c].append((image_log_probs(net(maps), kind)[0] > np.log(0.5)).cpu().numpy())
    rates = {}
    for c, parts in said.items():
        yes, truth = np.concatenate(parts), tags[:, c]
        rates[c] = {"val_recall": float(yes[truth].mean()) if truth.any() else None,
                    "val_specificity": float((~yes[~truth]).mean()) if (~truth).any() else None}
    return rates


def step_localize(cfg: Config, *, classes: Sequence[int] | None = None, log: Log | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """Train the nets of ``classes`` (else ``weak.classes``, else every class tagged in training); others untouched."""
    log, device, started = _start(cfg, "localize", log)
    store = FeatureStore(cfg, "train", device=device)
    tags = tag_matrix(store.tags, store.num_classes)
    tagged = [c for c in range(1, store.num_classes) if tags[:, c].any()]
    chosen = list(classes if classes is not None else cfg.weak.classes if cfg.weak.classes is not None else tagged)
    bad = [c for c in chosen if not 0 < c < store.num_classes]
    if bad:
        raise ConfigError(f"weak.classes: {bad} are not foreground classes (1..{store.num_classes - 1})")
    missing = [c for c in chosen if c not in tagged]
    if missing:
        raise ValueError(f"classes {missing} ({', '.join(store.class_names[c] for c in missing)}) are not tagged in "
                         f"any training image of {cfg.data.train_split}; they cannot be localized")
    folder = cfg.run_dir / "localization"
    val = FeatureStore(cfg, "val", device=device)  # before training: missing or stale features fail early
    trained: dict[int, tuple[LocalizationNet, dict]] = {}
    for c in chosen:
        net, record = train_localizer(
            store.zoomout, tags, c, in_channels=store.dim, hidden=cfg.weak.loc_hidden, loss=cfg.weak.loc_loss,
            epochs=cfg.weak.loc_epochs, lr=cfg.weak.loc_lr, milestones=cfg.weak.loc_milestones,
            gamma=cfg.weak.loc_gamma, batch_size=cfg.weak.loc_batch_size, seed=cfg.train.seed, device=device,
            progress=progress)
        record["name"] = store.class_names[c]
        # saved now so a failure in a later class keeps this one; saved again below with its validation rates
        save_localizer(folder, net, {**record, "val_recall": None, "val_specificity": None})
        trained[c] = (net, record)
    rates = _validation_rates({c: net for c, (net, _) in trained.items()}, val, cfg.weak.loc_loss, device,
                              cfg.weak.feature_batch_size)
    for c, (net, record) in trained.items():
        record.update(rates[c])
        save_localizer(folder, net, record)
        last = record["history"][-1]
        log(f"localize: class {c} ({record['name']}): {record['positives']} positives, {record['negatives']} "
            f"negatives, final loss {last['loss']:.4f}, training accuracy {last['accuracy']:.3f}, validation "
            f"recall {percent(record['val_recall'])}, specificity {percent(record['val_specificity'])}")
    records = {c: record for c, (_, record) in load_localizers(folder, in_channels=store.dim).items()}
    write_summary(folder, records)
    summary = {"trained": chosen, "available": sorted(records), "loss": cfg.weak.loc_loss,
               "seconds": round(time.perf_counter() - started, 2),
               "classes": {str(c): {k: r.get(k) for k in ("name", "positives", "negatives", "val_recall",
                                                          "val_specificity")} for c, r in records.items()}}
    record_metrics(cfg, "localize", summary)
    return summary


def points_path(cfg: Config, sampler: str | None = None) -> Path:
    return cfg.run_dir / f"points_{sampler or cfg.weak.sampler}.npz"


def step_sample(cfg: Config, *, log: Log | None = None, progress: bool = True) -> dict[str, Any]:
    """Sample points on every training image with ``weak.sampler`` from every stored localization net."""
    log, device, started = _start(cfg, "sample", log)
    store = FeatureStore(cfg, "train", device=device)
    nets = load_localizers(cfg.run_dir / "localization", in_channels=store.dim)
    for net, _ in nets.values():
        net.to(device)
    kinds = {record["loss"] for _, record in nets.values()}
    if len(kinds) != 1:
        raise ValueError(f"{cfg.run_dir / 'localization'} mixes nets trained with {sorted(kinds)}; retrain them alike")
    kind = kinds.pop()
    unlocalized = sorted({c for t in store.tags for c in t} - set(nets))
    if unlocalized:
        log(f"sample: tagged classes without a net are treated as background: {unlocalized}")
    points = []
    with torch.no_grad():
        for start in tqdm(range(0, len(store), cfg.weak.feature_batch_size), desc=f"sample {cfg.weak.sampler}",
                          disable=not progress, leave=False):
            indices = list(range(start, min(start + cfg.weak.feature_batch_size, len(store))))
            maps = store.zoomout(indices).to(device)
            z = unit_norm(maps)  # only "diverse" reads the features, but every sampler needs the grid
            for row, i in enumerate(indices):
                present = [c for c in store.tags[i] if c in nets]
                scores = {c: sampling_scores(nets[c][0](maps[row:row + 1]), kind)[0] for c in present}
                points.append(sample_points(cfg.weak.sampler, scores, z[row], k=cfg.weak.k,
                                            background_k=cfg.weak.background_k, sigma=cfg.weak.spatial_sigma,
                                            threshold=cfg.weak.dense_threshold))
    save_points(points_path(cfg), points, grid=store.grid)
    counts = np.array([len(p) for p in points])
    summary = {"sampler": cfg.weak.sampler, "k": cfg.weak.k, "points": int(counts.sum()),
               "points_per_image": float(counts.mean()), "classes": sorted(nets),
               **point_accuracy(points, store.labels), "seconds": round(time.perf_counter() - started, 2)}
    log(f"sample: {summary['points']} {cfg.weak.sampler} points ({summary['points_per_image']:.1f} per image); "
        f"their labels agree with the ground truth at {100 * summary['point_accuracy']:.1f}% "
        f"(foreground {100 * summary['foreground_point_accuracy']:.1f}%, background "
        f"{100 * summary['background_point_accuracy']:.1f}%)")
    record_metrics(cfg, "sample", {cfg.weak.sampler: summary})
    return summary


def save_points(path: Path, points: Sequence[np.ndarray], *, grid: Sequence[int]) -> Path:
    """One int32 N×4 array (image, y, x, class) plus the grid size."""
    rows = [np.concatenate([np.full((len(p), 1), i), p], axis=1) for i, p in enumerate(points)]
    np.savez(path, points=np.concatenate(rows).astype(np.int32) if rows else np.zeros((0, 4), np.int32),
             grid=np.asarray(grid), images=len(points))
    return path


def load_points(path: Path) -> tuple[list[np.ndarray], tuple[int, int]]:
    """Inverse of :func:`save_points`: per-image P×3 (y, x, class) arrays and the grid."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `labelreg weak sample` first")
    stored = np.load(path)
    rows, images = stored["points"].astype(np.int64), int(stored["images"])
    split = np.searchsorted(rows[:, 0], np.arange(1, images))
    return [part[:, 1:] for part in np.split(rows, split)], tuple(int(v) for v in stored["grid"])


def step_train(cfg: Config, *, dense: bool | None = None, log: Log | None = None,
               progress: bool = True) -> dict[str, Any]:
    """Train the 1×1 head on the sampled points (and, if asked, on dense labels); evaluate both on validation."""
    log, device, started = _start(cfg, "train", log)
    weak = cfg.weak
    train, val = FeatureStore(cfg, "train", device=device), FeatureStore(cfg, "val", device=device)
    points, grid = load_points(points_path(cfg))
    if len(points) != len(train) or tuple(grid) != tuple(train.grid):
        raise ValueError(f"{points_path(cfg)} does not match the features ({len(points)} images, grid {grid} vs "
                         f"{len(train)}, {train.grid}); run `labelreg weak sample` again")
    val_dataset = split_dataset(cfg, "val")
    label = lambda i: val_dataset[i]["label"]  # noqa: E731 - original resolution, for the metrics
    features, classes = gather_points(train, points, batch_images=weak.feature_batch_size, progress=progress)
    torch.manual_seed(cfg.train.seed)
    head = PointHead(features.shape[1], train.num_classes, hidden=weak.seg_hidden)
    began = time.perf_counter()
    history = fit_points(head, features, classes, epochs=weak.seg_epochs, batch_size=weak.seg_batch_size,
                         lr=weak.seg_lr, optimizer=weak.seg_optimizer, seed=cfg.train.seed, device=device,
                         progress=progress)
    fit_seconds = time.perf_counter() - began  # the thesis' "less than 3 minutes" is this part
    result = evaluate(head, val, label, batch_images=weak.feature_batch_size, device=device, progress=progress)
    save_head(cfg.run_dir / f"head_points_{weak.sampler}.pt", head, sampler=weak.sampler)
    summary: dict[str, Any] = {f"points_{weak.sampler}": {
        "miou": result["miou"], "pixel_acc": result["pixel_acc"], "mean_class_acc": result["mean_class_acc"],
        "per_class_iou": result["per_class_iou"], "points": int(len(classes)),
        "points_per_image": len(classes) / len(points), "history": history, "train_seconds": round(fit_seconds, 2)}}
    log(f"train: point-supervised ({weak.sampler}, {len(classes)} points) val mIoU {100 * result['miou']:.1f}, "
        f"pixel accuracy {100 * result['pixel_acc']:.1f}")
    if weak.dense_baseline if dense is None else dense:
        began = time.perf_counter()
        torch.manual_seed(cfg.train.seed)
        full = PointHead(features.shape[1], train.num_classes, hidden=weak.seg_hidden)
        dense_history = fit_dense(full, train, epochs=weak.dense_epochs or weak.seg_epochs,
                                  batch_size=weak.dense_batch_size, lr=weak.dense_lr or weak.seg_lr,
                                  optimizer=weak.seg_optimizer, seed=cfg.train.seed, device=device, progress=progress)
        dense_seconds = time.perf_counter() - began
        dense_result = evaluate(full, val, label, batch_images=weak.feature_batch_size, device=device,
                                progress=progress)
        save_head(cfg.run_dir / "head_dense.pt", full, sampler=None)
        summary["dense"] = {"miou": dense_result["miou"], "pixel_acc": dense_result["pixel_acc"],
                            "mean_class_acc": dense_result["mean_class_acc"],
                            "per_class_iou": dense_result["per_class_iou"], "history": dense_history,
                            "train_seconds": round(dense_seconds, 2)}
        log(f"train: fully supervised (dense labels, same head) val mIoU {100 * dense_result['miou']:.1f}, "
            f"pixel accuracy {100 * dense_result['pixel_acc']:.1f}")
    summary["seconds"] = round(time.perf_counter() - started, 2)
    record_metrics(cfg, "train", summary)
    return summary


def run_all(cfg: Config, *, log: Log | None = None, progress: bool = True) -> dict[str, Any]:
    """[pretrain →] features → localize → sample → train; returns every step's summary.

    ``pretrain`` runs first only when ``weak.pretrain_epochs > 0``.
    """
    log = log or make_log(cfg)
    pretrained = {"pretrain": step_pretrain(cfg, log=log, progress=progress)} if cfg.weak.pretrain_epochs > 0 else {}
    return {**pretrained,
            "features": step_features(cfg, log=log, progress=progress),
            "localize": step_localize(cfg, log=log, progress=progress),
            "sample": step_sample(cfg, log=log, progress=progress),
            "train": step_train(cfg, log=log, progress=progress)}
