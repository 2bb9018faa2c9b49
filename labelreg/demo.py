"""``labelreg demo``: the whole pipeline on synthetic scenes, with a report in ``runs/demo``.

For now (phase one): write the synthetic data set if absent, train the 128-variant
label autoencoder on its training labels, evaluate it on the held-out labels, and
write ``runs/demo/{report.md, metrics.json, ae_reconstructions.png, ae_curves.png}``
next to the run directory ``runs/demo/ae/`` (config, checkpoints, TensorBoard logs).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

import labelreg
from labelreg.config import load_config
from labelreg.data.build import build_dataset, dataset_class_names, dataset_num_classes, ensure_synthetic
from labelreg.engine import load_checkpoint, make_loader, resolve_device
from labelreg.evaluation import format_metrics
from labelreg.train_ae import build_autoencoder, build_task, reconstruction_panels, train
from labelreg.viz import image_grid, overlay, plot_curves, save_png, to_uint8_image

CONFIG_DIR = Path(labelreg.__file__).resolve().parents[1] / "configs"
DEMO_AE_CONFIG = CONFIG_DIR / "demo" / "ae-128_synth-nyu40.yaml"


def _reconstruction_figure(cfg, checkpoint: dict, path: Path, count: int = 6) -> Path:
    """Rows of [image, ground-truth labels over it, labels, reconstruction] for validation images."""
    device = resolve_device(cfg.train.device)
    dataset = build_dataset(cfg.data, cfg.data.val_split)
    model = build_autoencoder(cfg, dataset_num_classes(dataset)).to(device)
    model.load_state_dict(checkpoint["model"])
    model.eval()
    batch = next(iter(make_loader(dataset, batch_size=count, shuffle=False, num_workers=0)))
    task = build_task(cfg, model, dataset_class_names(dataset))
    with torch.inference_mode():
        panels = reconstruction_panels(model, task.eval_augment({k: v.to(device) if torch.is_tensor(v) else v
                                                                 for k, v in batch.items()}), count)
    rows = []
    for index, (labels, reconstruction) in enumerate(panels):
        image = to_uint8_image(batch["image"][index])
        rows.append([image, overlay(image, batch["label"][index].numpy()), labels, reconstruction])
    return save_png(image_grid(rows, titles=["image", "overlay", "labels (input)", "reconstruction"]), path)


def run_demo(out: Path = Path("runs/demo"), data_root: Path = Path("data/synthetic"),
             overrides: list[str] | None = None) -> dict:
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(DEMO_AE_CONFIG, [f"output_dir={out}", "name=ae", f"data.root={data_root}", *(overrides or [])])
    ensure_synthetic(cfg.data)
    data_seconds = time.perf_counter() - started

    train_started = time.perf_counter()
    train(cfg)
    train_seconds = time.perf_counter() - train_started

    checkpoint = load_checkpoint(cfg.run_dir / "checkpoints" / "best.pt")
    best = {key[4:]: value for key, value in checkpoint["metrics"].items() if key.startswith("val/")}
    figure = _reconstruction_figure(cfg, checkpoint, out / "ae_reconstructions.png")
    curves = plot_curves(checkpoint["history"], ["train/ce", "val/miou", "val/pixel_acc"], out / "ae_curves.png",
                         title="label autoencoder (phase one)")
    total_seconds = time.perf_counter() - started

    summary = {
        "autoencoder": {"variant": cfg.model.variant, "best_epoch": checkpoint["best_epoch"],
                        "epochs": cfg.train.epochs, "val": best, "run_dir": str(cfg.run_dir)},
        "seconds": {"data": round(data_seconds, 1), "train_ae": round(train_seconds, 1),
                    "total": round(total_seconds, 1)},
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    table = "\n".join([
        "| stage | metric | value |",
        "|---|---|---|",
        f"| phase one: autoencoder-{cfg.model.variant} | reconstruction mIoU (val) | {100 * best['miou']:.1f} |",
        f"| | pixel accuracy (val) | {100 * best['pixel_acc']:.1f} |",
        f"| | best epoch | {checkpoint['best_epoch']} / {cfg.train.epochs} |",
        f"| time | data / training / total (s) | {data_seconds:.0f} / {train_seconds:.0f} / {total_seconds:.0f} |",
    ])
    report = "\n".join([
        "# labelreg demo report", "",
        f"Synthetic scenes in `{data_root}` (real NYUv2 / VOC formats), device `{resolve_device(cfg.train.device)}`.",
        "", "## Phase one: label autoencoder", "",
        "The autoencoder sees only ground-truth label maps and must reconstruct them through a 1/16 bottleneck.",
        "", table, "",
        f"![reconstructions]({figure.name})", "", f"![curves]({curves.name})", "",
        "```", format_metrics(best, title="autoencoder reconstruction, validation split"), "```", "",
    ])
    (out / "report.md").write_text(report)
    print()
    print(table)
    print(f"\nreport: {out / 'report.md'}")
    return summary
