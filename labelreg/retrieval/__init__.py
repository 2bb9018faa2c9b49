"""Label-space nearest-neighbour retrieval (thesis §5.4.3).

A region of a label map is described by the phase-one encoder's bottleneck features at the
coarse cells under it (one cell = 16×16 pixels). Every label map of a reference set is encoded
once into an on-disk index; a query region is then compared with every region of the same size
in cells, at every position of every reference image. Queries may also start from an image: a
phase-two segmenter with the decoder regularizer predicts the decoder's input (``aux_code``, same
grid), and an index over the reference images' predicted codes is searched with it.

Read in this order:

- ``geometry``: pixel boxes ↔ cells, the largest region of a class;
- ``sources``: feature sources (label maps through the encoder, images through a segmenter) and
  loading them from checkpoints;
- ``index``: the on-disk index (build, open, search) and ``run_query``;
- ``figure``: picture grids like thesis Fig. 5.7;
- ``query``: ``query_checkpoints``, a query end to end from checkpoints (``labelreg query``).
"""
from labelreg.retrieval.figure import query_figure
from labelreg.retrieval.geometry import (CELL, Cells, cells_to_pixel_box, class_box, grid_shape, parse_box,
                                         pixel_box_to_cells)
from labelreg.retrieval.index import (DTYPES, INDEX_VERSION, ImageEntry, Match, QueryResult, RegionIndex, build_index,
                                      fingerprint, index_description, open_index, run_query, window_distances)
from labelreg.retrieval.query import QueryRun, class_query_box, find_sample, query_boxes, query_checkpoints
from labelreg.retrieval.sources import FeatureSource, ImageFeatures, LabelFeatures, image_source, label_source

__all__ = ["CELL", "Cells", "DTYPES", "FeatureSource", "INDEX_VERSION", "ImageEntry", "ImageFeatures", "LabelFeatures",
           "Match", "QueryResult", "QueryRun", "RegionIndex", "build_index", "cells_to_pixel_box", "class_box",
           "class_query_box", "find_sample", "fingerprint", "grid_shape", "image_source", "index_description",
           "label_source", "open_index", "parse_box", "pixel_box_to_cells", "query_boxes", "query_checkpoints",
           "query_figure", "run_query", "window_distances"]
