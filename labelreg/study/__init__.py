"""``labelreg study``: does the label-structure regularizer help? (thesis §5.4, Tables 5.1/5.2).

A protocol (``configs/study/*.yaml``) names a base segmenter config, the phase-one autoencoder
config, the arms (override lists), the seeds, the budget and the scoring split; the study trains
one autoencoder, every arm × seed, and writes ``report.md``, ``results.json`` and ``study.png``.
"""
from labelreg.study.protocol import Protocol, load_protocol
from labelreg.study.runner import run_study

__all__ = ["Protocol", "load_protocol", "run_study"]
