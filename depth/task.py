"""Train and evaluate depth models on NYUv2 (`labelreg train-depth`, `labelreg eval`): seg→depth
(thesis Table 5.5) and the two-part joint depth + segmentation model with mixed batches (Table 5.6).

``DEPTH_TASK`` is this package's entry for ``cfg.task == "depth"``: the application layer
(``labelreg.cli``, ``labelreg.demo``) merges it into labelreg's table of tasks; labelreg's
library layers never import this package.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Subset

from depth.io import colorize_depth, save_depth_png
from depth.losses import LossBalancer, masked_l1
from depth.models import DEPTH_MODELS, build_depth_model, seg_to_depth_input
from labelreg.config import Config, ConfigError, config_from_dict
from labelreg.data.build import build_augmentations, build_dataset, dataset_class_names, dataset_num_classes
from labelreg.data.loader import Batch, make_loader, pad_collate, to_device
from labelreg.data.nyu import NYUv2DepthOnly
from labelreg.data.sampling import MixedBatchSampler
from labelreg.engine import LoopSpec, fit, predict_batches
from labelreg.losses import masked_cross_entropy
from labelreg.metrics import DEPTH_KEYS, DepthMetrics, SegMetrics
from labelreg.palette import IGNORE_INDEX
from labelreg.runtime import current, resolve_device, seed_everything, training_device
from labelreg.tasks import TaskEntry
from labelreg.tasks.checks import SEGMENTATION_METRICS
from labelreg.tasks.evaluate import evaluation_loader, refuse_options
from labelreg.viz import save_png

SEG_TERMS = ("seg", "part1_seg")


def build_model(cfg: Config, num_classes: int, *, from_checkpoint: bool = False) -> nn.Module:
    """``DEPTH_MODELS[model.name]`` for ``num_classes`` classes, its backbone from ``model.pretrained_backbone``
    unless ``from_checkpoint`` (the weights are about to be loaded from a checkpoint: nothing is downloaded)."""
    if cfg.model.name not in DEPTH_MODELS:
        raise ConfigError(f"model.name={cfg.model.name!r}; depth models: {', '.join(sorted(DEPTH_MODELS))}")
    options = dict(cfg.model.options)
    if cfg.model.name.startswith("seg2depth"):
        options["inputs"] = cfg.depth.inputs
    pretrained = None if from_checkpoint else cfg.model.pretrained_backbone
    try:
        return build_depth_model(cfg.model.name, num_classes=num_classes, pretrained_backbone=pretrained,
                                 freeze_bn=cfg.model.freeze_bn, **options)
    except TypeError as error:
        raise ConfigError(f"model.options for {cfg.model.name}: {error}") from error


def labeled_samples(batch: Batch) -> torch.Tensor | None:
    """B bool: which images have at least one labeled pixel (depth-only frames are all 255); None without labels."""
    label = batch.get("label")
    if label is None:
        return None
    return (label != IGNORE_INDEX).flatten(1).any(dim=1)


def make_forward(cfg: Config, num_classes: int):
    def forward(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        if cfg.model.name.startswith("seg2depth"):
            return model(seg_to_depth_input(batch["image"], batch.get("label"), num_classes, cfg.depth.inputs))
        return model(batch["image"], labeled_samples(batch))

    return forward


def loss_terms(cfg: Config) -> list[str]:
    """The terms this configuration trains: final ``depth``/``seg`` and, for both_parts, part one's."""
    if cfg.model.name.startswith("seg2depth"):
        return ["depth"]
    if cfg.depth.supervision not in ("both_parts", "final"):
        raise ConfigError(f"depth.supervision={cfg.depth.supervision!r}; choose 'both_parts' or 'final'")
    parts = ["", "part1_"] if cfg.depth.supervision == "both_parts" else [""]
    kinds = [kind for kind, on in (("depth", cfg.depth.depth_loss), ("seg", cfg.depth.seg_loss)) if on]
    if not kinds:
        raise ConfigError("depth.seg_loss and depth.depth_loss are both false: nothing to train")
    return [f"{part}{kind}" for part in parts for kind in kinds]


