"""Label-space nearest-neighbour introspection: boxes, distances, the on-disk index, queries, CLI."""
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from labelreg.cli import main
from labelreg.config import load_config, to_dict
from labelreg.engine import save_checkpoint
from labelreg.introspect import (CELL, Cells, ImageFeatures, LabelFeatures, RegionIndex, build_index, cells_to_pixel_box, class_box,
                                 grid_shape, pixel_box_to_cells, query_figure, run_query, window_distances)
from labelreg.models import LabelAutoencoder

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


# ---------------------------------------------------------------------------- boxes
@pytest.mark.parametrize("size", [(64, 80), (70, 85), (17, 33)])
def test_cell_boxes_round_trip_through_pixels(size):
    rows, cols = grid_shape(*size)
    assert (rows, cols) == (-(-size[0] // CELL), -(-size[1] // CELL))
    for r0, r1 in itertools.combinations(range(rows + 1), 2):
        for c0, c1 in itertools.combinations(range(cols + 1), 2):
            cells = Cells(r0, c0, r1, c1)
            box = cells_to_pixel_box(cells, size)
            assert box == (16 * r0, 16 * c0, min(16 * r1, size[0]), min(16 * c1, size[1]))  # the last cell is partial
            assert pixel_box_to_cells(box, size) == cells


def test_pixel_boxes_snap_to_nearest_cell_edges():
    assert pixel_box_to_cells((5, 7, 30, 41), (64, 80)) == Cells(0, 0, 2, 3)
    assert pixel_box_to_cells((9, 24, 23, 57), (64, 80)) == Cells(1, 1, 2, 4)  # 9→1, 23→1: thin → centre; 24: tie
    assert pixel_box_to_cells((8, 0, 40, 80), (64, 80)) == Cells(0, 0, 3, 5)  # ties widen the box
    assert pixel_box_to_cells((0, 0, 70, 83), (70, 85)) == Cells(0, 0, 5, 6)  # the border is the last cell's edge
    assert pixel_box_to_cells((0, 0, 70, 82), (70, 85)) == Cells(0, 0, 5, 5)
    assert pixel_box_to_cells((20, 20, 22, 22), (64, 80)) == Cells(1, 1, 2, 2)  # a 2-pixel box keeps its cell
    with pytest.raises(ValueError, match="y0 < y1"):
        pixel_box_to_cells((10, 10, 10, 20), (64, 80))
    with pytest.raises(ValueError, match="<= 80"):
        pixel_box_to_cells((0, 0, 16, 96), (64, 80))


def test_class_box_is_the_largest_connected_region():
    label = np.zeros((20, 30), np.int64)
    label[2:4, 2:4] = 3          # small blob
    label[10:18, 5:25] = 3       # large blob
    assert class_box(label, 3) == (10, 5, 18, 25)
    with pytest.raises(ValueError, match="class 7"):
        class_box(label, 7)


# ---------------------------------------------------------------------------- distances
@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("pooling", ["concat", "mean"])
def test_window_distances_equal_brute_force(metric, pooling):
    torch.manual_seed(0)
    features, query = torch.randn(4, 7, 9, dtype=torch.float64), torch.randn(4, 2, 3, dtype=torch.float64)
    got = window_distances(features, query, metric, pooling)
    assert got.shape == (6, 7)
    for r, c in itertools.product(range(6), range(7)):
        window = features[:, r:r + 2, c:c + 3]
        a, b = (window.flatten(), query.flatten()) if pooling == "concat" else (window.mean((1, 2)), query.mean((1, 2)))
        expected = 1 - torch.dot(a, b) / (a.norm() * b.norm()) if metric == "cosine" else (a - b).norm()
        assert got[r, c].item() == pytest.approx(expected.item(), abs=1e-9)


# ---------------------------------------------------------------------------- index and search
class Scenes(torch.utils.data.Dataset):
    """Hand-made label maps (background 0) with named objects, in the readers' sample format."""

    def __init__(self, scenes, size=(96, 112)):
        self.scenes, self.size = scenes, size

    def __len__(self):
        return len(self.scenes)

    def __getitem__(self, index):
        name, objects = self.scenes[index]
        label = torch.zeros(*self.size, dtype=torch.int64)
        for class_id, (y0, x0, y1, x1) in objects:
            label[y0:y1, x0:x1] = class_id
        image = torch.stack([label * 20 % 255, label * 50 % 255, label * 90 % 255]).to(torch.uint8)
        return {"image": image, "label": label, "index": index, "name": name}


def random_autoencoder(num_classes=6, seed=3):
    torch.manual_seed(seed)
    return LabelAutoencoder(num_classes, "32")


def test_retrieval_finds_the_same_class_and_shape_ahead_of_dissimilar_regions(tmp_path):
    # cell-aligned objects far enough inside the image that the encoder's receptive field never
    # reaches the border: it is translation-equivariant in steps of 16 pixels, so the same object
    # moved by whole cells has exactly the same features
    size = (176, 192)
    reference = Scenes([("bar_of_class_2", [(2, (64, 64, 112, 80))]),
                        ("square_of_class_4", [(4, (64, 64, 96, 96))]),
                        ("square_of_class_2", [(2, (80, 96, 112, 128))]),
                        ("wide_box_of_class_2", [(2, (64, 48, 80, 144))])], size)
    query_set = Scenes([("query", [(2, (64, 64, 96, 96))])], size)
    source = LabelFeatures(random_autoencoder(), torch.device("cpu"))
    index = build_index(source, reference, tmp_path / "index", progress=False)
    result = run_query(index, source, query_set[0], (48, 48, 112, 112), k=4)  # the square, a cell of context
    ranked = [match.image_id for match in result.matches]
    assert ranked[0] == "square_of_class_2" and result.matches[0].distance < 1e-5
    assert result.matches[0].box == (64, 80, 128, 144)  # the same square, one cell of context around it
    assert ranked.index("square_of_class_4") > 0 and ranked.index("bar_of_class_2") > 0
    assert all(match.distance > 0.01 for match in result.matches[1:])


def test_own_image_is_excluded_and_per_image_limits_matches(tmp_path):
    reference = Scenes([(f"scene{i}", [(1 + i % 5, (16 * (i % 3) + 16, 16, 64, 80))]) for i in range(6)])
    source = LabelFeatures(random_autoencoder(), torch.device("cpu"))
    index = build_index(source, reference, tmp_path / "index", progress=False)
    own = run_query(index, source, reference[2], (16, 16, 64, 64), k=3, exclude_self=False)
    assert own.matches[0].image_id == "scene2" and own.matches[0].distance < 1e-6
    assert len({match.image_id for match in own.matches}) == 3  # one region per image by default
    others = run_query(index, source, reference[2], (16, 16, 64, 64), k=3)
    assert "scene2" not in [match.image_id for match in others.matches] and len(others.matches) == 3
    everything = index.search(source(reference[2])[:, 1:4, 1:4], k=500, per_image=None)
    assert len(everything) == 6 * 4 * 5  # every 3×3 window of the six 6×7 grids
    assert [m.distance for m in everything] == sorted(m.distance for m in everything)


def test_index_built_in_chunks_equals_the_one_built_at_once(tiny_synthetic, tmp_path):
    from labelreg.data.nyu import NYUv2Labeled

    dataset = NYUv2Labeled(tiny_synthetic.nyu_mat, "test", splits_path=tiny_synthetic.splits,
                           mapping_path=tiny_synthetic.mapping)
    source = LabelFeatures(LabelAutoencoder(41, "32"), torch.device("cpu"))
    whole = build_index(source, dataset, tmp_path / "whole", chunk_size=1000, progress=False)
    chunked = build_index(source, dataset, tmp_path / "chunked", chunk_size=1, progress=False)
    assert (tmp_path / "whole" / "features.bin").read_bytes() == (tmp_path / "chunked" / "features.bin").read_bytes()
    assert whole.images == chunked.images and whole.num_cells == len(dataset) * 4 * 5
    half = build_index(source, dataset, tmp_path / "half", chunk_size=2, dtype="float16", progress=False)
    assert np.allclose(np.asarray(half.features(), np.float32), whole.features(), atol=1e-2, rtol=1e-2)
    assert torch.equal(whole.image_features(1), source(dataset[1]))


def test_an_incomplete_index_is_refused(tmp_path):
    source = LabelFeatures(random_autoencoder(), torch.device("cpu"))
    build_index(source, Scenes([("a", [(1, (16, 16, 48, 48))])]), tmp_path / "index", progress=False)
    with open(tmp_path / "index" / "features.bin", "r+b") as f:
        f.truncate(100)
    with pytest.raises(ValueError, match="features.bin"):
        RegionIndex.load(tmp_path / "index")
    with pytest.raises(FileNotFoundError, match="build the index"):
        RegionIndex.load(tmp_path / "nowhere")


def test_query_figure_api(tmp_path):
    reference = Scenes([(f"scene{i}", [(1 + i, (16, 16 * i, 64, 16 * i + 48))]) for i in range(4)])
    source = LabelFeatures(random_autoencoder(), torch.device("cpu"))
    index = build_index(source, reference, tmp_path / "index", progress=False)
    result = run_query(index, source, reference[0], (16, 0, 64, 48), k=2)
    lines = result.table().splitlines()
    assert len(lines) == 2 + len(result.matches) == 4  # query line, column header, one row per match
    assert lines[2].split()[1] == result.matches[0].image_id
    assert json.loads(json.dumps(result.as_dict())) == result.as_dict()
    path = query_figure([(result, reference[0]), (result, reference[1])], reference, tmp_path / "grid.png")
    from PIL import Image

    with Image.open(path) as picture:
        assert picture.width > 3 * 150 and picture.height > 2 * 140


class ColourSegmenter(torch.nn.Module):
    """Predicts class 1 where the red channel exceeds the green one, else class 0."""

    def forward(self, x):
        return {"seg": torch.stack([x[:, 1], x[:, 0], x[:, 2] - 100], dim=1)}


def test_image_source_predicts_label_maps_in_the_images_own_pixels():
    image = torch.zeros(3, 37, 53, dtype=torch.uint8)
    image[0, 5:20, 10:30] = 200  # a red patch on black
    predicted = ImageFeatures(ColourSegmenter(), torch.device("cpu")).predict({"image": image})
    expected = torch.zeros(37, 53, dtype=torch.int64)
    expected[5:20, 10:30] = 1
    assert predicted.dtype == torch.int64 and torch.equal(predicted, expected)


# ---------------------------------------------------------------------------- through the CLI
def write_checkpoints(root, out):
    """A phase-one autoencoder and a decoder-regularized tiny segmenter, saved as train-ae / train-seg do."""
    from labelreg.train_seg import build_model

    tiny = ["data.dataset=voc", "data.val_split=val", f"data.root={root}", f"output_dir={out}"]
    ae_cfg = load_config(CONFIGS / "demo" / "ae-128_synth-nyu40.yaml", [*tiny, "name=ae", "model.variant=32"])
    torch.manual_seed(0)
    autoencoder = LabelAutoencoder(21, "32")
    ae_path = ae_cfg.run_dir / "checkpoints" / "best.pt"
    save_checkpoint(ae_path, {"model": autoencoder.state_dict(), "config": to_dict(ae_cfg)})
    seg_cfg = load_config(CONFIGS / "demo" / "zoomout-densenet67-tiny_dec128_synth-nyu40.yaml",
                          [*tiny, "name=seg", f"regularizer.autoencoder={ae_path}", "model.options.hidden=16"])
    model = build_model(seg_cfg, 21)
    seg_path = seg_cfg.run_dir / "checkpoints" / "best.pt"
    save_checkpoint(seg_path, {"model": model.state_dict(), "config": to_dict(seg_cfg)})
    return ae_path, seg_path


def test_cli_queries_from_labels_and_from_images_on_a_voc_layout(tiny_synthetic, tmp_path, capsys):
    ae_path, seg_path = write_checkpoints(tiny_synthetic.root, tmp_path / "runs")
    from labelreg.data.voc import VOCSegmentation

    train_ids = VOCSegmentation(tiny_synthetic.root, "train").ids
    out = tmp_path / "q"
    assert main(["query", "--autoencoder", str(ae_path), "--image", train_ids[0], "--box", "16,16,48,64",
                 "--k", "2", "--json", str(out / "labels.json"), "--figure", str(out / "labels.png")]) == 0
    printed = capsys.readouterr().out
    assert (out / "labels.png").is_file()
    record = json.loads((out / "labels.json").read_text())
    assert record["reference_split"] == "val" and record["reference_from"] == "labels"
    matches = record["results"][0]["matches"]
    assert len(matches) == 2 and matches[0]["distance"] <= matches[1]["distance"]
    ranked = [line.split() for line in printed.splitlines() if line.strip().startswith(("1 ", "2 "))]
    assert [(row[1], float(row[3])) for row in ranked] == [(m["image_id"], round(m["distance"], 4)) for m in matches]
    assert record["results"][0]["box"] == [16, 16, 48, 64] and record["results"][0]["cells"] == [1, 1, 3, 4]
    assert list((ae_path.parents[1] / "index").glob("labels-*/index.json"))  # kept next to the checkpoint

    # from an image, searching its own split: the query's own image never comes back
    assert main(["query", "--segmenter", str(seg_path), "--image", "0", "--reference-split", "train", "--k", "3",
                 "--json", str(out / "images.json"), "--figure", str(out / "images.png")]) == 0
    record = json.loads((out / "images.json").read_text())
    assert record["reference_from"] == "images" and len(record["results"][0]["matches"]) == 3
    assert train_ids[0] not in [m["image_id"] for m in record["results"][0]["matches"]]
    assert (out / "images.png").is_file()

    # the same figure coloured by the segmenter's predictions instead of the ground truth
    assert main(["query", "--segmenter", str(seg_path), "--image", "0", "--reference-split", "train", "--k", "3",
                 "--overlay", "predictions", "--json", str(out / "pred.json"), "--figure", str(out / "pred.png")]) == 0
    from PIL import Image

    with Image.open(out / "images.png") as truth, Image.open(out / "pred.png") as predicted:
        assert truth.size == predicted.size and not np.array_equal(np.asarray(truth), np.asarray(predicted))


def test_cli_query_errors_are_clear(tiny_synthetic, tmp_path, capsys):
    ae_path, seg_path = write_checkpoints(tiny_synthetic.root, tmp_path / "runs")
    assert main(["query", "--image", "0"]) == 2
    assert "--autoencoder" in capsys.readouterr().err
    assert main(["query", "--autoencoder", str(ae_path), "--image", "no_such_id"]) == 2
    assert "no_such_id" in capsys.readouterr().err
    assert main(["query", "--autoencoder", str(ae_path), "--image", "0", "--class", "aeroplane_xyz"]) == 2
    assert "not a class" in capsys.readouterr().err
    assert not (ae_path.parents[1] / "index").exists()  # both refused before an index was built
    assert main(["query", "--segmenter", str(ae_path), "--image", "0"]) == 2
    assert "regularizer.kind=decoder" in capsys.readouterr().err
    assert main(["query", "--segmenter", str(seg_path), "--image", "0", "--reference-from", "labels"]) == 2
    assert "--autoencoder" in capsys.readouterr().err
    assert main(["query", "--autoencoder", str(ae_path), "--image", "0", "--overlay", "predictions"]) == 2
    assert "--overlay predictions needs --segmenter" in capsys.readouterr().err
