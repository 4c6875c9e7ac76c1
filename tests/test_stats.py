"""Paired statistics: planted effects are found, identical or tiny samples are not over-claimed."""

from __future__ import annotations

import numpy as np
import pytest

from core.evaluation.paired import paired_difference


def test_identical_values_are_not_proven() -> None:
    values = np.random.default_rng(0).uniform(size=30)
    result = paired_difference(values, values)
    assert (result.delta, result.ci_low, result.ci_high, result.verdict) == (0.0, 0.0, 0.0, "not proven")
    assert result.ties == 30 and result.p_value == 1.0 and result.sign_p_value == 1.0


def test_planted_effect_is_better_with_interval_around_delta() -> None:
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 0.5, 60)
    b = a + 0.2 + rng.normal(0, 0.05, 60)
    result = paired_difference(a, b)
    assert result.verdict == "better" and result.ci_low > 0 and result.ci_low <= result.delta <= result.ci_high
    assert result.p_value < 0.01 and result.sign_p_value < 0.01 and result.wins > 50
    assert paired_difference(b, a).verdict == "worse"


def test_three_equal_gains_are_not_enough_evidence() -> None:
    result = paired_difference(np.zeros(3), np.full(3, 0.5))
    assert result.ci_low == result.ci_high == 0.5
    assert result.p_value > 0.05 and result.verdict == "not proven"
    assert result.sign_p_value == pytest.approx(0.25)


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="same non-zero length"):
        paired_difference(np.zeros(3), np.zeros(4))
