"""The regularizer's mechanism diagnostics: gradient agreement and code agreement against hand-computed
values, and a regularized run that takes exactly the same steps with them as without."""
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from labelreg.config import load_config
from labelreg.models.autoencoder import DOWNSAMPLING, LabelAutoencoder, one_hot_labels
from labelreg.storage import load_checkpoint, save_checkpoint
from labelreg.tasks import TASKS
from labelreg.tasks.diagnostics import DIAGNOSTICS_FILE, checkpoint_epochs, code_agreement, gradient_agreement

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SEG_CONFIG = CONFIGS / "demo" / "zoomout-densenet67-tiny_synth-nyu40.yaml"
TINY_SEG = ("model.options={hidden: 16, backbone_options: {growth_rate: 8, block_config: [1, 1, 1, 1], "
            "stem_channels: [8, 8, 8]}}")


class TwoTerms(nn.Module):
    """backbone: y = W x (2×2, no bias), then dropout on a copy that no loss reads (it draws random numbers)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(2, 2, bias=False)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> dict:
        y = self.backbone(x)
        return {"y": y, "noise": self.dropout(y)}


def two_terms(outputs: dict, batch: dict) -> dict:
    y = outputs["y"][0]
    return {"ce": 3 * y[0], "aux": 4 * y[0] + 4 * y[1]}


def test_gradient_agreement_matches_hand_computed_gradients_and_leaves_the_rng_alone():
    # x = (1, 0): d(3 y0)/dW = [[3, 0], [0, 0]]; 0.5 × d(4 y0 + 4 y1)/dW = [[2, 0], [2, 0]]
    model = TwoTerms()
    batch = {"image": torch.tensor([[1.0, 0.0]])}
    torch.manual_seed(3)
    measured = gradient_agreement(model, batch, two_terms, {"aux": 0.5})
    after = torch.rand(4)
    torch.manual_seed(3)
    assert torch.equal(after, torch.rand(4))  # the dropout's draws were put back
    assert measured["main_norm"] == pytest.approx(3.0)
    assert measured["aux_norm"] == pytest.approx(math.sqrt(8))
    assert measured["ratio"] == pytest.approx(math.sqrt(8) / 3)
    assert measured["cosine"] == pytest.approx(6 / (3 * math.sqrt(8)))
    assert model.backbone.weight.grad is None  # measured on a copy


def test_code_agreement_is_one_for_the_encoders_own_code_and_minus_one_for_its_negation():
    torch.manual_seed(0)
    encoder = LabelAutoencoder(3, "32").encoder.eval()
    label = torch.randint(0, 3, (2, 20, 35))
    label[:, :4, :4] = 255

    class FromLabel(nn.Module):
        """Reads the label out of the image's first channel and predicts sign × the encoder's code."""

        def __init__(self, sign: float) -> None:
            super().__init__()
            self.sign = sign

        def forward(self, image: torch.Tensor) -> dict:
            label = image[:, 0].long()
            padded = F.pad(label, (0, -label.shape[-1] % DOWNSAMPLING, 0, -label.shape[-2] % DOWNSAMPLING), value=255)
            return {"aux_code": self.sign * encoder(one_hot_labels(padded, 3))}

    batches = [{"image": label[:, None].float().expand(-1, 3, -1, -1), "label": label}]
    code = FromLabel(1.0)(batches[0]["image"])["aux_code"]
    assert code.shape[-2:] == (2, 3)  # ⌈20/16⌉ × ⌈35/16⌉ cells
    live = (code.norm(dim=1) > 0).float().mean().item()  # cells with a non-zero code (cosine 0 elsewhere)
    same = code_agreement(FromLabel(1.0), encoder, batches, lambda b: b, torch.device("cpu"), 3)
    opposite = code_agreement(FromLabel(-1.0), encoder, batches, lambda b: b, torch.device("cpu"), 3)
    assert same["code_cosine"] == pytest.approx(live, abs=1e-6)
    assert opposite["code_cosine"] == pytest.approx(-live, abs=1e-6)
    assert same["code_negative_fraction"] == 0 and same["encoder_code_negative_fraction"] == 0
    assert opposite["code_negative_fraction"] == pytest.approx(float((code > 0).float().mean()))


def test_measurement_epochs():
    assert checkpoint_epochs(30) == {"step0": 0, "frac10": 3, "end": 30}
    assert checkpoint_epochs(4) == {"step0": 0, "frac10": 1, "end": 4}
    assert checkpoint_epochs(1) == {"step0": 0, "frac10": 1, "end": 1}


def test_a_run_with_diagnostics_takes_the_same_steps_and_records_them(tiny_synthetic, tmp_path, one_thread):
    phase_one = tmp_path / "ae.pt"
    autoencoder = LabelAutoencoder(40, "32")
    save_checkpoint(phase_one, {"model": autoencoder.state_dict(), "config": {"task": "autoencoder",
                                                                             "model": {"variant": "32"}}})
    base = [f"data.root={tiny_synthetic.root}", f"output_dir={tmp_path}", "data.crop_size=[32,48]",
            "data.batch_size=4", "data.eval_batch_size=4", "train.epochs=2", "data.num_workers=0",
            TINY_SEG.replace("hidden: 16,", "hidden: 16, dropout: 0.5,"), "data.train_limit=6", "data.val_limit=4",
            "regularizer.kind=decoder", f"regularizer.autoencoder={phase_one}"]
    for name, switch in (("plain", "false"), ("measured", "true")):
        TASKS["segmentation"].train(load_config(SEG_CONFIG, [*base, f"name={name}",
                                                             f"regularizer.diagnostics={switch}"]))
    plain = load_checkpoint(tmp_path / "plain" / "checkpoints" / "last.pt")["model"]
    measured = load_checkpoint(tmp_path / "measured" / "checkpoints" / "last.pt")["model"]
    assert plain.keys() == measured.keys()
    assert all(torch.equal(plain[key], measured[key]) for key in plain)
    assert not (tmp_path / "plain" / DIAGNOSTICS_FILE).exists()

    record = json.loads((tmp_path / "measured" / DIAGNOSTICS_FILE).read_text())
    assert record["epochs"] == {"step0": 0, "frac10": 1, "end": 2}
    for name in ("step0", "frac10", "end"):
        assert record["grad_ratio"][name] > 0 and -1 <= record["grad_cosine"][name] <= 1
    assert record["grad_ratio"]["step0"] != record["grad_ratio"]["end"]
    assert -1 <= record["code_cosine"] <= 1 and 0 <= record["code_negative_fraction"] <= 1
    assert record["encoder_code_negative_fraction"] == 0


def test_the_encoder_regularizer_records_gradients_without_code_agreement(tiny_synthetic, tmp_path, one_thread):
    # Fig. 5.4's branch predicts encoder activations, not a decoder code: no aux_code to compare (it crashed)
    phase_one = tmp_path / "ae.pt"
    save_checkpoint(phase_one, {"model": LabelAutoencoder(40, "32").state_dict(),
                                "config": {"task": "autoencoder", "model": {"variant": "32"}}})
    cfg = load_config(SEG_CONFIG, [f"data.root={tiny_synthetic.root}", f"output_dir={tmp_path}", "name=encoder",
                                   "data.crop_size=[32,48]", "data.batch_size=4", "data.eval_batch_size=4",
                                   "train.epochs=1", "data.num_workers=0", TINY_SEG, "data.train_limit=4",
                                   "data.val_limit=4", "regularizer.kind=encoder", f"regularizer.autoencoder={phase_one}",
                                   "regularizer.diagnostics=true"])
    TASKS["segmentation"].train(cfg)
    record = json.loads((tmp_path / "encoder" / DIAGNOSTICS_FILE).read_text())
    assert set(record["grad_ratio"]) == {"step0", "frac10", "end"} and record["grad_ratio"]["end"] > 0
    assert "code_cosine" not in record
