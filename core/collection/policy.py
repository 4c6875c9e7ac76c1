"""Index kinds and their tuning: which faiss layout ``auto`` picks for a collection's size, and the
search parameters (efSearch, nprobe, re-ranking factor) each layout is searched with.

Every number here was measured; docs/benchmarks.md has the runs behind them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import faiss
import numpy as np

from core.errors import CollectionError

# ``auto`` picks exact search while it is cheap, then HNSW, then IVF-PQ with re-ranking (see
# docs/benchmarks.md for the measurements behind these numbers).
AUTO_FLAT_MAX_ITEMS = 50_000
# HNSW keeps every vector in memory plus its graph (≈1.8 KB per 384-d vector) and took 8 min to build
# at 1M on 2 idle cores (12 min on a busy machine); IVF-PQ keeps m + 8 bytes per vector (56 at 384-d)
# and trains on a bounded sample.
AUTO_HNSW_MAX_ITEMS = 1_000_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 96
# Search cost grows with the graph: at 1M items (idle 2-core machine, one query per call) efSearch 96 gave
# recall@10 0.981 at 1.10 ms p50, 80 gave 0.971 at 0.93 ms, 64 0.955 at 0.70 ms; at 100k, 96 took 0.68 ms on a
# busy machine. So large graphs search with the smaller efSearch, which keeps both recall ≥ 0.95 and ≤ 1 ms.
HNSW_LARGE_FROM_ITEMS = 500_000
HNSW_EF_SEARCH_LARGE = 80
# From HNSW_LARGE_FROM_ITEMS, ``auto`` builds the graph over fp16 codes (768 bytes a vector, not 1,536) and re-ranks
# the best k × HNSW_SQ_REFINE_K_FACTOR candidates exactly from the collection's stored float vectors: at 1M a query
# is mostly distance computations over nodes read from memory, and fp16 codes halve the bytes read per node.
# Measured at 1M (idle, docs/benchmarks.md): 0.631 ms p50 at recall@10 0.955, plain HNSW32 0.808 ms at 0.955.
HNSW_SQ_EF_SEARCH = 64
HNSW_SQ_REFINE_K_FACTOR = 2
IVF_NPROBE_FRACTION = 1 / 8  # 1/32 gave recall@10 0.54–0.90; 1/8 reaches ~0.97 on real embeddings
# IVF-PQ: one 8-bit code per PQ_DIMS_PER_CODE dimensions (PQ48 at 384-d), then the best
# k × REFINE_K_FACTOR candidates re-ranked by exact inner product with the stored vectors.
# Measured: IVF256,PQ48 alone recall@10 ≈ 0.82; with re-ranking (k_factor 8) 0.99 at nprobe 8.
PQ_DIMS_PER_CODE = 8
REFINE_K_FACTOR = 8
IVFPQ_MIN_ITEMS = 10_000  # 8-bit codes train 256 centroids per sub-space: faiss wants ≥ 39 × 256 points
# Streamed builds train IVF on this many points per list (faiss warns below 39; its k-means uses ≤ 256).
TRAIN_POINTS_PER_LIST = 64


def hnsw_ef_search(n_items: int) -> int:
    """efSearch for an HNSW graph of ``n_items``: the default, or the smaller one for large graphs."""
    return HNSW_EF_SEARCH_LARGE if n_items >= HNSW_LARGE_FROM_ITEMS else HNSW_EF_SEARCH


def resolve_index_kind(kind: str, n_items: int, dimension: int) -> tuple[str, dict[str, int]]:
    """Map a kind (``auto``, ``flat``, ``hnsw``, ``hnsw_sq``, ``ivf``, ``ivfpq`` or a faiss factory string) to a
    factory string and its search parameters.

    ``hnsw_sq`` is an HNSW graph over fp16 codes plus an exact re-ranking of ``k × refine_k_factor`` candidates;
    ``auto`` chooses it from ``HNSW_LARGE_FROM_ITEMS``. ``ivfpq`` is IVF with product-quantised codes plus an
    exact re-ranking of ``k × refine_k_factor`` candidates from the stored vectors; ``auto`` chooses it above
    ``AUTO_HNSW_MAX_ITEMS``. A faiss string with an IVF stage gets embtune's nprobe rule, one with a refine
    stage (``RFlat``) a ``k_factor``.
    """
    kind = (kind or "auto").strip()
    lowered = kind.lower()
    if lowered == "auto":
        lowered = ("flat" if n_items <= AUTO_FLAT_MAX_ITEMS else "ivfpq" if n_items > AUTO_HNSW_MAX_ITEMS
                   else "hnsw_sq" if n_items >= HNSW_LARGE_FROM_ITEMS else "hnsw")
    if lowered == "flat":
        return "Flat", {}
    if lowered == "hnsw":
        return f"HNSW{HNSW_M}", {"efSearch": hnsw_ef_search(n_items), "efConstruction": HNSW_EF_CONSTRUCTION}
    if lowered == "hnsw_sq":
        return f"HNSW{HNSW_M},SQfp16", {"efSearch": HNSW_SQ_EF_SEARCH, "efConstruction": HNSW_EF_CONSTRUCTION,
                                        "refine_k_factor": HNSW_SQ_REFINE_K_FACTOR}
    if lowered == "ivf":
        if n_items < 1_000:
            return "Flat", {}  # too few points to train centroids; exact search is faster anyway
        nlist = _ivf_lists(n_items)
        return f"IVF{nlist},Flat", {"nprobe": _nprobe(nlist)}
    if lowered == "ivfpq":
        if n_items < IVFPQ_MIN_ITEMS:
            return "Flat", {}  # too few points to train the codebooks; exact search is cheap at this size
        nlist = _ivf_lists(n_items)
        return f"IVF{nlist},PQ{_pq_codes(dimension)}", {"nprobe": _nprobe(nlist), "refine_k_factor": REFINE_K_FACTOR}
    try:  # any other string must be a valid faiss factory description
        faiss.index_factory(dimension, kind, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise CollectionError(
            f"index kind {kind!r} is neither auto/flat/hnsw/ivf nor a faiss factory string (nor hnsw_sq, ivfpq): "
            f"{faiss_reason(exc)}"
        ) from exc
    _check_trainable(kind, n_items)
    params: dict[str, int] = {}
    ivf = re.match(r"^(?:[^,]*,)?IVF(\d+)", kind)
    if ivf:
        params["nprobe"] = _nprobe(int(ivf.group(1)))
    if re.search(r"(^|,)(RFlat|Refine\()", kind):
        params["k_factor"] = REFINE_K_FACTOR
    return kind, params


def faiss_reason(exc: Exception) -> str:
    """faiss's own words without the C++ signature and source line that precede them."""
    text = str(exc).strip().splitlines()[-1]
    text = re.sub(r"^Error in .*? at \S+:\d+: ", "", text)
    return re.sub(r"^Error: '.*?' failed: ", "", text)[:160]


