"""Searching a collection's faiss index: metadata filters as faiss ID selectors, exact search for
narrow filters, exact re-ranking of compressed candidates, and single queries on one thread.

A filter keeps a set of row positions; a narrow one (at most ``EXACT_FILTER_MAX_ITEMS``) is answered
by brute force over just those rows, a broad one by the index itself with an ``IDSelectorBitmap`` in
its search parameters, so faiss never returns a filtered-out row and nothing is over-fetched.
"""

from __future__ import annotations

import threading
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from core.collection.policy import REFINE_K_FACTOR
from core.errors import CollectionError, EmbtuneWarning

# A filter that keeps at most this many items is answered exactly by brute force over them.
EXACT_FILTER_MAX_ITEMS = 20_000
# Searches of a few queries run on one OpenMP thread: spreading one query over threads only adds
# scheduler waits (10–100× slower p50 measured on a busy 2-core machine, see docs/benchmarks.md).
SMALL_SEARCH_MAX_QUERIES = 4
_DEFAULT_THREADS = faiss.omp_get_max_threads()
_small_search_lock = threading.Lock()

Filter = Mapping[str, Any] | Callable[[Mapping[str, Any]], bool]


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ cost ~2.5 µs a hit, 10 hits a query
class SearchHit:
    id: str
    score: float
    metadata: dict[str, Any]
    text: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, "text": self.text, "metadata": self.metadata}


TYPICAL_SAMPLE = 1000
"""Items a query is compared with to learn what an unrelated item scores for it."""


def typical_score(item_vectors: np.ndarray, query_vector: np.ndarray, *, sample: int = TYPICAL_SAMPLE) -> float:
    """The query's median cosine to the collection's items (a seeded sample of them): what an ordinary,
    unrelated item scores. Models differ in how compressed their cosines are (multilingual-e5 puts nearly
    everything between 0.8 and 0.9), so a raw cosine says little until it is read against this."""
    rows = item_vectors
    if len(rows) > sample:
        rows = rows[np.sort(np.random.default_rng(0).choice(len(rows), size=sample, replace=False))]
    return float(np.median(np.asarray(rows, dtype=np.float32) @ np.asarray(query_vector, dtype=np.float32)))


def relative_scores(scores: Sequence[float], typical: float) -> list[float]:
    """Each score on a 0..1 scale from an ordinary item (``typical``) to the best result shown."""
    top = max(scores, default=typical)
    span = top - typical
    return [float(np.clip((score - typical) / span, 0.0, 1.0)) if span > 1e-9 else 1.0 for score in scores]


def check_k(k: object) -> None:
    """How many results: a positive whole number (checked before any model is loaded)."""
    if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
        raise CollectionError(f"k must be a positive whole number, got {k!r}")


def allowed_positions(metadata: Sequence[Mapping[str, Any]], filter: Filter) -> np.ndarray:
    """Row positions whose metadata pass ``filter``: a predicate, or field → value (or list of values)."""
    if callable(filter):
        keep = [position for position, meta in enumerate(metadata) if filter(meta)]
    else:
        wanted = {key: value if isinstance(value, (list, tuple, set)) else [value] for key, value in filter.items()}
        keep = [position for position, meta in enumerate(metadata)
                if all(meta.get(key) in values for key, values in wanted.items())]
        if not keep:
            _warn_unknown_fields(metadata, wanted)
    return np.asarray(keep, dtype=np.int64)


