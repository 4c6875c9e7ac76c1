"""Retrieval sets: queries, a corpus and graded judgements, and reading them — from a folder, a
pairs file, or the bundled sets by name (``bundled:catalogue``, ``bundled:general``, whose files
``core.data.bundled`` locates).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.data.bundled import CATALOGUE_QUERIES, GENERAL_DIR, catalogue_corpus
from core.data.formats import read_table
from core.data.validate import require_columns
from core.errors import DataError

RELEVANCE_THRESHOLD = 0.5


@dataclass
class RetrievalSet:
    """Queries, a corpus and graded judgements (query id → item id → relevance 0..1)."""

    name: str
    queries: dict[str, str]
    corpus: dict[str, str]
    qrels: dict[str, dict[str, float]]
    query_kinds: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown_queries = [q for q in self.qrels if q not in self.queries]
        if unknown_queries:
            raise DataError(f"{self.name}: judgement for query {unknown_queries[0]!r} which has no text")
        for query_id, judged in self.qrels.items():
            for item_id, score in judged.items():
                if item_id not in self.corpus:
                    raise DataError(f"{self.name}: query {query_id!r} judges item {item_id!r}, not in the corpus")
                if not 0.0 <= score <= 1.0:
                    raise DataError(f"{self.name}: query {query_id!r}, item {item_id!r}: score {score} outside 0..1")
        self.qrels = {q: j for q, j in self.qrels.items() if any(s >= RELEVANCE_THRESHOLD for s in j.values())}
        if not self.qrels:
            raise DataError(f"{self.name}: no query has an item with score ≥ {RELEVANCE_THRESHOLD}")
        self.queries = {q: self.queries[q] for q in self.qrels}

    def write_folder(self, folder: str | Path) -> Path:
        """corpus/queries/qrels CSVs that ``load_retrieval_set`` reads back: a set cut down here can be
        handed to another process (``embtune eval --data``, a training's ``test_data``)."""
        import pandas as pd

        from storage.workspace import atomic_write_text

        folder = Path(folder)
        corpus = pd.DataFrame({"id": list(self.corpus), "text": list(self.corpus.values())})
        queries = pd.DataFrame({"query_id": list(self.queries), "query": list(self.queries.values())})
        if self.query_kinds:
            queries["kind"] = [self.query_kinds.get(q, "") for q in self.queries]
        qrels = pd.DataFrame([(q, item, score) for q, judged in self.qrels.items() for item, score in judged.items()],
                             columns=["query_id", "item_id", "score"])
        for stem, frame in (("corpus", corpus), ("queries", queries), ("qrels", qrels)):
            atomic_write_text(folder / f"{stem}.csv", frame.to_csv(index=False))
        return folder

    def subset(self, query_ids: Sequence[str], name: str | None = None) -> RetrievalSet:
        chosen = [q for q in query_ids if q in self.qrels]
        return RetrievalSet(name or self.name, {q: self.queries[q] for q in chosen}, self.corpus,
                            {q: self.qrels[q] for q in chosen}, {q: self.query_kinds[q] for q in chosen
                                                                 if q in self.query_kinds})


# -- loading evaluation data ------------------------------------------------------------------


def load_retrieval_set(path: str | Path, *, corpus: Mapping[str, str] | None = None,
                       name: str | None = None) -> RetrievalSet:
    """A folder of corpus/queries/qrels CSVs (``dev_`` prefix optional), a pairs file, or a bundled set.

    A pairs file has ``query``, ``item_id`` (or ``item`` text) and ``score`` columns
    (``query_id`` and ``kind`` optional); its corpus is ``corpus`` (e.g. a collection's
    items) or, without one, the items named in the file. ``bundled:catalogue`` is every labelled
    catalogue query against the whole catalogue, ``bundled:general`` the forgetting check's set.
    """
    if str(path) == "bundled:catalogue":
        return _load_pairs(CATALOGUE_QUERIES, dict(catalogue_corpus()) if corpus is None else corpus, "catalogue")
    if str(path) == "bundled:general":
        return _load_folder(GENERAL_DIR, "general")
    if str(path).startswith("bundled:"):
        raise DataError(f"{path}: no such bundled set (bundled:catalogue, bundled:general)")
    path = Path(path)
    if path.is_dir():
        return _load_folder(path, name or path.name)
    return _load_pairs(path, corpus, name or path.stem)


def _load_folder(folder: Path, name: str) -> RetrievalSet:
    def find(stem: str) -> Path:
        for candidate in (folder / f"{stem}.csv", folder / f"dev_{stem}.csv"):
            if candidate.exists():
                return candidate
        raise DataError(f"{folder}: no {stem}.csv (or dev_{stem}.csv) — a retrieval folder needs corpus, "
                        "queries and qrels CSVs")

    corpus_frame, queries_frame, qrels_frame = (read_table(find(s)) for s in ("corpus", "queries", "qrels"))
    require_columns(corpus_frame, ["id", "text"], find("corpus"))
    require_columns(queries_frame, ["query_id", "query"], find("queries"))
    require_columns(qrels_frame, ["query_id", "item_id", "score"], find("qrels"))
    qrels: dict[str, dict[str, float]] = {}
    for row_number, row in enumerate(qrels_frame.itertuples(index=False), start=1):
        qrels.setdefault(str(row.query_id), {})[str(row.item_id)] = _score(row.score, find("qrels"), row_number)
    kinds = dict(zip(queries_frame["query_id"], queries_frame["kind"], strict=True)) \
        if "kind" in queries_frame.columns else {}
    return RetrievalSet(name, dict(zip(queries_frame["query_id"], queries_frame["query"], strict=True)),
                        dict(zip(corpus_frame["id"], corpus_frame["text"], strict=True)), qrels, kinds)


def _load_pairs(path: Path, corpus: Mapping[str, str] | None, name: str) -> RetrievalSet:
    frame = read_table(path)
    item_column = "item_id" if "item_id" in frame.columns else "item"
    require_columns(frame, ["query", item_column, "score"], path)
    if item_column == "item_id" and corpus is None:
        raise DataError(f"{path}: has item ids but no corpus: pass --corpus COLLECTION (or use an 'item' text column)")
    query_ids: dict[str, str] = {}
    items: dict[str, str] = dict(corpus or {})
    # An item written as text that is also a corpus item is that item (not a second copy the model
    # would be scored against).
    item_ids_by_text: dict[str, str] = {text.strip(): item_id for item_id, text in items.items()}
    qrels: dict[str, dict[str, float]] = {}
    kinds: dict[str, str] = {}
    for row_number, row in enumerate(frame.to_dict(orient="records"), start=1):
        query = str(row["query"]).strip()
        if not query:
            raise DataError(f"{path}: row {row_number}: column 'query' is empty")
        query_id = str(row.get("query_id") or "").strip() or query_ids.setdefault(query, f"q{len(query_ids) + 1}")
        query_ids.setdefault(query, query_id)
        if item_column == "item_id":
            item_id = str(row["item_id"]).strip()
            if item_id not in items:
                raise DataError(f"{path}: row {row_number}: item_id {item_id!r} is not in the corpus")
        else:
            text = str(row["item"]).strip()
            if not text:
                raise DataError(f"{path}: row {row_number}: column 'item' is empty")
            if text not in item_ids_by_text:
                item_ids_by_text[text] = _new_id(items, len(item_ids_by_text) + 1)
            item_id = item_ids_by_text[text]
            items.setdefault(item_id, text)
        qrels.setdefault(query_id, {})[item_id] = _score(row["score"], path, row_number)
        if row.get("kind"):
            kinds[query_id] = str(row["kind"])
    queries = {query_id: query for query, query_id in query_ids.items()}
    return RetrievalSet(name, queries, items, qrels, kinds)


def _new_id(items: Mapping[str, str], number: int) -> str:
    while f"d{number}" in items:
        number += 1
    return f"d{number}"


def _score(value: Any, source: Path, row_number: int) -> float:
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{source}: row {row_number}: score {value!r} is not a number") from None
    if not 0.0 <= score <= 1.0 or math.isnan(score):
        raise DataError(f"{source}: row {row_number}: score {score} is outside 0..1")
    return score


