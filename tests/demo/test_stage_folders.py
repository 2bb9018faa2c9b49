"""The demo's stage folders with a stand-in trainer (no model, milliseconds): training again replaces only what
a run wrote, a finished stage is read back while its config and inputs are unchanged, and a stage that read
another is trained again once that one was."""
import json

import pytest

from labelreg.config import Config, to_dict
from labelreg.demo.plan import STAGE_MARKER, DemoFolderError
from labelreg.demo.runs import can_reuse, ensure_trained, finished_mark, stage_config, train_stage
from labelreg.demo.stages import DEMO_AE_CONFIG, RECIPES
from labelreg.storage import save_checkpoint

trained: list[str] = []


def stand_in(cfg: Config) -> None:
    """What a trainer leaves: last.pt and best.pt with the config, metrics and history; counts its calls."""
    trained.append(cfg.run_dir.name)
    checkpoint = {"model": {}, "config": to_dict(cfg), "metrics": {"val/miou": 0.25}, "best_epoch": 1,
                  "history": [{"epoch": 1, "val/miou": 0.25}]}
    for name in ("last.pt", "best.pt"):
        save_checkpoint(cfg.run_dir / "checkpoints" / name, checkpoint)
    (cfg.run_dir / "metrics.json").write_text("{}")


def test_training_a_stage_again_keeps_a_users_file_in_it(tmp_path):
    run = train_stage(DEMO_AE_CONFIG, "ae", tmp_path, tmp_path / "data", ["train.epochs=2"], stand_in)
    assert run.best == {"miou": 0.25} and run.cfg.run_dir == tmp_path / "ae" and run.cfg.train.epochs == 2
    first = json.loads((tmp_path / "ae" / STAGE_MARKER).read_text())
    assert first["stage"] == "ae" and first["finished_at"] and first["seconds"] >= 0
    (tmp_path / "ae" / "NOTES.txt").write_text("mine\n")
    (tmp_path / "ae" / "checkpoints" / "keep.txt").write_text("mine too\n")
    train_stage(DEMO_AE_CONFIG, "ae", tmp_path, tmp_path / "data", ["train.epochs=1"], stand_in)
    assert (tmp_path / "ae" / "NOTES.txt").read_text() == "mine\n"
    assert (tmp_path / "ae" / "checkpoints" / "keep.txt").read_text() == "mine too\n"
    assert json.loads((tmp_path / "ae" / STAGE_MARKER).read_text())["finished_at"] != first["finished_at"]


def test_a_folder_of_someone_elses_is_never_trained_into(tmp_path):
    (tmp_path / "ae").mkdir()
    (tmp_path / "ae" / "NOTES.txt").write_text("mine\n")
    with pytest.raises(DemoFolderError, match="not an earlier output of labelreg demo"):
        train_stage(DEMO_AE_CONFIG, "ae", tmp_path, tmp_path / "data", [], stand_in)
    assert sorted(path.name for path in (tmp_path / "ae").iterdir()) == ["NOTES.txt"]


def test_a_finished_stage_is_read_back_until_its_config_or_its_input_changes(tmp_path):
    def config(stage: str, *overrides: str) -> Config:
        recipe = RECIPES[stage]
        return stage_config(recipe.config, stage, tmp_path, tmp_path / "data",
                            [*overrides, *recipe.wiring(tmp_path, tmp_path / "data")])

    trained.clear()
    ae, status = ensure_trained(config("ae"), stand_in, needs={}, fresh=False)
    assert status == "trained" and finished_mark(tmp_path / "ae")
    needs = {"ae": finished_mark(tmp_path / "ae")}
    assert ensure_trained(config("seg_reg"), stand_in, needs=needs, fresh=False)[1] == "trained"
    assert ensure_trained(config("seg_reg"), stand_in, needs=needs, fresh=False)[1] == "finished earlier, same config"
    assert ensure_trained(config("ae"), stand_in, needs={}, fresh=False)[1] == "finished earlier, same config"
    assert trained == ["ae", "seg_reg"]
    assert not can_reuse(config("seg_reg", "optim.lr=0.01"), needs)  # another config: trained again
    assert ensure_trained(config("seg_reg"), stand_in, needs=needs, fresh=True)[1] == "trained"  # --fresh
    ensure_trained(config("ae"), stand_in, needs={}, fresh=True)  # phase one again: a new decoder …
    assert not can_reuse(config("seg_reg"), {"ae": finished_mark(tmp_path / "ae")})  # … so seg_reg is stale
    (tmp_path / "ae" / "checkpoints" / "last.pt").unlink()  # a finished stage whose files are gone is not finished
    assert finished_mark(tmp_path / "ae") is None
