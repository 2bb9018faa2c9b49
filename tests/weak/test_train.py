"""Point-supervised training: the masked loss, its equivalence with pooled points, learning, tags."""
import numpy as np
import pytest
import torch

from labelreg.weak.tags import tag_matrix, tags_from_label
from labelreg.weak.localization import LocalizationNet
from labelreg.weak.train import (PointHead, evaluate, fit_points, load_head, masked_cross_entropy, point_accuracy,
                                 save_head)

POINTS = np.array([[0, 1, 3], [2, 2, 0], [3, 0, 5]])  # (y, x, class) on a 4×5 grid


def points_to_target(points, grid):
    """P×3 (y, x, class) → (h×w int64 target, 255 off the points; h×w bool mask of the points): the map
    form of sampled points that §4.3.3's masked loss reads (training itself uses the pooled points)."""
    target = torch.full(tuple(grid), 255, dtype=torch.int64)
    pts = torch.as_tensor(np.asarray(points, dtype=np.int64)).view(-1, 3)
    target[pts[:, 0], pts[:, 1]] = pts[:, 2]
    return target, target != 255


def loss_and_grad(head, features, target, mask):
    head.zero_grad()
    loss = masked_cross_entropy(head(features), target, mask)
    loss.backward()
    return loss.item(), [p.grad.clone() for p in head.parameters()]


def test_labels_outside_the_points_change_neither_loss_nor_gradient():
    torch.manual_seed(0)
    head, features = PointHead(6, 7, hidden=5), torch.randn(1, 6, 4, 5)
    target, mask = points_to_target(POINTS, (4, 5))
    assert mask.sum() == 3 and target[0, 1] == 3 and target[1, 1] == 255
    dense = torch.randint(0, 7, (4, 5))
    dense[mask] = target[mask]  # same labels at the points, arbitrary elsewhere
    other = torch.randint(0, 7, (4, 5))
    other[mask] = target[mask]
    base_loss, base_grad = loss_and_grad(head, features, dense[None], mask[None])
    other_loss, other_grad = loss_and_grad(head, features, other[None], mask[None])
    assert base_loss == other_loss and all(torch.equal(a, b) for a, b in zip(base_grad, other_grad))
    moved = dense.clone()
    moved[0, 1] = 4  # a label at a point does matter
    assert loss_and_grad(head, features, moved[None], mask[None])[0] != pytest.approx(base_loss)


def test_masked_map_loss_equals_the_pooled_point_loss():
    torch.manual_seed(1)
    head, features = PointHead(6, 7, hidden=5), torch.randn(2, 6, 4, 5)
    targets, masks, vectors, classes = [], [], [], []
    for image, pts in enumerate([POINTS, POINTS[:2] + [1, 1, 1]]):
        target, mask = points_to_target(pts, (4, 5))
        targets.append(target), masks.append(mask)
        vectors.append(features[image][:, pts[:, 0], pts[:, 1]].t()), classes.append(torch.as_tensor(pts[:, 2]))
    on_maps = masked_cross_entropy(head(features), torch.stack(targets), torch.stack(masks))
    on_points = torch.nn.functional.cross_entropy(head(torch.cat(vectors)), torch.cat(classes))
    assert on_maps.item() == pytest.approx(on_points.item(), rel=1e-6)


def test_head_on_points_equals_head_on_maps():
    torch.manual_seed(2)
    for hidden in (0, 8):
        head, maps = PointHead(5, 3, hidden=hidden), torch.randn(2, 5, 3, 4)
        flat = maps.permute(0, 2, 3, 1).reshape(-1, 5)
        assert torch.allclose(head(flat), head(maps).permute(0, 2, 3, 1).reshape(-1, 3), atol=1e-6)


def test_void_and_empty_masks():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    target = torch.full((1, 2, 2), 255)
    loss = masked_cross_entropy(logits, target)
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(logits.grad) == 0


