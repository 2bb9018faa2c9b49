"""A label-space query from checkpoints, end to end (thesis §5.4.3): what ``labelreg query`` runs.

``query_checkpoints`` reads the data sets named by the query checkpoint's config, turns the
checkpoints into feature sources (``--autoencoder``: label maps, ``--segmenter``: images), checks
every query before the (possibly long) index build, searches, and writes a JSON record and a picture
grid next to the query checkpoint.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from torch.utils.data import Dataset

from labelreg.config import ConfigError, config_from_dict
from labelreg.data.build import build_dataset, dataset_class_names, dataset_num_classes, unwrap_subsets
from labelreg.engine import run_directory
from labelreg.retrieval.figure import query_figure
from labelreg.retrieval.geometry import class_box, parse_box, pixel_box_to_cells
from labelreg.retrieval.index import QueryResult, RegionIndex, index_description, open_index, run_query
from labelreg.retrieval.sources import image_source, label_source
from labelreg.runtime import resolve_device
from labelreg.storage import load_run_checkpoint, write_json
from labelreg.viz import class_colours

Box = tuple[int, int, int, int]
SOURCE_OPTIONS = {"labels": ("--autoencoder", ("autoencoder",)), "images": ("--segmenter", ("segmentation",))}


def find_sample(dataset: Dataset, image: str) -> tuple[int, dict]:
    """The sample whose id is ``image`` (or, failing that, at integer position ``image``)."""
    ids = _dataset_ids(dataset)
    if image in ids:
        position = ids.index(image)
    elif image.lstrip("-").isdigit() and -len(dataset) <= int(image) < len(dataset):
        position = int(image) % len(dataset)
    else:
        shown = ", ".join(ids[:5]) + (", …" if len(ids) > 5 else "")
        raise ValueError(f"image {image!r} is not in this split ({len(ids)} images: {shown}); give an id or a position")
    return position, dataset[position]


def _dataset_ids(dataset: Dataset) -> list[str]:
    """Image ids without reading the images (VOC/NYU readers keep them in ``ids``)."""
    dataset, positions = unwrap_subsets(dataset)
    ids = [str(name) for name in getattr(dataset, "ids", range(len(dataset)))]
    return [ids[i] for i in positions] if positions is not None else ids


def query_boxes(boxes: Sequence[str | Sequence[int]], classes: Sequence[str],
                count: int) -> list[Box | tuple[str, str] | None]:
    """One box (``"y0,x0,y1,x1"`` or four ints) or class name per query image, or one for all of them:
    a box, ``("class", name)``, or None for the whole image."""
    if boxes and classes:
        raise ConfigError("give either --box or --class, not both")
    given = [parse_box(box) if isinstance(box, str) else tuple(int(v) for v in box) for box in boxes]
    given = given or [("class", name) for name in classes]
    if len(given) not in (0, 1, count):
        raise ConfigError(f"{len(given)} --box/--class for {count} --image: give one, or one per image")
    return given * count if len(given) == 1 else given or [None] * count


def class_query_box(sample: dict, image: str, name: str, names: list[str], dataset: str) -> Box:
    """The box of class ``name`` (or its id) in ``sample``: its largest connected region."""
    if name not in names and not (name.isdigit() and int(name) < len(names)):
        raise ConfigError(f"--class {name!r}: not a class of {dataset} ({', '.join(names)})")
    class_id = names.index(name) if name in names else int(name)
    if not bool((sample["label"] == class_id).any()):
        present = [names[i] for i in sample["label"].unique().tolist() if i < len(names)]
        raise ConfigError(f"--class {name!r} does not occur in image {image}; it shows {', '.join(present)}")
    return class_box(sample["label"], class_id)


@dataclass
class QueryRun:
    """What ``query_checkpoints`` did: the index searched, each (result, query sample), the files written."""

    index: RegionIndex
    reference_from: str
    results: list[tuple[QueryResult, dict]]
    json_path: Path
    figure_path: Path

    def report(self) -> str:
        """The index, one ranked table per query, the files written (what ``labelreg query`` prints)."""
        index = self.index
        return "\n".join([f"index: {index.path} ({len(index.images)} images, {index.num_cells} cells × "
                          f"{index.channels}, {self.reference_from} features)",
                          *(result.table() for result, _ in self.results),
                          f"wrote {self.json_path} and {self.figure_path}"])


def query_checkpoints(images: Sequence[str], *, autoencoder: str | Path | None = None,
                      segmenter: str | Path | None = None, reference_from: str | None = None,
                      boxes: Sequence[str | Sequence[int]] = (), classes: Sequence[str] = (),
                      dataset: str | None = None, root: str | None = None, overrides: Sequence[str] = (),
                      split: str | None = None, reference_split: str | None = None,
                      reference_limit: int | None = None, k: int = 2, metric: str = "cosine",
                      pooling: str = "concat", include_self: bool = False, index_folder: str | Path | None = None,
                      rebuild: bool = False, index_dtype: str = "float32", overlay: str = "labels",
                      device: str = "auto", json_path: str | Path | None = None,
                      figure_path: str | Path | None = None) -> QueryRun:
    """Search the nearest regions of ``images`` (ids or positions in ``split``) in ``reference_split``.

    Queries come from label maps through ``autoencoder`` (a train-ae checkpoint) or from images through
    ``segmenter`` (a train-seg checkpoint with the decoder regularizer); ``reference_from`` chooses the
    reference set's features (default: the query's kind). ``boxes`` / ``classes``: one per image or one
    for all (default: the whole image). The data come from the query checkpoint's config, with
    ``dataset`` (then its own standard splits), ``root`` and ``data.key=value`` ``overrides``; splits
    default to its ``data.train_split`` (queries) and ``data.val_split`` (reference). The index is kept
    in ``<run>/index/`` (``open_index``); the JSON record goes to ``<run>/queries/`` unless ``json_path`` is
    given, the figure next to the JSON (same name, ``.png``) unless ``figure_path`` is given.
    ``overlay="predictions"`` colours the figure by the segmenter's predicted labels. Bad input (a wrong kind
    of checkpoint included) raises ``ConfigError`` or ``ValueError`` before any index is built.
    """
    if not (autoencoder or segmenter):
        raise ConfigError("give --autoencoder CKPT (query from label maps) or --segmenter CKPT (query from images)")
    query_kind = "images" if segmenter else "labels"
    reference_kind = reference_from or query_kind
    checkpoints = {"labels": autoencoder, "images": segmenter}
    if overlay == "predictions" and not segmenter:
        raise ConfigError("--overlay predictions needs --segmenter CKPT (an autoencoder predicts no labels)")
    if checkpoints[reference_kind] is None:
        raise ConfigError(f"--reference-from {reference_kind} needs "
                          f"{'--autoencoder' if reference_kind == 'labels' else '--segmenter'} CKPT")
    # both files' kinds are checked before any data set is read or index built
    loaded = {kind: load_run_checkpoint(checkpoints[kind], purpose=option, tasks=tasks)
              for kind, (option, tasks) in SOURCE_OPTIONS.items() if kind in (query_kind, reference_kind)}
    stored = loaded[query_kind]["config"]
    switched = dataset and dataset != stored["data"]["dataset"]  # then its own standard splits
    data_overrides = [*([f"data.dataset={dataset}", "data.train_split=train",
                         f"data.val_split={'val' if dataset == 'voc' else 'test'}"] if switched else []),
                      *(["data.root=" + root] if root else []), *overrides]
    data = dataclasses.replace(config_from_dict(stored, data_overrides).data,
                               canvas=None)  # boxes are in the images' own pixels
    device = resolve_device(device)
    split, reference_split = split or data.train_split, reference_split or data.val_split
    queries = build_dataset(data, split)
    reference = build_dataset(data, reference_split, limit=reference_limit)
    num_classes, names = dataset_num_classes(reference), dataset_class_names(reference)
    sources = {kind: (label_source(checkpoints[kind], device, num_classes) if kind == "labels"
                      else image_source(checkpoints[kind], device, num_classes))
               for kind in {query_kind, reference_kind}}
    # every query is checked before the index is built, which can take minutes
    samples = [find_sample(queries, image)[1] for image in images]
    regions, queried = [], []  # queried: the class named by --class, for the figure
    for image, sample, box in zip(images, samples, query_boxes(boxes, classes, len(images))):
        queried.append(box[1] if box is not None and box[0] == "class" and box[1] in names else None)
        if box is None:
            box = (0, 0, *sample["image"].shape[-2:])
        elif box[0] == "class":
            box = class_query_box(sample, image, box[1], names, data.dataset)
        pixel_box_to_cells(box, tuple(sample["image"].shape[-2:]))  # a box outside its image fails here
        regions.append(box)
    description = index_description(data, reference_split, reference_limit)
    index = open_index(sources[reference_kind], reference, checkpoints[reference_kind], description=description,
                       folder=index_folder, rebuild=rebuild, dtype=index_dtype)
    results = [(run_query(index, sources[query_kind], sample, box, k=k, metric=metric, pooling=pooling,
                          exclude_self=not include_self, device=device), sample)
               for sample, box in zip(samples, regions)]
    folder = run_directory(checkpoints[query_kind]) / "queries"
    stem = f"{query_kind}_{images[0]}" + (f"_and_{len(images) - 1}_more" if len(images) > 1 else "")
    out_json = Path(json_path) if json_path else folder / f"{stem}.json"
    out_json.parent.mkdir(parents=True, exist_ok=True)
    write_json(out_json, {"index": str(index.path), "metric": metric, "pooling": pooling, "query_split": split,
                          "reference_split": reference_split, "reference_from": reference_kind,
                          "results": [result.as_dict() for result, _ in results]})
    figure = query_figure(results, reference, Path(figure_path) if figure_path else out_json.with_suffix(".png"),
                          titles=[query_kind] * len(results),
                          labels_of=sources["images"].predict if overlay == "predictions" else None,
                          queried=queried, metric=metric, colours=class_colours(names, data.dataset))
    return QueryRun(index, reference_kind, results, out_json, figure)
