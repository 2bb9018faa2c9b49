"""labelreg: zoom-out segmenters, label-structure regularization, joint depth.

Importing the package first makes ``import torchvision`` safe on machines
where torchvision's compiled extension does not match torch (see ``_compat``).
"""
from labelreg._compat import TORCHVISION_OPS_AVAILABLE

__version__ = "0.1.0"
__all__ = ["TORCHVISION_OPS_AVAILABLE", "__version__"]
