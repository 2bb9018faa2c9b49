"""``labelreg bench`` and ``scripts/benchmark.py`` (labelreg.bench.cli), and the report they print and write."""
import argparse
import json

import pytest

from labelreg import cli
from labelreg.bench.cli import cases_from_args, main, register, run_from_args
from labelreg.bench.report import zoomout_vs_dilated_summary
from tests.bench.tiny import TINY, TINY_ARGS, cell, table_lines


def test_cli_regularizer_both_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main([*TINY_ARGS, "--regularizer", "both", "--in-process", "--paired", "--json", str(out)]) == 0
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
    for row in (plain, regularized, *report["rounds"]):
        assert "error" not in row
        assert row["train_img_s"] > 0 and row["train_ms"] > 0 and isinstance(row["peak_mb"], float)
        assert row["params_m"] > 0
        assert row["train_img_s"] == pytest.approx(2 * 1000 / row["train_ms"], rel=1e-3, abs=1e-3)  # batch / median
    assert plain["infer_img_s"] > 0 and "infer_img_s" not in regularized
    assert regularized["params_m"] > plain["params_m"]  # + the 1×1 conv and the frozen decoder
    assert regularized["trainable_m"] < regularized["params_m"]  # the decoder is frozen
    assert 0 < plain["train_gflop"] < regularized["train_gflop"] and plain["infer_gflop"] > 0
    (overhead,) = report["regularizer_overhead"]
    assert (overhead["train_ms_without"], overhead["train_ms_with"]) == (plain["train_ms"], regularized["train_ms"])
    expected = 100 * (regularized["train_ms"] / plain["train_ms"] - 1)
    assert overhead["overhead_pct"] == pytest.approx(expected, abs=0.05)
    expected = 100 * (regularized["train_gflop"] / plain["train_gflop"] - 1)
    assert overhead["flop_overhead_pct"] == pytest.approx(expected, abs=0.05) and expected > 0
    (paired,) = report["paired"]["regularizer_overhead"]
    assert len(paired["per_round"]) == 1
    assert all(len(times) == 1 and times[0] > 0 for times in report["paired"]["rounds"][0].values())


def test_regularizer_with_aux_crop_is_its_own_row(capsys):
    assert main([*TINY_ARGS, "--regularizer", "on", "--aux-crop", "2", "--in-process", "--no-infer"]) == 0
    rows = table_lines(capsys.readouterr().out)
    assert len(rows) == 1 and "| crop 2 " in rows[0]


