"""``labelreg demo``: the pipeline on synthetic scenes, with a report in ``runs/demo``.

Stages so far:
1. write the synthetic data set if absent;
2. phase one: train the 128-variant label autoencoder on the training label maps;
3. train a tiny zoom-out DenseNet-67 on a small labeled subset, without (baseline) and
   with the decoder regularizer (phase two), and compare them on the held-out split;
4. joint depth + segmentation: a tiny two-part model on labeled + depth-only frames and,
   for comparison, the single-part baseline (the ``depth`` package);
5. label-space introspection (thesis §5.4.3): the same region of a training image searched in
   the held-out split, once from its label map (phase-one encoder) and once from the image
   (the regularized segmenter's predicted decoder input);
6. weak supervision from image tags (thesis ch. 4, ``labelreg.weak``): localization nets,
   diverse point sampling and a point-supervised head, against the same head on dense labels.

Each stage has its run directory under ``runs/demo/`` (config, checkpoints,
TensorBoard logs, metrics.json); the demo adds ``report.md``, ``metrics.json``
and the figures next to them.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

import labelreg
from labelreg.config import Config, load_config
from labelreg.data.build import (build_augmentations, build_dataset, dataset_class_names, dataset_num_classes,
                                 ensure_synthetic)
from labelreg.data.transforms import denormalize
from labelreg.engine import claim_run_directory, load_checkpoint, make_loader, resolve_device, to_device
from labelreg.evaluation import format_metrics
from labelreg.viz import (depth_figure, image_grid, overlay, plot_curves, save_png, segmentation_figure,
                          to_uint8_image)

CONFIG_DIR = Path(labelreg.__file__).resolve().parents[1] / "configs"
DEMO_AE_CONFIG = CONFIG_DIR / "demo" / "ae-128_synth-nyu40.yaml"
DEMO_SEG_CONFIG = CONFIG_DIR / "demo" / "zoomout-densenet67-tiny_synth-nyu40.yaml"
DEMO_REG_CONFIG = CONFIG_DIR / "demo" / "zoomout-densenet67-tiny_dec128_synth-nyu40.yaml"
DEMO_TWOPART_CONFIG = CONFIG_DIR / "demo" / "twopart-tiny_synth-nyu40.yaml"
DEMO_SINGLE_CONFIG = CONFIG_DIR / "demo" / "twopart-tiny-single_synth-nyu40.yaml"
FIGURE_ROWS = 6


def _validation_batch(cfg: Config, count: int = FIGURE_ROWS) -> tuple[dict, object]:
    """The first ``count`` validation samples as a batch, and the dataset they come from."""
    dataset = build_dataset(cfg.data, cfg.data.val_split)
    return next(iter(make_loader(dataset, batch_size=count, shuffle=False, num_workers=0))), dataset


def _autoencoder_figure(cfg: Config, checkpoint: dict, path: Path) -> Path:
    """Rows of [image, ground-truth labels over it, labels, reconstruction] for validation images."""
    from labelreg.train_ae import build_autoencoder, build_task, reconstruction_panels

    device = resolve_device(cfg.train.device)
    batch, dataset = _validation_batch(cfg)
    model = build_autoencoder(cfg, dataset_num_classes(dataset)).to(device).eval()
    model.load_state_dict(checkpoint["model"])
    task = build_task(cfg, model, dataset_class_names(dataset))
    with torch.inference_mode():
        panels = reconstruction_panels(model, task.eval_augment(to_device(batch, device)), FIGURE_ROWS)
    rows = []
    for index, (labels, reconstruction) in enumerate(panels):
        image = to_uint8_image(batch["image"][index])
        rows.append([image, overlay(image, batch["label"][index].numpy()), labels, reconstruction])
    return save_png(image_grid(rows, titles=["image", "overlay", "labels (input)", "reconstruction"]), path)


def _segmenter_figure(runs: list[tuple[str, Config, dict]], path: Path) -> Path:
    """Validation images with each run's prediction (and auxiliary output, if any)."""
    from labelreg.train_seg import build_model

    cfg = runs[0][1]
    device = resolve_device(cfg.train.device)
    batch, dataset = _validation_batch(cfg)
    num_classes = dataset_num_classes(dataset)
    prepared = build_augmentations(cfg.data)[1](to_device(batch, device))
    columns = []
    for title, run_cfg, checkpoint in runs:
        model = build_model(run_cfg, num_classes).to(device).eval()
        model.load_state_dict(checkpoint["model"])
        with torch.inference_mode():
            outputs = model(prepared["image"])
        columns.append((title, outputs["seg"].argmax(1)))
        if "aux_seg" in outputs:
            columns.append((f"{title}: auxiliary", outputs["aux_seg"].argmax(1)))
    return segmentation_figure(prepared["image"], prepared["label"], columns, path, rows=FIGURE_ROWS)


