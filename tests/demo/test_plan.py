"""What a demo decides before it writes: its stages, where each override goes, which folders it may write, where
its configs put their runs, and how a reduced run is described. No training here (milliseconds)."""
import json
from pathlib import Path

import pytest

from labelreg.config import ConfigError, load_config
from labelreg.demo.plan import (DEMO_MARKER, STAGE_MARKER, DemoFolderError, check_folders, route_overrides,
                                select_stages)
from labelreg.demo.provenance import banner, config_differences, fewer_epochs, git_commit, reduced_reasons
from labelreg.demo.runs import stage_config
from labelreg.demo.stages import CONFIG_DIR, RECIPES, STAGES, decoder_of
from labelreg.weak.demo import DEMO_WEAK_CONFIG, weak_demo_config

ALL = list(STAGES)
TRAINED = ["ae", "seg", "seg_reg", "twopart", "single", "weak"]


def test_stages_are_chosen_in_order_by_stages_and_skip():
    assert select_stages(ALL) == ALL
    assert select_stages(ALL, ["weak,ae"]) == ["ae", "weak"]  # the demo's order, whatever the order given
    assert select_stages(ALL, ["ae", "seg"], ["seg"]) == ["ae"]  # repeated flags, and both flags together
    assert select_stages(ALL, skip=["data,weak", "queries"]) == ["ae", "seg", "seg_reg", "twopart", "single"]
    with pytest.raises(ConfigError, match="^--skip: unknown stage 'depth'; the stages are data, ae, seg"):
        select_stages(ALL, skip=["depth"])
    with pytest.raises(ConfigError, match="leaves no stage to run"):
        select_stages(ALL, ["ae"], ["ae"])


def test_train_epochs_reaches_every_trained_stage_and_shortens_the_weak_one():
    routing = route_overrides(["train.epochs=1"], ALL)
    for stage in ("ae", "seg", "seg_reg", "twopart", "single"):
        assert routing.per_stage[stage] == ["train.epochs=1"], stage
    assert routing.per_stage["weak"] == ["weak.loc_epochs=1", "weak.seg_epochs=1", "weak.dense_epochs=1"]
    assert routing.per_stage["data"] == []
    assert routing.notes == ["train.epochs=1 → ae, seg, seg_reg, twopart, single, weak (weak as weak.loc_epochs=1, "
                             "weak.seg_epochs=1, weak.dense_epochs=1)"]
    cfg = weak_demo_config(Path("out"), Path("data"), routing.per_stage["weak"])
    assert (cfg.weak.loc_epochs, cfg.weak.seg_epochs, cfg.weak.dense_epochs) == (1, 1, 1)


def test_overrides_reach_only_the_stages_that_read_them_and_say_where_they_do_not_apply():
    routing = route_overrides(["regularizer.weight=1.0", "optim.lr=0.01", "depth.mixed_epochs=1", "weak.k=5",
                               "data.synth_labeled=8", "train.device=cuda:0"], ALL)
    assert routing.per_stage["seg_reg"] == ["regularizer.weight=1.0", "optim.lr=0.01", "data.synth_labeled=8",
                                            "train.device=cuda:0"]
    assert routing.per_stage["seg"] == ["optim.lr=0.01", "data.synth_labeled=8", "train.device=cuda:0"]
    assert routing.per_stage["twopart"] == routing.per_stage["single"] == [
        "optim.lr=0.01", "depth.mixed_epochs=1", "data.synth_labeled=8", "train.device=cuda:0"]
    assert routing.per_stage["weak"] == ["weak.k=5", "data.synth_labeled=8", "train.device=cuda:0"]
    assert routing.per_stage["data"] == ["data.synth_labeled=8"]
    notes = dict(note.split(" → ", 1) for note in routing.notes)
    assert notes["regularizer.weight=1.0"] == ("seg_reg; not ae, seg, twopart, single, weak: only seg_reg has a "
                                               "regularizer")
    assert notes["optim.lr=0.01"].endswith("; not weak: the weak stage's rates are weak.loc_lr, weak.seg_lr, "
                                           "weak.pretrain_lr")
    assert notes["weak.k=5"].startswith("weak; not ae, seg")


def test_a_stage_prefix_sends_an_override_to_that_stage_only():
    routing = route_overrides(["seg:optim.lr=0.01", "weak:train.epochs=2", "ae:model.variant=32"], ALL)
    assert routing.per_stage["seg"] == ["optim.lr=0.01"] and routing.per_stage["seg_reg"] == []
    assert routing.per_stage["weak"] == ["weak.loc_epochs=2", "weak.seg_epochs=2", "weak.dense_epochs=2"]
    assert routing.per_stage["ae"] == ["model.variant=32"]
    assert route_overrides(["seg:optim.lr=0.01"], ["ae"]).notes == [
        "seg:optim.lr=0.01: seg is not run now, so it does not apply"]


