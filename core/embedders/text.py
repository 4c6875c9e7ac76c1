"""Text embedder: a sentence-transformers model with cache, progress, cancel and Matryoshka.

Output is always L2-normalised float32, so inner product is cosine everywhere downstream
(FAISS indexes, evaluation, maps). With ``truncate_dim`` the vector is cut to its first
dimensions and normalised again, which is how a Matryoshka-trained model is meant to be used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.embedders.cache import CacheKey, EmbeddingCache, content_hash
from core.errors import EmbtuneError
from core.progress import CancelToken, ProgressCallback, ProgressReporter

# Inputs larger than this get a console bar when the caller did not say.
PROGRESS_BAR_MIN_ITEMS = 1000
# Texts are encoded in chunks so progress and cancel are checked between them; a chunk is
# large enough that the model's own length-sorted batching still pays off.
CHUNK_BATCHES = 16
# Tensors with more elements than this are fingerprinted from an evenly spaced sample.
_FINGERPRINT_FULL_LIMIT = 1 << 20
_FINGERPRINT_SAMPLES = 1 << 14


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """L2-normalise each row in place-safe fashion; zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    return vectors / norms


def weights_fingerprint(module: Any) -> str:
    """A hash of a torch module's architecture and weights.

    Small tensors are hashed whole; large ones through a fixed, evenly spaced sample plus
    shape and dtype. Any fine-tune moves nearly every weight, so the sample changes with it,
    while a 7B model is still fingerprinted in well under a second.
    """
    import torch

    digest = hashlib.sha256(repr(module).encode("utf-8"))
    with torch.no_grad():
        for name, tensor in sorted(module.state_dict().items()):
            flat = tensor.detach().reshape(-1)
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            if flat.numel() > _FINGERPRINT_FULL_LIMIT:
                index = torch.linspace(0, flat.numel() - 1, _FINGERPRINT_SAMPLES, device=flat.device).long()
                flat = flat[index]
            digest.update(flat.float().cpu().numpy().tobytes())
    return digest.hexdigest()


def embedding_dimension(model: Any) -> int:
    """The model's output size (sentence-transformers renamed the method in 6.x)."""
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter())


def text_items(texts: str | Sequence[str]) -> tuple[bool, list[str]]:
    """(was it one text, the texts as a list): every embedder takes one text or many, and refuses a
    non-string with its position rather than failing deep inside a tokenizer."""
    single = isinstance(texts, str)
    items = [texts] if single else list(texts)
    for position, text in enumerate(items):
        if not isinstance(text, str):
            raise EmbtuneError(f"text #{position} is {type(text).__name__}, not a string")
    return single, items