def _depth_figure(cfg: Config, checkpoints: list[tuple[str, dict]], path: Path) -> dict:
    """Rows of [image, ground-truth depth, each model's depth, each model's |error|] for validation images,
    the models run as ``evaluate_depth`` runs them (``depth.eval_protocol``: under ``train_size`` the input is
    resized to ``data.crop_size`` and the predictions upsampled to the ground truth's size). One colour scale
    in metres for the depth panels, one for the errors (``viz.depth_figure``; thesis §5.5, cf. Fig. 5.9)."""
    from depth.train import at_input_size, build_model, eval_input_size, make_forward

    device = resolve_device(cfg.train.device)
    batch, dataset = _validation_batch(cfg)
    num_classes = dataset_num_classes(dataset)
    prepared = build_augmentations(cfg.data)[1](to_device(batch, device))  # the evaluation's preprocessing
    forward = at_input_size(make_forward(cfg, num_classes), eval_input_size(cfg))
    columns = []
    for title, checkpoint in checkpoints:
        model = build_model(cfg, num_classes).to(device).eval()
        model.load_state_dict(checkpoint["model"])
        with torch.inference_mode():
            columns.append((title, forward(model, prepared)["depth"][:, 0].float()))
    return depth_figure(denormalize(prepared["image"]), prepared["depth"], columns, path, rows=FIGURE_ROWS,
                        max_depth=cfg.depth.max_depth, min_depth=cfg.depth.min_depth)


# large surfaces and catch-all classes make dull queries: prefer an object
BORING_CLASSES = {"background", "wall", "floor", "ceiling", "otherstructure", "otherfurniture", "otherprop"}


def _query_stage(ae_cfg: Config, reg_cfg: Config, out: Path) -> tuple[Path, list[dict]]:
    """Two queries for the same region of the first training image: from its labels, from its pixels."""
    from labelreg.introspect import (class_box, image_source, index_description, label_source, open_index,
                                     query_figure, run_query)

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
    figure = query_figure(results, reference, out / "queries.png",
                          titles=["labels", "image"])
    records = [{**result.as_dict(), "class": names[chosen]} for result, _ in results]
    (out / "queries.json").write_text(json.dumps(records, indent=2))
    return figure, records


def _class_shares(cfg: Config) -> tuple[list[str], list[float]]:
    """Class names and each class's share of the labeled pixels of the validation split."""
    dataset = build_dataset(cfg.data, cfg.data.val_split)
    names, num_classes = dataset_class_names(dataset), dataset_num_classes(dataset)
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for index in range(len(dataset)):
        label = dataset[index]["label"]
        counts += torch.bincount(label[label < num_classes].flatten().long(), minlength=num_classes).double()
    return names, (counts / counts.sum().clamp(min=1)).tolist()


FREQUENT_SHARE = 0.01  # classes covering at least 1% of the held-out pixels


def _per_class_table(names: list[str], shares: list[float], runs: list[tuple[str, dict]]) -> list[str]:
    """Markdown rows: every class present in the validation split, its pixel share and each run's IoU (%);
    frequent classes (≥ ``FREQUENT_SHARE``) in bold."""
    def iou(metrics: dict, name: str) -> str:
        value = metrics.get(f"iou/{name}")
        return "n/a" if value is None or value != value else f"{100 * value:.1f}"

    rows = ["| class | pixels (%) | " + " | ".join(title for title, _ in runs) + " |",
            "|---|---:|" + "---:|" * len(runs)]
    for name, share in sorted(zip(names, shares), key=lambda item: -item[1]):
        if share > 0:
            shown = f"**{name}**" if share >= FREQUENT_SHARE else name
            rows.append(f"| {shown} | {100 * share:.1f} | " + " | ".join(iou(m, name) for _, m in runs) + " |")
    return rows


