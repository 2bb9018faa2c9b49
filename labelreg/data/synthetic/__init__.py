"""Procedurally generated indoor rooms, written to disk in the real dataset formats.

``write_synthetic_dataset`` renders box rooms seen through a pinhole camera and
writes them exactly as the real data sets lay them out, so that the demo and the
tests go through the same readers as real NYUv2 / PASCAL VOC data:

- ``nyu/nyu_depth_v2_labeled.mat``: MATLAB v7.3 (HDF5 with a 512-byte userblock
  holding the MATLAB text header), column-major: ``images`` N×3×W×H uint8,
  ``depths`` N×W×H float32 metres, ``labels`` N×W×H uint16 raw ids;
- ``nyu/splits.mat`` (``trainNdxs``/``testNdxs``, 1-based) and
  ``nyu/classMapping40.mat`` (``mapClass``, ``className``, ``allClassName``);
- ``nyu/depth_only/frame_XXXXX.h5``: unlabeled frames, ``rgb`` 3×H×W uint8 and
  ``depth`` H×W float32 metres;
- ``VOCdevkit/VOC2012``: the same labeled scenes as JPEGs and palette PNGs
  (raw → VOC through ``RAW_TO_VOC``, with a 255 void band along object boundaries).

Scenes are ray cast in numpy: the room is the inside of an axis-aligned box and
every object is a set of axis-aligned cuboids and vertical cylinders; a z-buffer
keeps the nearest surface, so labels, occlusion and depth agree by construction.
Textures come from families shared between classes (wood, fabric, paint, ...)
with per-instance colours from overlapping ranges, so a local patch does not
identify the class; shape and context (chairs around tables, lamps and night
stands next to beds, pillows on beds, TVs on cabinets) have to.

Modules, in dependency order: ``classes`` (names and mappings), ``materials``
(textures), ``scene`` (primitives, frames, placement), ``furniture`` and
``props`` (object builders), ``layout`` (what goes in which room), ``render``
(camera, ray casting, shading, VOC labels), ``writer`` (the file formats).
"""
from labelreg.data.synthetic.classes import NYU40_CLASS_NAMES, RAW_NAMES, RAW_TO_NYU40, RAW_TO_VOC
from labelreg.data.synthetic.render import render_scene, voc_label
from labelreg.data.synthetic.writer import SyntheticPaths, dataset_exists, synthetic_paths, write_synthetic_dataset

__all__ = [
    "NYU40_CLASS_NAMES",
    "RAW_NAMES",
    "RAW_TO_NYU40",
    "RAW_TO_VOC",
    "render_scene",
    "voc_label",
    "SyntheticPaths",
    "write_synthetic_dataset",
    "synthetic_paths",
    "dataset_exists",
]
