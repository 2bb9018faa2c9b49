"""Smoke tests of the benchmark (labelreg.bench) at CI sizes: tiny models, 64×64, one timed step.

No timing assertions: only that the runs complete and report well-formed, positive numbers.
"""
import argparse
import json
import mmap
import os
import sys

import pytest
import torch

from labelreg import bench
from labelreg.bench import Case
from labelreg.losses import masked_cross_entropy
from labelreg.models import PSPNet
from labelreg.models.backbones import build_backbone

TINY = {"hidden": 16, "backbone_options": {"growth_rate": 8, "block_config": [1, 1, 1, 1], "stem_channels": [8, 8, 8]}}
TINY_ARGS = ["--models", "zoomout_densenet67", "--model-options", json.dumps(TINY), "--batch", "2", "--size", "64x64",
             "--iters", "1", "--warmup", "1", "--num-classes", "5"]


def tiny_case(**changes):
    return Case(**{"model": "zoomout_densenet67", "batch": 2, "size": (64, 64), "num_classes": 5, "options": TINY,
                   "iters": 1, "warmup": 1, **changes})


def table_lines(text):
    return [line for line in text.splitlines() if line.startswith("| ")][2:]  # without header and rule


def cell(line, column):
    """The stripped cell of ``column`` (a name in bench.TABLE_COLUMNS) in a printed table row."""
    return line.strip("|").split("|")[bench.TABLE_COLUMNS.index(column)].strip()


def tiny_pspnet(num_classes=5):
    return PSPNet(build_backbone("densenet67", **TINY["backbone_options"]), num_classes, head_width=16)


