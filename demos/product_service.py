"""One query, two models, one collection: the comparison the product-search demo shows.

A team lead wants to see, on their own queries, where a fine-tuned model finds the right
product and the base model does not. ``SideBySideSearch.compare`` answers one query with two
models over the same items and says, per side, its top-k, which items only that side found,
how long it took, and — when the query is one of the bundled catalogue's labelled queries —
its hit@k and NDCG@10 (graded, from ``core.evaluation.trec_metrics``, like every other number
the project reports).

The collection was embedded with one model; the other model needs the same items embedded
with *its* weights. That copy is built in memory (never saved over the user's collection) the
first time a (collection, model) pair is asked for and kept for the process, so each model is
loaded and each corpus embedded once, however many people query the demo.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from typing import Any

from core.collection import Collection, SearchHit, check_k
from core.collection.named import collection_record, open_collection
from core.embedders import is_clip_spec, is_screen_spec, load_embedder
from core.embedders.batching import QueryBatcher
from core.errors import CollectionError, EmbtuneError
from core.evaluation import RELEVANCE_THRESHOLD, load_retrieval_set, trec_metrics
from core.training.runs import resolve_model_spec, servable_spec
from storage.db import Database
from storage.workspace import Workspace

# The collection the demos default to, built from the bundled catalogue when it is missing.
BUNDLED_COLLECTION = "catalogue"
# NDCG is reported at 10 whatever k is shown, so numbers from different k stay comparable.
METRIC_DEPTH = 10
MAX_K = 50


@dataclass(frozen=True)
class SideResult:
    """One model's answer to the query."""
    model: str
    """The spec as asked (``run:NAME`` stays readable); ``model_id`` is what actually loaded."""
    model_id: str
    hits: list[SearchHit]
    only_here: list[str]
    """Ids in this side's top-k that the other side's top-k does not hold."""
    seconds: float
    hit_at_k: float | None = None
    ndcg_at_10: float | None = None

    def to_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["hits"] = [hit.to_dict() for hit in self.hits]
        return payload


@dataclass(frozen=True)
class Comparison:
    query: str
    collection: str
    k: int
    a: SideResult
    b: SideResult | None
    b_note: str | None = None
    """Why there is no B side (e.g. no fine-tuned run yet)."""
    labelled: bool = False
    query_kind: str | None = None
    relevant: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "a": self.a.to_dict(), "b": self.b.to_dict() if self.b else None}


@dataclass(frozen=True)
class QueryLabels:
    query_id: str
    kind: str | None
    judged: dict[str, float]


@lru_cache(maxsize=1)
def _catalogue_labels() -> dict[str, QueryLabels]:
    data = load_retrieval_set("bundled:catalogue")
    return {_normal(text): QueryLabels(query_id, data.query_kinds.get(query_id), data.qrels[query_id])
            for query_id, text in data.queries.items()}


def catalogue_labels(query: str) -> QueryLabels | None:
    """The bundled catalogue's relevance labels for this query text (case and spacing ignored), if any."""
    return _catalogue_labels().get(_normal(query))


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


def query_metrics(hits: list[SearchHit], judged: dict[str, float], k: int) -> tuple[float, float]:
    """(hit@k, NDCG@10) of one ranking: hit@k counts a relevant item (score ≥ 0.5) in the top k."""
    run = {"q": {hit.id: float(hit.score) for hit in hits[:max(k, METRIC_DEPTH)]}}
    ndcg = trec_metrics({"q": judged}, run)["ndcg@10"]["q"]
    hit = float(any(judged.get(h.id, 0.0) >= RELEVANCE_THRESHOLD for h in hits[:k]))
    return hit, ndcg


