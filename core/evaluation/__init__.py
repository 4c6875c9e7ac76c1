"""Evaluation: how well a model finds the right items, and whether another one really does better.

- ``sets``: retrieval sets (queries, corpus, graded judgements) and their loaders, ``bundled:`` included
- ``metrics``: trec_eval metrics per query and dimension (``evaluate_retrieval``)
- ``paired``: paired statistics — bootstrap interval, permutation and sign tests, the verdict
- ``compare``: two models on the same queries: comparisons, regressions, the before/after table
- ``reports``: several models on one set (``embtune eval``, the Compare page), saved reports
"""

from core.evaluation.compare import Comparison, Regression, compare_results, comparison_table, regressions
from core.evaluation.metrics import (
    METRICS,
    EvaluationResult,
    evaluate_retrieval,
    evaluate_vectors,
    metric_name,
    trec_metrics,
)
from core.evaluation.paired import PairedDifference, paired_difference
from core.evaluation.reports import EvaluationReport, run_evaluation, save_report, saved_reports
from core.evaluation.sets import RELEVANCE_THRESHOLD, RetrievalSet, load_retrieval_set

__all__ = ["METRICS", "RELEVANCE_THRESHOLD", "Comparison", "EvaluationReport", "EvaluationResult",
           "PairedDifference", "Regression", "RetrievalSet", "compare_results", "comparison_table",
           "evaluate_retrieval", "evaluate_vectors", "load_retrieval_set", "metric_name", "paired_difference",
           "regressions", "run_evaluation", "save_report", "saved_reports", "trec_metrics"]