def _frequent_floor(names: list[str], shares: list[float], metrics: dict) -> tuple[str, float] | None:
    """The frequent class (≥ ``FREQUENT_SHARE`` of the validation pixels) with the lowest IoU, and that IoU."""
    scored = [(metrics[f"iou/{name}"], name) for name, share in zip(names, shares)
              if share >= FREQUENT_SHARE and metrics.get(f"iou/{name}") is not None
              and metrics[f"iou/{name}"] == metrics[f"iou/{name}"]]  # NaN: the class never occurred
    if not scored:
        return None
    value, name = min(scored)
    return name, value


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def _train_stage(config_path: Path, name: str, out: Path, data_root: Path, overrides: list[str], trainer) -> tuple:
    cfg = load_config(config_path, [f"output_dir={out}", f"name={name}", f"data.root={data_root}", *overrides])
    started = time.perf_counter()
    with claim_run_directory(cfg.run_dir, overwrite=True):  # a re-run of the demo replaces its runs
        trainer(cfg)
    seconds = time.perf_counter() - started
    checkpoint = load_checkpoint(cfg.run_dir / "checkpoints" / "best.pt")
    checkpoint["history"] = load_checkpoint(cfg.run_dir / "checkpoints" / "last.pt")["history"]  # every epoch
    best = {key[4:]: value for key, value in checkpoint["metrics"].items() if key.startswith("val/")}
    return cfg, checkpoint, best, seconds


