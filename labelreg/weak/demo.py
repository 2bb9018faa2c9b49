"""The weak-supervision demo: ``configs/demo/weak-tiny_synth-voc.yaml`` end to end on the synthetic VOC copy.

``run_weak_demo`` runs features → localize → sample (diverse, k = 20) → train, then
the Table 4.3 comparison (top-k, spatial and dense sampling from the same nets), and
draws the sampled points. It is what ``labelreg.demo`` calls; the run directory is
``<out>/weak`` and the figures are ``<out>/weak_points.png`` and
``<out>/weak_predictions.png``.

The backbone is a tiny random-init network (no downloads, no weights), so its
features localize poorly and the numbers say that the pipeline runs and how it
compares with the same head trained on dense labels, not what ImageNet features
would reach (the thesis: 40.6 mIoU on VOC 2012 val). ``weak.pretrain_epochs=10``
first trains the backbone from the training tags (``labelreg.weak.pretrain``); on
this demo that did not clearly help (docs/weak.md), so it is off.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F

import labelreg
from labelreg.config import Config, load_config, save_config
from labelreg.runtime import resolve_device
from labelreg.storage import write_json
from labelreg.viz import to_uint8_image
from labelreg.weak.figure import points_figure, predictions_figure
from labelreg.weak.localization import load_localizers, sampling_scores
from labelreg.weak.pipeline import load_points, make_log, points_path, run_all, step_sample, step_train
from labelreg.weak.store import FeatureStore, split_dataset
from labelreg.weak.train import load_head

DEMO_WEAK_CONFIG = Path(labelreg.__file__).resolve().parents[1] / "configs" / "demo" / "weak-tiny_synth-voc.yaml"
COMPARED_SAMPLERS = ("topk", "spatial", "dense")  # Table 4.3, beside the configured "diverse"
FIGURE_ROWS = 6


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Every operation here is small (1×1 convs on ~10⁵ locations): on a 2-core CPU, and more so one shared
    with other jobs, OpenMP's synchronisation costs more than a second thread saves (measured: 22 s on one
    thread, 150 s on two while another process was running)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _with_sampler(cfg: Config, sampler: str) -> Config:
    return dataclasses.replace(cfg, weak=dataclasses.replace(cfg.weak, sampler=sampler))


def _points_rows(cfg: Config, count: int) -> tuple[list[dict], tuple[int, int]]:
    """The first ``count`` tagged training images with their localization score and sampled points; the grid."""
    store = FeatureStore(cfg, "train")
    dataset = split_dataset(cfg, "train")
    nets = load_localizers(cfg.run_dir / "localization")
    points, grid = load_points(points_path(cfg))
    rows = []
    for i in [i for i, tags in enumerate(store.tags) if tags][:count]:
        present = [c for c in store.tags[i] if c in nets]
        score = None
        if present:
            with torch.no_grad():
                maps = store.zoomout([i])
                score = torch.stack([sampling_scores(nets[c][0](maps), nets[c][1]["loss"])[0] for c in present])
            score = score.amax(dim=0).numpy()
        sample = dataset[i]
        rows.append({"image": to_uint8_image(sample["image"]), "label": sample["label"].numpy(), "score": score,
                     "points": points[i]})
    return rows, grid


def _prediction_rows(cfg: Config, count: int) -> list[dict]:
    """The first ``count`` validation images with the point-supervised and dense heads' predictions."""
    store = FeatureStore(cfg, "val")
    dataset = split_dataset(cfg, "val")
    heads = {title: load_head(cfg.run_dir / name)
             for title, name in ((f"points ({cfg.weak.sampler})", f"head_points_{cfg.weak.sampler}.pt"),
                                 ("dense labels", "head_dense.pt"))
             if (cfg.run_dir / name).is_file()}
    rows = []
    for i in range(min(count, len(store))):
        sample = dataset[i]
        size = tuple(sample["label"].shape)
        with torch.no_grad():  # upsampled to the label like the evaluation does, then argmax
            features = store.segmentation_input([i])
            predicted = {title: F.interpolate(head(features), size=size, mode="bilinear",
                                              align_corners=False)[0].argmax(0).numpy()
                         for title, head in heads.items()}
        rows.append({"image": to_uint8_image(sample["image"]), "label": sample["label"].numpy(),
                     "predictions": predicted})
    return rows


def weak_demo_config(out: Path, data_root: Path, overrides: list[str]) -> Config:
    """The demo config with ``overrides`` (e.g. ``weak.k=10``); ``output_dir``, ``name`` (``weak``) and
    ``data.root`` come from ``out`` and ``data_root``."""
    return load_config(DEMO_WEAK_CONFIG, [*(overrides or []), f"output_dir={Path(out)}", "name=weak",
                                          f"data.root={Path(data_root)}"])


