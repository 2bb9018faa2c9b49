"""Models. Builders are keyword-only functions; models return dicts of named outputs."""
from labelreg.models.autoencoder import (
    AE_VARIANTS,
    LabelAutoencoder,
    LabelDecoder,
    LabelEncoder,
    label_autoencoder,
    one_hot_labels,
)

__all__ = [
    "AE_VARIANTS",
    "LabelAutoencoder",
    "LabelDecoder",
    "LabelEncoder",
    "label_autoencoder",
    "one_hot_labels",
]
