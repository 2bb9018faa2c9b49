"""Moved to ``labelreg.tasks.segmentation``; this alias keeps the old import path working during the move
(the same module object, so attributes set on it reach the moved code)."""
import sys

from labelreg.tasks import segmentation

sys.modules[__name__] = segmentation
