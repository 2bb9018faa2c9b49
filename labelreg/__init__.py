"""labelreg: zoom-out segmenters, label-structure regularization, joint depth.

Importing the package first makes ``import torchvision`` safe on machines
where torchvision's compiled extension does not match torch (see ``_compat``).

``labelreg.regularize(segmenter, autoencoder)`` adds the label-structure regularizer to any
segmenter in a training loop of one's own (README, "Use it in your own training loop").
"""
from labelreg._compat import TORCHVISION_OPS_AVAILABLE
from labelreg.models.dropin import regularize  # after _compat: models import torchvision

__version__ = "0.1.0"
__all__ = ["TORCHVISION_OPS_AVAILABLE", "__version__", "regularize"]
