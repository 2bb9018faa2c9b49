"""Point sampling rules: diverse (eqs. 4.3.3–4.3.5) against top-k, spatial and dense (Table 4.3)."""
import numpy as np
import pytest
import torch

from labelreg.config import ConfigError
from labelreg.weak.features import unit_norm
from labelreg.weak.sampling import sample_points


def clustered_map():
    """A 2×4 grid of 4-d unit features in clusters: A = e1 at flat 0, 1, 2; B = e2 at 3, 4;
    C1 = e3 at 5, 6; C2 = e4 at 7. Class 7 scores: A high, B middling, C low."""
    directions = [0, 0, 0, 1, 1, 2, 2, 3]
    z = torch.zeros(4, 2, 4)
    for flat, d in enumerate(directions):
        z[d, flat // 4, flat % 4] = 1.0
    score = torch.tensor([0.9, 0.8, 0.7, 0.5, 0.4, 0.1, 0.1, 0.1]).view(2, 4)
    return z, {7: score}


def as_set(points):
    return {tuple(int(v) for v in p) for p in points}


def test_diverse_picks_the_second_point_in_another_cluster_while_topk_stays():
    z, scores = clustered_map()
    diverse = sample_points("diverse", scores, z, k=2, background_k=2)
    topk = sample_points("topk", scores, z, k=2, background_k=2)
    # eq. 4.3.3: the best score (flat 0, cluster A); eq. 4.3.4: A is now penalised to 0, so B's best (flat 3)
    assert [tuple(p) for p in diverse[diverse[:, 2] == 7]] == [(0, 0, 7), (0, 3, 7)]
    # top-k: the two highest scores, both in cluster A
    assert [tuple(p) for p in topk[topk[:, 2] == 7]] == [(0, 0, 7), (0, 1, 7)]


def test_background_points_are_the_most_dissimilar():
    z, scores = clustered_map()
    points = sample_points("diverse", scores, z, k=2, background_k=2)
    background = [tuple(p) for p in points[points[:, 2] == 0]]
    # eq. 4.3.5: C1 and C2 are orthogonal to both foreground points; the first goes to C1's first location
    # (flat 5), the second must avoid C1 (similar to the first background point) and take C2 (flat 7)
    assert background == [(1, 1, 0), (1, 3, 0)]


def reference_diverse(score, feats, k):
    """Eqs. 4.3.3–4.3.4 written out literally (L scores, L×D unit features)."""
    picks = [int(np.argmax(score))]
    while len(picks) < k:
        values = [-np.inf if i in picks else score[i] * (1 - max(abs(feats[i] @ feats[p]) for p in picks))
                  for i in range(len(score))]
        picks.append(int(np.argmax(values)))
    return picks


def reference_background(feats, foreground, k):
    """Eq. 4.3.5 written out literally."""
    picks = []
    while len(picks) < k:
        values = []
        for i in range(len(feats)):
            if i in picks or i in foreground:
                values.append(np.inf)
                continue
            to_fg = max(abs(feats[i] @ feats[j]) for j in foreground)
            to_bg = max((abs(feats[i] @ feats[j]) for j in picks), default=0.0)
            values.append(max(to_fg, to_bg))
        picks.append(int(np.argmin(values)))
    return picks


def test_diverse_matches_the_equations_on_random_data():
    generator = torch.Generator().manual_seed(0)
    z = unit_norm(torch.randn(6, 5, 7, generator=generator, dtype=torch.float64)[None])[0]
    score = torch.rand(5, 7, generator=generator, dtype=torch.float64)
    points = sample_points("diverse", {4: score}, z, k=6, background_k=5)
    feats, flat = z.flatten(1).t().numpy(), score.flatten().numpy()
    expected_fg = reference_diverse(flat, feats, 6)
    assert [int(y) * 7 + int(x) for y, x, _ in points[points[:, 2] == 4]] == expected_fg
    expected_bg = reference_background(feats, expected_fg, 5)
    assert [int(y) * 7 + int(x) for y, x, _ in points[points[:, 2] == 0]] == expected_bg


@pytest.mark.parametrize("strategy", ["diverse", "spatial", "topk"])
def test_exactly_k_points_per_present_class_and_no_others(strategy):
    generator = torch.Generator().manual_seed(1)
    z = unit_norm(torch.randn(1, 8, 6, 8, generator=generator))[0]
    left = torch.zeros(6, 8)
    left[:, :4] = torch.rand(6, 4, generator=generator) + 0.1  # class 3 only on the left half
    scores = {3: left, 7: left.flip(-1)}  # class 7 only on the right half: no shared picks
    points = sample_points(strategy, scores, z, k=5, background_k=4)
    classes, counts = np.unique(points[:, 2], return_counts=True)
    assert dict(zip(classes.tolist(), counts.tolist())) == {0: 4, 3: 5, 7: 5}
    assert len(as_set(points[:, :2])) == len(points)  # every location at most once
    assert (points[points[:, 2] == 3][:, 1] < 4).all() and (points[points[:, 2] == 7][:, 1] >= 4).all()


def test_background_k_defaults_to_k_and_images_without_tags_get_background_only():
    z = unit_norm(torch.randn(1, 4, 3, 3, generator=torch.Generator().manual_seed(2)))[0]
    points = sample_points("diverse", {}, z, k=3)
    assert points.shape == (3, 3) and (points[:, 2] == 0).all() and tuple(points[0]) == (0, 0, 0)
    with_class = sample_points("diverse", {5: torch.rand(3, 3)}, z, k=3)
    assert (with_class[:, 2] == 0).sum() == 3


def test_k_larger_than_the_grid_takes_every_free_location():
    z = unit_norm(torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(3)))[0]
    points = sample_points("diverse", {2: torch.rand(2, 2)}, z, k=20)
    assert (points[:, 2] == 2).sum() == 4 and (points[:, 2] == 0).sum() == 0


