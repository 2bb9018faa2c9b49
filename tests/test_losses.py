import math

import pytest
import torch

from labelreg.config import Config
from labelreg.losses import class_frequencies, inverse_frequency_weights, masked_cross_entropy, masked_one_hot_mse
from labelreg.tasks.segmentation import make_losses


def test_masked_cross_entropy_known_values():
    # one image, 3 pixels, 2 classes; logits (0, 0) → p = 0.5 each; (ln 3, 0) → p(class 0) = 3/4
    logits = torch.tensor([[[[0.0, math.log(3.0), 5.0]], [[0.0, 0.0, 5.0]]]])
    target = torch.tensor([[[1, 0, 255]]])
    expected = (math.log(2) + math.log(4 / 3)) / 2  # the ignored pixel counts for nothing
    assert masked_cross_entropy(logits, target).item() == pytest.approx(expected)


def test_all_ignored_batch_gives_zero_not_nan():
    loss = masked_cross_entropy(torch.randn(2, 4, 3, 3, requires_grad=True), torch.full((2, 3, 3), 255))
    assert loss.item() == 0.0
    loss.backward()


def test_class_frequencies_and_inverse_weights():
    labels = [torch.tensor([[0, 0, 0, 1], [255, 255, 0, 1]])]  # class 0: 4 px, class 1: 2 px, class 2: none
    frequencies = class_frequencies(labels, 3)
    assert frequencies.tolist() == pytest.approx([4 / 6, 2 / 6, 0.0])
    weights = inverse_frequency_weights(frequencies)
    # 1/f = (1.5, 3, —), divided by the 2 classes present
    assert weights.tolist() == pytest.approx([0.75, 1.5, 0.0])
    with pytest.raises(ValueError, match=r"label ids \[7\]"):
        class_frequencies([torch.tensor([7])], 3)


# ---------------------------------------------------------------------------- asymmetric loss (eq. 3.3.1)
def test_asymmetric_loss_divides_by_the_number_of_valid_pixels():
    # eq. 3.3.1: −(1/N) Σ_i (1/f_{y_i}) log p_i. Pixel 1 (class 1, weight 1): log 2; pixel 2 (class 0,
    # weight 3): 3·log(4/3); the third pixel is ignored, so N = 2 — not the summed weights, 4.
    logits = torch.tensor([[[[0.0, math.log(3.0), 5.0]], [[0.0, 0.0, 5.0]]]])
    target = torch.tensor([[[1, 0, 255]]])
    weight = torch.tensor([3.0, 1.0])
    assert masked_cross_entropy(logits, target, weight=weight).item() == pytest.approx(
        (math.log(2) + 3 * math.log(4 / 3)) / 2)
    # the weighted mean (torch's) is kept as a named option
    assert masked_cross_entropy(logits, target, weight=weight, weighted_mean=True).item() == pytest.approx(
        (math.log(2) + 3 * math.log(4 / 3)) / 4)
    # the same pixels in a batch with more of the rare class: each pixel's contribution is unchanged
    # (the weighted mean would shrink every term by the batch's summed weights)
    two = torch.cat([logits, logits[..., :1]], dim=-1), torch.cat([target, torch.tensor([[[1]]])], dim=-1)
    assert masked_cross_entropy(*two, weight=weight).item() == pytest.approx(
        (2 * math.log(2) + 3 * math.log(4 / 3)) / 3)


def test_inverse_frequency_weights_average_one_over_the_training_pixels():
    frequencies = torch.tensor([4 / 6, 2 / 6, 0.0])
    weights = inverse_frequency_weights(frequencies)
    # 1/f_c = (1.5, 3, —) divided by K = 2 classes present: the mean weight of a training pixel is 1
    assert weights.tolist() == pytest.approx([0.75, 1.5, 0.0])
    assert float((frequencies.float() * weights).sum()) == pytest.approx(1.0)


def test_make_losses_asymmetric_and_its_weighted_mean_option():
    logits = torch.tensor([[[[0.0, math.log(3.0), 5.0]], [[0.0, 0.0, 5.0]]]])
    batch = {"label": torch.tensor([[[1, 0, 255]]])}
    weight = torch.tensor([3.0, 1.0])
    cfg = Config()
    cfg.train.loss = "asymmetric"
    divided_by_n = make_losses(cfg, None, weight)({"seg": logits}, batch)["ce"].item()
    cfg.train.loss = "asymmetric_weighted_mean"
    weighted_mean = make_losses(cfg, None, weight)({"seg": logits}, batch)["ce"].item()
    assert divided_by_n == pytest.approx((math.log(2) + 3 * math.log(4 / 3)) / 2)
    assert weighted_mean == pytest.approx((math.log(2) + 3 * math.log(4 / 3)) / 4)


# ---------------------------------------------------------------------------- the "†" MSE auxiliary loss
def test_one_hot_mse_sums_over_classes_and_averages_over_valid_pixels():
    # logits (ln 2, 0, 0) → softmax (1/2, 1/4, 1/4). Target 0: 1/4 + 1/16 + 1/16 = 3/8;
    # target 1: 1/4 + 9/16 + 1/16 = 7/8; the ignored pixel counts for nothing → (3/8 + 7/8) / 2
    column = torch.tensor([math.log(2.0), 0.0, 0.0])
    logits = column[None, :, None, None].expand(1, 3, 1, 3).contiguous()
    target = torch.tensor([[[0, 1, 255]]])
    assert masked_one_hot_mse(logits, target).item() == pytest.approx(0.625)
    assert masked_one_hot_mse(torch.tensor([[[[20.0]], [[-20.0]]]]), torch.tensor([[[0]]])).item() < 1e-12
    assert masked_one_hot_mse(logits, torch.full((1, 1, 3), 255)).item() == 0.0
