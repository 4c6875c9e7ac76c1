"""The named-collection catalogue: what a collection name may be, and the one commit both indexing
paths (single process, ``core.collection.named``; Ray, ``core.collection.ray_index``) make when an index is saved.

Both paths build and save an index folder their own way, then commit it here: the database row
(model, fingerprint, dimension, index kind, folder, source) and the items, in one transaction,
returning the same report. Living below both, it is what keeps them from importing each other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.errors import CollectionError

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
    modality: str = "text"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_collection_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise CollectionError(
            f"collection name {name!r} is not allowed: use letters, digits, '_', '-', '.' "
            "(at most 100, not starting with '.')"
        )
    return name


def commit_collection(db: Any, *, name: str, embedder: Any, index_kind: str, folder: str | Path,
                      source: str | Path, items: Iterable[Mapping[str, Any]]) -> None:
    """Record a saved index folder as collection ``name`` with its items (``item_key``, ``text``,
    ``metadata_json``); the row and the items change together."""
    db.save_collection(
        {"name": name, "model_spec": embedder.spec, "model_fingerprint": embedder.fingerprint,
         "dimension": embedder.dimension, "index_kind": index_kind, "path": str(folder),
         "source": str(Path(source).resolve())},
        items,
    )
