"""labelreg: zoom-out segmenters, label-structure regularization, joint depth.

Importing the package first makes ``import torchvision`` safe on machines
where torchvision's compiled extension does not match torch (see ``_compat``).

``labelreg.regularize(segmenter, autoencoder)`` adds the label-structure regularizer to any
segmenter in a training loop of one's own (README, "Use it in your own training loop").
"""
from labelreg._compat import TORCHVISION_OPS_AVAILABLE

__version__ = "0.1.0"
__all__ = ["TORCHVISION_OPS_AVAILABLE", "__version__", "regularize"]


def regularize(segmenter, autoencoder, *, tap=None, weight=0.5, loss="ce", example_input=None):
    """The phase-two label-structure regularizer around any segmenter (thesis §5.3.3): see
    ``labelreg.models.dropin.regularize``. Imported lazily, so ``import labelreg`` stays light."""
    from labelreg.models.dropin import regularize as _regularize

    return _regularize(segmenter, autoencoder, tap=tap, weight=weight, loss=loss, example_input=example_input)
