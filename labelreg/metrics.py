"""Evaluation metrics for segmentation and depth, accumulated over a whole set
(segmentation: thesis §3.4, eq. 3.4.1; depth: thesis §5.5.1).

Both classes keep their running state as tensors on the device the predictions
live on, so ``update`` never reads values back to the host; ``compute`` does the
one read-back (and, under ``torch.distributed``, a SUM all-reduce of a copy of
the state, so calling it twice never double-counts).
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist

from labelreg.palette import IGNORE_INDEX

DEPTH_KEYS = ("rmse", "rmse_log", "abs_rel", "sq_rel", "delta1", "delta2", "delta3")

# Eigen et al.'s evaluation crop of a 480×640 NYUv2 map: rows 45:471, cols 41:601.
EIGEN_CROP_480x640 = (45, 471, 41, 601)


def _check_eagerly(device: torch.device) -> bool:
    """Whether ``update`` may inspect values now: free on CPU, a host sync elsewhere."""
    return device.type == "cpu"


def _all_reduced(state: torch.Tensor) -> torch.Tensor:
    """A copy of ``state`` summed over all ranks (just a copy when not distributed)."""
    state = state.clone()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(state, op=dist.ReduceOp.SUM)
    return state


class SegMetrics:
    """Confusion-matrix segmentation metrics: mIoU, pixel accuracy, mean class accuracy.

    ``confusion[g, p]`` counts pixels of ground-truth class ``g`` predicted as ``p``
    (int64, num_classes×num_classes). mIoU averages IoU over the classes present
    in the ground truth *or* the prediction (union > 0; eq. 3.4.1 of thesis §3.4 is
    undefined for an empty union), so a class that appears in neither does not count
    as 0 (or 1). Mean class accuracy averages
    recall over the classes present in the ground truth.

    Invalid target ids (outside [0, C) and not ``ignore_index``) raise ValueError.
    On CPU tensors the check is immediate; on an accelerator checking would need a
    host sync per batch, so the bad pixels are counted on the device instead, left
    out of the matrix, and ``compute`` raises. Integer predictions outside [0, C)
    are treated the same way.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, device=None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.reset()

    def reset(self) -> None:
        """Zero the confusion matrix."""
        c = self.num_classes
        self.confusion = torch.zeros(c, c, dtype=torch.int64, device=self.device)
        self._num_invalid = torch.zeros((), dtype=torch.int64, device=self.device)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch. pred: B×C×H×W logits or B×H×W int class ids; target: B×H×W int."""
        c = self.num_classes
        if target.dim() != 3 or target.is_floating_point():
            raise ValueError(f"target must be an integer B×H×W tensor, got {tuple(target.shape)} {target.dtype}")
        if pred.dim() == 4:
            if pred.shape[0] != target.shape[0] or pred.shape[2:] != target.shape[1:]:
                raise ValueError(f"pred shape {tuple(pred.shape)} does not match target shape {tuple(target.shape)}")
            if pred.shape[1] != c:
                raise ValueError(f"pred has {pred.shape[1]} channels, expected num_classes={c}")
            pred = pred.argmax(dim=1)
        elif pred.dim() == 3:
            if pred.shape != target.shape:
                raise ValueError(f"pred shape {tuple(pred.shape)} does not match target shape {tuple(target.shape)}")
            if pred.is_floating_point():
                raise ValueError("a B×H×W pred must hold integer class ids (pass logits as B×C×H×W)")
        else:
            raise ValueError(f"pred shape {tuple(pred.shape)} does not match target shape {tuple(target.shape)}")

        if self.confusion.device != target.device:
            # device=None: follow the data, so accumulation happens where the predictions are.
            self.confusion = self.confusion.to(target.device)
            self._num_invalid = self._num_invalid.to(target.device)
        target = target.long()
        pred = pred.to(target.device).long()
        labelled = target != self.ignore_index
        bad = labelled & ((target < 0) | (target >= c) | (pred < 0) | (pred >= c))
        if _check_eagerly(target.device) and bool(bad.any()):
            bad_t = torch.unique(target[bad & ((target < 0) | (target >= c))])[:10].tolist()
            bad_p = torch.unique(pred[bad & ((pred < 0) | (pred >= c))])[:10].tolist()
            raise ValueError(f"ids outside [0, {c}) and not ignore={self.ignore_index}: target {bad_t}, pred {bad_p}")
        keep = labelled & ~bad
        # Ignored and bad pixels go to an extra "dump" bin that is dropped, which
        # avoids boolean indexing (a host sync on accelerators).
        index = torch.where(keep, target * c + pred, torch.full_like(target, c * c))
        # scatter_add_ into a fixed-size histogram: bincount would read the maximum back to the host
        index = index.flatten()
        counts = torch.zeros(c * c + 1, dtype=torch.int64, device=index.device).scatter_add_(
            0, index, torch.ones_like(index))
        # Out of place, so state made under torch.inference_mode() can still be
        # updated outside it (and vice versa).
        self.confusion = self.confusion + counts[: c * c].view(c, c)
        self._num_invalid = self._num_invalid + bad.sum()

    def compute(self) -> dict:
        """Metrics over everything seen so far (all ranks): plain Python floats.

        Returns ``miou``, ``pixel_acc``, ``mean_class_acc`` and ``per_class_iou``
        (list, NaN for classes absent from both ground truth and prediction).
        Values are NaN when nothing has been accumulated.
        """
        state = _all_reduced(torch.cat([self.confusion.flatten(), self._num_invalid.view(1)]))
        state = state.cpu()
        c = self.num_classes
        num_invalid = int(state[-1])
        if num_invalid > 0:
            raise ValueError(f"{num_invalid} pixels had ids outside [0, {c}) that are not ignore={self.ignore_index}")
        conf = state[:-1].view(c, c).double()
        tp = conf.diag()
        gt_count, pred_count = conf.sum(1), conf.sum(0)
        union = gt_count + pred_count - tp
        nan = torch.full_like(tp, math.nan)
        iou = torch.where(union > 0, tp / union.clamp(min=1), nan)
        recall = torch.where(gt_count > 0, tp / gt_count.clamp(min=1), nan)
        total = conf.sum()
        return {
            "miou": iou.nanmean().item(),
            "pixel_acc": (tp.sum() / total).item() if total > 0 else math.nan,
            "mean_class_acc": recall.nanmean().item(),
            "per_class_iou": iou.tolist(),
        }


def eigen_crop_mask(height: int, width: int, device=None) -> torch.Tensor:
    """H×W bool mask of Eigen's crop: rows 45:471, cols 41:601 on 480×640.

    For other sizes the same fractions of the map are kept, with the bounds
    rounded to the nearest pixel (e.g. 240×320 → rows 22:236, cols 20:300), so
    a prediction evaluated at half resolution covers the same scene region.
    """
    top, bottom, left, right = EIGEN_CROP_480x640
    r0, r1 = round(top / 480 * height), round(bottom / 480 * height)
    c0, c1 = round(left / 640 * width), round(right / 640 * width)
    mask = torch.zeros(height, width, dtype=torch.bool, device=device)
    mask[r0:r1, c0:c1] = True
    return mask


class DepthMetrics:
    """Standard monocular-depth errors (metres), pixel-accumulated and per-image.

    Valid pixels: ground truth finite, > 0 and within [min_depth, max_depth]
    (inclusive; max only if set), and inside the Eigen crop if ``eigen_crop``.
    Predictions are clamped to [min_depth, max_depth or inf] first, the usual
    practice (it keeps log and ratio terms finite for non-positive predictions).

    Per pixel, with g = ground truth and p = prediction:
    ``abs_rel`` = |g−p|/g, ``sq_rel`` = (g−p)²/g, ``rmse`` = √mean((g−p)²),
    ``rmse_log`` = √mean((ln g − ln p)²), ``delta_k`` = fraction with
    max(g/p, p/g) < 1.25^k. The relative errors divide by the *ground truth*,
    following Eigen et al. and common toolkits; the thesis writes them divided
    by the prediction, which we deliberately do not follow (thesis §5.5.1).

    Two aggregations are kept (``compute()`` reports both, say which you quote):

    - ``pixel``: sums over every valid pixel of the set, divided by the total
      count (RMSE = √(total squared error / total pixels));
    - ``image``: each metric per image, then the mean over images. Images with
      no valid pixel are skipped and counted in ``skipped_images``.

    All sums are float64 on the predictions' device.
    """

    # Layout of the state vector: pixel sums (the 6 terms + count), then per-image
    # sums of the 7 final metrics, then [num_images_used, num_images_skipped].
    _TERMS = ("sq", "log_sq", "abs_rel", "sq_rel", "d1", "d2", "d3")

    def __init__(self, *, min_depth: float = 1e-3, max_depth: float | None = None,
                 eigen_crop: bool = False, device=None) -> None:
        if min_depth <= 0:
            raise ValueError(f"min_depth must be positive, got {min_depth}")
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.eigen_crop = eigen_crop
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.reset()

    def reset(self) -> None:
        """Zero all accumulators."""
        n = len(self._TERMS)
        self._state = torch.zeros(n + 1 + n + 2, dtype=torch.float64, device=self.device)

    @staticmethod
    def _as_bhw(x: torch.Tensor, name: str) -> torch.Tensor:
        if x.dim() == 4 and x.shape[1] == 1:
            return x[:, 0]
        if x.dim() != 3:
            raise ValueError(f"{name} must be B×H×W or B×1×H×W, got {tuple(x.shape)}")
        return x

    @torch.no_grad()
    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        """Add a batch. pred, gt: B×H×W or B×1×H×W depth in metres (gt 0/NaN = invalid)."""
        p, g = self._as_bhw(pred, "pred"), self._as_bhw(gt, "gt")
        if p.shape != g.shape:
            raise ValueError(f"pred shape {tuple(pred.shape)} does not match gt shape {tuple(gt.shape)}")
        if self._state.device != g.device:
            self._state = self._state.to(g.device)
        g = g.double()
        p = p.to(g.device).double()

        upper = self.max_depth if self.max_depth is not None else math.inf
        valid = torch.isfinite(g) & (g > 0) & (g >= self.min_depth) & (g <= upper)
        if self.eigen_crop:
            valid &= eigen_crop_mask(g.shape[-2], g.shape[-1], device=g.device)
        # Invalid pixels get harmless stand-ins (g = p = 1) so no NaN/inf enters the
        # masked sums; masking by multiplication avoids boolean indexing (a host sync).
        g = torch.where(valid, g, torch.ones_like(g))
        p = torch.where(valid, p.clamp(self.min_depth, upper), torch.ones_like(p))
        ratio = torch.maximum(g / p, p / g)
        err = g - p
        terms = torch.stack([
            err.square(),
            (g.log() - p.log()).square(),
            err.abs() / g,
            err.square() / g,
            (ratio < 1.25).double(),
            (ratio < 1.25 ** 2).double(),
            (ratio < 1.25 ** 3).double(),
        ], dim=1) * valid.unsqueeze(1)  # B×7×H×W
        sums = terms.sum(dim=(2, 3))  # B×7
        counts = valid.sum(dim=(1, 2)).double()  # B

        per_image = sums / counts.clamp(min=1).unsqueeze(1)
        per_image[:, :2] = per_image[:, :2].sqrt()  # mean squared → RMSE, RMSE(log)
        used = (counts > 0).double()
        self._state = self._state + torch.cat([
            sums.sum(0), counts.sum().view(1),
            (per_image * used.unsqueeze(1)).sum(0),
            used.sum().view(1), (1 - used).sum().view(1),
        ])

    def compute(self) -> dict:
        """Both aggregations over everything seen so far (all ranks), as Python numbers.

        Returns ``{"pixel": {...}, "image": {...}, "num_images", "num_pixels",
        "skipped_images", "eigen_crop"}``; the inner dicts hold ``DEPTH_KEYS``.
        ``num_images`` counts every image seen; the per-image mean is over
        ``num_images - skipped_images`` of them.
        Metrics are NaN when there were no valid pixels.
        """
        state = _all_reduced(self._state).cpu()
        n = len(self._TERMS)
        pixel_sums, num_pixels = state[:n], state[n]
        image_sums, num_images, skipped = state[n + 1: 2 * n + 1], state[2 * n + 1], state[2 * n + 2]
        pixel = (pixel_sums / num_pixels).tolist() if num_pixels > 0 else [math.nan] * n
        if num_pixels > 0:
            pixel[0], pixel[1] = math.sqrt(pixel[0]), math.sqrt(pixel[1])
        image = (image_sums / num_images).tolist() if num_images > 0 else [math.nan] * n
        return {
            "pixel": dict(zip(DEPTH_KEYS, pixel)),
            "image": dict(zip(DEPTH_KEYS, image)),
            "num_images": int(num_images + skipped),
            "num_pixels": int(num_pixels),
            "skipped_images": int(skipped),
            "eigen_crop": self.eigen_crop,
        }

    @property
    def skipped_images(self) -> int:
        """Images with no valid pixel so far (all ranks); they are left out of the per-image mean."""
        return self.compute()["skipped_images"]
