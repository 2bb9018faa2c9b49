"""The demo's stages, in the order ``run_demo`` runs them; each returns what the report needs.

A training stage loads its config from ``configs/demo/`` with the demo's overrides, replaces its run
directory under ``out`` (a re-run of the demo starts over) and reads back the best checkpoint.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import torch

import labelreg
from depth.task import train as train_depth
from labelreg.cli_args import DEMO_STAGES
from labelreg.config import Config, load_config
from labelreg.data.build import build_dataset, dataset_class_names, dataset_num_classes, ensure_synthetic
from labelreg.demo.figures import autoencoder_figure, depth_predictions_figure, segmenter_figure
from labelreg.engine import claim_run_directory
from labelreg.retrieval import (class_box, image_source, index_description, label_source, open_index,
                                query_figure, run_query)
from labelreg.runtime import resolve_device
from labelreg.storage import load_checkpoint, write_json
from labelreg.tasks.autoencoder import train as train_autoencoder
from labelreg.tasks.segmentation import train as train_segmenter
from labelreg.viz import plot_curves

CONFIG_DIR = Path(labelreg.__file__).resolve().parents[1] / "configs"
DEMO_AE_CONFIG = CONFIG_DIR / "demo" / "ae-128_synth-nyu40.yaml"
DEMO_SEG_CONFIG = CONFIG_DIR / "demo" / "zoomout-densenet67-tiny_synth-nyu40.yaml"
DEMO_REG_CONFIG = CONFIG_DIR / "demo" / "zoomout-densenet67-tiny_dec128_synth-nyu40.yaml"
DEMO_TWOPART_CONFIG = CONFIG_DIR / "demo" / "twopart-tiny_synth-nyu40.yaml"
DEMO_SINGLE_CONFIG = CONFIG_DIR / "demo" / "twopart-tiny-single_synth-nyu40.yaml"
# each stage, as named in the run directories under ``out`` (metrics.json's "seconds" writes the training
# stages as train_ae, train_seg, train_seg_reg, train_twopart, train_single)
STAGES = DEMO_STAGES  # name → what it does, in order (defined where `labelreg demo --help` reads it)
FREQUENT_SHARE = 0.01  # classes covering at least 1% of the held-out pixels
# large surfaces and catch-all classes make dull queries: prefer an object
BORING_CLASSES = {"background", "wall", "floor", "ceiling", "otherstructure", "otherfurniture", "otherprop"}


class TrainedRun(NamedTuple):
    """One trained stage: its config, best checkpoint (with every epoch's history), the best epoch's
    validation metrics without the ``val/`` prefix, and the wall time of its training."""
    cfg: Config
    checkpoint: dict
    best: dict
    seconds: float


def train_stage(config_path: Path, name: str, out: Path, data_root: Path, overrides: list[str],
                trainer: Callable[[Config], object]) -> TrainedRun:
    cfg = load_config(config_path, [f"output_dir={out}", f"name={name}", f"data.root={data_root}", *overrides])
    started = time.perf_counter()
    with claim_run_directory(cfg.run_dir, overwrite=True):  # a re-run of the demo replaces its runs
        trainer(cfg)
    seconds = time.perf_counter() - started
    checkpoint = load_checkpoint(cfg.run_dir / "checkpoints" / "best.pt")
    checkpoint["history"] = load_checkpoint(cfg.run_dir / "checkpoints" / "last.pt")["history"]  # every epoch
    best = {key[4:]: value for key, value in checkpoint["metrics"].items() if key.startswith("val/")}
    return TrainedRun(cfg, checkpoint, best, seconds)


def data_stage(data_root: Path, overrides: list[str]) -> None:
    """Write the synthetic data set (NYUv2 and VOC formats) if it is absent."""
    ensure_synthetic(load_config(DEMO_AE_CONFIG, [f"data.root={data_root}", *overrides]).data)


@dataclass
class AutoencoderStage:
    run: TrainedRun
    figure: Path
    curves: Path
    class_names: list[str]
    class_shares: list[float]  # each class's share of the labeled validation pixels
    frequent_floor: tuple[str, float] | None  # the frequent class with the lowest IoU, and that IoU


def autoencoder_stage(out: Path, data_root: Path, overrides: list[str]) -> AutoencoderStage:
    """Phase one (thesis §5.3.1): the label autoencoder trained on the training label maps."""
    run = train_stage(DEMO_AE_CONFIG, "ae", out, data_root, overrides, train_autoencoder)
    figure = autoencoder_figure(run.cfg, run.checkpoint, out / "ae_reconstructions.png")
    curves = plot_curves(run.checkpoint["history"], ["train/ce", "val/miou", "val/pixel_acc"],
                         out / "ae_curves.png", title="label autoencoder (phase one)")
    names, shares = class_shares(run.cfg)
    return AutoencoderStage(run, figure, curves, names, shares, frequent_floor(names, shares, run.best))


def class_shares(cfg: Config) -> tuple[list[str], list[float]]:
    """Class names and each class's share of the labeled pixels of the validation split."""
    dataset = build_dataset(cfg.data, cfg.data.val_split)
    names, num_classes = dataset_class_names(dataset), dataset_num_classes(dataset)
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for index in range(len(dataset)):
        label = dataset[index]["label"]
        counts += torch.bincount(label[label < num_classes].flatten().long(), minlength=num_classes).double()
    return names, (counts / counts.sum().clamp(min=1)).tolist()


def frequent_floor(names: list[str], shares: list[float], metrics: dict) -> tuple[str, float] | None:
    """The frequent class (≥ ``FREQUENT_SHARE`` of the validation pixels) with the lowest IoU, and that IoU."""
    scored = [(metrics[f"iou/{name}"], name) for name, share in zip(names, shares)
              if share >= FREQUENT_SHARE and metrics.get(f"iou/{name}") is not None
              and metrics[f"iou/{name}"] == metrics[f"iou/{name}"]]  # NaN: the class never occurred
    if not scored:
        return None
    value, name = min(scored)
    return name, value


@dataclass
class SegmenterStage:
    baseline: TrainedRun
    regularized: TrainedRun
    figure: Path
    baseline_curves: Path
    regularized_curves: Path


def segmenter_stage(out: Path, data_root: Path, overrides: list[str], autoencoder: TrainedRun) -> SegmenterStage:
    """Phase two (thesis §5.3.3): a tiny zoom-out segmenter on a small labeled subset, without (baseline)
    and with the frozen phase-one decoder as a regularizer."""
    baseline = train_stage(DEMO_SEG_CONFIG, "seg", out, data_root, overrides, train_segmenter)
    reg_overrides = [f"regularizer.autoencoder={autoencoder.cfg.run_dir / 'checkpoints' / 'best.pt'}", *overrides]
    regularized = train_stage(DEMO_REG_CONFIG, "seg_reg", out, data_root, reg_overrides, train_segmenter)
    figure = segmenter_figure([("baseline", baseline.cfg, baseline.checkpoint),
                               ("regularized", regularized.cfg, regularized.checkpoint)], out / "seg_predictions.png")
    baseline_curves = plot_curves(baseline.checkpoint["history"], ["train/ce", "val/miou", "val/pixel_acc"],
                                  out / "seg_curves.png", title="zoom-out segmenter, baseline")
    regularized_curves = plot_curves(regularized.checkpoint["history"],
                                     ["train/ce", "train/aux", "val/miou", "val/aux_miou"],
                                     out / "seg_reg_curves.png", title="zoom-out segmenter + decoder regularizer")
    return SegmenterStage(baseline, regularized, figure, baseline_curves, regularized_curves)


@dataclass
class DepthStage:
    twopart: TrainedRun
    single: TrainedRun
    figure: dict  # viz.depth_figure's layout, with the PNG's "path"


def depth_stage(out: Path, data_root: Path, overrides: list[str]) -> DepthStage:
    """Joint depth and segmentation (thesis §5.5, the ``depth`` package): a tiny two-part model on labeled +
    depth-only frames, and the single-part baseline supervised only at the end."""
    depth_overrides = [f"depth.depth_only={data_root / 'nyu' / 'depth_only'}", *overrides]
    twopart = train_stage(DEMO_TWOPART_CONFIG, "twopart", out, data_root, depth_overrides, train_depth)
    single = train_stage(DEMO_SINGLE_CONFIG, "single", out, data_root, depth_overrides, train_depth)
    figure = depth_predictions_figure(twopart.cfg, [("two-part", twopart.checkpoint),
                                                    ("single-part", single.checkpoint)], out / "depth_predictions.png")
    return DepthStage(twopart, single, figure)


def query_stage(ae_cfg: Config, reg_cfg: Config, out: Path) -> tuple[Path, list[dict]]:
    """Label-space introspection (thesis §5.4.3): the same region of the first training image searched in the
    held-out split, once from its label map (phase-one encoder) and once from the image (the regularized
    segmenter's predicted decoder input). Writes ``queries.png`` and ``queries.json``."""
    device = resolve_device(ae_cfg.train.device)
    queries = build_dataset(ae_cfg.data, ae_cfg.data.train_split)
    reference = build_dataset(ae_cfg.data, ae_cfg.data.val_split)
    names, num_classes = dataset_class_names(reference), dataset_num_classes(reference)
    sample = queries[0]
    counts = torch.bincount(sample["label"][sample["label"] < num_classes].flatten(), minlength=num_classes)
    ranked = [c for c in counts.argsort(descending=True).tolist() if counts[c] > 0]
    chosen = next((c for c in ranked if names[c] not in BORING_CLASSES), ranked[0])
    box = class_box(sample["label"], chosen)
    description = index_description(ae_cfg.data, ae_cfg.data.val_split)
    results = []
    for checkpoint, source in ((ae_cfg.run_dir / "checkpoints" / "best.pt", label_source),
                               (reg_cfg.run_dir / "checkpoints" / "best.pt", image_source)):
        features = source(checkpoint, device, num_classes)
        index = open_index(features, reference, checkpoint, description=description, progress=False)
        results.append((run_query(index, features, sample, box, k=3, device=device), sample))
    figure = query_figure(results, reference, out / "queries.png", titles=["labels", "image"])
    records = [{**result.as_dict(), "class": names[chosen]} for result, _ in results]
    write_json(out / "queries.json", records)
    return figure, records
