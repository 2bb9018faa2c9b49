"""The segmentation task: multi-scale and flipped inference (thesis §3.5.1), prediction PNGs, the
asymmetric loss' class frequencies (thesis §3.3.2), and a run that leaves its config as it was loaded."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from labelreg.cli import main
from labelreg.config import ConfigError, load_config, to_dict
from labelreg.data import CAMVID_CLASSES
from labelreg.data.build import build_dataset
from labelreg.engine import RunDirectoryError
from labelreg.losses import median_frequency_weights, presence_pixels
from labelreg.models.autoencoder import LabelAutoencoder
from labelreg.palette import CAMVID_COLOURS, IGNORE_INDEX, VOC_BACKGROUND_COLOUR, voc_palette
from labelreg.storage import load_checkpoint, save_checkpoint
from labelreg.tasks import TASKS, model_from_checkpoint
from labelreg.tasks.evaluate import evaluation_loader, format_metrics, predict_at_size
from labelreg.tasks.inference import predict_probabilities
from labelreg.tasks.resolved import RESOLVED_FILE, read_resolved
from labelreg.tasks import segmentation
from labelreg.tasks.autoencoder import reconstruction_panels
from labelreg.tasks.segmentation import build_model, loop_spec
from labelreg.viz import class_colours
from tests.data.test_camvid import REAL as REAL_CAMVID, SPLITS, real_camvid_layout, write_layout

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SEG_CONFIG = CONFIGS / "demo" / "zoomout-densenet67-tiny_synth-nyu40.yaml"
TINY_SEG = ("model.options={hidden: 16, backbone_options: {growth_rate: 8, block_config: [1, 1, 1, 1], "
            "stem_channels: [8, 8, 8]}}")


class SizeModel(nn.Module):
    """Class 0's logit is the input height minus 48 everywhere, class 1's is 0: the answer depends only on
    the scale the image is run at (32 rows: class 1; 64 or 96 rows: class 0)."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logit = torch.full_like(x[:, :1], float(x.shape[-2] - 48))
        return {"seg": torch.cat([logit, torch.zeros_like(logit)], 1)}


