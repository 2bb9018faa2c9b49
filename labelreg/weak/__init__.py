"""Weakly supervised segmentation from image tags (thesis chapter 4).

Pipeline (``labelreg weak <step>``, see ``cli.py`` and ``docs/weak.md``):

0. ``pretrain`` (optional, ``weak.pretrain_epochs > 0``): the backbone trained as a multi-label
   tag classifier from the training tags only, an offline stand-in for ImageNet weights — ``pretrain.py``;
1. ``features``: zoom-out features of a frozen backbone (VGG-16 in the thesis), dataset-wide
   standardisation, unit norm — ``features.py``, ``store.py``; tags from labels — ``tags.py``;
2. ``localize``: one localization net per class, trained from tags with a MIL loss
   (global softmax, eq. 4.3.2, or per-pixel softmax, eq. 4.3.1) — ``localization.py``;
3. ``sample``: k diverse points per present class and background points (eqs. 4.3.3–4.3.5),
   or the Table 4.3 alternatives — ``sampling.py``;
4. ``train``: a 1×1 head on the points (masked loss), and on dense labels for comparison;
   mIoU on the validation split — ``train.py``.

``pipeline.py`` chains the steps through files in the run directory; ``demo.py`` runs the
CPU-sized demo config; ``cli.py`` adds ``labelreg weak`` to the command line. Nothing is imported
here: import the module you need.
"""
