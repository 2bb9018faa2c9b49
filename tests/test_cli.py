"""End-to-end through the `labelreg` command line on tiny synthetic data; its help, version and switches."""
import argparse
import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import h5py
import numpy as np
import pytest

import torch
from PIL import Image

from labelreg.cli import COMMANDS, build_parser, main
from labelreg.cli_args import (BENCH_PRECISIONS, BENCH_PRESETS, DEMO_STAGES, NO_PROGRESS_ENV, WEAK_STEPS, progress_wanted,
                               study_protocols)
from labelreg.config import config_from_dict
from labelreg.models.autoencoder import LabelAutoencoder
from labelreg.palette import voc_palette
from labelreg.storage import load_checkpoint, save_checkpoint
from labelreg.tasks import model_from_checkpoint
from labelreg.tasks.evaluate import evaluation_loader
from labelreg.tasks.segmentation import loop_spec

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def tiny_overrides(root, out):
    return [f"data.root={root}", f"output_dir={out}", "name=tiny", "data.crop_size=[32,48]", "data.batch_size=4",
            "data.eval_batch_size=4", "train.epochs=2", "train.eval_every=1", "train.log_every=1",
            "data.num_workers=0"]


def test_synth_command_writes_real_layouts(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path), "--labeled", "5", "--depth-only", "2", "--size", "32x48"]) == 0
    with h5py.File(tmp_path / "nyu" / "nyu_depth_v2_labeled.mat", "r") as f:
        assert f["images"].shape == (5, 3, 48, 32) and f["labels"].shape == (5, 48, 32)
    assert len(list((tmp_path / "nyu" / "depth_only").glob("*.h5"))) == 2
    assert "voc_root" in capsys.readouterr().out


def test_synth_rejects_bad_size(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["synth", "--out", str(tmp_path), "--size", "big"])
    assert main(["synth", "--out", str(tmp_path), "--size", "30x40"]) == 2
    assert "16" in capsys.readouterr().err


def test_train_eval_resume(tiny_synthetic, tmp_path, capsys):
    config = str(CONFIGS / "demo" / "ae-128_synth-nyu40.yaml")
    assert main(["train-ae", "--config", config, *tiny_overrides(tiny_synthetic.root, tmp_path)]) == 0
    run = tmp_path / "tiny"
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "checkpoints", "tb", "metrics.json"}
    checkpoint = load_checkpoint(run / "checkpoints" / "last.pt")
    assert checkpoint["epoch"] == 2 and checkpoint["config"]["data"]["crop_size"] == [32, 48]
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert [entry["epoch"] for entry in history] == [1, 2] and "val/miou" in history[-1]

    assert main(["eval", "--checkpoint", str(run / "checkpoints" / "best.pt")]) == 0
    printed = capsys.readouterr().out
    assert "miou" in printed and "per-class IoU" in printed
    result = json.loads((run / "eval_test.json").read_text())
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert result["metrics"]["miou"] == pytest.approx(best["metrics"]["val/miou"], abs=1e-6)
    # segmentation's options are refused for an autoencoder, naming the option
    for option in (["--save-predictions", str(tmp_path / "png")], ["--aux"], ["--figure", str(tmp_path / "f.png")]):
        assert main(["eval", "--checkpoint", str(run / "checkpoints" / "best.pt"), *option]) == 2
        assert f"{option[0]} is for segmentation checkpoints" in capsys.readouterr().err

    # a new run over the finished one is refused before anything is written
    capsys.readouterr()
    before = (run / "checkpoints" / "best.pt").read_bytes(), (run / "metrics.json").read_text()
    assert main(["train-ae", "--config", config, *tiny_overrides(tiny_synthetic.root, tmp_path)]) == 2
    assert "already holds checkpoints" in capsys.readouterr().err
    assert ((run / "checkpoints" / "best.pt").read_bytes(), (run / "metrics.json").read_text()) == before
    assert main(["train-ae", "--config", config, "--resume", "--overwrite"]) == 2

    # --resume with no value continues from the run's last.pt up to the new epoch count; overrides may
    # come before and after it
    assert main(["train-ae", "--config", config, *tiny_overrides(tiny_synthetic.root, tmp_path), "--resume",
                 "train.epochs=3"]) == 0
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 3
    assert "resumed from" in capsys.readouterr().out
    # a setting the restored state would not follow is refused, naming the key
    assert main(["train-ae", "--config", config, "--resume", *tiny_overrides(tiny_synthetic.root, tmp_path),
                 "train.epochs=3", "optim.lr=0.5"]) == 2
    assert "resume cannot change optim.lr" in capsys.readouterr().err
    # --overwrite starts afresh
    assert main(["train-ae", "--config", config, "--overwrite", *tiny_overrides(tiny_synthetic.root, tmp_path),
                 "train.epochs=1"]) == 0
    assert [entry["epoch"] for entry in json.loads((run / "metrics.json").read_text())["history"]] == [1]


