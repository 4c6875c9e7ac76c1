"""Collections: a FAISS index plus the items behind it (id, text, metadata), saved as one unit.

Vectors are L2-normalised and searched by inner product, so every score is a cosine.
The collection keeps its own copy of the vectors and texts beside the FAISS index: that is
what lets it change index kind, drop deleted rows from kinds that cannot remove, and
re-embed everything when the model changes (``rebuild_if_needed``).

On disk a collection is a folder: ``manifest.json`` names one *generation* of files
(``index-N.faiss``, ``vectors-N.npy``, ``items-N.jsonl``) with their sizes and CRC32s.
Saving writes generation N+1 file by file (each atomically), then replaces the manifest —
the single commit point — then removes generation N. A crash at any moment leaves the
previous manifest pointing at complete files. Metadata is JSON; nothing is pickled.

Large collections: ``save_streamed`` writes the same files from batches (Parquet shards from
``core.distributed``) without ever holding all vectors — it trains the index on a sample, adds
batch by batch and streams the vectors and items to disk. Above ``AUTO_HNSW_MAX_ITEMS`` ``auto``
picks IVF-PQ, whose index keeps ``m + 8`` bytes per vector, and re-ranks its candidates exactly
from the stored vectors, which a loaded collection of that size memory-maps.
"""

from __future__ import annotations

import json
import math
import re
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import faiss
import numpy as np

from core.errors import CollectionError, DimensionMismatchError
from core.progress import CancelToken, ProgressCallback, ProgressReporter
from storage.workspace import atomic_path, atomic_write_json

FORMAT_VERSION = 1
MANIFEST = "manifest.json"

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
IVF_NPROBE_FRACTION = 1 / 8  # 1/32 gave recall@10 0.54–0.90; 1/8 reaches ~0.97 on real embeddings
# IVF-PQ: one 8-bit code per PQ_DIMS_PER_CODE dimensions (PQ48 at 384-d), then the best
# k × REFINE_K_FACTOR candidates re-ranked by exact inner product with the stored vectors.
# Measured: IVF256,PQ48 alone recall@10 ≈ 0.82; with re-ranking (k_factor 8) 0.99 at nprobe 8.
PQ_DIMS_PER_CODE = 8
REFINE_K_FACTOR = 8
IVFPQ_MIN_ITEMS = 10_000  # 8-bit codes train 256 centroids per sub-space: faiss wants ≥ 39 × 256 points
# Streamed builds train IVF on this many points per list (faiss warns below 39; its k-means uses ≤ 256).
TRAIN_POINTS_PER_LIST = 64
# A loaded collection whose vectors file is larger than this maps it (copy-on-write) instead of reading it.
MMAP_VECTORS_MIN_BYTES = 1 << 30
# Searches of a few queries run on one OpenMP thread: spreading one query over threads only adds
# scheduler waits (10–100× slower p50 measured on a busy 2-core machine, see docs/benchmarks.md).
SMALL_SEARCH_MAX_QUERIES = 4
_DEFAULT_THREADS = faiss.omp_get_max_threads()
_small_search_lock = threading.Lock()
# A filter that keeps at most this many items is answered exactly by brute force over them.
EXACT_FILTER_MAX_ITEMS = 20_000

Filter = Mapping[str, Any] | Callable[[Mapping[str, Any]], bool]


class Encoder(Protocol):
    """What a collection needs from an embedder to embed texts itself."""

    model_id: str
    fingerprint: str
    dimension: int

    def encode(self, texts: Sequence[str], **kwargs: Any) -> np.ndarray: ...


@dataclass(frozen=True)
class SearchHit:
    id: str
    score: float
    metadata: dict[str, Any]
    text: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, "metadata": self.metadata}


@dataclass
class CollectionInfo:
    """What the manifest records about a collection (and ``stats()`` reports)."""

    dimension: int
    index_kind: str = "auto"
    index_factory: str = "Flat"
    model_id: str | None = None
    model_fingerprint: str | None = None
    model_spec: str | None = None
    generation: int = 0
    search_params: dict[str, int] = field(default_factory=dict)


def hnsw_ef_search(n_items: int) -> int:
    """efSearch for an HNSW graph of ``n_items``: the default, or the smaller one for large graphs."""
    return HNSW_EF_SEARCH_LARGE if n_items >= HNSW_LARGE_FROM_ITEMS else HNSW_EF_SEARCH


