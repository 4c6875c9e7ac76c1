"""Named collections in a workspace: index a file, open, search, list.

The CLI and the studio both call these functions, so a collection built from either is the
same thing: a folder under ``<workspace>/collections/<name>`` (FAISS index + items, see
``core.collection``) and a row with its items in the database. Everything is validated before
anything is written; one writer at a time stages the folder's new generation, commits the database
rows, then switches the folder (``core.collection.catalogue``), so the two never disagree.

An *image collection* is indexed from a table with an image column (paths relative to the
table's folder) and a ``clip:`` model. Each item keeps the image's absolute path in its
metadata under ``IMAGE_PATH_FIELD``, the other columns (e.g. ``workflow_id``) as metadata,
and as text the text column (or the path as written). It is searched by text (through the
model's text tower) or by image (``search_collection(..., image=...)``).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from core.collection import Collection, Filter, SearchHit, check_k, read_manifest, resolve_index_kind
from core.collection.catalogue import (
    IndexReport,
    check_collection_name,
    collection_lock,
    commit_collection,
    recorded_collection,
)
from core.collection.ray_index import index_with_ray
from core.data.bundled import CATALOGUE_PRODUCTS
from core.data.formats import read_table
from core.data.validate import require_columns, validate_items
from core.embedders import Embedder, is_clip_spec, is_screen_spec, load_embedder
from core.embedders.backends import backend_spec, split_backend_spec
from core.embedders.registry import DEFAULT_MODEL, known_model_by_id
from core.errors import CollectionError, DataError, DimensionMismatchError, ImageError
from core.images import ImageInput, check_image_files
from core.progress import CancelToken, ProgressCallback
from storage.db import Database
from storage.workspace import Workspace

# Metadata key under which an image collection keeps each item's absolute image path.
IMAGE_PATH_FIELD = "image_path"


def index_file(
    file: str | Path,
    *,
    collection: str,
    text_column: str | None = None,
    workspace: Workspace,
    db: Database,
    id_column: str | None = None,
    image_column: str | None = None,
    model: str = "default",
    index_kind: str = "auto",
    device: str = "auto",
    fallback: bool = True,
    embedder: Embedder | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    show_progress: bool | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    workers: int | None = None,
    wait: bool = True,
    notice: Callable[[str], None] | None = None,
) -> IndexReport:
    """Read, validate, embed and index a CSV/JSONL/Parquet file as a named collection.

    With ``image_column`` the images are embedded (the model must be a ``clip:`` model);
    otherwise ``text_column`` is. ``engine="ray"`` embeds a file or a folder of shards on Ray
    (``core.collection.ray_index``; ``ray_address`` names a cluster, ``workers`` the actors) with the same result.
    Another process writing the collection is waited for (said through ``notice``), or refused when not ``wait``.
    """
    started = time.perf_counter()
    check_collection_name(collection)
    if engine not in ("local", "ray"):
        raise DataError(f"engine {engine!r} is not known: use local or ray")
    if engine == "ray":
        if image_column:
            raise DataError("--engine ray embeds text columns; index images with the local engine")
        return index_with_ray(file, collection=collection, text_column=text_column, id_column=id_column,
                              workspace=workspace, db=db, model=model, index_kind=index_kind,
                              device="cpu" if device == "auto" else device, fallback=fallback,
                              ray_address=ray_address, workers=workers, embedder=embedder, progress=progress,
                              cancel=cancel, show_progress=show_progress, wait=wait, notice=notice)
    if Path(file).is_dir():
        raise DataError(f"{file}: is a folder: index a folder of shards with --engine ray, or give one file")
    if image_column is None and text_column is None:
        raise DataError("say what to embed: a text column (--text-column) or an image column (--image-column)")
    frame = read_table(file)
    validate_items(frame, text_column=image_column or text_column, id_column=id_column, source=file)
    if image_column and text_column:
        require_columns(frame, [text_column], file)
    with collection_lock(workspace, collection, wait=wait, notice=notice):
        return _index_frame(frame, file, collection=collection, text_column=text_column, id_column=id_column,
                            image_column=image_column, workspace=workspace, db=db, model=model, index_kind=index_kind,
                            device=device, fallback=fallback, embedder=embedder, progress=progress, cancel=cancel,
                            show_progress=show_progress, started=started)


def _index_frame(frame: Any, file: str | Path, *, collection: str, text_column: str | None, id_column: str | None,
                 image_column: str | None, workspace: Workspace, db: Database, model: str, index_kind: str,
                 device: str, fallback: bool, embedder: Embedder | None, progress: ProgressCallback | None,
                 cancel: CancelToken | None, show_progress: bool | None, started: float) -> IndexReport:
    """Embed a validated table and commit it as ``collection`` (the caller holds the collection's lock)."""
    ids = frame[id_column].astype(str).str.strip().tolist() if id_column else [str(i + 1) for i in range(len(frame))]
    texts = frame[text_column].fillna("").astype(str).str.strip().tolist() if text_column else None
    meta_columns = [c for c in frame.columns if c not in (text_column, id_column, image_column)]
    metadata = frame[meta_columns].to_dict(orient="records") if meta_columns else [{} for _ in ids]
    if image_column:
        written = frame[image_column].astype(str).str.strip().tolist()
        paths = _image_paths(written, Path(file), image_column)
        embedder = embedder or load_embedder(model, device=device, fallback=fallback)
        if not hasattr(embedder, "encode_images"):
            raise DataError(f"--image-column needs an image model, and {embedder.model_id} is a text model: "
                            "use --model screen:default (OCR + the bundled text model, offline), "
                            "clip:ARCH/TAG or clip:/path/to/open_clip/folder")
        resolve_index_kind(index_kind, len(ids), embedder.dimension)  # a wrong kind fails before embedding
        try:
            vectors = embedder.encode_images(paths, progress=progress, cancel=cancel, show_progress=show_progress)
        except ImageError as exc:
            where = f"{file}: row {exc.position + 1}: " if exc.position is not None else f"{file}: "
            raise ImageError(where + str(exc), position=exc.position) from None
        texts = [text or path for text, path in zip(texts or written, written, strict=True)]
        metadata = [{**meta, IMAGE_PATH_FIELD: str(path)} for meta, path in zip(metadata, paths, strict=True)]
        built = Collection(embedder.dimension, index_kind=index_kind, embedder=embedder, model_spec=embedder.spec)
        built.add(ids, vectors, texts=texts, metadata=metadata)
    else:
        embedder = embedder or load_embedder(model, device=device, fallback=fallback)
        resolve_index_kind(index_kind, len(ids), embedder.dimension)  # a wrong kind fails before embedding
        built = Collection.from_items(
            ids, texts, embedder, metadata=metadata, index_kind=index_kind, model_spec=embedder.spec,
            progress=progress, cancel=cancel, show_progress=show_progress,
        )
    folder = built.save(workspace.collection_dir(collection), publish_now=False)
    commit_collection(db, name=collection, embedder=embedder, index_kind=index_kind, folder=folder,
                      generation=built.info.generation, source=file,
                      items=({"item_key": i, "text": t, "metadata_json": m}
                             for i, t, m in zip(ids, texts, metadata, strict=False)))
    stats = built.stats()
    return IndexReport(
        collection=collection, count=len(built), dimension=built.dimension, model_id=embedder.model_id,
        model_spec=embedder.spec, index_kind=index_kind, index_factory=stats["index_factory"], path=str(folder),
        seconds=time.perf_counter() - started, modality="image" if image_column else "text",
    )


def append_file(
    file: str | Path,
    *,
    collection: str,
    text_column: str,
    workspace: Workspace,
    db: Database,
    id_column: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    show_progress: bool | None = None,
    wait: bool = True,
    notice: Callable[[str], None] | None = None,
) -> IndexReport:
    """Add a file's rows to an existing text collection, embedded with the model the collection was built
    with (its vectors stay comparable); an id already in the collection is refused before anything is
    embedded. Without an id column the new rows are numbered after the existing ones."""
    started = time.perf_counter()
    existing = open_collection(collection, workspace=workspace, db=db)
    record = collection_record(collection, db)
    if is_clip_spec(record.model_spec) or is_screen_spec(record.model_spec):
        raise CollectionError(f"collection {collection!r} holds images: index the images again to add some")
    frame = read_table(file)
    validate_items(frame, text_column=text_column, id_column=id_column, source=file)
    start = len(existing)
    ids = frame[id_column].astype(str).str.strip().tolist() if id_column else \
        [str(start + i + 1) for i in range(len(frame))]
    taken = [(row, item_id) for row, item_id in enumerate(ids) if item_id in existing]
    if taken:
        row, item_id = taken[0]
        raise CollectionError(f"{file}: row {row + 1}: id {item_id!r} is already in collection {collection!r} "
                              f"({len(taken)} such rows): replace the collection instead, or give new ids")
    texts = frame[text_column].fillna("").astype(str).str.strip().tolist()
    meta_columns = [c for c in frame.columns if c not in (text_column, id_column)]
    metadata = frame[meta_columns].to_dict(orient="records") if meta_columns else [{} for _ in ids]
    vectors = existing.embedder.encode_document(texts, progress=progress, cancel=cancel, show_progress=show_progress)
    with collection_lock(workspace, collection, wait=wait, notice=notice):
        if collection_record(collection, db).generation != record.generation:
            raise CollectionError(f"collection {collection!r} changed while these rows were embedded: add them "
                                  "again")
        existing.add(ids, vectors, texts=texts, metadata=metadata)
        folder = existing.save(record.path, publish_now=False)
        commit_collection(db, name=collection, embedder=existing.embedder, index_kind=record.index_kind,
                          folder=folder, generation=existing.info.generation, source=record.source or file,
                          items=({"item_key": item["id"], "text": item["text"], "metadata_json": item["metadata"]}
                                 for item in map(existing.item, existing.ids)))
    return IndexReport(
        collection=collection, count=len(ids), dimension=existing.dimension, model_id=existing.embedder.model_id,
        model_spec=existing.embedder.spec, index_kind=record.index_kind,
        index_factory=existing.stats()["index_factory"], path=str(folder), seconds=time.perf_counter() - started)


def _image_paths(written: list[str], file: Path, column: str) -> list[Path]:
    """Image paths as written in the table, resolved against the table's folder; all must exist."""
    base = file.resolve().parent
    paths = [(base / Path(value).expanduser()).resolve() for value in written]
    check_image_files(paths, labels=[f"{file}: row {row + 1} (column {column!r})" for row in range(len(paths))])
    return paths


def collection_record(name: str, db: Database) -> Any:
    """The database row of a named collection; a missing name lists the ones there are."""
    record = db.get_collection(name)
    if record is None:
        known = ", ".join(r.name for r in db.list_collections()) or "none yet: run `embtune index` first"
        raise CollectionError(f"collection {name!r} does not exist (collections: {known})")
    return record


def open_collection(
    name: str,
    *,
    workspace: Workspace,
    db: Database,
    embedder: Embedder | None = None,
    device: str = "auto",
    rebuild: bool = False,
) -> Collection:
    """Load a named collection with the model it was built with (or ``embedder``).

    A model whose weights changed since the index was built (or with another dimension)
    is refused with a message, unless ``rebuild`` re-embeds the stored texts and saves.
    """
    record = collection_record(name, db)
    collection = recorded_collection(record, db=db, workspace=workspace)
    embedder = embedder or load_embedder(recorded_model_spec(record.model_spec, collection.info.model_id),
                                         device=device)
    if embedder.fingerprint != collection.info.model_fingerprint or embedder.dimension != collection.dimension:
        if rebuild and (is_clip_spec(record.model_spec) or is_screen_spec(record.model_spec)):
            raise CollectionError(f"collection {name!r} holds images, which cannot be re-embedded from stored text: "
                                  f"index its file again with the new model")
        if not rebuild:
            what = (f"{embedder.dimension}-d vectors, the index holds {collection.dimension}-d"
                    if embedder.dimension != collection.dimension else "different weights")
            raise DimensionMismatchError(
                f"collection {name!r} was built with {collection.info.model_id}; {embedder.model_id} gives {what}: "
                f"re-index it (or rebuild) before searching"
            )
        collection.rebuild_if_needed(embedder)
        with collection_lock(workspace, name):
            collection.save(record.path, publish_now=False)
            commit_collection(db, name=name, embedder=embedder, index_kind=record.index_kind, folder=record.path,
                              generation=collection.info.generation, source=record.source,
                              items=({"item_key": i["id"], "text": i["text"], "metadata_json": i["metadata"]}
                                     for i in map(collection.item, collection.ids)))
    collection.embedder = embedder
    return collection


def recorded_model_spec(model_spec: str, model_id: str) -> str:
    """The spec that loads the model a collection was built with.

    ``default`` named all-MiniLM-L6-v2 before the multilingual default; a collection built then keeps its model
    (its recorded model id says which), so nothing is re-embedded or refused behind a user's back. A serving
    backend prefix (``openvino:default``) stays.
    """
    backend, bare = split_backend_spec(model_spec)
    known = known_model_by_id(model_id) if bare == DEFAULT_MODEL else None
    if known is None:
        return model_spec
    return backend_spec(known.key, backend)


def search_collection(
    name: str,
    query: str | None = None,
    *,
    workspace: Workspace,
    db: Database,
    k: int = 5,
    filter: Filter | None = None,
    image: ImageInput | None = None,
) -> list[SearchHit]:
    """Search by text, or by ``image`` (a path, PIL image or BGR array) in a collection built with a clip: model.

    A text query on an image collection goes through the model's text tower.
    """
    check_k(k)
    if image is not None:
        if query is not None and query.strip():
            raise CollectionError("give a text query or an image, not both")
        collection = open_collection(name, workspace=workspace, db=db)
        if not hasattr(collection.embedder, "encode_images"):
            raise CollectionError(f"collection {name!r} was built with the text model {collection.info.model_id}: "
                                  "search it by text, or index the images with a clip: model")
        return collection.search(collection.embedder.encode_images(image), k, filter=filter)
    if not query or not query.strip():
        raise CollectionError("the query is empty")
    return open_collection(name, workspace=workspace, db=db).search(query.strip(), k, filter=filter)


def describe_collections(db: Database) -> list[dict[str, Any]]:
    """One row per collection, as ``embtune collections`` and the studio list them.

    ``model`` is the spec that loads its model (a collection built when ``default`` meant MiniLM says ``minilm``),
    ``model_id`` the model's name from the collection's manifest.
    """
    return [
        {
            "name": r.name,
            "size": r.item_count,
            "model": recorded_model_spec(r.model_spec, model_id := _manifest_model_id(r.path)),
            "model_id": model_id,
            "dimension": r.dimension,
            "index_kind": r.index_kind,
            "updated": r.updated_at.isoformat(timespec="seconds") if r.updated_at else None,
            "path": r.path,
        }
        for r in db.list_collections()
    ]


def _manifest_model_id(path: str) -> str:
    try:
        return str(read_manifest(path).get("model_id") or "")
    except CollectionError:
        return ""  # a missing or torn manifest is reported when the collection is opened, not in a listing


def delete_collection(name: str, *, workspace: Workspace, db: Database, wait: bool = True,
                      notice: Callable[[str], None] | None = None) -> None:
    """Remove a collection: its database row and items, then its index folder (holding its writer lock).

    The row goes first, so a reader never finds a row whose folder is gone half-way; the
    folder is only removed when it lies inside this workspace.
    """
    collection_record(name, db)
    with collection_lock(workspace, name, wait=wait, notice=notice):
        record = collection_record(name, db)  # as it is now that no one else writes it
        db.delete_collection(name)
        folder = Path(record.path).resolve()
        if folder.is_dir() and workspace.collections_dir.resolve() in folder.parents:
            shutil.rmtree(folder, ignore_errors=True)


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


def index_bundled_catalogue(workspace: Workspace, db: Database, *, name: str = "catalogue", model: str = "default",
                            device: str = "auto", show_progress: bool | None = False,
                            progress: ProgressCallback | None = None) -> bool:
    """Index the bundled catalogue (its product names) as ``name`` unless that collection exists; True when it
    was built now. The studio's first start and the product demo both begin here."""
    if db.get_collection(name) is not None:
        return False
    index_file(CATALOGUE_PRODUCTS, collection=name, text_column="name", id_column="id", model=model, device=device,
               workspace=workspace, db=db, show_progress=show_progress, progress=progress)
    return True
