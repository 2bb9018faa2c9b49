"""Pictures for reports and TensorBoard: label maps with a legend of their classes, image grids, training curves.

Report figures are drawn on ``matplotlib.figure.Figure`` (pyplot-free: files only, no backend or window state)
and saved at ``DPI``; every text in them is at least ``FONT_PT`` points. Label maps use one palette per data set
(``dataset_palette``) in which no class is black: black is the ignore colour (``palette.IGNORE_COLOUR``).
"""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw

from labelreg.data.camvid import CAMVID_CLASSES
from labelreg.data.transforms import denormalize
from labelreg.data.voc import VOC_CLASSES
from labelreg.palette import CAMVID_COLOURS, IGNORE_COLOUR, IGNORE_INDEX, VOC_BACKGROUND_COLOUR, colorize, voc_palette

DPI = 100
FONT_PT = 9  # the smallest text in a saved figure: 12.5 px at DPI
PANEL_INCHES = 1.9  # width of one picture panel
IGNORE_NAME = "ignore (not scored)"


def dataset_palette(dataset: str | None, num_entries: int = 256) -> np.ndarray:
    """``num_entries``×3 uint8 class colours for figures; entry ``IGNORE_INDEX`` is ``IGNORE_COLOUR`` (black).

    ``voc``: VOC's own colours with the background light grey; ``camvid``: CamVid's own colours; anything
    else (NYUv2 and unnamed data sets): matplotlib's qualitative Tableau colours (tab10, then the light half of
    tab20, then tab20b and tab20c: 60 colours, so NYUv2's wall, floor and cabinet are blue, orange and green),
    then golden-angle hues. No class colour is black or repeats within the first 60 classes.
    """
    if dataset == "voc":
        palette = voc_palette(256)
        palette[0] = VOC_BACKGROUND_COLOUR
    else:
        tableau = [*matplotlib.colormaps["tab10"].colors, *matplotlib.colormaps["tab20"].colors[1::2],
                   *matplotlib.colormaps["tab20b"].colors, *matplotlib.colormaps["tab20c"].colors]
        hues = [matplotlib.colors.hsv_to_rgb(((i * 0.618034) % 1, 0.6 + 0.3 * (i % 2), 0.9 - 0.25 * (i % 3)))
                for i in range(256 - len(tableau))]
        palette = (np.array([*tableau, *hues]) * 255).round().astype(np.uint8)
        if dataset == "camvid":
            palette[:len(CAMVID_COLOURS)] = CAMVID_COLOURS
    palette[IGNORE_INDEX] = IGNORE_COLOUR
    return palette[:num_entries]


@dataclass(frozen=True)
class ClassColours:
    """A data set's class names and figure colours (``names[i]`` is drawn ``palette[i]``)."""

    names: tuple[str, ...]
    palette: np.ndarray  # 256×3 uint8; palette[IGNORE_INDEX] = IGNORE_COLOUR

    def name(self, index: int) -> str:
        if index == IGNORE_INDEX:
            return IGNORE_NAME
        return self.names[index] if index < len(self.names) else f"class {index}"

    def colorize(self, label: torch.Tensor | np.ndarray) -> np.ndarray:
        """H×W ids → H×W×3 uint8."""
        return colorize(label.detach().cpu().numpy() if torch.is_tensor(label) else label, self.palette)

    def legend(self, label_maps: Iterable[torch.Tensor | np.ndarray]) -> list[tuple[str, tuple[float, float, float]]]:
        """(name, RGB in [0, 1]) of every class present in ``label_maps``, by id, ignore last."""
        present: set[int] = set()
        for label in label_maps:
            label = label.detach().cpu() if torch.is_tensor(label) else torch.as_tensor(np.asarray(label))
            present.update(int(v) for v in torch.unique(label.long()))
        ordered = sorted(present - {IGNORE_INDEX}) + ([IGNORE_INDEX] if IGNORE_INDEX in present else [])
        return [(self.name(c), tuple(float(v) / 255 for v in self.palette[min(c, 255)])) for c in ordered]


def class_colours(names: Sequence[str] | None = None, dataset: str | None = None) -> ClassColours:
    """Colours for ``names`` in ``dataset``'s palette (a ``data.dataset`` value; without it, VOC's and CamVid's
    class lists are recognised). No names: classes are called "class i"."""
    if dataset is None:
        dataset = next((key for key, known in (("voc", VOC_CLASSES), ("camvid", CAMVID_CLASSES))
                        if names is not None and list(names) == known), None)
    return ClassColours(tuple(names or ()), dataset_palette(dataset))


