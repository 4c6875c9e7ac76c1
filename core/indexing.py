"""Named collections in a workspace: index a file, open, search, list.

The CLI and the studio both call these functions, so a collection built from either is the
same thing: a folder under ``<workspace>/collections/<name>`` (FAISS index + items, see
``core.index``) and a row with its items in the database. Everything is validated before
anything is written; the folder is committed first (atomically), then the database rows in
one transaction.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.data.formats import read_table
from core.data.validate import validate_items
from core.embedders import TextEmbedder, load_embedder
from core.errors import CollectionError, DimensionMismatchError
from core.index import Collection, Filter, SearchHit, check_k
from core.progress import CancelToken, ProgressCallback
from storage.db import Database
from storage.workspace import Workspace

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")


@dataclass(frozen=True)
class IndexReport:
    collection: str
    count: int
    dimension: int
    model_id: str
    model_spec: str
    index_kind: str
    index_factory: str
    path: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_collection_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise CollectionError(
            f"collection name {name!r} is not allowed: use letters, digits, '_', '-', '.' "
            "(at most 100, not starting with '.')"
        )
    return name


def index_file(
    file: str | Path,
    *,
    collection: str,
    text_column: str,
    workspace: Workspace,
    db: Database,
    id_column: str | None = None,
    model: str = "default",
    index_kind: str = "auto",
    device: str = "auto",
    fallback: bool = True,
    embedder: TextEmbedder | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    show_progress: bool | None = None,
) -> IndexReport:
    """Read, validate, embed and index a CSV/JSONL/Parquet file as a named collection."""
    started = time.perf_counter()
    check_collection_name(collection)
    frame = read_table(file)
    validate_items(frame, text_column=text_column, id_column=id_column, source=file)
    ids = frame[id_column].astype(str).str.strip().tolist() if id_column else [str(i + 1) for i in range(len(frame))]
    texts = frame[text_column].astype(str).str.strip().tolist()
    meta_columns = [c for c in frame.columns if c not in (text_column, id_column)]
    metadata = frame[meta_columns].to_dict(orient="records") if meta_columns else [{} for _ in ids]
    embedder = embedder or load_embedder(model, device=device, fallback=fallback)
    built = Collection.from_items(
        ids, texts, embedder, metadata=metadata, index_kind=index_kind, model_spec=embedder.spec,
        progress=progress, cancel=cancel, show_progress=show_progress,
    )
    folder = built.save(workspace.collection_dir(collection))
    stats = built.stats()
    db.save_collection(
        {
            "name": collection,
            "model_spec": embedder.spec,
            "model_fingerprint": embedder.fingerprint,
            "dimension": embedder.dimension,
            "index_kind": index_kind,
            "path": str(folder),
            "source": str(Path(file).resolve()),
        },
        ({"item_key": i, "text": t, "metadata_json": m} for i, t, m in zip(ids, texts, metadata, strict=False)),
    )
    return IndexReport(
        collection=collection, count=len(built), dimension=built.dimension, model_id=embedder.model_id,
        model_spec=embedder.spec, index_kind=index_kind, index_factory=stats["index_factory"], path=str(folder),
        seconds=time.perf_counter() - started,
    )


def open_collection(
    name: str,
    *,
    workspace: Workspace,
    db: Database,
    embedder: TextEmbedder | None = None,
    device: str = "auto",
    rebuild: bool = False,
) -> Collection:
    """Load a named collection with the model it was built with (or ``embedder``).

    A model whose weights changed since the index was built (or with another dimension)
    is refused with a message, unless ``rebuild`` re-embeds the stored texts and saves.
    """
    record = db.get_collection(name)
    if record is None:
        known = ", ".join(r.name for r in db.list_collections()) or "none yet: run `embtune index` first"
        raise CollectionError(f"collection {name!r} does not exist (collections: {known})")
    embedder = embedder or load_embedder(record.model_spec, device=device)
    collection = Collection.load(record.path)
    if embedder.fingerprint != collection.info.model_fingerprint or embedder.dimension != collection.dimension:
        if not rebuild:
            what = (f"{embedder.dimension}-d vectors, the index holds {collection.dimension}-d"
                    if embedder.dimension != collection.dimension else "different weights")
            raise DimensionMismatchError(
                f"collection {name!r} was built with {collection.info.model_id}; {embedder.model_id} gives {what}: "
                f"re-index it (or rebuild) before searching"
            )
        collection.rebuild_if_needed(embedder)
        collection.save(record.path)
        db.save_collection({"name": name, "model_spec": embedder.spec, "model_fingerprint": embedder.fingerprint,
                            "dimension": embedder.dimension},
                           ({"item_key": i["id"], "text": i["text"], "metadata_json": i["metadata"]}
                            for i in map(collection.item, collection.ids)))
    collection.embedder = embedder
    return collection


def search_collection(
    name: str,
    query: str,
    *,
    workspace: Workspace,
    db: Database,
    k: int = 5,
    filter: Filter | None = None,
) -> list[SearchHit]:
    check_k(k)
    if not query or not query.strip():
        raise CollectionError("the query is empty")
    return open_collection(name, workspace=workspace, db=db).search(query.strip(), k, filter=filter)


def describe_collections(db: Database) -> list[dict[str, Any]]:
    """One row per collection, as ``embtune collections`` and the studio list them."""
    return [
        {
            "name": r.name,
            "size": r.item_count,
            "model": r.model_spec,
            "dimension": r.dimension,
            "index_kind": r.index_kind,
            "updated": r.updated_at.isoformat(timespec="seconds") if r.updated_at else None,
            "path": r.path,
        }
        for r in db.list_collections()
    ]


def parse_filter(pairs: list[str] | None) -> Mapping[str, list[str]] | None:
    """``["category=tools", "category=paint"]`` → ``{"category": ["tools", "paint"]}``."""
    if not pairs:
        return None
    parsed: dict[str, list[str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CollectionError(f"filter {pair!r} must look like field=value")
        parsed.setdefault(key.strip(), []).append(value.strip())
    return parsed