class RampModel(nn.Module):
    """Class 0's logit rises from -1 (left) to 3 (right), class 1's is 0, whatever the input: flipping
    the input and the output back reverses the ramp, so the flip average favours class 0 everywhere."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        height, width = x.shape[-2:]
        ramp = torch.linspace(-1.0, 3.0, width).expand(x.shape[0], 1, height, width)
        return {"seg": torch.cat([ramp, torch.zeros_like(ramp)], 1)}


def test_multi_scale_probabilities_are_the_mean_over_the_scales():
    image = torch.randn(2, 3, 32, 40)
    sigmoid = torch.sigmoid(torch.tensor([32.0 - 48, 64.0 - 48, 96.0 - 48, 16.0 - 48]))
    probabilities = predict_probabilities(SizeModel(), image, scales=(1.0, 2.0, 3.0))
    assert probabilities.shape == (2, 2, 32, 40)
    assert torch.allclose(probabilities[:, 0], sigmoid[:3].mean().expand(2, 32, 40), atol=1e-6)
    # a shorter side of 16 adds the 16×20 input
    both = predict_probabilities(SizeModel(), image, scales=(1.0, 2.0, 3.0), short_sides=(16,))
    assert torch.allclose(both[:, 0], sigmoid.mean().expand(2, 32, 40), atol=1e-6)


def test_flip_averages_the_prediction_of_the_mirrored_image():
    image = torch.randn(1, 3, 8, 5)
    ramp = torch.linspace(-1.0, 3.0, 5)
    plain = predict_probabilities(RampModel(), image)
    flipped = predict_probabilities(RampModel(), image, flip=True)
    assert torch.allclose(plain[0, 0], torch.sigmoid(ramp).expand(8, 5), atol=1e-6)
    expected = (torch.sigmoid(ramp) + torch.sigmoid(ramp.flip(0))) / 2
    assert torch.allclose(flipped[0, 0], expected.expand(8, 5), atol=1e-6)
    assert bool((flipped[0, 0] > 0.5).all()) and not bool((plain[0, 0] > 0.5).all())


def _batches(sizes=((32, 40), (32, 40))):
    """One batch of uint8 images, all-zero labels (padded with ignore), names and original sizes."""
    height, width = max(h for h, _ in sizes), max(w for _, w in sizes)
    label = torch.full((len(sizes), height, width), IGNORE_INDEX, dtype=torch.int64)
    for index, (h, w) in enumerate(sizes):
        label[index, :h, :w] = 0
    return [{"image": torch.randint(0, 255, (len(sizes), 3, height, width), dtype=torch.uint8), "label": label,
             "name": [f"img{index}" for index in range(len(sizes))], "size": torch.tensor(sizes)}]


@pytest.mark.parametrize("overrides, model, single, averaged", [
    (["eval.scales=[1.0,2.0,3.0]"], SizeModel(), 0.0, 1.0),  # 32 rows alone: all class 1; with 64, 96: class 0
    (["eval.flip=true"], RampModel(), 0.75, 1.0),  # the left quarter's class-0 logit is negative
], ids=["scales", "flip"])
def test_eval_settings_reach_the_segmentation_task(overrides, model, single, averaged):
    cfg = load_config(SEG_CONFIG, ["data.num_workers=0"])
    plain = loop_spec(cfg, model, ["a", "b"]).evaluate(model, _batches(), torch.device("cpu"))
    assert plain["pixel_acc"] == pytest.approx(single, abs=0.03)
    cfg = load_config(SEG_CONFIG, ["data.num_workers=0", *overrides])
    assert loop_spec(cfg, model, ["a", "b"]).evaluate(model, _batches(), torch.device("cpu"))["pixel_acc"] == averaged


def test_saved_predictions_are_voc_palette_pngs_of_the_predicted_classes(tmp_path):
    cfg = load_config(SEG_CONFIG, ["data.num_workers=0"])
    model = RampModel()
    loop_spec(cfg, model, ["a", "b"], save_predictions=tmp_path).evaluate(
        model, _batches(sizes=((32, 40), (20, 30))), torch.device("cpu"))
    for name, (height, width) in (("img0", (32, 40)), ("img1", (20, 30))):
        picture = Image.open(tmp_path / f"{name}.png")
        assert picture.mode == "P" and picture.size == (width, height)  # cropped back to the image's own size
        assert picture.getpalette()[:3 * 21] == voc_palette()[:21].flatten().tolist()
        expected = (torch.linspace(-1.0, 3.0, 40)[:width] < 0).long().expand(height, width).numpy()
        assert np.array_equal(np.asarray(picture), expected)  # class 1 where the ramp is negative, else 0


def test_a_regularized_asymmetric_run_keeps_its_config_and_records_what_it_derived(tiny_synthetic, tmp_path):
    overrides = [f"data.root={tiny_synthetic.root}", f"output_dir={tmp_path}", "name=tiny", "data.crop_size=[32,48]",
                 "data.batch_size=4", "data.eval_batch_size=4", "train.epochs=1", "data.num_workers=0", TINY_SEG,
                 "data.train_limit=6", "data.val_limit=4", "regularizer.kind=decoder", "regularizer.random_init=true",
                 "regularizer.frozen=false", "regularizer.variant=32", "train.loss=asymmetric"]
    cfg = load_config(SEG_CONFIG, overrides)
    TASKS["segmentation"].train(cfg)
    run = tmp_path / "tiny"
    checkpoint = load_checkpoint(run / "checkpoints" / "last.pt")
    metrics = TASKS["segmentation"].evaluate_checkpoint(cfg, checkpoint, cfg.data.val_split, aux=True,
                                                        resolved=read_resolved(run))
    assert cfg == load_config(SEG_CONFIG, overrides)  # deep comparison of every section
    assert checkpoint["config"]["train"]["loss_weights"] == {} and checkpoint["config"]["regularizer"]["tap"] is None

    resolved = json.loads((run / RESOLVED_FILE).read_text())
    model = model_from_checkpoint(checkpoint, with_regularizer=True, num_classes=40)
    assert resolved["loss_weights"] == {"aux": 0.5} and resolved["autoencoder_variant"] == "32"
    assert resolved["tap"] == model.tap and model.decoder.classifier.in_channels == 32
    assert metrics["aux_miou"] == pytest.approx(checkpoint["metrics"]["val/aux_miou"], abs=1e-6)
    assert checkpoint["metrics"]["weight/aux"] == 0.5  # the loss weights the engine used

    # the class frequencies: every labeled pixel of the (limited) training split, counted once
    counts = torch.zeros(40, dtype=torch.int64)
    for sample in build_dataset(cfg.data, cfg.data.train_split, limit=cfg.data.train_limit):
        label = torch.as_tensor(sample["label"])
        counts += torch.bincount(label[label != IGNORE_INDEX].flatten(), minlength=40)
    stored = json.loads((run / "class_frequencies.json").read_text())
    assert stored["pixels"] == counts.tolist() and sum(stored["pixels"]) > 0
    assert stored["frequencies"] == pytest.approx((counts.double() / counts.sum()).tolist())
    assert resolved["class_frequencies"] == pytest.approx(stored["frequencies"])

    # a second run into the finished folder is refused before it writes anything there
    written = {name: (run / name).read_bytes() for name in (RESOLVED_FILE, "class_frequencies.json")}
    (run / "class_frequencies.json").unlink()  # would be counted and written again by a run that got this far
    with pytest.raises(RunDirectoryError, match="already holds checkpoints"):
        TASKS["segmentation"].train(load_config(SEG_CONFIG, overrides + ["train.loss_weights={aux: 0.25}"]))
    assert (run / RESOLVED_FILE).read_bytes() == written[RESOLVED_FILE]
    assert not (run / "class_frequencies.json").exists()


def test_one_function_rebuilds_autoencoders_and_regularized_segmenters_from_their_checkpoints(tmp_path):
    torch.manual_seed(0)
    phase_one = tmp_path / "ae.pt"
    autoencoder = LabelAutoencoder(21, "32")
    save_checkpoint(phase_one, {"model": autoencoder.state_dict(), "config": {"task": "autoencoder",
                                                                             "model": {"variant": "32"}}})
    rebuilt = model_from_checkpoint(load_checkpoint(phase_one))
    assert isinstance(rebuilt, LabelAutoencoder) and rebuilt.variant == "32"
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), autoencoder.state_dict().values()))
    with pytest.raises(ConfigError, match="no regularizer branch"):
        model_from_checkpoint(load_checkpoint(phase_one), with_regularizer=True)

    # a frozen phase-one decoder (random_init false): the phase-one file is not needed to rebuild the run
    cfg = load_config(SEG_CONFIG, [TINY_SEG, "regularizer.kind=decoder", f"regularizer.autoencoder={phase_one}"])
    model = build_model(cfg, 21).eval()
    checkpoint = {"model": model.state_dict(), "config": to_dict(cfg)}
    phase_one.unlink()
    image = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        expected = model(image)
        regularized = model_from_checkpoint(checkpoint, with_regularizer=True, num_classes=21).eval()
        plain = model_from_checkpoint(checkpoint, num_classes=21).eval()
        assert torch.equal(regularized(image)["aux_seg"], expected["aux_seg"])
        assert torch.equal(plain(image)["seg"], expected["seg"]) and "aux_seg" not in plain(image)
    assert cfg == load_config(SEG_CONFIG, [TINY_SEG, "regularizer.kind=decoder", f"regularizer.autoencoder={phase_one}"])
    with pytest.raises(ConfigError, match="known tasks"):
        model_from_checkpoint({"model": {}, "config": {"task": "poetry"}})


# ---------------------------------------------------------------------------- CamVid: class weights, scoring
def test_median_frequency_weights_by_hand():
    """Image A (2×4): class 0 ×5, class 1 ×2, one ignored; image B: class 2 ×6, class 0 ×2; image C (2×3, padded
    to 2×4 with ignore): class 1 ×6. Frequencies over the pixels of the images a class occurs in:
    f0 = 7/16, f1 = (2 + 6)/(8 + 6) = 4/7, f2 = 6/8; median 4/7; class 3 never occurs."""
    labels = torch.tensor([[[0, 0, 0, 1], [1, 255, 0, 0]], [[2, 2, 2, 2], [2, 2, 0, 0]],
                           [[1, 1, 1, 255], [1, 1, 1, 255]]])
    present = presence_pixels(labels, 4, torch.tensor([[2, 4], [2, 4], [2, 3]]))
    assert present.tolist() == [16, 14, 8, 0]
    assert presence_pixels(labels[:2], 4).tolist() == [16, 8, 8, 0]  # no sizes: every image is H×W
    weights = median_frequency_weights(torch.tensor([7 / 16, 4 / 7, 6 / 8, 0.0], dtype=torch.float64))
    assert weights.tolist() == pytest.approx([(4 / 7) / (7 / 16), 1.0, (4 / 7) / (6 / 8), 0.0], rel=1e-6)
    # an even number of classes: the mean of the middle two
    assert median_frequency_weights(torch.tensor([0.1, 0.2, 0.4, 0.8])).tolist() == pytest.approx([3, 1.5, 0.75, 0.375])


class HeightModel(nn.Module):
    """11 classes: class 0's logit is the input height minus 4.5, every other class' is 0 (class 1 wins ties), so
    a 6-row input predicts class 0 everywhere and a 3-row one class 1; ``aux_seg`` is the same at a third of it."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = torch.zeros(x.shape[0], 11, *x.shape[-2:])
        logits[:, 0] = x.shape[-2] - 4.5
        return {"seg": logits, "aux_seg": logits[..., ::3, ::3], "features": {}}