def test_a_location_picked_by_two_classes_keeps_the_higher_score():
    z = unit_norm(torch.randn(1, 4, 2, 3, generator=torch.Generator().manual_seed(4)))[0]
    low, high = torch.full((2, 3), 0.1), torch.full((2, 3), 0.1)
    low[0, 0], high[0, 0] = 0.8, 0.9  # both classes' best location is (0, 0)
    points = sample_points("diverse", {3: low, 7: high}, z, k=1, background_k=1)
    assert as_set(points) == {(0, 0, 7), tuple(points[-1])} and points[-1][2] == 0
    assert (points[:, 2] == 3).sum() == 0


def test_spatial_diversity_moves_away_in_the_image():
    score = torch.linspace(1.0, 0.9, 10).view(1, 10)  # slowly decreasing along a 1×10 grid
    z = unit_norm(torch.randn(1, 3, 1, 10, generator=torch.Generator().manual_seed(5)))[0]
    spatial = sample_points("spatial", {1: score}, z, k=2, background_k=1, sigma=0.1)
    topk = sample_points("topk", {1: score}, z, k=2, background_k=1)
    assert [int(x) for _, x, c in topk if c == 1] == [0, 1]
    first, second = [int(x) for _, x, c in spatial if c == 1]
    assert first == 0 and second >= 3
    background = [int(x) for _, x, c in spatial if c == 0]
    assert background == [9]  # as far as possible from the foreground points


def test_dense_labels_every_location_by_argmax_and_threshold():
    a = torch.tensor([[0.9, 0.1, 0.3], [0.6, 0.0, 0.1]])
    b = torch.tensor([[0.2, 0.7, 0.1], [0.65, 0.0, 0.4]])
    points = sample_points("dense", {4: a, 9: b}, None, k=1, threshold=0.5)
    label = np.full((2, 3), -1)
    label[points[:, 0], points[:, 1]] = points[:, 2]
    assert label.tolist() == [[4, 9, 0], [9, 0, 0]]


def test_topk_background_takes_the_lowest_scores():
    score = torch.tensor([[0.9, 0.2, 0.05], [0.8, 0.01, 0.5]])
    points = sample_points("topk", {6: score}, None, k=2, background_k=2)
    assert as_set(points) == {(0, 0, 6), (1, 0, 6), (1, 1, 0), (0, 2, 0)}


def test_bad_inputs():
    z = torch.ones(2, 2, 2)
    with pytest.raises(ConfigError, match="weak.sampler"):
        sample_points("random", {1: torch.rand(2, 2)}, z, k=1)
    with pytest.raises(ConfigError, match="weak.k"):
        sample_points("diverse", {1: torch.rand(2, 2)}, z, k=0)
    with pytest.raises(ValueError, match="non-negative"):
        sample_points("diverse", {1: -torch.rand(2, 2)}, z, k=1)
    with pytest.raises(ValueError, match="does not match the grid"):
        sample_points("diverse", {1: torch.rand(3, 2)}, z, k=1)
    with pytest.raises(ValueError, match="foreground classes only"):
        sample_points("diverse", {0: torch.rand(2, 2)}, z, k=1)
    with pytest.raises(ConfigError, match="spatial_sigma"):
        sample_points("spatial", {1: torch.rand(2, 2)}, z, k=1, sigma=0)
