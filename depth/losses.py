"""Loss pieces for joint depth + segmentation training (thesis §5.5).

Segmentation on mixed batches needs nothing new: depth-only frames carry all-255
labels, so ``labelreg.losses.masked_cross_entropy`` gives them neither loss nor
gradient and averages over the labeled pixels only.
"""
from __future__ import annotations

import math

import torch


def masked_l1(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean |pred − target| over valid pixels, pooled over the batch.

    ``pred`` is B×1×H×W or B×H×W, ``target`` B×H×W (metres). ``valid`` (B×H×W bool)
    defaults to finite ``target > 0``; a given mask is further restricted to finite
    targets, since a NaN target can never give a finite loss. The result is 0 (not
    NaN) when no pixel is valid, and invalid pixels get exactly zero gradient.
    """
    if pred.dim() == 4:
        if pred.shape[1] != 1:
            raise ValueError(f"pred must be B×1×H×W or B×H×W, got {tuple(pred.shape)}")
        pred = pred[:, 0]
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    finite = torch.isfinite(target)
    valid = finite & (target > 0) if valid is None else finite & valid.bool()
    # Zero the invalid targets *before* subtracting: NaN there would turn into NaN
    # gradients through abs() even though torch.where discards the value.
    target = torch.where(valid, target, torch.zeros_like(target)).float()
    error = torch.where(valid, (pred.float() - target).abs(), torch.zeros_like(target))
    return error.sum() / valid.sum().clamp(min=1)


class LossBalancer:
    """Weights that make every loss term contribute equally (thesis §5.5.2.1).

    From the engine's per-epoch history (dicts holding ``f"{prefix}{term}"``: the
    epoch's mean raw, unweighted value of each term), ``weights`` averages each term
    over the last ``window`` epochs (avg_k) and returns w_k = mean_j(avg_j) / avg_k.
    Every weighted term w_k·avg_k then equals mean_j(avg_j), so the weighted total
    keeps the scale of the raw sum.

    Fallbacks (silent, by design: they are normal at the start of training): with no
    history every weight is 1; a term absent from the window, or whose average is
    non-finite or ≤ 0, gets weight 1 and is left out of mean_j. ``weights`` is a pure
    function of ``history``, so it is exact across resume.
    """

    def __init__(self, terms: list[str], *, window: int = 1, prefix: str = "train/") -> None:
        if not terms or len(set(terms)) != len(terms):
            raise ValueError(f"terms must be a non-empty list of distinct names, got {terms!r}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an int ≥ 1, got {window!r}")
        self.terms, self.window, self.prefix = list(terms), window, prefix

    def averages(self, history: list[dict[str, float]]) -> dict[str, float]:
        """Mean of each term over the last ``window`` epochs that report it (absent: not listed)."""
        recent = history[-self.window:] if history else []
        averages = {}
        for term in self.terms:
            values = [float(epoch[self.prefix + term]) for epoch in recent if self.prefix + term in epoch]
            if values:
                averages[term] = sum(values) / len(values)
        return averages

    def weights(self, history: list[dict[str, float]]) -> dict[str, float]:
        """Per-term weights for the next epoch (see the class docstring)."""
        usable = {k: v for k, v in self.averages(history).items() if math.isfinite(v) and v > 0}
        weights = {term: 1.0 for term in self.terms}
        if usable:
            target = sum(usable.values()) / len(usable)
            weights.update({term: target / avg for term, avg in usable.items()})
        return weights
