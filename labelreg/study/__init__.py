"""``labelreg study``: does the label-structure regularizer help? (thesis §5.4, Tables 5.1/5.2).

A protocol (``configs/study/*.yml``) names a base segmenter config, the phase-one autoencoder(s),
the data (synthetic scenes or a real set), the arms (override lists), the seeds, the budget, the
scoring split and its scored subsets; the study trains each autoencoder once, every arm × seed, and
writes ``report.md``, ``results.json`` and ``study.png``. One study holds its folder at a time and its
runs die with it (``labelreg.study.processes``).
"""
from labelreg.study.protocol import Protocol, load_protocol
from labelreg.study.runner import run_study

__all__ = ["Protocol", "load_protocol", "run_study"]
