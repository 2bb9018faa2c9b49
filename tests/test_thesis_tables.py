"""The thesis-table recipes: every row's commands are well formed, and a demo-sized row runs end to end."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from labelreg.config import load_config

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "thesis_tables.py"
spec = importlib.util.spec_from_file_location("thesis_tables", SCRIPT)
thesis_tables = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = thesis_tables  # dataclasses look their module up while the script executes
spec.loader.exec_module(thesis_tables)


@pytest.mark.parametrize("table", sorted(thesis_tables.TABLES))
def test_every_row_resolves_to_a_valid_config(table):
    for row in thesis_tables.TABLES[table]:
        overrides = list(row.overrides) + (["regularizer.autoencoder=x.pt"] if row.variant else [])
        cfg = load_config(thesis_tables.CONFIGS / row.config, overrides)
        assert cfg.task == "segmentation"
        assert (cfg.regularizer.kind == "none") == (row.regularizer == "none")
        if row.variant:
            assert (thesis_tables.CONFIGS / f"ae-{row.variant}_voc12aug_256.yaml").is_file()


def test_dry_run_prints_both_phases(capsys):
    assert thesis_tables.main(["--table", "5.1", "--dry-run", "--rows", "1,5"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("train-seg") == 2 and printed.count("train-ae") == 1  # row 5 needs autoencoder-128
    assert "| VGG-16 zoom-out | yes | Decoder (128 channel) | — | 57.1 |" in printed


def test_finished_runs_are_skipped_and_the_best_epochs_fill_the_table(tmp_path, monkeypatch):
    """The recipe's bookkeeping without training: a stand-in for ``run`` writes the metrics.json a finished run
    leaves (best val/miou 0.4 + 0.1·call); a second call finds every run finished and starts nothing."""
    started = []

    def fake_run(command, dry_run=False):
        options = dict(part.split("=", 1) for part in map(str, command) if "=" in part and "{" not in part)
        run_dir = Path(options["output_dir"]) / options["name"]
        run_dir.mkdir(parents=True)
        best = {"epoch": 2, "val/miou": 0.4 + 0.1 * len(started)}
        (run_dir / "metrics.json").write_text(json.dumps({"last": {"epoch": int(options["train.epochs"])}, "best": best}))
        started.append(command[command.index("--config") - 1])

    monkeypatch.setattr(thesis_tables, "run", fake_run)
    args = ["--table", "5.2", "--demo", "--rows", "1,2", "--out", str(tmp_path)]
    assert thesis_tables.main(args) == 0
    assert started == ["train-seg", "train-ae", "train-seg"]  # row 2 (decoder) needs phase one first
    table = (tmp_path / "table5.2-demo" / "table5.2.md").read_text()
    ours = [line.split(" | ")[3] for line in table.splitlines() if line.startswith("| DenseNet-67")]
    assert ours == ["40.0", "60.0"]  # each row's own best epoch (the autoencoder's 50.0 is not a row)
    assert thesis_tables.main(args) == 0 and len(started) == 3


@pytest.mark.slow  # trains a phase one and two segmenters through the CLI (minutes); the test above covers the recipe
def test_demo_sized_rows_run_and_fill_the_table(tiny_synthetic, tmp_path):
    args = ["--table", "5.2", "--demo", "--rows", "1,2", "--out", str(tmp_path), f"data.root={tiny_synthetic.root}",
            "data.train_limit=4", "data.val_limit=4", "data.crop_size=[32,48]"]
    assert thesis_tables.main(args) == 0
    table = (tmp_path / "table5.2-demo" / "table5.2.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| DenseNet-67")]
    assert len(rows) == 2 and all("—" not in line for line in rows)
    assert (tmp_path / "table5.2-demo" / "ae-128" / "checkpoints" / "best.pt").is_file()
    # a second call finds everything finished and trains nothing
    checkpoint = tmp_path / "table5.2-demo" / "ae-128" / "checkpoints" / "last.pt"
    stamp = checkpoint.stat().st_mtime_ns
    assert thesis_tables.main(args) == 0
    assert checkpoint.stat().st_mtime_ns == stamp
