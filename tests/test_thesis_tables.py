"""The thesis-table recipes: every row's commands are well formed, and a demo-sized row runs end to end."""
import importlib.util
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
