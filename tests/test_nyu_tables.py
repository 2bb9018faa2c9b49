"""The NYUv2 table recipes print well-formed commands for every row."""
import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "nyu_tables.py"
spec = importlib.util.spec_from_file_location("nyu_tables", SCRIPT)
nyu_tables = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = nyu_tables
spec.loader.exec_module(nyu_tables)


def test_table_5_5_dry_run(capsys):
    assert nyu_tables.main(["--table", "5.5", "--dry-run", "--nyu-root", "/data/nyu"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("train-depth") == 3 and "data.root=/data/nyu" in printed
    assert "| Seg+RGB (thesis) | 0.524 |" in printed


def test_table_5_6_dry_run_with_and_without_depth_only_frames(capsys):
    assert nyu_tables.main(["--table", "5.6", "--dry-run", "--depth-only", "/data/frames"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("train-depth") == 5 and "depth.depth_only=/data/frames" in printed
    assert nyu_tables.main(["--table", "5.6", "--dry-run"]) == 0
    assert "depth.mixed_epochs=0" in capsys.readouterr().out  # no frames: labeled-only training
