"""Class tables: the raw NYUv2-style names, raw → 40-class and → VOC mappings."""
from __future__ import annotations

import numpy as np

from labelreg.data.nyu import NYU40_CLASSES

NYU40_CLASS_NAMES: list[str] = NYU40_CLASSES  # the 40 names of classMapping40.mat, shared with the reader
_C40 = {name: i + 1 for i, name in enumerate(NYU40_CLASS_NAMES)}  # 1-based, like mapClass

# (raw name, 40-class name). Several raw names share one 40-class id, like real NYUv2.
_RAW_TABLE: list[tuple[str, str]] = [
    ("wall", "wall"),
    ("floor", "floor"),
    ("ceiling", "ceiling"),
    ("bed", "bed"),
    ("chair", "chair"),
    ("office chair", "chair"),
    ("sofa", "sofa"),
    ("couch", "sofa"),
    ("table", "table"),
    ("coffee table", "table"),
    ("dining table", "table"),
    ("door", "door"),
    ("window", "window"),
    ("bookshelf", "bookshelf"),
    ("picture", "picture"),
    ("poster", "picture"),
    ("cabinet", "cabinet"),
    ("tv stand", "cabinet"),
    ("dresser", "dresser"),
    ("pillow", "pillow"),
    ("cushion", "pillow"),
    ("television", "television"),
    ("night stand", "night stand"),
    ("lamp", "lamp"),
    ("floor lamp", "lamp"),
    ("table lamp", "lamp"),
    ("box", "box"),
    ("cardboard box", "box"),
    ("books", "books"),
    ("curtain", "curtain"),
    ("rug", "floor mat"),
    ("person", "person"),
    ("plant", "otherprop"),
    ("vase", "otherprop"),
    ("bottle", "otherprop"),
    ("cup", "otherprop"),
    ("bag", "bag"),
    ("column", "otherstructure"),
    ("stool", "otherfurniture"),
]
RAW_NAMES: list[str] = [raw for raw, _ in _RAW_TABLE]
RAW_TO_NYU40: np.ndarray = np.array([_C40[c] for _, c in _RAW_TABLE], dtype=np.uint8)
RAW = {name: i + 1 for i, name in enumerate(RAW_NAMES)}  # raw id, 1-based; 0 = unlabeled

# raw name -> VOC class index (1..20); every other raw name is background (0). Direct from the raw
# names, because the 40 classes lump plants and bottles into "otherprop".
_VOC_OF_RAW = {
    "chair": 9, "office chair": 9,
    "table": 11, "coffee table": 11, "dining table": 11,  # VOC "diningtable"
    "sofa": 18, "couch": 18,
    "television": 20,
    "person": 15,
    "plant": 16,  # VOC "pottedplant"
    "bottle": 5,
}
# raw id - 1 -> VOC index, indexed like RAW_TO_NYU40
RAW_TO_VOC: np.ndarray = np.zeros(len(RAW_NAMES), dtype=np.uint8)
for _name, _voc in _VOC_OF_RAW.items():
    RAW_TO_VOC[RAW[_name] - 1] = _voc  # KeyError for a name that is not a raw name
del _name, _voc

# raw id (0..R) -> VOC index (255 for raw 0 = unlabeled)
RAW_ID_TO_VOC = np.concatenate([[255], RAW_TO_VOC]).astype(np.uint8)