class SideBySideSearch:
    """Searches a collection with any model; each (collection, model) is prepared once and reused."""
    def __init__(self, workspace: Workspace, db: Database, *, device: str = "auto") -> None:
        self.workspace = workspace
        self.db = db
        self.device = device
        self._prepared: dict[tuple[str, str, str], Collection] = {}
        # One batching encoder per prepared side: concurrent users' queries share a forward pass.
        self._batchers: dict[int, QueryBatcher] = {}
        self._locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def collection_model(self, collection: str) -> str:
        return collection_record(collection, self.db).model_spec

    def prepared(self, collection: str, model: str | None = None) -> Collection:
        """The collection searchable with ``model`` (default: the one it was built with; ``run:NAME`` works)."""
        record = collection_record(collection, self.db)
        if is_clip_spec(record.model_spec) or is_screen_spec(record.model_spec):
            raise CollectionError(f"collection {collection!r} holds images ({record.model_spec}): search it with "
                                  "`embtune demo screens --collection` instead")
        spec = (model or "").strip() or record.model_spec
        # The row's path and fingerprint are in the key: a re-indexed collection is prepared again.
        key = (collection, spec, f"{record.path}:{record.model_fingerprint}")
        with self._guard:
            found = self._prepared.get(key)
            if found is not None:
                return found
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # two first queries for the same pair embed the corpus once
            if key in self._prepared:
                return self._prepared[key]
            path = resolve_model_spec(spec, self.db)
            if is_clip_spec(path) or is_screen_spec(path):
                raise EmbtuneError(f"model {spec!r} is an image model: product search compares text models")
            embedder = load_embedder(path, device=self.device, fallback=False)
            if embedder.fingerprint == record.model_fingerprint:
                prepared = open_collection(collection, workspace=self.workspace, db=self.db, embedder=embedder)
            else:
                stored = Collection.load(record.path)
                items = [stored.item(item_id) for item_id in stored.ids]
                prepared = Collection.from_items(stored.ids, [item["text"] or "" for item in items], embedder,
                                                 metadata=[item["metadata"] for item in items],
                                                 index_kind=stored.info.index_kind, model_spec=embedder.spec,
                                                 show_progress=False)
            with self._guard:
                self._batchers[id(prepared)] = QueryBatcher(prepared.embedder)  # a new prepared side: its own worker
                self._prepared[key] = prepared
            return prepared

    def compare(self, query: str, collection: str, *, model_a: str | None = None, model_b: str | None = None,
                k: int = 5) -> Comparison:
        """Top-k of model A and model B (default: the newest finished run for the collection) for one query."""
        if not isinstance(query, str) or not query.strip():
            raise EmbtuneError("the query is empty: type what you are looking for")
        check_k(k)
        if k > MAX_K:
            raise EmbtuneError(f"k={k} is too many to compare side by side: at most {MAX_K}")
        query = query.strip()
        spec_a = (model_a or "").strip() or self.collection_model(collection)
        spec_b = (model_b or "").strip() or servable_spec(collection, self.db)
        labels = catalogue_labels(query)
        # Both models encode at once (each in its own batching worker), then both indexes are searched.
        pending_a = self._encoding(query, collection, spec_a)
        pending_b = self._encoding(query, collection, spec_b) if spec_b else None
        side_a = self._side(pending_a, k)
        side_b = self._side(pending_b, k) if pending_b else None
        if labels is not None and not set(labels.judged) <= set(self.prepared(collection, spec_a).ids):
            labels = None  # the labels name catalogue items this collection does not hold
        if side_b is not None:
            ids_a, ids_b = [h.id for h in side_a.hits[:k]], [h.id for h in side_b.hits[:k]]
            side_a = _with(side_a, only_here=[i for i in ids_a if i not in ids_b])
            side_b = _with(side_b, only_here=[i for i in ids_b if i not in ids_a])
        if labels is not None:
            side_a = _scored(side_a, labels, k)
            side_b = _scored(side_b, labels, k) if side_b is not None else None
        trimmed_a = _with(side_a, hits=side_a.hits[:k])
        trimmed_b = _with(side_b, hits=side_b.hits[:k]) if side_b is not None else None
        note = None if spec_b else f"no fine-tuned run yet for collection {collection!r}: train one with `embtune " \
                                   f"train --collection {collection} ...` or pick a model B"
        relevant = sorted(i for i, s in labels.judged.items() if s >= RELEVANCE_THRESHOLD) if labels else []
        return Comparison(query, collection, k, trimmed_a, trimmed_b, note, labels is not None,
                          labels.kind if labels else None, relevant)

    def _encoding(self, query: str, collection: str, model: str) -> tuple[str, Collection, Future, float]:
        prepared = self.prepared(collection, model)
        return model, prepared, self._batchers[id(prepared)].submit(query), time.perf_counter()

    def _side(self, pending: tuple[str, Collection, Future, float], k: int) -> SideResult:
        model, prepared, vector, started = pending
        hits = prepared.search(vector.result(), min(len(prepared), max(k, METRIC_DEPTH)))
        seconds = time.perf_counter() - started
        return SideResult(model, prepared.info.model_id or model, hits, [], seconds)


def _with(side: SideResult, **changes: Any) -> SideResult:
    return replace(side, **changes)


def _scored(side: SideResult, labels: QueryLabels, k: int) -> SideResult:
    hit, ndcg = query_metrics(side.hits, labels.judged, k)
    return _with(side, hit_at_k=hit, ndcg_at_10=ndcg)