def run_demo(out: Path = Path("runs/demo"), data_root: Path = Path("data/synthetic"),
             overrides: list[str] | None = None) -> dict:
    """Run every stage; ``overrides`` apply to every stage's config (e.g. ``train.epochs=1``)."""
    from labelreg.train_ae import train as train_autoencoder
    from labelreg.train_seg import train as train_segmenter

    overrides = list(overrides or [])
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    ensure_synthetic(load_config(DEMO_AE_CONFIG, [f"data.root={data_root}", *overrides]).data)
    data_seconds = time.perf_counter() - started

    ae_cfg, ae_checkpoint, ae_best, ae_seconds = _train_stage(DEMO_AE_CONFIG, "ae", out, data_root, overrides,
                                                              train_autoencoder)
    ae_figure = _autoencoder_figure(ae_cfg, ae_checkpoint, out / "ae_reconstructions.png")
    ae_curves = plot_curves(ae_checkpoint["history"], ["train/ce", "val/miou", "val/pixel_acc"],
                            out / "ae_curves.png", title="label autoencoder (phase one)")
    class_names, class_shares = _class_shares(ae_cfg)
    ae_floor = _frequent_floor(class_names, class_shares, ae_best)

    seg_cfg, seg_checkpoint, seg_best, seg_seconds = _train_stage(DEMO_SEG_CONFIG, "seg", out, data_root, overrides,
                                                                  train_segmenter)
    reg_overrides = [f"regularizer.autoencoder={ae_cfg.run_dir / 'checkpoints' / 'best.pt'}", *overrides]
    reg_cfg, reg_checkpoint, reg_best, reg_seconds = _train_stage(DEMO_REG_CONFIG, "seg_reg", out, data_root,
                                                                  reg_overrides, train_segmenter)
    seg_figure = _segmenter_figure([("baseline", seg_cfg, seg_checkpoint), ("regularized", reg_cfg, reg_checkpoint)],
                                   out / "seg_predictions.png")
    seg_curves = plot_curves(seg_checkpoint["history"], ["train/ce", "val/miou", "val/pixel_acc"],
                             out / "seg_curves.png", title="zoom-out segmenter, baseline")
    reg_curves = plot_curves(reg_checkpoint["history"], ["train/ce", "train/aux", "val/miou", "val/aux_miou"],
                             out / "seg_reg_curves.png", title="zoom-out segmenter + decoder regularizer")
    from depth.train import train as train_depth

    two_cfg, two_checkpoint, two_best, two_seconds = _train_stage(DEMO_TWOPART_CONFIG, "twopart", out, data_root,
                                                                  [f"depth.depth_only={data_root / 'nyu' / 'depth_only'}",
                                                                   *overrides], train_depth)
    one_cfg, one_checkpoint, one_best, one_seconds = _train_stage(DEMO_SINGLE_CONFIG, "single", out, data_root,
                                                                  [f"depth.depth_only={data_root / 'nyu' / 'depth_only'}",
                                                                   *overrides], train_depth)
    depth_layout = _depth_figure(two_cfg, [("two-part", two_checkpoint), ("single-part", one_checkpoint)],
                                 out / "depth_predictions.png")
    query_started = time.perf_counter()
    query_figure, query_records = _query_stage(ae_cfg, reg_cfg, out)
    query_seconds = time.perf_counter() - query_started
    from labelreg.weak.demo import run_weak_demo

    weak = run_weak_demo(out, data_root, overrides)
    total_seconds = time.perf_counter() - started

    summary = {
        "autoencoder": {"variant": ae_cfg.model.variant, "best_epoch": ae_checkpoint["best_epoch"],
                        "epochs": ae_cfg.train.epochs, "val": ae_best, "run_dir": str(ae_cfg.run_dir),
                        "val_class_share": dict(zip(class_names, class_shares)),
                        "frequent_class_min_iou": None if ae_floor is None else
                        {"class": ae_floor[0], "iou": ae_floor[1], "share_at_least": FREQUENT_SHARE}},
        "segmenter": {"model": seg_cfg.model.name, "train_images": seg_cfg.data.train_limit,
                      "best_epoch": seg_checkpoint["best_epoch"], "epochs": seg_cfg.train.epochs, "val": seg_best,
                      "run_dir": str(seg_cfg.run_dir)},
        "regularized": {"model": reg_cfg.model.name, "regularizer": reg_cfg.regularizer.kind,
                        "weight": reg_cfg.regularizer.weight, "train_images": reg_cfg.data.train_limit,
                        "best_epoch": reg_checkpoint["best_epoch"], "epochs": reg_cfg.train.epochs, "val": reg_best,
                        "run_dir": str(reg_cfg.run_dir)},
        "depth": {"twopart": {"val": two_best, "run_dir": str(two_cfg.run_dir)},
                  "single": {"val": one_best, "run_dir": str(one_cfg.run_dir)}},
        "queries": query_records,
        "weak": weak["metrics"],
        "seconds": {"data": round(data_seconds, 1), "train_ae": round(ae_seconds, 1),
                    "train_seg": round(seg_seconds, 1), "train_seg_reg": round(reg_seconds, 1),
                    "train_twopart": round(two_seconds, 1), "train_single": round(one_seconds, 1),
                    "queries": round(query_seconds, 1), "weak": round(weak["seconds"], 1),
                    "total": round(total_seconds, 1)},
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    gain = 100 * (reg_best["miou"] - seg_best["miou"])
    table = "\n".join([
        "| stage | metric | value |",
        "|---|---|---|",
        f"| phase one: autoencoder-{ae_cfg.model.variant} | reconstruction mIoU (val) | {100 * ae_best['miou']:.1f} |",
        f"| baseline: {seg_cfg.model.name} (tiny, {seg_cfg.data.train_limit} train images) | mIoU (val) | "
        f"{100 * seg_best['miou']:.1f} |",
        f"| phase two: same + decoder regularizer (weight {reg_cfg.regularizer.weight}) | mIoU (val), primary output | "
        f"{100 * reg_best['miou']:.1f} ({gain:+.1f}) |",
        f"| | mIoU (val), auxiliary output through the decoder | {100 * reg_best['aux_miou']:.1f} |",
        f"| depth: tiny two-part model (labeled + depth-only) | RMSE (m, pixel-accumulated) / mIoU | "
        f"{two_best['pixel_rmse']:.3f} / {100 * two_best['miou']:.1f} |",
        f"| depth: single-part baseline (supervised at the end) | RMSE (m, pixel-accumulated) / mIoU | "
        f"{one_best['pixel_rmse']:.3f} / {100 * one_best['miou']:.1f} |",
        f"| weak supervision: tags → {weak['metrics']['sampler']} points → 1×1 head | mIoU (val), same head on "
        f"dense labels | {100 * weak['metrics']['point_miou']:.1f}, dense {_percent(weak['metrics']['dense_miou'])} |",
        f"| time | data / autoencoder / baseline / regularized / two-part / single-part / queries / weak / total (s) | "
        f"{data_seconds:.0f} / {ae_seconds:.0f} / {seg_seconds:.0f} / {reg_seconds:.0f} / {two_seconds:.0f} / "
        f"{one_seconds:.0f} / {query_seconds:.0f} / {weak['seconds']:.0f} / {total_seconds:.0f} |",
    ])
    verdict = ("helped" if gain > 0.5 else "hurt" if gain < -0.5 else "made no clear difference") + \
        f" ({gain:+.1f} mIoU, one seed: differences of a point or two are within run-to-run noise)"
    report = "\n".join([
        "# labelreg demo report", "",
        f"Synthetic scenes in `{data_root}` (real NYUv2 / VOC formats), device `{resolve_device(ae_cfg.train.device)}`.",
        "", table, "",
        "## Phase one: label autoencoder", "",
        "The autoencoder sees only ground-truth label maps and must reconstruct them through a 1/16 bottleneck.", "",
        f"![reconstructions]({ae_figure.name})", "", f"![curves]({ae_curves.name})", "",
        "Per-class IoU on the held-out split (%): the autoencoder reconstructing the ground-truth label maps, "
        "next to the two segmenters below predicting them from images. Classes by their share of the held-out "
        f"pixels; those covering at least {100 * FREQUENT_SHARE:.0f}% in bold"
        + ("." if ae_floor is None else f" (the autoencoder's lowest among them: {ae_floor[0]}, "
           f"{100 * ae_floor[1]:.1f})."), "",
        *_per_class_table(class_names, class_shares, [("autoencoder", ae_best), ("baseline", seg_best),
                                                      ("regularized", reg_best)]), "",
        "```", format_metrics({k: v for k, v in ae_best.items() if not k.startswith("iou/")},
                              title="autoencoder reconstruction, validation split"), "```", "",
        "## Phase two: the decoder as a regularizer", "",
        f"`{seg_cfg.model.name}` with a tiny backbone, trained from scratch on the first {seg_cfg.data.train_limit} "
        "training images twice: alone (baseline), and with an auxiliary 1×1 conv predicting the decoder's input "
        "from the 1/16 feature map, through the frozen phase-one decoder. On this run the regularizer "
        f"{verdict}. The auxiliary column shows what the segmenter tells the decoder.", "",
        f"![predictions]({seg_figure.name})", "", f"![baseline curves]({seg_curves.name})", "",
        f"![regularized curves]({reg_curves.name})", "",
        "```", format_metrics(seg_best, title="baseline, validation split"), "```", "",
        "```", format_metrics({k: v for k, v in reg_best.items() if not k.startswith("aux_")},
                              title="regularized (primary output), validation split"), "```", "",
        "## Joint depth and segmentation", "",
        f"A tiny two-part model ({two_cfg.depth.mixed_epochs} epochs on labeled + {two_cfg.depth.depth_only_limit} "
        "depth-only frames with at least "
        f"{two_cfg.depth.labeled_per_batch} labeled images per batch, then labeled only) against the single-part "
        "baseline of Table 5.6 (same architecture, supervised only at the end). Depth metrics on valid pixels, "
        "relative errors divided by the ground truth; RMSE in metres.", "",
        "| model | pixel RMSE | image RMSE | abs rel | δ<1.25 | mIoU |", "|---|---|---|---|---|---|",
        *(f"| {title} | {m['pixel_rmse']:.3f} | {m['image_rmse']:.3f} | {m['pixel_abs_rel']:.3f} | "
          f"{m['pixel_delta1']:.3f} | {100 * m['miou']:.1f} |" for title, m in (("two-part", two_best),
                                                                                ("single-part", one_best))), "",
        f"![depth]({depth_layout['path'].name})", "",
        "## Label-space queries", "",
        f"The largest `{query_records[0]['class']}` region of training image `{query_records[0]['query_id']}` "
        f"(box {','.join(map(str, query_records[0]['box']))}, green) searched among every same-sized region of the "
        "held-out split, excluding its own image (thesis §5.4.3, Fig. 5.7). Top row: from the label map, through "
        "the phase-one encoder. Bottom row: from the image, through the regularized segmenter's predicted decoder "
        "input, against an index of the held-out images' predicted codes. Cosine distance over the concatenated "
        "bottleneck cells of the box.", "",
        "| query from | match 1 | match 2 | match 3 |", "|---|---|---|---|",
        *(f"| {kind} | " + " | ".join(f"{m['image_id']} ({m['distance']:.3f})" for m in record["matches"]) + " |"
          for kind, record in zip(("labels", "image"), query_records)), "",
        f"![queries]({query_figure.name})", "",
        "## Weak supervision from image tags", "",
        f"Thesis chapter 4 on the synthetic scenes' VOC copy: per-class localization nets trained from image tags "
        f"only ({weak['metrics']['loc_loss'].replace('_', ' ')} MIL loss), k={weak['metrics']['k']} points per "
        "present class chosen by each sampling strategy (Table 4.3), and a 1×1 head trained on those points only; "
        "the same head trained on dense labels is the fully supervised reference. See `docs/weak.md`.", "",
        "| sampler | points / image | foreground points on their class | val mIoU |", "|---|---|---|---|",
        *(f"| {name} | {m['points_per_image']:.1f} | {_percent(m['foreground_point_accuracy'])} % | "
          f"{_percent(m['miou'])} |" for name, m in weak["metrics"]["samplers"].items()),
        f"| dense labels (fully supervised head) | all | — | {_percent(weak['metrics']['dense_miou'])} |", "",
        f"![sampled points]({weak['figure'].name})", "",
        f"![weak predictions]({weak['prediction_figure'].name})", "",
    ])
    (out / "report.md").write_text(report)
    print()
    print(table)
    print(f"\nreport: {out / 'report.md'}")
    return summary
