"""An in-memory LRU of embeddings, shared by every embedder in the process.

The key is (model fingerprint, truncate_dim, sha256 of the content): the fingerprint comes
from the weights, not the name, so a fine-tuned model is never scored on vectors cached for
its base. A hit returns a stored vector without touching the model.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import asdict, dataclass

import numpy as np
from cachetools import LRUCache

DEFAULT_CAPACITY = 1000
ENV_CAPACITY = "EMBTUNE_CACHE_SIZE"

CacheKey = tuple[str, int | None, str]


def content_hash(content: str | bytes) -> str:
    """sha256 of text (UTF-8) or raw bytes: the content part of a cache key."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    hit_rate: float
    size: int
    capacity: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


class EmbeddingCache:
    """Thread-safe LRU; ``capacity`` 0 turns caching off without changing callers."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 0:
            raise ValueError(f"cache capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self._entries: LRUCache[CacheKey, np.ndarray] = LRUCache(maxsize=max(1, capacity))
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    def get(self, key: CacheKey) -> np.ndarray | None:
        with self._lock:
            vector = self._entries.get(key)  # a hit counts as a use: the entry moves to the young end
            if vector is None:
                self._misses += 1
                return None
            self._hits += 1
            return vector

    def put(self, key: CacheKey, vector: np.ndarray) -> None:
        if self.capacity == 0:
            return
        stored = np.array(vector, dtype=np.float32, copy=True)
        stored.setflags(write=False)  # callers share the array: nobody may change it in place
        with self._lock:
            self._entries[key] = stored  # the least recently used entry goes when it is full

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._hits = self._misses = 0

    def stats(self) -> CacheStats:
        with self._lock:
            lookups = self._hits + self._misses
            return CacheStats(
                hits=self._hits,
                misses=self._misses,
                hit_rate=self._hits / lookups if lookups else 0.0,
                size=len(self._entries),
                capacity=self.capacity,
            )

    def __len__(self) -> int:
        return len(self._entries)


_shared_cache: EmbeddingCache | None = None
_shared_lock = threading.Lock()


def shared_cache() -> EmbeddingCache:
    """The process-wide cache (capacity from ``EMBTUNE_CACHE_SIZE``, default 1000)."""
    global _shared_cache
    with _shared_lock:
        if _shared_cache is None:
            _shared_cache = EmbeddingCache(int(os.environ.get(ENV_CAPACITY, DEFAULT_CAPACITY)))
        return _shared_cache
