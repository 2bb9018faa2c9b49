"""A tiny segmentation task trained by ``fit``; run by test_distributed.py alone or under torchrun.

    python tests/engine/ddp_worker.py OUT BATCH EPOCHS [--resume]
"""
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from labelreg.config import Config
from labelreg.data.loader import make_loader
from labelreg.engine import LoopSpec, fit, predict_batches
from labelreg.runtime import cleanup, seed_everything, training_device
from labelreg.metrics import SegMetrics


class Squares(Dataset):
    """16 images whose label is 1 where the red channel is bright, 2 where green is (no ignore pixels,
    so every rank's mean loss covers the same number of pixels)."""

    def __len__(self):
        return 16

    def __getitem__(self, index):
        generator = torch.Generator().manual_seed(index)
        image = torch.rand(3, 8, 8, generator=generator)
        label = torch.where(image[0] > 0.6, 1, torch.where(image[1] > 0.6, 2, 0))
        return {"image": image, "label": label, "index": index, "name": str(index)}


def evaluate(model, loader, device):
    metrics = SegMetrics(3, device=device)
    for batch, outputs in predict_batches(model, loader, device, lambda b: b, lambda m, b: {"seg": m(b["image"])}):
        metrics.update(outputs["seg"], batch["label"])
    result = metrics.compute()
    return {"miou": result["miou"], "pixel_acc": result["pixel_acc"]}


def main(out: str, batch_size: int, epochs: int, resume: bool) -> None:
    cfg = Config(name="ddp", task="segmentation", output_dir=out)
    cfg.train.epochs, cfg.train.log_every, cfg.train.device, cfg.train.seed = epochs, 1, "cpu", 3
    cfg.optim.optimizer, cfg.optim.lr, cfg.optim.schedule = "adam", 0.05, "constant"
    seed_everything(cfg.train.seed)
    device = training_device(cfg)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 1)).to(device)
    task = LoopSpec(model=model, augment=lambda b: b, eval_augment=lambda b: b,
                    forward=lambda m, b: {"seg": m(b["image"])},
                    losses=lambda o, b: {"ce": nn.functional.cross_entropy(o["seg"], b["label"])},
                    evaluate=evaluate)
    train_loader = make_loader(Squares(), batch_size=batch_size, shuffle=True, drop_last=True, num_workers=0,
                               seed=cfg.train.seed)
    val_loader = make_loader(Squares(), batch_size=3, shuffle=False, num_workers=0)
    last = Path(out) / "ddp" / "checkpoints" / "last.pt"
    fit(cfg, task, train_loader, val_loader, device=device, resume=last if resume else None)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), "--resume" in sys.argv)
    cleanup()
