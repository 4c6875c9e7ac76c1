"""Embedders: one factory for every model kind, a shared cache, known models as data."""

from core.embedders.cache import CacheStats, EmbeddingCache, shared_cache
from core.embedders.factory import load_embedder, resolve_spec
from core.embedders.text import TextEmbedder

__all__ = ["CacheStats", "EmbeddingCache", "TextEmbedder", "load_embedder", "resolve_spec", "shared_cache"]
