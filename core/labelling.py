"""Labelling: what an analyst should score next, how far labelling has got, whether annotators agree.

The Label page is a thin layer over these functions: candidates for a query (the current
model's top-k, then the ones a label would teach the most — nearest the decision boundary,
or where the base and the fine-tuned model disagree most), the next unlabelled query of an
imported list, progress counts, agreement between annotators (share equal and Cohen's kappa
on the 0 / 0.5 / 1 buckets, scikit-learn's), and label import/export.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.errors import DataError, EmbtuneError

CANDIDATE_POOL = 50  # how deep the current model's ranking is read to find uncertain candidates
BUCKETS = (0.0, 0.5, 1.0)
EXPORT_FORMATS = ("csv", "jsonl", "hf")
SCORE_BINS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class Candidate:
    item_id: str
    text: str | None
    score: float
    rank: int
    reason: str  # "top-k", "boundary" or "disagreement"
    metadata: dict[str, Any] = field(default_factory=dict)
    other_rank: int | None = None  # the rank the second model gives it, when one was asked
    labelled: float | None = None  # this annotator's earlier score for the pair
    explanation: str = ""
    """Why this pair is shown, in plain words (what the page tells the annotator)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decision_boundary(scores: Sequence[float], labels: Sequence[float]) -> float | None:
    """The model score that best splits pairs labelled relevant (≥ 0.5) from not: the midpoint of
    the two classes' mean scores. None until both kinds of label exist."""
    scores_arr, labels_arr = np.asarray(scores, dtype=float), np.asarray(labels, dtype=float)
    positive, negative = scores_arr[labels_arr >= 0.5], scores_arr[labels_arr < 0.5]
    if not len(positive) or not len(negative):
        return None
    return float((positive.mean() + negative.mean()) / 2)


def propose_candidates(
    collection: Any,
    query: str,
    *,
    k: int = 5,
    uncertain: int = 5,
    other: Any = None,
    boundary: float | None = None,
    labelled: dict[str, float] | None = None,
    pool: int = CANDIDATE_POOL,
) -> list[Candidate]:
    """Top-k of the collection's model, then ``uncertain`` more from deeper in its ranking.

    With ``other`` (a second embedder, e.g. the fine-tuned model when the collection holds the
    base) the extra ones are those whose rank the two models disagree on most; otherwise those
    whose score is nearest ``boundary`` (from this query's labels when both relevant and irrelevant
    ones exist, else the pool's median).
    ``labelled`` (item id → this annotator's score) marks pairs already scored.
    """
    if not query or not query.strip():
        raise EmbtuneError("the query is empty")
    if k <= 0 or uncertain < 0:
        raise EmbtuneError("k must be at least 1 and uncertain 0 or more")
    hits = collection.search(query.strip(), min(len(collection), max(pool, k + uncertain)))
    labelled = labelled or {}

    def candidate(position: int, reason: str, other_rank: int | None = None, explanation: str = "") -> Candidate:
        hit = hits[position]
        item = collection.item(hit.id)
        return Candidate(hit.id, item.get("text"), float(hit.score), position + 1, reason, dict(hit.metadata),
                         other_rank, labelled.get(hit.id), explanation)

    chosen = [candidate(i, "top-k", explanation=f"the model ranks it {i + 1} of its top {k}")
              for i in range(min(k, len(hits)))]
    rest = list(range(len(chosen), len(hits)))
    if not rest or not uncertain:
        return chosen
    if other is not None:
        other_ranks = _ranks_by(other, query.strip(), [collection.item(hits[i].id).get("text") or "" for i in
                                                       range(len(hits))])
        order = sorted(rest, key=lambda i: -abs(other_ranks[i] - i))
        chosen += [candidate(i, "disagreement", int(other_ranks[i]) + 1,
                             f"the two models disagree: rank {i + 1} here, {int(other_ranks[i]) + 1} for the "
                             "second model — your label settles it") for i in order[:uncertain]]
        return chosen
    if boundary is None:  # this query's own labels, where both kinds exist, say where the boundary is
        judged = [(hit.score, labelled[hit.id]) for hit in hits if hit.id in labelled]
        boundary = decision_boundary([s for s, _ in judged], [v for _, v in judged]) if judged else None
    why = ("the model is unsure: its score sits on the line between the items you marked relevant and the ones "
           "you did not" if boundary is not None else
           "the model is unsure: its score sits mid-way in this query's list (label some items relevant and "
           "some not, and the line follows your labels)")
    scores = np.array([hits[i].score for i in rest])
    centre = boundary if boundary is not None else float(np.median(scores))
    order = [rest[j] for j in np.argsort(np.abs(scores - centre), kind="stable")]
    chosen += [candidate(i, "boundary", explanation=f"rank {i + 1}; {why}") for i in order[:uncertain]]
    return chosen


