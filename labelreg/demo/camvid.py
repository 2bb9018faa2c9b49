"""``labelreg demo --dataset camvid``: the demo on real street scenes (issue 23 §3), CamVid's 11 classes.

Phase one (autoencoder-32 on the 367 training label maps), the tiny zoom-out DenseNet-67 from scratch at
96×128 without and with the frozen decoder as a regularizer, and label-space queries for a ``Car`` region
searched in the 101 validation frames, sized to run in under ten minutes on a 2-core CPU (the recipes and
their reasons: ``configs/demo/*camvid-demo.yaml``; a one-epoch run took 124 s on a lightly loaded 2-core
machine, ae / seg / seg_reg / queries 39 / 27 / 35 / 17 s, epochs 5.8 / 8.8 / 11.9 s, so the recipe's 15 / 10 /
10 epochs should take about 6.5 minutes there). Every number is scored on the full 360×480 test labels
(``labelreg.data.camvid``'s protocol: the segmenters read 96×128, their logits are upsampled), with Seq05VD,
a drive no training frame comes from, also on its own. The data are read where they are (default
``../shared/data/camvid``), never copied.
"""
from __future__ import annotations

from pathlib import Path

import torch

from labelreg.config import Config
from labelreg.data.build import build_augmentations
from labelreg.data.camvid import find_camvid_root
from labelreg.data.loader import to_device
from labelreg.demo.figures import DEMO_TASKS, FIGURE_ROWS, dataset_colours, validation_batch
from labelreg.demo.stages import CONFIG_DIR, DemoSpec, Recipe, decoder_of
from labelreg.runtime import resolve_device
from labelreg.tasks import model_from_checkpoint
from labelreg.tasks.evaluate import predict_at_size
from labelreg.tasks.inference import inference_sizes
from labelreg.tasks.autoencoder import train as train_autoencoder
from labelreg.tasks.segmentation import train as train_segmenter
from labelreg.viz import segmentation_figure

CAMVID_AE_CONFIG = CONFIG_DIR / "demo" / "ae-32_camvid-demo.yaml"
CAMVID_SEG_CONFIG = CONFIG_DIR / "demo" / "zoomout-densenet67-tiny_camvid-demo.yaml"
CAMVID_REG_CONFIG = CONFIG_DIR / "demo" / "zoomout-densenet67-tiny_dec32_camvid-demo.yaml"
CAMVID_STAGES = {
    "ae": "phase one: train the label autoencoder on CamVid's training label maps",
    "seg": "train a tiny zoom-out segmenter from scratch (baseline)",
    "seg_reg": "phase two: the same segmenter with the decoder regularizer",
    "queries": "label-space queries for a car, from a label map and from an image",
}


def camvid_segmenter_figure(runs: list[tuple[str, Config, dict]], path: Path) -> Path:
    """Test frames at full size: image, ground truth, each run's prediction and auxiliary output, each model
    run as it is scored (the frame resized to ``eval.short_sides``, its logits upsampled to 360×480)."""
    cfg = runs[0][1]
    device = resolve_device(cfg.train.device)
    batch, dataset = validation_batch(cfg)
    prepared = build_augmentations(cfg.data)[1](to_device(batch, device))
    size = inference_sizes(*prepared["image"].shape[-2:], cfg.eval.scales, cfg.eval.short_sides)[0]
    columns = []
    for title, run_cfg, checkpoint in runs:
        model = model_from_checkpoint(checkpoint, table=DEMO_TASKS, num_classes=dataset.num_classes,
                                      with_regularizer=run_cfg.regularizer.kind != "none").to(device).eval()
        with torch.inference_mode():
            outputs = predict_at_size(model, prepared["image"], size)
        columns.append((title, outputs["seg"].argmax(1)))
        if "aux_seg" in outputs:
            columns.append((f"{title}: auxiliary", outputs["aux_seg"].argmax(1)))
    title = (f"CamVid test frames: the ground truth and the predicted classes of {' and '.join(t for t, *_ in runs)} "
             f"(read at {size[0]}×{size[1]}, shown at full size)")
    return segmentation_figure(prepared["image"], prepared["label"], columns, path, rows=FIGURE_ROWS,
                               colours=dataset_colours(cfg, dataset), title=title)


CAMVID = DemoSpec(
    name="camvid", stages=CAMVID_STAGES, data_root=Path("../shared/data/camvid"), out=Path("runs/demo-camvid"),
    recipes={"ae": Recipe(CAMVID_AE_CONFIG, train_autoencoder),
             "seg": Recipe(CAMVID_SEG_CONFIG, train_segmenter),
             "seg_reg": Recipe(CAMVID_REG_CONFIG, train_segmenter,
                               lambda out, data_root: [f"regularizer.autoencoder={decoder_of(out)}"])},
    intro="CamVid road scenes in `{data_root}` (SegNet's 11-class 360×480 version: 367 training, 233 test frames). "
          "The segmenters read 96×128 frames; every number is scored on the full 360×480 test labels, and again on "
          "Seq05VD, a drive no training frame comes from",
    split_label="test", prefer=("Car", "Pedestrian"), query_split="val", check=find_camvid_root,
    segmenter_figure=camvid_segmenter_figure)
