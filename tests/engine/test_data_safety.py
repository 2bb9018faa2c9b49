"""Nothing the project did not write is ever deleted, a refused command changes nothing, and a resume loses
nothing a crash left half-written (issue 22: D1, D3, D4, D9, D12, D13)."""
import json
import re
import shutil

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import labelreg.engine.loop as engine_loop
from labelreg.cli import main
from labelreg.config import ConfigError, config_from_dict
from labelreg.engine import (RUN_MARKER, RunDirectoryError, claim_run_directory, epoch_log_line, is_run_directory,
                             remove_run_outputs)
from labelreg.storage import load_checkpoint
from tests.engine.test_engine import run
from tests.engine.test_runs_errors import AE_CONFIG, SEG_CONFIG, TINY_SEG, error_line, tiny


def folder_contents(folder):
    """{relative path: bytes} of every file under ``folder`` (what a refused command must leave alone)."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def user_files(out, run_dir):
    """A user's notes and folder beside the run and inside it, and a file of theirs among its checkpoints."""
    files = [out / "notes.txt", out / "important" / "data.txt", run_dir / "NOTES.txt", run_dir / "mine" / "plot.py",
             run_dir / "checkpoints" / "my_copy.pt"]
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"the user's {path.name}")
    return files


def logged_epochs(run_dir):
    return [int(epoch) for epoch in re.findall(r"^\[.*\] epoch (\d+)/", (run_dir / "train.log").read_text(), re.M)]


@pytest.mark.parametrize("name", ["", " ", ".", "./", "..", "../elsewhere", "a/../..", "a/..", "/tmp/run"])
def test_a_run_name_that_is_not_a_folder_inside_output_dir_is_refused(tmp_path, name):
    with pytest.raises(ConfigError, match=rf"^name={re.escape(repr(name))} does not name a folder inside output_dir"):
        config_from_dict({"name": name, "output_dir": str(tmp_path / "out")})


def test_sub_folder_names_are_runs_inside_output_dir(tmp_path):
    for name in ("study/arm_seed0", "x/../y", ".hidden"):
        cfg = config_from_dict({"name": name, "output_dir": str(tmp_path)})
        assert tmp_path.resolve() in cfg.run_dir.resolve().parents


def test_a_name_through_a_symlink_and_dotdot_stays_inside_output_dir(tmp_path):
    """'link/../x' with link → a folder elsewhere: the OS would resolve it to that folder's parent; the run folder
    is output_dir/x, as the name check read it."""
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere" / "deep"
    out.mkdir()
    elsewhere.mkdir(parents=True)
    (out / "link").symlink_to(elsewhere)
    cfg = config_from_dict({"name": "link/../x", "output_dir": str(out)})
    assert cfg.run_dir.resolve() == (out / "x").resolve()


def test_an_empty_name_with_overwrite_deletes_nothing(tmp_path, capsys):
    out = tmp_path / "x"
    files = user_files(out, out / "run") + [out / "checkpoints" / "last.pt"]  # the output folder looks like a run
    files[-1].parent.mkdir()
    files[-1].write_text("the user's last.pt")
    assert main(["train-ae", "--config", AE_CONFIG, *tiny(tmp_path / "nodata", out), "name=''", "--overwrite"]) == 2
    assert [path for path in files if not path.is_file()] == []
    assert all(path.read_text() == f"the user's {path.name}" for path in files)
    assert error_line(capsys).startswith("labelreg train-ae: error: name='' does not name a folder inside output_dir")


def test_overwrite_removes_only_what_a_run_wrote(tmp_path, capsys):
    cfg, _, _ = run(tmp_path, "keep", epochs=1)
    assert is_run_directory(cfg.run_dir)
    files = user_files(tmp_path, cfg.run_dir)
    written = [cfg.run_dir / "eval_test.json", cfg.run_dir / "class_frequencies.json", cfg.run_dir / ".x.json.tmp-1",
               cfg.run_dir / "queries" / "labels_0.png", cfg.run_dir / "index" / "label-0a1b" / "index.json"]
    for path in written:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    with claim_run_directory(cfg.run_dir, overwrite=True):
        left = sorted(str(path.relative_to(cfg.run_dir)) for path in cfg.run_dir.rglob("*"))
    assert left == [".labelreg-run", ".lock", "NOTES.txt", "checkpoints", "checkpoints/my_copy.pt", "mine",
                    "mine/plot.py"]
    assert all(path.read_text() == f"the user's {path.name}" for path in files)
    printed = capsys.readouterr().out  # config, metrics, log, 2 checkpoints, events, eval, cache, query, index
    assert f"removed {cfg.run_dir / '.x.json.tmp-1'}, left by an interrupted write" in printed
    assert f"--overwrite: removed the 10 files the earlier run wrote in {cfg.run_dir}" in printed


def test_overwrite_refuses_a_folder_without_the_run_marker(tmp_path):
    cfg, _, _ = run(tmp_path, "made", epochs=1)
    copy = tmp_path / "copied"  # a run's files, but not a folder labelreg marked (e.g. copied by hand)
    shutil.copytree(cfg.run_dir, copy, ignore=shutil.ignore_patterns(RUN_MARKER))
    (copy / "NOTES.txt").write_text("mine")
    before = folder_contents(copy)
    with pytest.raises(RunDirectoryError, match=rf"^{re.escape(str(copy))} holds run files \(checkpoints, config.yaml"
                                                r".*no run marker \.labelreg-run.*deletes nothing"):
        with claim_run_directory(copy, overwrite=True):
            pass
    with pytest.raises(RunDirectoryError, match="no run marker"):
        remove_run_outputs(copy)
    assert folder_contents(copy) == before
    # a folder holding only the user's own files has nothing to delete: it is claimed and marked
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / "NOTES.txt").write_text("mine")
    with claim_run_directory(tmp_path / "fresh", overwrite=True):
        pass
    assert is_run_directory(tmp_path / "fresh") and (tmp_path / "fresh" / "NOTES.txt").read_text() == "mine"


