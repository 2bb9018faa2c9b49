import math

import pytest
import torch

from depth.losses import LossBalancer, masked_l1
from labelreg.losses import masked_cross_entropy


def test_masked_l1_known_values():
    pred = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]], requires_grad=True)
    target = torch.tensor([[[2.0, 2.5], [0.0, 1.0]]])  # 0 = invalid
    loss = masked_l1(pred, target)
    assert loss.item() == pytest.approx((1.0 + 0.5 + 3.0) / 3)
    loss.backward()
    assert torch.allclose(pred.grad, torch.tensor([[[-1.0, -1.0], [0.0, 1.0]]]) / 3)
    # B×1×H×W predictions are accepted; an explicit mask overrides target > 0
    valid = torch.tensor([[[True, False], [False, False]]])
    assert masked_l1(pred.detach()[:, None], target, valid).item() == pytest.approx(1.0)


def test_masked_l1_excludes_nan_and_zero_targets():
    pred = torch.full((2, 3, 3), 2.0, requires_grad=True)
    target = torch.full((2, 3, 3), 1.0)
    target[0, 0, 0], target[0, 1, 1], target[1, 2, 2] = math.nan, 0.0, math.inf
    loss = masked_l1(pred, target)
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    assert pred.grad[0, 0, 0] == 0 and pred.grad[0, 1, 1] == 0 and pred.grad[1, 2, 2] == 0
    # a user mask replaces target > 0 (the 0 target counts) but non-finite targets stay out
    assert masked_l1(pred, target, torch.ones_like(target, dtype=torch.bool)).item() == pytest.approx(17 / 16)


def test_masked_l1_all_invalid_is_zero_with_zero_grad():
    pred = torch.randn(2, 1, 4, 4, requires_grad=True)
    target = torch.zeros(2, 4, 4)
    target[0, 0, 0] = math.nan
    loss = masked_l1(pred, target)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))


def test_masked_l1_shape_errors():
    with pytest.raises(ValueError, match="shape"):
        masked_l1(torch.zeros(2, 3, 3), torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="B×1×H×W"):
        masked_l1(torch.zeros(2, 2, 3, 3), torch.zeros(2, 3, 3))


def test_depth_only_images_get_depth_but_no_segmentation_gradient():
    torch.manual_seed(0)
    n_classes, labeled = 5, torch.tensor([True, False, True, False])
    trunk = torch.nn.Conv2d(3, 8, 3, padding=1)
    seg_head, depth_head = torch.nn.Conv2d(8, n_classes, 1), torch.nn.Conv2d(8, 1, 1)
    images = torch.randn(4, 3, 6, 7, requires_grad=True)
    features = trunk(images)
    logits, depth = seg_head(features), depth_head(features)
    label = torch.randint(0, n_classes, (4, 6, 7))
    label[~labeled] = 255  # depth-only samples, as NYUv2DepthOnly returns them
    target = torch.rand(4, 6, 7) + 0.5

    seg_grad_logits, seg_grad_images = torch.autograd.grad(
        masked_cross_entropy(logits, label), (logits, images), retain_graph=True)
    assert torch.equal(seg_grad_logits[~labeled], torch.zeros_like(seg_grad_logits[~labeled]))
    assert torch.equal(seg_grad_images[~labeled], torch.zeros_like(seg_grad_images[~labeled]))
    assert (seg_grad_logits[labeled].abs().sum(dim=(1, 2, 3)) > 0).all()

    (depth_grad_images,) = torch.autograd.grad(masked_l1(depth, target), images)
    assert (depth_grad_images.abs().sum(dim=(1, 2, 3)) > 0).all()  # every image, labeled or not


def test_depth_only_batch_gives_zero_seg_loss():
    logits = torch.randn(2, 4, 3, 3, requires_grad=True)
    loss = masked_cross_entropy(logits, torch.full((2, 3, 3), 255))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_balancer_known_values():
    balancer = LossBalancer(["depth1", "seg1"])
    weights = balancer.weights([{"train/depth1": 2.0, "train/seg1": 0.5, "val/miou": 0.3}])
    assert weights == pytest.approx({"depth1": 0.625, "seg1": 2.5})
    assert weights["depth1"] * 2.0 == pytest.approx(1.25) and weights["seg1"] * 0.5 == pytest.approx(1.25)


def test_balancer_first_epoch_and_missing_terms():
    balancer = LossBalancer(["depth1", "seg1", "depth2"])
    assert balancer.weights([]) == {"depth1": 1.0, "seg1": 1.0, "depth2": 1.0}
    assert balancer.weights([{"train/depth1": 4.0, "train/seg1": 1.0}]) == pytest.approx(
        {"depth1": 0.625, "seg1": 2.5, "depth2": 1.0})


def test_balancer_window_averages_last_epochs():
    history = [{"train/a": 100.0, "train/b": 100.0},
               {"train/a": 1.0, "train/b": 3.0},
               {"train/a": 3.0, "train/b": 1.0 / 3}]
    # window 2: avg a = 2, avg b = 5/3; the first epoch is outside the window
    weights = LossBalancer(["a", "b"], window=2).weights(history)
    mean = (2.0 + 5.0 / 3) / 2
    assert weights == pytest.approx({"a": mean / 2.0, "b": mean / (5.0 / 3)})
    # window 1 only looks at the last epoch; a window longer than the history uses all of it
    assert LossBalancer(["a", "b"]).weights(history) == pytest.approx({"a": (3 + 1 / 3) / 6, "b": 5.0})
    assert LossBalancer(["a"], window=10).weights(history) == {"a": 1.0}


def test_balancer_fallbacks_and_args():
    weights = LossBalancer(["a", "b", "c", "d"]).weights(
        [{"train/a": 0.0, "train/b": math.nan, "train/c": 2.0, "train/d": 4.0}])
    assert weights == pytest.approx({"a": 1.0, "b": 1.0, "c": 1.5, "d": 0.75})
    with pytest.raises(ValueError, match="window"):
        LossBalancer(["a"], window=0)
    with pytest.raises(ValueError, match="distinct"):
        LossBalancer(["a", "a"])