def _check_trainable(factory: str, n_items: int) -> None:
    """faiss trains k-means with a centroid per IVF list and per PQ code, and fails (after the embedding) on
    fewer items than centroids: said before any work."""
    needs = [(_lists_in(factory), "IVF lists")]
    needs += [(2 ** int(m.group(1) or 8), "PQ codes per sub-quantizer")
              for m in re.finditer(r"PQ\d+(?:x(\d+))?", factory)]
    for centroids, what in needs:
        if 0 < n_items < centroids:
            raise CollectionError(f"index kind {factory!r} trains {centroids} {what} and the collection has "
                                  f"{n_items} items (faiss needs an item per centroid): use auto, which fits the size")


def _lists_in(factory: str) -> int:
    """The IVF list count a factory string asks for (0: no IVF stage)."""
    ivf = re.search(r"IVF(\d+)", factory)
    return int(ivf.group(1)) if ivf else 0


def _ivf_lists(n_items: int) -> int:
    nlist = int(min(65_536, max(16, 2 ** round(math.log2(4 * math.sqrt(n_items))))))
    return min(nlist, n_items // 39)  # faiss wants ~39 training points per centroid


def _nprobe(nlist: int) -> int:
    return min(nlist, max(8, int(nlist * IVF_NPROBE_FRACTION)))


def _pq_codes(dimension: int) -> int:
    """Sub-quantizers for ``dimension``: a divisor of it, as close as possible to one per 8 dimensions."""
    target = max(1, dimension // PQ_DIMS_PER_CODE)
    divisors = [m for m in range(1, dimension + 1) if dimension % m == 0]
    return min(divisors, key=lambda m: (abs(m - target), m))


def index_bytes_per_vector(index: faiss.Index) -> float:
    """What one vector costs in ``index`` as faiss serialises it (codes, ids, links; not the stored copy)."""
    return float(len(faiss.serialize_index(index))) / max(1, index.ntotal)


def new_index(dimension: int, factory: str, params: Mapping[str, int]) -> faiss.Index:
    index = faiss.index_factory(dimension, factory, faiss.METRIC_INNER_PRODUCT)
    inner = faiss.downcast_index(index)
    if "efConstruction" in params and hasattr(inner, "hnsw"):
        inner.hnsw.efConstruction = params["efConstruction"]
    for part in (inner, faiss.downcast_index(getattr(inner, "base_index", inner))):
        if isinstance(part, faiss.IndexIVFPQ):
            # Polysemous training only serves Hamming-filtered search, which is never used here, and made
            # IVF-PQ training 5-6x slower (IVF256,PQ4 on 12k vectors: 7.4 s against 1.3 s).
            part.do_polysemous_training = False
    return index


def training_rows(factory: str, count: int) -> int:
    """How many items a streamed build trains on: enough for every IVF list and every PQ codebook."""
    lists = _lists_in(factory)
    return min(count, max(TRAIN_POINTS_PER_LIST * lists, 64 * 256))



def build_index(kind: str, vectors: np.ndarray, dimension: int) -> tuple[faiss.Index, str, dict[str, int]]:
    """The index ``kind`` resolves to for these vectors, trained (on a sample if large) and filled, with its
    factory string and search parameters.

    faiss ids are row positions, so no id map (its result translation is multi-threaded even for one
    query, which made single searches slow on a busy machine); deletes and replacements rebuild.
    """
    factory, params = resolve_index_kind(kind, len(vectors), dimension)
    index = new_index(dimension, factory, params)
    if not index.is_trained:
        if len(vectors) == 0:
            raise CollectionError(f"index kind {factory} must be trained, and the collection is empty")
        limit = max(100_000, 256 * 1024)
        sample = vectors if len(vectors) <= limit else \
            vectors[np.sort(np.random.default_rng(0).choice(len(vectors), size=limit, replace=False))]
        try:
            index.train(sample)
        except RuntimeError as exc:
            raise CollectionError(f"index kind {factory!r} could not be trained: {faiss_reason(exc)}") from None
    if len(vectors):
        index.add(vectors)
    return index, factory, {key: value for key, value in params.items() if key != "efConstruction"}