def test_resume_without_last_pt_refuses_instead_of_starting_afresh(tmp_path):
    cfg, _, _ = run(tmp_path, "nolast", epochs=1)
    (cfg.run_dir / "checkpoints" / "last.pt").unlink()
    before = folder_contents(cfg.run_dir)
    with pytest.raises(RunDirectoryError, match=r"holds best.pt but no checkpoints/last.pt.*--overwrite.*--resume-from"):
        with claim_run_directory(cfg.run_dir, resume=True):
            pass
    assert folder_contents(cfg.run_dir) == before


def test_resume_keeps_every_committed_epochs_tensorboard_events(tmp_path, monkeypatch):
    """The resumed epoch's scalars were logged at the step it resumes from; the crashed epoch's are dropped."""
    cfg, _, _ = run(tmp_path, "tb", epochs=2)
    last = cfg.run_dir / "checkpoints" / "last.pt"
    real_save = engine_loop.save_checkpoint

    def crash_at_epoch_3(path, payload):  # epoch 3 evaluated and logged its scalars, then died before committing
        if payload["epoch"] == 3:
            raise KeyboardInterrupt("killed before last.pt")
        real_save(path, payload)

    monkeypatch.setattr(engine_loop, "save_checkpoint", crash_at_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "tb", epochs=3, resume=last)
    monkeypatch.setattr(engine_loop, "save_checkpoint", real_save)
    run(tmp_path, "tb", epochs=3, resume=last)
    events = EventAccumulator(str(cfg.run_dir / "tb"))
    events.Reload()
    history = load_checkpoint(last)["history"]
    assert [event.step for event in events.Scalars("val/mse")] == [entry["step"] for entry in history]  # each once
    assert [event.value for event in events.Scalars("val/mse")] == pytest.approx([e["val/mse"] for e in history])


def test_a_crash_before_the_log_line_is_repaired_on_resume(tmp_path, monkeypatch):
    real_write = engine_loop.write_metrics_json

    def crash_at_epoch_2(run_dir, state, cfg):  # after last.pt and best.pt, before metrics.json and train.log
        if state.epoch == 2:
            raise KeyboardInterrupt("killed after last.pt")
        real_write(run_dir, state, cfg)

    monkeypatch.setattr(engine_loop, "write_metrics_json", crash_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "log", epochs=3)
    monkeypatch.setattr(engine_loop, "write_metrics_json", real_write)
    run_dir = tmp_path / "log"
    assert logged_epochs(run_dir) == [1]
    run(tmp_path, "log", epochs=3, resume=run_dir / "checkpoints" / "last.pt")
    assert logged_epochs(run_dir) == [1, 2, 3]
    history = load_checkpoint(run_dir / "checkpoints" / "last.pt")["history"]
    log = (run_dir / "train.log").read_text()
    assert epoch_log_line("log", history[1], 3) + "\n" in log
    assert f"repaired {run_dir / 'train.log'}: epoch 2 rewritten from last.pt" in log


def test_user_files_survive_every_training_command(tiny_synthetic, tmp_path, capsys, one_thread):
    """train-seg and train-ae with a user's files beside and inside the run: train, refused resume, resume,
    resume without last.pt, overwrite."""
    out = tmp_path / "runs"
    seg = ["train-seg", "--config", SEG_CONFIG, *tiny(tiny_synthetic.root, out), TINY_SEG]
    assert main(seg) == 0
    run_dir = out / "tiny"
    files = user_files(out, run_dir)
    # a resume that may not change train.loss is refused before class_frequencies.json / resolved.json are written
    before = folder_contents(out)
    assert main([*seg, "--resume", "train.loss=asymmetric"]) == 2
    assert "resume cannot change train.loss: 'ce' → 'asymmetric'" in error_line(capsys)
    assert folder_contents(out) == before
    assert main([*seg, "--resume", "train.epochs=2"]) == 0
    assert logged_epochs(run_dir) == [1, 2]
    # best.pt without last.pt: nothing to resume, and starting afresh would overwrite best.pt and metrics.json
    (run_dir / "checkpoints" / "last.pt").unlink()
    before = folder_contents(out)
    assert main([*seg, "--resume", "train.epochs=2"]) == 2
    assert "tiny holds best.pt but no checkpoints/last.pt" in error_line(capsys)
    assert folder_contents(out) == before
    assert main([*seg, "--overwrite"]) == 0
    assert [entry["epoch"] for entry in json.loads((run_dir / "metrics.json").read_text())["history"]] == [1]
    ae = ["train-ae", "--config", AE_CONFIG, *tiny(tiny_synthetic.root, out), "name=ae"]
    assert main(ae) == 0
    files += user_files(out, out / "ae")
    assert main([*ae, "--resume", "train.epochs=2"]) == 0
    assert main([*ae, "--overwrite"]) == 0
    assert all(path.read_text() == f"the user's {path.name}" for path in files)
