"""The demo's stages, in the order ``run_demo`` runs them; each returns what the report needs.

A training stage's config is its recipe in ``configs/demo/`` with the overrides that reach it
(``plan.route_overrides``); it trains into ``<out>/<stage>``, or is read back from there when it finished
earlier with the same config (``runs.ensure_trained``). The functions here turn trained runs into figures
and the numbers of the report; a stage that was not run is None in them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import torch

import labelreg
from depth.task import train as train_depth
from labelreg.cli_args import DEMO_STAGES
from labelreg.config import Config, load_config
from labelreg.data.build import build_dataset, dataset_class_names, dataset_num_classes, ensure_synthetic
from labelreg.demo.figures import autoencoder_figure, depth_predictions_figure, segmenter_figure
from labelreg.demo.runs import TrainedRun
from labelreg.retrieval import (class_box, image_source, index_description, label_source, open_index,
                                query_figure, run_query)
from labelreg.runtime import resolve_device
from labelreg.storage import write_json
from labelreg.tasks.autoencoder import train as train_autoencoder
from labelreg.tasks.segmentation import train as train_segmenter
from labelreg.viz import plot_curves, plot_runs

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


def data_stage(data_root: Path, overrides: list[str]) -> None:
    """Write the synthetic data set (NYUv2 and VOC formats) if it is absent."""
    ensure_synthetic(load_config(DEMO_AE_CONFIG, [*overrides, f"data.root={data_root}"]).data)


class Recipe(NamedTuple):
    """A training stage: its config in ``configs/demo``, the task that trains it, and the demo's own wiring
    (``wiring(out, data_root)``: overrides that point it at the other stages' outputs and the data)."""
    config: Path
    trainer: Callable[[Config], object]
    wiring: Callable[[Path, Path], list[str]] = lambda out, data_root: []


def _depth_only(out: Path, data_root: Path) -> list[str]:
    return [f"depth.depth_only={data_root / 'nyu' / 'depth_only'}"]


def decoder_of(out: Path) -> Path:
    """The phase-one checkpoint the regularized segmenter reads: the ``ae`` stage's best."""
    return out / "ae" / "checkpoints" / "best.pt"


RECIPES = {
    "ae": Recipe(DEMO_AE_CONFIG, train_autoencoder),
    "seg": Recipe(DEMO_SEG_CONFIG, train_segmenter),
    "seg_reg": Recipe(DEMO_REG_CONFIG, train_segmenter,
                      lambda out, data_root: [f"regularizer.autoencoder={decoder_of(out)}"]),
    "twopart": Recipe(DEMO_TWOPART_CONFIG, train_depth, _depth_only),
    "single": Recipe(DEMO_SINGLE_CONFIG, train_depth, _depth_only),
}


@dataclass(frozen=True)
class DemoSpec:
    """One kind of demo: its stages (name → what it does, in order), the training stages' recipes, how its data
    is made ready (``prepare(data_root, overrides)``, the ``data`` stage) or checked (``check(data_root)``, before
    anything is written), the report's opening sentence (``intro``, with ``{data_root}``), the split its numbers
    are labelled with, the classes its query prefers and the split it searches, and how its segmenter figure is
    drawn."""
    name: str
    stages: dict[str, str]
    recipes: dict[str, Recipe]
    data_root: Path
    out: Path
    intro: str
    split_label: str = "val"
    prefer: tuple[str, ...] = ()
    query_split: str | None = None  # the split the queries search (None: the autoencoder's data.val_split)
    prepare: Callable[[Path, list[str]], None] | None = None
    check: Callable[[Path], object] | None = None
    segmenter_figure: Callable[[list, Path], Path] = segmenter_figure


SYNTHETIC = DemoSpec(
    name="synthetic", stages=STAGES, recipes=RECIPES, data_root=Path("data/synthetic"), out=Path("runs/demo"),
    intro="Synthetic scenes in `{data_root}` (real NYUv2 / VOC formats)", prepare=data_stage)


@dataclass
class AutoencoderStage:
    run: TrainedRun
    figure: Path
    curves: Path
    class_names: list[str]
    class_shares: list[float]  # each class's share of the labeled pixels of the validation split
    frequent_floor: tuple[str, float] | None  # the frequent class with the lowest IoU, and that IoU


def drawn(path: Path, redraw: bool, draw: Callable[[], object]) -> Path:
    """``path``, drawn by ``draw`` unless it is there and ``redraw`` is false (its runs were read back, not trained)."""
    if redraw or not path.is_file():
        draw()
    return path


def autoencoder_results(run: TrainedRun, out: Path, *, redraw: bool = True) -> AutoencoderStage:
    """Phase one (thesis §5.3.1), the label autoencoder trained on the training label maps: its figures and the
    validation split's class shares. ``redraw=False`` keeps figures already in ``out``."""
    figure = drawn(out / "ae_reconstructions.png", redraw,
                   lambda: autoencoder_figure(run.cfg, run.checkpoint, out / "ae_reconstructions.png"))
    curves = drawn(out / "ae_curves.png", redraw, lambda: plot_curves(
        run.checkpoint["history"], ["train/ce", "val/miou", "val/pixel_acc"], out / "ae_curves.png",
        title="label autoencoder (phase one)"))
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
    baseline: TrainedRun | None
    regularized: TrainedRun | None
    figure: Path
    curves: Path


SEGMENTER_CURVES = ["train/ce", "val/miou", "train/aux", "val/aux_miou"]  # the last two: the regularized run only


def segmenter_results(baseline: TrainedRun | None, regularized: TrainedRun | None, out: Path, *,
                      redraw: bool = True, figure_of=segmenter_figure) -> SegmenterStage | None:
    """Phase two (thesis §5.3.3): a tiny zoom-out segmenter on a small labeled subset, without (baseline) and
    with the frozen phase-one decoder as a regularizer; figures of the runs there are (None: neither), their
    curves on shared axes (``figure_of``: draws the predictions). ``redraw=False`` keeps figures already in ``out``."""
    runs = [(title, run) for title, run in (("baseline", baseline), ("regularized", regularized)) if run is not None]
    if not runs:
        return None
    figure = drawn(out / "seg_predictions.png", redraw, lambda: figure_of(
        [(title, run.cfg, run.checkpoint) for title, run in runs], out / "seg_predictions.png"))
    keys = [key for key in SEGMENTER_CURVES
            if any(key in entry for _, run in runs for entry in run.checkpoint["history"])]
    curves = drawn(out / "seg_curves.png", redraw, lambda: plot_runs(
        [(title, run.checkpoint["history"]) for title, run in runs], keys, out / "seg_curves.png",
        title="zoom-out segmenter: " + " vs ".join(title for title, _ in runs)))
    return SegmenterStage(baseline, regularized, figure, curves)


@dataclass
class DepthStage:
    twopart: TrainedRun | None
    single: TrainedRun | None
    figure: dict  # viz.depth_figure's layout, with the PNG's "path"


def depth_results(twopart: TrainedRun | None, single: TrainedRun | None, out: Path, *,
                  redraw: bool = True) -> DepthStage | None:
    """Joint depth and segmentation (thesis §5.5, the ``depth`` package): a tiny two-part model on labeled +
    depth-only frames, and the single-part baseline supervised only at the end; their figure (None: neither).
    ``redraw=False`` keeps the figure already in ``out``."""
    runs = [(title, run) for title, run in (("two-part", twopart), ("single-part", single)) if run is not None]
    if not runs:
        return None
    path = out / "depth_predictions.png"
    if redraw or not path.is_file():
        return DepthStage(twopart, single, depth_predictions_figure(
            runs[0][1].cfg, [(title, run.checkpoint) for title, run in runs], path))
    return DepthStage(twopart, single, {"path": path})


def query_stage(ae_cfg: Config, reg_cfg: Config, out: Path, prefer: Sequence[str] = (),
                split: str | None = None) -> tuple[Path, list[dict]]:
    """Label-space introspection (thesis §5.4.3): the same region of the first training image searched in the
    held-out split, once from its label map (phase-one encoder) and once from the image (the regularized
    segmenter's predicted decoder input). The region: the largest one of the first class in ``prefer`` present
    in the image, else of its largest class that is not a surface or catch-all. ``split``: the split searched
    (default the autoencoder's held-out ``data.val_split``). Writes ``queries.png`` and ``queries.json``."""
    device = resolve_device(ae_cfg.train.device)
    queries = build_dataset(ae_cfg.data, ae_cfg.data.train_split)
    split = split or ae_cfg.data.val_split
    reference = build_dataset(ae_cfg.data, split)
    names, num_classes = dataset_class_names(reference), dataset_num_classes(reference)
    sample = queries[0]
    counts = torch.bincount(sample["label"][sample["label"] < num_classes].flatten(), minlength=num_classes)
    ranked = [c for c in counts.argsort(descending=True).tolist() if counts[c] > 0]
    chosen = next((names.index(name) for name in prefer if name in names and names.index(name) in ranked),
                  next((c for c in ranked if names[c] not in BORING_CLASSES), ranked[0]))
    box = class_box(sample["label"], chosen)
    description = index_description(ae_cfg.data, split)
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