def make_losses(cfg: Config):
    terms = loss_terms(cfg)

    def losses(outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        result = {}
        for name in terms:
            prediction = outputs[name]
            if name.endswith("depth"):
                result[name] = masked_l1(prediction, batch["depth"])
            else:  # depth-only images carry all-255 labels: zero, and the forward detaches their probabilities
                result[name] = masked_cross_entropy(prediction, batch["label"])
        return result

    return losses


def make_dynamic_weights(cfg: Config):
    terms = loss_terms(cfg)
    balancer = LossBalancer(terms, window=cfg.depth.balance_window)

    def weights(history: list[dict]) -> dict[str, float]:
        base = balancer.weights(history) if cfg.depth.balance else {name: 1.0 for name in terms}
        return {name: value * (cfg.depth.seg_weight if name in SEG_TERMS else 1.0) for name, value in base.items()}

    return weights


EVAL_PROTOCOLS = ("train_size", "full")
UPSAMPLED_OUTPUTS = ("depth", "seg", "part1_depth", "part1_seg")


def eval_input_size(cfg: Config) -> tuple[int, int] | None:
    """The size the model reads at evaluation: ``data.crop_size`` under ``depth.eval_protocol: train_size``
    (thesis §5.5.1 trains on images resized to 256×336), None (the evaluation image as is) under ``full``."""
    if cfg.depth.eval_protocol not in EVAL_PROTOCOLS:
        raise ConfigError(f"depth.eval_protocol={cfg.depth.eval_protocol!r}; choose one of {EVAL_PROTOCOLS}")
    if cfg.depth.eval_protocol == "full" or not cfg.data.crop_size:
        return None
    return tuple(int(v) for v in cfg.data.crop_size)


def at_input_size(forward, size: tuple[int, int] | None):
    """``forward`` run on the batch resized to ``size`` (image bilinear with antialiasing, label nearest —
    a seg→depth model reads its one-hot), with the depth and segmentation outputs upsampled bilinearly back
    to the batch's size, where the metrics compare them to the ground truth. ``features`` stay at ``size``."""
    if size is None:
        return forward

    def run(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        target = tuple(batch["image"].shape[-2:])
        if target == size:
            return forward(model, batch)
        small = dict(batch)
        small["image"] = F.interpolate(batch["image"], size=size, mode="bilinear", align_corners=False,
                                       antialias=True)
        if batch.get("label") is not None:
            small["label"] = F.interpolate(batch["label"][:, None].float(), size=size,
                                           mode="nearest-exact")[:, 0].round().long()
        outputs = dict(forward(model, small))
        for key in UPSAMPLED_OUTPUTS:
            if key in outputs:
                outputs[key] = F.interpolate(outputs[key], size=target, mode="bilinear", align_corners=False)
        return outputs

    return run


def evaluate_depth(model: nn.Module, loader, device: torch.device, *, cfg: Config, num_classes: int, preprocess,
                   forward, class_names: list[str], save_predictions: str | Path | None = None) -> dict[str, float]:
    """Depth metrics (both aggregations) and, for models with a segmentation output, 40-class mIoU.

    ``depth.eval_protocol`` (see ``eval_input_size``): by default the model reads every image resized to
    the training size and its predictions are upsampled to the ground truth's size (depth bilinearly,
    segmentation logits bilinearly before the argmax), so the metrics count every ground-truth pixel.
    The result holds the sizes of the last batch: ``protocol/input_height``, ``…/input_width`` (what the
    model read) and ``protocol/target_height``, ``…/target_width`` (the ground truth the metrics used);
    a printed line says the protocol.
    """
    depth_metrics = DepthMetrics(min_depth=cfg.depth.min_depth, max_depth=cfg.depth.max_depth,
                                 eigen_crop=cfg.depth.eigen_crop, device=device)
    seg_metrics = SegMetrics(num_classes, device=device)
    has_seg = False
    input_size = eval_input_size(cfg)
    seen: dict[str, tuple[int, int]] = {}

    def recording(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        seen["input"] = tuple(batch["image"].shape[-2:])
        return forward(model, batch)

    sized_forward = at_input_size(recording, input_size)
    for batch, outputs in predict_batches(model, loader, device, preprocess, sized_forward, cfg.train.amp):
        seen["target"] = tuple(batch["depth"].shape[-2:])
        prediction = outputs["depth"][:, 0].float()
        depth_metrics.update(prediction, batch["depth"])
        if "seg" in outputs:
            has_seg = True
            seg_metrics.update(outputs["seg"], batch["label"])
        if save_predictions is not None:
            # crop padding away only when predictions are at the (padded) input size, not resized by eval_size
            padded = tuple(prediction.shape[-2:]) == tuple(batch["size"].max(0).values.tolist())
            for index, name in enumerate(batch["name"]):
                height, width = (int(v) for v in batch["size"][index]) if padded else prediction.shape[-2:]
                depth = prediction[index, :height, :width]
                save_depth_png(depth, Path(save_predictions) / f"{name}.png")
                save_png(colorize_depth(depth, cfg.depth.max_depth), Path(save_predictions) / f"{name}_preview.png")
    result = depth_metrics.compute()
    flat = {f"{aggregation}_{key}": value for aggregation in ("pixel", "image")
            for key, value in result[aggregation].items()}
    if seen:
        (in_h, in_w), (gt_h, gt_w) = seen["input"], seen["target"]
        flat.update({"protocol/input_height": float(in_h), "protocol/input_width": float(in_w),
                     "protocol/target_height": float(gt_h), "protocol/target_width": float(gt_w)})
        how = ("inputs resized to the training size" if cfg.depth.eval_protocol == "train_size"
               else "inputs at the evaluation size")
        print(f"[{cfg.name}] depth eval protocol {cfg.depth.eval_protocol}: {how}, the model read {in_h}×{in_w}, "
              f"metrics on the {gt_h}×{gt_w} ground truth (predictions upsampled bilinearly)")
    if has_seg:
        seg = seg_metrics.compute()
        flat.update({key: value for key, value in seg.items() if isinstance(value, float)})
        flat.update({f"iou/{name}": iou for name, iou in zip(class_names, seg["per_class_iou"])})
    return flat


def calibrate_feature_normalisation(cfg: Config, model: nn.Module, dataset, spec: LoopSpec, device: torch.device) -> None:
    """Models with ``normalize`` (thesis §5.4.1): estimate the zoom-out feature statistics from
    ``model.calibration_batches`` batches of training images, at the training size, drawn in an
    order fixed by ``train.seed`` without touching any random state that training uses."""
    if not getattr(model, "normalize", False):
        return
    size = tuple(cfg.data.crop_size) if cfg.data.crop_size else None
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(cfg.train.seed)).tolist()
    step = cfg.data.batch_size
    images = []
    for start in range(0, min(len(order), cfg.model.calibration_batches * step), step):
        batch = spec.eval_augment(to_device(pad_collate([dataset[i] for i in order[start:start + step]]), device))
        image = batch["image"]
        if size is not None and tuple(image.shape[-2:]) != size:
            image = F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)
        images.append(image)
    model.calibrate(images)
    print(f"[{cfg.name}] zoom-out feature normalisation estimated from {len(images)} batches")


class PhasedBatchSampler:
    """Mixed labeled + depth-only batches for the first ``mixed_epochs`` epochs, then labeled only."""

    def __init__(self, mixed: MixedBatchSampler, labeled_only: MixedBatchSampler, mixed_epochs: int) -> None:
        self.mixed, self.labeled_only, self.mixed_epochs = mixed, labeled_only, mixed_epochs
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _current(self) -> MixedBatchSampler:
        return self.mixed if self.epoch < self.mixed_epochs else self.labeled_only

    def __iter__(self):
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())


