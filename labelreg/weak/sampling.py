"""Point sampling from localization scores (thesis §4.3.2, eqs. 4.3.3–4.3.5, Table 4.3).

All samplers work on one image at the feature grid (h×w, L = h·w locations) and
return an int64 P×3 array of points (y, x, class), foreground classes first (in
the order given), then background (class 0). Inputs:

- ``scores``: {class: h×w non-negative scores} for the classes present in the image
  (its tags), e.g. ``localization.sampling_scores``;
- ``z``: D×h×w features, standardised and unit-norm (``features.unit_norm``).

Strategies:

- ``diverse`` (eqs. 4.3.3–4.3.5): per class, x₁ = argmaxᵢ S(i,c), then
  x_k = argmaxᵢ S(i,c)·[1 − max_{k'<k} |zᵢ·z_{x_k'}|]; background points
  x^bg_k = argminᵢ max{max_{c∈F,k'} |zᵢ·z_{x^c_k'}|, max_{k''<k} |zᵢ·z_{x^bg_k''}|}.
- ``spatial``: the same two rules with feature similarity |zᵢ·zⱼ| replaced by spatial
  proximity exp(−‖pᵢ − pⱼ‖² / 2σ²), σ = ``sigma`` × the grid diagonal (Table 4.3's
  "diversity in the spatial domain"; the thesis does not give its kernel).
- ``topk``: the k highest-scoring locations per class; background: the k locations
  whose highest present-class score is lowest (the thesis does not say how top-k
  picks background; this is its score-only analogue).
- ``dense``: every location: argmax over present classes of the score, background
  where that maximum is below ``threshold`` (§4.3.2's yᵢ = bg if maxᶜ S(i,c) < τ).

Choices the equations leave open: a location is never picked twice for the same
class or for background (a picked point has similarity 1 with itself, so eq. 4.3.4
already scores it 0, but with all-zero scores it could tie); ties go to the lowest
flat index (torch's argmax/argmin); when k exceeds the free locations every free
location is taken; a location picked for two foreground classes keeps the class
with the higher score there (the other loses that point), and background never
takes a foreground point. An image without tags gets only background points, the
first at location 0 (nothing to be dissimilar to yet).
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import torch

from labelreg.config import ConfigError
from labelreg.weak.tags import BACKGROUND

STRATEGIES = ("diverse", "spatial", "topk", "dense")

Similarity = Callable[[int], torch.Tensor]  # flat index j → L-vector of similarities sim(i, j) ∈ [0, 1]


def feature_similarity(z: torch.Tensor) -> Similarity:
    """|zᵢ·zⱼ| for unit-norm D×h×w features (the absolute value of eqs. 4.3.4–4.3.5)."""
    flat = z.flatten(1).t()  # L×D
    if flat.shape[0] <= 8192:  # all pairs at once (≤ 256 MB): one product instead of one per picked point
        table = (flat @ flat.t()).abs()
        return lambda j: table[j]
    return lambda j: (flat @ flat[j]).abs()


def spatial_similarity(grid: tuple[int, int], sigma: float) -> Similarity:
    """exp(−‖pᵢ − pⱼ‖² / 2σ²) with σ = ``sigma`` × the grid diagonal (grid cells)."""
    if sigma <= 0:
        raise ConfigError(f"weak.spatial_sigma must be positive, got {sigma}")
    height, width = grid
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                            indexing="ij")
    points = torch.stack([ys.flatten(), xs.flatten()], dim=1)
    scale = 2 * (sigma * float(np.hypot(height, width))) ** 2
    return lambda j: torch.exp(-((points - points[j]) ** 2).sum(dim=1) / scale).float()


def greedy_diverse(score: torch.Tensor, similarity: Similarity, k: int) -> list[int]:
    """Eqs. 4.3.3–4.3.4 on flat L-vector scores (≥ 0): up to k distinct flat indices, in the order picked."""
    if (score < 0).any():
        raise ValueError("diverse sampling needs non-negative scores (the penalty factor multiplies them)")
    penalty = torch.zeros_like(score)  # max over picked points of the similarity, 0 before the first pick
    picked: list[int] = []
    for _ in range(min(k, score.numel())):
        value = score * (1 - penalty)
        value[picked] = -torch.inf
        j = int(value.argmax())
        picked.append(j)
        penalty = torch.maximum(penalty, similarity(j))
    return picked


def greedy_dissimilar(similarity: Similarity, size: int, foreground: list[int], k: int) -> list[int]:
    """Eq. 4.3.5: up to k flat indices, each the location least similar to every foreground point and to the
    background points picked before it; foreground points themselves are never picked."""
    closeness = torch.zeros(size)
    for j in foreground:
        closeness = torch.maximum(closeness, similarity(j))
    taken = list(dict.fromkeys(foreground))
    picked: list[int] = []
    for _ in range(min(k, size - len(taken))):
        value = closeness.clone()
        value[taken + picked] = torch.inf
        j = int(value.argmin())
        picked.append(j)
        closeness = torch.maximum(closeness, similarity(j))
    return picked


def _topk(score: torch.Tensor, k: int, *, largest: bool = True, exclude: list[int] = ()) -> list[int]:
    value = score.clone() if largest else -score
    value[list(exclude)] = -torch.inf
    order = torch.sort(value, descending=True, stable=True).indices  # stable: ties to the lowest index
    free = min(k, score.numel() - len(set(exclude)))
    return order[:free].tolist()


def _resolve(per_class: dict[int, list[int]], flat_scores: dict[int, torch.Tensor]) -> dict[int, list[int]]:
    """A location picked by several classes keeps the one scoring highest there (first class on ties)."""
    owner: dict[int, int] = {}
    for c, picked in per_class.items():
        for j in picked:
            if j not in owner or flat_scores[c][j] > flat_scores[owner[j]][j]:
                owner[j] = c
    return {c: [j for j in picked if owner[j] == c] for c, picked in per_class.items()}


def _as_points(groups: list[tuple[int, list[int]]], width: int) -> np.ndarray:
    rows = [(j // width, j % width, c) for c, picked in groups for j in picked]
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


def sample_points(strategy: str, scores: Mapping[int, torch.Tensor], z: torch.Tensor | None, *, k: int,
                  background_k: int | None = None, sigma: float = 0.1, threshold: float = 0.2) -> np.ndarray:
    """One image's P×3 (y, x, class) points; see the module docstring for the strategies."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"weak.sampler={strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if k < 1:
        raise ConfigError(f"weak.k must be at least 1, got {k}")
    if BACKGROUND in scores:
        raise ValueError("scores are for foreground classes only; background (0) is sampled by the rules")
    grid = tuple(z.shape[-2:]) if z is not None else tuple(next(iter(scores.values())).shape) if scores else None
    if grid is None:
        raise ValueError("an image without tags needs its features z to place background points")
    for c, score in scores.items():
        if tuple(score.shape) != grid:
            raise ValueError(f"class {c}: score map {tuple(score.shape)} does not match the grid {grid}")
    size, width = grid[0] * grid[1], grid[1]
    flat = {c: s.detach().float().flatten().cpu() for c, s in scores.items()}
    background_k = k if background_k is None else background_k
    if strategy == "dense":
        if not flat:
            return _as_points([(BACKGROUND, list(range(size)))], width)
        stacked = torch.stack(list(flat.values()))  # |F|×L
        best, which = stacked.max(dim=0)
        classes = torch.tensor(list(flat), dtype=torch.int64)[which]
        labels = torch.where(best < threshold, torch.zeros_like(classes), classes)
        return _as_points([(int(c), torch.nonzero(labels == c).flatten().tolist()) for c in [*flat, BACKGROUND]], width)
    if strategy == "topk":
        picked = _resolve({c: _topk(s, k) for c, s in flat.items()}, flat)
        taken = [j for p in picked.values() for j in p]
        worst = torch.stack(list(flat.values())).max(dim=0).values if flat else torch.zeros(size)
        return _as_points([*picked.items(), (BACKGROUND, _topk(worst, background_k, largest=False, exclude=taken))],
                          width)
    if z is None:
        raise ValueError(f"strategy {strategy!r} needs the features z")
    similarity = (feature_similarity(z.detach().float().cpu()) if strategy == "diverse"
                  else spatial_similarity(grid, sigma))
    raw = {c: greedy_diverse(s, similarity, k) for c, s in flat.items()}
    foreground = [j for p in raw.values() for j in p]  # eq. 4.3.5 looks at every class' picks
    background = greedy_dissimilar(similarity, size, foreground, background_k)
    return _as_points([*_resolve(raw, flat).items(), (BACKGROUND, background)], width)
