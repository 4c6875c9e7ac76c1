"""Text embedder: a sentence-transformers model with cache, progress, cancel and Matryoshka.

Output is always L2-normalised float32, so inner product is cosine everywhere downstream
(FAISS indexes, evaluation, maps). With ``truncate_dim`` the vector is cut to its first
dimensions and normalised again, which is how a Matryoshka-trained model is meant to be used.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from core.embedders.base import Embedder, normalize_rows
from core.embedders.cache import EmbeddingCache
from core.errors import EmbtuneError

# Tensors with more elements than this are fingerprinted from an evenly spaced sample.
_FINGERPRINT_FULL_LIMIT = 1 << 20
_FINGERPRINT_SAMPLES = 1 << 14


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
                # float32 rounds the last sample past the end for tensors of ~2^24+ elements (a 250k vocabulary);
                # clamping keeps every fingerprint already recorded for smaller tensors as it was.
                index.clamp_(max=flat.numel() - 1)
                flat = flat[index]
            digest.update(flat.float().cpu().numpy().tobytes())
    return digest.hexdigest()


def embedding_dimension(model: Any) -> int:
    """The model's output size (sentence-transformers renamed the method in 6.x)."""
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter())


class TextEmbedder(Embedder):
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

    @property
    def prompts(self) -> dict[str, str]:
        """The sentence-transformers model's query/document prompts (``{}`` for a model without them)."""
        return {side: prompt for side, prompt in (getattr(self.model, "prompts", None) or {}).items()
                if side in ("query", "document") and prompt}

    def _run_texts(self, texts: list[str], prompt: str, batch_size: int) -> np.ndarray:
        raw = self.model.encode(texts, prompt=prompt or None, batch_size=batch_size, show_progress_bar=False,
                                convert_to_numpy=True, truncate_dim=self.truncate_dim)
        return normalize_rows(raw)

    def __repr__(self) -> str:
        dim = f", truncate_dim={self.truncate_dim}" if self.truncate_dim else ""
        backend = f", backend={self.backend!r}" if self.backend != "torch" else ""
        return f"TextEmbedder({self.model_id!r}, dimension={self.dimension}{dim}, device={self.device!r}{backend})"
