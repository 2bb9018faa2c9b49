"""Joint augmentation of image, label and depth, plus the CPU per-sample resizers.

``JointAugment`` works on a collated batch already on its device (GPU or CPU):
each sample gets one crop box (B×4×2 corner points, kornia's convention) that
encodes the random resized crop or scale jitter *and* the horizontal flip, and
every field is resampled through that same box with
``kornia.geometry.transform.crop_and_resize``, so the geometry is identical for
image, label and depth by construction.

Field conventions (see ``labelreg.data``): ``image`` uint8 3×H×W, ``label``
int64 H×W with 255 = ignore, ``depth`` float32 H×W metres with 0 = invalid.
Pixels that come from outside the source image are image 0 (black, as in
``FitPad``), label 255 and depth 0.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from kornia.geometry.transform import crop_and_resize

from labelreg.palette import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# A bilinear output counts as valid depth only if (almost) all of its weight comes
# from valid pixels; the slack only absorbs float rounding of the weights.
_VALID_WEIGHT = 0.999


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1)
    return mean, std


def normalize(image: torch.Tensor) -> torch.Tensor:
    """uint8 (B×)3×H×W in 0..255 → float32 ImageNet-normalised, same shape.

    Float input is taken to be on the same 0..255 scale (e.g. an interpolated image).
    """
    mean, std = _stats(image)
    return (image.float() / 255.0 - mean) / std


def denormalize(image: torch.Tensor) -> torch.Tensor:
    """Inverse of ``normalize``: float (B×)3×H×W → float32 RGB in [0, 1] (clamped)."""
    mean, std = _stats(image)
    return (image.float() * std + mean).clamp(0.0, 1.0)


def _valid_depth(depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(depth with every invalid pixel set to 0, validity as float) — NaN/inf/≤0 are invalid."""
    valid = torch.isfinite(depth) & (depth > 0)
    return torch.where(valid, depth, torch.zeros_like(depth)).float(), valid.float()


def _masked_ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """Normalised masked interpolation: num/den where den ≥ 0.999, else 0 (invalid).

    ``num`` interpolates depth·valid and ``den`` interpolates valid with the same
    weights, so num/den is a weighted mean of *valid* pixels only: an invalid 0
    can never be averaged into a valid value. Requiring den ≥ 0.999 further keeps
    only outputs whose footprint is entirely valid, so holes (often at object
    edges) and the image border are not filled in from one side.
    """
    return torch.where(den >= _VALID_WEIGHT, num / den.clamp(min=_VALID_WEIGHT), torch.zeros_like(num))


