"""Moved to ``labelreg.tasks.inference``; this alias keeps the old import path working during the move
(the same module object, so attributes set on it reach the moved code)."""
import sys

from labelreg.tasks import inference

sys.modules[__name__] = inference
