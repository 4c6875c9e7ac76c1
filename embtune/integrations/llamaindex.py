"""LlamaIndex adapter: a ``BaseEmbedding`` over any embtune model.

``EmbtuneEmbedding(model_name="run:NAME")`` gives a ``VectorStoreIndex`` (or any LlamaIndex
component that embeds) the model a training run produced, by the same name the CLI uses.

Install with ``pip install 'embtune[llamaindex]'``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from core.embedders import TextEmbedder
from embtune.integrations.base import load_model, missing_extra

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from pydantic import Field, PrivateAttr
except ImportError as exc:
    raise missing_extra(__name__, "llamaindex", "LlamaIndex (llama-index-core)", exc) from exc

__all__ = ["EmbtuneEmbedding"]


class EmbtuneEmbedding(BaseEmbedding):
    """LlamaIndex embeddings from an embtune model: ``default``, a folder, a hub id or ``run:NAME``.

    The model is loaded once per instance, when it is made. Vectors are L2-normalised, so
    LlamaIndex's cosine similarity ranks exactly as ``embtune search`` does.
    """

    model_name: str = Field(default="default", description="embtune model spec, or run:NAME for a training run")
    # LlamaIndex's default of 10 texts per call suits remote APIs; a local model wants larger batches.
    embed_batch_size: int = Field(default=64, gt=0, le=2048)
    workspace: str | Path | None = Field(default=None, description="workspace folder for run:NAME")
    db_url: str | None = Field(default=None, description="database URL for run:NAME")
    device: str = "auto"
    truncate_dim: int | None = Field(default=None, description="cut vectors to their first dimensions")
    fallback: bool = Field(default=False, description="use the bundled model when a hub id cannot load")

    _embedder: TextEmbedder = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._embedder = load_model(
            self.model_name, workspace=self.workspace, db_url=self.db_url, device=self.device,
            truncate_dim=self.truncate_dim, batch_size=self.embed_batch_size, fallback=self.fallback,
        )

    @classmethod
    def class_name(cls) -> str:
        return "EmbtuneEmbedding"

    @property
    def embedder(self) -> TextEmbedder:
        """The loaded embtune embedder (its ``dimension``, ``model_id``, ``fingerprint``)."""
        return self._embedder

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embedder.encode_query(query).tolist()

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embedder.encode_document(text).tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        # One encode call for the whole batch, not one per text as the base class would do.
        if not texts:
            return []
        return self._embedder.encode_document(list(texts)).tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        # Encoding blocks; a worker thread keeps the event loop free for other requests.
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
