"""Mixed precision: under autocast every intermediate map of the zoom-out models is in the autocast dtype.

The zoom-out head's first layer (thesis §3.5: the 1000-unit layer over the concatenated features,
here in the projected form) produces the largest maps of the network; one float32 bias or a float32
folded weight promotes them — and everything after — to full precision. Forward hooks on every
submodule record each floating output; only the allow-list below may stay float32, each for a reason.
"""
import pytest
import torch

import labelreg  # noqa: F401  (before torchvision)
from depth.models import build_depth_model
from labelreg.models import LabelAutoencoder, build_segmenter
from labelreg.models.regularizer import DecoderRegularized, EncoderRegularized

DTYPE = torch.bfloat16
BACKBONE = {"growth_rate": 8, "block_config": [1, 1, 1, 1], "stem_channels": [8, 8, 8]}
C = 5
SIZE = (64, 80)

# output keys that may stay float32 under autocast, each with its reason; nothing else may
ALLOWED_FLOAT32 = {
    # positive_depth computes the depth in metres in float32 on purpose: bfloat16's 8-bit mantissa would
    # round 5 m to steps of 1/32 m and swallow MIN_DEPTH; it is one channel, so it costs little
    "depth": "depth regression output in metres, float32 for precision (one channel)",
    "part1_depth": "part one's depth in metres, float32 for the same reason",
}


def _allowed(where: str) -> bool:
    """``where`` names an allowed output: ``output:<key>`` or a hooked module's ``…[<key>]``."""
    return any(where == f"output:{key}" or where.endswith(f"[{key}]") for key in ALLOWED_FLOAT32)


def _floating(value, prefix=""):
    """(name, tensor) of every floating tensor in a module output (tensor, tuple/list, dict)."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            yield prefix, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _floating(item, f"{prefix}[{key}]")
    elif isinstance(value, (tuple, list)):
        for index, item in enumerate(value):
            yield from _floating(item, f"{prefix}[{index}]")


def _wrong_dtypes(model, *inputs):
    """Run ``model`` under bf16 autocast; return (where, dtype) of every float output not in the autocast dtype."""
    seen = []
    handles = [module.register_forward_hook(
        lambda module, args, output, name=name: seen.extend(
            (f"{name or '<root>'}{where}", tensor.dtype) for where, tensor in _floating(output)))
        for name, module in model.named_modules()]
    try:
        with torch.autocast("cpu", dtype=DTYPE):
            outputs = model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    top = [(f"output:{key}", tensor.dtype) for key, value in outputs.items() if key != "features"
           for _, tensor in _floating(value)]
    top += [(f"feature:{key}", tensor.dtype) for key, tensor in outputs["features"].items()]
    wrong = [(where, dtype) for where, dtype in seen + top if dtype != DTYPE and not _allowed(where)]
    return outputs, wrong


def tiny_segmenter(**options):
    torch.manual_seed(0)
    segmenter = build_segmenter("zoomout_densenet67", num_classes=C, hidden=16, backbone_options=BACKBONE, **options)
    if segmenter.head.normalize:
        with torch.no_grad():  # non-trivial statistics, as calibration would set
            segmenter.head.feature_mean.uniform_(-1, 1)
            segmenter.head.feature_std.uniform_(0.5, 2)
    return segmenter


SEGMENTERS = [{}, {"normalize": True}, {"scene": True}, {"normalize": True, "scene": True}]


@pytest.mark.parametrize("options", SEGMENTERS, ids=lambda o: "+".join(o) or "plain")
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_zoomout_segmenter_runs_in_the_autocast_dtype(options, train):
    model = tiny_segmenter(**options).train(train)
    outputs, wrong = _wrong_dtypes(model, torch.randn(2, 3, *SIZE))
    assert not wrong, wrong
    hidden = outputs["features"]["zoomout_hidden"]
    assert hidden.dtype == DTYPE and hidden.shape == (2, 16, SIZE[0] // 4, SIZE[1] // 4)


@pytest.mark.parametrize("kind", ["decoder", "encoder"])
@pytest.mark.parametrize("options", [{}, {"normalize": True, "scene": True}], ids=["plain", "normalize+scene"])
def test_regularized_segmenters_run_in_the_autocast_dtype(kind, options):
    torch.manual_seed(1)
    autoencoder = LabelAutoencoder(C, "32")
    wrapper = DecoderRegularized if kind == "decoder" else EncoderRegularized
    model = wrapper(tiny_segmenter(**options), autoencoder).train()
    outputs, wrong = _wrong_dtypes(model, torch.randn(2, 3, *SIZE))
    assert not wrong, wrong
    assert outputs["features"]["zoomout_hidden"].dtype == DTYPE
    assert outputs["aux_code" if kind == "decoder" else "aux_features"].dtype == DTYPE


@pytest.mark.parametrize("normalize", [False, True])
def test_twopart_depth_model_runs_in_the_autocast_dtype(normalize):
    torch.manual_seed(0)
    model = build_depth_model("twopart_densenet121", num_classes=C, backbone="densenet67", backbone_options=BACKBONE,
                              hidden=16, normalize=normalize).train()
    labeled = torch.tensor([True, False])
    outputs, wrong = _wrong_dtypes(model, torch.randn(2, 3, *SIZE), labeled)
    assert not wrong, wrong
    assert outputs["features"]["part2_input"].dtype == DTYPE
    # the depth outputs stay float32 on purpose (see ALLOWED_FLOAT32) and positive
    assert outputs["depth"].dtype == torch.float32 and bool((outputs["depth"] > 0).all())


def test_autocast_off_keeps_float64_exact():
    # the dtype handling only acts under autocast: in float64 the projected head still equals the literal form
    model = tiny_segmenter(normalize=True, scene=True).double().eval()
    x = torch.randn(1, 3, *SIZE, dtype=torch.float64)
    with torch.no_grad():
        taps, grid, scene = model.head_inputs(x)
        fast, literal = model.head(taps, grid, scene), model.head.forward_literal(taps, grid, scene)
    assert fast.dtype == torch.float64
    torch.testing.assert_close(fast, literal, atol=1e-10, rtol=1e-10)