def test_preset_through_the_labelreg_command(tmp_path, capsys):
    """``labelreg bench --preset regularizer-overhead`` with a tiny model instead of the preset's two (the
    preset still sets the regularizer off/on pairs and turns paired timing on), so it runs in seconds."""
    out = tmp_path / "preset.json"
    assert cli.main(["bench", "--preset", "regularizer-overhead", *TINY_ARGS, "--warmup", "0", "--no-infer",
                     "--in-process", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = table_lines(printed)
    assert [(cell(row, "model"), cell(row, "regularizer")) for row in rows] == [("zoomout_densenet67", "no"),
                                                                               ("zoomout_densenet67", "yes")]
    assert "regularizer overhead (target ≤ 10%), zoomout_densenet67 b2 64x64 fp32:" in printed
    assert "regularizer overhead (target ≤ 10%), paired timing," in printed
    report = json.loads(out.read_text())
    assert report["preset"] == "regularizer-overhead" and report["settings"]["isolated"] is False
    plain, regularized = report["results"]
    (paired,) = report["paired"]["regularizer_overhead"]
    times = report["paired"]["rounds"][0]
    labels = [label for label in times if "+reg" in label], [label for label in times if "+reg" not in label]
    expected = 100 * (times[labels[0][0]][0] / times[labels[1][0]][0] - 1)  # one step each: the step ratio
    assert paired["overhead_pct"] == pytest.approx(expected, abs=0.05)
    assert regularized["train_gflop"] > plain["train_gflop"] > 0


@pytest.mark.slow
def test_zoomout_vs_dilated_preset_through_the_labelreg_command(tmp_path, capsys):
    """``labelreg bench --preset zoomout-vs-dilated`` with its real models (at 32×32, one step): the
    zoom-out / dilated summary, whose FLOP ratio is the thesis' cost claim (§3.5.1) in machine-independent form."""
    out = tmp_path / "preset.json"
    assert cli.main(["bench", "--preset", "zoomout-vs-dilated", "--model-options", json.dumps({"hidden": 16}),
                     "--size", "32x32", "--iters", "1", "--warmup", "0", "--in-process", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = table_lines(printed)
    assert [cell(row, "model") for row in rows] == ["zoomout_resnet101", "tv:deeplabv3_resnet101"]
    assert "zoomout_resnet101 / tv:deeplabv3_resnet101: training step time ratio" in printed

    report = json.loads(out.read_text())
    assert report["preset"] == "zoomout-vs-dilated" and report["settings"]["iters"] == 1
    zoomout, dilated = report["results"]
    assert all("error" not in row for row in (zoomout, dilated))
    summary = report["zoomout_vs_dilated"]
    assert summary["time_ratio"] == round(zoomout["train_ms"] / dilated["train_ms"], 3)
    assert summary["flop_ratio"] == round(zoomout["train_gflop"] / dilated["train_gflop"], 3) < 0.5
    assert len(summary["paired_time_ratio_per_round"]) == 1 and summary["paired_time_ratio"] > 0
    assert summary["time_target_met"] == (summary["paired_time_ratio"] <= 0.5)


def test_presets_and_subcommand():
    commands = argparse.ArgumentParser(prog="labelreg").add_subparsers(dest="command")
    register(commands)
    parser = commands.choices["bench"]
    args = parser.parse_args(["--preset", "zoomout-vs-dilated"])
    assert args.run is run_from_args
    cases = cases_from_args(args)
    assert [c.model for c in cases] == ["zoomout_resnet101", "tv:deeplabv3_resnet101"]
    assert all(c.batch == 2 and c.size == (256, 256) and c.num_classes == 21 and not c.regularizer for c in cases)
    cases = cases_from_args(parser.parse_args(["--preset", "regularizer-overhead", "--iters", "4"]))
    assert [(c.model, c.regularizer) for c in cases] == [("zoomout_densenet121", False), ("zoomout_densenet121", True),
                                                         ("zoomout_resnet101", False), ("zoomout_resnet101", True)]
    assert all(c.iters == 4 for c in cases)
    args = parser.parse_args(["--models", "zoomout_densenet121", "tv:deeplabv3_resnet50", "--batch", "2", "--size",
                              "256x256", "--precision", "fp32", "bf16", "--channels-last", "--regularizer", "both"])
    assert len(cases_from_args(args)) == 2 * 2 * 2 and all(c.channels_last for c in cases_from_args(args))
    with pytest.raises(ValueError, match="--models"):
        cases_from_args(parser.parse_args([]))
    args = parser.parse_args([*TINY_ARGS, "--size", "32x48", "64x64"])
    assert [c.size for c in cases_from_args(args)] == [(32, 48), (64, 64)] and cases_from_args(args)[0].options == TINY
    with pytest.raises(SystemExit):
        parser.parse_args(["--size", "64"])  # not HxW


def test_zoomout_vs_dilated_summary_ratios():
    rows = [{"model": "zoomout_resnet101", "train_ms": 100.0, "peak_mb": 500.0, "infer_ms": 30.0, "round": 1},
            {"model": "tv:deeplabv3_resnet101", "train_ms": 400.0, "peak_mb": 1000.0, "infer_ms": 90.0, "round": 1}]
    report = {"results": rows, "rounds": rows}
    summary = zoomout_vs_dilated_summary(report, [])
    assert summary["time_ratio"] == 0.25 and summary["memory_ratio"] == 0.5
    assert summary["time_target_met"] and summary["lighter_in_memory"]
