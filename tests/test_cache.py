"""The embedding cache: LRU order, statistics, thread safety."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from core.embedders.cache import EmbeddingCache, content_hash


def key(text: str) -> tuple[str, None, str]:
    return ("model-fingerprint", None, content_hash(text))


def test_cache_evicts_least_recently_used_entry() -> None:
    cache = EmbeddingCache(capacity=2)
    cache.put(key("a"), np.ones(3))
    cache.put(key("b"), np.ones(3) * 2)
    assert cache.get(key("a")) is not None  # "a" is now the most recent
    cache.put(key("c"), np.ones(3) * 3)
    assert cache.get(key("b")) is None
    assert cache.get(key("a")) is not None and cache.get(key("c")) is not None
    assert len(cache) == 2


def test_cache_stats_count_hits_and_misses() -> None:
    cache = EmbeddingCache(capacity=10)
    cache.put(key("a"), np.zeros(2))
    cache.get(key("a"))
    cache.get(key("a"))
    cache.get(key("missing"))
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.size, stats.capacity) == (2, 1, 1, 10)
    assert stats.hit_rate == pytest.approx(2 / 3)
    assert stats.to_dict()["hit_rate"] == pytest.approx(2 / 3)


def test_cached_vectors_cannot_be_changed_by_callers() -> None:
    cache = EmbeddingCache()
    source = np.ones(3, dtype=np.float32)
    cache.put(key("a"), source)
    source[0] = 5  # the caller's array is not the stored one
    stored = cache.get(key("a"))
    assert stored[0] == 1
    with pytest.raises(ValueError):
        stored[0] = 7


def test_cache_with_zero_capacity_stores_nothing() -> None:
    cache = EmbeddingCache(capacity=0)
    cache.put(key("a"), np.ones(2))
    assert cache.get(key("a")) is None and len(cache) == 0


def test_cache_key_separates_models_and_dimensions() -> None:
    cache = EmbeddingCache()
    cache.put(("base", None, content_hash("x")), np.ones(2))
    assert cache.get(("tuned", None, content_hash("x"))) is None
    assert cache.get(("base", 64, content_hash("x"))) is None


def test_cache_is_consistent_under_concurrent_use() -> None:
    cache = EmbeddingCache(capacity=50)
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            for i in range(2000):
                text = f"t{(i + offset) % 120}"
                value = cache.get(key(text))
                if value is None:
                    cache.put(key(text), np.full(4, (i + offset) % 120, dtype=np.float32))
                else:
                    assert value[0] == int(text[1:])
        except BaseException as exc:  # collected for the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n * 7,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    stats = cache.stats()
    assert stats.size <= 50
    assert stats.hits + stats.misses == 8 * 2000


def test_ocr_cache_keeps_the_recently_used_readings_in_memory_and_every_reading_on_disk(tmp_path) -> None:
    from core.screens.ocr import OcrCache, OcrResult

    cache = OcrCache(tmp_path, capacity=2)
    for name in ("a", "b"):
        cache.put(name * 8, OcrResult(width=len(name)))
    assert cache.get("a" * 8) is not None  # "a" is now the most recent: "b" goes when "c" comes
    cache.put("c" * 8, OcrResult(width=3))
    assert cache.stats()["size"] == 2
    assert cache.get("b" * 8).width == 1 and cache.stats()["disk_hits"] == 1  # read back from its file
    assert cache.get("c" * 8).width == 3 and cache.stats()["memory_hits"] == 2
    assert cache.get("missing1") is None and cache.stats()["misses"] == 1