def run_weak_demo(out: Path, data_root: Path, overrides: list[str]) -> dict:
    """Run the demo config end to end; returns {"figure": Path, "prediction_figure": Path, "metrics": {...},
    "seconds": float}, the metrics also in ``<out>/weak/demo.json``.

    ``overrides`` apply to the demo config (``weak_demo_config``). The demo's ``train.epochs=N`` reaches
    this stage as ``weak.loc_epochs``, ``weak.seg_epochs`` and ``weak.dense_epochs`` (``labelreg.demo.plan``).
    """
    started = time.perf_counter()
    out = Path(out)
    cfg = weak_demo_config(out, data_root, overrides)
    with single_thread():
        log = make_log(cfg)
        results = run_all(cfg, log=log, progress=False)
        compared = {cfg.weak.sampler: (results["sample"], results["train"][f"points_{cfg.weak.sampler}"])}
        for sampler in COMPARED_SAMPLERS:
            if sampler != cfg.weak.sampler:
                other = _with_sampler(cfg, sampler)
                sampled = step_sample(other, log=log, progress=False)
                trained = step_train(other, dense=False, log=log, progress=False)
                compared[sampler] = (sampled, trained[f"points_{sampler}"])
        # each compared sampler's steps rewrote config.yaml; the run's record is the demo's own config again
        # (the demo report compares it with the recipe, and a left-over sampler read as a changed setting)
        save_config(cfg, cfg.run_dir / "config.yaml")
        figure, predictions = weak_figures(cfg, out)
    seconds = time.perf_counter() - started
    trained, sampled = results["train"], results["sample"]
    metrics = {
        "sampler": cfg.weak.sampler, "k": cfg.weak.k, "loc_loss": cfg.weak.loc_loss,
        "epochs": {key: getattr(cfg.weak, key) for key in ("loc_epochs", "seg_epochs", "dense_epochs",
                                                            "pretrain_epochs")},
        "train_images": results["features"]["train"]["images"], "val_images": results["features"]["val"]["images"],
        "classes_localized": results["localize"]["available"],
        "point_miou": trained[f"points_{cfg.weak.sampler}"]["miou"],
        "dense_miou": trained["dense"]["miou"] if "dense" in trained else None,
        "points_per_image": sampled["points_per_image"], "point_accuracy": sampled["point_accuracy"],
        "foreground_point_accuracy": sampled["foreground_point_accuracy"],
        "background_point_accuracy": sampled["background_point_accuracy"],
        "samplers": {name: {"miou": t["miou"], "points_per_image": s["points_per_image"],
                            **{key: s[key] for key in ("point_accuracy", "foreground_point_accuracy",
                                                       "background_point_accuracy")}}
                     for name, (s, t) in compared.items()},
        "pretrain": ({key: results["pretrain"][key] for key in ("epochs", "train_bce", "val_bce", "val_map",
                                                                "val_chance_map", "val_tag_f1", "init_val_map")}
                     if "pretrain" in results else None),
        "step_seconds": {step: results[step]["seconds"] for step in ("pretrain", "features", "localize", "sample",
                                                                    "train") if step in results},
        "device": str(resolve_device(cfg.train.device)), "run_dir": str(cfg.run_dir),
    }
    write_json(cfg.run_dir / "demo.json", {**metrics, "seconds": round(seconds, 1)})
    dense = "n/a" if metrics["dense_miou"] is None else f"{100 * metrics['dense_miou']:.1f}"
    log(f"weak demo: {metrics['points_per_image']:.1f} points per image → val mIoU {100 * metrics['point_miou']:.1f} "
        f"(same head on dense labels: {dense}), {seconds:.0f} s")
    return {"figure": figure, "prediction_figure": predictions, "metrics": metrics, "seconds": seconds}


def weak_figures(cfg: Config, out: Path) -> tuple[Path, Path]:
    """``<out>/weak_points.png`` and ``<out>/weak_predictions.png`` from the run's stores, nets and heads."""
    with single_thread():
        rows, grid = _points_rows(cfg, FIGURE_ROWS)
        figure = points_figure(rows, Path(out) / "weak_points.png", size=cfg.weak.image_size, grid=grid)
        predictions = predictions_figure(_prediction_rows(cfg, FIGURE_ROWS), Path(out) / "weak_predictions.png",
                                         size=cfg.weak.image_size)
    return figure, predictions


def load_weak_demo(cfg: Config, out: Path) -> dict:
    """A finished weak demo read back (``<run>/demo.json``): what ``run_weak_demo`` returns, with the seconds the
    run took; its figures are drawn again only where they are missing from ``out``."""
    stored = json.loads((cfg.run_dir / "demo.json").read_text())
    seconds = stored.pop("seconds", 0.0)
    figure, predictions = Path(out) / "weak_points.png", Path(out) / "weak_predictions.png"
    if not (figure.is_file() and predictions.is_file()):
        figure, predictions = weak_figures(cfg, out)
    return {"figure": figure, "prediction_figure": predictions, "metrics": stored, "seconds": float(seconds or 0.0)}
