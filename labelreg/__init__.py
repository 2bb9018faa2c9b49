"""labelreg: zoom-out segmenters, label-structure regularization, joint depth.

``labelreg.regularize(segmenter, autoencoder)`` adds the label-structure regularizer to any
segmenter in a training loop of one's own (README, "Use it in your own training loop").

Importing the package is light (no torch): its exports load on first use (PEP 562 ``__getattr__``), so
``labelreg --help`` starts without torch. It does install an import hook that runs ``_compat``'s guard
just before torchvision is first imported, which makes ``import labelreg`` then ``import torchvision``
safe on machines whose torchvision extension does not match torch (see ``_compat``). The other order
fails inside torchvision before any labelreg code runs.
"""
from __future__ import annotations

import sys
from importlib.abc import MetaPathFinder
from typing import Any

__version__ = "0.1.0"  # setup.py reads it from here; `labelreg --version` reports the installed metadata
__all__ = ["TORCHVISION_OPS_AVAILABLE", "__version__", "regularize"]


class _TorchvisionGuard(MetaPathFinder):
    """On the first ``import torchvision``: run ``labelreg._compat``'s guard, then let the import go on."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "torchvision":
            sys.meta_path.remove(self)  # once: the guard looks torchvision up itself
            __getattr__("TORCHVISION_OPS_AVAILABLE")  # imports _compat, whose import runs the guard
        return None  # the ordinary finders load torchvision


if "torchvision" not in sys.modules and not any(isinstance(f, _TorchvisionGuard) for f in sys.meta_path):
    sys.meta_path.insert(0, _TorchvisionGuard())


def __getattr__(name: str) -> Any:
    """The exports, imported on first use (they need torch)."""
    if name == "regularize":
        from labelreg.models.dropin import regularize
        return regularize
    if name == "TORCHVISION_OPS_AVAILABLE":
        from labelreg._compat import TORCHVISION_OPS_AVAILABLE
        return TORCHVISION_OPS_AVAILABLE
    raise AttributeError(f"module 'labelreg' has no attribute {name!r}")