def _resize_fields(image: torch.Tensor, label: torch.Tensor | None, depth: torch.Tensor | None,
                   size: tuple[int, int], depth_interp: str = "nearest"):
    """Resize batched fields to ``size``: image float B×3×H×W bilinear (antialiased),
    label B×H×W and depth B×H×W nearest (or masked bilinear for depth).

    "nearest-exact" samples at pixel centres, matching the half-pixel geometry of
    the bilinear resize (plain "nearest" drifts by up to one source pixel).
    """
    image = F.interpolate(image.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    if label is not None:
        label = F.interpolate(label[:, None].float(), size=size, mode="nearest-exact")[:, 0].round().long()
    if depth is not None:
        depth, valid = _valid_depth(depth)
        if depth_interp == "masked_bilinear":
            both = F.interpolate(torch.stack([depth * valid, valid], 1), size=size, mode="bilinear",
                                 align_corners=False)
            depth = _masked_ratio(both[:, 0], both[:, 1])
        else:
            depth = F.interpolate(depth[:, None], size=size, mode="nearest-exact")[:, 0]
    return image, label, depth


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


class JointAugment(torch.nn.Module):
    """Random resized crop or scale jitter + horizontal flip, applied jointly to a batch.

    Input batch: ``image`` uint8 B×3×H×W, ``label`` int64 B×H×W, optional ``depth``
    float32 B×H×W, any other keys (copied through unchanged). Output: a new dict
    with ``image`` float32 B×3×h×w ImageNet-normalised, ``label`` int64 B×h×w,
    ``depth`` float32 B×h×w (0 = invalid), where (h, w) = ``out_size`` or the
    input size when ``out_size`` is None.

    Training mode (``train=True``; ``.train()``/``.eval()`` switch it, as for any
    module), per sample:

    - ``crop_area`` set: random resized crop — area fraction of the source in
      ``crop_area``, aspect ratio (width/height) log-uniform in ``crop_aspect``,
      position uniform; after 10 misfits, the central crop of the largest box with a
      clamped aspect ratio (torchvision's rule). Boxes are sub-pixel, not rounded to
      integers. The thesis phrases both recipes this way: "a crop of random size in
      the (0.08 to 1.0) [§5.4.1] / 0.5 to 2.0 [§3.5.1] range of the original size and
      a random aspect ratio of 3/4 to 4/3 of the original aspect ratio" — torchvision's
      documentation wording, whose code (and this) draws the crop's own width/height
      ratio, so the crop resized to a square is distorted by at most 4/3. When the
      upper bound exceeds 1 (§3.5.1), a box larger than the image can only be sampled
      if boxes may extend past it, so then the first draw is always used and placed
      like a scale-jitter window below (padding outside the image); torchvision's
      rejection rule would instead never sample an area above 1 and make the range
      effectively 0.5–1.0.
    - else ``scale`` set: scale jitter — resize by s ~ U(scale), then a window of
      ``out_size`` at a uniform position; i.e. a source box of out_size/s, which
      may extend past the image (padding: image 0, label 255, depth 0).
    - then, if ``hflip``, a horizontal flip with probability 0.5.

    "The source" is each image's own extent: a batch from ``pad_collate`` carries
    ``size`` (B×2, each image's H, W before it was padded at the bottom/right), and
    the crop / jitter boxes are drawn relative to that, so a crop never lands in the
    collation padding just because a larger image shares the batch. Without
    ``size`` (or with neither crop nor jitter) the whole B×3×H×W tensor is the source.

    Image is resampled bilinearly, label with nearest (never mixes classes),
    depth with nearest or ``"masked_bilinear"`` (see ``_masked_ratio``).

    Eval mode: no randomness; resize to ``out_size`` if given and different
    (image bilinear antialiased, label/depth nearest or masked bilinear), then
    normalise.

    All random numbers come from ``generator`` (must be a CPU generator; None =
    the global CPU RNG) and the boxes are moved to the batch's device, so a seeded
    generator reproduces the augmentation and nothing is read back from the device.
    """

    def __init__(self, out_size: tuple[int, int] | None, *, train: bool = True, hflip: bool = True,
                 crop_area: tuple[float, float] | None = (0.08, 1.0),
                 crop_aspect: tuple[float, float] = (3 / 4, 4 / 3),
                 scale: tuple[float, float] | None = None, depth_interp: str = "nearest",
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if depth_interp not in ("nearest", "masked_bilinear"):
            raise ValueError(f"depth_interp must be 'nearest' or 'masked_bilinear', got {depth_interp!r}")
        if crop_area is not None and scale is not None:
            raise ValueError("give either crop_area (random resized crop) or scale (scale jitter), not both")
        self.out_size = tuple(out_size) if out_size is not None else None
        self.hflip = hflip
        self.crop_area = crop_area
        self.crop_aspect = crop_aspect
        self.scale = scale
        self.depth_interp = depth_interp
        self.generator = generator
        self.train(train)

    # -- sampling (CPU) ---------------------------------------------------------

    def _sample_boxes(self, b: int, h, w, out_size: tuple[int, int] | None = None) -> torch.Tensor:
        """B×4 (x0, y0, width, height) in pixel-edge coordinates of the source, float64.

        ``h``, ``w``: the source size, numbers or per-sample B tensors (each image's own
        size; on any device, the boxes are then on that device). ``out_size``: the
        scale-jitter window (default ``self.out_size``, else the source size).
        """
        g = self.generator
        h = torch.as_tensor(h, dtype=torch.float64).expand(b)
        w = torch.as_tensor(w, dtype=torch.float64).expand(b)

        def uniform(n: int, low: float, high: float) -> torch.Tensor:
            return _uniform(n, low, high, g).to(h.device)

        def place(extent: torch.Tensor, size: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
            # Offset range covers both cases: a box inside the image, or the image
            # placed somewhere inside a larger box (padding around it).
            return torch.minimum(size - extent, torch.zeros_like(extent)) + u * (size - extent).abs()

        if self.crop_area is not None:
            tries = 10
            area = (h * w)[:, None] * uniform(b * tries, *self.crop_area).view(b, tries)
            log_lo, log_hi = math.log(self.crop_aspect[0]), math.log(self.crop_aspect[1])
            ratio = torch.exp(uniform(b * tries, log_lo, log_hi)).view(b, tries)
            cw, ch = (area * ratio).sqrt(), (area / ratio).sqrt()
            ux, uy = uniform(b, 0, 1), uniform(b, 0, 1)
            if self.crop_area[1] > 1:
                # Areas above 1 are meant (§3.5.1): take the first draw, may extend past the image.
                cw, ch = cw[:, 0], ch[:, 0]
                return torch.stack([place(cw, w, ux), place(ch, h, uy), cw, ch], dim=1)
            fits = (cw <= w[:, None]) & (ch <= h[:, None])
            first = fits.double().argmax(dim=1, keepdim=True)  # first try that fits (0 if none)
            cw, ch = cw.gather(1, first)[:, 0], ch.gather(1, first)[:, 0]
            found = fits.any(dim=1)
            # Fallback: the largest box with the aspect ratio clamped into range, centred.
            fh = torch.where(w / h < self.crop_aspect[0], w / self.crop_aspect[0], h)
            fw = torch.where(w / h > self.crop_aspect[1], h * self.crop_aspect[1], w)
            cw = torch.where(found, cw, fw)
            ch = torch.where(found, ch, fh)
            x0 = torch.where(found, ux, torch.full_like(ux, 0.5)) * (w - cw)
            y0 = torch.where(found, uy, torch.full_like(uy, 0.5)) * (h - ch)
        elif self.scale is not None:
            s = uniform(b, *self.scale)
            if out_size is None:
                out_size = self.out_size
            if out_size is None:
                ch, cw = h / s, w / s
            else:
                ch, cw = out_size[0] / s, out_size[1] / s
            x0, y0 = place(cw, w, uniform(b, 0, 1)), place(ch, h, uniform(b, 0, 1))
        else:
            x0, y0, cw, ch = torch.zeros_like(w), torch.zeros_like(h), w, h
        return torch.stack([x0, y0, cw, ch], dim=1)

    def _sample_flips(self, b: int) -> torch.Tensor:
        if not self.hflip:
            return torch.zeros(b, dtype=torch.bool)
        return torch.rand(b, generator=self.generator) < 0.5

    @staticmethod
    def corner_points(boxes: torch.Tensor, flip: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
        """B×4 (x0, y0, w, h) boxes + B flips → B×4×2 kornia corners (x, y), clockwise from top-left.

        kornia maps the corners onto the *centres* of the output's corner pixels,
        so they are the centres of the first and last output pixels in source
        pixel coordinates: x0 + (j + 0.5)·w/out_w − 0.5 for j = 0 and out_w − 1.
        The full box at the same size is then exactly the identity; a flip just
        swaps left and right.
        """
        x0, y0, bw, bh = boxes.unbind(1)
        oh, ow = out_size
        left, right = x0 + 0.5 * bw / ow - 0.5, x0 + (ow - 0.5) * bw / ow - 0.5
        top, bottom = y0 + 0.5 * bh / oh - 0.5, y0 + (oh - 0.5) * bh / oh - 0.5
        left, right = torch.where(flip, right, left), torch.where(flip, left, right)
        return torch.stack([torch.stack([left, top], 1), torch.stack([right, top], 1),
                            torch.stack([right, bottom], 1), torch.stack([left, bottom], 1)], dim=1)

    # -- application (batch device) ---------------------------------------------

    def _warp(self, batch: dict, corners: torch.Tensor, size: tuple[int, int]) -> dict:
        image = batch["image"]
        label, depth = batch.get("label"), batch.get("depth")
        corners = corners.to(device=image.device, dtype=torch.float32, non_blocking=True)
        ones = torch.ones_like(image[:, :1], dtype=torch.float32)

        # One bilinear and one nearest warp, each over all channels that need that mode.
        bilinear, nearest = [image.float()], [ones]
        if label is not None:
            nearest.append(label[:, None].float())
        if depth is not None:
            depth, valid = _valid_depth(depth)
            if self.depth_interp == "masked_bilinear":
                bilinear += [(depth * valid)[:, None], valid[:, None]]
            else:
                nearest.append(depth[:, None])
        # Bilinear uses border padding so that output pixels within half a pixel of
        # the image edge are not blended with black (as F.interpolate behaves); the
        # nearest warp's zero-padded ones channel then decides what lies outside.
        warped_n = crop_and_resize(torch.cat(nearest, 1), corners, size, mode="nearest")
        inside = warped_n[:, :1] > 0.5
        warped_b = crop_and_resize(torch.cat(bilinear, 1), corners, size, mode="bilinear", padding_mode="border")
        warped_b = torch.where(inside, warped_b, torch.zeros_like(warped_b))
        inside = inside[:, 0]

        out = dict(batch)
        out["image"] = normalize(warped_b[:, :3])
        if label is not None:
            out["label"] = torch.where(inside, warped_n[:, 1].round().long(),
                                       torch.full_like(label[:1, :1, :1], IGNORE_INDEX))
        if depth is not None:
            if self.depth_interp == "masked_bilinear":
                out["depth"] = _masked_ratio(warped_b[:, 3], warped_b[:, 4])
            else:
                out["depth"] = warped_n[:, -1]  # zeros padding already gives 0 = invalid
        return out

    def forward(self, batch: dict) -> dict:
        """Augment (train) or resize + normalise (eval) a batch dict; see the class docstring."""
        image = batch["image"]
        b, _, h, w = image.shape
        size = self.out_size or (h, w)
        if not self.training:
            out = dict(batch)
            if size == (h, w):
                out["image"] = normalize(image)
                if batch.get("depth") is not None:
                    out["depth"] = _valid_depth(batch["depth"])[0]
                return out
            img, label, depth = _resize_fields(image, batch.get("label"), batch.get("depth"), size,
                                               self.depth_interp)
            out["image"] = normalize(img)
            if label is not None:
                out["label"] = label
            if depth is not None:
                out["depth"] = depth
            return out
        sizes = batch.get("size")
        if torch.is_tensor(sizes) and (self.crop_area is not None or self.scale is not None):
            boxes = self._sample_boxes(b, sizes[:, 0], sizes[:, 1], size)
        else:
            boxes = self._sample_boxes(b, h, w, size)
        corners = self.corner_points(boxes, self._sample_flips(b).to(boxes.device), size)
        return self._warp(batch, corners, size)

    def extra_repr(self) -> str:
        return (f"out_size={self.out_size}, train={self.training}, hflip={self.hflip}, crop_area={self.crop_area}, "
                f"crop_aspect={self.crop_aspect}, scale={self.scale}, depth_interp={self.depth_interp!r}")


# -- CPU per-sample transforms (unbatched sample dicts, used inside datasets) ------

class Resize:
    """Resize a sample to exactly ``size`` = (H, W): image bilinear antialiased
    (uint8 3×H×W, rounded back to uint8), label and depth nearest (H×W)."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, sample: dict) -> dict:
        out = dict(sample)
        if tuple(sample["image"].shape[-2:]) == self.size:
            return out
        label, depth = sample.get("label"), sample.get("depth")
        image, label, depth = _resize_fields(
            sample["image"][None], None if label is None else label[None],
            None if depth is None else depth[None], self.size)
        out["image"] = image[0].round().clamp(0, 255).to(torch.uint8)
        if label is not None:
            out["label"] = label[0]
        if depth is not None:
            out["depth"] = depth[0]
        return out

    def __repr__(self) -> str:
        return f"Resize(size={self.size})"


class FitPad:
    """Scale a sample to fit inside ``size`` = (H, W) keeping its aspect ratio (up or
    down), then pad bottom/right to exactly (H, W): image 0, label 255, depth 0.

    This makes differently sized images (e.g. VOC) batchable; the padding is
    ignored by the loss and metrics because its label is 255.
    """

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, sample: dict) -> dict:
        th, tw = self.size
        h, w = sample["image"].shape[-2:]
        s = min(th / h, tw / w)
        fit = (min(th, max(1, round(h * s))), min(tw, max(1, round(w * s))))
        out = Resize(fit)(sample)
        pad = (0, tw - fit[1], 0, th - fit[0])  # (left, right, top, bottom) for the last two dims
        out["image"] = F.pad(out["image"], pad, value=0)
        if out.get("label") is not None:
            out["label"] = F.pad(out["label"], pad, value=IGNORE_INDEX)
        if out.get("depth") is not None:
            out["depth"] = F.pad(out["depth"], pad, value=0.0)
        return out

    def __repr__(self) -> str:
        return f"FitPad(size={self.size})"
