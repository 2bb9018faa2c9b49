"""Smoke tests of the benchmark (labelreg.bench) at CI sizes: tiny models, 64×64, one timed step.

No timing assertions: only that the runs complete and report well-formed, positive numbers.
"""
import argparse
import json

import pytest
import torch

from labelreg import bench
from labelreg.bench import Case

TINY = {"hidden": 16, "backbone_options": {"growth_rate": 8, "block_config": [1, 1, 1, 1], "stem_channels": [8, 8, 8]}}
TINY_ARGS = ["--models", "zoomout_densenet67", "--model-options", json.dumps(TINY), "--batch", "2", "--size", "64x64",
             "--iters", "1", "--warmup", "1", "--num-classes", "5"]


def tiny_case(**changes):
    return Case(**{"model": "zoomout_densenet67", "batch": 2, "size": (64, 64), "num_classes": 5, "options": TINY,
                   "iters": 1, "warmup": 1, **changes})


def table_lines(text):
    return [line for line in text.splitlines() if line.startswith("| ")][2:]  # without header and rule


def test_cli_regularizer_both_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main([*TINY_ARGS, "--regularizer", "both", "--in-process", "--paired", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = table_lines(printed)
    assert len(rows) == 2 and all("zoomout_densenet67" in row and "64x64" in row for row in rows)
    assert "| no " in rows[0] and "=plain" in rows[1]  # regularizer off, then on
    assert "regularizer overhead" in printed and "paired timing" in printed

    report = json.loads(out.read_text())
    assert {"machine", "settings", "results", "rounds", "regularizer_overhead", "paired"} <= set(report)
    assert {"cpu", "cpu_count", "torch", "cuda_device"} <= set(report["machine"])
    plain, regularized = report["results"]
    assert (plain["regularizer"], regularized["regularizer"]) == (False, True)
    for row in (plain, regularized):
        assert "error" not in row
        assert row["train_img_s"] > 0 and row["train_ms"] > 0 and row["peak_mb"] >= 0 and row["params_m"] > 0
    assert plain["infer_img_s"] > 0 and "infer_img_s" not in regularized
    assert regularized["params_m"] > plain["params_m"]  # + the 1×1 conv and the frozen decoder
    assert regularized["trainable_m"] < regularized["params_m"]  # the decoder is frozen
    assert 0 < plain["train_gflop"] < regularized["train_gflop"] and plain["infer_gflop"] > 0
    (overhead,) = report["regularizer_overhead"]
    assert overhead["train_ms_with"] > 0 and overhead["train_ms_without"] > 0 and "overhead_pct" in overhead
    assert overhead["flop_overhead_pct"] > 0
    (paired,) = report["paired"]["regularizer_overhead"]
    assert len(paired["per_round"]) == 1
    assert all(len(times) == 1 and times[0] > 0 for times in report["paired"]["rounds"][0].values())


def test_isolated_case_reports_memory():
    row = bench.measure(tiny_case(), isolate=True)
    assert "error" not in row, row.get("error")
    assert row["train_img_s"] > 0 and row["infer_img_s"] > 0 and row["peak_mb"] > 0
    assert "RSS" in row["memory_method"] or "rss" in row["memory_method"]


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
    meter.baseline -= 2**40
    kept = torch.ones(64, 2**20, dtype=torch.uint8)  # 64 MB touched during the phase
    kept += 1
    assert meter.peak_mb() >= 32 or not meter.method.startswith("peak RSS")


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


def test_data_bench_without_data_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="nyu_depth_v2_labeled.mat"):
        bench.bench_data(tmp_path, workers=[0])
