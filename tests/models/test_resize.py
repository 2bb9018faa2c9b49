"""The zoom-out head's resize: bilinear as two matrix products, the same numbers as F.interpolate."""
import pytest
import torch
import torch.nn.functional as F

from labelreg.models.zoomout import bilinear_resize, interpolation_matrix, resize_to_grid


@pytest.mark.parametrize("size_in, size_out", [((8, 8), (64, 64)), ((13, 7), (50, 33)), ((1, 1), (5, 4)),
                                               ((20, 5), (10, 9)), ((3, 5), (3, 11))])
def test_bilinear_resize_equals_interpolate_and_its_gradient(size_in, size_out):
    x = torch.randn(2, 3, *size_in, dtype=torch.float64, requires_grad=True)
    ours = bilinear_resize(x, size_out)
    reference = F.interpolate(x, size=size_out, mode="bilinear", align_corners=False)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-12)
    grad = torch.randn_like(ours)
    torch.testing.assert_close(torch.autograd.grad(ours, x, grad)[0], torch.autograd.grad(reference, x, grad)[0],
                               rtol=0, atol=1e-12)


def test_interpolation_weights_by_hand():
    # 2 → 4 with half-pixel centres: outputs read the input at -0.25 (clamped to 0), 0.25, 0.75, 1.25 (→ 1)
    expected = torch.tensor([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]], dtype=torch.float64)
    torch.testing.assert_close(interpolation_matrix(2, 4, dtype=torch.float64, device=torch.device("cpu")), expected)


def test_resize_to_grid_pools_when_shrinking_and_keeps_the_dtype_and_a_channels_last_input():
    x = torch.arange(16.).view(1, 1, 4, 4)
    torch.testing.assert_close(resize_to_grid(x, (2, 2)), torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))
    tap = torch.randn(2, 8, 4, 4).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    grown = resize_to_grid(tap, (8, 8))
    assert grown.dtype == torch.bfloat16 and grown.shape == (2, 8, 8, 8)
    torch.testing.assert_close(grown.float(), F.interpolate(tap.float(), size=(8, 8), mode="bilinear"), atol=0.05, rtol=0.02)
