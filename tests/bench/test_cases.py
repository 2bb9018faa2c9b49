"""What the benchmark runs (labelreg.bench.cases): the trainer's loss, and torchvision's reference segmenters."""
import pytest
import torch

from labelreg.bench.cases import build_model, loss_fn, make_cases, train_config
from labelreg.losses import masked_cross_entropy
from labelreg.models.tvseg import build_torchvision_reference
from tests.bench.tiny import tiny_case, tiny_pspnet


@pytest.mark.parametrize("regularizer", [False, True])
def test_step_loss_is_the_trainers_weighted_sum(regularizer):
    torch.manual_seed(0)
    label = torch.randint(0, 5, (2, 16, 16))
    seg, psp_aux, aux = (torch.randn(2, 5, 16, 16) for _ in range(3))
    outputs = {"seg": seg, "psp_aux_seg": psp_aux, **({"aux_seg": aux} if regularizer else {})}
    loss = loss_fn(train_config(tiny_case(regularizer=regularizer)), tiny_pspnet())(outputs, label)
    expected = masked_cross_entropy(seg, label) + 0.4 * masked_cross_entropy(psp_aux, label)
    if regularizer:
        expected = expected + 0.5 * masked_cross_entropy(aux, label)
    torch.testing.assert_close(loss, expected)


def test_torchvision_outputs_get_plain_cross_entropy():
    seg, label = torch.randn(2, 5, 16, 16), torch.randint(0, 5, (2, 16, 16))
    model = build_torchvision_reference("fcn_resnet50", num_classes=5)
    loss = loss_fn(train_config(tiny_case()), model)({"seg": seg}, label)
    torch.testing.assert_close(loss, masked_cross_entropy(seg, label))


def test_torchvision_wrapper_matches_torchvision_forward():
    torch.manual_seed(0)
    wrapper = build_torchvision_reference("deeplabv3_resnet50", num_classes=3).eval()
    x = torch.randn(1, 3, 40, 48)
    with torch.no_grad():
        ours, theirs = wrapper(x), wrapper.model(x)
    assert set(theirs) == {"out"}  # aux_loss=False
    torch.testing.assert_close(ours["seg"], theirs["out"])
    assert ours["seg"].shape == (1, 3, 40, 48) and "out" in ours["features"]
    torch.testing.assert_close(ours["features"]["out"], wrapper.model.backbone(x)["out"])  # what the regularizer reads


def test_unknown_models_are_refused_by_name():
    with pytest.raises(ValueError, match="tv:deeplabv3_resnet101"):
        build_model(tiny_case(model="tv:no_such_model"))
    with pytest.raises(ValueError, match="aux-crop"):
        build_model(tiny_case(regularizer=True, aux_crop=2, dropin=True))
    with pytest.raises(ValueError, match="precision 'fp8'"):
        make_cases(["zoomout_densenet67"], precisions=["fp8"])
