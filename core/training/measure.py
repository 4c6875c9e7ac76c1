"""What a finished training run measures before the gate decides: before/after on its held-out
split (paired, per query, at every trained dimension), the forgetting check on an out-of-domain
set (paired too), and the overfitting warning read from the per-epoch validation curve; the validation
evaluator the trainer keeps its best checkpoint by.
"""

from __future__ import annotations

from typing import Any

from core.evaluation import (
    RetrievalSet,
    compare_results,
    comparison_table,
    evaluate_retrieval,
    load_retrieval_set,
    metric_name,
)
from core.training.config import TrainingConfig


def as_embedder(model: Any, model_id: str) -> Any:
    """A model being trained, wrapped as an embedder (no cache: its weights are still moving)."""
    from core.embedders.text import TextEmbedder

    return TextEmbedder(model, model_id=model_id, spec=model_id, cache=None)


def before_after(result: Any, config: TrainingConfig, tuned: Any, test_set: RetrievalSet, dims: list[int],
                 device: str, runs: Any, primary_metric: str) -> dict[str, Any] | None:
    """Fill the result's before/after table; return the paired comparison of the primary metric."""
    from core.embedders import load_embedder

    base = load_embedder(config.model, device=device, fallback=False, cache=False)
    before = evaluate_retrieval(base, test_set, dimensions=dims)
    after = evaluate_retrieval(tuned, test_set, dimensions=dims)
    comparisons = compare_results(before, after)
    result.before_after = [c.to_dict() for c in comparisons]
    result.table = comparison_table(comparisons)
    if test_set.query_kinds:
        full = max(dims)
        result.by_kind = {"before": before.by_kind("recall@3", full), "after": after.by_kind("recall@3", full)}
    if runs is not None:
        for label, evaluation, spec in (("before", before, config.model), ("after", after, result.output_dir)):
            runs.save_evaluation(model_spec=spec, model_fingerprint=evaluation.model_fingerprint,
                                 data_source=f"{config.data}#test ({label})", metrics=evaluation.metrics,
                                 per_query=evaluation.per_query_rows(), run_name=result.run_name)
    return next((c.to_dict() for c in comparisons if metric_name(c.dimension, c.metric) == primary_metric), None)


def forgetting_check(result: Any, config: TrainingConfig, tuned: Any, device: str) -> dict[str, Any]:
    """NDCG@10 of base and tuned model on the forgetting set, paired per query; stored on the result."""
    from core.embedders import load_embedder
    general = load_retrieval_set(config.forgetting_data)
    base = load_embedder(config.model, device=device, fallback=False, cache=False)
    before, after = evaluate_retrieval(base, general), evaluate_retrieval(tuned, general)
    [comparison] = [c for c in compare_results(before, after, metrics=("ndcg@10",))
                    if c.dimension == max(before.dimensions)]
    paired = {**comparison.to_dict(), "data": general.name}
    result.forgetting = {"data": general.name, "queries": comparison.n, "ndcg@10_before": comparison.mean_a,
                         "ndcg@10_after": comparison.mean_b, "delta": comparison.delta, "ci_low": comparison.ci_low,
                         "ci_high": comparison.ci_high, "verdict": comparison.verdict}
    if comparison.delta < -config.forgetting_threshold / 100:
        result.warnings.append(f"forgetting: NDCG@10 on {general.name} fell {comparison.mean_a:.4f} → "
                               f"{comparison.mean_b:.4f} ({comparison.delta * 100:+.2f} points, 95% CI "
                               f"[{comparison.ci_low * 100:+.2f}, {comparison.ci_high * 100:+.2f}])")
    return paired


def overfitting_warnings(epoch_metrics: list[dict[str, Any]], metric: str) -> list[str]:
    """Validation getting worse for two evaluations while training loss keeps falling."""
    points = [m for m in epoch_metrics if metric in m and "train_loss" in m]
    if len(points) < 3:
        return []
    last = points[-3:]
    metric_falls = last[0][metric] > last[1][metric] > last[2][metric]
    loss_falls = last[0]["train_loss"] > last[1]["train_loss"] > last[2]["train_loss"]
    if metric_falls and loss_falls:
        return [f"overfitting: {metric} fell for two evaluations ({last[0][metric]:.4f} → {last[2][metric]:.4f}) "
                "while training loss kept falling; fewer epochs or more data"]
    return []


def validation_evaluator(data: RetrievalSet, dims: list[int], primary: str) -> Any:
    """Graded IR metrics on the validation split, in the shape the trainer's keep-best reads."""
    from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator

    class ValidationEvaluator(SentenceEvaluator):
        def __init__(self) -> None:
            super().__init__()
            self.primary_metric = primary
            self.greater_is_better = True

        def __call__(self, model: Any, output_path: str | None = None, epoch: float = -1, steps: int = -1,
                     ) -> dict[str, float]:
            return dict(evaluate_retrieval(as_embedder(model, "training"), data, dimensions=dims).metrics)

    return ValidationEvaluator()
