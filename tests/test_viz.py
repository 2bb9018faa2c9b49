"""Figures a reader understands without the code (labelreg.viz and the weak / query figures): a legend of the
classes present, palettes where no frequent class is black, mIoU in percent, runs on one axis, colour bars."""
import numpy as np
import pytest
import torch
from matplotlib.text import Text
from PIL import Image

from labelreg.data.camvid import CAMVID_CLASSES
from labelreg.data.nyu import NYU40_CLASSES
from labelreg.data.voc import VOC_CLASSES
from labelreg.palette import CAMVID_COLOURS, IGNORE_COLOUR
from labelreg.retrieval.figure import query_plot
from labelreg.retrieval.geometry import pixel_box_to_cells
from labelreg.retrieval.index import Match, QueryResult
from labelreg.viz import (FONT_PT, IGNORE_NAME, class_colours, curves_plot, dataset_palette, overlay, panel_figure,
                          plot_runs, segmentation_plot)
from labelreg.weak.figure import SCORE_LABEL, points_plot

BLACK = (0, 0, 0)


def legend_texts(figure) -> list[str]:
    return [text.get_text() for text in figure.legends[0].get_texts()]


def small_texts(figure) -> list[tuple[str, float]]:
    return [(t.get_text(), t.get_fontsize()) for t in figure.findobj(Text) if t.get_text() and t.get_fontsize() < FONT_PT]


def test_the_legend_lists_exactly_the_classes_in_the_shown_maps_in_their_colours():
    labels = torch.zeros(2, 8, 10, dtype=torch.long)  # wall everywhere ...
    labels[0, :2] = 255  # ... an unlabeled strip ...
    labels[1, 4:, 4:] = 3  # ... and a bed
    prediction = torch.zeros(2, 8, 10, dtype=torch.long)
    prediction[0, 5:, :3] = 5  # a sofa only the model sees
    nyu = class_colours(NYU40_CLASSES, "nyu")
    figure = segmentation_plot(torch.zeros(2, 3, 8, 10), labels, [("model", prediction)], rows=1, colours=nyu)
    # row 1 is not shown (rows=1): its bed is not in the legend
    assert legend_texts(figure) == ["wall", "sofa", IGNORE_NAME]
    swatches = [tuple(round(v * 255) for v in patch.get_facecolor()[:3]) for patch in figure.legends[0].get_patches()]
    assert swatches == [tuple(nyu.palette[0]), tuple(nyu.palette[5]), IGNORE_COLOUR]
    assert small_texts(figure) == []


@pytest.mark.parametrize("dataset, names, frequent", [("nyu", NYU40_CLASSES, [0]), ("voc", VOC_CLASSES, [0]),
                                                      ("camvid", CAMVID_CLASSES, list(range(11)))])
def test_no_frequent_class_is_black_and_ignore_has_its_own_colour(dataset, names, frequent):
    palette = dataset_palette(dataset)
    classes = [tuple(int(v) for v in colour) for colour in palette[:len(names)]]
    assert all(classes[c] != BLACK and sum(classes[c]) >= 100 for c in frequent)
    assert len(set(classes)) == len(classes)  # one colour per class
    assert tuple(palette[255]) == IGNORE_COLOUR and IGNORE_COLOUR not in classes


def test_dataset_palettes_keep_the_data_sets_own_colours():
    assert tuple(dataset_palette("voc")[15]) == (192, 128, 128)  # VOC's person
    assert [tuple(c) for c in dataset_palette("camvid")[:11]] == list(CAMVID_COLOURS)
    assert tuple(dataset_palette("camvid")[3]) == (128, 64, 128)  # CamVid's road
    # without a data set key, VOC's and CamVid's class lists are recognised
    assert class_colours(VOC_CLASSES).palette[0].tolist() == dataset_palette("voc")[0].tolist()
    assert class_colours(CAMVID_CLASSES).palette[:11].tolist() == [list(c) for c in CAMVID_COLOURS]


def test_overlays_darken_ignored_pixels_with_the_ignore_colour():
    image = np.full((2, 2, 3), 200, np.uint8)
    label = np.array([[255, 0], [0, 0]])
    coloured = overlay(image, label, alpha=0.5, colours=class_colours(NYU40_CLASSES, "nyu"))
    assert coloured[0, 0].tolist() == [100, 100, 100]  # half image, half black
    assert overlay(image, label, alpha=0.5)[0, 0].tolist() == [200, 200, 200]  # without colours: the image


