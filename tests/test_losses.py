import math

import pytest
import torch

from labelreg.losses import class_frequencies, inverse_frequency_weights, masked_cross_entropy


def test_masked_cross_entropy_known_values():
    # one image, 3 pixels, 2 classes; logits (0, 0) → p = 0.5 each; (ln 3, 0) → p(class 0) = 3/4
    logits = torch.tensor([[[[0.0, math.log(3.0), 5.0]], [[0.0, 0.0, 5.0]]]])
    target = torch.tensor([[[1, 0, 255]]])
    expected = (math.log(2) + math.log(4 / 3)) / 2  # the ignored pixel counts for nothing
    assert masked_cross_entropy(logits, target).item() == pytest.approx(expected)
    # class weights: a weighted mean, as torch defines it
    weight = torch.tensor([3.0, 1.0])
    assert masked_cross_entropy(logits, target, weight=weight).item() == pytest.approx(
        (1 * math.log(2) + 3 * math.log(4 / 3)) / 4)


def test_all_ignored_batch_gives_zero_not_nan():
    loss = masked_cross_entropy(torch.randn(2, 4, 3, 3, requires_grad=True), torch.full((2, 3, 3), 255))
    assert loss.item() == 0.0
    loss.backward()


def test_class_frequencies_and_inverse_weights():
    labels = [torch.tensor([[0, 0, 0, 1], [255, 255, 0, 1]])]  # class 0: 4 px, class 1: 2 px, class 2: none
    frequencies = class_frequencies(labels, 3)
    assert frequencies.tolist() == pytest.approx([4 / 6, 2 / 6, 0.0])
    weights = inverse_frequency_weights(frequencies)
    # 1/f = (1.5, 3, —), scaled to mean 1 over present classes: (2/3, 4/3, 0)
    assert weights.tolist() == pytest.approx([2 / 3, 4 / 3, 0.0])
    with pytest.raises(ValueError, match=r"label ids \[7\]"):
        class_frequencies([torch.tensor([7])], 3)
