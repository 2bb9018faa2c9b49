"""labelreg.study.stats against hand-computed values (means, t-intervals, paired t-test)."""
import math

import pytest

from labelreg.study.stats import mean_interval, paired_comparison


def test_mean_interval_matches_hand_computation():
    # 1..5: mean 3, sd sqrt(2.5); t(0.975, 4) = 2.776445 → half-width 2.776445 · sqrt(2.5) / sqrt(5) = 1.963243
    interval = mean_interval([1, 2, 3, 4, 5])
    assert interval.mean == pytest.approx(3.0)
    assert interval.std == pytest.approx(math.sqrt(2.5))
    assert interval.half_width == pytest.approx(1.963243, abs=1e-5)
    assert (interval.low, interval.high) == pytest.approx((3 - 1.963243, 3 + 1.963243), abs=1e-5)


def test_paired_comparison_matches_hand_computation():
    # differences 2, 3, 2 (seed 3 is unpaired and ignored): mean 7/3, sd sqrt(1/3), t = 7.
    # df = 2 has closed forms: quantile(u) = (2u − 1) sqrt(2 / (4u(1 − u))) → t(0.975, 2) = 4.302653;
    # two-sided p = 1 − t / sqrt(2 + t²) = 1 − 7 / sqrt(51) = 0.019804
    arm = {0: 3.0, 1: 5.0, 2: 4.0, 3: 9.0}
    baseline = {0: 1.0, 1: 2.0, 2: 2.0}
    comparison = paired_comparison(arm, baseline)
    assert comparison.seeds == [0, 1, 2]
    assert comparison.difference.mean == pytest.approx(7 / 3)
    half = 0.95 * math.sqrt(2 / (4 * 0.975 * 0.025)) * math.sqrt(1 / 3) / math.sqrt(3)
    assert half == pytest.approx(4.302653 * math.sqrt(1 / 3) / math.sqrt(3), rel=1e-6)
    assert comparison.difference.half_width == pytest.approx(half, rel=1e-6)
    assert comparison.p_value == pytest.approx(1 - 7 / math.sqrt(51), rel=1e-6)


def test_degenerate_cases():
    single = mean_interval([4.0])
    assert single.mean == 4.0 and math.isnan(single.half_width)
    assert mean_interval([]).n == 0
    same = paired_comparison({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0})  # zero variance: no p-value, zero interval
    assert same.difference.mean == 0 and same.difference.half_width == 0 and math.isnan(same.p_value)