def test_train_on_the_voc_tree_with_canvas(tiny_synthetic, tmp_path):
    # VOC images may differ in size: data.canvas fits-and-pads them so batches stack.
    config = str(CONFIGS / "ae-32_voc12aug_256.yaml")
    overrides = tiny_overrides(tiny_synthetic.root, tmp_path) + [
        "data.sbd_root=null", "data.train_split=train", "data.canvas=[80,80]", "train.epochs=1"]
    assert main(["train-ae", "--config", config, *overrides]) == 0
    checkpoint = load_checkpoint(tmp_path / "tiny" / "checkpoints" / "last.pt")
    assert checkpoint["config"]["model"]["variant"] == "32"
    assert checkpoint["model"]["decoder.classifier.weight"].shape[0] == 21  # VOC classes


def test_config_errors_exit_2_with_the_key(tiny_synthetic, tmp_path, capsys):
    config = str(CONFIGS / "demo" / "ae-128_synth-nyu40.yaml")
    assert main(["train-ae", "--config", config, "data.batch_sise=3"]) == 2
    assert "batch_sise" in capsys.readouterr().err
    assert main(["train-ae", "--config", config, f"data.root={tmp_path / 'nowhere'}",
                 "data.synthesize_if_missing=false"]) == 2
    assert "nyu_depth_v2_labeled.mat" in capsys.readouterr().err