def build_train_loader(cfg: Config, labeled, device: torch.device) -> tuple[DataLoader, PhasedBatchSampler | None]:
    """Labeled-only shuffled batches, or the phased mixed sampler when depth-only frames are configured."""
    if not cfg.depth.depth_only or cfg.depth.mixed_epochs <= 0:
        return make_loader(labeled, batch_size=cfg.data.batch_size, shuffle=True, drop_last=True,
                           num_workers=cfg.data.num_workers, seed=cfg.train.seed, device=device), None
    frames = NYUv2DepthOnly(cfg.depth.depth_only, depth_scale=cfg.depth.depth_scale)
    if cfg.depth.depth_only_limit is not None:
        frames = Subset(frames, range(min(cfg.depth.depth_only_limit, len(frames))))
    generator = torch.Generator().manual_seed(cfg.train.seed)
    info = current()  # under torchrun every rank builds the same batches and keeps its own share
    common = {"batch_size": cfg.data.batch_size, "generator": generator, "drop_last": True,  # as make_loader
              "num_replicas": info.world_size, "rank": info.rank}
    sampler = PhasedBatchSampler(
        MixedBatchSampler(len(labeled), len(frames), labeled_per_batch=cfg.depth.labeled_per_batch, **common),
        MixedBatchSampler(len(labeled), 0, labeled_per_batch=cfg.depth.labeled_per_batch, **common),
        cfg.depth.mixed_epochs)
    loader = DataLoader(ConcatDataset([labeled, frames]), batch_sampler=sampler, num_workers=cfg.data.num_workers,
                        collate_fn=pad_collate, pin_memory=device.type == "cuda", generator=generator)
    return loader, sampler


