"""What every embedder shares: query/document sides, the embedding cache and the chunked encode loop.

Retrieval models such as multilingual-e5 were trained with a prompt per side (``query: `` for what a user types,
``passage: `` for what is indexed); a model without prompts reads both sides the same. Callers say which side a
text is on — indexing encodes documents, search and evaluation encode queries — and the model's own prompts (the
``prompts`` of its sentence-transformers config) decide what that means. The cache key hashes the text the model
actually reads, prompt included, so a query and a document with the same words never share a vector when the
model tells them apart, and do when it does not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from core.embedders.cache import CacheKey, EmbeddingCache, content_hash
from core.errors import EmbtuneError
from core.progress import CancelToken, ProgressCallback, ProgressReporter

Side = Literal["query", "document"]
SIDES: tuple[str, ...] = ("query", "document")
# Inputs larger than this get a console bar when the caller did not say.
PROGRESS_BAR_MIN_ITEMS = 1000
# Texts are encoded in chunks so progress and cancel are checked between them; a chunk is
# large enough that the model's own length-sorted batching still pays off.
CHUNK_BATCHES = 16


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """L2-normalise each row; zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    return vectors / norms


def text_items(texts: str | Sequence[str]) -> tuple[bool, list[str]]:
    """(was it one text, the texts as a list): every embedder takes one text or many, and refuses a
    non-string with its position rather than failing deep inside a tokenizer."""
    single = isinstance(texts, str)
    items = [texts] if single else list(texts)
    for position, text in enumerate(items):
        if not isinstance(text, str):
            raise EmbtuneError(f"text #{position} is {type(text).__name__}, not a string")
    return single, items


def check_side(side: str | None) -> str | None:
    if side is not None and side not in SIDES:
        raise EmbtuneError(f"side {side!r} is not one of {', '.join(SIDES)}")
    return side


class Embedder:
    """Base of the text, CLIP and screenshot embedders; subclasses provide ``_run_texts`` and the properties."""

    modality = "text"
    cache: EmbeddingCache | None = None
    batch_size: int = 64
    truncate_dim: int | None = None
    full_dimension: int = 0
    spec: str = ""
    requested_spec: str = ""

    @property
    def dimension(self) -> int:
        """The width of the vectors it returns: the Matryoshka truncation when one was asked for."""
        return self.truncate_dim or self.full_dimension

    @property
    def fell_back(self) -> bool:
        """True when the requested model could not load and the fallback stands in for it."""
        return self.requested_spec != self.spec

    @property
    def fingerprint(self) -> str:
        raise NotImplementedError

    @property
    def prompts(self) -> dict[str, str]:
        """The model's prompt per side (empty: both sides read the same)."""
        return {}

    def prompt_for(self, side: str | None) -> str:
        return self.prompts.get(check_side(side) or "", "")

    def encode(
        self,
        texts: str | Sequence[str],
        *,
        side: Side | None = None,
        batch_size: int | None = None,
        show_progress: bool | None = None,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> np.ndarray:
        """Embed texts → (n, dimension) float32, rows L2-normalised; cached texts skip the model.

        ``side`` picks the model's query or document prompt; ``None`` applies none (a model without prompts gives
        the same vectors for every side).
        """
        single, items = text_items(texts)
        prompt = self.prompt_for(side)
        keys = [self.cache_key(prompt + text) for text in items] if self.caching else []
        output = self._encode_cached(
            items, keys, lambda chunk, positions, batch: self._run_texts(chunk, prompt, batch), task="encode",
            unit="text", batch_size=batch_size, show_progress=show_progress, progress=progress, cancel=cancel,
            order=lambda missing: sorted(missing, key=lambda position: -len(items[position])),
        )
        return output[0] if single else output

    def encode_query(self, texts: str | Sequence[str], **kwargs: Any) -> np.ndarray:
        """What a user searches with."""
        return self.encode(texts, side="query", **kwargs)

    def encode_document(self, texts: str | Sequence[str], **kwargs: Any) -> np.ndarray:
        """What is indexed and searched in."""
        return self.encode(texts, side="document", **kwargs)

    def _run_texts(self, texts: list[str], prompt: str, batch_size: int) -> np.ndarray:
        raise NotImplementedError

    @property
    def caching(self) -> bool:
        return self.cache is not None and self.cache.capacity > 0

    def cache_key(self, content: str | bytes, *, hashed: bool = False) -> CacheKey:
        """(weights fingerprint, truncate_dim, sha256 of what the model reads)."""
        return (self.fingerprint, self.truncate_dim, content if hashed else content_hash(content))

    def _encode_cached(
        self,
        items: list[Any],
        keys: list[CacheKey],
        run: Callable[[list[Any], list[int], int], np.ndarray],
        *,
        task: str,
        unit: str,
        batch_size: int | None,
        show_progress: bool | None,
        progress: ProgressCallback | None,
        cancel: CancelToken | None,
        order: Callable[[list[int]], list[int]] | None = None,
        chunk_batches: int = CHUNK_BATCHES,
        bar_from: int = PROGRESS_BAR_MIN_ITEMS,
    ) -> np.ndarray:
        """The one loop: cache hits filled in, misses run in chunks (progress and cancel between chunks), stored."""
        output = np.zeros((len(items), self.dimension), dtype=np.float32)
        missing = []
        for position in range(len(items)):
            vector = self.cache.get(keys[position]) if keys else None
            if vector is None:
                missing.append(position)
            else:
                output[position] = vector
        if not missing:
            return output
        if order is not None:  # e.g. texts sorted by length across the whole input, so padding stays low
            missing = order(missing)
        batch = batch_size or self.batch_size
        chunk = batch * chunk_batches
        show_bar = len(missing) >= bar_from if show_progress is None else show_progress
        with ProgressReporter(task, len(missing), callback=progress, cancel=cancel, show_bar=show_bar,
                              unit=unit) as reporter:
            for start in range(0, len(missing), chunk):
                positions = missing[start:start + chunk]
                vectors = run([items[p] for p in positions], positions, batch)
                output[positions] = vectors
                if keys:
                    for position, vector in zip(positions, vectors, strict=True):
                        self.cache.put(keys[position], vector)
                reporter.advance(len(positions))
        return output