def to_uint8_image(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """3×H×W float in [0, 1] or uint8 tensor, or H×W×3 array → H×W×3 uint8."""
    if torch.is_tensor(image):
        image = image.detach().cpu()
        if image.dtype != torch.uint8:
            image = (image.float().clamp(0, 1) * 255).round().to(torch.uint8)
        image = image.permute(1, 2, 0).numpy()
    return np.ascontiguousarray(image)


def label_image(label: torch.Tensor | np.ndarray, colours: ClassColours | None = None) -> np.ndarray:
    """H×W ids → H×W×3 uint8 in ``colours`` (default: the VOC palette, 255 = VOC's void colour)."""
    if colours is not None:
        return colours.colorize(label)
    if torch.is_tensor(label):
        label = label.detach().cpu().numpy()
    return colorize(label)


def overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.5, colours: ClassColours | None = None) -> np.ndarray:
    """Blend a label map's colours over an RGB image. With ``colours`` ignored pixels are darkened (blended
    with the ignore colour, as the legend says); without, they keep the image."""
    blended = (1 - alpha) * image.astype(np.float32) + alpha * label_image(label, colours).astype(np.float32)
    keep = (np.asarray(label) == IGNORE_INDEX)[..., None] & (colours is None)
    return np.where(keep, image, blended).round().astype(np.uint8)


