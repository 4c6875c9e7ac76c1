"""The named-collection catalogue: what a collection name may be, the one writer a collection has at a time,
the one commit both indexing paths (single process, ``core.collection.named``; Ray, ``core.collection.ray_index``)
make when an index is saved, and the check that a collection's database row and its folder agree.

The protocol that keeps them agreeing, whatever fails or is killed:

1. A writer holds the collection's lock (``collection_lock``): a second writer waits or is refused.
2. It *stages* the new generation's files in the folder (``core.collection.disk``): readers still see the old one.
3. It commits the database row (model, fingerprint, dimension, index kind, folder, source, the staged generation's
   number) and the items in one transaction. If that fails (a locked or full database), the staged files are
   discarded and the old collection is exactly as it was.
4. It *publishes* the staged generation (the folder's manifest switches to it, the old files go).

A process killed between 3 and 4 leaves a row naming a staged generation whose files are complete: opening the
collection (``recorded_collection``) rolls the folder forward to it. A row and a folder that disagree any other
way (a database restored from a backup, a folder changed by hand, a row written before generations were recorded)
are repaired from the folder's complete generation, with a warning. Living below both indexing paths, this module
is what keeps them from importing each other.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from core.collection.disk import discard, publish, read_manifest, staged_generation
from core.collection.memory import Collection
from core.errors import CollectionError, EmbtuneWarning, StorageError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
# Beside the collection folders; a collection name cannot start with '.', so no collection is ever called this.
LOCKS_FOLDER = ".locks"


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


@contextlib.contextmanager
def collection_lock(workspace: Any, name: str, *, wait: bool = True,
                    notice: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold collection ``name``'s writer lock (a file lock in the workspace, so processes take turns).

    Held by another process: ``wait`` says so through ``notice`` and waits for it; otherwise one error line.
    """
    folder = workspace.collections_dir / LOCKS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    lock, owner = FileLock(str(folder / f"{name}.lock")), folder / f"{name}.owner"
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = _read_owner(owner)
        busy = f"collection {name!r} is being written by another process" + (f" (pid {holder})" if holder else "")
        if not wait:
            raise CollectionError(f"{busy}: try again when it has finished, or wait for it with --wait") from None
        if notice is not None:
            notice(f"{busy}; waiting…")
        lock.acquire()
    try:
        owner.write_text(str(os.getpid()), encoding="utf-8")
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


def _read_owner(owner: Path) -> str | None:
    try:
        text = owner.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text if text.isdigit() else None


def commit_collection(db: Any, *, name: str, embedder: Any, index_kind: str, folder: str | Path, generation: int,
                      source: str | Path | None, items: Iterable[Mapping[str, Any]]) -> None:
    """Record the staged ``generation`` of ``folder`` as collection ``name`` with its items (``item_key``, ``text``,
    ``metadata_json``), then publish it. The caller holds the collection's lock.

    The row and the items change together, before the folder does: when the database refuses, the staged files
    are removed and the collection stays as it was.
    """
    folder = Path(folder)
    try:
        db.save_collection(
            {"name": name, "model_spec": embedder.spec, "model_fingerprint": embedder.fingerprint,
             "dimension": embedder.dimension, "index_kind": index_kind, "path": str(folder),
             "generation": generation, "source": str(Path(source).resolve()) if source else None},
            items,
        )
    except BaseException as exc:
        discard(folder, generation)
        if isinstance(exc, StorageError):
            raise StorageError(f"collection {name!r} is unchanged: {exc}") from None
        raise
    publish(folder, generation)


def recorded_collection(record: Any, *, db: Any, workspace: Any) -> Collection:
    """Load the collection a database row describes, after making the row and its folder agree (see above)."""
    folder = Path(record.path)
    current = _manifest_generation(folder)
    if record.generation is not None and record.generation != current:
        record = db.get_collection(record.name) or record  # a writer may have published since the row was read
        current = _manifest_generation(folder)
    if record.generation is None and current is not None:
        if read_manifest(folder)["count"] == record.item_count:
            return Collection.load(folder)
    elif record.generation == current:
        return Collection.load(folder)
    elif staged_generation(folder, record.generation):  # killed between the row's commit and the folder's switch
        with contextlib.suppress(CollectionError), collection_lock(workspace, record.name, wait=False):
            if staged_generation(folder, record.generation):
                publish(folder, record.generation)
        return Collection.load(folder, generation=record.generation)
    return _repaired_from_folder(record, db=db, workspace=workspace)


def _manifest_generation(folder: Path) -> int | None:
    try:
        return int(read_manifest(folder)["generation"])
    except (CollectionError, KeyError, TypeError, ValueError):
        return None


def _repaired_from_folder(record: Any, *, db: Any, workspace: Any) -> Collection:
    """The row rewritten from the folder's complete generation; a folder without one is an error naming the fix."""
    name, folder = record.name, Path(record.path)
    how = f"index it again (embtune index {record.source or 'FILE'} --collection {name} ...) or remove it " \
          f"(embtune delete {name})"
    with collection_lock(workspace, name, wait=False):
        try:
            collection = Collection.load(folder)
        except CollectionError as exc:
            raise CollectionError(f"collection {name!r} disagrees with its folder {folder}, which holds no complete "
                                  f"index to repair it from ({exc}): {how}") from None
        info = collection.info
        db.save_collection({"name": name, "model_spec": info.model_spec or record.model_spec,
                            "model_fingerprint": info.model_fingerprint or record.model_fingerprint,
                            "dimension": info.dimension, "index_kind": info.index_kind, "path": str(folder),
                            "generation": info.generation},
                           ({"item_key": i["id"], "text": i["text"], "metadata_json": i["metadata"]}
                            for i in map(collection.item, collection.ids)))
    warnings.warn(EmbtuneWarning(
        f"collection {name!r}: the database described {record.item_count} items (generation {record.generation}), "
        f"its folder holds {len(collection)} (generation {info.generation}); the database was repaired from the "
        "folder"), stacklevel=2)
    return collection
