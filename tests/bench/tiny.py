"""Tiny cases for the benchmark's tests (CI sizes: a small DenseNet zoom-out model, 64×64, one timed step)."""
import json

from labelreg.bench.cases import Case
from labelreg.bench.report import TABLE_COLUMNS
from labelreg.models import PSPNet
from labelreg.models.backbones import build_backbone

TINY = {"hidden": 16, "backbone_options": {"growth_rate": 8, "block_config": [1, 1, 1, 1], "stem_channels": [8, 8, 8]}}
TINY_ARGS = ["--models", "zoomout_densenet67", "--model-options", json.dumps(TINY), "--batch", "2", "--size", "64x64",
             "--iters", "1", "--warmup", "1", "--num-classes", "5"]


def tiny_case(**changes):
    return Case(**{"model": "zoomout_densenet67", "batch": 2, "size": (64, 64), "num_classes": 5, "options": TINY,
                   "iters": 1, "warmup": 1, **changes})


def tiny_pspnet(num_classes=5):
    return PSPNet(build_backbone("densenet67", **TINY["backbone_options"]), num_classes, head_width=16)


def table_lines(text):
    return [line for line in text.splitlines() if line.startswith("| ")][2:]  # without header and rule


def cell(line, column):
    """The stripped cell of ``column`` (a name in report.TABLE_COLUMNS) in a printed table row."""
    return line.strip("|").split("|")[TABLE_COLUMNS.index(column)].strip()