def loop_spec(cfg: Config, model: nn.Module, num_classes: int, class_names: list[str],
               sampler: PhasedBatchSampler | None = None, save_predictions: str | Path | None = None) -> LoopSpec:
    train_augment, eval_augment = build_augmentations(cfg.data)
    forward = make_forward(cfg, num_classes)

    def evaluate(model: nn.Module, loader, device: torch.device) -> dict[str, float]:
        return evaluate_depth(model, loader, device, cfg=cfg, num_classes=num_classes, preprocess=eval_augment,
                              forward=forward, class_names=class_names, save_predictions=save_predictions)

    def before_epoch(epoch: int) -> None:
        if sampler is not None:
            sampler.set_epoch(epoch)

    generators = [sampler.mixed.generator] if sampler is not None else []  # every rank builds the same batches
    return LoopSpec(model=model, augment=train_augment, eval_augment=eval_augment, forward=forward,
                losses=make_losses(cfg), evaluate=evaluate, generators=generators, before_epoch=before_epoch,
                rank_generators=[train_augment.generator], dynamic_loss_weights=make_dynamic_weights(cfg))


def _check(cfg: Config) -> None:
    if cfg.task != "depth":
        raise ConfigError(f"task={cfg.task!r}; depth models train with task: depth")
    if cfg.data.dataset != "nyu":
        raise ConfigError(f"data.dataset={cfg.data.dataset!r}: depth needs NYUv2 (data.dataset: nyu)")


def train(cfg: Config, resume: str | Path | None = None) -> dict:
    _check(cfg)
    seed_everything(cfg.train.seed)
    device = training_device(cfg)
    labeled = build_dataset(cfg.data, cfg.data.train_split, limit=cfg.data.train_limit)
    val_set = build_dataset(cfg.data, cfg.data.val_split, limit=cfg.data.val_limit)
    num_classes = dataset_num_classes(labeled)
    model = build_model(cfg, num_classes).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_loader, sampler = build_train_loader(cfg, labeled, device)
    val_loader = make_loader(val_set, batch_size=cfg.data.eval_batch_size, shuffle=False,
                             num_workers=cfg.data.num_workers, device=device)
    spec = loop_spec(cfg, model, num_classes, dataset_class_names(labeled), sampler)
    if resume is None:  # a resumed model keeps the statistics of its checkpoint
        calibrate_feature_normalisation(cfg, model, labeled, spec, device)
    frames = "" if sampler is None else (f" + {len(train_loader.dataset) - len(labeled)} depth-only frames "
                                         f"for {cfg.depth.mixed_epochs} epochs")
    print(f"[{cfg.name}] {cfg.model.name} ({', '.join(loss_terms(cfg))}) on {len(labeled)} labeled{frames}, "
          f"{len(val_set)} val, {sum(p.numel() for p in model.parameters()):,} parameters, device {device}")
    return fit(cfg, spec, train_loader, val_loader, device=device, resume=resume).as_dict()


