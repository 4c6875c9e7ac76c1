"""Comparing two models on the same queries: paired per query (bootstrap interval, permutation
p-value, wins/ties/losses, a verdict), the queries that got worse with both rankings, and the
before/after table runs and reports print.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from core.errors import EmbtuneError
from core.evaluation.metrics import METRICS, EvaluationResult
from core.evaluation.paired import PairedDifference, paired_difference
from core.evaluation.sets import RetrievalSet


@dataclass(frozen=True)
class Comparison(PairedDifference):
    """Model B minus model A on one metric at one dimension, paired over the same queries: the
    paired statistics (interval, p-values, wins/ties/losses, verdict) plus where they were taken."""

    dimension: int = 0
    metric: str = ""


def compare_results(a: EvaluationResult, b: EvaluationResult, *, metrics: Sequence[str] = METRICS,
                    resamples: int = 2000, seed: int = 0, confidence: float = 0.95) -> list[Comparison]:
    """Paired bootstrap interval of the mean per-query difference and a permutation p-value.

    "better"/"worse" only when the whole interval is above/below zero; otherwise "not proven".
    """
    shared_dims = [d for d in a.dimensions if d in b.dimensions]
    if not shared_dims:
        raise EmbtuneError(f"{a.model_id} and {b.model_id} were evaluated at no common dimension")
    comparisons = []
    for dimension in shared_dims:
        for metric in metrics:
            values_a, values_b = a.per_query[dimension][metric], b.per_query[dimension][metric]
            query_ids = sorted(set(values_a) & set(values_b))
            if len(query_ids) != len(values_a) or len(query_ids) != len(values_b):
                raise EmbtuneError(f"{a.model_id} and {b.model_id} were evaluated on different queries "
                                   f"({len(values_a)} vs {len(values_b)}); compare on the same data")
            stats = paired_difference(np.array([values_a[q] for q in query_ids]),
                                      np.array([values_b[q] for q in query_ids]),
                                      resamples=resamples, seed=seed, confidence=confidence)
            comparisons.append(Comparison(**stats.to_dict(), dimension=dimension, metric=metric))
    return comparisons


@dataclass(frozen=True)
class Regression:
    query_id: str
    query: str
    loss: float
    value_a: float
    value_b: float
    top_a: list[tuple[str, float]]
    top_b: list[tuple[str, float]]
    relevant_moves: dict[str, tuple[int | None, int | None]]  # item → (rank in A, rank in B), 1-based
    item_texts: dict[str, str] = field(default_factory=dict)
    """The text of every item named above: a person reads "Труба дымоходная 115 мм", not "P0083"."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def regressions(a: EvaluationResult, b: EvaluationResult, data: RetrievalSet, *, metric: str = "ndcg@10",
                dimension: int | None = None, limit: int = 10) -> list[Regression]:
    """Queries where B scores lower than A, worst first, with both top-5s and relevant items' ranks."""
    dimension = dimension or max(d for d in a.dimensions if d in b.dimensions)
    values_a, values_b = a.per_query[dimension][metric], b.per_query[dimension][metric]
    losers = sorted((q for q in values_a if values_b.get(q, 0.0) < values_a[q] - 1e-12),
                    key=lambda q: values_b[q] - values_a[q])[:limit]

    def rank(ranking: list[tuple[str, float]], item: str) -> int | None:
        return next((position for position, (i, _) in enumerate(ranking, start=1) if i == item), None)

    result = []
    for query_id in losers:
        top_a, top_b = a.rankings[dimension][query_id], b.rankings[dimension][query_id]
        relevant = [i for i, s in data.qrels[query_id].items() if s >= a.relevance_threshold]
        named = {item for item, _ in top_a[:5]} | {item for item, _ in top_b[:5]} | set(relevant)
        result.append(Regression(query_id, data.queries[query_id], values_a[query_id] - values_b[query_id],
                                 values_a[query_id], values_b[query_id], top_a[:5], top_b[:5],
                                 {item: (rank(top_a, item), rank(top_b, item)) for item in relevant},
                                 {item: data.corpus[item] for item in sorted(named) if item in data.corpus}))
    return result


def comparison_table(comparisons: Sequence[Comparison], metrics: Sequence[str] = ("ndcg@10", "recall@3"),
                     label_a: str = "before", label_b: str = "after") -> str:
    """A Markdown before/after table: one row per dimension, each delta with its interval."""
    header = ["dim"]
    for metric in metrics:
        header += [f"{metric} {label_a}", f"{metric} {label_b}", "Δ [95% CI]", "verdict"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    by_key = {(c.dimension, c.metric): c for c in comparisons}
    for dimension in sorted({c.dimension for c in comparisons}, reverse=True):
        cells = [str(dimension)]
        for metric in metrics:
            c = by_key.get((dimension, metric))
            if c is None:
                cells += ["", "", "", ""]
                continue
            cells += [f"{c.mean_a:.4f}", f"{c.mean_b:.4f}", f"{c.delta:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}]",
                      c.verdict]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