def resolve_index_kind(kind: str, n_items: int, dimension: int) -> tuple[str, dict[str, int]]:
    """Map a kind (``auto``, ``flat``, ``hnsw``, ``ivf``, ``ivfpq`` or a faiss factory string) to a factory
    string and its search parameters.

    ``ivfpq`` is IVF with product-quantised codes plus an exact re-ranking of ``k × refine_k_factor``
    candidates from the stored vectors; ``auto`` chooses it above ``AUTO_HNSW_MAX_ITEMS``. A faiss string
    with an IVF stage gets embtune's nprobe rule, one with a refine stage (``RFlat``) a ``k_factor``.
    """
    kind = (kind or "auto").strip()
    lowered = kind.lower()
    if lowered == "auto":
        lowered = "flat" if n_items <= AUTO_FLAT_MAX_ITEMS else "hnsw" if n_items <= AUTO_HNSW_MAX_ITEMS else "ivfpq"
    if lowered == "flat":
        return "Flat", {}
    if lowered == "hnsw":
        return f"HNSW{HNSW_M}", {"efSearch": hnsw_ef_search(n_items), "efConstruction": HNSW_EF_CONSTRUCTION}
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
            f"index kind {kind!r} is neither auto/flat/hnsw/ivf nor a faiss factory string (nor ivfpq): "
            f"{str(exc).strip().splitlines()[-1][:120]}"
        ) from exc
    params: dict[str, int] = {}
    ivf = re.match(r"^(?:[^,]*,)?IVF(\d+)", kind)
    if ivf:
        params["nprobe"] = _nprobe(int(ivf.group(1)))
    if re.search(r"(^|,)(RFlat|Refine\()", kind):
        params["k_factor"] = REFINE_K_FACTOR
    return kind, params


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


