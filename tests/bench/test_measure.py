"""How the benchmark measures (labelreg.bench.measure): FLOPs, peak memory, precision and memory format.

No timing assertions: times depend on the machine; FLOPs, parameter counts and memory growth do not.
"""
import mmap
import os
import sys

import pytest
import torch
from torch import nn

from labelreg.bench import measure as bench_measure
from labelreg.bench.cases import Case, random_batch
from labelreg.bench.measure import MemoryMeter, measure, prepare, run_case, train_step_fn
from labelreg.bench.report import format_table, merge_rounds
from tests.bench.tiny import tiny_case, tiny_pspnet
from torchvision.models import segmentation  # after labelreg (labelreg._compat)

RESETTABLE = sys.platform == "linux" and os.access("/proc/self/clear_refs", os.W_OK)


class OneConv(nn.Module):
    """A segmenter that is a single 3×3 convolution, so its FLOPs can be counted by hand."""

    def __init__(self, channels_in=3, channels_out=16):
        super().__init__()
        self.conv = nn.Conv2d(channels_in, channels_out, 3, padding=1)

    def forward(self, x):
        return {"seg": self.conv(x), "features": {}}


def test_flops_of_one_convolution_are_counted_by_hand(monkeypatch):
    monkeypatch.setattr(bench_measure, "build_model", lambda case: OneConv())
    batch, height, width = 2, 128, 96
    row = run_case(Case(model="one_conv", batch=batch, size=(height, width), num_classes=16, iters=1, warmup=0))
    multiply_adds = batch * 16 * height * width * 3 * 3 * 3  # per output value: C_in · k · k
    forward = 2 * multiply_adds  # a multiply-add is 2 FLOPs; bias, loss and optimizer are not counted
    assert row["infer_gflop"] == round(forward / 1e9, 3) > 0
    # backward: the weight gradient costs one more forward; the image needs no gradient
    assert row["train_gflop"] == round(2 * forward / 1e9, 3)
    assert row["params_m"] == round((16 * 3 * 9 + 16) / 1e6, 2)


def test_isolated_case_reports_memory():
    row = measure(tiny_case(), isolate=True)
    assert "error" not in row, row.get("error")
    assert row["train_img_s"] > 0 and row["infer_img_s"] > 0 and row["peak_mb"] > 0
    if RESETTABLE:  # the resettable peak
        assert row["memory_method"] == MemoryMeter.METHODS["vmhwm"]
    else:
        assert row["memory_method"] in MemoryMeter.METHODS.values()


def test_memory_growth_is_never_negative():
    meter = MemoryMeter(torch.device("cpu"))
    meter.baseline += 2**40  # as if the process had released memory since the baseline was taken
    meter.start_phase()
    assert meter.peak_mb() == 0.0


def _touch_fresh_pages(megabytes):
    """Fresh pages from the kernel: a tensor could reuse memory earlier tests freed, which is resident already."""
    pages = mmap.mmap(-1, megabytes * 2**20)
    for offset in range(0, len(pages), mmap.PAGESIZE):
        pages[offset] = 1
    return pages