def image_grid(rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str] | None = None, gap: int = 4) -> np.ndarray:
    """Tile H×W×3 uint8 panels (all the same size) into one image, optional column titles on top (TensorBoard)."""
    height, width = rows[0][0].shape[:2]
    columns = max(len(row) for row in rows)
    title_height = 14 if titles else 0
    canvas = np.full((title_height + len(rows) * (height + gap) + gap, columns * (width + gap) + gap, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            y, x = title_height + gap + r * (height + gap), gap + c * (width + gap)
            canvas[y:y + height, x:x + width] = panel
    if titles:
        picture = Image.fromarray(canvas)
        draw = ImageDraw.Draw(picture)
        for c, title in enumerate(titles):
            draw.text((gap + c * (width + gap), 1), title, fill=(0, 0, 0))
        canvas = np.asarray(picture)
    return canvas


def save_png(array: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def save_figure(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    return path


@dataclass(frozen=True)
class ScalarMap:
    """A continuous H×W map, drawn in ``cmap`` from ``vmin`` to ``vmax`` (NaN: light grey) with a colour bar
    labelled ``label``; maps with the same label share the first one's scale and bar."""

    values: np.ndarray
    label: str
    vmin: float = 0.0
    vmax: float = 1.0
    cmap: str = "viridis"


def _wrap(text: str, inches: float, points: float) -> list[str]:
    return textwrap.wrap(text, max(20, int(inches * 72 / (0.55 * points)))) if text else []


def panel_figure(rows: Sequence[Sequence[np.ndarray | ScalarMap | None]], *, column_titles: Sequence[str],
                 title: str, legend: Sequence[tuple[str, tuple[float, ...]]] = (),
                 row_titles: Sequence[str] | None = None, caption_lines: int = 0) -> tuple[Figure, np.ndarray]:
    """A grid of pictures: H×W×3 uint8 images or ``ScalarMap``s (None: empty), a title (wrapped), column
    titles, optional row titles and ``caption_lines`` of space under each panel (for the caller's
    ``set_xlabel``), one horizontal colour bar per ``ScalarMap`` label under its columns, and a legend of
    (name, colour) swatches at the bottom. Returns the figure and its rows × columns axes."""
    first = next((p for row in rows for p in row if p is not None), None)
    if first is None:
        raise ValueError(f"a figure titled {title!r} has no pictures to draw (no images given)")
    height, width = (first.values if isinstance(first, ScalarMap) else first).shape[:2]
    columns = max(len(row) for row in rows)
    panel_w, gap, line = PANEL_INCHES, 0.08, FONT_PT / 72 * 1.35
    panel_h = panel_w * height / width
    left = 0.1 + (line + 0.05 if row_titles else 0)
    fig_w = left + columns * panel_w + (columns - 1) * gap + 0.1
    title_lines = _wrap(title, fig_w - 0.2, FONT_PT + 1)
    bars: dict[str, list] = {}  # label → [the first map (its scale), first column, last column]
    for row in rows:
        for c, panel in enumerate(row):
            if isinstance(panel, ScalarMap):
                bar = bars.setdefault(panel.label, [panel, c, c])
                bar[1:] = [min(bar[1], c), max(bar[2], c)]
    ncol = max(1, min(len(legend), int((fig_w - 0.2) // 1.55)))
    legend_h = (math.ceil(len(legend) / ncol) + 1) * line + 0.15 if legend else 0
    top_h = 0.1 + len(title_lines) * line * (FONT_PT + 1) / FONT_PT + line + 0.05
    row_h = panel_h + caption_lines * line + gap
    bar_h = 0.8 if bars else 0
    fig_h = top_h + len(rows) * row_h + bar_h + legend_h + 0.05
    figure = Figure(figsize=(fig_w, fig_h))
    figure.text(0.5, 1 - 0.08 / fig_h, "\n".join(title_lines), ha="center", va="top", fontsize=FONT_PT + 1)
    axes = np.empty((len(rows), columns), dtype=object)
    shown = {}
    for r in range(len(rows)):
        for c in range(columns):
            x, y = left + c * (panel_w + gap), fig_h - top_h - r * row_h - panel_h
            axis = axes[r, c] = figure.add_axes((x / fig_w, y / fig_h, panel_w / fig_w, panel_h / fig_h))
            axis.set_xticks([])
            axis.set_yticks([])
            panel = rows[r][c] if c < len(rows[r]) else None
            if panel is None:
                axis.set_axis_off()
            elif isinstance(panel, ScalarMap):
                spec = bars[panel.label][0]
                cmap = matplotlib.colormaps[spec.cmap].with_extremes(bad="0.85")
                shown[panel.label] = axis.imshow(panel.values, cmap=cmap, vmin=spec.vmin, vmax=spec.vmax)
            else:
                axis.imshow(panel, interpolation="nearest")
            if r == 0 and c < len(column_titles):
                axis.set_title(column_titles[c], fontsize=FONT_PT, pad=3)
        if row_titles:
            axes[r, 0].set_ylabel(row_titles[r], fontsize=FONT_PT)
    bottom = legend_h + 0.05
    for label, (_, first_c, last_c) in bars.items():
        x0, x1 = left + first_c * (panel_w + gap) + 0.1, left + last_c * (panel_w + gap) + panel_w - 0.1
        cax = figure.add_axes((x0 / fig_w, (bottom + 0.55) / fig_h, (x1 - x0) / fig_w, 0.13 / fig_h))
        bar = figure.colorbar(shown[label], cax=cax, orientation="horizontal")
        bar.set_label(label, fontsize=FONT_PT)
        bar.ax.tick_params(labelsize=FONT_PT)
    if legend:
        handles = [Patch(facecolor=colour, edgecolor="0.35", label=name) for name, colour in legend]
        figure.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.05 / fig_h), ncol=ncol,
                      fontsize=FONT_PT, title="colours: the classes in these maps", title_fontsize=FONT_PT,
                      frameon=False, handlelength=1.4, columnspacing=1.0, borderaxespad=0.0)
    return figure, axes


def segmentation_plot(images: torch.Tensor, labels: torch.Tensor, predictions: Sequence[tuple[str, torch.Tensor]],
                      *, rows: int = 6, colours: ClassColours | None = None, title: str | None = None) -> Figure:
    """Rows [image, ground truth, each prediction] with a legend of the classes shown (thesis Fig. 5.6)."""
    colours = colours or class_colours()
    count = min(rows, len(images))
    shown = denormalize(images[:count])
    maps = [labels[:count], *(p[:count] for _, p in predictions)]
    grid = [[to_uint8_image(shown[i]), *(colours.colorize(m[i]) for m in maps)] for i in range(count)]
    title = title or "Images: the ground truth and each model's predicted classes"
    figure, _ = panel_figure(grid, column_titles=["image", "ground truth", *(t for t, _ in predictions)],
                             title=title, legend=colours.legend(maps))
    return figure


def segmentation_figure(images: torch.Tensor, labels: torch.Tensor, predictions: Sequence[tuple[str, torch.Tensor]],
                        path: str | Path, rows: int = 6, *, colours: ClassColours | None = None,
                        title: str | None = None) -> Path:
    """PNG of ``segmentation_plot``: ImageNet-normalised B×3×H×W images, B×H×W labels, and (title, B×H×W ids)
    predictions (e.g. primary and auxiliary outputs); ``colours``: the data set's (``class_colours``)."""
    return save_figure(segmentation_plot(images, labels, predictions, rows=rows, colours=colours, title=title), path)


CURVE_TITLES = {"train/ce": "training cross-entropy", "train/aux": "training loss, auxiliary (decoder) branch",
                "train/loss": "training loss", "val/miou": "validation mIoU", "val/aux_miou":
                "validation mIoU, auxiliary output", "val/pixel_acc": "validation pixel accuracy"}


def in_percent(key: str) -> bool:
    """mIoU, IoU and accuracies: fractions in histories and metrics.json, percent in figures (as the reports)."""
    return any("miou" in part or "acc" in part or part.startswith("iou") for part in key.split("/")[1:])


def curves_plot(runs: Sequence[tuple[str, list[dict[str, float]]]], keys: Sequence[str], *, title: str = "") -> Figure:
    """One axis per key with every run's curve on it: ``runs`` are (label, engine history, one entry per epoch),
    each run in one colour on every axis, named in one legend under the axes. mIoU and accuracies in percent.
    A series with a single value is a large marker with its value, and the axis says so under it."""
    figure = Figure(figsize=(3.6 * len(keys), 3.2 if runs[0][0] else 2.9), layout="constrained")
    epochs = sorted({entry["epoch"] for _, history in runs for entry in history if "epoch" in entry} or {0})
    for axis, key in zip(figure.subplots(1, len(keys), squeeze=False)[0], keys):
        scale, once = (100.0 if in_percent(key) else 1.0), set()
        for colour, (label, history) in enumerate(runs):
            points = [(entry["epoch"], entry[key] * scale) for entry in history if key in entry]
            if len(points) == 1:
                once.add(points[0][0])
                axis.annotate(f"{points[0][1]:.1f}{'%' if scale == 100 else ''}", points[0], xytext=(6, 4),
                              textcoords="offset points", fontsize=FONT_PT, color=f"C{colour}")
            if points:
                axis.plot(*zip(*points), marker="o", markersize=7 if len(points) == 1 else 3, color=f"C{colour}",
                          linestyle="-" if len(points) > 1 else "none")
        if not axis.lines:
            axis.text(0.5, 0.5, "not recorded", transform=axis.transAxes, ha="center", fontsize=FONT_PT)
        axis.set_title(CURVE_TITLES.get(key, key) + (" (%)" if scale == 100 else ""), fontsize=FONT_PT + 1)
        axis.set_xlabel("epoch" + (f" (one value only: epoch {', '.join(map(str, sorted(once)))})" if once else ""),
                        fontsize=FONT_PT)
        axis.set_ylabel("%" if scale == 100 else "loss" if key.startswith("train/") else key, fontsize=FONT_PT)
        axis.set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)
        if len(epochs) <= 12:
            axis.set_xticks(epochs)
        else:
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.tick_params(labelsize=FONT_PT)
        axis.margins(y=0.15)  # room for the values written beside single points
        axis.grid(alpha=0.3)
    if any(label for label, _ in runs):
        handles = [Line2D([], [], color=f"C{i}", marker="o", markersize=5, label=label) for i, (label, _) in
                   enumerate(runs)]
        figure.legend(handles=handles, loc="outside lower center", ncol=len(runs), fontsize=FONT_PT, frameon=False)
    if title:
        figure.suptitle(title, fontsize=FONT_PT + 2)
    return figure


def plot_runs(runs: Sequence[tuple[str, list[dict[str, float]]]], keys: Sequence[str], path: str | Path, *,
              title: str = "") -> Path:
    """PNG of ``curves_plot``: e.g. [("baseline", history), ("regularized", history)] on shared axes."""
    return save_figure(curves_plot(runs, keys, title=title), path)


def plot_curves(history: list[dict[str, float]], keys: Sequence[str], path: str | Path, title: str = "") -> Path:
    """PNG of one run's ``keys`` (one entry per epoch), mIoU and accuracies in percent."""
    return plot_runs([("", history)], keys, path, title=title)


def depth_figure(images: torch.Tensor, depths: torch.Tensor, predictions: Sequence[tuple[str, torch.Tensor]],
                 path: str | Path, *, rows: int = 6, max_depth: float | None = None,
                 min_depth: float = 1e-3, title: str | None = None) -> dict:
    """PNG of rows [image, ground-truth depth, each prediction, each |prediction − ground truth|]
    (thesis §5.5, cf. Fig. 5.9).

    ``images``: B×3×H×W in [0, 1]; ``depths``: B×H×W metres (≤ 0 or non-finite: no ground truth);
    predictions: (title, B×H×W metres) at the ground truth's size. Every depth panel shares one colour
    scale (plasma, near = bright, 0 to the largest valid ground truth shown, at most ``max_depth``) with a
    colour bar in metres; the error panels share their own scale and bar (0 to the 99th percentile of the
    shown errors); pixels without ground truth are grey in the error maps; ``title`` heads the figure.
    Returns the layout: ``path``, ``size`` (width, height in px), ``title``, ``columns`` (titles, left to right),
    ``colorbars`` (their labels), ``depth_range`` and ``error_range`` (metres).
    """
    count = min(rows, len(images))
    truth = depths[:count].detach().float().cpu().numpy()
    valid = np.isfinite(truth) & (truth > min_depth)
    if max_depth is not None:
        valid &= truth <= max_depth
    top = float(truth[valid].max()) if valid.any() else (max_depth or 1.0)
    predicted = [(name, p[:count].detach().float().cpu().numpy()) for name, p in predictions]
    errors = [(f"|{name} − truth|", np.where(valid, np.abs(p - truth), np.nan)) for name, p in predicted]
    finite = np.concatenate([e[np.isfinite(e)] for _, e in errors]) if errors else np.zeros(1)
    error_top = max(float(np.percentile(finite, 99)) if finite.size else 1.0, 1e-3)
    titles = ["image", "ground truth", *(name for name, _ in predicted), *(name for name, _ in errors)]

    height, width = truth.shape[-2:]
    panel_w, gap, margin, title_h, bar_h = 1.8, 0.06, 0.1, 0.6, 0.75  # inches; saved at DPI
    panel_h = panel_w * height / width
    columns = len(titles)
    fig_w = 2 * margin + columns * panel_w + (columns - 1) * gap
    fig_h = title_h + count * panel_h + (count - 1) * gap + bar_h
    figure = Figure(figsize=(fig_w, fig_h))
    grid = figure.add_gridspec(count + 1, columns, left=margin / fig_w, right=1 - margin / fig_w,
                               top=1 - title_h / fig_h, bottom=0.45 / fig_h, wspace=gap / panel_w,
                               hspace=gap / panel_h, height_ratios=[panel_h] * count + [0.1])
    axes = np.array([[figure.add_subplot(grid[r, c]) for c in range(columns)] for r in range(count)])
    depth_map = matplotlib.colormaps["plasma_r"].with_extremes(bad="black")
    error_map = matplotlib.colormaps["magma"].with_extremes(bad="0.6")
    title = title or "Depth of validation images: ground truth, each model's prediction and its absolute error"
    figure.text(0.5, 1 - 0.06 / fig_h, "\n".join(_wrap(title, fig_w - 0.2, FONT_PT + 1)), ha="center", va="top",
                fontsize=FONT_PT + 1)
    depth_shown = error_shown = None
    for r in range(count):
        axes[r, 0].imshow(to_uint8_image(images[r]))
        for c, panel in enumerate([np.where(valid[r], truth[r], np.nan), *(p[r] for _, p in predicted)], start=1):
            depth_shown = axes[r, c].imshow(panel, cmap=depth_map, vmin=0.0, vmax=top)
        for c, (_, error) in enumerate(errors, start=2 + len(predicted)):
            error_shown = axes[r, c].imshow(error[r], cmap=error_map, vmin=0.0, vmax=error_top)
    for c, column_title in enumerate(titles):
        axes[0, c].set_title(column_title, fontsize=FONT_PT, pad=3)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    colorbars = []
    for shown, first, last, label in ((depth_shown, 1, 2 + len(predicted), "depth (m)"),
                                      (error_shown, 2 + len(predicted), columns, "|error| (m)")):
        if shown is None or first >= last:
            continue
        cax = figure.add_subplot(grid[count, first:last])
        box = cax.get_position()  # a little space between neighbouring bars, so their end labels do not touch
        cax.set_position([box.x0 + 0.02 * box.width, box.y0, 0.96 * box.width, box.height])
        bar = figure.colorbar(shown, cax=cax, orientation="horizontal")
        bar.set_label(label, fontsize=FONT_PT)
        bar.ax.tick_params(labelsize=FONT_PT)
        colorbars.append(label)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    size = tuple(int(v) for v in figure.get_size_inches() * DPI)
    return {"path": path, "size": size, "title": title, "columns": titles, "colorbars": colorbars,
            "depth_range": (0.0, top), "error_range": (0.0, error_top)}