def _ranks_by(embedder: Any, query: str, texts: list[str]) -> np.ndarray:
    """0-based rank of each text under ``embedder`` (cosine to the query)."""
    vectors = embedder.encode_document(texts)
    query_vector = embedder.encode_query([query])[0]
    order = np.argsort(-(vectors @ query_vector), kind="stable")
    ranks = np.empty(len(texts), dtype=int)
    ranks[order] = np.arange(len(texts))
    return ranks


def next_unlabelled_query(queries: Sequence[str], labels: Iterable[Any], annotator: str,
                          after: str | None = None, served: Iterable[str] = ()) -> str | None:
    """The first queued query this annotator has not scored any pair for and has not been shown yet
    (``served``: a query left unlabelled with "next" is not offered again), looking after ``after`` first
    and then from the start. Queries compare by text, ignoring case and spacing."""
    done = {_same(label.query) for label in labels if label.annotator == annotator} | {_same(q) for q in served}
    start = queries.index(after) + 1 if after in queries else 0
    ordered = [*queries[start:], *queries[:start]]
    return next((q for q in ordered if _same(q) not in done and q != after), None)


def _same(query: str) -> str:
    return " ".join(str(query).split()).casefold()


def label_progress(labels: Sequence[Any]) -> dict[str, Any]:
    """Counts for the page header: pairs, queries covered, annotators, score histogram."""
    scores = [float(label.score) for label in labels]
    counts, _ = np.histogram(scores, bins=SCORE_BINS) if scores else (np.zeros(len(SCORE_BINS) - 1, int), None)
    histogram = [{"bin": f"{low:g}–{high:g}", "count": int(count)}
                 for low, high, count in zip(SCORE_BINS[:-1], SCORE_BINS[1:], counts, strict=True)]
    return {"pairs": len(labels), "queries": len({label.query for label in labels}),
            "annotators": sorted({label.annotator for label in labels}), "histogram": histogram}


def bucket(score: float) -> float:
    """0 / 0.5 / 1: the buttons' scale; finer slider scores go to the nearest."""
    return min(BUCKETS, key=lambda b: abs(b - float(score)))


def annotator_agreement(labels: Sequence[Any]) -> dict[str, Any]:
    """Agreement on pairs two annotators both scored: per annotator pair, the share of equal buckets
    and Cohen's kappa; plus the pairs they disagree on. An annotator's latest label of a pair counts."""
    from sklearn.metrics import cohen_kappa_score

    latest: dict[tuple[str, str, str], float] = {}
    for label in sorted(labels, key=lambda lab: (lab.created_at is None, lab.created_at, lab.id)):
        latest[(label.query, label.item_key, label.annotator)] = bucket(label.score)
    by_pair: dict[tuple[str, str], dict[str, float]] = {}
    for (query, item, annotator), score in latest.items():
        by_pair.setdefault((query, item), {})[annotator] = score
    annotators = sorted({a for scores in by_pair.values() for a in scores})
    pairs_of_annotators = []
    disagreements = []
    for i, first in enumerate(annotators):
        for second in annotators[i + 1:]:
            shared = [(pair, scores[first], scores[second]) for pair, scores in by_pair.items()
                      if first in scores and second in scores]
            if not shared:
                continue
            a = [s for _, s, _ in shared]
            b = [s for _, _, s in shared]
            equal = sum(x == y for x, y in zip(a, b, strict=True))
            # Kappa is undefined when both gave one same bucket throughout: that is full agreement.
            kappa = float(cohen_kappa_score([str(x) for x in a], [str(y) for y in b],
                                            labels=[str(v) for v in BUCKETS])) if len(set(a) | set(b)) > 1 else 1.0
            pairs_of_annotators.append({"annotators": f"{first} / {second}", "shared_pairs": len(shared),
                                        "share_equal": equal / len(shared), "cohen_kappa": kappa})
            disagreements += [{"query": query, "item_id": item, first: x, second: y}
                              for (query, item), x, y in shared if x != y]
    return {"pairs": pairs_of_annotators, "disagreements": disagreements}


