"""Bad files, full disks and wrong checkpoints: one line naming the file (or index, or key), exit code 2."""
import errno
import os
import shutil
from pathlib import Path

import pytest
import torch

from labelreg.cli import main
from labelreg.storage import save_checkpoint

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
AE_CONFIG = str(CONFIGS / "demo" / "ae-128_synth-nyu40.yaml")
SEG_CONFIG = str(CONFIGS / "demo" / "zoomout-densenet67-tiny_synth-nyu40.yaml")
TINY_SEG = ("model.options={hidden: 16, backbone_options: {growth_rate: 8, block_config: [1, 1, 1, 1], "
            "stem_channels: [8, 8, 8]}}")


def tiny(root, out, *extra):
    return [f"data.root={root}", f"output_dir={out}", "name=tiny", "data.crop_size=[32,48]", "data.batch_size=4",
            "data.eval_batch_size=4", "train.epochs=1", "train.log_every=1", "data.num_workers=0",
            "data.synthesize_if_missing=false", *extra]


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


class Evil:
    """Unpickling this would create a file: proof that the loader ran code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_truncated_mat_names_the_file(tiny_synthetic, tmp_path, capsys):
    root = tmp_path / "nyu"
    shutil.copytree(tiny_synthetic.root / "nyu", root)
    mat = root / "nyu_depth_v2_labeled.mat"
    mat.write_bytes(mat.read_bytes()[:4096])
    assert main(["train-ae", "--config", AE_CONFIG, *tiny(root, tmp_path / "runs")]) == 2
    err = error_line(capsys)
    assert str(mat) in err and "truncated" in err and "again" in err


def voc_copy(tiny_synthetic, tmp_path):
    root = tmp_path / "voc"
    shutil.copytree(tiny_synthetic.voc_root, root / "VOCdevkit" / "VOC2012")
    return root


@pytest.mark.parametrize("workers", [0, 1])
def test_truncated_jpeg_names_the_file_and_index(tiny_synthetic, tmp_path, capsys, workers):
    root = voc_copy(tiny_synthetic, tmp_path)
    first = (root / "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt").read_text().split()[0]
    jpeg = root / "VOCdevkit/VOC2012/JPEGImages" / f"{first}.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:300])
    # in a DataLoader worker too, where torch wraps the error in the worker's traceback
    assert main(["train-ae", "--config", AE_CONFIG, *tiny(root, tmp_path / "runs", "data.dataset=voc",
                                                          "data.val_split=val", "data.canvas=[64,80]"),
                 f"data.num_workers={workers}"]) == 2
    err = error_line(capsys)
    assert f"({first}): {jpeg}: cannot read the image" in err and "truncated" in err


def test_empty_split_names_the_split_and_file(tiny_synthetic, tmp_path, capsys):
    root = voc_copy(tiny_synthetic, tmp_path)
    listing = root / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt"
    listing.write_text("")
    assert main(["train-ae", "--config", AE_CONFIG, *tiny(root, tmp_path / "runs", "data.dataset=voc",
                                                          "data.val_split=val")]) == 2
    assert f"split 'val' lists no images ({listing})" in error_line(capsys)


def test_read_only_output_directory(tiny_synthetic, tmp_path, monkeypatch, capsys):
    out = tmp_path / "readonly"
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if str(self).startswith(str(out)):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    assert main(["train-ae", "--config", AE_CONFIG, *tiny(tiny_synthetic.root, out)]) == 2
    err = error_line(capsys)
    assert f"read-only file system: {out / 'tiny'}" in err and "output_dir=" in err


def test_disk_full_names_the_path(tiny_synthetic, tmp_path, monkeypatch, capsys):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    assert main(["train-ae", "--config", AE_CONFIG, *tiny(tiny_synthetic.root, tmp_path)]) == 2
    last = tmp_path / "tiny" / "checkpoints" / "last.pt"
    assert f"no space left on device writing {last}" in error_line(capsys)
    assert list(last.parent.iterdir()) == []  # no partial file left


def test_segmenter_checkpoint_as_autoencoder(tiny_synthetic, tmp_path, capsys):
    wrong = tmp_path / "seg.pt"
    save_checkpoint(wrong, {"model": {"segmenter.head.weight": torch.zeros(2)}, "config": {"task": "segmentation"}})
    assert main(["train-seg", "--config", SEG_CONFIG, *tiny(tiny_synthetic.root, tmp_path), TINY_SEG,
                 "regularizer.kind=decoder", f"regularizer.autoencoder={wrong}"]) == 2
    err = error_line(capsys)
    assert err.endswith(f"{wrong} is a segmentation checkpoint (task=segmentation); regularizer.autoencoder wants an "
                        "autoencoder checkpoint (labelreg train-ae writes them)")


@pytest.mark.parametrize("kind", ["malicious", "not-tensors"])
def test_bad_pretrained_backbone_file(tiny_synthetic, tmp_path, capsys, kind):
    weights, proof = tmp_path / "backbone.pth", tmp_path / "code-ran"
    torch.save({"features.conv0.weight": Evil(proof)} if kind == "malicious" else [1, 2, 3], weights)
    assert main(["train-seg", "--config", SEG_CONFIG, *tiny(tiny_synthetic.root, tmp_path), TINY_SEG,
                 f"model.pretrained_backbone={weights}"]) == 2
    err = error_line(capsys)
    assert str(weights) in err and not proof.exists()
    assert ("refused: it holds code or non-tensor objects" if kind == "malicious" else "not a state dict") in err


def test_unsafe_checkpoint_refusal_explains_instead_of_advising_weights_only_false(tmp_path, capsys):
    checkpoint, proof = tmp_path / "evil.pt", tmp_path / "code-ran"
    torch.save({"model": {"w": Evil(proof)}, "config": {}}, checkpoint)
    assert main(["eval", "--checkpoint", str(checkpoint)]) == 2
    err = error_line(capsys)
    assert f"{checkpoint} was refused: it holds code or non-tensor objects" in err and "re-save" in err
    assert "weights_only=False" not in err and not proof.exists()
