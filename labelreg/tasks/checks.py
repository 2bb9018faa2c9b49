"""Config values only the tasks can judge, checked when a training config is loaded, before any data is read.

- ``train.best_metric`` must be a metric the task reports (each task's ``TaskEntry.best_metrics``): a
  typo used to be found only after a whole epoch, in a list of every per-class score.
- ``data.train_split`` / ``data.val_split`` must be splits of ``data.dataset`` (the readers' split names).
- Size options of the model builder (``model.options``, nested ``backbone_options`` too) must be positive:
  ``hidden: -5`` used to fail deep in the builder with torch's "negative dimension".
- ``check_start_checkpoints``: the files a segmenter starts from (``model.init_from``,
  ``regularizer.autoencoder``) are labelreg checkpoints of the right task, before the run directory is claimed.
"""
from __future__ import annotations

from typing import Any, Callable

from labelreg.config import Config, ConfigError
from labelreg.storage import load_run_checkpoint

# the split names the readers accept (labelreg.data.voc.VOCSegmentation, labelreg.data.nyu.NYUv2Labeled)
DATASET_SPLITS = {"voc": ("train", "val", "trainval", "trainaug"), "nyu": ("train", "test", "all")}
# builder keywords that are sizes (widths, strides, block lengths): positive integers, alone or in lists
SIZE_OPTIONS = ("hidden", "head_width", "width", "channels", "stem_channels", "growth_rate", "block_config",
                "grid_stride", "output_stride", "bins")
SEGMENTATION_METRICS = ("miou", "pixel_acc", "mean_class_acc")  # labelreg.metrics.SegMetrics (per class: iou/<name>)


def segmentation_metrics(cfg: Config) -> tuple[str, ...]:
    """What a segmenter's evaluation reports; the decoder branch adds its own ``aux_`` scores (thesis Fig. 5.6)."""
    aux = tuple(f"aux_{name}" for name in SEGMENTATION_METRICS) if cfg.regularizer.kind == "decoder" else ()
    return SEGMENTATION_METRICS + aux


def autoencoder_metrics(cfg: Config) -> tuple[str, ...]:
    """Phase one is scored like a segmentation of its reconstructed labels."""
    return SEGMENTATION_METRICS


def classification_metrics(cfg: Config) -> tuple[str, ...]:
    """Top-1, top-min(5, K) accuracy and the loss; ``miou`` (the default) is replaced by ``top1`` when training."""
    return ("top1", "top2", "top3", "top4", "top5", "loss") + (("miou",) if cfg.train.best_metric == "miou" else ())


def _check_sizes(options: dict[str, Any], prefix: str) -> None:
    for name, value in options.items():
        if isinstance(value, dict):
            _check_sizes(value, f"{prefix}.{name}")
        elif name in SIZE_OPTIONS and value is not None:
            values = value if isinstance(value, (list, tuple)) else [value]
            if not all(isinstance(item, int) and not isinstance(item, bool) and item > 0 for item in values):
                raise ConfigError(f"{prefix}.{name}={value!r}: sizes must be positive integers")


def check_training_config(cfg: Config, best_metrics: Callable[[Config], tuple[str, ...]] | None = None) -> None:
    """A ``ConfigError`` naming the key for a value the task would fail on later (see the module docstring).

    ``best_metrics``: the task's metric names (``TaskEntry.best_metrics``); None skips that check."""
    # train-cls reads <root>/<split>/ folders, whatever data.dataset says
    splits = DATASET_SPLITS.get(cfg.data.dataset) if cfg.task != "classification" else None
    for key in ("train_split", "val_split"):
        value = getattr(cfg.data, key)
        if splits is not None and value not in splits:
            raise ConfigError(f"data.{key}={value!r} is not a split of {cfg.data.dataset}; choose {', '.join(splits)}")
    _check_sizes(cfg.model.options, "model.options")
    if best_metrics is None:
        return
    names, metric = best_metrics(cfg), cfg.train.best_metric
    per_class = "miou" in names and metric.startswith("iou/")  # a class's IoU, named by the data set
    if metric not in names and not per_class:
        raise ConfigError(f"train.best_metric={metric!r} is not a metric task={cfg.task} reports; choose "
                          + ", ".join(names) + (" or iou/<class name>" if "miou" in names else ""))


def check_start_checkpoints(cfg: Config) -> None:
    """A ``ValueError`` naming the file and its kind when ``model.init_from`` is not a segmentation checkpoint
    or ``regularizer.autoencoder`` not a phase-one (autoencoder) one; the task reads them again later."""
    if cfg.task != "segmentation":
        return
    if cfg.model.init_from:
        load_run_checkpoint(cfg.model.init_from, purpose="model.init_from", tasks=("segmentation",))
    if cfg.regularizer.kind != "none" and cfg.regularizer.autoencoder and not cfg.regularizer.random_init:
        load_run_checkpoint(cfg.regularizer.autoencoder, purpose="regularizer.autoencoder", tasks=("autoencoder",))