def test_curves_show_miou_in_percent_and_several_runs_on_one_axis(tmp_path):
    baseline = [{"epoch": 1, "train/ce": 2.0, "val/miou": 0.07}, {"epoch": 2, "train/ce": 1.5, "val/miou": 0.116}]
    regularized = [{"epoch": 1, "train/ce": 1.9, "val/miou": 0.08}, {"epoch": 2, "train/ce": 1.4, "val/miou": 0.125}]
    figure = curves_plot([("baseline", baseline), ("regularized", regularized)], ["train/ce", "val/miou"], title="t")
    loss, miou = figure.axes
    assert len(miou.lines) == 2 and [line.get_color() for line in miou.lines] == ["C0", "C1"]
    assert np.allclose(miou.lines[0].get_ydata(), [7.0, 11.6]) and np.allclose(miou.lines[1].get_ydata(), [8.0, 12.5])
    assert miou.get_ylabel() == "%" and "(%)" in miou.get_title()
    assert np.allclose(loss.lines[0].get_ydata(), [2.0, 1.5])  # losses stay as they are
    assert legend_texts(figure) == ["baseline", "regularized"]  # one legend: run i is colour Ci on every axis
    assert small_texts(figure) == []
    with Image.open(plot_runs([("baseline", baseline)], ["val/miou"], tmp_path / "curves.png")) as picture:
        assert picture.format == "PNG"


def test_a_metric_evaluated_once_is_a_marker_with_a_note():
    history = [{"epoch": 1, "train/ce": 2.0}, {"epoch": 2, "train/ce": 1.0}, {"epoch": 3, "train/ce": 0.5,
                                                                               "val/miou": 0.116}]
    figure = curves_plot([("", history)], ["train/ce", "val/miou"])
    loss, miou = figure.axes
    (point,) = miou.lines
    assert point.get_linestyle() == "None" and point.get_marker() == "o" and point.get_markersize() >= 6
    assert list(point.get_ydata()) == pytest.approx([11.6])
    assert [t.get_text() for t in miou.texts] == ["11.6%"]
    assert miou.get_xlabel() == "epoch (one value only: epoch 3)" and loss.get_xlabel() == "epoch"
    assert miou.get_xlim() == (0.5, 3.5) and list(miou.get_xticks()) == [1, 2, 3]  # among all the epochs
    assert figure.legends == []  # one unnamed run: nothing to tell apart


def test_the_points_figure_has_a_localization_colour_bar_and_a_legend_of_its_classes():
    label = np.zeros((16, 20), np.int64)
    label[4:12, 5:15] = 15  # a person
    rows = [{"image": np.zeros((16, 20, 3), np.uint8), "label": label, "score": np.random.rand(4, 5),
             "points": np.array([[0, 0, 0], [2, 2, 15], [3, 4, 9]])},  # a chair point where no chair is
            {"image": np.zeros((16, 20, 3), np.uint8), "label": label, "score": None, "points": np.zeros((0, 3))}]
    figure = points_plot(rows, size=(16, 20), grid=(4, 5))
    bars = [axis for axis in figure.axes if axis.get_xlabel() == SCORE_LABEL]
    assert len(bars) == 1 and bars[0].get_xlim() == (0.0, 1.0)
    assert legend_texts(figure) == ["background", "chair", "person"]
    dots = figure.axes[3].collections[0]
    assert np.allclose(dots.get_offsets(), [[1.5, 1.5], [9.5, 9.5], [17.5, 13.5]])  # cell centres in pixels
    assert small_texts(figure) == []


class Reference(torch.utils.data.Dataset):
    class_names = NYU40_CLASSES

    def __init__(self, labels):
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return {"image": torch.zeros(3, 32, 48), "label": self.labels[index], "id": f"scene{index}"}


def test_the_query_figure_names_the_class_and_the_distance():
    label = torch.zeros(32, 48, dtype=torch.long)
    label[8:24, 16:40] = 4  # a chair on a wall
    reference = Reference([label, label.clone()])
    box = (8, 16, 24, 40)
    result = QueryResult("train_1", 0, pixel_box_to_cells(box, (32, 48)), box, "labels",
                         [Match("scene1", 1, pixel_box_to_cells(box, (32, 48)), box, 0.1234)])
    figure = query_plot([(result, reference[0])], reference, titles=["labels"])
    texts = [t.get_text() for t in figure.findobj(Text)]
    assert "train_1\nquery: mostly chair" in texts and "scene1\nd = 0.123" in texts
    title = " ".join(figure.texts[0].get_text().split())  # the title line, wrapped
    assert "d = cosine distance" in title and "label codes" in title
    assert legend_texts(figure) == ["wall", "chair"]
    unnamed = query_plot([(result, reference[0])], reference, queried=[None])
    assert "train_1\nquery: mostly chair" in [t.get_text() for t in unnamed.findobj(Text)]
    named = query_plot([(result, reference[0])], reference, queried=["chair"], metric="l2")
    texts = [t.get_text() for t in named.findobj(Text)]
    assert "train_1\nquery: chair" in texts and "“chair”" in named.texts[0].get_text()
    assert "d = Euclidean distance" in " ".join(named.texts[0].get_text().split())
    assert small_texts(named) == []


def test_a_figure_without_pictures_is_a_one_line_error():
    with pytest.raises(ValueError, match="'empty' has no pictures to draw"):
        panel_figure([[None, None]], column_titles=["a", "b"], title="empty")
