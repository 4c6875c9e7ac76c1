"""The in-memory collection: items (id, text, metadata) with their vectors and the faiss index over
them, searched by vector or, with an embedder, by text.

Vectors are L2-normalised and searched by inner product, so every score is a cosine. The collection
keeps its own copy of the vectors and texts beside the faiss index: that is what lets it change index
kind, drop deleted rows from kinds that cannot remove, and re-embed everything when the model changes
(``rebuild_if_needed``). faiss ids are row positions (no id map), so deletes and replacements rebuild.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import faiss
import numpy as np

from core.collection.disk import (
    CollectionInfo,
    checked_vectors,
    json_safe,
    publish,
    read_generation,
    save_generation,
)
from core.collection.policy import build_index, resolve_index_kind
from core.collection.search import (
    Filter,
    SearchHit,
    allowed_positions,
    answered_exactly,
    check_k,
    exact_top_k,
    faiss_search,
    id_selector,
    rerank,
    search_parameters,
)
from core.errors import CollectionError, DimensionMismatchError
from core.progress import CancelToken, ProgressCallback


class Encoder(Protocol):
    """What a collection needs from an embedder to embed texts itself."""

    model_id: str
    fingerprint: str
    dimension: int

    def encode(self, texts: Sequence[str], **kwargs: Any) -> np.ndarray: ...


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
        metadata = [json_safe(dict(m)) for m in metadata] if metadata is not None else [{} for _ in ids]
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
        return checked_vectors(vectors, expected_rows, self.dimension, self.info.model_id)

    # -- the FAISS index --------------------------------------------------------------------

    def _ensure_index(self) -> faiss.Index:
        if self._index is None or self._index_stale:
            self._index, self.info.index_factory, self.info.search_params = build_index(
                self.info.index_kind, self._vectors, self.dimension)
            self._index_stale = False
        return self._index

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
        allowed = allowed_positions(self._metadata, filter) if filter is not None else None
        if answered_exactly(allowed):
            scores, positions = exact_top_k(vectors, self._vectors[allowed], k)
            positions = np.where(positions >= 0, allowed[np.maximum(positions, 0)], -1)
        else:
            scores, positions = self._index_search(vectors, k, allowed)
        return [
            [self._hit(p, s) for s, p in zip(row_scores, row_positions, strict=True) if p >= 0]
            for row_scores, row_positions in zip(scores.tolist(), positions.tolist(), strict=True)
        ]

    def _index_search(self, vectors: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The index's top-k (a broad filter as an ID selector); for a re-ranking kind, its top
        ``k × factor`` re-scored exactly from the stored vectors."""
        index = self._ensure_index()
        selector = id_selector(allowed, len(self._ids)) if allowed is not None else None
        params = search_parameters(index, self.info.search_params, selector)
        k = min(k, len(self._ids) if allowed is None else len(allowed))
        factor = self.info.search_params.get("refine_k_factor")
        if not factor:
            return faiss_search(index, vectors, k, params)
        _, candidates = faiss_search(index, vectors, min(len(self._ids), k * int(factor)), params)
        return rerank(vectors, self._vectors, candidates, k)

    def _query_vectors(self, queries: Sequence[str] | np.ndarray) -> np.ndarray:
        if isinstance(queries, np.ndarray):
            return self._checked_vectors(queries, len(queries))
        if self.embedder is None:
            raise CollectionError("searching by text needs the collection's embedder (load it with a model)")
        return self._checked_vectors(self.embedder.encode_query(list(queries)), len(queries))

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

    def save(self, path: str | Path, *, progress: ProgressCallback | None = None, publish_now: bool = True) -> Path:
        """Write the collection as a new generation, then switch the manifest to it atomically.

        ``publish_now=False`` stages it only (``core.collection.disk``): a named collection publishes after its
        database row names it. A full disk (checked first) or any write error is one ``StorageError`` naming the
        file, and leaves nothing of the new generation behind.
        """
        index = self._ensure_index() if self._ids else None  # built first: a failure leaves no folder behind
        folder = Path(path)
        self.info = save_generation(folder, self.info, index=index, vectors=self._vectors, ids=self._ids,
                                    texts=self._texts, metadata=self._metadata, progress=progress)
        if publish_now:
            publish(folder, self.info.generation)
        self.path = folder
        return folder

    @classmethod
    def load(cls, path: str | Path, *, embedder: Encoder | None = None, generation: int | None = None) -> Collection:
        """Load a saved collection, verifying every file against the manifest (a staged ``generation``'s, when
        that one is asked for and not published yet)."""
        folder = Path(path)
        stored = read_generation(folder, generation)
        collection = cls(stored.info.dimension, index_kind=stored.info.index_kind)
        collection.info = stored.info
        collection.path = folder
        collection._ids = [row["id"] for row in stored.items]
        collection._texts = [row.get("text") for row in stored.items]
        collection._metadata = [row.get("metadata") or {} for row in stored.items]
        collection._position = {item_id: position for position, item_id in enumerate(collection._ids)}
        collection._vectors = np.ascontiguousarray(stored.vectors, dtype=np.float32)
        if stored.index is not None:
            collection._index = stored.index
            collection._index_stale = stored.index.ntotal != len(collection._ids)
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


