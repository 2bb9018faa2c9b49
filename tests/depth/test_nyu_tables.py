"""scripts/nyu_tables.py: well-formed commands for every row, and rows that train with the thesis' settings
(Tables 5.5, 5.6; §5.5.1, §5.5.2.1, §3.5.1)."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from labelreg.config import load_config

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("nyu_tables", ROOT / "scripts" / "nyu_tables.py")
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


@pytest.mark.parametrize("label,config,inputs", [(row[0], row[1], inputs) for row, inputs in
                                                 zip(nyu_tables.TABLE_5_5, ["rgb", "seg", "seg+rgb"])])
def test_table_5_5_rows(label, config, inputs):
    cfg = load_config(ROOT / "configs" / config)
    assert cfg.model.name == "seg2depth_resnet50" and cfg.depth.inputs == inputs
    # §5.5.1: images resized to 256×336, random horizontal flips only, Adam 1e-4 for 60 epochs;
    # the ResNet-50 of §3.5: ImageNet-pretrained, BatchNorm frozen
    assert cfg.data.crop_size == [256, 336] and cfg.data.crop_area is None and cfg.data.scale is None
    assert cfg.data.hflip and cfg.train.epochs == 60
    assert (cfg.optim.optimizer, cfg.optim.lr, cfg.optim.schedule) == ("adam", 1e-4, "constant")
    assert cfg.model.pretrained_backbone == "imagenet" and cfg.model.freeze_bn
    assert cfg.depth.eval_protocol == "train_size"


ROWS_5_6 = {  # label: (supervision, seg_loss, depth_loss, seg_weight)
    "Baseline": ("final", True, True, 1.0),
    "Baseline no seg loss": ("final", False, True, 1.0),
    "Baseline no depth loss": ("final", True, False, 1.0),
    "2x seg loss": ("final", True, True, 2.0),
    "two-part model": ("both_parts", True, True, 1.0),
}


@pytest.mark.parametrize("label,config", [row[:2] for row in nyu_tables.TABLE_5_6])
def test_table_5_6_rows(label, config):
    cfg = load_config(ROOT / "configs" / config)
    depth = cfg.depth
    assert (depth.supervision, depth.seg_loss, depth.depth_loss, depth.seg_weight) == ROWS_5_6[label]
    # §5.5.2.1: zoom-out DenseNet-121 parts (grid 1/4, 1000 hidden), ImageNet, frozen BatchNorm (§3.5.1),
    # normalised zoom-out features (§5.4.1); terms balanced on averages over a couple of epochs;
    # 40 epochs on raw + labeled (a labeled image in every batch) at 1e-4, then 20 on labeled at 1e-5
    assert cfg.model.name == "twopart_densenet121" and cfg.model.pretrained_backbone == "imagenet"
    assert cfg.model.freeze_bn and cfg.model.options == {"hidden": 1000, "grid_stride": 4, "normalize": True}
    assert depth.balance and depth.balance_window == 2
    assert depth.mixed_epochs == 40 and depth.labeled_per_batch >= 1 and depth.depth_only
    assert (cfg.optim.optimizer, cfg.optim.lr, cfg.optim.schedule) == ("adam", 1e-4, "step")
    assert cfg.optim.milestones == [40] and cfg.optim.gamma == 0.1 and cfg.train.epochs == 60
    assert depth.eval_protocol == "train_size"


def test_tables_report_the_last_epoch_not_the_best_on_the_test_split(tmp_path, capsys):
    """The val split is NYUv2's test split: choosing the best epoch there would select on the test set."""
    out = tmp_path / "tables"
    for _, config, _ in nyu_tables.TABLE_5_5:
        run = out / "table5.5" / Path(config).stem
        run.mkdir(parents=True)
        history = [{"epoch": 30, "val/pixel_rmse": 0.1}, {"epoch": 60, "val/pixel_rmse": 0.7}]
        (run / "metrics.json").write_text(json.dumps({"best": history[0], "last": history[1], "history": history}))
    assert nyu_tables.main(["--table", "5.5", "--dry-run", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| RGB (ours) | 0.700 |" in printed and "0.100" not in printed
    assert "last epoch" in printed


def test_table_5_6_without_depth_only_frames_says_it_differs(capsys):
    assert nyu_tables.main(["--table", "5.6", "--dry-run"]) == 0
    assert "differs from the thesis" in capsys.readouterr().out
