"""The demo's depth figure (labelreg.viz.depth_figure): shared colour scales with bars, error columns."""
import math

import torch
from PIL import Image

from labelreg.viz import depth_figure


def test_depth_figure_layout(tmp_path):
    torch.manual_seed(0)
    truth = 1 + 4 * torch.rand(3, 32, 40)
    truth[0, :4] = 0  # no ground truth there: black in the depth panel, grey (NaN) in the error maps
    predictions = [("two-part", truth + 0.1), ("single-part", truth - 0.4)]
    layout = depth_figure(torch.rand(3, 3, 32, 40), truth, predictions, tmp_path / "depth.png", rows=6,
                          max_depth=10.0)
    assert layout["columns"] == ["image", "ground truth", "two-part", "single-part", "|two-part − truth|",
                                 "|single-part − truth|"]
    assert layout["colorbars"] == ["depth (m)", "|error| (m)"]
    assert layout["title"].startswith("Depth of validation images")  # a title line says what the figure shows
    # one shared depth scale from 0 to the largest valid ground truth shown; errors on their own scale
    assert layout["depth_range"][0] == 0 and math.isclose(layout["depth_range"][1], float(truth.max()), rel_tol=1e-6)
    assert math.isclose(layout["error_range"][1], 0.4, rel_tol=1e-3)
    with Image.open(layout["path"]) as picture:
        assert picture.size == layout["size"]
    # about 1.8 inches (180 px) per column, so titles such as "ground truth" and "two-part" do not overlap
    assert layout["size"][0] >= 180 * len(layout["columns"]) and layout["size"][1] > 3 * 180 * 32 / 40


def test_depth_figure_ignores_ground_truth_beyond_max_depth(tmp_path):
    truth = torch.full((1, 16, 16), 2.0)
    truth[0, 0, 0] = 50.0  # beyond max_depth: not ground truth
    layout = depth_figure(torch.rand(1, 3, 16, 16), truth, [("model", truth)], tmp_path / "d.png", max_depth=10.0)
    assert layout["depth_range"] == (0.0, 2.0) and layout["columns"][-1] == "|model − truth|"
