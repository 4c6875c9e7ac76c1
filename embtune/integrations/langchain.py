"""LangChain adapters: an ``Embeddings`` over any embtune model and a retriever over a collection.

``EmbtuneEmbeddings`` lets any LangChain vector store use a model embtune fine-tuned
(``model_name="run:NAME"``) or any other spec the CLI accepts. ``EmbtuneRetriever`` serves an
existing embtune collection as LangChain ``Document``s, so a collection built and evaluated
with the CLI or the studio drops into a chain without being re-indexed elsewhere.

Install with ``pip install 'embtune[langchain]'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.collection import Collection, Filter, SearchHit, check_k
from core.embedders import TextEmbedder
from core.errors import CollectionError
from embtune.integrations.base import load_model, missing_extra

try:
    from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.runnables.config import run_in_executor
    from pydantic import BaseModel, ConfigDict, PrivateAttr
except ImportError as exc:
    raise missing_extra(__name__, "langchain", "LangChain (langchain-core)", exc) from exc

__all__ = ["EmbtuneEmbeddings", "EmbtuneRetriever"]


class EmbtuneEmbeddings(BaseModel, Embeddings):
    """LangChain embeddings from an embtune model: ``default``, a folder, a hub id or ``run:NAME``.

    The model is loaded once, when the instance is made, so a wrong name fails at once rather
    than at the first query; vectors are L2-normalised, so a store's cosine and inner product agree.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_name: str = "default"
    """A model spec as the CLI takes it; ``run:NAME`` is looked up in the workspace's database."""
    workspace: str | Path | None = None
    """Workspace folder for ``run:NAME`` (default: ``EMBTUNE_HOME`` or ``~/.embtune``)."""
    db_url: str | None = None
    """Database URL for ``run:NAME`` (default: ``EMBTUNE_DB`` or the workspace's SQLite file)."""
    device: str = "auto"
    truncate_dim: int | None = None
    """Cut vectors to their first dimensions (for Matryoshka-trained models)."""
    batch_size: int = 64
    fallback: bool = False
    """Use the bundled model when a hub id cannot load (off: see ``base.load_model``)."""

    _embedder: TextEmbedder = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        self._embedder = load_model(
            self.model_name, workspace=self.workspace, db_url=self.db_url, device=self.device,
            truncate_dim=self.truncate_dim, batch_size=self.batch_size, fallback=self.fallback,
        )

    @property
    def embedder(self) -> TextEmbedder:
        """The loaded embtune embedder (its ``dimension``, ``model_id``, ``fingerprint``)."""
        return self._embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order."""
        if not texts:
            return []
        return self._embedder.encode_document(list(texts)).tolist()

    def embed_query(self, text: str) -> list[float]:
        """The query's vector: the model's query prompt applied (documents get the document prompt)."""
        return self._embedder.encode_query(text).tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """``embed_documents`` in a worker thread: encoding is blocking CPU/GPU work."""
        return await run_in_executor(None, self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        """``embed_query`` in a worker thread, so the event loop keeps serving other requests."""
        return await run_in_executor(None, self.embed_query, text)


class EmbtuneRetriever(BaseRetriever):
    """Search an embtune collection from LangChain; each hit becomes a ``Document``.

    Give ``collection`` as a name (opened from ``workspace``/``db_url`` with the model it was
    built with) or as an already opened ``Collection`` that has its embedder. ``page_content``
    is the item's text; ``metadata`` holds the item's own metadata plus ``id`` and ``score``
    (cosine), which win over item fields of the same name. ``k`` and ``filter`` set at
    construction can be changed per call: ``retriever.invoke("query", k=3)``.
    """

    collection: str | Collection
    workspace: str | Path | None = None
    db_url: str | None = None
    device: str = "auto"
    k: int = 4
    filter: Filter | None = None
    """Metadata filter: ``{"category": ["tools", "paint"]}`` or a callable on the metadata dict."""

    _collection: Collection = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        check_k(self.k)
        if isinstance(self.collection, Collection):
            if self.collection.embedder is None:
                raise CollectionError(
                    "the collection has no embedder: open it with core.collection.named.open_collection "
                    "or pass its name"
                )
            self._collection = self.collection
            return
        from core.collection.named import open_collection
        from storage.db import Database
        from storage.workspace import Workspace

        workspace = Workspace.open(self.workspace)
        self._collection = open_collection(
            self.collection, workspace=workspace, db=Database(workspace.db_url(self.db_url)), device=self.device
        )

    def _search(self, query: str, k: int | None, filter: Filter | None) -> list[Document]:
        k = self.k if k is None else k
        check_k(k)
        if not query or not query.strip():
            raise CollectionError("the query is empty")
        hits = self._collection.search(query.strip(), k, filter=self.filter if filter is None else filter)
        return [_document(hit) for hit in hits]

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        filter: Filter | None = None,
    ) -> list[Document]:
        # Naming k and filter here is what makes BaseRetriever.invoke pass them through
        # (it forwards extra keyword arguments only to methods that declare some).
        return self._search(query, k, filter)

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
        filter: Filter | None = None,
    ) -> list[Document]:
        # The base class's async form drops k and filter, so it is replaced, not inherited.
        return await run_in_executor(None, self._search, query, k, filter)


def _document(hit: SearchHit) -> Document:
    return Document(
        page_content=hit.text or "",
        metadata={**hit.metadata, "id": hit.id, "score": float(hit.score)},
        id=hit.id,
    )
