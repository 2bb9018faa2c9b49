"""Depth and joint depth + segmentation on NYUv2 (thesis §5.5).

``depth.models`` holds the networks: ``SegToDepth`` (Table 5.5), ``ZoomOutMultiTask`` and
``TwoPartModel`` (§5.5.2, Table 5.6), built by name with ``build_depth_model``.
"""
from depth.models import (DEPTH_MODELS, SegToDepth, TwoPartModel, ZoomOutMultiTask, adapt_input_channels,
                          build_depth_model, seg_to_depth, seg_to_depth_input, twopart_densenet121)

__all__ = ["DEPTH_MODELS", "SegToDepth", "TwoPartModel", "ZoomOutMultiTask", "adapt_input_channels",
           "build_depth_model", "seg_to_depth", "seg_to_depth_input", "twopart_densenet121"]
