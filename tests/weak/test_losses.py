"""MIL losses of the localization nets (thesis eqs. 4.3.1, 4.3.2): values by hand, gradients, routing."""
import math

import pytest
import torch

from labelreg.config import ConfigError
from labelreg.weak.localization import LocalizationNet, image_log_probs, mil_loss, sampling_scores


def scores_of(fg, bg):
    """Two h×w lists → a 1×2×h×w tensor (channel 0 = S, channel 1 = S̄)."""
    return torch.tensor([[fg, bg]], dtype=torch.float64)


# S has its maximum 2 at (1, 0); S̄ has its maximum 3 at (0, 1).
FG = [[0.0, 1.0], [2.0, -1.0]]
BG = [[0.5, 3.0], [0.0, 1.0]]


def test_global_softmax_matches_eq_4_3_2_by_hand():
    # p = max_i e^S / (max_j e^S + max_l e^S̄) = e^2 / (e^2 + e^3)
    p = math.exp(2) / (math.exp(2) + math.exp(3))
    log_p, log_not_p = image_log_probs(scores_of(FG, BG), "global_softmax")
    assert log_p.item() == pytest.approx(math.log(p))
    assert log_not_p.item() == pytest.approx(math.log(1 - p))
    present = mil_loss(scores_of(FG, BG), torch.tensor([True]), "global_softmax")
    absent = mil_loss(scores_of(FG, BG), torch.tensor([False]), "global_softmax")
    assert present.item() == pytest.approx(-math.log(p)) and absent.item() == pytest.approx(-math.log(1 - p))


def test_pixel_softmax_matches_eq_4_3_1_by_hand():
    # per-location softmax probabilities e^S / (e^S + e^S̄), then the maximum over locations
    per_location = [math.exp(s) / (math.exp(s) + math.exp(b)) for s, b in zip(sum(FG, []), sum(BG, []))]
    p = max(per_location)  # location (1, 0): 1 / (1 + e^-2)
    assert p == pytest.approx(1 / (1 + math.exp(-2)))
    log_p, log_not_p = image_log_probs(scores_of(FG, BG), "pixel_softmax")
    assert log_p.item() == pytest.approx(math.log(p)) and log_not_p.item() == pytest.approx(math.log(1 - p))
    assert mil_loss(scores_of(FG, BG), torch.tensor([False]), "pixel_softmax").item() == pytest.approx(-math.log(1 - p))


def test_batch_loss_is_the_mean_of_per_image_losses():
    torch.manual_seed(0)
    scores, present = torch.randn(3, 2, 4, 5, dtype=torch.float64), torch.tensor([True, False, True])
    for kind in ("global_softmax", "pixel_softmax"):
        each = [mil_loss(scores[i:i + 1], present[i:i + 1], kind) for i in range(3)]
        assert mil_loss(scores, present, kind).item() == pytest.approx(sum(e.item() for e in each) / 3)


@pytest.mark.parametrize("kind", ["global_softmax", "pixel_softmax"])
@pytest.mark.parametrize("tagged", [True, False])
def test_gradcheck(kind, tagged):
    torch.manual_seed(1)  # continuous random values: no ties at the maxima, where max is differentiable
    scores = torch.randn(2, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    present = torch.tensor([tagged, not tagged])
    assert torch.autograd.gradcheck(lambda s: mil_loss(s, present, kind), (scores,))


def test_gradient_reaches_two_locations_for_global_softmax_and_one_for_pixel_softmax():
    torch.manual_seed(2)
    scores = torch.randn(1, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    mil_loss(scores, torch.tensor([True]), "global_softmax").backward()
    grad = scores.grad[0]
    # one location in S (its argmax) and one in S̄ (its argmax), §4.3.1: "routes the gradient via two locations"
    assert (grad[0] != 0).sum() == 1 and (grad[1] != 0).sum() == 1
    assert grad[0].flatten().abs().argmax() == scores[0, 0].detach().flatten().argmax()
    assert grad[1].flatten().abs().argmax() == scores[0, 1].detach().flatten().argmax()
    scores.grad = None
    mil_loss(scores, torch.tensor([True]), "pixel_softmax").backward()
    grad = scores.grad[0]
    where = (scores[0, 0] - scores[0, 1]).detach().flatten().argmax()
    assert ((grad != 0).sum(dim=0) > 0).sum() == 1  # a single location, both of its scores
    assert grad[0].flatten()[where] < 0 and grad[1].flatten()[where] > 0  # raise S, lower S̄ there


def test_localization_net_shapes_and_scores():
    net = LocalizationNet(12, hidden=8)
    scores = net(torch.randn(3, 12, 5, 6))
    assert scores.shape == (3, 2, 5, 6)
    glob = sampling_scores(scores, "global_softmax")
    assert glob.shape == (3, 5, 6) and (glob > 0).all()
    assert torch.allclose(glob.flatten(1).amax(dim=1), torch.ones(3))  # exp(S - max S): 1 at the maximum
    assert torch.equal(glob.flatten(1).argmax(1), scores[:, 0].flatten(1).argmax(1))
    pixel = sampling_scores(scores, "pixel_softmax")
    assert torch.allclose(pixel, torch.softmax(scores, dim=1)[:, 0])


def test_bad_inputs():
    with pytest.raises(ConfigError, match="weak.loc_loss"):
        mil_loss(torch.zeros(1, 2, 2, 2), torch.tensor([True]), "softmax")
    with pytest.raises(ValueError, match="B×2×h×w"):
        image_log_probs(torch.zeros(1, 3, 2, 2), "global_softmax")