@pytest.mark.skipif(not RESETTABLE, reason="no resettable peak RSS on this platform (/proc/self/clear_refs)")
def test_resettable_peak_measures_a_phase():
    meter = MemoryMeter(torch.device("cpu"), kind="vmhwm")
    meter.start_phase()
    pages = _touch_fresh_pages(64)
    first = meter.peak_mb()
    pages.close()
    meter.start_phase()  # the next phase does not see the first one's peak
    second = meter.peak_mb()
    assert first >= 60 and second < first - 32


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the current RSS is read from /proc/self/status")
def test_maxrss_measures_growth_past_the_old_peak():
    """The fallback where the peak cannot be reset: ``ru_maxrss`` grows only once the process exceeds its
    earlier peak (here, that of earlier tests; in ``run_isolated``'s fresh process, at least the parent's RSS
    when it was forked), so touch that gap plus 64 MB."""
    meter = MemoryMeter(torch.device("cpu"), kind="maxrss")
    assert meter.method == MemoryMeter.METHODS["maxrss"]
    meter.start_phase()
    gap_mb = max(0, meter.baseline - bench_measure._proc_status_kb("VmRSS") * 1024) // 2**20
    pages = _touch_fresh_pages(gap_mb + 64)
    grown = meter.peak_mb()
    pages.close()
    assert 48 <= grown <= 64 + 16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_peak_measures_a_phase():
    device = torch.device("cuda")
    meter = MemoryMeter(device)
    assert meter.kind == "cuda"
    meter.start_phase()
    block = torch.ones(64 * 2**20 // 4, device=device)  # 64 MB of float32
    first = meter.peak_mb()
    del block
    meter.start_phase()
    assert first >= 64 and meter.peak_mb() < 1


@pytest.mark.parametrize("precision,channels_last,regularizer",
                         [("bf16", True, False), ("fp16", False, False), ("bf16", False, True), ("fp16", True, True)])
def test_amp_and_channels_last(precision, channels_last, regularizer):
    case = tiny_case(precision=precision, channels_last=channels_last, regularizer=regularizer, warmup=0, infer=False)
    row = measure(case, isolate=False)
    assert "error" not in row, row.get("error")
    assert row["train_img_s"] > 0 and row["precision"] == precision and row["channels_last"] is channels_last
    # the step really computes in the case's precision and memory format; the regularizer's decoder
    # always runs channels-last (LabelDecoder.decode_to)
    device = torch.device("cpu")
    model, runnable, image, label = prepare(case, device)
    outputs, decoder_outputs = [], []
    first_conv = next(module for module in model.modules() if isinstance(module, nn.Conv2d))
    first_conv.register_forward_hook(lambda module, inputs, output: outputs.append(output))
    if regularizer:
        model.decoder.classifier.register_forward_hook(lambda module, inputs, output: decoder_outputs.append(output))
    train_step_fn(model.train(), case, image, label, device, forward=runnable)()
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    (output,) = outputs
    assert output.dtype == amp_dtype
    assert output.is_contiguous(memory_format=torch.channels_last) is channels_last
    assert image.is_contiguous(memory_format=torch.channels_last) is channels_last
    if regularizer:
        (logits,) = decoder_outputs
        assert logits.dtype == amp_dtype and logits.is_contiguous(memory_format=torch.channels_last)
        assert all(p.grad is not None for p in model.to_code.parameters())  # the branch was trained


def test_regularizer_flops_scale_with_the_aux_crop():
    """The decoder runs on a CELLS×CELLS window of the code: at 64×64 the code is 4×4 cells, so crop 2
    decodes a quarter of it (the decoder's cost is proportional to the area it decodes)."""
    plain, full, crop = (measure(tiny_case(infer=False, warmup=0, **changes), isolate=False)
                         for changes in ({}, {"regularizer": True}, {"regularizer": True, "aux_crop": 2}))
    assert all("error" not in row for row in (plain, full, crop))
    assert crop["aux_crop"] == 2 and crop["train_img_s"] > 0
    assert plain["train_gflop"] < crop["train_gflop"] < full["train_gflop"]
    decoder_full, decoder_crop = full["train_gflop"] - plain["train_gflop"], crop["train_gflop"] - plain["train_gflop"]
    assert decoder_crop == pytest.approx(decoder_full / 4, abs=0.005)


def test_pspnet_step_trains_its_auxiliary_head():
    torch.manual_seed(0)
    model = tiny_pspnet().train()
    case = tiny_case(model="pspnet_resnet50")
    image, label = random_batch(case, torch.device("cpu"))
    train_step_fn(model, case, image, label, torch.device("cpu"))()
    assert all(p.grad is not None for p in model.aux_head.parameters())  # psp_aux is part of the loss


def test_torchvision_reference_rows():
    case = Case(model="tv:fcn_resnet50", batch=2, size=(64, 64), num_classes=5, iters=1, warmup=0)
    row = measure(case, isolate=False)
    assert "error" not in row, row.get("error")
    assert row["train_img_s"] > 0 and row["infer_img_s"] > 0 and row["params_m"] > 20
    reference = segmentation.fcn_resnet50(weights=None, weights_backbone=None, num_classes=5, aux_loss=False)
    assert row["params_m"] == row["trainable_m"] == round(sum(p.numel() for p in reference.parameters()) / 1e6, 2)
    assert 0 < row["infer_gflop"] < row["train_gflop"]


def test_failing_case_is_a_row_not_a_crash(capsys):
    rows = [measure(Case(model="no_such_model", iters=1, warmup=0), isolate=False),
            measure(Case(model="tv:no_such_model", iters=1, warmup=0), isolate=False)]
    assert all("error" in row for row in rows)
    assert "error" in format_table(merge_rounds([{**row, "round": 1} for row in rows]))
