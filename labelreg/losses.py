"""Loss terms. Each returns a scalar tensor; trainers put them in a dict of named terms."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from labelreg.palette import IGNORE_INDEX


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                         weight: torch.Tensor | None = None, weighted_mean: bool = False) -> torch.Tensor:
    """Mean cross-entropy over non-ignored pixels (B×C×H×W logits, B×H×W target).

    Unlike ``F.cross_entropy`` this is 0, not NaN, for a batch whose pixels are
    all ignored (possible after an aggressive random crop), so one such batch does
    not stop training.

    With class weights ``weight`` this is the asymmetric loss of thesis §3.3.2,
    eq. 3.3.1, −(1/N) Σ_i w_{y_i} log p_i: the weighted sum divided by N, the number
    of valid pixels, so a pixel's contribution does not depend on which other pixels
    share its batch. ``weighted_mean=True`` divides by the summed weights of the
    batch's pixels instead (torch's weighted mean; ``train.loss:
    asymmetric_weighted_mean``), which rescales every batch by its own class mix.
    """
    summed = F.cross_entropy(logits.float(), target, weight=weight, ignore_index=ignore_index, reduction="sum")
    valid = target != ignore_index
    if weight is None or not weighted_mean:
        count = valid.sum()
    else:
        count = weight[torch.where(valid, target, torch.zeros_like(target))][valid].sum()
    return summed / count.clamp(min=1)


def class_frequencies(labels, num_classes: int, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Fraction of non-ignored pixels per class over an iterable of label tensors (any shape)."""
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for label in labels:
        label = label.flatten().long()
        label = label[label != ignore_index]
        if label.numel() and (label.min() < 0 or label.max() >= num_classes):
            raise ValueError(f"label ids {sorted(set(label[(label < 0) | (label >= num_classes)].tolist()))[:10]} "
                             f"outside 0..{num_classes - 1}")
        counts += torch.bincount(label, minlength=num_classes).double()
    total = counts.sum()
    if total == 0:
        raise ValueError("no labeled pixels: cannot compute class frequencies")
    return counts / total


def inverse_frequency_weights(frequencies: torch.Tensor) -> torch.Tensor:
    """Asymmetric-loss class weights 1/f_c (thesis §3.3.2, eq. 3.3.1); classes never seen get weight 0.

    Divided by K, the number of classes that occur: Σ_c f_c · 1/f_c = K, so the scaled
    weights average 1 over the training pixels and the loss stays on plain cross-entropy's
    scale (the learning rate and the regularizer's relative weight keep their meaning). A
    constant factor, so the loss is eq. 3.3.1 divided by K.
    """
    present = frequencies > 0
    weights = torch.zeros_like(frequencies, dtype=torch.float32)
    weights[present] = (1.0 / frequencies[present]).float()
    return weights / present.sum()


def presence_pixels(label: torch.Tensor, num_classes: int, sizes: torch.Tensor | None = None,
                    ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Per class, the pixels of the images it occurs in (int64, C): B×H×W labels, each image counted at its own
    size ``sizes`` (B×2 H, W before collation padding; default H×W), its ignored pixels included."""
    batch, height, width = label.shape
    areas = sizes.long().prod(dim=1) if sizes is not None else torch.full((batch,), height * width, dtype=torch.int64)
    flat = label.reshape(batch, -1).long()
    valid = flat != ignore_index
    occurs = torch.zeros(batch, num_classes + 1, dtype=torch.bool)  # one extra column collects ignored pixels
    occurs.scatter_(1, torch.where(valid, flat, num_classes).cpu(), True)
    return (occurs[:, :num_classes].long() * areas.cpu()[:, None]).sum(dim=0)


def median_frequency_weights(frequencies: torch.Tensor) -> torch.Tensor:
    """Median frequency balancing (Eigen & Fergus, ICCV 2015; SegNet's CamVid loss, PAMI 2017): w_c = median(f) / f_c,
    where f_c is class c's pixels over the pixels of the images it occurs in (``presence_pixels``). The median is
    over the classes that occur (the mean of the middle two for an even count); classes never seen get weight 0.
    Unlike ``inverse_frequency_weights`` the weights are not rescaled: the median class weighs 1."""
    present = frequencies > 0
    if not bool(present.any()):
        raise ValueError("no class occurs: cannot compute median frequency weights")
    weights = torch.zeros_like(frequencies, dtype=torch.float32)
    median = torch.quantile(frequencies[present].double(), 0.5)
    weights[present] = (median / frequencies[present].double()).float()
    return weights


def masked_one_hot_mse(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """The thesis' "†" auxiliary loss (§5.4.1: "For these experiments, we use MSE loss"): per pixel the
    squared distance between softmax(logits) and the one-hot target, summed over the C classes (between
    0 and 2), then averaged over non-ignored pixels. Averaging over classes too would shrink it by 1/C."""
    probabilities = logits.float().softmax(dim=1)
    valid = target != ignore_index
    onehot = F.one_hot(torch.where(valid, target, torch.zeros_like(target)), logits.shape[1]).permute(0, 3, 1, 2)
    squared = ((probabilities - onehot.float()) ** 2).sum(dim=1)
    return (squared * valid).sum() / valid.sum().clamp(min=1)
