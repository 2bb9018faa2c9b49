"""Class weights of the segmentation loss (``train.loss``), from the training labels counted once per run.

- ``asymmetric`` / ``asymmetric_weighted_mean``: 1/f_c over the training pixels (thesis §3.3.2, eq. 3.3.1;
  ``losses.inverse_frequency_weights``).
- ``median_frequency``: SegNet's median frequency balancing for CamVid (Badrinarayanan et al., PAMI 2017,
  after Eigen & Fergus, ICCV 2015; ``losses.median_frequency_weights``), whose frequency of a class counts
  only the images it occurs in, so a class seen in a few images is weighted less than 1/f_c would.
"""
from __future__ import annotations

import json

import torch

from labelreg.config import Config
from labelreg.data.loader import make_loader
from labelreg.losses import class_frequencies, inverse_frequency_weights, median_frequency_weights, presence_pixels
from labelreg.palette import IGNORE_INDEX
from labelreg.runtime import all_reduce_sum, barrier, broadcast_flag, current
from labelreg.storage import write_json

WEIGHTED_LOSSES = ("asymmetric", "asymmetric_weighted_mean", "median_frequency")
FREQUENCIES_FILE = "class_frequencies.json"


def _count(cfg: Config, train_set, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixels per class, pixels of the images each class occurs in), int64, summed over every rank's shard."""
    loader = make_loader(train_set, batch_size=cfg.data.eval_batch_size, shuffle=False,  # sharded under DDP
                         num_workers=cfg.data.num_workers)
    counts = torch.zeros(num_classes, dtype=torch.int64)
    presence = torch.zeros(num_classes, dtype=torch.int64)
    for batch in loader:  # one batch in memory at a time
        valid = int((batch["label"] != IGNORE_INDEX).sum())
        if valid:  # class_frequencies checks the label ids; fraction × pixels gives back the integer counts
            counts += (class_frequencies([batch["label"]], num_classes) * valid).round().long()
            presence += presence_pixels(batch["label"], num_classes, batch.get("size"))
    return all_reduce_sum(counts), all_reduce_sum(presence)


def _read(path, key: str, num_classes: int) -> torch.Tensor:
    try:
        values = torch.tensor(json.loads(path.read_text())[key], dtype=torch.float64)
        if values.shape != (num_classes,) or not bool((values >= 0).all()):
            raise ValueError(f"expected {num_classes} non-negative numbers, got {values.tolist()[:8]}…")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RuntimeError(f"cannot read class frequencies {path} ({key}): {type(error).__name__}: {error}; delete "
                           "the file to count them again from the training labels") from error
    return values


def training_frequencies(cfg: Config, train_set, num_classes: int, *, presence: bool = False) -> torch.Tensor:
    """Class frequencies of the training labels (float64), counted once and stored in the run directory.

    ``presence``: each class' pixels over the pixels of the images it occurs in (median frequency
    balancing's frequency) instead of over all labelled pixels. The frequencies cover the whole training
    set also under torchrun (each rank counts its shard, the counts are summed over the ranks), so every
    rank trains with the same weights. Rank 0 writes ``class_frequencies.json`` atomically; every rank
    then reads it (and reads it again on resume).
    """
    path = cfg.run_dir / FREQUENCIES_FILE
    if not broadcast_flag(path.is_file()):  # rank 0 decides, so every rank joins the sum below or none does
        counts, present = _count(cfg, train_set, num_classes)
        if int(counts.sum()) == 0:
            raise ValueError("no labeled pixels in the training set: cannot compute class frequencies")
        if current().is_main:
            path.parent.mkdir(parents=True, exist_ok=True)
            by_image = torch.where(present > 0, counts.double() / present.clamp(min=1), torch.zeros(num_classes))
            write_json(path, {"frequencies": (counts.double() / counts.sum()).tolist(), "pixels": counts.tolist(),
                              "presence_frequencies": by_image.tolist(), "presence_pixels": present.tolist()})
        barrier()  # the file is complete before any rank reads it
    frequencies = _read(path, "presence_frequencies" if presence else "frequencies", num_classes)
    if not bool((frequencies <= 1).all()):
        raise RuntimeError(f"cannot read class frequencies {path}: fractions above 1; delete the file to count them "
                           "again from the training labels")
    return frequencies


def loss_class_weights(cfg: Config, train_set, num_classes: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(class weights, the frequencies they came from) for ``train.loss``; (None, None) for plain ``ce``."""
    if cfg.train.loss not in WEIGHTED_LOSSES:
        return None, None
    if cfg.train.loss == "median_frequency":
        frequencies = training_frequencies(cfg, train_set, num_classes, presence=True)
        return median_frequency_weights(frequencies), frequencies
    frequencies = training_frequencies(cfg, train_set, num_classes)
    return inverse_frequency_weights(frequencies), frequencies
