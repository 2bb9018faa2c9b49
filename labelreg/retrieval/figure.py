"""Picture grids of queries and their matches, like thesis Fig. 5.7 (§5.4.3): the queried class and what the
distance ``d`` is are written on the figure, the label overlays have a legend of their classes."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch.utils.data import Dataset

from labelreg.data.build import unwrap_subsets
from labelreg.palette import IGNORE_INDEX
from labelreg.retrieval.index import QueryResult
from labelreg.viz import FONT_PT, ClassColours, class_colours, overlay, panel_figure, save_figure, to_uint8_image

QUERY_COLOUR, MATCH_COLOUR = (0.0, 0.78, 0.0), (1.0, 0.84, 0.0)  # green query (as in Fig. 5.7), yellow matches
METRIC_NAMES = {"cosine": "cosine distance (1 − cosine similarity)", "l2": "Euclidean distance"}


def box_class(label: torch.Tensor, box: Sequence[int], names: Sequence[str]) -> str:
    """The most frequent labeled class inside ``box`` (y0, x0, y1, x1) of an H×W label map, or "unlabeled"."""
    y0, x0, y1, x1 = box
    inside = label[y0:y1, x0:x1].flatten().long()
    inside = inside[inside != IGNORE_INDEX]
    if not inside.numel():
        return "unlabeled"
    index = int(torch.bincount(inside).argmax())
    return names[index] if index < len(names) else f"class {index}"


def query_plot(results: Sequence[tuple[QueryResult, dict]], reference: Dataset, *,
               titles: Sequence[str] | None = None, labels_of: Callable[[dict], torch.Tensor] | None = None,
               queried: Sequence[str | None] | None = None, metric: str = "cosine", colours: ClassColours | None = None,
               title: str | None = None) -> Figure:
    """The grid of ``query_figure`` as a Figure (its arguments there)."""
    labels_of = labels_of or (lambda sample: sample["label"])
    names = list(getattr(unwrap_subsets(reference)[0], "class_names", ()))  # none: "class i"
    colours = colours or class_colours(names)
    queried = [given or f"mostly {box_class(sample['label'], result.box, names)}"
               for given, (result, sample) in zip(queried or [None] * len(results), results)]
    columns = 1 + max(len(result.matches) for result, _ in results)
    rows, maps, decorations = [], [], []
    for row, (result, sample) in enumerate(results):
        shown = [(sample, result.box, QUERY_COLOUR, f"{result.query_id}\nquery: {queried[row]}")]
        shown += [(reference[m.dataset_index], m.box, MATCH_COLOUR, f"{m.image_id}\nd = {m.distance:.3f}")
                  for m in result.matches]
        labels = [labels_of(item) for item, *_ in shown]
        maps += labels
        rows.append([overlay(to_uint8_image(item["image"]), label.numpy(), alpha=0.45, colours=colours)
                     for (item, *_), label in zip(shown, labels)])
        decorations.append([rest for _, *rest in shown])
    kinds = titles or [result.source for result, _ in results]
    same = len(set(queried)) == 1
    title = title or (f"Label-space queries (thesis §5.4.3): the {'“' + queried[0] + '” ' if same else ''}region "
                      f"in the green box and its nearest regions (yellow boxes) in the held-out images. "
                      f"d = {METRIC_NAMES.get(metric, metric)} between the regions' label codes "
                      f"(autoencoder bottleneck features, or the segmenter's prediction of them from an image); "
                      f"smaller is closer.")
    figure, axes = panel_figure(rows, column_titles=["query (green box)", "nearest match",
                                                     *(f"match {i}" for i in range(2, columns))],
                                title=title, legend=colours.legend(maps), caption_lines=2,
                                row_titles=[f"query from {kind}" for kind in kinds])
    for r, row in enumerate(decorations):
        for c, (box, colour, caption) in enumerate(row):
            y0, x0, y1, x1 = box
            axes[r, c].add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=colour,
                                           linewidth=2))
            axes[r, c].set_xlabel(caption, fontsize=FONT_PT, labelpad=2)
        axes[r, 0].set_title(axes[r, 0].get_title(), fontsize=FONT_PT, pad=5)  # clear of the thick frame
        for spine in axes[r, 0].spines.values():  # the query's frame, as in Fig. 5.7
            spine.set(edgecolor=QUERY_COLOUR, linewidth=3)
    return figure


def query_figure(results: Sequence[tuple[QueryResult, dict]], reference: Dataset, path: str | Path,
                 titles: Sequence[str] | None = None,
                 labels_of: Callable[[dict], torch.Tensor] | None = None, *, queried: Sequence[str | None] | None = None,
                 metric: str = "cosine", colours: ClassColours | None = None) -> Path:
    """PNG grid like thesis Fig. 5.7: per row the query image with its box (green frame), then its
    matches from ``reference`` with their boxes and distances ``d``; label overlays in the data set's colours
    (``colours``; default ``class_colours`` of the reference's ``class_names``) with a legend.

    ``results``: (result, query sample) pairs; ``titles``: what each row's query came from (e.g. "labels",
    "image"; default the result's source); ``labels_of``: the label map to overlay for a sample (default its
    ground truth; e.g. ``ImageFeatures.predict`` shows what the segmenter saw in each region); ``queried``:
    the class each query's box was drawn around (None or absent: "mostly" the most frequent class in the box);
    ``metric``: the distance ``run_query`` used.
    """
    figure = query_plot(results, reference, titles=titles, labels_of=labels_of, queried=queried, metric=metric,
                        colours=colours)
    return save_figure(figure, path)