def test_saved_head_loads_back_and_localization_nets_share_its_layers(tmp_path):
    torch.manual_seed(3)
    maps = torch.randn(1, 5, 2, 3)
    for hidden in (0, 4):
        head = PointHead(5, 3, hidden=hidden)
        loaded = load_head(save_head(tmp_path / "new" / f"head_{hidden}.pt", head, sampler="diverse"))
        assert torch.equal(loaded(maps), head(maps)) and not loaded.training and loaded.hidden == hidden
    net = LocalizationNet(5, hidden=4)
    two = PointHead(5, 2, hidden=4)
    two.load_state_dict(net.state_dict())  # same layer names: stored nets load either way
    assert torch.equal(two(maps), net(maps))


class FakeStore:
    """What ``evaluate`` reads from a FeatureStore: length and segmentation input per image."""

    def __init__(self, maps):
        self.maps = maps

    def __len__(self):
        return len(self.maps)

    def segmentation_input(self, indices):
        return self.maps[indices]


def clustered_images(generator, count, num_classes=4, size=(6, 8), dim=10):
    """Images whose label is a random blob layout and whose features are a class centroid plus noise."""
    centroids = torch.randn(num_classes, dim, generator=generator) * 2
    labels = torch.randint(0, num_classes, (count, *size), generator=generator)
    maps = centroids[labels].permute(0, 3, 1, 2) + torch.randn(count, dim, *size, generator=generator)
    return maps, labels


def test_a_tiny_problem_learns_from_points_only():
    generator = torch.Generator().manual_seed(3)
    maps, labels = clustered_images(generator, 30)  # one draw, so training and validation share the centroids
    train_maps, train_labels, val_maps, val_labels = maps[:20], labels[:20], maps[20:], labels[20:]
    # 5 labelled points per image; everything else is never seen
    pick = torch.randint(0, 48, (20, 5), generator=generator)
    points = [np.stack([(p // 8).numpy(), (p % 8).numpy(), train_labels[i].flatten()[p].numpy()], 1)
              for i, p in enumerate(pick)]
    vectors = torch.cat([train_maps[i][:, pts[:, 0], pts[:, 1]].t() for i, pts in enumerate(points)])
    classes = torch.cat([torch.as_tensor(pts[:, 2]) for pts in points])
    torch.manual_seed(0)
    head = PointHead(10, 4, hidden=16)
    before = evaluate(head, FakeStore(val_maps), lambda i: val_labels[i])["miou"]
    history = fit_points(head, vectors, classes, epochs=30, batch_size=25, lr=0.01)
    after = evaluate(head, FakeStore(val_maps), lambda i: val_labels[i])["miou"]
    assert history[-1]["loss"] < history[0]["loss"]
    assert after > 0.8 and after > before + 0.3  # chance is ~0.14 (4 balanced classes)


def test_evaluate_upsamples_to_the_label_size():
    head = PointHead(2, 2, hidden=0)
    with torch.no_grad():
        head.body.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        head.body.bias.zero_()
    maps = torch.zeros(1, 2, 2, 2)
    maps[0, 0, :, 0], maps[0, 1, :, 1] = 5.0, 5.0  # class 0 on the left half of the grid, class 1 on the right
    label = torch.zeros(8, 8, dtype=torch.int64)
    label[:, 4:] = 1
    result = evaluate(head, FakeStore(maps), lambda i: label)
    assert result["miou"] == pytest.approx(1.0)


def test_tags_from_labels():
    label = np.array([[0, 0, 255], [7, 7, 15], [255, 0, 7]])
    assert tags_from_label(label, 21) == [7, 15]
    assert tags_from_label(torch.zeros(3, 3, dtype=torch.int64), 21) == []
    with pytest.raises(ValueError, match="outside 0..20"):
        tags_from_label(np.array([[21]]), 21)
    matrix = tag_matrix([[7, 15], [], [1]], 21)
    assert matrix.shape == (3, 21) and matrix[0, 7] and matrix[0, 15] and matrix.sum() == 3
    with pytest.raises(ValueError, match="foreground"):
        tag_matrix([[0]], 21)


def test_point_accuracy_skips_void():
    grid_labels = np.array([[[0, 3], [255, 3]]], dtype=np.uint8)
    points = [np.array([[0, 0, 0], [0, 1, 3], [1, 0, 3], [1, 1, 0]])]
    result = point_accuracy(points, grid_labels)
    assert result["point_accuracy"] == pytest.approx(2 / 3) and result["foreground_point_accuracy"] == 1.0
    assert result["background_point_accuracy"] == 0.5
