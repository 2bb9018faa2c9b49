"""Loss terms. Each returns a scalar tensor; trainers put them in a dict of named terms."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from labelreg.data.palette import IGNORE_INDEX


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                         weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy over non-ignored pixels (B×C×H×W logits, B×H×W target).

    Unlike ``F.cross_entropy`` this is 0, not NaN, for a batch whose pixels are
    all ignored (possible after an aggressive random crop), so one such batch does
    not stop training. With ``weight`` the mean is over weighted pixels, as torch does.
    """
    summed = F.cross_entropy(logits.float(), target, weight=weight, ignore_index=ignore_index, reduction="sum")
    valid = target != ignore_index
    if weight is None:
        count = valid.sum()
    else:
        count = weight[torch.where(valid, target, torch.zeros_like(target))][valid].sum()
    return summed / count.clamp(min=1)