def test_console_script_is_installed():
    result = subprocess.run([Path(sys.executable).parent / "labelreg", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("synth", "train-ae", "eval", "demo"):
        assert command in result.stdout


TINY_SEG = ("model.options={hidden: 16, backbone_options: {growth_rate: 8, block_config: [1, 1, 1, 1], "
            "stem_channels: [8, 8, 8]}}")


def test_phase_two_train_eval_export(tiny_synthetic, tmp_path, capsys):
    ae_config = str(CONFIGS / "demo" / "ae-128_synth-nyu40.yaml")
    seg_config = str(CONFIGS / "demo" / "zoomout-densenet67-tiny_synth-nyu40.yaml")
    common = [o for o in tiny_overrides(tiny_synthetic.root, tmp_path) if not o.startswith("name=")]
    assert main(["train-ae", "--config", ae_config, *common, "name=ae", "train.epochs=1"]) == 0
    autoencoder = tmp_path / "ae" / "checkpoints" / "best.pt"
    assert main(["train-seg", "--config", seg_config, *common, "name=reg", TINY_SEG, "regularizer.kind=decoder",
                 f"regularizer.autoencoder={autoencoder}"]) == 0
    run = tmp_path / "reg"
    checkpoint = load_checkpoint(run / "checkpoints" / "best.pt")
    # the config is stored as given; the defaults the run filled in are in its resolved record
    assert checkpoint["config"]["train"]["loss_weights"] == {}
    assert json.loads((run / "resolved.json").read_text())["loss_weights"] == {"aux": 0.5}
    assert "val/aux_miou" in checkpoint["metrics"] and "train/aux" in checkpoint["metrics"]
    capsys.readouterr()

    # plain evaluation needs no autoencoder file; --aux scores the decoder's output too
    autoencoder.rename(tmp_path / "moved.pt")
    predictions = tmp_path / "predictions"
    assert main(["eval", "--checkpoint", str(run / "checkpoints" / "best.pt"), "--save-predictions",
                 str(predictions)]) == 0
    plain = json.loads((run / "eval_test.json").read_text())["metrics"]
    assert plain["miou"] == pytest.approx(checkpoint["metrics"]["val/miou"], abs=1e-6)
    assert_saved_predictions(checkpoint, predictions)
    figure = tmp_path / "fig.png"
    assert main(["eval", "--checkpoint", str(run / "checkpoints" / "best.pt"), "--aux", "--figure", str(figure)]) == 0
    assert figure.stat().st_size > 0
    with_aux = json.loads((run / "eval_test_aux.json").read_text())["metrics"]
    assert with_aux["aux_miou"] == pytest.approx(checkpoint["metrics"]["val/aux_miou"], abs=1e-6)

    exported = tmp_path / "exported" / "plain.pt"
    assert main(["export", "--checkpoint", str(run / "checkpoints" / "best.pt"), "--out", str(exported)]) == 0
    assert not any(key.startswith(("segmenter.", "decoder.")) for key in load_checkpoint(exported)["model"])
    assert main(["eval", "--checkpoint", str(exported)]) == 0
    assert json.loads((exported.parent / "eval_test.json").read_text())["metrics"]["miou"] == plain["miou"]
    assert main(["eval", "--checkpoint", str(exported), "--aux"]) == 2
    assert "--aux needs" in capsys.readouterr().err


def assert_saved_predictions(checkpoint, folder):
    """One VOC-palette PNG per evaluated image, holding the class the checkpoint's segmenter predicts."""
    cfg = config_from_dict(checkpoint["config"])
    dataset, loader = evaluation_loader(cfg, cfg.data.val_split, torch.device("cpu"))
    model = model_from_checkpoint(checkpoint, num_classes=40).eval()
    task = loop_spec(cfg, model, [str(index) for index in range(40)])
    assert len(list(folder.glob("*.png"))) == len(dataset)
    for batch in loader:
        with torch.no_grad():
            prediction = model(task.eval_augment(batch)["image"])["seg"].argmax(1)
        for name, expected in zip(batch["name"], prediction):
            picture = Image.open(folder / f"{name}.png")
            assert picture.mode == "P" and picture.getpalette()[:120] == voc_palette()[:40].flatten().tolist()
            assert torch.equal(torch.from_numpy(np.array(picture)).long(), expected)


def untrained_autoencoder(path, variant="32"):
    """A phase-one checkpoint without the training (a random init is enough to train through it)."""
    save_checkpoint(path, {"model": LabelAutoencoder(40, variant).state_dict(),
                           "config": {"task": "autoencoder", "model": {"variant": variant}}})
    return path


@pytest.mark.parametrize("overrides, variant, weight", [
    (["regularizer.kind=encoder", "regularizer.autoencoder=AE"], "32", 0.5),  # the encoder stays frozen: a real phase one
    (["regularizer.kind=decoder", "regularizer.random_init=true", "regularizer.frozen=false", "regularizer.loss=mse"],
     "128", 1.0),
    (["regularizer.kind=decoder", "regularizer.random_init=true", "regularizer.frozen=false", "regularizer.variant=32",
      "regularizer.aux_crop=2"], "32", 0.5),
], ids=["encoder", "unfrozen-random-mse", "decoder-crop"])
def test_regularizer_variants_train(tiny_synthetic, tmp_path, overrides, variant, weight):
    seg_config = str(CONFIGS / "demo" / "zoomout-densenet67-tiny_synth-nyu40.yaml")
    overrides = [item.replace("=AE", f"={untrained_autoencoder(tmp_path / 'ae.pt')}") for item in overrides]
    assert main(["train-seg", "--config", seg_config, *tiny_overrides(tiny_synthetic.root, tmp_path), TINY_SEG,
                 "train.epochs=1", *overrides]) == 0
    history = json.loads((tmp_path / "tiny" / "metrics.json").read_text())["history"]
    # the regularizer's term was trained with its default weight, through an autoencoder of the resolved variant
    assert history[-1]["train/aux"] > 0 and history[-1]["weight/aux"] == weight
    assert json.loads((tmp_path / "tiny" / "resolved.json").read_text())["autoencoder_variant"] == variant


def backbone_parameters(path):
    return {key: value for key, value in load_checkpoint(path)["model"].items() if key.startswith("backbone.")
            and "running_" not in key and "num_batches_tracked" not in key}  # parameters, not BatchNorm statistics


def test_staged_freezing_trains_the_backbone_only_after_its_frozen_epochs(tiny_synthetic, tmp_path):
    seg_config = str(CONFIGS / "demo" / "zoomout-densenet67-tiny_synth-nyu40.yaml")
    common = [*tiny_overrides(tiny_synthetic.root, tmp_path), TINY_SEG, "model.freeze_backbone_epochs=1"]
    # known starting weights: a run whose backbone never trains keeps its initial one
    assert main(["train-seg", "--config", seg_config, *common, "name=start", "train.epochs=1",
                 "model.freeze_backbone_epochs=0", "model.freeze_backbone=true"]) == 0
    start = tmp_path / "start" / "checkpoints" / "last.pt"
    staged = [*common, f"model.init_from={start}"]
    # epoch 0 of a run started from them (model.init_from) leaves the backbone as it was
    assert main(["train-seg", "--config", seg_config, *staged, "train.epochs=1"]) == 0
    last = tmp_path / "tiny" / "checkpoints" / "last.pt"
    initial, after_one = backbone_parameters(start), backbone_parameters(last)
    assert initial and all(torch.equal(initial[key], after_one[key]) for key in initial)
    # epoch 1 (continued from the checkpoint) trains it
    assert main(["train-seg", "--config", seg_config, *staged, "--resume", "train.epochs=2"]) == 0
    after_two = backbone_parameters(last)
    assert all(not torch.equal(initial[key], after_two[key]) for key in initial)


def test_regularizer_config_errors(tiny_synthetic, tmp_path, capsys):
    seg_config = str(CONFIGS / "demo" / "zoomout-densenet67-tiny_synth-nyu40.yaml")
    base = [*tiny_overrides(tiny_synthetic.root, tmp_path), TINY_SEG]
    assert main(["train-seg", "--config", seg_config, *base, "regularizer.kind=decoder"]) == 2
    assert "regularizer.autoencoder must name" in capsys.readouterr().err
    assert main(["train-seg", "--config", seg_config, *base, "regularizer.kind=magic"]) == 2
    assert "regularizer.kind='magic'" in capsys.readouterr().err
    autoencoder = untrained_autoencoder(tmp_path / "ae.pt")
    for bad in (["regularizer.kind=encoder", f"regularizer.autoencoder={autoencoder}", "regularizer.aux_crop=4"],
                ["regularizer.kind=decoder", "regularizer.random_init=true", "regularizer.frozen=false",
                 "regularizer.aux_crop=0"]):
        assert main(["train-seg", "--config", seg_config, *base, *bad]) == 2
        assert "regularizer.aux_crop=" in capsys.readouterr().err


def subcommands(parser) -> dict:
    """Every subcommand's parser by its words: {"synth": …, "weak localize": …, …}."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found.update({f"{name} {inner}": parser for inner, parser in subcommands(sub).items()})
    return found


def test_bare_labelreg_prints_the_help_not_an_error(capsys):
    assert main([]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("usage: labelreg") and "train-seg" in captured.out and captured.err == ""


def test_version_is_the_installed_package_metadata(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out == f"labelreg {metadata.version('labelreg')}\n"


def test_every_command_runs_a_function_of_the_dispatch_table():
    parser = build_parser()
    top_level = {name for name in subcommands(parser) if " " not in name}
    assert top_level == set(COMMANDS)
    assert parser.parse_args(["weak", "localize", "--config", "c.yaml"]).run is COMMANDS["weak"]
    assert parser.parse_args(["export", "--checkpoint", "a.pt", "--out", "b.pt"]).run is COMMANDS["export"]


@pytest.mark.parametrize("words", sorted(subcommands(build_parser())))
def test_every_subcommand_help_is_user_facing(words, capsys):
    with pytest.raises(SystemExit) as exit:
        main([*words.split(), "--help"])
    assert exit.value.code == 0
    text = capsys.readouterr().out
    usage, _, body = text.partition("\n\n")
    assert usage.startswith(f"usage: labelreg {words}")
    assert not body.startswith(("positional arguments", "options")), "no description"  # says what it does first
    for markup in (":func:", ":class:", ":mod:", "``", ".. "):
        assert markup not in text, markup


PROGRESS_COMMANDS = ["synth", "train-ae", "train-seg", "train-cls", "train-depth", "eval", "query", "demo", "study",
                     *(f"weak {step}" for step in WEAK_STEPS)]


def test_no_progress_is_offered_by_every_command_that_draws_progress_bars():
    parsers = subcommands(build_parser())
    with_flag = {words for words, parser in parsers.items()
                 if any("--no-progress" in action.option_strings for action in parser._actions)}
    assert with_flag == set(PROGRESS_COMMANDS)  # export and bench draw none


def test_no_progress_switches_the_bars_off_for_the_whole_process(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(NO_PROGRESS_ENV, "0")  # restored after the test
    assert progress_wanted()
    assert main(["eval", "--checkpoint", str(tmp_path / "missing.pt"), "--no-progress"]) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert os.environ[NO_PROGRESS_ENV] == "1" and not progress_wanted()


def test_study_help_lists_the_protocols_in_configs_study(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["study", "--help"])
    listed = capsys.readouterr().out.split("protocols in", 1)[1]
    assert {"tiny", "quick", "default", "strong_label_model"} <= set(listed.replace(",", " ").split())
    (tmp_path / "mine.yml").write_text("name: mine\n")
    (tmp_path / "notes.txt").write_text("")
    assert study_protocols(tmp_path).startswith(f"protocols in {tmp_path}: mine (")
    assert study_protocols(tmp_path / "nowhere") == (f"no protocols found in {tmp_path / 'nowhere'}; "
                                                     "give the path of a protocol file")


def test_the_parsers_constants_are_the_ones_their_modules_run():
    from labelreg.bench.cases import PRECISIONS, PRESETS
    from labelreg.demo import STAGES

    assert tuple(sorted(PRESETS)) == BENCH_PRESETS and PRECISIONS == BENCH_PRECISIONS and STAGES == DEMO_STAGES
