"""Information-retrieval metrics you can trust: graded, per query, per dimension.

Metrics come from trec_eval (through ``pytrec_eval``), the reference implementation of
these measures: graded NDCG uses the 0..1 relevance scores as gains, binary metrics (MRR,
Recall, MAP and ``ndcg@10_binary``) count score ≥ ``relevance_threshold`` (default 0.5) as
relevant. We chose pytrec_eval over ranx because it answers instantly (ranx compiles with
numba for ~30 s on first use on a 2-core CPU) and over hand-written code because it is the
definition everybody else reports. sentence-transformers' evaluator is binary and keeps no
per-query values; a test checks that our binary numbers agree with it.

Every result keeps per-query values and top-10 rankings, so two models evaluated on the same
queries can be compared pairwise (``core.evaluation.compare``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from core.errors import EmbtuneError
from core.evaluation.sets import RELEVANCE_THRESHOLD, RetrievalSet
from core.progress import CancelToken, ProgressCallback, ProgressReporter

METRICS = ("ndcg@10", "ndcg@10_binary", "mrr@10", "recall@1", "recall@3", "recall@10", "map@100")
RANKING_DEPTH = 100  # deep enough for map@100
KEPT_RANKING = 10  # per query and dimension, for regression lists and the studio
# trec_eval takes integer judgements; 0..1 scores are scaled (NDCG is scale-invariant).
_GRADE_SCALE = 1000


@dataclass
class EvaluationResult:
    """Means per ``dim_{d}_{metric}``, per-query values and top rankings for one model on one set."""

    model_id: str
    model_fingerprint: str
    data_name: str
    dimensions: list[int]
    metrics: dict[str, float]
    per_query: dict[int, dict[str, dict[str, float]]]  # dimension → metric → query id → value
    rankings: dict[int, dict[str, list[tuple[str, float]]]]  # dimension → query id → [(item, score)]
    query_kinds: dict[str, str] = field(default_factory=dict)
    relevance_threshold: float = RELEVANCE_THRESHOLD
    spearman: dict[int, float] = field(default_factory=dict)

    def metric(self, name: str, dimension: int | None = None) -> float:
        return self.metrics[metric_name(dimension or self.dimensions[0], name)]

    def per_query_rows(self) -> list[dict[str, Any]]:
        """Flat (query id, dimension, metric, value) rows, as storage and JSON keep them."""
        return [
            {"query_id": query_id, "dimension": dimension, "metric": metric, "value": value}
            for dimension, by_metric in self.per_query.items()
            for metric, by_query in by_metric.items()
            for query_id, value in by_query.items()
        ]

    def by_kind(self, metric: str, dimension: int) -> dict[str, float]:
        """Mean of a metric per query kind (typo, split_word, …) where kinds are known."""
        groups: dict[str, list[float]] = {}
        for query_id, value in self.per_query[dimension][metric].items():
            groups.setdefault(self.query_kinds.get(query_id, "all"), []).append(value)
        return {kind: float(np.mean(values)) for kind, values in sorted(groups.items())}

    def to_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["per_query"] = self.per_query_rows()
        payload["rankings"] = {str(d): {q: [list(pair) for pair in ranking] for q, ranking in by_query.items()}
                               for d, by_query in self.rankings.items()}
        payload["spearman"] = {str(d): value for d, value in self.spearman.items()}
        return payload

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> EvaluationResult:
        per_query: dict[int, dict[str, dict[str, float]]] = {}
        for row in payload["per_query"]:
            per_query.setdefault(int(row["dimension"]), {}).setdefault(row["metric"], {})[row["query_id"]] = \
                float(row["value"])
        return cls(
            model_id=payload["model_id"], model_fingerprint=payload["model_fingerprint"],
            data_name=payload["data_name"], dimensions=[int(d) for d in payload["dimensions"]],
            metrics=dict(payload["metrics"]), per_query=per_query,
            rankings={int(d): {q: [(i, float(s)) for i, s in r] for q, r in by_query.items()}
                      for d, by_query in payload.get("rankings", {}).items()},
            query_kinds=dict(payload.get("query_kinds", {})),
            relevance_threshold=float(payload.get("relevance_threshold", RELEVANCE_THRESHOLD)),
            spearman={int(d): float(v) for d, v in payload.get("spearman", {}).items()},
        )


def metric_name(dimension: int, metric: str) -> str:
    return f"dim_{dimension}_{metric}"


# -- evaluating a model -----------------------------------------------------------------------


def evaluate_retrieval(
    embedder: Any,
    data: RetrievalSet,
    *,
    dimensions: Sequence[int] | None = None,
    relevance_threshold: float = RELEVANCE_THRESHOLD,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> EvaluationResult:
    """Embed corpus and queries once, then score every Matryoshka dimension from those vectors.

    Cutting a full vector to its first d values and re-normalising is exactly what the
    embedder does with ``truncate_dim=d``, so one encode serves all dimensions.
    """
    full = embedder.full_dimension if hasattr(embedder, "full_dimension") else embedder.dimension
    dimensions = sorted({int(d) for d in (dimensions or [embedder.dimension])}, reverse=True)
    too_large = [d for d in dimensions if d > full or d <= 0]
    if too_large:
        raise EmbtuneError(f"dimension {too_large[0]} is not possible for {embedder.model_id} (1..{full})")
    base = embedder.with_truncate_dim(None) if hasattr(embedder, "with_truncate_dim") else embedder
    item_ids = list(data.corpus)
    query_ids = list(data.queries)
    with ProgressReporter("evaluate", len(dimensions) + 2, callback=progress, cancel=cancel) as reporter:
        corpus_vectors = base.encode_document([data.corpus[i] for i in item_ids], cancel=cancel)
        reporter.advance(1, "corpus embedded")
        query_vectors = base.encode_query([data.queries[q] for q in query_ids], cancel=cancel)
        reporter.advance(1, "queries embedded")
        return evaluate_vectors(data, query_vectors, corpus_vectors, dimensions=dimensions,
                                model_id=embedder.model_id, model_fingerprint=getattr(embedder, "fingerprint", ""),
                                relevance_threshold=relevance_threshold, reporter=reporter)


def evaluate_vectors(
    data: RetrievalSet,
    query_vectors: np.ndarray,
    corpus_vectors: np.ndarray,
    *,
    dimensions: Sequence[int],
    model_id: str,
    model_fingerprint: str = "",
    relevance_threshold: float = RELEVANCE_THRESHOLD,
    reporter: ProgressReporter | None = None,
) -> EvaluationResult:
    """Score vectors already embedded (rows in the order of ``data.queries`` and ``data.corpus``): what
    evaluate_retrieval does after encoding, for callers that compare transforms of one encode."""
    dimensions = sorted({int(d) for d in dimensions}, reverse=True)
    item_ids = list(data.corpus)
    query_ids = list(data.queries)
    metrics: dict[str, float] = {}
    per_query: dict[int, dict[str, dict[str, float]]] = {}
    rankings: dict[int, dict[str, list[tuple[str, float]]]] = {}
    spearman: dict[int, float] = {}
    query_position = {q: n for n, q in enumerate(query_ids)}
    item_position = {i: n for n, i in enumerate(item_ids)}
    judged = [(query_position[q], item_position[i], s) for q, items in data.qrels.items() for i, s in
              items.items()] if _graded(data) else []
    for dimension in dimensions:
        runs = _rank(_cut(query_vectors, dimension), _cut(corpus_vectors, dimension), query_ids, item_ids)
        per_query[dimension] = trec_metrics(data.qrels, runs, relevance_threshold)
        for metric, values in per_query[dimension].items():
            metrics[metric_name(dimension, metric)] = float(np.mean(list(values.values())))
        rankings[dimension] = {q: sorted(run.items(), key=lambda pair: -pair[1])[:KEPT_RANKING]
                               for q, run in runs.items()}
        if judged:
            spearman[dimension] = _spearman(_cut(query_vectors, dimension), _cut(corpus_vectors, dimension),
                                            judged)
            metrics[metric_name(dimension, "spearman")] = spearman[dimension]
        if reporter is not None:
            reporter.advance(1, f"dimension {dimension}")
    return EvaluationResult(
        model_id=model_id, model_fingerprint=model_fingerprint, data_name=data.name, dimensions=dimensions,
        metrics=metrics, per_query=per_query, rankings=rankings, query_kinds=dict(data.query_kinds),
        relevance_threshold=relevance_threshold, spearman=spearman,
    )


def _graded(data: RetrievalSet) -> bool:
    """Spearman of cosine vs score only means something when the scores vary."""
    return len({s for items in data.qrels.values() for s in items.values()}) > 1


def _spearman(queries: np.ndarray, corpus: np.ndarray, judged: list[tuple[int, int, float]]) -> float:
    from scipy.stats import spearmanr

    rows, cols, scores = zip(*judged, strict=True)
    cosines = np.einsum("ij,ij->i", queries[list(rows)], corpus[list(cols)])
    return float(spearmanr(cosines, scores).statistic)


def _cut(vectors: np.ndarray, dimension: int) -> np.ndarray:
    cut = np.ascontiguousarray(vectors[:, :dimension])
    return cut / np.maximum(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12)


def _rank(queries: np.ndarray, corpus: np.ndarray, query_ids: list[str],
          item_ids: list[str]) -> dict[str, dict[str, float]]:
    import faiss

    depth = min(RANKING_DEPTH, len(item_ids))
    scores, positions = faiss.knn(queries.astype(np.float32), corpus.astype(np.float32), depth,
                                  metric=faiss.METRIC_INNER_PRODUCT)
    return {
        query_id: {item_ids[p]: float(s) for s, p in zip(row_scores, row_positions, strict=True) if p >= 0}
        for query_id, row_scores, row_positions in zip(query_ids, scores, positions, strict=True)
    }


def trec_metrics(qrels: Mapping[str, Mapping[str, float]], runs: Mapping[str, Mapping[str, float]],
                 relevance_threshold: float = RELEVANCE_THRESHOLD) -> dict[str, dict[str, float]]:
    """Per-query values of ``METRICS`` from trec_eval; ``runs`` hold each query's scored items."""
    import pytrec_eval

    graded = {q: {i: round(s * _GRADE_SCALE) for i, s in judged.items()} for q, judged in qrels.items()}
    binary = {q: {i: int(s >= relevance_threshold) for i, s in judged.items()} for q, judged in qrels.items()}
    level = max(1, round(relevance_threshold * _GRADE_SCALE))
    top10 = {q: dict(sorted(run.items(), key=lambda pair: -pair[1])[:10]) for q, run in runs.items()}
    deep = pytrec_eval.RelevanceEvaluator(graded, {"ndcg_cut.10", "recall.1,3,10", "map_cut.100"},
                                          relevance_level=level).evaluate(runs)
    rr = pytrec_eval.RelevanceEvaluator(graded, {"recip_rank"}, relevance_level=level).evaluate(top10)
    flat = pytrec_eval.RelevanceEvaluator(binary, {"ndcg_cut.10"}, relevance_level=1).evaluate(runs)
    names = {"ndcg@10": (deep, "ndcg_cut_10"), "ndcg@10_binary": (flat, "ndcg_cut_10"), "mrr@10": (rr, "recip_rank"),
             "recall@1": (deep, "recall_1"), "recall@3": (deep, "recall_3"), "recall@10": (deep, "recall_10"),
             "map@100": (deep, "map_cut_100")}
    return {metric: {q: float(source.get(q, {}).get(key, 0.0)) for q in qrels} for metric, (source, key) in
            names.items()}


# -- comparing two models on the same queries ---------------------------------------------------
