"""Import guard for torchvision builds whose C++ extension does not match torch.

torchvision 0.28.0 from PyPI is a CUDA build. Next to a CPU build of torch its
compiled extension (``torchvision._C``) fails to load, and ``import torchvision``
then dies in ``torchvision/_meta_registrations.py``, which registers fake
kernels for ``torchvision::nms`` and ``torchvision::qnms`` and needs their
schemas to exist (upstream pytorch/vision#9085).

This module defines just those two schemas when, and only when, the extension
cannot be loaded, then lets ``import torchvision`` proceed. Models and
transforms work normally afterwards; the compiled ops themselves
(``torchvision.ops.nms``, ``roi_align``, ``torchvision.io`` decoders) remain
unavailable and raise torchvision's own "Couldn't load custom C++ ops" error.
labelreg uses none of them. With a matching torch/torchvision pair this module
does nothing.
"""
from __future__ import annotations

import importlib.util
import glob
import os
import sys

import torch

# Kept at module level so the schema registration lives as long as the process.
_FALLBACK_LIBRARY: torch.library.Library | None = None


def _extension_loads() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # torchvision absent: nothing to guard, let the import fail normally
    for folder in spec.submodule_search_locations:
        for path in glob.glob(os.path.join(folder, "_C*.so")) + glob.glob(os.path.join(folder, "_C*.pyd")):
            try:
                torch.ops.load_library(path)
                return True
            except (OSError, RuntimeError):
                return False
    return False


def ensure_torchvision_importable() -> bool:
    """Make ``import torchvision`` succeed; return True if the C++ ops are usable."""
    global _FALLBACK_LIBRARY
    if "torchvision" in sys.modules:
        return bool(getattr(sys.modules["torchvision"].extension, "_has_ops", lambda: False)())
    if _extension_loads():
        return True
    if _FALLBACK_LIBRARY is None and not hasattr(torch.ops.torchvision, "nms"):
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _FALLBACK_LIBRARY = lib
    return False


TORCHVISION_OPS_AVAILABLE = ensure_torchvision_importable()