def test_predict_at_size_upsamples_primary_and_auxiliary_outputs():
    image = torch.randn(2, 3, 6, 8)
    model = HeightModel()
    same = predict_at_size(model, image, (6, 8))
    assert same["aux_seg"].shape[-2:] == (2, 3)  # at the image's own size: the model's outputs as they are
    small = predict_at_size(model, image, (3, 4))
    assert small["seg"].shape == small["aux_seg"].shape == (2, 11, 6, 8)
    assert bool((small["seg"].argmax(1) == 1).all()) and bool((small["aux_seg"][:, 0] == -1.5).all())


def test_camvid_is_scored_on_full_labels_read_at_the_short_side_with_its_unseen_part(tmp_path):
    folder = write_layout(tmp_path, SPLITS)
    cfg = load_config(SEG_CONFIG, ["data.dataset=camvid", f"data.root={folder}", "data.synthesize_if_missing=false",
                                   "data.num_workers=0", "data.eval_batch_size=2", "eval.scales=[]", "eval.short_sides=[3]"])
    dataset, loader = evaluation_loader(cfg, "test", torch.device("cpu"))
    metrics = loop_spec(cfg, HeightModel(), CAMVID_CLASSES).evaluate(HeightModel(), loader, torch.device("cpu"))
    labels = np.stack([np.asarray(dataset[i]["label"]) for i in range(3)])  # 6×8 each: read at 3×4, scored at 6×8

    def by_hand(label: np.ndarray) -> tuple[float, float]:  # every pixel predicted class 1
        valid = label != IGNORE_INDEX
        classes = set(np.unique(label[valid]).tolist()) | {1}
        iou_1 = (label == 1).sum() / valid.sum()
        return iou_1 / len(classes), (label == 1).sum() / valid.sum()

    assert (metrics["miou"], metrics["pixel_acc"]) == pytest.approx(by_hand(labels))
    assert (metrics["Seq05VD_miou"], metrics["Seq05VD_pixel_acc"]) == pytest.approx(by_hand(labels[1:]))
    assert metrics["iou/Pole"] == 0.0 and metrics["iou/Building"] == pytest.approx(by_hand(labels)[1])
    assert "Seq05VD_miou" in format_metrics(metrics)
    unseen = load_config(SEG_CONFIG, ["data.dataset=camvid", f"data.root={folder}", "data.synthesize_if_missing=false",
                                      "data.num_workers=0"])  # no short side: the model reads 6×8, class 0 everywhere
    full = loop_spec(unseen, HeightModel(), CAMVID_CLASSES).evaluate(HeightModel(), loader, torch.device("cpu"))
    assert full["pixel_acc"] == pytest.approx((labels == 0).sum() / (labels != IGNORE_INDEX).sum())