def _warn_unknown_fields(metadata: Sequence[Mapping[str, Any]], wanted: Mapping[str, Any]) -> None:
    """A filter that matched nothing because it names a field no item has (a typo) says so, with the fields
    there are; a field that exists but has none of the values asked for is an honest empty result."""
    fields = sorted({key for meta in metadata for key in meta})
    unknown = [key for key in wanted if key not in fields]
    if unknown:
        warnings.warn(EmbtuneWarning(
            f"filter field{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"{'are' if len(unknown) > 1 else 'is'} in no item of this collection (fields: "
            f"{', '.join(fields) or 'none'})"), stacklevel=4)


def answered_exactly(allowed: np.ndarray | None) -> bool:
    """Whether a filter is narrow enough that brute force over its rows beats the index."""
    return allowed is not None and len(allowed) <= EXACT_FILTER_MAX_ITEMS


def exact_top_k(queries: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    k = min(k, len(vectors))
    if k == 0:
        return np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64)
    return faiss.knn(queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)


def id_selector(allowed: np.ndarray, n_rows: int) -> faiss.IDSelector:
    """A bitmap over ``n_rows`` positions with the allowed ones set (it keeps its bits alive)."""
    mask = np.zeros(n_rows, dtype=bool)
    mask[allowed] = True
    bits = np.packbits(mask, bitorder="little")
    selector = faiss.IDSelectorBitmap(n_rows, faiss.swig_ptr(bits))
    selector.kept_alive = bits  # the C++ side reads the bits through a bare pointer
    return selector


def search_parameters(index: faiss.Index, params: Mapping[str, int],
                      selector: faiss.IDSelector | None = None) -> faiss.SearchParameters | None:
    """faiss search parameters for ``index`` from a collection's ``search_params`` (efSearch, nprobe,
    k_factor), restricted to ``selector``'s rows when given. Without a selector they are made once per index
    and settings (building them took ~20 µs, a twentieth of a query at 1M)."""
    if selector is not None:
        return _new_search_parameters(index, params, selector)
    key = tuple(sorted(params.items()))
    cached = _UNFILTERED.get(index)
    if cached is None or cached[0] != key:
        cached = (key, _new_search_parameters(index, params, None))
        _UNFILTERED[index] = cached
    return cached[1]


_UNFILTERED: weakref.WeakKeyDictionary[faiss.Index, tuple[tuple, faiss.SearchParameters | None]] = \
    weakref.WeakKeyDictionary()


def _new_search_parameters(index: faiss.Index, params: Mapping[str, int],
                           selector: faiss.IDSelector | None) -> faiss.SearchParameters | None:
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexRefine):
        base = _new_search_parameters(index.base_index, params, selector)
        refine = faiss.IndexRefineSearchParameters(k_factor=float(params.get("k_factor", REFINE_K_FACTOR)))
        if base is not None:
            refine.base_index_params = base
            refine.kept_alive = base  # the C++ side holds a bare pointer: keep the Python object alive with it
        return refine
    inner = faiss.downcast_index(getattr(index, "index", index))
    chosen: faiss.SearchParameters | None = None
    if isinstance(inner, faiss.IndexHNSW) and "efSearch" in params:
        chosen = faiss.SearchParametersHNSW(efSearch=params["efSearch"])
    elif isinstance(inner, faiss.IndexIVF) and "nprobe" in params:
        chosen = faiss.SearchParametersIVF(nprobe=params["nprobe"])
    if selector is not None:
        chosen = chosen or faiss.SearchParameters()
        chosen.sel = selector
        chosen.kept_selector = selector
    return chosen


def faiss_search(index: faiss.Index, vectors: np.ndarray, k: int,
                 params: faiss.SearchParameters | None) -> tuple[np.ndarray, np.ndarray]:
    if len(vectors) > SMALL_SEARCH_MAX_QUERIES or _DEFAULT_THREADS <= 1:
        return index.search(vectors, k, params=params)
    with _small_search_lock:
        faiss.omp_set_num_threads(1)
        try:
            return index.search(vectors, k, params=params)
        finally:
            faiss.omp_set_num_threads(_DEFAULT_THREADS)


def rerank(queries: np.ndarray, stored: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner products of each query with its candidates (rows of ``stored``), best ``k`` first."""
    k = min(k, candidates.shape[1])
    if len(queries) == 1:  # one query (a user's search): a plain gather + dot, ~12 µs instead of ~90
        row = candidates[0]
        valid = row[row >= 0]
        scores = np.asarray(stored[valid], dtype=np.float32) @ queries[0]
        order = np.argsort(-scores, kind="stable")[:k]
        out_scores = np.full((1, k), -np.inf, dtype=np.float32)
        out_positions = np.full((1, k), -1, dtype=np.int64)
        out_scores[0, :len(order)], out_positions[0, :len(order)] = scores[order], valid[order]
        return out_scores, out_positions
    chunk = max(1, min(256, (1 << 24) // max(1, candidates.shape[1] * stored.shape[1])))  # ≤ 64 MB gathered
    out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    out_positions = np.full((len(queries), k), -1, dtype=np.int64)
    for start in range(0, len(queries), chunk):
        block = candidates[start:start + chunk]
        valid = block >= 0
        # Gather the candidates' vectors in row order (a memory-mapped file reads fewer pages that way).
        rows = np.unique(block[valid])
        lookup = np.searchsorted(rows, np.maximum(block, 0))
        gathered = np.asarray(stored[rows], dtype=np.float32)
        scores = np.einsum("qcd,qd->qc", gathered[lookup], queries[start:start + chunk])
        scores = np.where(valid, scores, -np.inf).astype(np.float32)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        top_scores = np.take_along_axis(scores, order, axis=1)
        top_positions = np.where(np.isfinite(top_scores), np.take_along_axis(block, order, axis=1), -1)
        out_scores[start:start + chunk] = top_scores
        out_positions[start:start + chunk] = top_positions
    return out_scores, out_positions
