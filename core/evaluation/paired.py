"""Paired statistics: is B really better than A on the same items, or is it noise?

One place for the numbers every comparison in embtune reports (IR evaluations per query,
LLM bench metrics per prompt): the mean difference with a seeded paired-bootstrap interval,
a permutation-test p-value, a sign-test p-value, wins/ties/losses, and a verdict that says
"better"/"worse" only when the whole interval is on one side of zero. The resampling is
scipy's, not hand-written. A verdict also needs the permutation test to agree
(p < 1 − confidence): with a handful of pairs a bootstrap interval can exclude zero by accident.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

TIE_TOLERANCE = 1e-12


@dataclass(frozen=True)
class PairedDifference:
    n: int
    mean_a: float
    mean_b: float
    delta: float
    ci_low: float
    ci_high: float
    p_value: float  # permutation test, two-sided
    sign_p_value: float  # sign test on wins vs losses, two-sided
    wins: int
    ties: int
    losses: int
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_difference(a: np.ndarray, b: np.ndarray, *, resamples: int = 2000, seed: int = 0,
                      confidence: float = 0.95) -> PairedDifference:
    """B minus A over paired observations."""
    from scipy.stats import binomtest, bootstrap, permutation_test

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or len(x) == 0:
        raise ValueError(f"paired values must be two 1-d arrays of the same non-zero length, got {x.shape}, {y.shape}")
    diff = y - x
    wins, losses = int((diff > TIE_TOLERANCE).sum()), int((diff < -TIE_TOLERANCE).sum())
    if np.allclose(diff, 0.0):
        return PairedDifference(len(x), float(x.mean()), float(y.mean()), 0.0, 0.0, 0.0, 1.0, 1.0, 0, len(x), 0,
                                "not proven")
    if np.allclose(diff, diff[0]):  # no spread: every resample has the same mean (scipy would warn)
        low = high = float(diff[0])
    else:
        interval = bootstrap((diff,), np.mean, n_resamples=resamples, confidence_level=confidence,
                             method="percentile", rng=np.random.default_rng(seed)).confidence_interval
        low, high = float(interval.low), float(interval.high)
    # One pair cannot be permuted (scipy refuses): nothing is significant on one observation.
    p_value = 1.0 if len(x) < 2 else float(permutation_test(
        (x, y), lambda u, v: np.mean(v - u), permutation_type="samples", n_resamples=resamples,
        rng=np.random.default_rng(seed)).pvalue)
    sign_p = float(binomtest(wins, wins + losses, 0.5).pvalue) if wins + losses else 1.0
    # The interval decides; with very few pairs a degenerate interval is not enough, the test must agree.
    significant = p_value < 1 - confidence
    verdict = "better" if low > 0 and significant else "worse" if high < 0 and significant else "not proven"
    return PairedDifference(len(x), float(x.mean()), float(y.mean()), float(diff.mean()), low, high, p_value, sign_p,
                            wins, len(x) - wins - losses, losses, verdict)