def checkpoint_num_classes(cfg: Config, state: dict[str, torch.Tensor]) -> int | None:
    """The number of classes a depth checkpoint's model was built for, read off its weights: the first
    convolution's input channels (seg→depth reading a segmentation), the output channels of part one's
    segmentation head (two-part model); None for seg→depth from RGB alone, whose weights do not depend on it."""
    if cfg.model.name.startswith("seg2depth"):
        if cfg.depth.inputs == "rgb":
            return None
        first_conv = next(value for value in state.values() if value.ndim == 4)
        return first_conv.shape[1] - (3 if cfg.depth.inputs == "seg+rgb" else 0)
    head = [value for key, value in state.items() if key.startswith("part1.heads.seg.rest.") and key.endswith("bias")]
    return head[-1].shape[0] if head else None


def model_from_checkpoint(checkpoint: dict, *, with_regularizer: bool = False, cfg: Config | None = None,
                          num_classes: int | None = None) -> nn.Module:
    """The depth model of a ``train-depth`` checkpoint with its weights loaded (nothing downloaded).

    ``cfg``: the configuration to build with (default: the checkpoint's own); ``num_classes``: default
    read off the weights (``checkpoint_num_classes``); a seg→depth model from RGB alone needs it given.
    """
    if with_regularizer:
        raise ConfigError("a depth checkpoint has no regularizer branch")
    cfg = cfg if cfg is not None else config_from_dict(checkpoint["config"])
    _check(cfg)
    if num_classes is None:
        num_classes = checkpoint_num_classes(cfg, checkpoint["model"])
        if num_classes is None:
            raise ConfigError(f"{cfg.model.name} with depth.inputs={cfg.depth.inputs!r}: the weights do not say the "
                              "number of classes; give num_classes")
    model = build_model(cfg, num_classes, from_checkpoint=True)
    model.load_state_dict(checkpoint["model"])
    return model


def evaluate_checkpoint(cfg: Config, checkpoint: dict, split: str, *, save_predictions: str | Path | None = None,
                        aux: bool = False, figure: str | Path | None = None,
                        resolved: dict | None = None) -> dict[str, float]:
    """``labelreg eval`` for task: depth (``aux`` and ``figure`` are for segmentation checkpoints;
    ``resolved``: unused, depth training derives nothing evaluation needs)."""
    _check(cfg)
    refuse_options(cfg.task, aux=aux, figure=figure)
    device = resolve_device(cfg.train.device)
    dataset, loader = evaluation_loader(cfg, split, device)
    num_classes = dataset_num_classes(dataset)
    model = model_from_checkpoint(checkpoint, cfg=cfg, num_classes=num_classes)
    spec = loop_spec(cfg, model.to(device), num_classes, dataset_class_names(dataset),
                      save_predictions=save_predictions)
    return spec.evaluate(model, loader, device)


def metrics_protocol(cfg: Config) -> str:
    """How ``labelreg eval`` computed the depth metrics: printed and stored beside them."""
    return (f"depth: valid ground truth in [{cfg.depth.min_depth}, {cfg.depth.max_depth}] m, Eigen crop "
            f"{'on' if cfg.depth.eigen_crop else 'off'}; pixel_* = accumulated over all pixels, image_* = "
            "mean of per-image values; relative errors divided by the ground truth; rmse in metres")


def depth_metrics(cfg: Config) -> tuple[str, ...]:
    """``evaluate_depth``'s scores: both aggregations of every depth metric, and for models with a segmentation
    output the segmentation scores."""
    return tuple(f"{aggregation}_{key}" for aggregation in ("pixel", "image") for key in DEPTH_KEYS) + SEGMENTATION_METRICS


DEPTH_TASK = TaskEntry(train=train, evaluate_checkpoint=evaluate_checkpoint, model_from_checkpoint=model_from_checkpoint,
                       best_metrics=depth_metrics)
"""The entry of ``cfg.task == "depth"`` for labelreg's table of tasks (merged in by the application layer)."""

__all__ = ["DEPTH_TASK", "build_model", "checkpoint_num_classes", "eval_input_size", "evaluate_checkpoint",
           "evaluate_depth", "metrics_protocol", "model_from_checkpoint", "train"]
