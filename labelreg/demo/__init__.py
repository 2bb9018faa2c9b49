"""``labelreg demo``: the whole pipeline on synthetic scenes, with a report in ``runs/demo``.

The stages, in order (``run.run_demo``; each one a function of ``stages``):

1. ``data``: write the synthetic data set (NYUv2 and VOC formats) if absent;
2. ``ae``: phase one (thesis §5.3.1), the 128-variant label autoencoder on the training label maps;
3. ``seg`` and ``seg_reg``: a tiny zoom-out DenseNet-67 on a small labeled subset, without (baseline) and
   with the frozen decoder as a regularizer (phase two, thesis §5.3.3), compared on the held-out split;
4. ``twopart`` and ``single``: joint depth + segmentation (thesis §5.5, the ``depth`` package), a tiny
   two-part model on labeled + depth-only frames and the single-part baseline;
5. ``queries``: label-space introspection (thesis §5.4.3), the same region of a training image searched
   in the held-out split, once from its label map (phase-one encoder) and once from the image (the
   regularized segmenter's predicted decoder input);
6. ``weak``: weak supervision from image tags (thesis ch. 4, ``labelreg.weak``): localization nets,
   diverse point sampling and a point-supervised head, against the same head on dense labels.

Each stage with a folder has it under ``--out`` (config, checkpoints, TensorBoard logs, metrics.json, and the
demo's record ``.labelreg-demo-stage``); the demo adds ``report.md`` (``report.py`` fills
``report_template.md``), ``metrics.json`` and the figures (``figures.py``) next to them.

``--stages``/``--skip`` choose the stages, a re-run reads back the stages that finished with the same config
(``runs.py``; ``--fresh`` trains them again), overrides reach the stages that read them (``plan.py``), and
the report records where its numbers come from and says when a run was reduced (``provenance.py``). The
demo never writes into, or deletes, a folder it did not make (``plan.check_folders``).
"""
from labelreg.demo.run import run_demo
from labelreg.demo.runs import TrainedRun, train_stage
from labelreg.demo.stages import DEMO_AE_CONFIG, STAGES


__all__ = ["DEMO_AE_CONFIG", "STAGES", "TrainedRun", "run_demo", "train_stage"]