class Collection:
    """Items with vectors, searchable by vector or (with an embedder) by text."""

    def __init__(
        self,
        dimension: int,
        *,
        index_kind: str = "auto",
        embedder: Encoder | None = None,
        model_spec: str | None = None,
    ) -> None:
        if dimension <= 0:
            raise CollectionError(f"dimension must be positive, got {dimension}")
        if embedder is not None and embedder.dimension != dimension:
            raise DimensionMismatchError(
                f"embedder {embedder.model_id} gives {embedder.dimension}-d vectors, collection wants {dimension}"
            )
        self.info = CollectionInfo(
            dimension=dimension,
            index_kind=index_kind,
            model_id=getattr(embedder, "model_id", None),
            model_fingerprint=getattr(embedder, "fingerprint", None),
            model_spec=model_spec or getattr(embedder, "spec", None),
        )
        self.embedder = embedder
        self.path: Path | None = None
        self._ids: list[str] = []
        self._position: dict[str, int] = {}
        self._texts: list[str | None] = []
        self._metadata: list[dict[str, Any]] = []
        self._vectors = np.empty((0, dimension), dtype=np.float32)
        self._index: faiss.Index | None = None
        self._index_stale = True

    # -- building ---------------------------------------------------------------------------

    @classmethod
    def from_items(
        cls,
        ids: Sequence[str],
        texts: Sequence[str],
        embedder: Encoder,
        *,
        metadata: Sequence[Mapping[str, Any]] | None = None,
        index_kind: str = "auto",
        model_spec: str | None = None,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        show_progress: bool | None = None,
    ) -> Collection:
        """Embed texts with ``embedder`` and build a collection (the common way in)."""
        collection = cls(embedder.dimension, index_kind=index_kind, embedder=embedder, model_spec=model_spec)
        vectors = embedder.encode_document(list(texts), progress=progress, cancel=cancel, show_progress=show_progress)
        collection.add(ids, vectors, texts=texts, metadata=metadata)
        return collection

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._position

    @property
    def dimension(self) -> int:
        return self.info.dimension

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    @property
    def vectors(self) -> np.ndarray:
        """The stored (normalised) vectors, row i belonging to ``ids[i]``; read-only view."""
        view = self._vectors.view()
        view.setflags(write=False)
        return view

    def item(self, item_id: str) -> dict[str, Any]:
        position = self._require(item_id)
        return {"id": item_id, "text": self._texts[position], "metadata": dict(self._metadata[position])}

    def add(
        self,
        ids: Sequence[str],
        vectors: np.ndarray | None = None,
        *,
        texts: Sequence[str] | None = None,
        metadata: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Add new items; an id that is already present is refused (use ``upsert``)."""
        present = [item_id for item_id in ids if item_id in self._position]
        if present:
            raise CollectionError(f"id {present[0]!r} is already in the collection (use upsert to replace it)")
        self.upsert(ids, vectors, texts=texts, metadata=metadata)

    def upsert(
        self,
        ids: Sequence[str],
        vectors: np.ndarray | None = None,
        *,
        texts: Sequence[str] | None = None,
        metadata: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Insert new ids and replace existing ones; vectors are embedded from texts if not given."""
        ids = [str(item_id) for item_id in ids]
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            duplicate = next(item_id for item_id in ids if item_id in seen or seen.add(item_id))
            raise CollectionError(f"id {duplicate!r} appears twice in one batch")
        if vectors is None:
            if texts is None or self.embedder is None:
                raise CollectionError("upsert needs vectors, or texts and a collection embedder")
            vectors = self.embedder.encode_document(list(texts))
        vectors = self._checked_vectors(vectors, len(ids))
        texts = list(texts) if texts is not None else [None] * len(ids)
        metadata = [_json_safe(dict(m)) for m in metadata] if metadata is not None else [{} for _ in ids]
        if not len(texts) == len(metadata) == len(ids):
            raise CollectionError(f"got {len(ids)} ids, {len(texts)} texts and {len(metadata)} metadata rows")
        new_rows = []
        for row, item_id in enumerate(ids):
            position = self._position.get(item_id)
            if position is None:
                new_rows.append(row)
                continue
            self._vectors[position] = vectors[row]
            self._texts[position] = texts[row]
            self._metadata[position] = metadata[row]
            self._index_stale = True
        if new_rows:
            start = len(self._ids)
            for offset, row in enumerate(new_rows):
                self._position[ids[row]] = start + offset
                self._ids.append(ids[row])
                self._texts.append(texts[row])
                self._metadata.append(metadata[row])
            self._vectors = np.concatenate([self._vectors, vectors[new_rows]])
            if self._index is not None and not self._index_stale and self._index.is_trained \
                    and self._index.ntotal == start:
                self._index.add(vectors[new_rows])
            else:
                self._index_stale = True

    def delete(self, ids: Iterable[str]) -> int:
        """Remove items by id; unknown ids are ignored. Returns how many were removed."""
        doomed = sorted({self._position[item_id] for item_id in ids if item_id in self._position})
        if not doomed:
            return 0
        keep = np.ones(len(self._ids), dtype=bool)
        keep[doomed] = False
        self._ids = [item_id for item_id, kept in zip(self._ids, keep, strict=False) if kept]
        self._texts = [text for text, kept in zip(self._texts, keep, strict=False) if kept]
        self._metadata = [meta for meta, kept in zip(self._metadata, keep, strict=False) if kept]
        self._vectors = self._vectors[keep]
        self._position = {item_id: position for position, item_id in enumerate(self._ids)}
        self._index_stale = True  # positions moved: faiss ids are positions, so rebuild
        return len(doomed)

    def _checked_vectors(self, vectors: np.ndarray, expected_rows: int) -> np.ndarray:
        return _checked_vectors(vectors, expected_rows, self.dimension, self.info.model_id)

    # -- the FAISS index --------------------------------------------------------------------

    def _ensure_index(self) -> faiss.Index:
        if self._index is not None and not self._index_stale:
            return self._index
        factory, params = resolve_index_kind(self.info.index_kind, len(self._ids), self.dimension)
        # faiss ids are row positions, so no id map (its result translation is multi-threaded even for one
        # query, which made single searches slow on a busy machine); deletes and replacements rebuild.
        index = _new_index(self.dimension, factory, params)
        if not index.is_trained:
            if len(self._ids) == 0:
                raise CollectionError(f"index kind {factory} must be trained, and the collection is empty")
            index.train(self._training_sample())
        if len(self._ids):
            index.add(self._vectors)
        self.info.index_factory = factory
        self.info.search_params = {k: v for k, v in params.items() if k != "efConstruction"}
        self._index, self._index_stale = index, False
        return index

    def _training_sample(self, per_centroid: int = 256) -> np.ndarray:
        limit = max(100_000, per_centroid * 1024)
        if len(self._vectors) <= limit:
            return self._vectors
        rows = np.random.default_rng(0).choice(len(self._vectors), size=limit, replace=False)
        return self._vectors[np.sort(rows)]

    def _search_parameters(self, index: faiss.Index) -> faiss.SearchParameters | None:
        return _search_parameters(index, self.info.search_params)

    # -- search -----------------------------------------------------------------------------

    def search(
        self,
        query: str | np.ndarray,
        k: int = 5,
        *,
        filter: Filter | None = None,
    ) -> list[SearchHit]:
        """Top-k items for a text (needs an embedder) or a vector; ``filter`` on metadata."""
        return self.search_many([query] if isinstance(query, str) else np.atleast_2d(query), k, filter=filter)[0]

    def search_many(
        self,
        queries: Sequence[str] | np.ndarray,
        k: int = 5,
        *,
        filter: Filter | None = None,
    ) -> list[list[SearchHit]]:
        check_k(k)
        vectors = self._query_vectors(queries)
        if not self._ids:
            return [[] for _ in range(len(vectors))]
        allowed = self._allowed_positions(filter) if filter is not None else None
        if allowed is not None and len(allowed) <= EXACT_FILTER_MAX_ITEMS:
            scores, positions = _exact_top_k(vectors, self._vectors[allowed], k)
            positions = np.where(positions >= 0, allowed[np.maximum(positions, 0)], -1)
        else:
            scores, positions = self._index_search(vectors, k, allowed)
        return [
            [self._hit(p, s) for s, p in zip(row_scores, row_positions, strict=True) if p >= 0]
            for row_scores, row_positions in zip(scores.tolist(), positions.tolist(), strict=True)
        ]

    def _index_search(self, vectors: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        index = self._ensure_index()
        params = self._search_parameters(index)
        if allowed is None:
            return self._ann_search(index, vectors, min(k, len(self._ids)), params)
        # A broad filter: over-fetch and keep the allowed ones, widening until k are found.
        mask = np.zeros(len(self._ids), dtype=bool)
        mask[allowed] = True
        fetch = min(len(self._ids), k * 4)
        while True:
            scores, positions = self._ann_search(index, vectors, fetch, params)
            keep = np.where(positions >= 0, mask[np.maximum(positions, 0)], False)
            enough = (keep.sum(axis=1) >= min(k, len(allowed))).all()
            if enough or fetch >= len(self._ids):
                break
            fetch = min(len(self._ids), fetch * 4)
        out_scores = np.full((len(vectors), k), -np.inf, dtype=np.float32)
        out_positions = np.full((len(vectors), k), -1, dtype=np.int64)
        for row in range(len(vectors)):
            chosen = np.flatnonzero(keep[row])[:k]
            out_scores[row, : len(chosen)] = scores[row, chosen]
            out_positions[row, : len(chosen)] = positions[row, chosen]
        return out_scores, out_positions

    def _ann_search(self, index: faiss.Index, vectors: np.ndarray, k: int,
                    params: faiss.SearchParameters | None) -> tuple[np.ndarray, np.ndarray]:
        """The index's top-k; for a re-ranking kind, its top ``k × factor`` re-scored exactly from stored vectors."""
        factor = self.info.search_params.get("refine_k_factor")
        if not factor:
            return _search(index, vectors, k, params)
        _, candidates = _search(index, vectors, min(len(self._ids), k * int(factor)), params)
        return _rerank(vectors, self._vectors, candidates, k)

    def _query_vectors(self, queries: Sequence[str] | np.ndarray) -> np.ndarray:
        if isinstance(queries, np.ndarray):
            return self._checked_vectors(queries, len(queries))
        if self.embedder is None:
            raise CollectionError("searching by text needs the collection's embedder (load it with a model)")
        return self._checked_vectors(self.embedder.encode_query(list(queries)), len(queries))

    def _allowed_positions(self, filter: Filter) -> np.ndarray:
        if callable(filter):
            keep = [position for position, meta in enumerate(self._metadata) if filter(meta)]
        else:
            wanted = {key: value if isinstance(value, (list, tuple, set)) else [value] for key, value in filter.items()}
            keep = [
                position
                for position, meta in enumerate(self._metadata)
                if all(meta.get(key) in values for key, values in wanted.items())
            ]
        return np.asarray(keep, dtype=np.int64)

    def _hit(self, position: int, score: float) -> SearchHit:
        return SearchHit(self._ids[position], score, dict(self._metadata[position]), self._texts[position])

    def _require(self, item_id: str) -> int:
        try:
            return self._position[item_id]
        except KeyError:
            raise CollectionError(f"id {item_id!r} is not in the collection") from None

    # -- model changes ----------------------------------------------------------------------

    def rebuild_if_needed(
        self,
        embedder: Encoder,
        *,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> bool:
        """Re-embed every stored text with ``embedder`` if it is not the model the index was built with.

        Returns True when it rebuilt. Items without stored text cannot be re-embedded; then
        the rebuild is refused rather than leaving a collection with two models' vectors.
        """
        if embedder.fingerprint == self.info.model_fingerprint and embedder.dimension == self.dimension:
            self.embedder = embedder
            return False
        missing = [item_id for item_id, text in zip(self._ids, self._texts, strict=False) if text is None]
        if missing:
            raise DimensionMismatchError(
                f"collection has {len(missing)} items without stored text (e.g. {missing[0]!r}); "
                f"it cannot be re-embedded with {embedder.model_id}"
            )
        vectors = embedder.encode_document(list(self._texts), progress=progress, cancel=cancel) if self._ids else \
            np.empty((0, embedder.dimension), dtype=np.float32)
        self.info.dimension = embedder.dimension
        self._vectors = np.empty((0, embedder.dimension), dtype=np.float32)
        self._vectors = self._checked_vectors(vectors, len(self._ids))
        self.info.model_id = embedder.model_id
        self.info.model_fingerprint = embedder.fingerprint
        self.info.model_spec = getattr(embedder, "spec", self.info.model_spec)
        self.embedder = embedder
        self._index_stale = True
        return True

    def check_embedder(self, embedder: Encoder) -> None:
        """Refuse an embedder whose vectors cannot be compared with the stored ones."""
        if embedder.dimension != self.dimension:
            raise DimensionMismatchError(
                f"collection was built with {self.info.model_id} ({self.dimension}-d) but "
                f"{embedder.model_id} gives {embedder.dimension}-d vectors: rebuild the collection "
                f"(rebuild_if_needed / `embtune index` again) or search with the original model"
            )

    # -- persistence ------------------------------------------------------------------------

    def save(self, path: str | Path, *, progress: ProgressCallback | None = None) -> Path:
        """Write the collection as a new generation, then switch the manifest to it atomically."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        previous = _read_manifest(folder) if (folder / MANIFEST).exists() else None
        generation = max(self.info.generation, previous["generation"] if previous else 0) + 1
        index = self._ensure_index() if self._ids else None
        names = {"index": f"index-{generation}.faiss", "vectors": f"vectors-{generation}.npy",
                 "items": f"items-{generation}.jsonl"}
        with ProgressReporter("save collection", 3, callback=progress) as reporter:
            if index is not None:
                with atomic_path(folder / names["index"]) as tmp:
                    faiss.write_index(index, str(tmp))
            else:
                del names["index"]
            reporter.advance(1)
            with atomic_path(folder / names["vectors"]) as tmp, open(tmp, "wb") as handle:
                np.save(handle, self._vectors, allow_pickle=False)
            reporter.advance(1)
            with atomic_path(folder / names["items"]) as tmp, open(tmp, "w", encoding="utf-8") as handle:
                for item_id, text, meta in zip(self._ids, self._texts, self._metadata, strict=False):
                    handle.write(json.dumps({"id": item_id, "text": text, "metadata": meta}, ensure_ascii=False))
                    handle.write("\n")
            files = {role: {"name": name, **_file_check(folder / name)} for role, name in names.items()}
            self.info.generation = generation
            manifest = {"format_version": FORMAT_VERSION, "count": len(self._ids), "files": files, **asdict(self.info)}
            atomic_write_json(folder / MANIFEST, manifest)
            reporter.advance(1)
        _remove_other_generations(folder, generation)
        self.path = folder
        return folder

    @classmethod
    def load(cls, path: str | Path, *, embedder: Encoder | None = None) -> Collection:
        """Load a saved collection, verifying every file against the manifest."""
        folder = Path(path)
        if not (folder / MANIFEST).exists():
            raise CollectionError(f"{folder} holds no collection (no {MANIFEST})")
        manifest = _read_manifest(folder)
        info = CollectionInfo(**{key: manifest[key] for key in CollectionInfo.__dataclass_fields__ if key in manifest})
        for role, entry in manifest["files"].items():
            file = folder / entry["name"]
            if not file.exists():
                raise CollectionError(f"collection file {file} is missing ({role})")
            actual = _file_check(file)
            if actual != {"size": entry["size"], "crc32": entry["crc32"]}:
                raise CollectionError(f"collection file {file} is corrupted (size/checksum differ from {MANIFEST})")
        collection = cls(info.dimension, index_kind=info.index_kind)
        collection.info = info
        collection.path = folder
        vectors_file = folder / manifest["files"]["vectors"]["name"]
        # A large collection maps its vectors (copy-on-write: changes stay in memory until saved as a new
        # generation), so opening one costs its index and items, not its vectors; re-ranking reads a few rows.
        big = vectors_file.stat().st_size > MMAP_VECTORS_MIN_BYTES
        vectors = np.load(vectors_file, allow_pickle=False, mmap_mode="c" if big else None)
        with open(folder / manifest["files"]["items"]["name"], encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
        if len(rows) != len(vectors) or (len(vectors) and vectors.shape[1] != info.dimension):
            raise CollectionError(f"collection {folder} is inconsistent: {len(rows)} items, {vectors.shape} vectors")
        collection._ids = [row["id"] for row in rows]
        collection._texts = [row.get("text") for row in rows]
        collection._metadata = [row.get("metadata") or {} for row in rows]
        collection._position = {item_id: position for position, item_id in enumerate(collection._ids)}
        collection._vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if "index" in manifest["files"]:
            try:
                collection._index = faiss.read_index(str(folder / manifest["files"]["index"]["name"]))
            except RuntimeError as exc:
                raise CollectionError(f"collection index in {folder} cannot be read: {exc}") from exc
            collection._index_stale = collection._index.ntotal != len(collection._ids)
        if embedder is not None:
            collection.check_embedder(embedder)
            collection.embedder = embedder
        return collection

    def stats(self) -> dict[str, Any]:
        on_disk = sum(f.stat().st_size for f in self.path.iterdir()) if self.path and self.path.exists() else 0
        return {
            "count": len(self._ids),
            "dimension": self.dimension,
            "index_kind": self.info.index_kind,
            "index_factory": self.info.index_factory if self._index is not None else
            resolve_index_kind(self.info.index_kind, len(self._ids), self.dimension)[0],
            "search_params": dict(self.info.search_params),
            "model_id": self.info.model_id,
            "model_fingerprint": self.info.model_fingerprint,
            "generation": self.info.generation,
            "vector_bytes": int(self._vectors.nbytes),
            "bytes_on_disk": on_disk,
        }


# What ``save_streamed`` reads: (ids, vectors, texts, metadata) for one batch of items.
ItemBatch = tuple[Sequence[str], np.ndarray, Sequence["str | None"], Sequence[Mapping[str, Any]]]


def save_streamed(
    folder: str | Path,
    batches: Callable[[], Iterable[ItemBatch]],
    *,
    count: int,
    dimension: int,
    index_kind: str = "auto",
    model_id: str | None = None,
    model_fingerprint: str | None = None,
    model_spec: str | None = None,
    describe_position: Callable[[int], str] | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> CollectionInfo:
    """Write a collection from batches of items, never holding all their vectors; ``Collection.load`` reads it.

    The files and the commit protocol are those of ``Collection.save`` (a new generation, then the manifest).
    ``batches()`` must give the same ``count`` items in the same order on every call: it is read once to
    draw the training sample (only for kinds that train, e.g. IVF-PQ) and once to add the items, writing
    vectors and items to disk as they pass. Peak memory is the index (56 bytes per 384-d vector for
    IVF-PQ), the training sample, one batch, and 16 bytes per item to check that ids are unique.
    ``describe_position(i)`` names where item ``i`` came from in an error (e.g. shard and row).
    """
    import pandas as pd

    folder = Path(folder)
    if count <= 0:
        raise CollectionError("there are no items to index")
    factory, params = resolve_index_kind(index_kind, count, dimension)
    index = _new_index(dimension, factory, params)
    folder.mkdir(parents=True, exist_ok=True)
    previous = _read_manifest(folder) if (folder / MANIFEST).exists() else None
    generation = (previous["generation"] if previous else 0) + 1
    names = {"index": f"index-{generation}.faiss", "vectors": f"vectors-{generation}.npy",
             "items": f"items-{generation}.jsonl"}
    with ProgressReporter("build index", count, callback=progress, cancel=cancel) as reporter:
        if not index.is_trained:
            index.train(_streamed_sample(batches(), count, _training_rows(factory, count), dimension, model_id))
        hashes: list[np.ndarray] = []
        written = 0
        with atomic_path(folder / names["vectors"]) as vectors_tmp, open(vectors_tmp, "wb") as vectors_out, \
                atomic_path(folder / names["items"]) as items_tmp, open(items_tmp, "w", encoding="utf-8") as items_out:
            np.lib.format.write_array_header_1_0(
                vectors_out, {"descr": "<f4", "fortran_order": False, "shape": (count, dimension)})
            for ids, vectors, texts, metadata in batches():
                ids = [str(item_id) for item_id in ids]
                vectors = _checked_vectors(vectors, len(ids), dimension, model_id)
                if written + len(ids) > count:
                    raise CollectionError(f"the batches hold more than the {count} items announced")
                index.add(vectors)
                vectors_out.write(vectors.astype("<f4", copy=False).tobytes())
                for item_id, text, meta in zip(ids, texts, metadata, strict=True):
                    items_out.write(json.dumps({"id": item_id, "text": text, "metadata": _json_safe(dict(meta))},
                                               ensure_ascii=False))
                    items_out.write("\n")
                hashes.append(pd.util.hash_array(np.asarray(ids, dtype=object)))
                written += len(ids)
                reporter.advance(len(ids))
            if written != count:
                raise CollectionError(f"the batches held {written} items, {count} were announced")
            _check_unique_ids(np.concatenate(hashes), batches, describe_position)
        with atomic_path(folder / names["index"]) as tmp:
            faiss.write_index(index, str(tmp))
        info = CollectionInfo(dimension=dimension, index_kind=index_kind, index_factory=factory, model_id=model_id,
                              model_fingerprint=model_fingerprint, model_spec=model_spec, generation=generation,
                              search_params={k: v for k, v in params.items() if k != "efConstruction"})
        files = {role: {"name": name, **_file_check(folder / name)} for role, name in names.items()}
        atomic_write_json(folder / MANIFEST, {"format_version": FORMAT_VERSION, "count": count, "files": files,
                                              **asdict(info)})
    _remove_other_generations(folder, generation)
    return info


def _new_index(dimension: int, factory: str, params: Mapping[str, int]) -> faiss.Index:
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


def _training_rows(factory: str, count: int) -> int:
    """How many items a streamed build trains on: enough for every IVF list and every PQ codebook."""
    ivf = re.search(r"IVF(\d+)", factory)
    lists = int(ivf.group(1)) if ivf else 0
    return min(count, max(TRAIN_POINTS_PER_LIST * lists, 64 * 256))


def _streamed_sample(batches: Iterable[ItemBatch], count: int, rows: int, dimension: int,
                     model_id: str | None) -> np.ndarray:
    """About ``rows`` items drawn uniformly (a fixed seed) in one pass over the batches."""
    rng = np.random.default_rng(0)
    keep = rows / count
    parts = []
    for ids, vectors, _texts, _metadata in batches:
        vectors = _checked_vectors(vectors, len(ids), dimension, model_id)
        parts.append(vectors if keep >= 1 else vectors[rng.random(len(vectors)) < keep])
    return np.ascontiguousarray(np.concatenate(parts))


def _check_unique_ids(hashes: np.ndarray, batches: Callable[[], Iterable[ItemBatch]],
                      describe_position: Callable[[int], str] | None) -> None:
    order = np.argsort(hashes, kind="stable")
    ordered = hashes[order]
    clashes = np.flatnonzero(ordered[1:] == ordered[:-1])
    if not len(clashes):
        return
    # Equal 64-bit hashes: find the ids themselves (a true duplicate, or — almost never — a hash collision).
    pairs = {int(order[c]): int(order[c + 1]) for c in clashes[:100]}
    wanted = set(pairs) | set(pairs.values())
    found: dict[int, str] = {}
    position = 0
    for ids, *_ in batches():
        for item_id in ids:
            if position in wanted:
                found[position] = str(item_id)
            position += 1
    for first, second in sorted(pairs.items()):
        if found.get(first) == found.get(second):
            where = describe_position or (lambda p: f"item {p + 1}")
            raise CollectionError(f"id {found[first]!r} appears twice: {where(first)} and {where(second)}; "
                                  "ids must be unique")


def _checked_vectors(vectors: np.ndarray, expected_rows: int, dimension: int, model_id: str | None) -> np.ndarray:
    """Vectors as contiguous float32 rows of ``dimension``, finite and L2-normalised."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim == 1:
        vectors = vectors[None, :]
    if vectors.shape[1] != dimension:
        raise DimensionMismatchError(
            f"vectors have dimension {vectors.shape[1]} but the collection was built with "
            f"{dimension} ({model_id or 'unknown model'})"
        )
    if vectors.shape[0] != expected_rows:
        raise CollectionError(f"got {expected_rows} ids but {vectors.shape[0]} vectors")
    if not np.isfinite(vectors).all():
        raise CollectionError("vectors contain NaN or infinity")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


def _search_parameters(index: faiss.Index, params: Mapping[str, int]) -> faiss.SearchParameters | None:
    """faiss search parameters for ``index`` from a collection's ``search_params`` (efSearch, nprobe, k_factor)."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexRefine):
        base = _search_parameters(index.base_index, params)
        refine = faiss.IndexRefineSearchParameters(k_factor=float(params.get("k_factor", REFINE_K_FACTOR)))
        if base is not None:
            refine.base_index_params = base
            refine.kept_alive = base  # the C++ side holds a bare pointer: keep the Python object alive with it
        return refine
    inner = faiss.downcast_index(getattr(index, "index", index))
    if isinstance(inner, faiss.IndexHNSW) and "efSearch" in params:
        return faiss.SearchParametersHNSW(efSearch=params["efSearch"])
    if isinstance(inner, faiss.IndexIVF) and "nprobe" in params:
        return faiss.SearchParametersIVF(nprobe=params["nprobe"])
    return None


def _rerank(queries: np.ndarray, stored: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner products of each query with its candidates (rows of ``stored``), best ``k`` first."""
    k = min(k, candidates.shape[1])
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


def _search(index: faiss.Index, vectors: np.ndarray, k: int,
            params: faiss.SearchParameters | None) -> tuple[np.ndarray, np.ndarray]:
    if len(vectors) > SMALL_SEARCH_MAX_QUERIES or _DEFAULT_THREADS <= 1:
        return index.search(vectors, k, params=params)
    with _small_search_lock:
        faiss.omp_set_num_threads(1)
        try:
            return index.search(vectors, k, params=params)
        finally:
            faiss.omp_set_num_threads(_DEFAULT_THREADS)


def check_k(k: object) -> None:
    """How many results: a positive whole number (checked before any model is loaded)."""
    if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
        raise CollectionError(f"k must be a positive whole number, got {k!r}")


def _exact_top_k(queries: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    k = min(k, len(vectors))
    if k == 0:
        return np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64)
    scores, positions = faiss.knn(queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
    return scores, positions


def _json_safe(value: Any) -> Any:
    """Metadata must round-trip through JSON: numpy scalars → Python, NaN → None."""
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _file_check(path: Path) -> dict[str, int]:
    crc = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return {"size": path.stat().st_size, "crc32": crc}


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """A saved collection's manifest (what ``Collection.load`` checks first), without loading the collection."""
    return _read_manifest(Path(folder))


def _read_manifest(folder: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CollectionError(f"collection manifest {folder / MANIFEST} is unreadable: {exc}") from exc
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CollectionError(f"collection {folder} has format {manifest.get('format_version')!r}, "
                              f"this embtune reads {FORMAT_VERSION}")
    return manifest


_GENERATION_FILE = re.compile(r"^(index|vectors|items)-(\d+)\.(faiss|npy|jsonl)$")


def _remove_other_generations(folder: Path, keep: int) -> None:
    for file in folder.iterdir():
        match = _GENERATION_FILE.match(file.name)
        if (match and int(match.group(2)) != keep) or (file.name.startswith(".") and file.name.endswith(".tmp")):
            file.unlink(missing_ok=True)