class TextEmbedder:
    """Wraps a ``SentenceTransformer``; create it with ``core.embedders.load_embedder``."""

    modality = "text"

    def __init__(
        self,
        model: Any,
        *,
        model_id: str,
        spec: str,
        truncate_dim: int | None = None,
        cache: EmbeddingCache | None = None,
        batch_size: int = 64,
        requested_spec: str | None = None,
        backend: str = "torch",
        model_file: Path | None = None,
    ) -> None:
        full = int(embedding_dimension(model))
        if truncate_dim is not None and not 0 < truncate_dim <= full:
            raise EmbtuneError(
                f"truncate_dim {truncate_dim} is not possible for {model_id}: choose 1..{full} (its dimension)"
            )
        self.model = model
        self.model_id = model_id
        self.spec = spec
        self.requested_spec = requested_spec or spec
        self.truncate_dim = truncate_dim
        self.full_dimension = full
        self.cache = cache
        self.batch_size = batch_size
        # Which sentence-transformers backend runs the model, and the exported file it runs (None for torch).
        self.backend = backend
        self.model_file = model_file
        self._fingerprint: str | None = None

    @property
    def fell_back(self) -> bool:
        """True when the requested model could not load and the fallback stands in for it."""
        return self.requested_spec != self.spec

    @property
    def dimension(self) -> int:
        return self.truncate_dim or self.full_dimension

    @property
    def device(self) -> str:
        return str(self.model.device)

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            if self.model_file is not None:  # ONNX/OpenVINO weights are not torch tensors: hash the exported files
                from core.embedders.backends import files_fingerprint

                self._fingerprint = files_fingerprint(self.backend, self.model_file)
            else:
                self._fingerprint = weights_fingerprint(self.model)
        return self._fingerprint

    def with_truncate_dim(self, truncate_dim: int | None) -> TextEmbedder:
        """The same loaded model, giving vectors cut to ``truncate_dim`` (shares weights and cache)."""
        twin = TextEmbedder(
            self.model, model_id=self.model_id, spec=self.spec, truncate_dim=truncate_dim,
            cache=self.cache, batch_size=self.batch_size, requested_spec=self.requested_spec,
            backend=self.backend, model_file=self.model_file,
        )
        twin._fingerprint = self._fingerprint
        return twin

    def encode(
        self,
        texts: str | Sequence[str],
        *,
        batch_size: int | None = None,
        show_progress: bool | None = None,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> np.ndarray:
        """Embed texts → (n, dimension) float32, rows L2-normalised; cached texts skip the model."""
        single, items = text_items(texts)
        output = np.empty((len(items), self.dimension), dtype=np.float32)
        keys = self._cache_keys(items)
        missing = self._fill_from_cache(keys, output) if keys else list(range(len(items)))
        if missing:
            self._encode_missing(items, keys, missing, output, batch_size or self.batch_size,
                                 show_progress, progress, cancel)
        return output[0] if single else output

    def _cache_keys(self, items: list[str]) -> list[CacheKey]:
        """One key per text, or none at all when caching is off."""
        if self.cache is None or self.cache.capacity == 0:
            return []
        fingerprint, truncate_dim = self.fingerprint, self.truncate_dim
        return [(fingerprint, truncate_dim, content_hash(text)) for text in items]

    def _fill_from_cache(self, keys: list[CacheKey], output: np.ndarray) -> list[int]:
        missing = []
        for position, key in enumerate(keys):
            vector = self.cache.get(key)
            if vector is None:
                missing.append(position)
            else:
                output[position] = vector
        return missing

    def _encode_missing(
        self,
        items: list[str],
        keys: list[CacheKey],
        missing: list[int],
        output: np.ndarray,
        batch_size: int,
        show_progress: bool | None,
        progress: ProgressCallback | None,
        cancel: CancelToken | None,
    ) -> None:
        # Sort by length across the whole input (not only inside one chunk) so padding stays low.
        order = sorted(missing, key=lambda position: -len(items[position]))
        chunk = batch_size * CHUNK_BATCHES
        show_bar = len(order) >= PROGRESS_BAR_MIN_ITEMS if show_progress is None else show_progress
        with ProgressReporter("encode", len(order), callback=progress, cancel=cancel, show_bar=show_bar,
                              unit="text") as reporter:
            for start in range(0, len(order), chunk):
                positions = order[start:start + chunk]
                raw = self.model.encode(
                    [items[p] for p in positions],
                    batch_size=batch_size,
                    show_progress_bar=False,
                    convert_to_numpy=True,
                    truncate_dim=self.truncate_dim,
                )
                vectors = normalize_rows(raw)
                output[positions] = vectors
                if keys:
                    for position, vector in zip(positions, vectors, strict=False):
                        self.cache.put(keys[position], vector)
                reporter.advance(len(positions))

    def __repr__(self) -> str:
        dim = f", truncate_dim={self.truncate_dim}" if self.truncate_dim else ""
        backend = f", backend={self.backend!r}" if self.backend != "torch" else ""
        return f"TextEmbedder({self.model_id!r}, dimension={self.dimension}{dim}, device={self.device!r}{backend})"