def labels_frame(labels: Sequence[Any]) -> pd.DataFrame:
    return pd.DataFrame([{"query": label.query, "item_id": label.item_key, "item": label.item_text,
                          "score": float(label.score), "annotator": label.annotator,
                          "created_at": label.created_at.isoformat() if label.created_at else None}
                         for label in labels],
                        columns=["query", "item_id", "item", "score", "annotator", "created_at"])


def export_labels(labels: Sequence[Any], target: str | Path, file_format: str) -> Path:
    """Write labels as CSV, JSONL or a Hugging Face dataset folder (atomically)."""
    from storage.workspace import atomic_folder, atomic_write_text

    if file_format not in EXPORT_FORMATS:
        raise EmbtuneError(f"export format {file_format!r} is unknown: use {', '.join(EXPORT_FORMATS)}")
    frame = labels_frame(labels)
    target = Path(target)
    if file_format == "csv":
        atomic_write_text(target, frame.to_csv(index=False))
    elif file_format == "jsonl":
        atomic_write_text(target, frame.to_json(orient="records", lines=True, force_ascii=False))
    else:
        from datasets import Dataset

        with atomic_folder(target) as folder:
            Dataset.from_pandas(frame, preserve_index=False).save_to_disk(str(folder))
    return target


def read_labels(path: str | Path, *, collection: str, default_annotator: str) -> list[dict[str, Any]]:
    """Labels from a CSV/JSONL/Parquet file (query, item_id or item, score[, annotator]) or a Hugging
    Face dataset folder, checked row by row; nothing is returned unless every row is valid."""
    from core.data.formats import read_table
    from core.data.training_data import _read_hf_dataset

    path = Path(path)
    frame = _read_hf_dataset(path) if path.is_dir() else read_table(path)
    problems = label_problems(frame, path)
    if problems:
        first = problems[0]
        raise DataError(f"{path}: row {first['row']}: {first['field']}: {first['problem']}"
                        + (f" ({len(problems)} problems in all)" if len(problems) > 1 else ""))
    key = "item_id" if "item_id" in frame.columns else "item"
    return [{"collection_name": collection, "query": str(row["query"]).strip(), "item_key": str(row[key]).strip(),
             "item_text": str(row["item"]) if "item" in frame.columns and pd.notna(row["item"]) else None,
             "score": float(row["score"]),
             "annotator": str(row["annotator"]).strip() if "annotator" in frame.columns and pd.notna(
                 row["annotator"]) and str(row["annotator"]).strip() else default_annotator}
            for _, row in frame.iterrows()]


def label_problems(frame: pd.DataFrame, source: str | Path) -> list[dict[str, Any]]:
    """Every row problem of a labels table (row numbers 1-based), for a page to show as a table."""
    missing = [c for c in ("query", "score") if c not in frame.columns]
    if "item_id" not in frame.columns and "item" not in frame.columns:
        missing.append("item_id")
    if missing:
        return [{"row": 0, "field": column, "problem": f"no column {column!r} in {source} "
                 f"(columns are: {', '.join(map(str, frame.columns)) or 'none'})"} for column in missing]
    key = "item_id" if "item_id" in frame.columns else "item"
    problems = []
    scores = pd.to_numeric(frame["score"], errors="coerce")
    for position in range(len(frame)):
        row = position + 1
        if not str(frame["query"].iloc[position]).strip() or pd.isna(frame["query"].iloc[position]):
            problems.append({"row": row, "field": "query", "problem": "empty"})
        if pd.isna(frame[key].iloc[position]) or not str(frame[key].iloc[position]).strip():
            problems.append({"row": row, "field": key, "problem": "empty"})
        score = scores.iloc[position]
        if pd.isna(score) or not 0.0 <= float(score) <= 1.0:
            problems.append({"row": row, "field": "score",
                             "problem": f"{frame['score'].iloc[position]!r} is not a number in 0..1"})
    return problems

