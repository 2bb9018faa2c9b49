"""Statistics of a study: means with 95% t-intervals and paired comparisons over seeds.

Runs of the same seed are paired across arms (same training subset, data order, augmentation and
initial segmenter), so an arm is compared with the baseline through the per-seed differences:
their mean, its 95% t-interval (n − 1 degrees of freedom) and the paired t-test's two-sided
p-value (``scipy.stats.ttest_rel``) — thesis §5.4 reports single runs; the seeds are ours.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


@dataclass
class Interval:
    mean: float
    low: float
    high: float
    n: int
    std: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def as_dict(self) -> dict:
        return {**asdict(self), "half_width": self.half_width}


@dataclass
class PairedComparison:
    difference: Interval  # arm − baseline, over the paired seeds
    p_value: float  # two-sided paired t-test (nan with fewer than two pairs or zero variance)
    seeds: list[int]

    def as_dict(self) -> dict:
        return {"difference": self.difference.as_dict(), "p_value": self.p_value, "seeds": self.seeds}


def mean_interval(values, confidence: float = 0.95) -> Interval:
    """Mean and its ``confidence`` t-interval; a single value (or none) has an undefined interval."""
    values = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    n = len(values)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, math.nan)
    mean = float(values.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1, math.nan)
    std = float(values.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, std)


def paired_comparison(arm: dict[int, float], baseline: dict[int, float], confidence: float = 0.95) -> PairedComparison:
    """``arm`` − ``baseline`` over the seeds both have (dicts seed → metric)."""
    seeds = sorted(seed for seed in arm if seed in baseline and arm[seed] is not None and baseline[seed] is not None)
    a = np.array([arm[seed] for seed in seeds], dtype=np.float64)
    b = np.array([baseline[seed] for seed in seeds], dtype=np.float64)
    difference = mean_interval(a - b, confidence)
    p_value = math.nan
    if len(seeds) >= 2 and float(np.std(a - b)) > 0:
        p_value = float(stats.ttest_rel(a, b).pvalue)
    return PairedComparison(difference, p_value, seeds)