@pytest.mark.parametrize("override, message", [
    ("model.options.hidden=64", r"each stage has its own model; name the stage, e\.g\. single:model\.options\.hid"),
    ("ae:weak.k=5", r"does not apply to ae: only the weak stage reads weak\.\*"),
    ("queries:train.epochs=1", r"'queries' is not a stage with a config"),
    ("epochs=1", r"expected section\.key=value"),
])
def test_overrides_that_cannot_apply_are_refused_in_one_line(override, message):
    with pytest.raises(ConfigError, match=message):
        route_overrides([override], ALL)


def copied_run(folder: Path) -> dict[str, bytes]:
    """A user's copy of a training run, with their notes: every file's bytes."""
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "best.pt").write_bytes(b"weights")
    (folder / "config.yaml").write_text("name: seg\n")
    (folder / "NOTES.txt").write_text("my notes\n")
    return snapshot(folder)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_folders_the_demo_did_not_write_are_refused_naming_them(tmp_path):
    out = tmp_path / "demo"
    before = copied_run(out / "seg")
    (out / "notes.txt").write_text("mine\n")
    (out / "ae").mkdir()  # an empty folder is free
    check_folders(out, ["ae", "twopart"])
    with pytest.raises(DemoFolderError) as refused:
        check_folders(out, ["ae", "seg", "weak"])
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{out / 'seg'} is not an earlier output of labelreg demo")
    assert message.endswith("choose another --out, or --skip seg")
    (out / "seg" / STAGE_MARKER).write_text("{}")  # the demo's own stage folder
    check_folders(out, ["seg"])
    (out / "report.md").write_text("my report\n")  # a file of the user's where the demo writes its report
    with pytest.raises(DemoFolderError, match=f"report.md was not written by labelreg demo .no {DEMO_MARKER}"):
        check_folders(out, ["ae"])
    (out / DEMO_MARKER).write_text("")
    check_folders(out, ["ae"])
    assert snapshot(out / "seg") == {**before, STAGE_MARKER: b"{}"}


def test_demo_configs_run_into_their_own_folders_and_the_demo_into_its_stage_folders(tmp_path):
    """`labelreg train-seg --config configs/demo/...` after `make demo` must not meet runs/demo/<stage>."""
    demo_out = Path("runs/demo")
    paths = {**{stage: recipe.config for stage, recipe in RECIPES.items()}, "weak": DEMO_WEAK_CONFIG}
    for stage, path in paths.items():
        direct = load_config(path).run_dir
        assert direct == Path("runs/demo-direct") / stage, path
        assert demo_out not in direct.parents
    assert load_config(CONFIG_DIR / "demo" / "sunet64-tiny_cls.yaml").run_dir.parent == Path("runs/demo-direct")
    # the regularized config reads the autoencoder its sibling config writes when run directly
    assert Path(load_config(RECIPES["seg_reg"].config).regularizer.autoencoder) == \
        load_config(RECIPES["ae"].config).run_dir / "checkpoints" / "best.pt"
    for stage, recipe in RECIPES.items():
        wiring = recipe.wiring(tmp_path, tmp_path / "data")
        cfg = stage_config(recipe.config, stage, tmp_path, tmp_path / "data", wiring)
        assert cfg.run_dir == tmp_path / stage
    assert stage_config(RECIPES["seg_reg"].config, "seg_reg", tmp_path, tmp_path / "data", RECIPES["seg_reg"].wiring(
        tmp_path, tmp_path / "data")).regularizer.autoencoder == str(decoder_of(tmp_path))
    assert weak_demo_config(tmp_path, tmp_path / "data", []).run_dir == tmp_path / "weak"


def test_the_demo_autoencoder_computes_in_bf16_only_where_it_is_native():
    assert load_config(RECIPES["ae"].config).train.amp == "auto"


def test_a_reduced_run_is_described_and_the_recipe_is_not(tmp_path):
    recipe = load_config(RECIPES["seg"].config)
    short = load_config(RECIPES["seg"].config, ["train.epochs=3", "optim.lr=0.01"])
    assert config_differences(short, recipe) == ["optim.lr 0.01 (recipe 0.003)", "train.epochs 3 (recipe 30)"]
    assert fewer_epochs(short, recipe) == ["train.epochs 3/30"] and fewer_epochs(recipe, short) == []
    reasons = reduced_reasons(["train.epochs=3"], ["weak"], {"seg": config_differences(short, recipe), "ae": []},
                              {"seg": fewer_epochs(short, recipe), "ae": []})
    assert reasons == ["overrides `train.epochs=3`", "stages not run now: weak",
                       "fewer epochs than the recipe: seg train.epochs 3/30",
                       "settings differ from the recipe in seg (listed under Provenance)"]
    assert banner(reasons).startswith("> **Reduced run — not the demo's recipe.** overrides `train.epochs=3`; ")
    assert reduced_reasons([], [], {"seg": []}, {"seg": []}) == [] and banner([]) == ""


def test_the_commit_is_unknown_outside_a_git_checkout(tmp_path):
    assert git_commit(tmp_path) == {"commit": "unknown", "modified": None}
    here = git_commit()
    assert here["commit"] == "unknown" or len(here["commit"]) == 40
    json.dumps(here)
