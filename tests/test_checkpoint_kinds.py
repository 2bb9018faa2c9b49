"""A file of the wrong kind given to any command that reads a checkpoint: one line naming the file, what it
holds and what was wanted (storage.load_run_checkpoint), exit code 2, no traceback, nothing written."""
import errno
from pathlib import Path

import pytest
import torch

from labelreg import storage
from labelreg.cli import main
from labelreg.config import Config, to_dict
from labelreg.storage import TRAINING_STATE_KEYS, checkpoint_kind, check_checkpoint

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "demo"
SEGMENTER = CONFIGS / "zoomout-densenet67-tiny_synth-nyu40.yaml"
REGULARIZED = CONFIGS / "zoomout-densenet67-tiny_dec128_synth-nyu40.yaml"


def labelreg_checkpoint(task: str, regularizer: str = "none", training: bool = True) -> dict:
    config = to_dict(Config(task=task))
    config["regularizer"]["kind"] = regularizer
    state = {key: {} for key in TRAINING_STATE_KEYS} if training else {}
    return {**state, "model": {"decoder.classifier.weight": torch.zeros(3, 4, 1, 1)}, "config": config}


@pytest.fixture
def files(tmp_path):
    """One file of every kind a user might pass by mistake."""
    contents = {"bare.pt": {"conv.weight": torch.zeros(2, 3)},  # torch.save(model.state_dict())
                "no_config.pt": {"model": {"conv.weight": torch.zeros(2)}, "epoch": 3},
                "list.pt": [torch.zeros(2)],
                "ae.pt": labelreg_checkpoint("autoencoder"),
                "seg_reg.pt": labelreg_checkpoint("segmentation", "decoder"),
                "exported.pt": labelreg_checkpoint("segmentation", training=False)}
    for name, content in contents.items():
        torch.save(content, tmp_path / name)
    return {name: tmp_path / name for name in contents}


def refused(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_the_kind_of_a_loaded_file_in_words():
    assert checkpoint_kind(labelreg_checkpoint("autoencoder")) == "an autoencoder checkpoint (task=autoencoder)"
    assert (checkpoint_kind(labelreg_checkpoint("segmentation", "decoder"))
            == "a segmentation checkpoint (task=segmentation, regularizer.kind=decoder)")
    assert checkpoint_kind({"w": torch.zeros(1)}).startswith("a bare state dict (no config)")
    assert checkpoint_kind({"model": {}, "epoch": 1}) == "a dict without a config (keys: model, epoch)"
    assert checkpoint_kind([1, 2]) == "a list, not a checkpoint dict"
    with pytest.raises(ValueError, match=r"^x.pt is an autoencoder checkpoint \(task=autoencoder\); model.init_from "
                                         r"wants a segmentation checkpoint \(labelreg train-seg writes them\)$"):
        check_checkpoint(labelreg_checkpoint("autoencoder"), "x.pt", purpose="model.init_from", tasks=("segmentation",))


def test_eval_of_a_bare_state_dict_names_the_file_and_what_it_holds(files, capsys):
    err = refused(["eval", "--checkpoint", str(files["bare.pt"])], capsys)
    assert f"{files['bare.pt']} holds a bare state dict (no config)" in err
    assert "labelreg eval wants a labelreg checkpoint written by labelreg" in err
    err = refused(["eval", "--checkpoint", str(files["list.pt"])], capsys)
    assert f"{files['list.pt']} holds a list, not a checkpoint dict" in err


def test_export_refuses_an_autoencoder_and_writes_nothing(files, tmp_path, capsys):
    out = tmp_path / "plain.pt"
    err = refused(["export", "--checkpoint", str(files["ae.pt"]), "--out", str(out)], capsys)
    assert err.endswith(f"{files['ae.pt']} is an autoencoder checkpoint (task=autoencoder); labelreg export wants "
                        "a segmentation checkpoint (labelreg train-seg writes them)")
    assert not out.exists()
    err = refused(["export", "--checkpoint", str(files["no_config.pt"]), "--out", str(out)], capsys)
    assert "holds a dict without a config (keys: model, epoch)" in err


def test_query_checks_each_checkpoint_s_kind_before_reading_any_data(files, capsys):
    err = refused(["query", "--autoencoder", str(files["seg_reg.pt"]), "--image", "0"], capsys)
    assert err.endswith(f"{files['seg_reg.pt']} is a segmentation checkpoint (task=segmentation, regularizer.kind="
                        "decoder); --autoencoder wants an autoencoder checkpoint (labelreg train-ae writes them)")
    err = refused(["query", "--segmenter", str(files["ae.pt"]), "--image", "0"], capsys)
    assert "--segmenter wants a segmentation checkpoint" in err
    err = refused(["query", "--autoencoder", str(files["ae.pt"]), "--segmenter", str(files["bare.pt"]),
                   "--reference-from", "images", "--image", "0"], capsys)  # the reference file is checked too
    assert f"{files['bare.pt']} holds a bare state dict" in err


def test_training_refuses_wrong_start_files_before_it_claims_the_run_directory(files, tmp_path, capsys):
    run_dir = tmp_path / "runs" / "demo"  # the configs' output_dir is relative: tests run in tmp_path
    err = refused(["train-seg", "--config", str(SEGMENTER), "--resume-from", str(files["no_config.pt"])], capsys)
    assert f"{files['no_config.pt']} holds a dict without a config" in err and "--resume-from wants" in err
    err = refused(["train-seg", "--config", str(SEGMENTER), "--resume-from", str(files["ae.pt"])], capsys)
    assert "is an autoencoder checkpoint (task=autoencoder); --resume-from wants a segmentation checkpoint" in err
    err = refused(["train-seg", "--config", str(SEGMENTER), "--resume-from", str(files["exported.pt"])], capsys)
    assert "without optimizer, scheduler" in err and "wants a training checkpoint" in err
    err = refused(["train-seg", "--config", str(SEGMENTER), f"model.init_from={files['ae.pt']}"], capsys)
    assert err.endswith(f"{files['ae.pt']} is an autoencoder checkpoint (task=autoencoder); model.init_from "
                        "wants a segmentation checkpoint (labelreg train-seg writes them)")
    err = refused(["train-seg", "--config", str(REGULARIZED), f"regularizer.autoencoder={files['seg_reg.pt']}"], capsys)
    assert err.endswith(f"{files['seg_reg.pt']} is a segmentation checkpoint (task=segmentation, regularizer.kind="
                        "decoder); regularizer.autoencoder wants an autoencoder checkpoint (labelreg train-ae "
                        "writes them)")
    err = refused(["train-seg", "--config", str(REGULARIZED), f"regularizer.autoencoder={files['bare.pt']}"], capsys)
    assert "holds a bare state dict (no config)" in err and "regularizer.autoencoder wants" in err
    assert not run_dir.exists()  # refused before anything was written


def test_a_read_only_output_is_named_with_the_command_s_own_option(files, tmp_path, monkeypatch, capsys):
    """export writes to --out: the hint names --out (not output_dir=, which export has not), and the error
    names the target even though removing the temporary fails too on a read-only file system."""
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(args[0]))

    monkeypatch.setattr(storage, "open", read_only, raising=False)
    monkeypatch.setattr(Path, "unlink", read_only)
    out = tmp_path / "plain.pt"
    err = refused(["export", "--checkpoint", str(files["exported.pt"]), "--out", str(out)], capsys)
    assert err == (f"labelreg export: error: permission denied or read-only file system: {out}; make it "
                   "writable/readable or set --out to a writable folder")
