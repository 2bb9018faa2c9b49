"""Label-space retrieval: window distances, feature sources, the on-disk index, search, figures."""
import itertools
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from labelreg.data.nyu import NYUv2Labeled
from labelreg.models import LabelAutoencoder
from labelreg.retrieval.figure import query_figure
from labelreg.retrieval.index import RegionIndex, build_index, open_index, run_query, window_distances
from labelreg.retrieval.sources import ImageFeatures, LabelFeatures


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


class CountingSource(LabelFeatures):
    """A label source that counts the samples it encodes: only building an index encodes any."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0

    def __call__(self, sample):
        self.calls += 1
        return super().__call__(sample)


def test_open_index_reuses_the_index_until_the_checkpoint_or_the_data_change(tmp_path):
    checkpoint = tmp_path / "run" / "checkpoints" / "best.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"weights")  # only its path, size and modification time name the index
    reference = Scenes([(f"scene{i}", [(1 + i, (16, 16, 48, 64))]) for i in range(3)])
    source = CountingSource(random_autoencoder(), torch.device("cpu"))

    def opened(dataset=reference, description="scenes", **options):
        before = source.calls
        index = open_index(source, dataset, checkpoint, description=description, progress=False, **options)
        return index, source.calls - before  # samples encoded: 0 when reused

    first, encoded = opened()
    assert encoded == 3 and first.path.parent == tmp_path / "run" / "index" and first.path.name.startswith("labels-")
    written = (first.path / "features.bin").stat().st_mtime_ns
    again, encoded = opened()
    assert encoded == 0 and again.path == first.path and again.images == first.images
    assert (first.path / "features.bin").stat().st_mtime_ns == written  # not rewritten
    assert opened(rebuild=True)[1] == 3

    # the data change: another description (data set, root, split) or another number of images
    other, encoded = opened(description="scenes, another split")
    assert encoded == 3 and other.path != first.path
    assert opened(description="scenes, another split")[1] == 0
    fewer, encoded = opened(dataset=Scenes(reference.scenes[:2]))
    assert encoded == 2 and fewer.path not in (first.path, other.path)
    assert opened(dtype="float16")[1] == 3

    # the checkpoint changes (a newer best.pt): rebuilt once, then reused again
    stat = checkpoint.stat()
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    newer, encoded = opened()
    assert encoded == 3 and newer.path != first.path
    assert opened()[1] == 0

    # an explicit folder holding the index of other data is rebuilt in place
    folder = tmp_path / "mine"
    assert opened(folder=folder)[1] == 3 and opened(folder=folder)[1] == 0
    assert opened(folder=folder, description="scenes, another split")[1] == 3
    assert RegionIndex.load(folder).meta["data"] == "scenes, another split"