@pytest.mark.skipif(not (REAL_CAMVID / "train.txt").is_file(), reason=f"CamVid not found in {REAL_CAMVID}")
def test_train_seg_and_eval_on_real_camvid_frames(tmp_path, capsys, one_thread):
    train = ["0001TP_006690", "0006R0_f02130", "0016E5_05190", "0016E5_08190"]
    folder = real_camvid_layout(tmp_path / "data", {"train": train, "val": ["0016E5_07959"],
                                                    "test": ["0001TP_008550", "Seq05VD_f00000"]})
    overrides = ["data.dataset=camvid", f"data.root={folder.parent}", "data.synthesize_if_missing=false",
                 "data.train_limit=null", "data.val_split=val", "data.crop_size=[48,64]", "data.crop_area=null",
                 "data.batch_size=2", "data.eval_batch_size=2", "data.num_workers=0", "eval.scales=[]", "eval.short_sides=[48]",
                 "train.epochs=1", "train.eval_every=1", "train.loss=median_frequency", f"output_dir={tmp_path}",
                 "name=camvid", TINY_SEG]
    assert main(["train-seg", "--config", str(SEG_CONFIG), *overrides]) == 0
    run = tmp_path / "camvid"
    stored = json.loads((run / "class_frequencies.json").read_text())
    raw = [np.array(Image.open(REAL_CAMVID / "trainannot" / f"{name}.png")) for name in train]
    pixels = sum(np.bincount(label.ravel(), minlength=12)[:11] for label in raw)
    present = sum((np.bincount(label.ravel(), minlength=12)[:11] > 0) * label.size for label in raw)
    assert stored["pixels"] == pixels.tolist() and stored["presence_pixels"] == present.tolist()
    frequencies = np.where(present > 0, pixels / np.maximum(present, 1), 0)
    expected = np.where(frequencies > 0, np.median(frequencies[frequencies > 0]) / np.where(frequencies > 0, frequencies, 1), 0)
    assert read_resolved(run)["class_frequencies"] == pytest.approx(frequencies.tolist())
    weights = median_frequency_weights(torch.tensor(stored["presence_frequencies"], dtype=torch.float64))
    assert weights.tolist() == pytest.approx(expected.tolist(), rel=1e-5)

    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run / "checkpoints" / "best.pt"), "--split", "test"]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((run / "eval_test.json").read_text())["metrics"]
    assert {"miou", "Seq05VD_miou", "iou/Bicyclist"} <= set(metrics) and "Seq05VD_miou" in printed
    assert "on camvid test" in printed and all(0 <= metrics[key] <= 1 for key in ("miou", "Seq05VD_miou"))
    exported = tmp_path / "exported.pt"
    assert main(["export", "--checkpoint", str(run / "checkpoints" / "best.pt"), "--out", str(exported)]) == 0
    assert main(["eval", "--checkpoint", str(exported), "--split", "test", "--out", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["metrics"]["Seq05VD_miou"] == metrics["Seq05VD_miou"]


def test_the_evaluation_figure_shows_what_was_scored(tmp_path, monkeypatch):
    """``labelreg eval --figure`` draws the prediction the metrics scored: read at the short side, upsampled."""
    folder = write_layout(tmp_path, SPLITS)
    cfg = load_config(SEG_CONFIG, ["data.dataset=camvid", f"data.root={folder}", "data.synthesize_if_missing=false",
                                   "data.num_workers=0", "eval.scales=[]", "eval.short_sides=[3]"])
    drawn = {}
    monkeypatch.setattr(segmentation, "model_from_checkpoint", lambda *args, **kwargs: HeightModel())
    monkeypatch.setattr(segmentation, "segmentation_figure", lambda image, label, columns, path, **_: drawn.update(columns))
    metrics = segmentation.evaluate_checkpoint(cfg, {"model": {}}, "test", figure=tmp_path / "f.png")
    assert drawn["prediction"].shape == (3, 6, 8) and bool((drawn["prediction"] == 1).all())
    assert drawn["auxiliary (decoder)"].shape == (3, 6, 8) and metrics["Seq05VD_miou"] > 0


class ClassTwoModel(nn.Module):
    """Predicts class 2 everywhere, at the input's size."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = torch.zeros(x.shape[0], 11, *x.shape[-2:])
        logits[:, 2] = 1.0
        return {"seg": logits, "features": {}}


@pytest.mark.parametrize("dataset, colour_of", [("camvid", lambda c: CAMVID_COLOURS[c]),
                                                ("voc", lambda c: tuple(voc_palette(256)[c]))])
def test_tensorboard_examples_are_drawn_in_the_data_sets_colours(dataset, colour_of):
    """val/examples (segmentation) and the autoencoder's reconstructions use the data set's palette, as the
    figures do: CamVid's Sky is grey 128,128,128, not VOC's class-0 colour."""
    cfg = load_config(SEG_CONFIG, [f"data.dataset={dataset}", "eval.scales=[1.0]", "eval.short_sides=[]",
                                   "eval.flip=false"])
    batch = {"image": torch.randn(1, 3, 6, 8), "label": torch.zeros(1, 6, 8, dtype=torch.long)}
    names = CAMVID_CLASSES if dataset == "camvid" else [str(c) for c in range(11)]
    grid = loop_spec(cfg, ClassTwoModel(), names).visualize(ClassTwoModel(), batch)
    pixel = lambda panel: tuple(int(v) for v in (grid[:, 4, 4 + 12 * panel] * 255).round())  # noqa: E731 (4-px gaps)
    expected_sky = CAMVID_COLOURS[0] if dataset == "camvid" else tuple(int(v) for v in VOC_BACKGROUND_COLOUR)
    assert pixel(1) == expected_sky and pixel(2) == tuple(int(v) for v in colour_of(2))
    autoencoder = LabelAutoencoder(11, "32").eval()
    panels = reconstruction_panels(autoencoder, {"label": batch["label"]}, 1, class_colours(names, dataset))
    assert tuple(int(v) for v in panels[0][0][0, 0]) == expected_sky
