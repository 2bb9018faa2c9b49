"""Old import path of ``labelreg.retrieval`` (thesis §5.4.3), kept while importers move."""
from labelreg.retrieval import (CELL, DTYPES, INDEX_VERSION, Cells, FeatureSource, ImageEntry, ImageFeatures,  # noqa: F401
                                LabelFeatures, Match, QueryResult, RegionIndex, build_index, cells_to_pixel_box,
                                class_box, find_sample, fingerprint, grid_shape, image_source, index_description,
                                label_source, open_index, parse_box, pixel_box_to_cells, query_figure, run_query,
                                window_distances)
from labelreg.retrieval.figure import MATCH_COLOUR, PANEL, QUERY_COLOUR  # noqa: F401
from labelreg.retrieval.query import _dataset_ids  # noqa: F401
