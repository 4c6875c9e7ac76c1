"""Embedders: one factory for every model kind, a shared cache, known models as data."""

from core.embedders.cache import CacheStats, EmbeddingCache, shared_cache
from core.embedders.clip import ClipEmbedder, save_clip_folder
from core.embedders.factory import Embedder, is_clip_spec, load_embedder, resolve_spec
from core.embedders.screen import ScreenEmbedder, is_screen_spec
from core.embedders.text import TextEmbedder

__all__ = ["CacheStats", "ClipEmbedder", "Embedder", "EmbeddingCache", "ScreenEmbedder", "TextEmbedder", "is_clip_spec",
           "is_screen_spec", "load_embedder", "resolve_spec", "save_clip_folder", "shared_cache"]
