"""The demo's figures: each stage's trained models, rebuilt from their checkpoints by their task
(``labelreg.tasks.model_from_checkpoint``, depth's entry merged in), run on the first validation images. Label
maps are drawn in the data set's colours with a legend of the classes shown (``labelreg.viz.class_colours``)."""
from __future__ import annotations

from pathlib import Path

import torch

from depth.task import DEPTH_TASK, at_input_size, eval_input_size, make_forward
from labelreg.config import Config
from labelreg.data.build import build_augmentations, build_dataset, dataset_class_names, dataset_num_classes
from labelreg.data.loader import make_loader, to_device
from labelreg.data.transforms import denormalize
from labelreg.runtime import resolve_device
from labelreg.tasks import TASKS, model_from_checkpoint
from labelreg.tasks.autoencoder import autoencoder_forward, loop_spec
from labelreg.viz import (ClassColours, class_colours, depth_figure, overlay, panel_figure, save_figure,
                          segmentation_figure, to_uint8_image)

FIGURE_ROWS = 6
DEMO_TASKS = {**TASKS, "depth": DEPTH_TASK}  # the application layer merges depth's entry


def validation_batch(cfg: Config, count: int = FIGURE_ROWS) -> tuple[dict, object]:
    """The first ``count`` validation samples as a batch, and the dataset they come from."""
    dataset = build_dataset(cfg.data, cfg.data.val_split)
    return next(iter(make_loader(dataset, batch_size=count, shuffle=False, num_workers=0))), dataset


def dataset_colours(cfg: Config, dataset) -> ClassColours:
    """The class names of ``dataset`` in the colours of ``cfg.data.dataset``."""
    return class_colours(dataset_class_names(dataset), cfg.data.dataset)


def autoencoder_figure(cfg: Config, checkpoint: dict, path: Path) -> Path:
    """Rows of [image, ground-truth labels over it, labels (the input), reconstruction] for validation images,
    with a legend of the classes in the label maps (thesis §5.3.1)."""
    device = resolve_device(cfg.train.device)
    batch, dataset = validation_batch(cfg)
    model = model_from_checkpoint(checkpoint, table=DEMO_TASKS, num_classes=dataset_num_classes(dataset))
    model = model.to(device).eval()
    spec = loop_spec(cfg, model, dataset_class_names(dataset))
    prepared = spec.eval_augment(to_device(batch, device))
    with torch.inference_mode():
        reconstructed = autoencoder_forward(model, prepared)["seg"].argmax(1).cpu()
    colours, labels = dataset_colours(cfg, dataset), prepared["label"].cpu()
    rows = []
    for index in range(min(FIGURE_ROWS, len(reconstructed))):
        image = to_uint8_image(batch["image"][index])
        rows.append([image, overlay(image, batch["label"][index].numpy(), colours=colours),
                     colours.colorize(labels[index]), colours.colorize(reconstructed[index])])
    figure, _ = panel_figure(rows, column_titles=["image", "ground truth over it", "labels (input)", "reconstruction"],
                             title="Label autoencoder (phase one): validation label maps, and what the autoencoder "
                                   "reconstructs from them through its bottleneck",
                             legend=colours.legend([batch["label"][:len(rows)], labels[:len(rows)],
                                                    reconstructed[:len(rows)]]))
    return save_figure(figure, path)


def segmenter_figure(runs: list[tuple[str, Config, dict]], path: Path) -> Path:
    """Validation images with each run's prediction (and auxiliary output, if any)."""
    cfg = runs[0][1]
    device = resolve_device(cfg.train.device)
    batch, dataset = validation_batch(cfg)
    num_classes = dataset_num_classes(dataset)
    prepared = build_augmentations(cfg.data)[1](to_device(batch, device))
    columns = []
    for title, run_cfg, checkpoint in runs:
        model = model_from_checkpoint(checkpoint, table=DEMO_TASKS, num_classes=num_classes,
                                      with_regularizer=run_cfg.regularizer.kind != "none").to(device).eval()
        with torch.inference_mode():
            outputs = model(prepared["image"])
        columns.append((title, outputs["seg"].argmax(1)))
        if "aux_seg" in outputs:
            columns.append((f"{title}: auxiliary", outputs["aux_seg"].argmax(1)))
    title = "Validation images: the ground truth and the predicted classes of " + " and ".join(t for t, *_ in runs)
    return segmentation_figure(prepared["image"], prepared["label"], columns, path, rows=FIGURE_ROWS,
                               colours=dataset_colours(cfg, dataset), title=title)


def depth_predictions_figure(cfg: Config, checkpoints: list[tuple[str, dict]], path: Path) -> dict:
    """Rows of [image, ground-truth depth, each model's depth, each model's |error|] for validation images,
    the models run as ``evaluate_depth`` runs them (``depth.eval_protocol``: under ``train_size`` the input is
    resized to ``data.crop_size`` and the predictions upsampled to the ground truth's size). One colour scale
    in metres for the depth panels, one for the errors (``viz.depth_figure``; thesis §5.5, cf. Fig. 5.9)."""
    device = resolve_device(cfg.train.device)
    batch, dataset = validation_batch(cfg)
    num_classes = dataset_num_classes(dataset)
    prepared = build_augmentations(cfg.data)[1](to_device(batch, device))  # the evaluation's preprocessing
    forward = at_input_size(make_forward(cfg, num_classes), eval_input_size(cfg))
    columns = []
    for title, checkpoint in checkpoints:
        model = model_from_checkpoint(checkpoint, table=DEMO_TASKS, num_classes=num_classes).to(device).eval()
        with torch.inference_mode():
            columns.append((title, forward(model, prepared)["depth"][:, 0].float()))
    return depth_figure(denormalize(prepared["image"]), prepared["depth"], columns, path, rows=FIGURE_ROWS,
                        max_depth=cfg.depth.max_depth, min_depth=cfg.depth.min_depth)