def test_cli_regularizer_both_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main([*TINY_ARGS, "--regularizer", "both", "--in-process", "--paired", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = table_lines(printed)
    assert len(rows) == 2 and all("zoomout_densenet67" in row and "64x64" in row for row in rows)
    assert [cell(row, "regularizer") for row in rows] == ["no", "yes"]
    assert cell(rows[1], "infer img/s") == "=plain"
    assert "regularizer overhead" in printed and "paired timing" in printed

    report = json.loads(out.read_text())
    assert {"machine", "settings", "results", "rounds", "regularizer_overhead", "paired"} <= set(report)
    assert {"cpu", "cpu_count", "torch", "cuda_device"} <= set(report["machine"])
    plain, regularized = report["results"]
    assert (plain["regularizer"], regularized["regularizer"]) == (False, True)
    for row in (plain, regularized):
        assert "error" not in row
        assert row["train_img_s"] > 0 and row["train_ms"] > 0 and isinstance(row["peak_mb"], float)
        assert row["params_m"] > 0
    assert plain["infer_img_s"] > 0 and "infer_img_s" not in regularized
    assert regularized["params_m"] > plain["params_m"]  # + the 1×1 conv and the frozen decoder
    assert regularized["trainable_m"] < regularized["params_m"]  # the decoder is frozen
    assert 0 < plain["train_gflop"] < regularized["train_gflop"] and plain["infer_gflop"] > 0
    (overhead,) = report["regularizer_overhead"]
    assert (overhead["train_ms_without"], overhead["train_ms_with"]) == (plain["train_ms"], regularized["train_ms"])
    expected = 100 * (regularized["train_ms"] / plain["train_ms"] - 1)
    assert overhead["overhead_pct"] == pytest.approx(expected, abs=0.05)
    assert overhead["flop_overhead_pct"] > 0
    (paired,) = report["paired"]["regularizer_overhead"]
    assert len(paired["per_round"]) == 1
    assert all(len(times) == 1 and times[0] > 0 for times in report["paired"]["rounds"][0].values())


def test_isolated_case_reports_memory():
    row = bench.measure(tiny_case(), isolate=True)
    assert "error" not in row, row.get("error")
    assert row["train_img_s"] > 0 and row["infer_img_s"] > 0 and row["peak_mb"] > 0
    if sys.platform == "linux" and os.access("/proc/self/clear_refs", os.W_OK):  # the resettable peak
        assert row["memory_method"] == bench.MemoryMeter.METHODS["vmhwm"]
    else:
        assert row["memory_method"] in bench.MemoryMeter.METHODS.values()


def test_regularizer_with_aux_crop_is_its_own_row(capsys):
    assert bench.main([*TINY_ARGS, "--regularizer", "on", "--aux-crop", "2", "--in-process", "--no-infer"]) == 0
    rows = table_lines(capsys.readouterr().out)
    assert len(rows) == 1 and "| crop 2 " in rows[0]
    row = bench.measure(tiny_case(regularizer=True, aux_crop=2, infer=False), isolate=False)
    assert "error" not in row and row["aux_crop"] == 2 and row["train_img_s"] > 0


def test_memory_growth_is_never_negative():
    meter = bench.MemoryMeter(torch.device("cpu"))
    meter.baseline += 2**40  # as if the process had released memory since the baseline was taken
    meter.start_phase()
    assert meter.peak_mb() == 0.0
    if meter.kind != "vmhwm":
        return
    meter.start_phase()
    meter.baseline = bench._proc_status_kb("VmRSS") * 1024
    # fresh pages from the kernel: a tensor could reuse memory earlier tests freed, which is resident already
    pages = mmap.mmap(-1, 64 * 2**20)
    for offset in range(0, len(pages), mmap.PAGESIZE):
        pages[offset] = 1
    assert meter.peak_mb() >= 32
    pages.close()


def test_pspnet_step_trains_its_auxiliary_head():
    torch.manual_seed(0)
    model = tiny_pspnet().train()
    case = tiny_case(model="pspnet_resnet50")
    image, label = bench.random_batch(case, torch.device("cpu"))
    bench.train_step_fn(model, case, image, label, torch.device("cpu"))()
    assert all(p.grad is not None for p in model.aux_head.parameters())  # psp_aux is part of the loss


@pytest.mark.parametrize("regularizer", [False, True])
def test_step_loss_is_the_trainers_weighted_sum(regularizer):
    torch.manual_seed(0)
    label = torch.randint(0, 5, (2, 16, 16))
    seg, psp_aux, aux = (torch.randn(2, 5, 16, 16) for _ in range(3))
    outputs = {"seg": seg, "psp_aux_seg": psp_aux, **({"aux_seg": aux} if regularizer else {})}
    loss = bench.loss_fn(bench.train_config(tiny_case(regularizer=regularizer)), tiny_pspnet())(outputs, label)
    expected = masked_cross_entropy(seg, label) + 0.4 * masked_cross_entropy(psp_aux, label)
    if regularizer:
        expected = expected + 0.5 * masked_cross_entropy(aux, label)
    torch.testing.assert_close(loss, expected)


def test_torchvision_outputs_get_plain_cross_entropy():
    seg, label = torch.randn(2, 5, 16, 16), torch.randint(0, 5, (2, 16, 16))
    model = bench.build_torchvision("fcn_resnet50", num_classes=5)
    loss = bench.loss_fn(bench.train_config(tiny_case()), model)({"seg": seg}, label)
    torch.testing.assert_close(loss, masked_cross_entropy(seg, label))


@pytest.mark.parametrize("precision,channels_last", [("bf16", True), ("fp16", False)])
def test_amp_and_channels_last(precision, channels_last):
    row = bench.measure(tiny_case(precision=precision, channels_last=channels_last, warmup=0, infer=False),
                        isolate=False)
    assert "error" not in row, row.get("error")
    assert row["train_img_s"] > 0 and row["precision"] == precision and row["channels_last"] is channels_last


def test_torchvision_reference_rows():
    case = Case(model="tv:fcn_resnet50", batch=2, size=(64, 64), num_classes=5, iters=1, warmup=0)
    row = bench.measure(case, isolate=False)
    assert "error" not in row, row.get("error")
    assert row["train_img_s"] > 0 and row["infer_img_s"] > 0 and row["params_m"] > 20


def test_torchvision_wrapper_matches_torchvision_forward():
    torch.manual_seed(0)
    wrapper = bench.build_torchvision("deeplabv3_resnet50", num_classes=3).eval()
    x = torch.randn(1, 3, 40, 48)
    with torch.no_grad():
        ours, theirs = wrapper(x), wrapper.model(x)
    assert set(theirs) == {"out"}  # aux_loss=False
    torch.testing.assert_close(ours["seg"], theirs["out"])
    assert ours["seg"].shape == (1, 3, 40, 48) and "out" in ours["features"]


def test_failing_case_is_a_row_not_a_crash(capsys):
    rows = [bench.measure(Case(model="no_such_model", iters=1, warmup=0), isolate=False),
            bench.measure(Case(model="tv:no_such_model", iters=1, warmup=0), isolate=False)]
    assert all("error" in row for row in rows)
    assert "error" in bench.format_table(bench.merge_rounds([{**row, "round": 1} for row in rows]))


def test_presets_and_subcommand():
    commands = argparse.ArgumentParser(prog="labelreg").add_subparsers(dest="command")
    bench.register(commands)
    parser = commands.choices["bench"]
    args = parser.parse_args(["--preset", "zoomout-vs-dilated"])
    assert args.run is bench.run_from_args
    cases = bench.cases_from_args(args)
    assert [c.model for c in cases] == ["zoomout_resnet101", "tv:deeplabv3_resnet101"]
    assert all(c.batch == 2 and c.size == (256, 256) and c.num_classes == 21 and not c.regularizer for c in cases)
    cases = bench.cases_from_args(parser.parse_args(["--preset", "regularizer-overhead", "--iters", "4"]))
    assert [(c.model, c.regularizer) for c in cases] == [("zoomout_densenet121", False), ("zoomout_densenet121", True),
                                                         ("zoomout_resnet101", False), ("zoomout_resnet101", True)]
    args = parser.parse_args(["--models", "zoomout_densenet121", "tv:deeplabv3_resnet50", "--batch", "2", "--size",
                              "256x256", "--precision", "fp32", "bf16", "--channels-last", "--regularizer", "both"])
    assert len(bench.cases_from_args(args)) == 2 * 2 * 2 and all(c.channels_last for c in bench.cases_from_args(args))
    with pytest.raises(ValueError, match="--models"):
        bench.cases_from_args(parser.parse_args([]))


def test_zoomout_vs_dilated_summary_ratios():
    rows = [{"model": "zoomout_resnet101", "train_ms": 100.0, "peak_mb": 500.0, "infer_ms": 30.0, "round": 1},
            {"model": "tv:deeplabv3_resnet101", "train_ms": 400.0, "peak_mb": 1000.0, "infer_ms": 90.0, "round": 1}]
    report = {"results": rows, "rounds": rows}
    summary = bench.zoomout_vs_dilated_summary(report, [])
    assert summary["time_ratio"] == 0.25 and summary["memory_ratio"] == 0.5
    assert summary["time_target_met"] and summary["lighter_in_memory"]


def test_data_bench_on_tiny_synthetic(tiny_synthetic, tmp_path, capsys):
    out = tmp_path / "data.json"
    assert bench.main(["--data", "nyu", "--data-root", str(tiny_synthetic.root), "--workers", "0", "--data-batch",
                       "2", "--data-images", "8", "--json", str(out)]) == 0
    rows = table_lines(capsys.readouterr().out)
    assert len(rows) == 2 and "nyu-mat" in rows[0] and "nyu-depth-only" in rows[1]
    report = json.loads(out.read_text())
    assert set(report["source"]) == {"mat", "depth_only"}
    for row in report["data"]:
        assert row["workers"] == 0 and row["images"] == 8 and row["HxW"] == "64x80"
        assert row["epoch_img_s"] > 0 and row["img_s"] > 0


def test_data_bench_on_written_synthetic_data():
    synthetic = {"labeled": 2, "depth_only": 2, "size": (32, 48)}
    report = bench.bench_data(workers=[0], batch=2, images=4, synthetic=synthetic, progress=False)
    assert report["source"].startswith("synthetic") and [r["reader"] for r in report["data"]] == ["nyu-mat",
                                                                                                  "nyu-depth-only"]
    assert all(row["HxW"] == "32x48" and row["images"] == 4 for row in report["data"])


def test_nyu_sources_search_root_and_nyu(tiny_synthetic, tmp_path):
    assert bench.nyu_sources(tiny_synthetic.root) == {"mat": tiny_synthetic.nyu_mat,
                                                      "depth_only": tiny_synthetic.depth_only_dir}
    assert bench.nyu_sources(tiny_synthetic.root, depth_only=tmp_path)["depth_only"] == tmp_path
    assert bench.nyu_sources(tmp_path) == {}


def test_data_bench_without_data_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="nyu_depth_v2_labeled.mat"):
        bench.bench_data(tmp_path, workers=[0])
